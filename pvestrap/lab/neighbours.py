"""Permanent neighbour (ARP) entries in a lab too large for the machine's shared ARP table.

Every lab node is a network namespace of this one kernel, and all namespaces share one IPv4
neighbour table whose garbage-collected entries are capped by
net.ipv4.neigh.default.gc_thresh3 (1024 by default). A lab whose hosts talk to each other on
every link needs H(H-1)L entries (32 nodes x 2 links: 1984); past the cap the kernel drops the
packet that needed a new entry (dmesg `neighbor table overflow`, table_fulls in
/proc/net/stat/arp_cache; UDP's sender sees no error) and the peer reads as filtered. That is
the lab's artifact: a real node has a table of its own, 2(N-1) entries for N nodes and 2 links.

So a lab that could fill more than half of the cap (two such labs at once still fit) gets a
permanent entry for every other host on every link, in every host, when it comes up: the
kernel does not count permanent entries against gc_thresh3 (since Linux 4.19, "neighbor:
Improve garbage collection", 58956317c8de; net/core/neighbour.c, neigh_alloc's
exempt_from_gc) and they never expire, so no probe waits for or loses an ARP resolution. The
sysctl is the machine's: it is read, never changed. A NIC set down by hand loses its node's
entries (the kernel flushes them; a lost carrier keeps them): ARP resolves those peers again.
"""

from __future__ import annotations

from pathlib import Path

from pvestrap.lab import names, proc, state

LIMIT = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
DEFAULT_LIMIT = 1024  # the kernel's default, when the sysctl cannot be read


def needed(hosts: int, links: int) -> int:
    """ARP entries a lab of HOSTS hosts on LINKS links uses when every host reaches every other."""
    return hosts * (hosts - 1) * links


def kernel_limit() -> int:
    try:
        return int(LIMIT.read_text())
    except (OSError, ValueError):
        return DEFAULT_LIMIT


def wanted(st: state.LabState) -> bool:
    """Whether the lab could fill more than half of the kernel's shared table."""
    return needed(len(st.hosts), st.links) > kernel_limit() // 2


def lines(st: state.LabState, index: int, macs: dict[tuple[int, int], str]) -> list[str]:
    """`ip -batch` lines for host INDEX: every other host on every link, permanent."""
    return [f"neigh replace {names.address(link, peer)} lladdr {macs[(peer, link)]} "
            f"dev {names.nic(link)} nud permanent"
            for link in range(st.links) for peer in st.hosts if peer != index]


def pin(st: state.LabState) -> int:
    """Write the permanent entries when the lab is that large (its NICs exist); how many."""
    if not wanted(st):
        return 0
    macs = {(i, link): (st.root(i) / f"sys/class/net/{names.nic(link)}/address").read_text()
            .strip() for i in st.hosts for link in range(st.links)}
    batches = {i: lines(st, i, macs) for i in st.hosts}
    proc.run_all([proc.ip_batch(batch, st.layout.node_name(i)) for i, batch in batches.items()])
    return sum(len(batch) for batch in batches.values())
