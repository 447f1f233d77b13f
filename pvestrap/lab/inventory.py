"""An Ansible inventory for a running lab: `pvestrap lab inventory [--clusters N]`.

One group per cluster under `pvestrap_clusters` (the lab's nodes split in order into N groups of
near-equal size), in the variables pvestrap's collection reads: group `pvestrap_cluster` and
`pvestrap_links` (the answer file's [cluster] and [[links]]), host `pvestrap_node` (its
[[nodes]] entry). Ansible reaches a node through the lab's own sshd and root key: ssh's
ProxyCommand is tunnel.py inside the node's network namespace talking to the node's loopback,
so the root namespace never sends to a lab address; host keys are checked against the lab's
known_hosts. Modules run on the node's own python3. The output is JSON, which Ansible's YAML
inventory plugin reads (save it as inventory.yml or .json).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any

from pvestrap.errors import UserError
from pvestrap.lab import names
from pvestrap.lab.cluster import cluster_name
from pvestrap.lab.state import LabState

PARENT = "pvestrap_clusters"
NODE_PYTHON = "/usr/bin/python3"
REMOTE_DIR = "/run/pvestrap/ansible"
TUNNEL = Path(__file__).with_name("tunnel.py")


def split(nodes: int, clusters: int) -> list[list[int]]:
    """Node numbers 1..NODES in CLUSTERS consecutive runs whose sizes differ by one at most."""
    if not 1 <= clusters <= nodes:
        raise UserError(f"--clusters {clusters} does not fit a lab of {nodes} nodes",
                        code="lab-clusters-invalid",
                        remedy=f"give 1..{nodes} clusters (or a larger lab: lab up --nodes)")
    size, extra = divmod(nodes, clusters)
    out, start = [], 1
    for k in range(clusters):
        count = size + (1 if k < extra else 0)
        out.append(list(range(start, start + count)))
        start += count
    return out


def group_name(prefix: str, k: int, clusters: int) -> str:
    base = re.sub(r"[^a-z0-9_]", "_", prefix)
    return base if clusters == 1 else f"{base}_c{k}"


def inventory(st: LabState, clusters: int = 1) -> dict[str, Any]:
    layout = st.layout
    known = layout.ssh_dir / "known_hosts"
    if not known.exists():
        raise UserError(f"lab {st.prefix} has no SSH keys", code="lab-ssh-missing",
                        remedy="install ssh-keygen (openssh-client) and create the lab again")
    links = [{"number": link, "network": names.network(link)} for link in range(st.links)]
    children = {}
    for k, indexes in enumerate(split(st.nodes, clusters), start=1):
        name = cluster_name(st.prefix) if clusters == 1 else f"{cluster_name(st.prefix)}-c{k}"
        children[group_name(st.prefix, k, clusters)] = {
            "vars": {"pvestrap_cluster": {"name": name, "backend": "corosync"},
                     "pvestrap_links": links},
            "hosts": {layout.node_name(i): _host(st, i) for i in indexes},
        }
    # The nodes share this machine's /var/lib: the role's copy of pvestrap goes to each node's
    # own /run instead.
    # Pipelining: one SSH round per module instead of a copy and a run.
    parent_vars = {"pvestrap_remote_dir": REMOTE_DIR, "ansible_pipelining": True}
    return {"all": {"children": {PARENT: {"vars": parent_vars,
                                          "children": children}}}}


def _host(st: LabState, index: int) -> dict[str, Any]:
    layout = st.layout
    proxy = shlex.join(["nsenter", "-t", str(st.holders[index]), "-n",
                        sys.executable, "-I", "-S", str(TUNNEL), "22"])
    ssh_args = ["-o", f"ProxyCommand={proxy}",
                "-o", f"UserKnownHostsFile={layout.ssh_dir / 'known_hosts'}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
    node: dict[str, str | int] = {f"link{link}": names.address(link, index)
                                  for link in range(st.links)}
    node["nodeid"] = index
    return {
        "ansible_host": layout.node_name(index),
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(layout.ssh_dir / "id_ed25519"),
        "ansible_ssh_common_args": shlex.join(ssh_args),
        "ansible_python_interpreter": NODE_PYTHON,
        "pvestrap_node": node,
    }
