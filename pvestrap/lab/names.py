"""Names, addresses and paths of a lab: one place that decides what every lab object is called.

Every object a lab creates carries the lab prefix (namespaces `<prefix>-nK` and `<prefix>-sw`,
the state folder `/run/pvestrap-lab/<prefix>/`, the holder processes' `pvestrap-lab:<prefix>-nK`
tag), so `down` can find the leftovers of a killed run by name alone. Interfaces inside the
switch namespace need no prefix: the namespace itself is the lab's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pvestrap.errors import UserError

STATE_ROOT = Path("/run/pvestrap-lab")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
# `<prefix>-n99` must fit corosync's and the plan's 15-character node names.
PREFIX_MAX = 10
MAX_NODES = 99
MAX_LINKS = 8
SPARE_NIC = "eth9"
# Every node's spare NIC is cabled to this bridge of the switch namespace, no address anywhere:
# a cluster network that exists nowhere yet can be created on it (apply's network phase).
SPARE_LINK = 9
SPARE_BRIDGE = "br9"
HOLDER_TAG = "pvestrap-lab:"
SWITCH_MTU = 9000
SCRIPTS = ("holder.py", "detach.py", "forwarder.py")
NODE_RE = re.compile(r"^(?:(?P<prefix>.+)-)?n(?P<index>[0-9]{1,2})$")
# The qnetd host (`lab up --qnetd`): a host on the link networks that is not a cluster node. It
# is held like a node, under an index no node can have (so its addresses are 10.254.L.100).
QNETD = 100
QNETD_NAME = "qnetd"
QNETD_RE = re.compile(r"^(?:(?P<prefix>.+)-)?(qnetd|q)$")
HOST_PART = r"(n[0-9]{1,2}|qnetd)"


def check_prefix(prefix: str) -> str:
    """Refuse a prefix that would make invalid host, namespace or cluster names."""
    if not isinstance(prefix, str) or not PREFIX_RE.match(prefix) or len(prefix) > PREFIX_MAX:
        raise UserError(f"lab name {prefix!r} is not valid", code="lab-name-invalid",
                        remedy=f"use lowercase letters, digits and inner hyphens, starting with "
                               f"a letter, at most {PREFIX_MAX} characters (e.g. 'lab1')")
    return prefix


def check_size(nodes: int, links: int) -> None:
    if not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise UserError(f"--nodes {nodes} is out of range", code="lab-nodes-invalid",
                        remedy=f"give 1..{MAX_NODES} nodes")
    if not isinstance(links, int) or not 1 <= links <= MAX_LINKS:
        raise UserError(f"--links {links} is out of range", code="lab-links-invalid",
                        remedy=f"give 1..{MAX_LINKS} links (corosync has links 0..7)")


def nic(link: int) -> str:
    """The node's NIC on link L."""
    return f"eth{link}"


def address(link: int, index: int) -> str:
    return f"10.254.{link}.{index}"


def network(link: int) -> str:
    return f"10.254.{link}.0/24"


def port_name(index: int, link: int | str) -> str:
    """Switch-side peer of node K's NIC on link L (`link` may be 9 for the spare)."""
    return f"n{index}e{link}"


def relay_names(index: int, link: int) -> tuple[str, str]:
    """The veth pair a delayed NIC's frames are relayed through: (forwarder side, bridge side)."""
    return f"n{index}e{link}a", f"n{index}e{link}b"


def bridge(link: int) -> str:
    return f"br{link}"


@dataclass(frozen=True)
class Layout:
    """Where a lab's things are, derived from its prefix only."""

    prefix: str

    @property
    def state_dir(self) -> Path:
        return STATE_ROOT / self.prefix

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    def node_name(self, index: int) -> str:
        return f"{self.prefix}-{QNETD_NAME}" if index == QNETD else f"{self.prefix}-n{index}"

    def node_dir(self, index: int) -> Path:
        """The node's private files: `etc/` is the upper layer of its /etc overlay, the rest are
        bound over /root, /run, /var/lib/corosync, /var/lib/pvestrap and /var/log."""
        return self.state_dir / (QNETD_NAME if index == QNETD else f"n{index}")

    def tag(self, index: int) -> str:
        return f"{HOLDER_TAG}{self.node_name(index)}"

    @property
    def forwarder_config(self) -> Path:
        return self.state_dir / "forwarder.json"

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    def owns_netns(self, name: str) -> bool:
        return re.fullmatch(re.escape(self.prefix) + r"-(sw|" + HOST_PART + ")", name) is not None

    def owns_cmdline(self, cmdline: str) -> bool:
        """Whether a process's command line marks it as one of this lab's: a holder's tag, or
        one of the lab's own scripts working on this lab's state folder (a user's `tail` of a
        lab log is not the lab's)."""
        if f"{STATE_ROOT}/{self.prefix}/" in cmdline and any(
                f"/pvestrap/lab/{script}" in cmdline for script in SCRIPTS):
            return True
        pattern = re.escape(HOLDER_TAG + self.prefix) + "-" + HOST_PART + r"(\s|$)"
        return re.search(pattern, cmdline) is not None


def prefix_of_tag(cmdline: str) -> str | None:
    """The lab prefix of a holder's `pvestrap-lab:<prefix>-nK` tag (for `down` of every lab)."""
    match = re.match(re.escape(HOLDER_TAG) + r"(\S+)-" + HOST_PART + r"(\s|$)", cmdline)
    return match.group(1) if match and PREFIX_RE.match(match.group(1)) else None


def node_index(text: str, prefix: str, nodes: int, flag: str, qnetd: bool = False) -> int:
    """`n2` or `<prefix>-n2` -> 2 (`qnetd` -> QNETD in a lab that has that host), or a
    UserError naming the flag."""
    match = NODE_RE.match(text.strip())
    if match and match.group("prefix") in (None, prefix):
        index = int(match.group("index"))
        if 1 <= index <= nodes:
            return index
    match = QNETD_RE.match(text.strip())
    if qnetd and match and match.group("prefix") in (None, prefix):
        return QNETD
    extra = f", or {QNETD_NAME}" if qnetd else ""
    raise UserError(f"{flag}: {text!r} is not a node of lab {prefix}", code="lab-node-unknown",
                    remedy=f"name a node as n1..n{nodes} or {prefix}-n1..{prefix}-n{nodes}"
                           + extra)
