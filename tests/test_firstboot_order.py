"""First boot's order without a lab: when the creating node holds its join lock, when each node
waits for its turn and for what, and what a joiner queued on a creator that stopped finds.

The flow runs for real (its answer file, secret, state folder, phases and the creator's real
flock on a temporary join lock); where it meets the network (responders, the preflight
with its wait for the peers, stage waits, corosync) the tests give it fakes through
`flow.Seams` that write down what happened, and whether the lock was held at that moment,
asked with a real flock. The same flow with real nodes: tests/lab/test_firstboot_cluster.py."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pvestrap.answers import dumps
from pvestrap.apply import corosync as cs
from pvestrap.apply.remote import Remote
from pvestrap.firstboot import applying, waiting
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.firstboot.flow import FirstBootPreflightFailed, Options, Seams, run
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.recorded import RecordingSystem
from pvestrap.report.model import Report


def three() -> ClusterPlan:
    return ClusterPlan("fb", tuple(Node(n, i, {0: f"10.254.0.{i}"}) for n, i in
                                   (("a", 1), ("b", 2), ("c", 3))),
                       (Link(0, "10.254.0.0/24"),), backend="corosync").check()


def held(lock: Path) -> bool:
    """Whether someone holds LOCK: a flock of our own on it is refused."""
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@dataclass
class Boot:
    """One node's first boot with fakes at the seams; EVENTS: (what, lock held then)."""

    tmp: Path
    name: str
    batched: bool = True
    member: bool = False
    fail_preflight: bool = False
    events: list[tuple[str, bool]] = field(default_factory=list)
    turns: list[tuple[bool, bool]] = field(default_factory=list)  # (batched, measured)

    @property
    def lock(self) -> Path:
        return self.tmp / "join.lock"

    def note(self, what: str) -> None:
        self.events.append((what, held(self.lock)))

    def seams(self) -> Seams:
        node = self

        class Presence:
            def __init__(self, *_args):
                pass

            def __enter__(self):
                node.note("answering")
                return self

            def __exit__(self, *_exc):
                node.note("silent")

            def announce(self, stage: str) -> None:
                node.note(stage)

            def release_corosync_ports(self) -> None:
                pass

        def preflight(*_args) -> Report:
            node.note("preflight")
            if node.fail_preflight:
                raise FirstBootPreflightFailed(1, ["latency-loss"], {"latency"})
            return Report("first boot", ())

        def turn(_opts, _plan, _me, _tokens, _say, batched: bool, measured: bool) -> None:
            node.turns.append((batched, measured))
            node.note("turn")

        def members(*_args) -> bool:
            node.note("lingering")
            return True

        return Seams(network=lambda *_a: False, member=lambda *_a: self.member,
                     batches=lambda _plan: self.batched,
                     hold=lambda say: applying.holding_joins(say, path=str(self.lock)),
                     presence=Presence, preflight=preflight, turn=turn, members=members)

    def run(self) -> None:
        answers = self.tmp / "answers.toml"
        if not answers.exists():
            answers.write_text(dumps(three()))
            firstboot_secret.ensure(firstboot_secret.path_for(answers))
        opts = Options(str(answers), node=self.name, state_dir=str(self.tmp / "state"))

        def apply(request: applying.ApplyRequest) -> None:
            self.note("apply")

        run(opts, apply, say=lambda _m: None, seams=self.seams())


def test_the_creator_holds_its_join_lock_from_before_it_answers_until_its_create_is_done(
        tmp_path):
    creator = Boot(tmp_path, "a")
    creator.run()
    assert creator.events == [("answering", True), ("preflight", True), ("ready", True),
                              ("turn", True), ("apply", True), ("member", False),
                              ("lingering", False), ("silent", False)]
    assert creator.turns == [(True, True)]


def test_a_creator_whose_preflight_fails_lets_its_lock_go_and_changes_nothing(tmp_path):
    creator = Boot(tmp_path, "a", fail_preflight=True)
    with pytest.raises(FirstBootPreflightFailed):
        creator.run()
    assert creator.events == [("answering", True), ("preflight", True), ("silent", True)]
    assert not held(creator.lock)  # the joiners queued on it get the lock: see below


def test_a_joiner_takes_no_lock_and_goes_on_after_its_preflight(tmp_path):
    joiner = Boot(tmp_path, "b")
    joiner.run()
    assert [what for what, _ in joiner.events] == ["answering", "preflight", "ready", "turn",
                                                   "apply", "member", "lingering", "silent"]
    assert not any(locked for _, locked in joiner.events)
    assert joiner.turns == [(True, True)]  # measured in this run: waiting.turn has nothing


def test_a_resumed_node_says_whether_it_measured_and_a_member_has_no_turn(tmp_path):
    joiner = Boot(tmp_path, "b")
    joiner.run()
    (tmp_path / "state" / "firstboot.done").unlink()  # as if killed before its done marker
    joiner.events.clear()
    joiner.run()
    assert joiner.turns[-1] == (True, False)
    assert "preflight" not in [what for what, _ in joiner.events]
    member = Boot(tmp_path / "m", "a", member=True)
    (tmp_path / "m").mkdir()
    member.run()
    assert member.turns == [] and member.events[0] == ("answering", True)


def test_with_pvecm_add_the_creator_holds_nothing(tmp_path):
    creator = Boot(tmp_path, "a", batched=False)
    creator.run()
    assert not any(locked for _, locked in creator.events)
    assert creator.turns == [(False, True)]


def test_what_each_node_waits_for_before_its_turn():
    plan = three()
    a, b, c = plan.nodes
    slow = waiting.POLL_S
    creator = (waiting.StageWait(("b", "c"), "ready", waiting.FAST_POLL_S, waiting.LISTEN),)
    assert waiting.turn(plan, a, batched=True) == creator
    assert waiting.turn(plan, a, batched=False) == creator
    # batched: the creator held its lock before its preflight partners had its answers
    assert waiting.turn(plan, b, batched=True) == ()
    assert waiting.turn(plan, c, batched=True, measured=False) == (
        waiting.StageWait(("a",), "ready", slow),)
    # `pvecm add`, one at a time: the node before, ready (it may still measure), then a member
    assert waiting.turn(plan, c, batched=False) == (
        waiting.StageWait(("b",), "ready", slow), waiting.StageWait.fast(("b",), "member"))
    # the fast pace's round ends at each peer's first answer; the slow one is two probes
    assert waiting.LISTEN.until_answered and not waiting.ROUND.until_answered


def test_a_joiner_that_gets_the_lock_of_a_creator_without_a_cluster_retries_and_joins_nothing():
    """The creator stopped (its preflight failed): the queued joiner takes its lock and reads
    no cluster there. That is 'not yet' (retried until the apply's deadline), never a join."""
    system = RecordingSystem().on(("ssh",), lambda s, argv, stdin: (
        0, "none /etc/corosync/corosync.conf\nnone /etc/corosync/authkey\nquorum 1\n", ""))
    with pytest.raises(cs.JoinRefused) as caught:
        cs.read_cluster(Remote(system, "10.254.0.1"))
    assert applying.reasons(caught.value) == ("member-not-clustered", "member-not-clustered")
    assert applying.retryable(caught.value)
