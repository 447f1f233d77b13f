"""`up`: build a lab's namespaces, NICs, switch and private files, in few batched steps.

Order: state first (so a crash leaves a trail), then the node folders and keys, the switch
namespace, all holders at once, then one `ip -batch` in the root namespace that names the node
namespaces and creates every veth directly inside its namespaces (the root namespace never holds
a lab interface, not even for a moment), then one batch for the switch and one per node, run at
the same time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

from pvestrap.errors import OperationFailed, UserError
from pvestrap.lab import files, names, neighbours, proc, pvenode, state

OPAQUE = ("trusted.overlay.opaque", b"y")
# Folders the node owns outright (the host's copies would mislead: e.g. Debian's example
# /etc/corosync/corosync.conf would make every node look like a cluster member).
OPAQUE_DIRS = ("etc/corosync", "etc/ssh", "root/.ssh")
LINK_TIMEOUT = 10.0
# A veth whose index equals its peer's (both 2, in different namespaces) is not "urgent" to the
# kernel's linkwatch and starts to carry frames only up to a second later; node NICs get
# indexes no switch port has.
NIC_INDEX = 10000
# /var/lib/pvestrap too: what a node keeps aside (node separate) must stay in the node.
# /var/tmp/network is ifupdown2's state folder (state_dir in ifupdown2.conf): `ifreload -a` in a
# node compares its file with that state, which must be the node's own, never the host's.
BOUND = (("var/lib/corosync", "/var/lib/corosync"), ("var/lib/pvestrap", "/var/lib/pvestrap"),
         ("var/log", "/var/log"), ("var/tmp/network", "/var/tmp/network"))
# Empty mount points on the host for the binds above that Debian may not have yet.
MOUNT_POINTS = ("/var/lib/pvestrap", "/var/tmp/network")
# root's shell start-up files as Debian installs them (base-files' postinst copies these two into
# /root), not this machine's: bash sources ~/.bashrc for every command run over SSH, and a
# developer's own (e.g. `eval "$(pyenv init -)"`: ~130 ms of CPU, a dozen processes) would run
# in every lab SSH session, which no node does.
ROOT_DOTFILES = ((".bashrc", "/usr/share/base-files/dot.bashrc"),
                 (".profile", "/usr/share/base-files/dot.profile"))


def refuse_existing(layout: names.Layout) -> None:
    leftovers = [n for n in proc.netns_names() if layout.owns_netns(n)]
    if layout.state_dir.exists() or leftovers:
        raise UserError(f"lab {layout.prefix!r} exists already", code="lab-exists",
                        remedy=f"use it, remove it with `pvestrap lab down --name "
                               f"{layout.prefix}`, or choose another --name")


def prepare_node(layout: names.Layout, st: state.LabState, index: int) -> None:
    """The node's folder: upper layers for /etc and /root, and the folders bound over /run etc."""
    root = layout.node_dir(index)
    # run/network: ifupdown2's lock (/run/network/.lock); without it ifreload refuses to run.
    for sub in ("etc/network", "etc/corosync/uidgid.d", "etc/ssh", "root/.ssh", "run/sshd",
                "run/corosync-qnetd", "run/corosync-qdevice", "run/network",
                "var/lib/corosync", "var/lib/pvestrap", "var/log/corosync", "var/tmp/network",
                ".etc-work", ".root-work"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for point in MOUNT_POINTS:
        os.makedirs(point, exist_ok=True)
    for sub in OPAQUE_DIRS:
        os.setxattr(root / sub, *OPAQUE)
    os.chmod(root / "etc", 0o755)
    os.chmod(root / "root", 0o700)
    os.chmod(root / "root/.ssh", 0o700)
    os.chmod(root / "run", 0o755)
    os.chmod(root / "run/sshd", 0o755)
    for name, debian in ROOT_DOTFILES:
        (root / "root" / name).write_text(_text_or_empty(debian))
    etc = root / "etc"
    (etc / "hostname").write_text(files.hostname(layout, index))
    (etc / "hosts").write_text(files.hosts(layout, st.nodes, index, qnetd=st.qnetd))
    (etc / "network/interfaces").write_text(files.interfaces(st.links, index))
    (etc / "ssh/ssh_config").write_text(files.SSH_CONFIG)
    if st.pve_stack:
        pvenode.prepare_node(root, st.pve_stack)


def _text_or_empty(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def holder_spec(layout: names.Layout, index: int, st: state.LabState | None = None) -> dict:
    root = layout.node_dir(index)
    overlays = [[str(root / "etc"), str(root / ".etc-work"), "/etc"],
                [str(root / "root"), str(root / ".root-work"), "/root"]]
    spec: dict = {
        "tag": layout.tag(index),
        "hostname": layout.node_name(index),
        "overlays": overlays,
        "binds": [[str(root / sub), target] for sub, target in BOUND],
        "run": str(root / "run"),
    }
    if st is not None and st.pve_stack:
        overlays.append([str(root / "var"), str(root / ".var-work"), "/var"])
        spec["ro_overlays"] = [[f"{pvenode.usr_layer(layout)}:{st.pve_stack}/usr:/usr", "/usr"]]
    return spec


def keygen_jobs(layout: names.Layout, st: state.LabState) -> list:
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        return []
    jobs = [([keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"root@{layout.prefix}-lab",
              "-f", str(layout.ssh_dir / "id_ed25519")], None)]
    for index in st.hosts:
        jobs.append(([keygen, "-q", "-t", "ed25519", "-N", "", "-C",
                      f"root@{layout.node_name(index)}",
                      "-f", str(layout.node_dir(index) / "etc/ssh/ssh_host_ed25519_key")], None))
        if st.pve:  # pvecm updatecerts reads the RSA host key (PVE::Cluster::Setup)
            jobs.append(([keygen, "-q", "-t", "rsa", "-b", "2048", "-N", "", "-C",
                          f"root@{layout.node_name(index)}",
                          "-f", str(layout.node_dir(index) / "etc/ssh/ssh_host_rsa_key")], None))
    return jobs


def install_ssh(layout: names.Layout, st: state.LabState) -> None:
    """One lab key for root on every host; every host knows every host's key."""
    user_key = layout.ssh_dir / "id_ed25519"
    if not user_key.exists():
        return
    public = (layout.ssh_dir / "id_ed25519.pub").read_text()
    host_keys = {i: (layout.node_dir(i) / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
                 for i in st.hosts}
    known = files.known_hosts(layout, st.links, host_keys)
    (layout.ssh_dir / "known_hosts").write_text(known)  # for SSH from outside (lab inventory)
    for index in st.hosts:
        root = layout.node_dir(index)
        ssh = root / "root/.ssh"
        shutil.copyfile(user_key, ssh / "id_ed25519")
        os.chmod(ssh / "id_ed25519", 0o600)
        (ssh / "id_ed25519.pub").write_text(public)
        (ssh / "authorized_keys").write_text(public)
        os.chmod(ssh / "authorized_keys", 0o600)
        (ssh / "known_hosts").write_text(known)
        (root / "etc/ssh/ssh_known_hosts").write_text(known)


def start_holders(layout: names.Layout, st: state.LabState) -> dict[int, int]:
    # the qnetd host is plain Debian: never the Proxmox stack
    specs = [holder_spec(layout, i, st if i != names.QNETD else None) for i in st.hosts]
    result = proc.run(proc.script("holder.py") + [json.dumps(specs)], check=False)
    if result.returncode != 0:
        raise OperationFailed(f"the lab's nodes could not be set up: "
                                   f"{result.stderr.strip()}", code="lab-node-failed")
    return dict(zip(st.hosts, json.loads(result.stdout)))


def root_batch(layout: names.Layout, st: state.LabState) -> list[str]:
    lines = [f"netns attach {layout.node_name(i)} {pid}" for i, pid in st.holders.items()]
    for index in st.hosts:
        for link in [*range(st.links), names.SPARE_LINK]:
            nic = names.nic(link) if link != names.SPARE_LINK else names.SPARE_NIC
            lines.append(f"link add {nic} netns {layout.node_name(index)} index {NIC_INDEX + link} "
                         f"type veth peer name "
                         f"{names.port_name(index, link)} netns {layout.switch_ns} "
                         f"mtu {names.SWITCH_MTU}")
    return lines


def switch_batch(st: state.LabState) -> list[str]:
    """One bridge per link network, and one for the spare NICs (no address on any of them)."""
    lines = []
    bridges = [names.bridge(link) for link in range(st.links)] + [names.SPARE_BRIDGE]
    for bridge in bridges:
        lines += [f"link add {bridge} type bridge mcast_snooping 0",
                  f"link set {bridge} mtu {names.SWITCH_MTU} up"]
    for index in st.hosts:
        for link in [*range(st.links), names.SPARE_LINK]:
            bridge = names.bridge(link) if link != names.SPARE_LINK else names.SPARE_BRIDGE
            lines.append(f"link set {names.port_name(index, link)} master {bridge} up")
    return lines


def node_batch(st: state.LabState, index: int) -> list[str]:
    lines = ["link set lo up"]
    for link in range(st.links):
        nic = names.nic(link)
        lines += [f"addr add {names.address(link, index)}/24 dev {nic}", f"link set {nic} up"]
    return lines


def build(st: state.LabState) -> state.LabState:
    """Create everything for ST (saved already); return the state of the running lab."""
    layout = st.layout
    layout.ssh_dir.mkdir(mode=0o700, exist_ok=True)
    for index in st.hosts:
        prepare_node(layout, st, index)
    if st.pve_stack:
        pvenode.prepare_lab(layout)
    proc.run_all(keygen_jobs(layout, st))
    install_ssh(layout, st)
    proc.run(["ip", "netns", "add", layout.switch_ns])
    st = replace(st, netns={layout.switch_ns: proc.netns_inode(layout.switch_ns) or 0})
    state.save(st)
    st = replace(st, holders=start_holders(layout, st))
    state.save(st)
    proc.run_all([proc.ip_batch(root_batch(layout, st))])
    proc.run_all([proc.ip_batch(switch_batch(st), layout.switch_ns)] +
                 [proc.ip_batch(node_batch(st, i), layout.node_name(i))
                  for i in st.hosts])
    inodes = {name: proc.netns_inode(name) or 0
              for name in [layout.switch_ns] + [layout.node_name(i) for i in st.hosts]}
    st = replace(st, netns=inodes, phase="up")
    state.save(st)
    wait_links(st)
    st = replace(st, neighbours=neighbours.pin(st))
    state.save(st)
    return st


def wait_links(st: state.LabState, timeout: float = LINK_TIMEOUT) -> None:
    """The kernel turns new veths on in batches up to a second later (linkwatch); until then
    they drop frames, so `up` returns only when every link NIC is up."""
    pending = [st.root(i) / f"sys/class/net/{names.nic(link)}/operstate"
               for i in st.hosts for link in range(st.links)]
    deadline = time.monotonic() + timeout
    while pending:
        pending = [p for p in pending if _read(p) != "up"]
        if pending and time.monotonic() > deadline:
            raise OperationFailed(f"{len(pending)} lab NICs did not come up within "
                                       f"{timeout:g} s (first: {pending[0]})",
                                       code="lab-link-down")
        if pending:
            time.sleep(0.01)


def _read(path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""

