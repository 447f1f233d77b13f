"""First boot and the cluster: is this node in it already, who is a member, and applying with
retries while the cluster is not ready for us yet.

Membership is read from this node's own corosync: its corosync.conf (written by a create or a
join, even a half-finished one) and `corosync-quorumtool -s` (who is a member right now).
Members are matched by nodeid, which the plan fixes: names in corosync-quorumtool's output may
be host names or addresses.

The apply itself is a seam (`ApplyFn`): the default runs `pvestrap.apply.flow`, the same
preflight gate, plan and create-or-join as `pvestrap apply --answers`; tests and the lab may
pass their own. An apply that fails because the cluster is busy or not there yet (locked by
another join, not quorate, unreachable) is retried with backoff until a deadline: apply is
idempotent and rolls back on failure, so another attempt is always safe.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable

from pvestrap.corosync.status import QuorumStatus, read_quorum
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.paths import CONF_PATHS
from pvestrap.plan import ClusterPlan, Node
from pvestrap.report.model import Report
from pvestrap.system import Runner, run_command

Say = Callable[[str], None]
# Reasons (error codes, a failed step's cause, a refused join's findings) that mean "not yet":
# the cluster is busy with another join, not created or not quorate yet, or not reachable yet.
RETRYABLE = frozenset({
    "apply-locked", "join-locked", "join-cluster-locked", "join-cluster-not-quorate",
    "member-unreachable", "member-not-clustered", "fingerprint-unreachable", "quorum-timeout",
})


# -- membership ---------------------------------------------------------------------------------

def configured_member(plan: ClusterPlan, node: Node, root: str = "/") -> bool:
    """This node is in the planned cluster's corosync.conf (a create or join got that far).

    A config of another cluster is refused: first boot never touches a node that belongs to a
    cluster it was not told about. Debian's packaged example config does not count.
    """
    from pvestrap.checks.joinable import is_stock_conf
    from pvestrap.corosync.facade import CorosyncConf

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


def predecessor(plan: ClusterPlan, me: Node) -> Node | None:
    """The node that must be a member before ME joins: the creator goes first, then the
    joiners in nodeid order. None for the creator."""
    creator = plan.creator
    if me.name == creator.name:
        return None
    order = [creator] + sorted((n for n in plan.nodes if n.name != creator.name),
                               key=lambda n: n.nodeid)
    return order[order.index(me) - 1]


# -- applying -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyRequest:
    """What first boot hands the apply: the plan, this node, and how to reach corosync.

    corosync_start: the command that starts corosync, where the system's own service manager
    cannot (a lab node has no systemd); None means the backend's default.
    """

    plan: ClusterPlan
    node: str
    answers_path: str
    ignore: tuple[str, ...] = ()
    quorum_timeout_s: float = 300.0
    corosync_start: tuple[str, ...] | None = None
    report: Report | None = None  # this run's preflight; None: the apply runs its own gate
    say: Say = field(default=lambda _m: None, compare=False, repr=False)


ApplyFn = Callable[[ApplyRequest], None]


def reasons(exc: PvestrapError) -> tuple[str, ...]:
    """Why it failed, as codes: a failed step's cause, a refused join's findings, else the
    error's own code."""
    cause = getattr(exc, "cause", None)
    if getattr(exc, "cause_code", None):
        found = getattr(cause, "reasons", None) or (exc.cause_code,)
    else:
        found = getattr(exc, "reasons", None) or (exc.code,)
    return tuple(found)


def retryable(exc: PvestrapError) -> bool:
    found = reasons(exc)
    return bool(found) and all(code in RETRYABLE for code in found)


def apply_with_retries(apply: ApplyFn, request: ApplyRequest, timeout_s: float, say: Say,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> int:
    """Apply; while it fails with a RETRYABLE code, wait (2, 4, 8 ... at most 30 s, with
    jitter so joiners do not collide again) and try again until TIMEOUT_S. Returns the number
    of attempts; re-raises the last error when it is not retryable or time is up."""
    started = clock()
    attempt = 0
    while True:
        attempt += 1
        try:
            apply(request)
            return attempt
        except PvestrapError as exc:
            left = timeout_s - (clock() - started)
            if not retryable(exc) or left <= 0:
                raise
            delay = min(30.0, 2.0 ** attempt) * random.uniform(1.0, 1.5)
            delay = min(delay, max(left, 0.0))
            say(f"apply attempt {attempt} failed ({', '.join(reasons(exc))}: {exc.message}); "
                f"retrying in {delay:.0f} s")
            sleep(delay)


def default_apply(request: ApplyRequest) -> None:
    """The same apply as `pvestrap apply --answers FILE --node NODE --yes`."""
    from dataclasses import replace

    from pvestrap.apply import corosync as cs
    from pvestrap.apply.flow import ApplyContext, apply_node
    from pvestrap.system import RealSystem

    service = (cs.CommandService(request.corosync_start, cs.DIRECT.stop_argv)
               if request.corosync_start else None)
    timeouts = replace(cs.CorosyncTimeouts(), quorum=request.quorum_timeout_s)
    report = request.report
    ctx = ApplyContext(RealSystem(), ignore=request.ignore, out=request.say, service=service,
                       timeouts=timeouts,
                       preflight=(lambda _plan, _node: report) if report is not None else None)
    apply_node(request.plan, request.node, ctx)
