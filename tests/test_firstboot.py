"""First boot without a lab: its state files and lock, its order of joins, how it reads this
node's corosync.conf, its retries, and `main`'s answers to bad input (exit 2, nothing written,
no traceback). The flow itself, with real nodes, is in tests/lab/test_firstboot_cluster.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest

from pvestrap.answers import dumps
from pvestrap.apply.engine import StepFailed
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import Member, QuorumStatus
from pvestrap.errors import OperationFailed, UserError
from pvestrap.firstboot import applying, entry, membership
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.firstboot.flow import Options
from pvestrap.firstboot.state import FirstbootRunning, StateDir
from pvestrap.firstboot.tokens import derive_tokens
from pvestrap.plan import ClusterPlan, Link, Node

FORBIDDEN = ("typer", "rich", "questionary", "click", "pydantic", "scapy")


def plan(nodes=(("a", 1), ("b", 2), ("c", 3)), create_node=None) -> ClusterPlan:
    return ClusterPlan("fb", tuple(Node(n, i, {0: f"10.254.0.{i}"}) for n, i in nodes),
                       (Link(0, "10.254.0.0/24"),), create_node=create_node).check()


# -- state -----------------------------------------------------------------------------------------

def test_phase_counts_only_for_the_same_answer_file_and_node(tmp_path):
    state = StateDir(str(tmp_path / "s"))
    assert state.phase("sha1", "a") is None and state.done() is None
    state.record("sha1", "a", "preflight-passed")
    assert state.phase("sha1", "a") == "preflight-passed"
    assert state.phase("sha2", "a") is None  # a changed answer file starts over
    assert state.phase("sha1", "b") is None
    with pytest.raises(ValueError):
        state.record("sha1", "a", "halfway")
    state.mark_done("sha1", "a", "fb")
    done = state.done()
    assert (done["node"], done["cluster"], done["answers_sha256"]) == ("a", "fb", "sha1")


def test_unreadable_files_read_as_nothing_recorded(tmp_path):
    state = StateDir(str(tmp_path))
    state.progress_file.write_text("{not json")
    assert state.phase("x", "a") is None
    state.done_file.write_text("garbage")
    assert state.done() == {}  # present, so done: a marker is a marker


def test_lock_refuses_a_second_run_and_names_the_holder(tmp_path):
    state = StateDir(str(tmp_path))
    with state.lock():
        with pytest.raises(FirstbootRunning) as caught:
            with StateDir(str(tmp_path)).lock():
                pass
        assert caught.value.code == "firstboot-running"
        assert f"pid {os.getpid()}" in caught.value.message
    with state.lock():  # released at the end of the block
        pass


def test_lock_of_a_killed_holder_does_not_go_stale(tmp_path):
    code = ("import sys, time; from pvestrap.firstboot.state import StateDir\n"
            "with StateDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FirstbootRunning):
            with StateDir(str(tmp_path)).lock():
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with StateDir(str(tmp_path)).lock():
        pass


# -- tokens ----------------------------------------------------------------------------------------

def test_tokens_differ_by_purpose_and_by_secret_and_hide_the_secret():
    key, other_key = bytes(range(32)), bytes(range(1, 33))
    one, same, other = derive_tokens(key), derive_tokens(key), derive_tokens(other_key)
    assert one == same
    secrets = {one.probe.secret, one.ready.secret, one.member.secret}
    assert len(secrets) == 3
    assert one.probe.secret != other.probe.secret
    assert all(key not in s and key.hex().encode() not in s for s in secrets)
    assert key.hex() not in repr(one) and one.stage("member") == one.member


# -- order of joins, membership --------------------------------------------------------------------

def test_creator_first_then_joiners_in_nodeid_order():
    p = plan(nodes=(("a", 7), ("b", 2), ("c", 5), ("d", 1)), create_node="c")
    order = {n.name: (membership.predecessor(p, n).name if membership.predecessor(p, n) else None)
             for n in p.nodes}
    assert order == {"c": None, "d": "c", "b": "d", "a": "b"}
    # Joins in batches (plain corosync): every joiner goes right after the creator.
    assert {n.name: getattr(membership.predecessor(p, n, batched=True), "name", None)
            for n in p.nodes} == {"c": None, "d": "c", "b": "c", "a": "c"}


def _conf(root, text: str) -> None:
    folder = root / "etc/corosync"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corosync.conf").write_text(text)


def test_configured_member_reads_this_nodes_corosync_conf(tmp_path):
    p = plan()
    assert membership.configured_member(p, p.node("b"), str(tmp_path)) is False
    two = replace(p, nodes=p.nodes[:2])
    _conf(tmp_path, CorosyncConf.create(two).text())
    assert membership.configured_member(p, p.node("b"), str(tmp_path)) is True
    assert membership.configured_member(p, p.node("c"), str(tmp_path)) is False


def test_debians_example_conf_is_not_a_cluster_but_another_cluster_is_refused(tmp_path):
    p = plan()
    _conf(tmp_path, textwrap.dedent("""\
        totem {
          version: 2
          cluster_name: debian
        }
        nodelist {
          node {
            name: node1
            nodeid: 1
            ring0_addr: 127.0.0.1
          }
        }
        """))
    assert membership.configured_member(p, p.node("a"), str(tmp_path)) is False
    _conf(tmp_path, CorosyncConf.create(replace(p, cluster_name="other")).text())
    with pytest.raises(OperationFailed) as caught:
        membership.configured_member(p, p.node("a"), str(tmp_path))
    assert caught.value.code == "already-clustered"


def _status(quorate: bool, ids) -> QuorumStatus:
    return QuorumStatus(quorate, tuple(Member(i, 1, f"n{i}", i == 1) for i in ids))


def test_waiting_for_all_members_counts_quorate_planned_nodeids():
    p = plan()
    seen = iter([None, _status(False, (1, 2, 3)), _status(True, (1, 2)), _status(True, (1, 2, 3))])
    lines: list[str] = []
    assert membership.wait_for_all_members(p, 30, lines.append, lambda: next(seen), poll_s=0)
    assert membership.member_nodeids(_status(False, (1, 2))) == set()
    stuck = membership.wait_for_all_members(p, 0.05, lines.append, lambda: _status(True, (1,)),
                                         poll_s=0.01)
    assert stuck is False


# -- retries ---------------------------------------------------------------------------------------

class FakeTime:
    def __init__(self):
        self.now, self.slept = 0.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _request() -> applying.ApplyRequest:
    return applying.ApplyRequest(plan(), "b", "answers.toml")


def _apply(*failures):
    queue = list(failures)

    def apply(request):
        if queue:
            raise queue.pop(0)

    return apply


def test_busy_cluster_is_retried_with_growing_pauses():
    t = FakeTime()
    locked = OperationFailed("locked", code="join-locked")
    busy = StepFailed("update-members", OperationFailed("no ssh", code="member-unreachable"),
                      [], [])
    attempts = applying.apply_with_retries(_apply(locked, busy, locked), _request(), 600,
                                          lambda _m: None, t.sleep, t.clock)
    assert attempts == 4
    assert len(t.slept) == 3 and t.slept[0] < t.slept[1] < t.slept[2] <= 45


def test_a_refusal_that_is_not_about_timing_is_not_retried():
    t = FakeTime()
    with pytest.raises(OperationFailed) as caught:
        applying.apply_with_retries(_apply(OperationFailed("no", code="join-refused")),
                                   _request(), 600, lambda _m: None, t.sleep, t.clock)
    assert caught.value.code == "join-refused" and t.slept == []


def test_a_refused_join_is_retried_only_when_every_reason_is_about_timing():
    from pvestrap.apply.corosync import JoinRefused
    from pvestrap.findings import fail

    not_ready = JoinRefused("refused", [fail("join-cluster-not-quorate", "not quorate")])
    exists = JoinRefused("refused", [fail("join-cluster-not-quorate", "not quorate"),
                                     fail("join-node-exists", "listed already")])
    assert applying.reasons(exists) == ("join-cluster-not-quorate", "join-node-exists")
    assert applying.retryable(not_ready) and not applying.retryable(exists)


def test_retries_stop_at_the_deadline_with_the_last_error():
    t = FakeTime()
    always = [OperationFailed("locked", code="join-locked") for _ in range(50)]
    with pytest.raises(OperationFailed) as caught:
        applying.apply_with_retries(_apply(*always), _request(), 100, lambda _m: None,
                                   t.sleep, t.clock)
    assert caught.value.code == "join-locked"
    assert 100 <= t.now <= 100 + 1e-6


# -- main: bad input and finished nodes ------------------------------------------------------------

def _main(capsys, *argv):
    code = entry.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_missing_answer_file_is_exit_2_naming_it(capsys, tmp_path):
    code, _out, err = _main(capsys, "--answers", str(tmp_path / "nope.toml"),
                            "--state-dir", str(tmp_path / "state"))
    assert code == 2 and "nope.toml" in err and "Traceback" not in err
    assert not (tmp_path / "state").exists()


def test_invalid_answer_file_is_exit_2_naming_the_line(capsys, tmp_path):
    answers = tmp_path / "a.toml"
    answers.write_text("[cluster]\nname = \"fb\"\n[[links]]\nnumber = 0\n[[nodes]]\nname = 3\n")
    code, _out, err = _main(capsys, "--answers", str(answers), "--state-dir", str(tmp_path / "s"))
    assert code == 2 and f"{answers}:6:" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_node_not_in_the_answer_file_is_exit_2(capsys, tmp_path):
    answers = tmp_path / "a.toml"
    answers.write_text(dumps(plan()))
    code, _out, err = _main(capsys, "--answers", str(answers), "--node", "zz",
                            "--state-dir", str(tmp_path / "s"))
    assert code == 2 and "'zz'" in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf"])
def test_bad_wait_is_a_usage_error(capsys, tmp_path, value):
    code, _out, err = _main(capsys, "--answers", "x.toml", "--peer-wait", value)
    assert code == 2 and "--peer-wait" in err


def test_a_finished_node_does_nothing_not_even_read_its_answer_file(capsys, tmp_path):
    StateDir(str(tmp_path)).mark_done("sha", "b", "fb")
    code, out, _err = _main(capsys, "--answers", str(tmp_path / "gone.toml"),
                            "--state-dir", str(tmp_path))
    assert code == 0 and "nothing to do" in out


def test_without_the_clusters_secret_first_boot_refuses_exit_2_naming_the_file(capsys, tmp_path):
    """No fallback to the answer file, which anyone can read: exit 2, the file and the fix,
    nothing written under the state folder."""
    answers = tmp_path / "a.toml"
    answers.write_text(dumps(plan()))
    state = tmp_path / "s"
    code, out, err = _main(capsys, "--answers", str(answers), "--node", "a",
                           "--state-dir", str(state))
    assert code == 2 and "Traceback" not in err
    assert f"the first-boot secret {tmp_path / 'a.firstboot-secret'} does not exist" in err
    assert "fix: copy the cluster's secret file" in err and "install -m 600" in err
    assert not state.exists()


@pytest.mark.parametrize("case", ["readable", "short", "not-hex", "folder"])
def test_a_secret_file_that_cannot_be_the_clusters_is_refused(capsys, tmp_path, case):
    answers = tmp_path / "a.toml"
    answers.write_text(dumps(plan()))
    secret = tmp_path / "a.firstboot-secret"
    if case == "folder":
        secret.mkdir(mode=0o700)
    else:
        secret.write_text({"readable": "ab" * 32, "short": "ab" * 31,
                           "not-hex": "zz" * 32}[case] + "\n")
        secret.chmod(0o644 if case == "readable" else 0o600)
    code, _out, err = _main(capsys, "--answers", str(answers), "--node", "a",
                            "--state-dir", str(tmp_path / "s"))
    assert code == 2 and str(secret) in err and "Traceback" not in err
    assert {"readable": "fix: chmod 600", "short": "64 hex digits", "not-hex": "64 hex digits",
            "folder": "not a regular file"}[case] in err
    assert not (tmp_path / "s").exists()


def test_same_answer_file_and_another_secret_give_other_tokens(tmp_path):
    """The tokens come from the secret alone: one answer file, two clusters' secrets, two sets
    of tokens; and none of them is what the answer file's bytes would give."""
    answers = tmp_path / "a.toml"
    answers.write_text(dumps(plan()))
    made = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        found = firstboot_secret.load_or_new(tmp_path / folder / "a.firstboot-secret")
        firstboot_secret.keep(found)
        assert found.created and len(found.value) == firstboot_secret.SECRET_BYTES
        made.append(derive_tokens(firstboot_secret.read(found.path)))
    from_file = derive_tokens(answers.read_bytes())
    probes = {t.probe.secret for t in (*made, from_file)}
    readies = {t.ready.secret for t in (*made, from_file)}
    members = {t.member.secret for t in (*made, from_file)}
    assert len(probes) == len(readies) == len(members) == 3


def test_a_secret_is_made_once_0600_and_then_reused(tmp_path):
    path = tmp_path / "c.firstboot-secret"
    first = firstboot_secret.load_or_new(path)
    assert first.created and not path.exists()  # nothing written before keep
    firstboot_secret.keep(first)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_text() == first.value.hex() + "\n"
    again = firstboot_secret.load_or_new(path)
    assert not again.created and again.value == first.value
    assert first.value.hex() not in repr(first)
    firstboot_secret.keep(again)  # reused: not written again
    raced = firstboot_secret.load_or_new(tmp_path / "r.firstboot-secret")
    (tmp_path / "r.firstboot-secret").write_text("ab" * 32 + "\n")
    with pytest.raises(UserError) as caught:
        firstboot_secret.keep(raced)
    assert caught.value.code == "firstboot-secret-raced"


def test_a_second_first_boot_on_the_node_is_refused(capsys, tmp_path):
    answers = tmp_path / "a.toml"
    answers.write_text(dumps(plan()))
    firstboot_secret.ensure(firstboot_secret.path_for(answers))
    with StateDir(str(tmp_path / "s")).lock():
        code, _out, err = _main(capsys, "--answers", str(answers), "--node", "a",
                                "--state-dir", str(tmp_path / "s"))
    assert code == 1 and "another first boot is running" in err


# -- the hook carries only the core ----------------------------------------------------------------

def test_the_unattended_path_imports_no_front_end_library():
    """Everything the flow imports, eagerly or lazily, without typer, rich, questionary, click,
    pydantic or scapy (the lab test proves the same for a whole real run)."""
    code = textwrap.dedent("""\
        import json, sys
        from pvestrap.firstboot import (applying, entry, flow, membership, presence, state,
                                        tokens, waiting)
        from pvestrap import answers, mesh, preflight
        from pvestrap.apply import corosync, flow, pve, remote
        from pvestrap.checks import prober, responder
        from pvestrap.report import jsonout, text
        preflight.all_checks()
        entry.parser().parse_args(["--answers", "x"])
        print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "pvestrap" in loaded
    assert loaded.isdisjoint(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_the_cli_command_offers_the_same_options_as_the_entry_point():
    import typer.main

    from pvestrap.commands.firstboot import command

    app = typer.Typer(add_completion=False)
    app.command()(command)
    typer_flags = {opt for p in typer.main.get_command(app).params
                   if p.param_type_name == "option" for opt in p.opts}
    argparse_flags = {opt for action in entry.parser()._actions for opt in action.option_strings
                      if opt not in ("-h", "--help")}
    assert typer_flags == argparse_flags


def test_the_cli_command_passes_every_option_through(monkeypatch):
    from pvestrap.cli import main

    seen = {}

    def fake_main(argv):
        seen["args"] = entry.parser().parse_args(argv)
        return 7

    monkeypatch.setattr(entry, "main", fake_main)
    code = main(["firstboot", "--answers", "f.toml", "--node", "n2", "--peer-wait", "5",
                 "--turn-wait", "6", "--apply-timeout", "7", "--quorum-timeout", "8",
                 "--linger", "9", "--state-dir", "/s", "--secret-file", "/t", "--duration",
                 "1.5", "--ignore", "time-sync", "--ignore", "mtu", "--corosync-start",
                 "corosync -f", "--quiet"])
    assert code == 7
    opts = entry.options(seen["args"])
    assert opts == Options(
        answers="f.toml", node="n2", state_dir="/s", peer_wait_s=5, turn_wait_s=6,
        apply_timeout_s=7, quorum_timeout_s=8, linger_s=9, secret_file="/t", duration_s=1.5,
        ignore=("time-sync", "mtu"), corosync_start=("corosync", "-f"), quiet=True)
