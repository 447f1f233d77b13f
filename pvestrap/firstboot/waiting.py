"""First boot waiting for the others: probe rounds until every peer answers a stage's token.

The same prober as the preflight, in short rounds (three probes per path); a peer counts as
there once one of its links answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

from pvestrap.checks import prober
from pvestrap.checks.probe import Token
from pvestrap.errors import OperationFailed
from pvestrap.firstboot.membership import predecessor
from pvestrap.firstboot.tokens import STAGES
from pvestrap.plan import ClusterPlan, Node

Say = Callable[[str], None]
# One probe round: two probes per path 0.05 s apart, then 0.3 s for the last reply (a round
# always lasts that long: the prober waits out the last reply's time); then a pause. A peer whose
# reply came too late is asked again next round. Probes per path per second stay below what the
# waits used to send (3 probes per 0.3 s round + 0.7 s reply time + 1 s pause): the creator's
# responder is a thread of the process whose preflight is still measuring while every joiner
# waits for it to be "member" (two 16-node first boots at load 24-39 with 3.6 times that rate
# ended in the creator's false packet-loss FAILs); yet a stage the peer reached is seen ~0.3 s
# sooner (the round's 0.9 s are now 0.4 s).
ROUND = prober.ProbeSettings(duration_s=0.1, interval_s=0.05, reply_timeout_s=0.3, mtu=False,
                             icmp=False, dad_wait_s=0.0)
POLL_S = 0.9
# The fast pace, where the probes crowd nobody's measurement: the creator asking each peer
# whether it is ready (one asker per peer), a joiner asking its predecessor whether it is a
# member once that one said it is ready (its preflight is over: `turn`). Both waits are on
# forming's critical path. Its round (LISTEN) probes each path every 0.1 s for up to 1 s and
# ends at the peer's first answer (ProbeSettings.until_answered), then FAST_POLL_S of pause: a
# stage reached is seen ~0.05 s later, at most ~0.5 s (a peer that gets there in the round's
# last 0.3 s). With ROUND's two probes the creator saw the last joiner's "ready" 0.08-0.36 s
# late (3 nodes). 10 probes per path per second from the one asker, next to the 20 that each
# of the asked peer's preflight partners sends.
FAST_POLL_S = 0.1
LISTEN = prober.ProbeSettings(duration_s=1.0, interval_s=0.1, reply_timeout_s=0.3, mtu=False,
                              icmp=False, dad_wait_s=0.0, until_answered=True)
PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True)
class StageWait:
    """Wait until every one of PEERS answers STAGE's token: probe rounds of SETTINGS, a pause
    of POLL_S after each."""

    peers: tuple[str, ...]
    stage: str
    poll_s: float
    settings: prober.ProbeSettings = ROUND

    @classmethod
    def fast(cls, peers: tuple[str, ...], stage: str) -> "StageWait":
        return cls(peers, stage, FAST_POLL_S, LISTEN)


def turn(plan: ClusterPlan, me: Node, batched: bool, measured: bool = True
         ) -> tuple[StageWait, ...]:
    """What ME waits for before its create or join, in order (first boot's "turn").

    The creating node: every peer's preflight passed ("ready"), so no preflight probes a node
    whose corosync is coming up; asked at the fast pace (one asker per peer). A joiner with
    `pvecm add` (one node at a time): its predecessor ready, at the slow pace (its preflight may
    still be measuring, and every later joiner may be asking it), then a member, at the fast
    one. A batched joiner (plain corosync, BATCHED) whose preflight passed in this run
    (MEASURED): nothing. The creator holds its join lock from before it answers any probe
    (firstboot.flow) until its create is done, and that preflight had the creator's answers, so
    the joiner queues for the lock at once (pvestrap.apply.batch) instead of looking for
    "ready" at the slow pace, which saw it up to 1.3 s late, on forming's critical path. One
    that resumes without a preflight has no such answers yet: it waits for "ready" as before."""
    before = predecessor(plan, me, batched)
    if before is None:
        return (StageWait.fast(tuple(n.name for n in plan.nodes if n.name != me.name), "ready"),)
    if batched:
        return () if measured else (StageWait((before.name,), "ready", POLL_S),)
    return (StageWait((before.name,), "ready", POLL_S),
            StageWait.fast((before.name,), "member"))


class PeersMissing(OperationFailed):
    code = "firstboot-peers-missing"

    def __init__(self, missing: list[str], waited_s: float):
        self.missing = list(missing)
        super().__init__(
            f"{', '.join(missing)} did not answer within {waited_s:g} s",
            remedy="start them (they run the same first boot), check the link networks "
                   "between the nodes, and that every node got the same answer file (the "
                   "probe token is derived from it); then run the first boot again "
                   "(`systemctl start pvestrap-firstboot` or reboot)")


def answering(me: Node, peers: Mapping[str, Mapping[int, str]], token: Token,
              settings: prober.ProbeSettings = ROUND) -> set[str]:
    """The peers that answer TOKEN on at least one link in one short probe round."""
    if not peers:
        return set()
    targets = prober.udp_targets(peers, dict(me.addresses), legacy=False)
    measured = prober.measure(prober.ProbeRequest(me.name, targets, settings=settings), token)
    return {r.peer for r in measured.udp if r.state == "open"}


def _peers(plan: ClusterPlan, me: Node, names: list[str] | None = None
           ) -> dict[str, dict[int, str]]:
    return {n.name: dict(n.addresses) for n in plan.nodes
            if n.name != me.name and (names is None or n.name in names)}


def wait_for_checked(plan: ClusterPlan, me: Node, token: Token, timeout_s: float,
                     say: Say) -> set[str]:
    """Until every other node of the plan answers the "checked" TOKEN (its local checks ran);
    PeersMissing after TIMEOUT_S. Every node's preflight calls it between its local checks and
    its probes, so no node probes while another still runs its CPU-heavy start and local
    checks: the mesh preflight's READY/GO, without an orchestrator. At the fast pace (seen
    within ~0.1 s), so the probes start within ~0.1 s of the last node's local checks."""
    peers = [n.name for n in plan.nodes if n.name != me.name]
    if not peers:
        return set()
    arrived = wait_for_stage(plan, me, peers, "checked", token, timeout_s, say, FAST_POLL_S,
                             LISTEN)
    missing = sorted(set(peers) - arrived)
    if missing:
        raise PeersMissing(missing, timeout_s)
    return arrived


def wait_for_stage(plan: ClusterPlan, me: Node, peers: list[str], stage: str, token: Token,
                   timeout_s: float, say: Say, poll_s: float = POLL_S,
                   settings: prober.ProbeSettings = ROUND) -> set[str]:
    """Until every one of PEERS answers the STAGE token (probe rounds of SETTINGS); the ones
    that did at the timeout."""
    targets = _peers(plan, me, peers)
    started = time.monotonic()
    arrived: set[str] = set()
    last_said = -PROGRESS_EVERY_S
    while True:
        arrived |= answering(me, {n: a for n, a in targets.items() if n not in arrived}, token,
                             settings)
        missing = sorted(set(targets) - arrived)
        waited = time.monotonic() - started
        if not missing:
            say(f"{', '.join(sorted(targets))} {'is' if len(targets) == 1 else 'are'} "
                f"{STAGES[stage] if len(targets) == 1 else stage} ({waited:.0f} s)")
            return arrived
        if waited >= timeout_s:
            return arrived
        if waited - last_said >= PROGRESS_EVERY_S:
            say(f"waiting until {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                f"{STAGES[stage] if len(missing) == 1 else stage} ({waited:.0f} s of "
                f"{timeout_s:.0f} s)")
            last_said = waited
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
