"""The Proxmox backend, driven through real subprocesses against the pvecm/pvesh TEST STAND-INS
(tests/standin/: they enforce pvecm's documented arguments, fingerprint format and stdin
password, and simulate the cluster under a folder; Proxmox itself cannot run here)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pvestrap.apply.engine import StepFailed, run_steps
from pvestrap.apply.pve import (JoinFailed, PveCreateStep, PveTimeouts, PveWaitQuorumStep,
                                create_argv, create_steps, is_pve, join_argv, join_steps,
                                pvesh_join_argv, quorum_status, steps_for)
from pvestrap.apply.pve_join_method import JoinMethod
from pvestrap.errors import OperationFailed, UserError
from pvestrap.password import resolve_password
from pvestrap.plan import ClusterPlan, Datacenter, JoinTarget, Link, Node
from pvestrap.recorded import DryRunSystem, RecordedWait, RecordedWrite, RecordingSystem
from pvestrap.render import render_corosync_conf
from pvestrap.system import RealSystem, Secret

STANDIN = Path(__file__).resolve().parent / "standin"  # the pvecm/pvesh TEST STAND-IN, tests only
FP = ":".join(["AB", "CD", "EF", "01"] * 8)
OTHER_FP = ":".join(["12"] * 32)
PASSWORD = "correct horse"
FAST = PveTimeouts(create=60, join=60, quorum=5, poll=0.1, lock_retries=3, backoff=0.05)


def make_plan(**kw) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"})
                  for i in (1, 2, 3))
    base = dict(cluster_name="lab", nodes=nodes,
                links=(Link(0, "10.254.0.0/24"), Link(1, "10.254.1.0/24", priority=10)),
                join=JoinTarget(fingerprint=FP, password_env="PVESTRAP_TEST_PW"),
                datacenter=Datacenter(keyboard="de"), pve_version="9.2")
    base.update(kw)
    return ClusterPlan(**base)


def node_system(root: Path, name: str) -> RealSystem:
    return RealSystem(root=str(root), env={
        "PATH": f"{STANDIN}:{os.environ['PATH']}", "PVESTRAP_STANDIN_ROOT": str(root),
        "PVESTRAP_STANDIN_NODENAME": name})


def calls(root: Path) -> list[dict]:
    log = root / "standin/calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def tree_state(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "standin" not in p.parts}


@pytest.fixture
def joiner(tmp_path: Path) -> Path:
    """A fresh node whose 'remote' cluster (pve1, quorate) is simulated by the stand-in."""
    root = tmp_path / "pve2"
    (root / "standin").mkdir(parents=True)
    (root / "etc/corosync").mkdir(parents=True)
    cluster = {"cluster_name": "lab", "config_version": 1, "quorate": True, "fingerprint": FP,
               "password_sha256": hashlib.sha256(PASSWORD.encode()).hexdigest(),
               "links": {"0": 0, "1": 10}, "local": None, "token_coefficient": 125,
               "nodes": [{"name": "pve1", "nodeid": 1, "votes": 1,
                          "addresses": {"0": "10.254.0.1", "1": "10.254.1.1"}}]}
    (root / "standin/cluster.json").write_text(json.dumps(cluster))
    return root


def standin(root: Path, *argv: str, stdin: str | None = None, tty: bool = False,
            name: str = "pve2") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVESTRAP_STANDIN_ROOT": str(root), "PVESTRAP_STANDIN_NODENAME": name}
    return subprocess.run([str(STANDIN / argv[0]), *argv[1:]], input=stdin, text=True,
                          capture_output=True, env=env)


# -- command lines ---------------------------------------------------------------------------------

def test_create_command_line():
    assert create_argv(make_plan(), "pve1") == (
        "pvecm", "create", "lab", "--link0", "10.254.0.1", "--link1", "10.254.1.1,priority=10",
        "--nodeid", "1", "--token-coefficient", "125")
    older = make_plan(pve_version="8.4")
    assert "--token-coefficient" not in create_argv(older, "pve1")


def test_join_command_lines_never_carry_force_or_a_visible_password():
    plan = make_plan()
    argv = join_argv(plan, "pve3", "10.254.0.1", FP)
    assert argv == ("pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0", "10.254.0.3",
                    "--link1", "10.254.1.3", "--nodeid", "3")
    pvesh = pvesh_join_argv(plan, "pve3", "10.254.0.1", FP, Secret(PASSWORD))
    assert "--force" not in argv and "--force" not in pvesh
    assert [str(a) for a in pvesh][:9] == ["pvesh", "create", "/cluster/config/join",
                                           "--hostname", "10.254.0.1", "--fingerprint", FP,
                                           "--password", "<secret>"]


def test_a_creator_without_votes_is_refused():
    plan = make_plan(nodes=(Node("pve1", 1, {0: "10.254.0.1", 1: "10.254.1.1"}, votes=0),
                            Node("pve2", 2, {0: "10.254.0.2", 1: "10.254.1.2"})))
    with pytest.raises(UserError) as caught:
        create_argv(plan, "pve1")
    assert caught.value.code == "creator-votes"


def test_detects_pve(tmp_path: Path):
    system = RealSystem(root=str(tmp_path))
    assert not is_pve(system)
    (tmp_path / "etc/pve").mkdir(parents=True)
    assert is_pve(system)


def test_password_comes_from_env_or_file_and_nowhere_else(tmp_path: Path):
    system = RecordingSystem()
    system.write_text("/root/pw", "from file\nsecond line\n", 0o600)
    env = {"PW": "env pw"}
    assert resolve_password(JoinTarget(password_env="PW"), env, system).value == "env pw"
    assert resolve_password(JoinTarget(password_file="/root/pw"), {}, system).value == "from file"
    for target in (JoinTarget(password_env="PW"), JoinTarget(password_file="/nope")):
        with pytest.raises(UserError) as caught:
            resolve_password(target, {}, system)
        assert caught.value.code == "password-missing"
    assert resolve_password(JoinTarget(), {}, system) is None
    with pytest.raises(UserError) as caught:  # an API join without a password source
        steps_for(make_plan(join=JoinTarget()), "pve2", system, method=JoinMethod("api", "test"))
    assert caught.value.code == "password-missing"


# -- create ----------------------------------------------------------------------------------------

def test_create_then_again_plans_nothing(tmp_path: Path):
    root = tmp_path / "pve1"
    (root / "etc/pve").mkdir(parents=True)
    (root / "etc/pve/datacenter.cfg").write_text("keyboard: en-us\n")
    system = node_system(root, "pve1")
    plan = make_plan()
    outcome = run_steps(create_steps(plan, "pve1", system, FAST), system)
    assert outcome.applied == ("pve-create", "pve-wait-quorum", "pve-datacenter-cfg")
    log = calls(root)
    assert [c["argv"] for c in log if c["argv"][0] == "create"] == [
        list(create_argv(plan, "pve1"))[1:]]
    assert "keyboard: de" in (root / "etc/pve/datacenter.cfg").read_text()
    assert not (root / "etc/pve/datacenter.cfg.bak").exists()  # nothing extra in /etc/pve
    assert (root / "etc/corosync/authkey").stat().st_mode & 0o777 == 0o400
    status = quorum_status(system)
    assert status.quorate and status.cluster_name == "lab" and status.local.nodeid == 1
    before = tree_state(root)
    again = run_steps(create_steps(plan, "pve1", system, FAST), system)
    assert again.applied == ()
    assert tree_state(root) == before
    assert {c["argv"][0] for c in calls(root)[len(log):]} == {"status"}


def test_a_dry_run_create_runs_no_pvecm_create_and_changes_nothing(tmp_path: Path):
    root = tmp_path / "pve1"
    (root / "etc/pve").mkdir(parents=True)
    (root / "etc/pve/datacenter.cfg").write_text("keyboard: en-us\n")
    before = tree_state(root)
    dry = DryRunSystem(node_system(root, "pve1"))
    outcome = run_steps(create_steps(make_plan(), "pve1", dry, FAST), dry)
    assert outcome.applied == ("pve-create", "pve-wait-quorum", "pve-datacenter-cfg")
    assert tree_state(root) == before
    assert {c["argv"][0] for c in calls(root)} == {"status"}
    shown = [str(r) for r in dry.records]
    assert shown[0].startswith("pvecm create lab --link0 10.254.0.1")
    assert isinstance(dry.records[1], RecordedWait)
    assert isinstance(dry.records[2], RecordedWrite) and "keyboard: de" in dry.records[2].text
    assert dry.records[2].backup is False


def test_with_pvesh_the_options_go_through_the_api(tmp_path: Path):
    """A node with pve-manager: `pvesh set /cluster/options` (validated, under pmxcfs's lock),
    only the options that change; again: nothing; no .bak in /etc/pve."""
    root = tmp_path / "pve1"
    (root / "etc/pve").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/pvesh").symlink_to(STANDIN / "pvesh")
    (root / "etc/pve/datacenter.cfg").write_text("keyboard: en-us\nlanguage: en\n")
    system = node_system(root, "pve1")
    plan = make_plan(datacenter=Datacenter(keyboard="de", migration_type="insecure",
                                           migration_network="10.254.1.0/24"))
    outcome = run_steps(create_steps(plan, "pve1", system, FAST), system)
    assert outcome.applied[-1] == "pve-datacenter-cfg"
    sets = [c["argv"] for c in calls(root) if c["tool"] == "pvesh"]
    assert sets == [["set", "/cluster/options", "--keyboard", "de", "--migration",
                     "insecure,network=10.254.1.0/24"]]
    assert (root / "etc/pve/datacenter.cfg").read_text() == (
        "keyboard: de\nlanguage: en\nmigration: insecure,network=10.254.1.0/24\n")
    assert not (root / "etc/pve/datacenter.cfg.bak").exists()
    again = run_steps(create_steps(plan, "pve1", system, FAST), system)
    assert again.applied == ()


def test_a_node_of_another_cluster_is_refused(tmp_path: Path):
    root = tmp_path / "pve1"
    system = node_system(root, "pve1")
    run_steps(create_steps(make_plan(cluster_name="other"), "pve1", system, FAST), system)
    with pytest.raises(OperationFailed) as caught:
        run_steps(create_steps(make_plan(), "pve1", system, FAST), system)
    assert caught.value.code == "already-clustered"


NOT_QUORATE = textwrap.dedent("""\
    Cluster information
    -------------------
    Name:             lab
    Config Version:   1
    Transport:        knet
    Secure auth:      on

    Quorum information
    ------------------
    Date:             Wed Nov 25 16:28:11 2026
    Quorum provider:  corosync_votequorum
    Nodes:            1
    Node ID:          0x00000001
    Ring ID:          1.d
    Quorate:          No

    Votequorum information
    ----------------------
    Expected votes:   2
    Highest expected: 2
    Total votes:      1
    Quorum:           2 Activity blocked
    Flags:

    Membership information
    ----------------------
        Nodeid      Votes Name
    0x00000001          1 10.254.0.1 (local)
    """)


def test_no_quorum_in_time_undoes_the_create_by_the_documented_procedure():
    system = RecordingSystem()
    system.on(("pvecm", "status"), (2, NOT_QUORATE, ""))
    steps = [PveCreateStep(make_plan(), "pve1"), PveWaitQuorumStep(timeout=5, interval=1)]
    with pytest.raises(StepFailed) as caught:
        run_steps(steps, system)
    assert caught.value.step_id == "pve-wait-quorum"
    assert caught.value.cause_code == "quorum-timeout"
    assert caught.value.undone == ("pve-create",)
    assert system.clock >= 5
    after = system.commands[system.commands.index(create_argv(make_plan(), "pve1")) + 1:]
    assert [c for c in after if c[:2] != ("pvecm", "status")] == [
        ("systemctl", "stop", "pve-cluster"), ("systemctl", "stop", "corosync"),
        ("pmxcfs", "-l"), ("killall", "pmxcfs"), ("systemctl", "start", "pve-cluster")]


# -- join ------------------------------------------------------------------------------------------

def _join(root: Path, plan: ClusterPlan | None = None, **kw) -> object:
    system = node_system(root, "pve2")
    kw.setdefault("fetch", lambda host: FP)
    kw.setdefault("timeouts", FAST)
    return run_steps(join_steps(plan or make_plan(), "pve2", Secret(PASSWORD), **kw), system)


def test_join_sends_the_password_on_stdin_only_and_is_idempotent(joiner: Path):
    outcome = _join(joiner)
    assert outcome.applied == ("pve-join", "pve-wait-quorum")
    add = calls(joiner)[-2]
    assert add["argv"][:4] == ["add", "10.254.0.1", "--fingerprint", FP]
    assert add["stdin"] == "<secret>"
    assert PASSWORD not in (joiner / "standin/calls.log").read_text()
    conf = (joiner / "etc/pve/corosync.conf").read_text()
    assert "name: pve2\n    nodeid: 2\n" in conf and "config_version: 2" in conf
    before = tree_state(joiner)
    assert _join(joiner).applied == ()
    assert tree_state(joiner) == before


def test_join_with_pvesh_masks_the_password_in_every_record(joiner: Path):
    outcome = _join(joiner, use_pvesh=True)
    assert outcome.applied == ("pve-join", "pve-wait-quorum")
    entry = calls(joiner)[-2]
    assert entry["tool"] == "pvesh"
    assert entry["argv"][entry["argv"].index("--password") + 1] == "<secret>"
    assert PASSWORD not in (joiner / "standin/calls.log").read_text()


def test_join_retries_while_the_cluster_is_locked(joiner: Path):
    (joiner / "standin/cluster.lock").write_text("2\n")
    outcome = _join(joiner)
    assert outcome.applied == ("pve-join", "pve-wait-quorum")
    assert [c["argv"][0] for c in calls(joiner)].count("add") == 3


def test_join_gives_up_when_the_lock_never_clears(joiner: Path):
    (joiner / "standin/cluster.lock").write_text("")
    before = tree_state(joiner)
    with pytest.raises(StepFailed) as caught:
        _join(joiner)
    assert caught.value.step_id == "pve-join"
    assert caught.value.cause_code == "join-cluster-locked"
    assert caught.value.cause.details["attempts"] == FAST.lock_retries + 1
    assert [c["argv"][0] for c in calls(joiner)].count("add") == FAST.lock_retries + 1
    assert tree_state(joiner) == before


def test_a_joiner_with_an_authkey_is_refused_before_any_change(joiner: Path):
    (joiner / "etc/corosync/authkey").write_bytes(b"k" * 256)
    before = tree_state(joiner)
    with pytest.raises(JoinFailed) as caught:
        _join(joiner)
    assert caught.value.code == "join-refused"
    assert caught.value.details["reasons"] == ["/etc/corosync/authkey already exists"]
    assert calls(joiner) == []  # refused while planning: pvecm never ran
    assert tree_state(joiner) == before


def test_a_fingerprint_mismatch_found_while_planning_changes_nothing(joiner: Path):
    with pytest.raises(JoinFailed) as caught:
        _join(joiner, fetch=lambda host: OTHER_FP)
    assert caught.value.code == "join-fingerprint-mismatch"
    assert caught.value.details == {"expected": FP, "seen": OTHER_FP}
    assert "add" not in [c["argv"][0] for c in calls(joiner)]


def test_pvecm_refusing_the_fingerprint_is_reported_with_what_it_saw(joiner: Path):
    before = tree_state(joiner)
    with pytest.raises(StepFailed) as caught:
        _join(joiner, plan=make_plan(join=JoinTarget(fingerprint=OTHER_FP)), fetch=None)
    assert caught.value.cause_code == "join-fingerprint-mismatch"
    assert caught.value.cause.details["seen"] == FP
    assert tree_state(joiner) == before


def test_a_wrong_password_is_reported_as_such(joiner: Path):
    system = node_system(joiner, "pve2")
    with pytest.raises(StepFailed) as caught:
        run_steps(join_steps(make_plan(), "pve2", Secret("wrong"), FAST, fetch=None), system)
    assert caught.value.cause_code == "join-auth-failed"
    assert "wrong" not in caught.value.message


def _standin_processes(root: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"PVESTRAP_STANDIN_ROOT={root}".encode() in env.split(b"\0"):
            found.append(int(proc.name))
    return found


def test_an_endless_wait_for_quorum_times_out_and_is_stopped(joiner: Path):
    cluster = json.loads((joiner / "standin/cluster.json").read_text())
    cluster["hang_on_quorum"] = True
    (joiner / "standin/cluster.json").write_text(json.dumps(cluster))
    timeouts = PveTimeouts(join=3, quorum=2, poll=0.1, lock_retries=0)
    with pytest.raises(StepFailed) as caught:
        _join(joiner, timeouts=timeouts)
    assert caught.value.cause_code == "join-timeout"
    assert "waiting for quorum" in caught.value.cause.details["stdout"]
    assert _standin_processes(joiner) == []


# -- the stand-ins' own contract -------------------------------------------------------------------

def test_standins_say_loudly_what_they_are(tmp_path: Path):
    for tool in ("pvecm", "pvesh"):
        out = standin(tmp_path, tool, "--help")
        assert out.returncode == 0 and "TEST STAND-IN" in out.stdout and "NOT" in out.stdout
        assert "TEST STAND-IN" in (STANDIN / tool).read_text().splitlines()[2]
    env = {k: v for k, v in os.environ.items() if k != "PVESTRAP_STANDIN_ROOT"}
    out = subprocess.run([str(STANDIN / "pvecm"), "status"], capture_output=True, text=True,
                         env=env)
    assert out.returncode == 255 and "PVESTRAP_STANDIN_ROOT" in out.stderr


@pytest.mark.parametrize("args,complaint", [
    (["create", "lab_1", "--link0", "10.0.0.1"], "clustername"),
    (["create", "a-very-long-name-x", "--link0", "10.0.0.1"], "15 characters"),
    (["create", "lab", "--link8", "10.0.0.1"], "link8"),
    (["create", "lab", "--link0", "10.0.0.1,priority=256"], "priority"),
    (["create", "lab", "--link0", "10.0.0.1,prio=2"], "not defined"),
    (["create", "lab", "--link0", "bad_host!"], "valid address"),
    (["create", "lab", "--link0", "10.0.0.1", "--link0", "10.0.0.2"], "duplicate"),
    (["add", "10.0.0.1", "--fingerprint", "AB:CD"], "fingerprint"),
])
def test_standin_checks_arguments_like_pvecm(tmp_path: Path, args: list[str], complaint: str):
    out = standin(tmp_path, "pvecm", *args, stdin="pw\n")
    assert out.returncode == 255
    assert "Parameter verification failed" in out.stderr and complaint in out.stderr
    assert not (tmp_path / "etc").exists()


def test_standin_reads_one_password_line_and_refuses_eof_or_empty(joiner: Path):
    args = ["pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0", "10.254.0.2",
            "--link1", "10.254.1.2"]
    eof = standin(joiner, *args, stdin="")
    assert eof.returncode == 255 and "EOF while reading password" in eof.stderr
    empty = standin(joiner, *args, stdin="\n")
    assert empty.returncode == 255 and "401 authentication failure" in empty.stderr
    good = standin(joiner, *args, stdin=f"{PASSWORD}\nignored\n")
    assert good.returncode == 0 and "successfully added node 'pve2'" in good.stdout


def test_standin_refuses_a_joiner_with_an_authkey_unless_forced(joiner: Path):
    (joiner / "etc/corosync/authkey").write_bytes(b"k" * 256)
    args = ["pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0", "10.254.0.2",
            "--link1", "10.254.1.2"]
    refused = standin(joiner, *args, stdin=f"{PASSWORD}\n")
    # real pvecm prints the refusal from its join worker and still exits 0 (seen with pve-cluster
    # 8.1.3 and 9.1.6 in `lab up --pve`): pvestrap must read the output, not the exit code
    assert refused.returncode == 0
    assert "* authentication key '/etc/corosync/authkey' already exists" in refused.stderr
    assert "Check if node may join a cluster failed!" in refused.stderr
    forced = standin(joiner, *args, "--force", stdin=f"{PASSWORD}\n")
    assert forced.returncode == 0 and "forced to continue" in forced.stderr


def test_standin_plays_a_pve_cluster_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PVE 8's pvecm has no --token-coefficient (exit 255, Proxmox's messages, nothing
    written); 9.1.0+ takes it and writes 125 without it."""
    args = ["pvecm", "create", "lab", "--link0", "10.254.0.1"]
    monkeypatch.setenv("PVESTRAP_STANDIN_PVE_CLUSTER", "8.1.3")
    old = standin(tmp_path / "a", *args, "--token-coefficient", "125", name="pve1")
    assert old.returncode == 255 and old.stderr.startswith("Unknown option: token-coefficient")
    assert not (tmp_path / "a/etc/pve/corosync.conf").exists()
    assert standin(tmp_path / "b", *args, name="pve1").returncode == 0
    assert "token_coefficient" not in (tmp_path / "b/etc/pve/corosync.conf").read_text()
    monkeypatch.setenv("PVESTRAP_STANDIN_PVE_CLUSTER", "9.1.6")
    assert standin(tmp_path / "c", *args, name="pve1").returncode == 0
    assert "  token_coefficient: 125\n" in (tmp_path / "c/etc/pve/corosync.conf").read_text()
    again = standin(tmp_path / "c", *args, name="pve1")
    assert again.returncode == 255 and "already exists" in again.stderr


def test_standin_accepts_a_taken_nodeid_as_pvecm_does(joiner: Path):
    out = standin(joiner, "pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0",
                  "10.254.0.2", "--link1", "10.254.1.2", "--nodeid", "1",
                  stdin=f"{PASSWORD}\n")
    assert out.returncode == 0 and "successfully added node 'pve2'" in out.stdout
    assert (joiner / "etc/pve/corosync.conf").read_text().count("nodeid: 1\n") == 2


def test_standin_checks_the_link_set_on_the_cluster_side(joiner: Path):
    out = standin(joiner, "pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0",
                  "10.254.0.2", stdin=f"{PASSWORD}\n")
    assert out.returncode == 255
    assert "link 1 exists in cluster config but wasn't specified" in out.stderr
    out = standin(joiner, "pvecm", "add", "10.254.0.1", "--fingerprint", FP, "--link0",
                  "10.254.0.1", "--link1", "10.254.1.2", stdin=f"{PASSWORD}\n")
    assert "already used on link ring0_addr by node 'pve1'" in out.stderr


def test_standin_without_fingerprint_needs_a_yes(joiner: Path):
    args = ["pvecm", "add", "10.254.0.1", "--link0", "10.254.0.2", "--link1", "10.254.1.2"]
    out = standin(joiner, *args, stdin=f"{PASSWORD}\n")
    assert out.returncode == 255 and "Fingerprint not verified, abort!" in out.stderr
    assert f"X509 SHA256 key fingerprint is {FP}" in out.stdout


# -- the fingerprint over TLS (a real TLS server in a private network namespace) -------------------

SERVER_AND_CLIENT = textwrap.dedent("""
    import socket, ssl, sys, threading
    from pvestrap.fingerprint import fetch_fingerprint
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    def serve():
        conn, _ = srv.accept()
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except OSError:
            pass
    threading.Thread(target=serve, daemon=True).start()
    print(fetch_fingerprint("127.0.0.1", port, timeout=10))
""")


@pytest.mark.lab
def test_fetch_fingerprint_matches_openssl(tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("openssl") or not shutil.which("unshare"):
        pytest.skip("needs root, openssl and unshare")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=pve1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    want = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in",
                           str(cert)], check=True, capture_output=True, text=True)
    want_fp = want.stdout.strip().split("=", 1)[1]
    got = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "--",
                          sys.executable, "-c", SERVER_AND_CLIENT, str(cert), str(key)],
                         check=True, capture_output=True, text=True)
    assert got.stdout.strip() == want_fp


UNREACHABLE = textwrap.dedent("""
    from pvestrap.fingerprint import fetch_fingerprint
    from pvestrap.errors import OperationFailed
    try:
        fetch_fingerprint("127.0.0.1", 8006, timeout=5)
    except OperationFailed as exc:
        print(exc.code)
""")


@pytest.mark.lab
def test_fetch_fingerprint_reports_a_closed_port():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare")
    got = subprocess.run(["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "--",
                          sys.executable, "-c", UNREACHABLE], check=True, capture_output=True,
                         text=True)
    assert got.stdout.strip() == "fingerprint-unreachable"


def test_a_join_that_never_gets_quorate_says_it_cannot_be_undone_from_here():
    system = RecordingSystem()
    system.on(("pvecm", "status"), (2, NOT_QUORATE, ""))

    def joined(sys_, argv, stdin):  # what pvecm add leaves: the cluster's file listing pve2
        sys_.files["/etc/pve/corosync.conf"] = (render_corosync_conf(make_plan()).encode(), 0o640)
        return 0, "successfully added node 'pve2' to cluster.", ""

    system.on(("pvecm", "add"), joined)
    steps = join_steps(make_plan(), "pve2", Secret(PASSWORD),
                       PveTimeouts(quorum=3, poll=1), fetch=lambda host: FP)
    with pytest.raises(StepFailed) as caught:
        run_steps(steps, system)
    err = caught.value
    assert (err.step_id, err.cause_code, err.undone) == ("pve-wait-quorum", "quorum-timeout", ())
    assert [f.step_id for f in err.undo_failures] == ["pve-join"]
    assert "pvecm delnode pve2" in err.undo_failures[0].cause
    assert system.secrets_seen == [PASSWORD + "\n"]
    assert PASSWORD not in repr(system.records)
