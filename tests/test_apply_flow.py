"""The apply flow and the corosync backend without a lab: the node is a RecordingSystem (files
in memory, a fake clock, scripted answers of corosync-quorumtool and ssh), and the remote shell
snippets run for real under sh and bash on a temporary folder. The lab tests
(tests/lab/test_apply_corosync.py) run the same code against real corosync and sshd."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pvestrap.apply import corosync as cs
from pvestrap.apply import corosync_service as svc
from pvestrap.apply.engine import StepFailed
from pvestrap.apply.flow import (ApplyContext, ApplyDeclined, PreflightFailed, apply_node,
                                 choose_backend, plan_only_preflight)
from pvestrap.apply.remote import (STARTED, MemberAddress, MemberUnreachable, Remote,
                                   RemoteCommandFailed, RemoteFile, parse_show, put_script,
                                   replace_script, show_script)
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.errors import OperationFailed
from pvestrap.findings import Finding, Severity
from pvestrap.paths import COROSYNC_CONF
from pvestrap.plan import ClusterPlan, JoinTarget, Link, Node
from pvestrap.recorded import RecordedCommand, RecordedRemove, RecordedWrite, RecordingSystem
from pvestrap.render import fresh_node, node_changes, render_corosync_conf
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import Secret

DATA = Path(__file__).parent / "data" / "status"
QUORATE = (DATA / "quorumtool-s-2node-quorate.txt").read_text()
NOT_QUORATE = (DATA / "quorumtool-s-not-quorate.txt").read_text()
FAST = cs.CorosyncTimeouts(quorum=5, poll=0.5, service=5)


def make_plan(**kw) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"})
                  for i in (1, 2, 3))
    base = dict(cluster_name="lab", nodes=nodes,
                links=(Link(0, "10.254.0.0/24"), Link(1, "10.254.1.0/24")), backend="corosync")
    base.update(kw)
    return ClusterPlan(**base)


def corosync_node(files=None, running: bool = False, quorate: bool = True) -> RecordingSystem:
    """A node whose corosync starts with `systemctl start corosync` and stops with `stop`."""
    system = RecordingSystem({"/run/systemd/system/.keep": "", **(files or {})})
    state = {"running": running}

    def start(sys_, argv, stdin):
        state["running"] = True
        return 0, "", ""

    def stop(sys_, argv, stdin):
        state["running"] = False
        return 0, "", ""

    def quorumtool(sys_, argv, stdin):
        if not state["running"]:
            return 1, "", "Cannot initialize QUORUM service"
        return (0, QUORATE, "") if quorate else (2, NOT_QUORATE, "")

    system.on(("systemctl", "start", "corosync"), start)
    system.on(("systemctl", "stop", "corosync"), stop)
    system.on(("corosync-quorumtool", "-s"), quorumtool)
    return system


def context(system, lines=None, **kw) -> ApplyContext:
    out = lines.append if lines is not None else (lambda line: None)
    kw.setdefault("preflight", plan_only_preflight)
    return ApplyContext(system, root=kw.pop("root", "/"), out=out, timeouts=FAST, **kw)


def lock_root(tmp_path: Path) -> str:
    return str(tmp_path)


def mutations(system: RecordingSystem) -> list:
    return [r for r in system.records if isinstance(r, (RecordedWrite, RecordedRemove)) or
            (isinstance(r, RecordedCommand) and r.mutates)]


def report_with(*findings: Finding) -> Report:
    return Report("test", (ReportSection("local", "LOCAL", findings),))


# -- the remote shell snippets, for real ---------------------------------------------------------

SHELLS = [s for s in ("sh", "bash") if shutil.which(s)]


def run_shell(shell: str, script: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", script], input=stdin, capture_output=True, text=True,
                          timeout=30)


def tree(folder: Path) -> dict[str, tuple[int, str]]:
    return {p.name: (stat.S_IMODE(p.stat().st_mode), hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("shell", SHELLS)
def test_replace_then_put_back_is_byte_identical(shell, tmp_path):
    conf = tmp_path / "corosync.conf"
    conf.write_text("old\n")
    conf.chmod(0o640)
    before = tree(tmp_path)
    new = "totem {\n  config_version: 2\n}\n"
    result = run_shell(shell, replace_script(str(conf)),
                       base64.b64encode(new.encode()).decode() + "\n")
    assert result.returncode == 0, result.stderr
    states = parse_show(result.stdout)
    assert states[str(conf)] == RemoteFile(str(conf), b"old\n", 0o640)
    assert states[str(conf) + ".bak"] == RemoteFile(str(conf) + ".bak", None, None)
    assert conf.read_text() == new and stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert (tmp_path / "corosync.conf.bak").read_text() == "old\n"
    assert not (tmp_path / "corosync.conf.new").exists()

    script, stdin = put_script([states[str(conf)], states[str(conf) + ".bak"]])
    result = run_shell(shell, script, stdin)
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == before


@pytest.mark.parametrize("shell", SHELLS)
def test_binary_files_travel_intact(shell, tmp_path):
    key = tmp_path / "authkey"
    data = bytes(range(256)) + b"\n\0\n" + os.urandom(64)
    script, stdin = put_script([RemoteFile(str(key), data, 0o400)])
    assert run_shell(shell, script, stdin).returncode == 0
    assert key.read_bytes() == data and stat.S_IMODE(key.stat().st_mode) == 0o400
    shown = parse_show(run_shell(shell, show_script([str(key), str(tmp_path / "gone")])).stdout)
    assert shown[str(key)].data == data and shown[str(key)].mode == 0o400
    assert shown[str(tmp_path / "gone")].data is None
    script, stdin = put_script([RemoteFile(str(key), None, None)])
    assert run_shell(shell, script, stdin).returncode == 0
    assert not key.exists()


def test_ssh_failures_are_told_apart():
    system = RecordingSystem()
    remote = Remote(system, "member.invalid")
    system.on(("ssh",), (255, "", "ssh: Could not resolve hostname member.invalid"))
    with pytest.raises(MemberUnreachable) as caught:
        remote.read_files(["/etc/corosync/corosync.conf"])
    assert caught.value.code == "member-unreachable"
    system.on(("ssh",), (1, "file /x 644 \n", "base64: error"))
    with pytest.raises(RemoteCommandFailed) as failed:
        remote.run("false", "a command")
    assert failed.value.stdout == "file /x 644 \n"
    system.on(("ssh",), (255, "", STARTED + "cluster not ready - no quorum?\n"))  # pvecm died
    with pytest.raises(RemoteCommandFailed) as died:
        remote.run("pvecm delnode pve3", "remove pve3")
    assert died.value.message == ("'remove pve3' failed on member.invalid (exit 255): cluster "
                                  "not ready - no quorum?")
    system.on(("ssh",), (-1, "", ""))  # the RecordingSystem's timeout
    with pytest.raises(MemberUnreachable):
        remote.run("sleep 99", "a slow command")
    argv = system.commands[0]
    assert argv[:1] == ("ssh",) and "BatchMode=yes" in argv and "root@member.invalid" in argv


def test_ssh_never_writes_known_hosts():
    """OpenSSH's UpdateHostKeys (default yes) would append a member's other host keys to root's
    known_hosts: a change no plan shows and no undo restores (seen on the real stack:
    tests/lab/test_separate_undo_pve_lab.py). Every connection turns it off, the join lock's
    control-master session too."""
    system = RecordingSystem()
    Remote(system, "10.254.0.2", control_path="/run/x").run("true", "a command")
    argv = system.commands[0]
    assert argv[argv.index("UpdateHostKeys=no") - 1] == "-o"
    assert argv.index("UpdateHostKeys=no") < argv.index("root@10.254.0.2")


# -- backend choice and the preflight gate -------------------------------------------------------

def test_backend_choice():
    assert choose_backend(make_plan(), RecordingSystem({"/usr/bin/pvecm": ""})) == "corosync"
    auto = make_plan(backend="auto")
    assert choose_backend(auto, RecordingSystem({"/usr/bin/pvecm": ""})) == "pve"
    assert choose_backend(auto, RecordingSystem({"/etc/pve/.members": ""})) == "pve"
    assert choose_backend(auto, RecordingSystem()) == "corosync"
    assert choose_backend(make_plan(backend="pve"), RecordingSystem()) == "pve"


def test_a_preflight_fail_stops_before_any_change(tmp_path):
    system = corosync_node()
    bad = Finding("time-no-daemon", Severity.FAIL, "no time daemon", check="time-sync")
    with pytest.raises(PreflightFailed) as caught:
        apply_node(make_plan(), "pve1", context(system, root=lock_root(tmp_path),
                                                preflight=lambda p, n: report_with(bad)))
    assert [f.code for f in caught.value.findings] == ["time-no-daemon"]
    assert mutations(system) == []

    lines: list[str] = []
    result = apply_node(make_plan(), "pve1", context(
        system, lines, root=lock_root(tmp_path), ignore=("time-sync",),
        preflight=lambda p, n: report_with(bad)))
    assert result.changed
    assert any(line.startswith("WARN: [time-sync]") for line in lines)


# -- create ----------------------------------------------------------------------------------------

def test_create_writes_key_and_conf_starts_and_waits(tmp_path):
    system = corosync_node()
    lines: list[str] = []
    result = apply_node(make_plan(), "pve1", context(system, lines, root=lock_root(tmp_path)))
    assert result.role == "create" and result.backend == "corosync"
    assert result.outcome.applied == ("authkey", "conf", "start", "wait-quorum")
    key, mode = system.files[cs.AUTHKEY]
    assert len(key) == cs.AUTHKEY_BYTES and mode == 0o400
    written = system.files[COROSYNC_CONF][0].decode()
    (change,) = node_changes(make_plan(), "pve1", fresh_node, "corosync")  # render's, before
    assert written == change.after == first_node(make_plan())
    assert CorosyncConf.parse(written).config_version == 1
    assert ("systemctl", "start", "corosync") in system.commands
    text = "\n".join(lines)
    assert "+<secret>" in text
    assert base64.b64encode(key).decode() not in text and key.hex() not in text


def test_dry_run_plans_and_changes_nothing(tmp_path):
    system = corosync_node()
    lines: list[str] = []
    result = apply_node(make_plan(), "pve1", context(system, lines, root=lock_root(tmp_path),
                                                     dry_run=True))
    assert result.planned and result.outcome is None
    assert [sid for sid, actions in result.plans if actions] == \
        ["authkey", "conf", "start", "wait-quorum"]
    assert mutations(system) == [] and system.files.keys() == {"/run/systemd/system/.keep"}
    assert not (tmp_path / "run").exists()  # not even the apply lock file
    assert "+++ b/etc/corosync/corosync.conf" in "\n".join(lines)


def test_confirmation(tmp_path):
    system = corosync_node()
    asked: list[str] = []
    with pytest.raises(ApplyDeclined):
        apply_node(make_plan(), "pve1", context(
            system, root=lock_root(tmp_path), confirm=lambda q: asked.append(q) or False))
    assert asked == ["Apply these changes on pve1?"] and mutations(system) == []
    result = apply_node(make_plan(), "pve1", context(system, root=lock_root(tmp_path),
                                                     confirm=lambda q: True))
    assert result.changed


def test_create_that_never_gets_quorate_is_undone(tmp_path):
    system = corosync_node(quorate=False)
    with pytest.raises(StepFailed) as caught:
        apply_node(make_plan(), "pve1", context(system, root=lock_root(tmp_path)))
    failure = caught.value.as_dict()
    assert failure["step"] == "wait-quorum" and failure["cause"] == "quorum-timeout"
    assert failure["undone"] == ["start", "conf", "authkey"]
    assert system.files.keys() == {"/run/systemd/system/.keep"}
    assert system.commands[-2:] == [("systemctl", "stop", "corosync"),
                                    ("corosync-quorumtool", "-s")]


def test_create_over_a_running_stock_corosync_restarts_it(tmp_path):
    stock = ("totem {\n  cluster_name: debian\n}\n"
             "nodelist {\n  node {\n    ring0_addr: 127.0.0.1\n  }\n}\n")
    system = corosync_node({COROSYNC_CONF: stock}, running=True)
    result = apply_node(make_plan(), "pve1", context(system, root=lock_root(tmp_path)))
    assert result.changed
    assert system.files[COROSYNC_CONF + ".bak"][0].decode() == stock
    starts = [c for c in system.commands if c[0] == "systemctl"]
    assert starts == [("systemctl", "stop", "corosync"), ("systemctl", "start", "corosync")]
    # the example corosync was quorate while planning: the wait is for the one started anew
    assert result.outcome is not None and "wait-quorum" in result.outcome.applied


@pytest.mark.parametrize("files, stopped", [
    ({}, True),
    ({"/run/corosync.pid": "42\n", "/proc/42/stat": "42 (corosync) S 1 42 42 0"}, False),
    ({"/run/corosync.pid": "42\n", "/proc/42/stat": "42 (corosync) Z 1 42 42 0"}, True),
    ({"/run/corosync.pid": "42\n"}, True),  # left by a killed corosync
    ({"/run/corosync.pid": "42\n", "/proc/42/stat": "42 (bash) S 1 42 42 0"}, True),
])
def test_corosync_is_stopped_once_it_no_longer_answers_and_has_exited(files, stopped):
    """It stops answering a moment before it exits and lets go of its pid lock."""
    assert svc.stopped(corosync_node(files)) is stopped
    assert not svc.stopped(corosync_node(files, running=True))


# -- an existing member ----------------------------------------------------------------------------

def member_files(plan: ClusterPlan, version: int = 3) -> dict:
    return {cs.AUTHKEY: os.urandom(256), COROSYNC_CONF: render_corosync_conf(plan, version)}


def test_a_member_as_planned_plans_nothing_and_skips_preflight(tmp_path):
    plan = make_plan()
    system = corosync_node(member_files(plan), running=True)

    def no_preflight(p, n):
        raise AssertionError("a member is not preflighted")

    for name in ("pve1", "pve2"):
        result = apply_node(plan, name, context(system, root=lock_root(tmp_path),
                                                preflight=no_preflight))
        assert result.role == "member" and not result.planned and result.outcome is None
    assert mutations(system) == []


def test_a_stopped_member_is_started_again(tmp_path):
    plan = make_plan()
    system = corosync_node(member_files(plan), running=False)
    result = apply_node(plan, "pve2", context(system, root=lock_root(tmp_path)))
    assert result.role == "member" and result.outcome.applied == ("start", "wait-quorum")


@pytest.mark.parametrize("node,code", [("pve1", "create-refused"), ("pve2", "join-refused")])
def test_clustered_elsewhere_is_refused_before_any_change(node, code, tmp_path):
    other = render_corosync_conf(make_plan(cluster_name="other"))
    system = corosync_node({cs.AUTHKEY: b"k" * 256, COROSYNC_CONF: other})
    with pytest.raises(cs.JoinRefused) as caught:
        apply_node(make_plan(), node, context(system, root=lock_root(tmp_path)))
    assert caught.value.code == code
    assert caught.value.reasons == ("authkey-exists", "already-clustered")
    assert mutations(system) == [] and not any(c[0] == "ssh" for c in system.commands)


def test_a_differing_entry_is_not_taken_for_membership():
    plan = make_plan()
    moved = replace(plan, nodes=(replace(plan.nodes[0], addresses={0: "10.254.0.9",
                                                                   1: "10.254.1.9"}),
                                 *plan.nodes[1:]))
    system = corosync_node({cs.AUTHKEY: b"k" * 256, COROSYNC_CONF: render_corosync_conf(moved)})
    found = cs.membership(system, plan, "pve1")
    assert found.state == "other"
    assert [f.code for f in found.findings] == ["authkey-exists", "addresses-differ"]


# -- join ------------------------------------------------------------------------------------------

def test_a_joiner_running_corosync_is_refused_without_contacting_the_member(tmp_path):
    system = corosync_node(running=True)
    with pytest.raises(cs.JoinRefused) as caught:
        apply_node(make_plan(), "pve2", context(system, root=lock_root(tmp_path)))
    assert caught.value.reasons == ("corosync-running",)
    assert not any(c[0] == "ssh" for c in system.commands) and mutations(system) == []


def snapshot(text: str, quorate: bool = True) -> cs.ClusterSnapshot:
    status = parse_quorum_status(QUORATE if quorate else NOT_QUORATE)
    return cs.ClusterSnapshot("10.254.0.1", text, Secret(base64.b64encode(b"k" * 256).decode()),
                              status)


def first_node(plan: ClusterPlan, version: int = 1) -> str:
    return render_corosync_conf(replace(plan, nodes=plan.nodes[:1]), version)


def test_join_steps_add_the_planned_node_and_bump_the_version():
    plan = make_plan()
    steps = cs.join_steps(plan, "pve2", snapshot(first_node(plan)), svc.SYSTEMD,
                          lambda system, address: Remote(system, address))
    assert [s.id for s in steps] == ["update-members", "install", "start", "wait-quorum"]
    members, install, _, wait = steps
    assert members.after == render_corosync_conf(replace(plan, nodes=plan.nodes[:2]), 2)
    assert members.members == (MemberAddress("pve1", "10.254.0.1"),)
    assert install.conf_text == members.after and wait.members == 2
    assert "k" * 10 not in repr(install)


def test_members_are_reached_by_name_where_it_resolves_else_at_their_link0_address():
    """As Proxmox VE reaches its nodes (its known_hosts and /etc/hosts hold names and management
    addresses, not the link0 addresses of a new cluster network): by name when the name resolves
    here to non-loopback addresses, else at link0; the join target stays join.address."""
    plan = make_plan(nodes=tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}"}) for i in range(1, 6)),
                     links=(Link(0, "10.254.0.0/24"),), join=JoinTarget(address="192.168.7.1"))
    cluster = render_corosync_conf(replace(plan, nodes=plan.nodes[:4]))
    table = {"pve1": ("192.168.7.1",), "pve2": ("192.168.7.2", "fd12::2"),
             "pve3": ("127.0.1.1",)}
    steps = cs.join_steps(plan, "pve5", replace(snapshot(cluster), address="192.168.7.1"),
                          svc.SYSTEMD, lambda system, address: Remote(system, address),
                          resolver=lambda name: table.get(name, ()))
    assert steps[0].members == (MemberAddress("pve1", "192.168.7.1"),
                                MemberAddress("pve2", "pve2"),
                                MemberAddress("pve3", "10.254.0.3"),
                                MemberAddress("pve4", "10.254.0.4"))
    assert steps[0].description == (
        f"write the new {COROSYNC_CONF} on pve1 (ssh to 192.168.7.1), pve2 (ssh to pve2), "
        "pve3 (ssh to 10.254.0.3), pve4 (ssh to 10.254.0.4) and reload corosync there")


@pytest.mark.parametrize("change,codes", [
    (dict(cluster_name="other"), ["join-cluster-mismatch"]),
    (dict(links=(Link(0, "10.254.0.0/24"),)), ["join-links-mismatch", "join-plan-mismatch"]),
])
def test_join_refuses_a_cluster_that_differs_from_the_plan(change, codes):
    plan = make_plan()
    nodes = tuple(replace(n, addresses={0: n.addresses[0]}) for n in plan.nodes) \
        if "links" in change else plan.nodes
    cluster = replace(plan, nodes=nodes, **change)
    conf = CorosyncConf.parse(first_node(cluster))
    assert [f.code for f in cs.check_join(plan, "pve2", conf, snapshot(first_node(cluster)))] \
        == codes


def test_join_refuses_taken_names_ids_addresses_and_a_cluster_without_quorum():
    plan = make_plan()
    squatter = Node("pve9", 2, {0: "10.254.0.2", 1: "10.254.1.9"})
    cluster = render_corosync_conf(replace(plan, nodes=(plan.nodes[0], squatter)), 2)
    found = cs.check_join(plan, "pve2", CorosyncConf.parse(cluster), snapshot(cluster, False))
    assert [f.code for f in found] == ["join-cluster-not-quorate", "join-nodeid-taken",
                                       "join-address-in-use"]
    both = render_corosync_conf(replace(plan, nodes=plan.nodes[:2]), 2)
    again = cs.check_join(plan, "pve2", CorosyncConf.parse(both), snapshot(both))
    assert [f.code for f in again] == ["join-node-exists"]


def test_a_join_killed_after_updating_the_members_resumes_on_this_node_only():
    """The members list pve2 as planned and wait for it (inquorate): the rerun installs, starts
    and waits; it neither refuses (join-node-exists) nor touches the members again."""
    plan = make_plan()
    both = render_corosync_conf(replace(plan, nodes=plan.nodes[:2]), 2)
    steps = cs.join_steps(plan, "pve2", snapshot(both, quorate=False), svc.SYSTEMD,
                          lambda system, address: Remote(system, address))
    assert [s.id for s in steps] == ["install", "start", "wait-quorum"]
    assert steps[0].conf_text == both and steps[2].members == 2


def test_a_listed_node_that_differs_from_the_plan_is_still_refused():
    plan = make_plan()
    other = replace(plan.nodes[1], addresses={0: "10.254.0.2", 1: "10.254.1.77"})
    cluster = render_corosync_conf(replace(plan, nodes=(plan.nodes[0], other)), 2)
    with pytest.raises(cs.JoinRefused) as caught:
        cs.join_steps(plan, "pve2", snapshot(cluster, quorate=False), svc.SYSTEMD,
                      lambda system, address: Remote(system, address))
    assert "join-node-exists" in caught.value.reasons


@pytest.mark.parametrize("failing,written,put_back", [
    # another member fails: the reloading member is never touched
    ("root@10.254.0.2", ["root@10.254.0.2"], ["root@10.254.0.2"]),
    # the reloading member's write or reload fails last: every member is put back
    ("root@10.254.0.1", ["root@10.254.0.1", "root@10.254.0.2"],
     ["root@10.254.0.1", "root@10.254.0.2"]),
])
def test_a_failed_member_update_puts_back_what_was_written(failing, written, put_back):
    plan = make_plan()
    cluster = render_corosync_conf(replace(plan, nodes=plan.nodes[:2]), 2)
    old = base64.b64encode(cluster.encode()).decode()
    system = RecordingSystem()
    shown = (f"file {COROSYNC_CONF} 644 {old}\nnone {COROSYNC_CONF}.bak\n")

    def ssh(sys_, argv, stdin):
        host, script = argv[argv.index("--") - 1], argv[-1]
        if "show" not in script:  # a put back, or a reload alone
            return 0, "", ""
        return (1, shown, "No space left on device") if host == failing else (0, shown, "")

    system.on(("ssh",), ssh)
    steps = cs.join_steps(plan, "pve3", snapshot(cluster), svc.SYSTEMD,
                          lambda s, address: Remote(s, address))
    with pytest.raises(OperationFailed) as caught:
        steps[0].apply(system)
    assert caught.value.code == "members-update-failed"
    scripts = [(c[c.index("--") - 1], c[-1]) for c in system.commands]
    assert sorted(host for host, script in scripts if "show" in script) == written
    assert sorted(host for host, script in scripts if "put " in script and "show" not in script) \
        == put_back
    assert scripts[-1] == ("root@10.254.0.1", "corosync-cfgtool -R")


# -- the command -----------------------------------------------------------------------------------

def test_apply_without_a_terminal_and_without_yes_exits_2(tmp_path):
    answers = tmp_path / "answers.toml"
    answers.write_text("[cluster]\nname = \"lab\"\n")
    result = subprocess.run([sys.executable, "-m", "pvestrap", "apply", "--answers",
                             str(answers)], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert "--yes" in result.stderr and "Traceback" not in result.stderr


def test_apply_with_a_bad_answer_file_exits_2(tmp_path):
    answers = tmp_path / "answers.toml"
    answers.write_text("[cluster]\nname = \"bad name\"\n")
    result = subprocess.run([sys.executable, "-m", "pvestrap", "apply", "--answers",
                             str(answers), "--dry-run", "--root", str(tmp_path)],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_the_member_lock_never_starts_a_real_ssh_for_a_fake_system():
    from pvestrap.apply.remote import member_lock

    system = RecordingSystem()
    with pytest.raises(TypeError):
        with member_lock(system, Remote(system, "member.invalid")):
            pass


def test_the_pve_backend_is_planned_through_the_same_flow(tmp_path):
    system = RecordingSystem({"/usr/bin/pvecm": ""})
    lines: list[str] = []
    result = apply_node(make_plan(backend="auto"), "pve1", context(
        system, lines, root=lock_root(tmp_path), dry_run=True))
    assert result.backend == "pve" and result.role == "create"
    assert [sid for sid, actions in result.plans if actions] == ["pve-create", "pve-wait-quorum"]
    assert any(line.startswith("  run pvecm create lab --link0 10.254.0.1") for line in lines)
    assert mutations(system) == []
