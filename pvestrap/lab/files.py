"""The text of a lab node's private files: /etc/hosts, hostname, interfaces, ssh and chrony
configuration, and (for tests and `lab corosync config`) a minimal corosync.conf.

Pure functions of the lab's shape; the builder writes them.
"""

from __future__ import annotations

from typing import Sequence

from pvestrap.lab import names

HOSTS_HEAD = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def hosts(layout: names.Layout, nodes: int, index: int, mode: str = "normal",
          qnetd: bool = False) -> str:
    """Every node's name at its link0 address (and the qnetd host's, when the lab has one);
    the node's own line follows its hosts mode."""
    lines = [HOSTS_HEAD]
    if mode == "loopback":
        lines.append(f"127.0.1.1\t{layout.node_name(index)}\n")
    for other in [*range(1, nodes + 1), *([names.QNETD] if qnetd else [])]:
        if other == index and mode != "normal":
            continue
        lines.append(f"{names.address(0, other)}\t{layout.node_name(other)}\n")
    return "".join(lines)


def hostname(layout: names.Layout, index: int) -> str:
    return f"{layout.node_name(index)}\n"


def interfaces(links: int, index: int) -> str:
    """What the node's NICs really are, so ifquery/ifreload inside the node agree with them.
    The spare NIC is left out: it is the unconfigured one."""
    text = "auto lo\niface lo inet loopback\n"
    for link in range(links):
        text += (f"\nauto {names.nic(link)}\niface {names.nic(link)} inet static\n"
                 f"\taddress {names.address(link, index)}/24\n")
    return text


def sshd_config(session_env: dict[str, str], host_keys: Sequence[str] = ("ed25519",)) -> str:
    """Key-only root login; no PAM, so a lab login never touches the machine's sessions.
    SESSION_ENV (SetEnv) is what commands run over SSH get: the PATH that finds the lab's
    pvestrap and, on a node with a clock offset, libfaketime. HOST_KEYS: the host key types
    served; a `--pve` node serves its RSA key too, as a Proxmox VE host's sshd does: pvecm's
    node-to-node ssh trusts only that one (HostKeyAlias=NODE with
    /etc/pve/nodes/NODE/ssh_known_hosts, pve-cluster src/PVE/SSHInfo.pm)."""
    text = (
        "# pvestrap lab node\n"
        "Port 22\n"
        + "".join(f"HostKey /etc/ssh/ssh_host_{key}_key\n" for key in host_keys) +
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "PrintMotd no\n"
        "PidFile /run/sshd.pid\n"
        "AcceptEnv LANG LC_*\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    if session_env:
        text += "SetEnv " + " ".join(f"{k}={v}" for k, v in sorted(session_env.items())) + "\n"
    return text


SSH_CONFIG = (
    "# pvestrap lab node: never prompt, trust only the lab's known hosts\n"
    "Host *\n"
    "    BatchMode yes\n"
    "    StrictHostKeyChecking yes\n"
    "    GlobalKnownHostsFile /etc/ssh/ssh_known_hosts\n"
    "    ConnectTimeout 5\n"
)


def known_hosts(layout: names.Layout, links: int, keys: dict[int, str]) -> str:
    """Every host's key (KEYS: index -> public key) under its name and all its addresses."""
    lines = []
    for index in sorted(keys):
        aliases = [layout.node_name(index)] + [names.address(link, index)
                                               for link in range(links)]
        key = " ".join(keys[index].split()[:2])
        lines.append(f"{','.join(aliases)} {key}\n")
    return "".join(lines)


CHRONY_PID = "run/chronyd-lab.pid"


def chrony_conf(links: int) -> str:
    """An NTP server that serves its (possibly faked) clock and never sets the real one: chronyd
    also gets -x."""
    allow = "".join(f"allow {names.network(link)}\n" for link in range(links))
    return ("# pvestrap lab node: NTP server only\n"
            "local stratum 8\n" + allow +
            "cmdport 0\n"
            f"pidfile /{CHRONY_PID}\n")


def corosync_conf(layout: names.Layout, nodes: list[int], links: int,
                  cluster_name: str | None = None, config_version: int = 1) -> str:
    """A plain knet corosync.conf for lab nodes (the product renders its own; this one lets
    tests run corosync without it)."""
    name = cluster_name or layout.prefix
    text = ("totem {\n  version: 2\n"
            f"  cluster_name: {name}\n  config_version: {config_version}\n"
            "  ip_version: ipv4\n  link_mode: passive\n  secauth: on\n"
            "  crypto_cipher: aes256\n  crypto_hash: sha256\n")
    text += "".join(f"  interface {{\n    linknumber: {link}\n  }}\n" for link in range(links))
    text += "}\n\nnodelist {\n"
    for index in nodes:
        text += (f"  node {{\n    name: {layout.node_name(index)}\n    nodeid: {index}\n"
                 "    quorum_votes: 1\n")
        text += "".join(f"    ring{link}_addr: {names.address(link, index)}\n"
                        for link in range(links))
        text += "  }\n"
    text += "}\n\nquorum {\n  provider: corosync_votequorum\n"
    if len(nodes) == 2:
        text += "  two_node: 1\n"
    text += ("}\n\nlogging {\n  to_syslog: no\n  to_stderr: yes\n  to_logfile: yes\n"
             "  logfile: /var/log/corosync/corosync.log\n  timestamp: on\n}\n")
    return text
