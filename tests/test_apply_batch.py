"""Batched membership (pvestrap.apply.batch) without a lab: the queue's remote programs run for
real (perl, flock, sh) on a temporary folder; the holder's choice and steps on a RecordingSystem
whose ssh answers are scripted. tests/lab/test_apply_batch_lab.py runs it with real corosync."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from pvestrap.apply import batch
from pvestrap.apply import corosync as cs
from pvestrap.apply import corosync_service as svc
from pvestrap.apply.remote import MemberAddress, MembersStep, Remote, RemoteFile
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.recorded import RecordingSystem
from pvestrap.render import render_corosync_conf
from pvestrap.system import Secret

QUORATE = (Path(__file__).parent / "data" / "status" /
           "quorumtool-s-2node-quorate.txt").read_text()
FAST = cs.CorosyncTimeouts(quorum=5, poll=0.5, service=5)


def make_plan(count: int = 5) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"})
                  for i in range(1, count + 1))
    return ClusterPlan(cluster_name="lab", nodes=nodes, backend="corosync",
                       links=(Link(0, "10.254.0.0/24"), Link(1, "10.254.1.0/24")))


def snapshot(text: str) -> cs.ClusterSnapshot:
    return cs.ClusterSnapshot("10.254.0.1", text, Secret(base64.b64encode(b"k" * 256).decode()),
                              parse_quorum_status(QUORATE))


def creator_only(plan: ClusterPlan) -> str:
    return render_corosync_conf(replace(plan, nodes=plan.nodes[:1]), 1)


# -- the queue on the member, for real -------------------------------------------------------------

def waiter(tmp_path: Path, plan: ClusterPlan, name: str, wait: int = 20) -> subprocess.Popen:
    script = batch.waiter_script(plan, name, str(tmp_path / "q"), str(tmp_path / "lock"))
    return subprocess.Popen(["sh", "-c", script(wait)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def queued(tmp_path: Path) -> dict[str, str]:
    out = subprocess.run(["sh", "-c", batch.waiting_script(str(tmp_path / "q"))],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return batch.parse_waiting(out.stdout)


def queue_holding(plan: ClusterPlan, *names: str) -> RecordingSystem:
    """A member whose join queue holds NAMES waiting: what the holder's look at the queue
    (the `flock -n` script over ssh) reads; every other ssh command succeeds silently."""
    waiting = "".join(f"waiting {n} {batch.entry_line(plan, n)}\n" for n in names)
    return RecordingSystem().on(("ssh",), lambda s, argv, stdin: (
        0, waiting if "flock -n" in argv[-1] else "", ""))


def until(check, seconds: float = 20.0) -> bool:
    import time
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_joiners_wait_in_the_queue_and_a_marked_one_stops_waiting(tmp_path):
    plan = make_plan()
    (tmp_path / "q").mkdir()
    holder = subprocess.Popen(["flock", str(tmp_path / "lock"), "sleep", "60"])
    assert until(lambda: subprocess.run(["flock", "-n", str(tmp_path / "lock"), "true"],
                                        timeout=10).returncode == 1)
    first = waiter(tmp_path, plan, "pve3")
    second = waiter(tmp_path, plan, "pve4")
    try:
        assert until(lambda: set(queued(tmp_path)) == {"pve3", "pve4"})
        assert queued(tmp_path)["pve3"] == batch.entry_line(plan, "pve3") == \
            "lab pve3 3 0=10.254.0.3 1=10.254.1.3"
        # A joiner whose session ends leaves the queue at once (its flock goes with it).
        second.stdin.close()
        assert second.wait(timeout=10) == 0
        assert set(queued(tmp_path)) == {"pve3"}
        subprocess.run(["sh", "-c", batch.mark_script(["pve3"], 1800000000.25,
                                                      str(tmp_path / "q"))],
                       check=True, timeout=10)
        assert (tmp_path / "q" / batch.START_NAME).read_text() == "1800000000.250\n"
        assert first.stdout.readline() == b"batched\n"
        # it keeps its session (the joiner reads the cluster over that connection) until the
        # joiner closes it
        assert first.poll() is None
        first.stdin.close()
        assert first.wait(timeout=10) == 0
        # pve4 stale (unlocked); the start moment stays for the batched joiners to read
        assert sorted(p.name for p in (tmp_path / "q").iterdir()) == [batch.START_NAME, "pve4"]
        assert queued(tmp_path) == {}
    finally:
        for proc in (holder, first, second):
            proc.kill()
            proc.wait()


def test_a_waiter_takes_the_free_lock_and_holds_it_while_its_joiner_lives(tmp_path):
    plan = make_plan()
    proc = waiter(tmp_path, plan, "pve2")
    try:
        assert proc.stdout.readline() == b"locked\n"
        assert queued(tmp_path) == {}  # the holder is not waiting any more
        busy = subprocess.run(["flock", "-n", str(tmp_path / "lock"), "true"], timeout=10)
        assert busy.returncode == 1
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        proc.stdin.close()  # the joiner is gone: the lease ends, the lock is free
        assert proc.wait(timeout=10) == 0
        assert subprocess.run(["flock", "-n", str(tmp_path / "lock"), "true"],
                              timeout=10).returncode == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_waiter_gives_up_after_its_time(tmp_path):
    holder = subprocess.Popen(["flock", str(tmp_path / "lock"), "sleep", "60"])
    (tmp_path / "q").mkdir()
    assert until(lambda: subprocess.run(["flock", "-n", str(tmp_path / "lock"), "true"],
                                        timeout=10).returncode == 1)
    proc = waiter(tmp_path, make_plan(), "pve2", wait=1)
    try:
        assert proc.wait(timeout=20) == 1 and proc.stdout.read() == b""  # stdin still open
    finally:
        for p in (holder, proc):
            p.kill()
            p.wait()


# -- the holder's one change -----------------------------------------------------------------------

def test_the_batch_adds_every_fitting_waiter_in_one_version_bump():
    plan = make_plan()
    text = creator_only(plan)
    conf = CorosyncConf.parse(text)
    lines = {n: batch.entry_line(plan, n) for n in ("pve3", "pve4", "pve5")}
    lines["pve4"] = lines["pve4"].replace("10.254.1.4", "10.254.1.44")  # another plan's pve4
    new, names = batch.choose(plan, "pve2", conf, snapshot(text), {**lines, "stranger": "x"})
    assert names == ("pve3", "pve5")
    expected = replace(plan, nodes=tuple(n for n in plan.nodes if n.name != "pve4"))
    assert new.bump_version().canonical() == render_corosync_conf(expected, 2)


def test_the_holder_batches_the_queue_and_undoes_only_itself():
    plan = make_plan(4)
    text = creator_only(plan)
    system = queue_holding(plan, "pve3", "pve4")
    steps, names = batch.holder_steps(system, plan, "pve2", snapshot(text), svc.SYSTEMD,
                                      lambda s, a: Remote(s, a), FAST)
    assert names == ("pve3", "pve4")
    assert [s.id for s in steps] == ["update-members", "install", "start", "wait-quorum"]
    change, install, _, wait = steps
    assert isinstance(change, batch.BatchStep) and isinstance(change.members, MembersStep)
    assert change.members.after == install.conf_text == render_corosync_conf(plan, 2)
    assert change.members.members == (MemberAddress("pve1", "10.254.0.1"),)
    assert wait.members is None  # quorate is enough: one failed joiner must not fail the rest
    # Nobody waiting: exactly the single join.
    alone = RecordingSystem()
    alone.on(("ssh",), lambda s, argv, stdin: (0, "", ""))
    single, none = batch.holder_steps(alone, plan, "pve2", snapshot(text), svc.SYSTEMD,
                                      lambda s, a: Remote(s, a), FAST)
    assert none == () and single == cs.join_steps(plan, "pve2", snapshot(text), svc.SYSTEMD,
                                                  lambda s, a: Remote(s, a), FAST)


def test_a_listed_joiner_resumes_and_lets_the_lock_go_after_its_install():
    """The batch's holder died after its update-members, before it told the others: every
    batched node is listed, none runs. Whoever gets the lock next resumes; it must let the
    lock go before its quorum wait, which needs the others (they wait for that lock)."""
    plan = make_plan(4)
    batched = render_corosync_conf(plan, 2)
    system = queue_holding(plan, "pve2", "pve3")
    steps, names = batch.holder_steps(system, plan, "pve4", snapshot(batched), svc.SYSTEMD,
                                      lambda s, a: Remote(s, a), FAST, gather_s=10)
    assert names == () and system.commands == []  # no second change, no gathering
    released: list[str] = []
    steps = batch.released_after_install(steps, "10.254.0.1", lambda: released.append("lock"))
    assert [s.id for s in steps] == ["install", "release-lock", "start", "wait-quorum"]
    assert steps[3].members == 4
    assert steps[1].plan(system) and steps[1].apply(system) is None and released == ["lock"]
    # A join that still changes the members keeps the lock to the end.
    first = render_corosync_conf(replace(plan, nodes=plan.nodes[:3]), 2)
    single, _ = batch.holder_steps(RecordingSystem(), plan, "pve4", snapshot(first), svc.SYSTEMD,
                                   lambda s, a: Remote(s, a), FAST)
    assert batch.released_after_install(single, "10.254.0.1", released.clear) == single


def test_the_batch_starts_corosync_at_one_moment_the_holder_sets():
    """The holder tells the batched joiners the moment (its wall clock + start_lead) in the
    same call as their marks, the moment first; its own start waits for that moment, and so
    does a batched joiner's (read with the cluster's files); nobody waits longer than
    START_WAIT_MAX_S, and a past or unknown moment starts at once."""
    plan = make_plan(4)
    text = creator_only(plan)
    system = queue_holding(plan, "pve3", "pve4")
    steps, _ = batch.holder_steps(system, plan, "pve2", snapshot(text), svc.SYSTEMD,
                                  lambda s, a: Remote(s, a), FAST)
    change, _, start, _ = steps
    told_at = system.wall()
    change.apply(system)
    assert change.when.at == pytest.approx(told_at + batch.start_lead(3))  # pve2, pve3, pve4
    told = system.commands[-1][-1]
    assert told.index(batch.START_NAME) < told.index("pve3.batched") < told.index("pve4.batched")
    assert f"{change.when.at:.3f}" in told
    assert isinstance(start, batch.StartTogether) and start.when is change.when
    assert any("common start" in str(a) for a in start.plan(RecordingSystem()))
    before = system.now()
    start.apply(system)
    assert system.now() - before == pytest.approx(batch.start_lead(3))  # then corosync started
    assert tuple(system.commands[-1]) == tuple(svc.SYSTEMD.start_argv)

    listed = render_corosync_conf(plan, 2)
    shown = "".join(f"file {path} 644 {base64.b64encode(data).decode()}\n" for path, data in (
        ("/etc/corosync/corosync.conf", listed.encode()), ("/etc/corosync/authkey", b"k" * 256),
        (batch.START, f"{system.wall() + 30:.3f}\n".encode())))
    joiner = RecordingSystem()
    joiner.on(("ssh",), lambda s, argv, stdin: (0, shown, ""))
    found, at = batch.read_batched(Remote(joiner, "10.254.0.1"))
    assert found.conf_text == listed and at == pytest.approx(system.wall() + 30)
    late = batch.batched_steps(plan, "pve4", found, svc.SYSTEMD, FAST, at - 30 - 5)[1]
    far = batch.batched_steps(plan, "pve4", found, svc.SYSTEMD, FAST, joiner.wall() + 3600)[1]
    unknown = batch.batched_steps(plan, "pve4", found, svc.SYSTEMD, FAST, None)[1]
    for step, waited in ((late, 0.0), (far, batch.START_WAIT_MAX_S), (unknown, 0.0)):
        node = RecordingSystem()
        step.apply(node)
        assert node.now() == pytest.approx(waited)
    assert batch.start_moment(None) is None
    # The lead grows with the batch (the member serves every joiner's read of the cluster's
    # files), and stays under the longest anyone waits for the moment.
    assert batch.start_lead(2) == pytest.approx(0.15) and batch.start_lead(15) > 0.3
    assert batch.start_lead(2) < batch.start_lead(7) < batch.start_lead(15)
    assert batch.start_lead(10_000) == batch.START_LEAD_MAX_S < batch.START_WAIT_MAX_S
    for bad in (b"", b"soon\n", b"nan\n", b"inf\n"):
        assert batch.start_moment(RemoteFile(batch.START, bad, 0o644)) is None


def test_leaving_removes_only_that_node_with_one_more_bump():
    plan = make_plan(4)
    batched = render_corosync_conf(plan, 2)
    shown = f"file /etc/corosync/corosync.conf 644 {base64.b64encode(batched.encode()).decode()}\n"
    system = RecordingSystem()
    written: list[tuple[str, str]] = []

    def ssh(sys_, argv, stdin):
        if argv[-1].startswith("set -e") and "put " in argv[-1]:
            written.append((argv[argv.index("--") - 1], base64.b64decode(str(stdin)).decode()))
            return 0, shown + "none /etc/corosync/corosync.conf.bak\n", ""
        return 0, shown, ""

    system.on(("ssh",), ssh)
    batch.leave(system, lambda s, a: Remote(s, a), "10.254.0.1", "pve3",
                resolver=lambda name: {"pve2": ("192.168.7.2",)}.get(name, ()))
    after = render_corosync_conf(replace(plan, nodes=tuple(
        n for n in plan.nodes if n.name != "pve3")), 3)
    # pve2 by its name (it resolves here), pve4 at its link0 address (it does not)
    assert sorted(host for host, _ in written) == ["root@10.254.0.1", "root@10.254.0.4",
                                                   "root@pve2"]
    assert {text for _, text in written} == {after}
    assert system.commands[-1][-1].endswith("corosync-cfgtool -R")


@pytest.mark.parametrize("listed", [True, False])
def test_a_batched_joiner_finishes_only_when_the_cluster_lists_it(listed):
    plan = make_plan(4)
    text = render_corosync_conf(plan if listed else replace(plan, nodes=plan.nodes[:3]), 2)
    steps = batch.batched_steps(plan, "pve4", snapshot(text), svc.SYSTEMD, FAST)
    if not listed:
        assert steps is None
        return
    assert [s.id for s in steps] == ["install", "start", "wait-quorum"]
    assert steps[0].conf_text == text and steps[2].members is None


@pytest.mark.parametrize("value", ["-1", "nan", "7200"])
def test_a_bad_batch_wait_exits_2_naming_the_flag(tmp_path, value):
    import sys
    answers = tmp_path / "answers.toml"
    answers.write_text("[cluster]\nname = \"lab\"\n")
    result = subprocess.run([sys.executable, "-m", "pvestrap", "apply", "--answers",
                             str(answers), "--yes", "--batch-wait", value, "--root",
                             str(tmp_path)], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--batch-wait" in result.stderr and "Traceback" not in result.stderr


def test_the_creator_holds_its_join_lock_until_it_lets_it_go(tmp_path):
    """First boot's creating node holds the join lock joiners queue for on it (applying.
    holding_joins): a waiter queues behind it and gets the lock once it is let go; a lock
    another join holds is waited for, bounded, then the creator goes ahead and says so."""
    from pvestrap.firstboot import applying

    plan = make_plan()
    lock = tmp_path / "lock"
    said: list[str] = []
    (tmp_path / "q").mkdir()
    with applying.holding_joins(said.append, path=str(lock)) as held:
        assert held
        proc = waiter(tmp_path, plan, "pve2")
        try:
            assert until(lambda: set(queued(tmp_path)) == {"pve2"})
            assert subprocess.run(["flock", "-n", str(lock), "true"], timeout=10).returncode == 1
        except BaseException:
            proc.kill()
            raise
    try:
        assert proc.stdout.readline() == b"locked\n"
        with applying.holding_joins(said.append, wait_s=0.2, path=str(lock)) as held:
            assert not held
        assert said and "going ahead" in said[0]
    finally:
        proc.kill()
        proc.wait()
