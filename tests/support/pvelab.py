"""A Proxmox VE lab cluster formed by Proxmox's REAL tools (`lab up --pve`: real pmxcfs, the
Perl `pvecm create` and `pvecm add --use_ssh 1`, real corosync), for the tests of what pvestrap
does to a running PVE cluster (link changes, node removal, status)."""

from __future__ import annotations

from pvestrap.corosync.status import parse_quorum_status
from labtesting import wait


# The start of a script run in a node: a step standing in for the verify after the real
# `pvecm delnode` that fails, so the undo runs on the real stack as after a verify that never
# settles.
FAILING_VERIFY = """
from pvestrap.apply.engine import PlannedWait
from pvestrap.errors import OperationFailed


class Fails:
    id = "verify"
    description = "fails on purpose"

    def plan(self, system):
        return [PlannedWait(self.description, 1.0)]

    def apply(self, system):
        raise OperationFailed("injected failure after delnode", code="injected")

    def undo(self, system, memo):
        return None
"""


def pve_status(lab, index: int):
    """`pvecm status` of node INDEX parsed (None when pvecm could not say)."""
    result = lab.exec(index, ["pvecm", "status"])
    return parse_quorum_status(result.stdout, "pvecm status") if result.returncode in (0, 2) \
        else None


def cfs_writable(lab, index: int) -> bool:
    """The node's pmxcfs takes writes (it follows corosync's quorum a moment later)."""
    mode = lab.exec(index, ["stat", "-c", "%a", "/etc/pve/local"]).stdout.strip()
    return mode.isdigit() and bool(int(mode, 8) & 0o200)


def form(lab, nodes: int, release: str, links: int = 1, cluster_links: int = 1,
         qnetd: bool = False):
    """pvecm create on n1, then pvecm add --use_ssh 1 on the others, one at a time, each once
    n1's cluster filesystem is quorate (right after create it restarts); the lab has LINKS
    networks, the cluster the first CLUSTER_LINKS of them (--link0, --link1, ...); QNETD adds
    the lab's qnetd host."""
    made = lab(nodes=nodes, links=links, pve=release, qnetd=qnetd)
    first = made.node(1).address(0)

    def link_args(index: int) -> list[str]:
        node = made.node(index)
        return [x for k in range(cluster_links) for x in (f"--link{k}", node.address(k))]

    created = made.exec(1, ["pvecm", "create", "lab", *link_args(1)], timeout=120)
    assert created.returncode == 0, created.stderr
    for index in range(2, nodes + 1):
        def joined(index: int = index) -> bool:
            status = pve_status(made, 1)
            return bool(status and status.quorate and len(status.nodes_only) == index)

        for _ in range(5):  # pmxcfs may refuse the key copy while it settles
            assert wait(lambda: cfs_writable(made, 1), 60)
            made.exec(index, ["pvecm", "add", first, "--use_ssh", "1", *link_args(index)],
                      timeout=180)
            if wait(joined, 30):
                break
        assert joined(), f"n{index} did not join"
    return made
