"""Create or join, retried while the cluster is not ready for this node yet.

The apply itself is a seam (`ApplyFn`): the default runs `pvestrap.apply.flow`, the same plan
and create-or-join as `pvestrap apply --answers`, gated by the preflight this first boot made
(or, on a resumed run that made none, by the apply's own local preflight); tests and the lab
may pass their own. An apply that fails because the cluster is busy or not there yet (locked by
another join, not quorate, unreachable) is retried with backoff until a deadline: apply is
idempotent and rolls back on failure, so another attempt is always safe.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from pvestrap.apply import corosync as cs
from pvestrap.apply import corosync_service as svc
from pvestrap.apply.flow import ApplyContext, apply_node, choose_backend
from pvestrap.apply.lock import flock_within
from pvestrap.apply.remote import JOIN_LOCK
from pvestrap.errors import PvestrapError
from pvestrap.plan import ClusterPlan
from pvestrap.report.model import Report
from pvestrap.system import RealSystem

Say = Callable[[str], None]
# Reasons (error codes, a failed step's cause, a refused join's findings) that mean "not yet":
# the cluster is busy with another join, not created or not quorate yet, or not reachable yet.
RETRYABLE = frozenset({
    "apply-locked", "join-locked", "join-cluster-locked", "join-cluster-not-quorate",
    "member-unreachable", "member-not-clustered", "fingerprint-unreachable", "quorum-timeout",
})
# Every joiner of a first boot is on its way once the creator is a member: the one that takes the
# member's join lock waits this long (at most) for the others to queue, so that they all join in
# one configuration change (pvestrap.apply.batch).
GATHER_S = 10.0
# The creating node's look at its own quorum (corosync-quorumtool -s, a few ms): its corosync is
# quorate ~0.37 s after it starts (3 nodes x 2 links, corosync 3.1.7), which the default 0.2 s
# look saw at 0.4-0.6 s; the batched joiners queue for this node's join lock until then.
CREATE_POLL_S = 0.05
# The first pause before another apply attempt (it doubles each time). Short, because the
# commonest "not yet" of a batched joiner is brief: every joiner ssh-es to the creator as soon as
# its own preflight passed, next to the other joiners' preflight connects to its port 22, and
# sshd drops connections past MaxStartups (10 unauthenticated at once, its default; seen at 16
# nodes: "drop connection #11 ... past MaxStartups", 1-2 joiners in 2 of 4 first boots). The
# batch's holder gathers for GATHER_S, so a joiner back in the queue within a second is still in
# the one change; the old first pause (2-3 s) held the batch up by ~1.5 s when it was the last.
FIRST_RETRY_S = 0.5
# How long the creating node waits for its own join lock (a join that got this node's lock in an
# earlier run may still hold it) before it goes ahead without: the lock only orders the joins.
HOLD_WAIT_S = 60.0


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
    gather_s: float = GATHER_S


ApplyFn = Callable[[ApplyRequest], None]


def reasons(exc: PvestrapError) -> tuple[str, ...]:
    """Why it failed, as codes: a failed step's cause, a refused join's findings, else the
    error's own code."""
    cause = getattr(exc, "cause", None)
    cause_code = getattr(exc, "cause_code", None)
    if cause_code:
        found = getattr(cause, "reasons", None) or (cause_code,)
    else:
        found = getattr(exc, "reasons", None) or (exc.code,)
    return tuple(found)


def retryable(exc: PvestrapError) -> bool:
    found = reasons(exc)
    return bool(found) and all(code in RETRYABLE for code in found)


def apply_with_retries(apply: ApplyFn, request: ApplyRequest, timeout_s: float, say: Say,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> int:
    """Apply; while it fails with a RETRYABLE code, wait (FIRST_RETRY_S, then twice as long
    each time, at most 30 s, with jitter so joiners do not collide again) and try again until
    TIMEOUT_S. Returns the number of attempts; re-raises the last error when it is not
    retryable or time is up."""
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
            delay = min(30.0, FIRST_RETRY_S * 2.0 ** (attempt - 1)) * random.uniform(1.0, 1.5)
            delay = min(delay, max(left, 0.0))
            say(f"apply attempt {attempt} failed ({', '.join(reasons(exc))}: {exc.message}); "
                f"retrying in {delay:.1f} s")
            sleep(delay)


@contextmanager
def holding_joins(say: Say, wait_s: float = HOLD_WAIT_S, path: str = JOIN_LOCK,
                  poll_s: float = 0.1) -> Iterator[bool]:
    """The creating node holds its own join lock (the one joiners queue for on it,
    pvestrap.apply.batch) for the block: from before it answers any probe until its create is
    done (firstboot.flow), so a batched joiner queues for that lock as soon as its own
    preflight passed (which needs this node's answers), instead of waiting by probe until this
    node is ready or a member, and the first of them to get it finds a quorate cluster. When
    this node stops without a cluster (its preflight failed), the lock goes with it and a
    queued joiner finds no cluster there: member-not-clustered, retried (RETRYABLE) until the
    apply's deadline, never a join. Yields whether it holds the lock (not after WAIT_S: it goes
    ahead, and says so)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        held = flock_within(fd, wait_s, poll_s)
        if not held:
            say(f"warning: {path} stayed locked by another join for {wait_s:g} s; going ahead "
                "without holding it")
        yield held
    finally:
        os.close(fd)  # lets the lock go


def batches(plan: ClusterPlan) -> bool:
    """Whether this machine's joins go in batches (the plain corosync backend): then every
    joiner applies right after the creator; `pvecm add` goes one node at a time."""
    return choose_backend(plan, RealSystem()) == "corosync"


def default_apply(request: ApplyRequest) -> None:
    """The same apply as `pvestrap apply --answers FILE --node NODE --yes`."""
    service = (svc.CommandService(request.corosync_start, svc.DIRECT.stop_argv)
               if request.corosync_start else None)
    timeouts = replace(cs.CorosyncTimeouts(), quorum=request.quorum_timeout_s)
    if request.plan.role_of(request.node) == "create":  # one node asks; the joiners wait on it
        timeouts = replace(timeouts, poll=CREATE_POLL_S)
    report = request.report
    # First boot's preflight ran after its own network phase and probed every peer over the new
    # addresses: it is apply's gate and, for a link the phase configured, its recheck too.
    measured = (lambda _plan, _node: report) if report is not None else None
    ctx = ApplyContext(RealSystem(), ignore=request.ignore, out=request.say, service=service,
                       timeouts=timeouts, gather_s=request.gather_s,
                       preflight=measured, recheck=measured)
    apply_node(request.plan, request.node, ctx)
