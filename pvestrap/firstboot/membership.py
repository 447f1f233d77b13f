"""Is this node in the planned cluster already, and who is a member right now.

Membership is read from this node's own corosync: its corosync.conf (written by a create or a
join, even a half-finished one) and `corosync-quorumtool -s` (who is a member right now).
Members are matched by nodeid, which the plan fixes: names in corosync-quorumtool's output may
be host names or addresses.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from pvestrap.checks.joinable import is_stock_conf
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import QuorumStatus, read_quorum
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.paths import CONF_PATHS
from pvestrap.plan import ClusterPlan, Node
from pvestrap.system import Runner, run_command

Say = Callable[[str], None]


def configured_member(plan: ClusterPlan, node: Node, root: str = "/") -> bool:
    """This node is in the planned cluster's corosync.conf (a create or join got that far).

    A config of another cluster is refused: first boot never touches a node that belongs to a
    cluster it was not told about. Debian's packaged example config does not count.
    """
    for path in CONF_PATHS:
        real = os.path.join(root, path.lstrip("/"))
        try:
            with open(real, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        if path.startswith("/etc/corosync/") and is_stock_conf(real):
            continue
        try:
            conf = CorosyncConf.parse(text, path)
        except PvestrapError:
            continue  # half-written or foreign: the apply's own checks will say what it is
        if conf.cluster_name != plan.cluster_name:
            raise OperationFailed(f"{path} is for cluster {conf.cluster_name!r}, the answer file "
                                  f"plans {plan.cluster_name!r}", code="already-clustered",
                                  remedy="first boot only builds the cluster of its answer "
                                         "file; separate this node from the other cluster first")
        return any(n.nodeid == node.nodeid or n.name == node.name for n in conf.nodes)
    return False


def quorum_status(query: Runner = run_command) -> QuorumStatus | None:
    """`corosync-quorumtool -s` on this node; None when corosync does not answer."""
    return read_quorum(query)


def member_nodeids(status: QuorumStatus | None) -> set[int]:
    return {m.nodeid for m in status.nodes_only} if status and status.quorate else set()


def wait_for_all_members(plan: ClusterPlan, timeout_s: float, say: Say,
                         status: Callable[[], QuorumStatus | None] = quorum_status,
                         poll_s: float = 2.0) -> bool:
    """Until this node's corosync sees every planned node as a quorate member (then no peer
    needs this node's responder any more); False at the timeout."""
    wanted = {n.nodeid: n.name for n in plan.nodes}
    started = time.monotonic()
    last: set[int] | None = None
    while True:
        now = status()
        have = member_nodeids(now) & set(wanted)
        if have == set(wanted):
            say(f"all {len(wanted)} nodes are members of {plan.cluster_name}")
            return True
        if have != last:
            missing = ", ".join(wanted[i] for i in sorted(set(wanted) - have))
            say(f"{len(have)} of {len(wanted)} nodes are members; still answering probes "
                f"for {missing}" if have else "the cluster is not quorate at the moment (a "
                f"join reloading it?); still answering probes for {missing}")
            last = have
        if time.monotonic() - started >= timeout_s:
            return False
        time.sleep(poll_s)


def predecessor(plan: ClusterPlan, me: Node, batched: bool = False) -> Node | None:
    """The node that must be a member before ME joins: the creator goes first, then the
    joiners in nodeid order, or (BATCHED: the plain corosync backend, pvestrap.apply.batch)
    all of them at once right after the creator. None for the creator."""
    creator = plan.creator
    if me.name == creator.name:
        return None
    if batched:
        return creator
    order = [creator] + sorted((n for n in plan.nodes if n.name != creator.name),
                               key=lambda n: n.nodeid)
    return order[order.index(me) - 1]
