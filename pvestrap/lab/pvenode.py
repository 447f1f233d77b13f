"""A `lab up --pve` node: Proxmox VE's cluster stack (pvestack) running in a lab node.

Each node lays the cached build over its /usr (read-only overlay; on top of it a lab layer
holding only the systemctl stand-in, pve_systemctl.py), gets a private /var (overlay: its own
/var/lib/pve-cluster for pmxcfs's database), an /etc/pve mount point, sshd, and then what a
freshly installed Proxmox VE host has running: pmxcfs standalone (quorate on its own, /etc/pve
real) and `pvecm updatecerts --silent` done once (pve-manager's postinst does that: node
certificates, root's SSH key, /etc/pve/priv/authorized_keys). It is not yet in a cluster:
`pvecm create` / `pvecm add` (or pvestrap apply) make it one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pvestrap.errors import OperationFailed
from pvestrap.lab import names, proc, pvestack, services, state

SHIM = Path(__file__).resolve().parent / "pve_systemctl.py"
NODE_DIRS = ("etc/pve", "run/lock", "var/lib/pve-cluster", "var/lib/rrdcached/db",
             "var/lib/corosync", "var/log", ".var-work")
STEP_TIMEOUT = 120.0
DPKG_STATUS = Path("/var/lib/dpkg/status")
PACKAGE_STANZA = ("Package: pve-cluster\nStatus: install ok installed\nPriority: optional\n"
                  "Section: admin\nMaintainer: pvestrap lab (built from Proxmox's source)\n"
                  "Architecture: amd64\nVersion: {version}\n"
                  "Description: Proxmox VE cluster stack, built for the pvestrap lab\n")


def usr_layer(layout: names.Layout) -> Path:
    """The lab's own layer over /usr: bin/systemctl (the stand-in) and nothing else."""
    return layout.state_dir / "pve-usr"


def prepare_lab(layout: names.Layout) -> None:
    target = usr_layer(layout) / "bin/systemctl"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/usr/bin/python3 -IS\n" + SHIM.read_text(encoding="utf-8"))
    os.chmod(target, 0o755)


def prepare_node(root: Path, stack: str) -> None:
    for sub in NODE_DIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "var", 0o755)
    _register_package(root, pvestack.installed_version(Path(stack)))


def _register_package(root: Path, version: str) -> None:
    """The node's dpkg database (its own copy, under its /var) lists pve-cluster at the built
    version, as on a Proxmox VE host: what pvestrap's node facts read with dpkg-query."""
    status = root / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    text = DPKG_STATUS.read_text(encoding="utf-8") if DPKG_STATUS.exists() else ""
    status.write_text(text.rstrip("\n") + "\n\n" + PACKAGE_STANZA.format(version=version))


def _in_nodes(st: state.LabState, script: str) -> list:
    jobs = []
    for index in range(1, st.nodes + 1):
        argv, _ = services.node_command(st, index, ["sh", "-c", script])
        jobs.append((argv, None))
    return proc.run_all(jobs, check=False, timeout=STEP_TIMEOUT)


def start(st: state.LabState) -> state.LabState:
    """sshd, pmxcfs and the first-boot certificates on every node (in parallel)."""
    if shutil.which("fusermount") is None:
        raise OperationFailed("fusermount is missing (package fuse)", code="lab-tool-missing")
    for index in range(1, st.nodes + 1):
        st = services.start(st, index, "sshd")
    script = ("systemctl start pve-cluster && pvecm updatecerts --silent "
              "&& test -e /etc/pve/local/pve-ssl.pem")
    for index, result in enumerate(_in_nodes(st, script), 1):
        if result.returncode != 0:
            raise OperationFailed(
                f"Proxmox's cluster stack did not start on {st.layout.node_name(index)}: "
                f"{(result.stdout + result.stderr).strip()[-800:]}", code="lab-pve-start-failed",
                remedy=f"see {st.layout.node_dir(index)}/var/log/pvestrap-lab-pve-cluster.out")
    return st
