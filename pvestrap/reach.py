"""Where this node reaches another node of the cluster over SSH and the API, as Proxmox VE does:
by the node's name when that name resolves here to non-loopback addresses only, else at the
node's link0 address.

Proxmox VE keeps its nodes' SSH host keys under their names and management addresses
(/etc/pve/priv/known_hosts: pve-cluster, src/PVE/Cluster/Setup.pm, ssh_merge_known_hosts), not
under the link addresses of a dedicated cluster network, so a login at such a link address fails
with "Host key verification failed". A name that does not resolve, or resolves to loopback
(Debian's `127.0.1.1 HOSTNAME` line: it names this node, not the other), says nothing about
where the other node is: its link0 address is taken then.

Pure: the caller passes the name lookup of the node it runs on (checks.localsys.resolve live).
"""

from __future__ import annotations

import ipaddress
from typing import Callable, Sequence

Resolver = Callable[[str], tuple[str, ...]]  # a name's addresses on this node; () if none


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def by_name(name: str, link0: str, found: Sequence[str]) -> str:
    """NAME when FOUND (what NAME resolves to on this node) is not empty and holds no loopback
    address, else LINK0."""
    return name if found and not any(is_loopback(a) for a in found) else link0
