"""The apply engine and its effectors: plan before change, skip what is done, roll back to the
byte, record instead of act in a dry run, never show a secret, one apply at a time."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvestrap.apply.engine import (CommandStep, PlannedCommand, StepFailed, WriteFileStep,
                                   plan_steps, run_steps)
from pvestrap.apply.lock import ApplyLocked, apply_lock, lock_file
from pvestrap.errors import OperationFailed
from pvestrap.recorded import (DryRunSystem, RecordedCommand, RecordedWait, RecordedWrite,
                               RecordingSystem)
from pvestrap.render import Change
from pvestrap.system import CommandFailed, CommandTimeout, RealSystem, Secret


def tree_state(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under root: mode and sha256 (what "byte-identical" means here)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(root))] = (path.stat().st_mode & 0o7777,
                                                hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node root with an existing config (and its old backup) and binary data."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "a.conf").write_text("old a\n")
    (etc / "a.conf").chmod(0o600)
    (etc / "a.conf.bak").write_text("older a\n")
    (etc / "key").write_bytes(bytes(range(256)))
    (etc / "key").chmod(0o400)
    return tmp_path


def fail_step(code: int = 3) -> CommandStep:
    return CommandStep(("sh", "-c", f"echo broken >&2; exit {code}"), id="boom")


# -- rollback --------------------------------------------------------------------------------------

def test_failure_rolls_back_to_byte_identical_files(node: Path):
    before = tree_state(node)
    system = RealSystem(root=str(node))
    steps = [WriteFileStep("/etc/a.conf", "new a\n", 0o644, id="a"),
             WriteFileStep("/etc/b.conf", "new b\n", id="b"),
             WriteFileStep("/etc/key", "text over binary\n", id="key"),
             fail_step()]
    events = []
    with pytest.raises(StepFailed) as caught:
        run_steps(steps, system, events.append)
    assert tree_state(node) == before
    err = caught.value
    assert err.step_id == "boom"
    assert err.cause_code == "command-failed"
    assert err.undone == ("key", "b", "a")
    assert err.undo_failures == ()
    assert err.exit_code == 1
    assert err.as_dict()["step"] == "boom"
    assert [(e.step_id, e.state) for e in events if e.state in ("failed", "undone")] == [
        ("boom", "failed"), ("key", "undone"), ("b", "undone"), ("a", "undone")]


def test_writes_keep_a_backup_and_the_mode(node: Path):
    system = RealSystem(root=str(node))
    outcome = run_steps([WriteFileStep("/etc/a.conf", "new a\n", id="a")], system)
    assert outcome.applied == ("a",)
    assert (node / "etc/a.conf").read_text() == "new a\n"
    assert (node / "etc/a.conf.bak").read_text() == "old a\n"
    assert (node / "etc/a.conf").stat().st_mode & 0o777 == 0o600


def test_undo_runs_in_reverse_order_and_survives_a_failing_undo():
    system = RecordingSystem()
    system.on(("undo-two",), (1, "", "cannot"))
    steps = [CommandStep(("one",), ("undo-one",), id="s1"),
             CommandStep(("two",), ("undo-two",), id="s2"),
             CommandStep(("three",), ("undo-three",), id="s3"),
             CommandStep(("four",), id="s4")]
    system.on(("four",), (2, "", "no"))
    with pytest.raises(StepFailed) as caught:
        run_steps(steps, system)
    assert system.commands == [("one",), ("two",), ("three",), ("four",),
                               ("undo-three",), ("undo-two",), ("undo-one",)]
    assert caught.value.undone == ("s3", "s1")
    assert [f.step_id for f in caught.value.undo_failures] == ["s2"]
    assert caught.value.as_dict()["undo_failures"][0]["step"] == "s2"


def test_a_refusal_while_planning_changes_nothing(node: Path):
    @dataclass(frozen=True)
    class Refuses:
        id: str = "refuses"
        description: str = "refuses while planning"

        def plan(self, system):
            raise OperationFailed("joiner already has an authkey", code="join-refused")

        def apply(self, system):  # pragma: no cover - must never run
            raise AssertionError("applied after a refusal")

        def undo(self, system, memo):  # pragma: no cover
            raise AssertionError

    before = tree_state(node)
    with pytest.raises(OperationFailed) as caught:
        run_steps([WriteFileStep("/etc/a.conf", "new\n"), Refuses()], RealSystem(root=str(node)))
    assert caught.value.code == "join-refused"
    assert tree_state(node) == before


def test_a_bug_in_a_step_is_rolled_back_and_shown_as_itself(node: Path):
    @dataclass(frozen=True)
    class Buggy:
        id: str = "buggy"
        description: str = "has a bug"

        def plan(self, system):
            return [PlannedCommand(("nothing",))]

        def apply(self, system):
            raise KeyError("oops")

        def undo(self, system, memo):
            return None

    before = tree_state(node)
    with pytest.raises(KeyError):
        run_steps([WriteFileStep("/etc/new.conf", "x\n"), Buggy()], RealSystem(root=str(node)))
    assert tree_state(node) == before


# -- idempotency -----------------------------------------------------------------------------------

def test_applying_twice_plans_nothing_the_second_time(node: Path):
    system = RealSystem(root=str(node))
    steps = [WriteFileStep("/etc/a.conf", "new a\n", 0o640, id="a"),
             WriteFileStep("/etc/b.conf", "b\n", id="b"),
             CommandStep(("touch", str(node / "marker")), id="touch",
                         done=lambda s: s.exists("/marker"))]
    first = run_steps(steps, system)
    assert first.applied == ("a", "b", "touch")
    after_first = tree_state(node)
    second = run_steps(steps, system)
    assert second.applied == ()
    assert second.skipped == ("a", "b", "touch")
    assert all(actions == () for _, actions in second.plans)
    assert tree_state(node) == after_first


def test_plan_reports_file_changes_with_before_after_and_mode(node: Path):
    system = RealSystem(root=str(node))
    plans = plan_steps([WriteFileStep("/etc/a.conf", "new a\n", id="a"),
                        WriteFileStep("/etc/b.conf", "b\n", id="b"),
                        WriteFileStep("/etc/a.conf", "old a\n", 0o600, id="same")], system)
    assert plans[0][1] == (Change("/etc/a.conf", "old a\n", "new a\n", 0o600),)
    assert plans[1][1] == (Change("/etc/b.conf", None, "b\n", 0o644),)
    assert plans[2][1] == ()


def test_a_mode_change_alone_is_a_change(node: Path):
    system = RealSystem(root=str(node))
    outcome = run_steps([WriteFileStep("/etc/a.conf", "old a\n", 0o644, id="mode")], system)
    assert outcome.applied == ("mode",)
    assert (node / "etc/a.conf").stat().st_mode & 0o777 == 0o644


# -- dry run ---------------------------------------------------------------------------------------

def test_dry_run_changes_nothing_and_records_everything(node: Path):
    before = tree_state(node)
    dry = DryRunSystem(RealSystem(root=str(node)))
    steps = [WriteFileStep("/etc/a.conf", "new a\n", id="a"),
             WriteFileStep("/etc/b.conf", "b\n", id="b"),
             CommandStep(("touch", str(node / "created-by-command")), id="touch"),
             CommandStep(("sh", "-c", "cat >/dev/null"), id="secret",
                         input=Secret("hunter2\n"))]
    outcome = run_steps(steps, dry)
    assert outcome.applied == ("a", "b", "touch", "secret")
    assert tree_state(node) == before
    writes = [r for r in dry.records if isinstance(r, RecordedWrite)]
    assert [(w.path, w.text) for w in writes] == [("/etc/a.conf", "new a\n"),
                                                 ("/etc/b.conf", "b\n")]
    commands = [r for r in dry.records if isinstance(r, RecordedCommand)]
    assert commands[0].argv == ("touch", str(node / "created-by-command"))
    assert commands[1].input == "<secret>"
    assert "hunter2" not in repr(dry.records)
    # later reads in the same dry run see the recorded writes
    assert dry.read_text("/etc/a.conf") == "new a\n"
    assert dry.exists("/etc/b.conf") and not (node / "etc/b.conf").exists()


def test_dry_run_runs_queries_and_reports_waits_as_met(node: Path):
    dry = DryRunSystem(RealSystem(root=str(node)))
    result = dry.run(["echo", "read-only"], mutates=False)
    assert result.stdout == "read-only\n"
    assert dry.records == []
    assert dry.wait_until(lambda: False, timeout=30, what="quorum") is True
    assert dry.records == [RecordedWait("quorum", 30)]


# -- commands and secrets --------------------------------------------------------------------------

def test_secret_reaches_stdin_but_no_record_or_error(tmp_path: Path):
    system = RealSystem(root=str(tmp_path))
    out = tmp_path / "got"
    result = system.run(["sh", "-c", f"cat > {out}"], input=Secret("s3cret pw\n"))
    assert out.read_text() == "s3cret pw\n"
    assert "s3cret" not in repr(result)
    with pytest.raises(CommandFailed) as caught:
        system.run(["sh", "-c", "read pw; echo \"bad password $pw\" >&2; exit 9", "--",
                    Secret("s3cret pw")], input=Secret("s3cret pw\n"))
    err = caught.value
    assert err.returncode == 9
    assert "s3cret" not in err.message and "s3cret" not in err.stderr
    assert "<secret>" in err.stderr and err.argv[-1] == "<secret>"


def test_recording_system_masks_secrets_but_keeps_what_was_sent():
    system = RecordingSystem()
    system.run(["pvesh", "create", "--password", Secret("pw1")], input=Secret("pw2\n"))
    assert system.commands == [("pvesh", "create", "--password", "<secret>")]
    assert system.records[0].input == "<secret>"
    assert system.secrets_seen == ["pw1", "pw2\n"]
    assert "pw1" not in str(system.records[0])


def test_timeout_kills_the_command_and_its_children(tmp_path: Path):
    system = RealSystem(root=str(tmp_path))
    pidfile = tmp_path / "child.pid"
    with pytest.raises(CommandTimeout) as caught:
        system.run(["sh", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait"],
                   timeout=1.0)
    assert caught.value.code == "command-timeout"
    assert "started" in caught.value.stdout
    child = int(pidfile.read_text())
    for _ in range(50):
        if not Path(f"/proc/{child}").exists():
            break
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


def test_missing_program_is_a_command_failure(tmp_path: Path):
    with pytest.raises(CommandFailed) as caught:
        RealSystem(root=str(tmp_path)).run(["/nonexistent/pvecm", "status"])
    assert caught.value.returncode is None


def test_paths_stay_under_the_root(tmp_path: Path):
    system = RealSystem(root=str(tmp_path))
    (tmp_path / "etc").mkdir()
    system.write_text("/etc/x", "x\n")
    assert (tmp_path / "etc/x").read_text() == "x\n"
    with pytest.raises(ValueError):
        system.read_text("etc/x")


def test_binary_content_is_restored_exactly(node: Path):
    system = RealSystem(root=str(node))
    data = bytes(range(256))
    system.write_bytes("/etc/a.conf", data, 0o600, backup=False)
    assert (node / "etc/a.conf").read_bytes() == data


# -- the apply lock --------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from pvestrap.apply.lock import apply_lock
    root, release = sys.argv[1], Path(sys.argv[2])
    with apply_lock(root):
        print("held", flush=True)
        while not release.exists():
            time.sleep(0.02)
""")


def test_a_second_apply_fails_clearly_then_gets_the_lock_when_released(tmp_path: Path):
    release = tmp_path / "release"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(release)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ApplyLocked) as caught:
            with apply_lock(str(tmp_path), timeout=0):
                pass  # pragma: no cover
        assert caught.value.code == "apply-locked"
        assert f"pid {holder.pid}" in caught.value.message
        with pytest.raises(ApplyLocked):
            with apply_lock(str(tmp_path), timeout=0.3, interval=0.05):
                pass  # pragma: no cover
        release.touch()
        with apply_lock(str(tmp_path), timeout=30, interval=0.05) as path:
            assert path == lock_file(str(tmp_path))
            assert path.read_text().strip() == str(os.getpid())
    finally:
        release.touch()
        holder.wait(timeout=30)
    assert holder.returncode == 0


def test_the_lock_dies_with_its_holder(tmp_path: Path):
    release = tmp_path / "never"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), str(release)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(timeout=30)
    with apply_lock(str(tmp_path), timeout=0):
        pass


def test_unsettled_is_none_once_the_problems_clear_else_the_last_ones_seen():
    """The one wait for a list of problems to empty (removal, QDevice and link verifies, the
    network phase's restore), on the system's clock."""
    from pvestrap.apply.engine import unsettled

    answers = iter([["pve2: not quorate", "pve3: not quorate"], ["pve3: not quorate"], []])
    system = RecordingSystem()
    assert unsettled(system, lambda: next(answers), 10.0, 1.0, "the members") is None
    assert system.clock == 2.0 and system.records == [RecordedWait("the members", 10.0)]

    asked = []

    def never() -> list[str]:
        asked.append(system.clock)
        return [f"pve2: expected votes 3, not 2 (at {system.clock:g})"]

    assert unsettled(system, never, 3.0, 1.0, "the members") == \
        ["pve2: expected votes 3, not 2 (at 5)"]
    assert len(asked) == 4
