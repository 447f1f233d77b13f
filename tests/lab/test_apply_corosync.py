"""`pvestrap apply` with the plain-corosync backend in the lab: real corosync 3 (knet), real
sshd and ssh between the nodes, real nftables. Nothing here is mocked.

Most runs are the real command inside a node (`python -m pvestrap apply` in the node's network,
mount and UTS namespaces: its own /etc, hostname and NICs, so the real preflight runs too).
The rollback test drives the same flow in-process, with the node's files under its root and
its commands through its nsenter wrap, because it needs a hook at a step boundary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvestrap.answers import dumps
from pvestrap.apply.corosync import CorosyncTimeouts, JoinRefused
from pvestrap.apply import batch
from pvestrap.apply.engine import PlannedCommand, PlannedWait, StepEvent, StepFailed
from pvestrap.apply.flow import ApplyContext, apply_node, plan_only_preflight
from pvestrap.apply.remote import (JOIN_LOCK, JoinLocked, MembersStep, MemberUnreachable, Remote,
                                   RemoteCommandFailed, members_of)
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import (parse_cfgtool_nodes, parse_cfgtool_status,
                                      parse_quorum_status)
from pvestrap.errors import PvestrapError
from pvestrap.findings import Finding, Severity
from pvestrap.lab import names
from pvestrap.lab.lab import Lab
from pvestrap.paths import AUTHKEY, COROSYNC_CONF
from pvestrap.render import joined_conf, render_corosync_conf
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import RealSystem
from labtesting import QuorumWatcher, VersionWatcher, members, wait

pytestmark = pytest.mark.lab

FAST = CorosyncTimeouts(quorum=20, remote=20, connect=5, lock_wait=60, lock_retries=2,
                        service=20)


# Debian's /etc/corosync/corosync.conf as the corosync package ships and starts it.
PACKAGED_EXAMPLE = """totem {
\tversion: 2
\tcluster_name: debian
\tcrypto_cipher: none
\tcrypto_hash: none
}
quorum {
\tprovider: corosync_votequorum
}
nodelist {
\tnode {
\t\tname: node1
\t\tnodeid: 1
\t\tring0_addr: 127.0.0.1
\t}
}
"""


# -- helpers ---------------------------------------------------------------------------------------

def answers(lab: Lab, tmp_path: Path) -> Path:
    path = tmp_path / "answers.toml"
    path.write_text(dumps(lab.plan()))
    return path


def cli(lab: Lab, index: int, answers_file: Path, *args: str, popen: bool = False):
    argv = [sys.executable, "-m", "pvestrap", "apply", "--answers", str(answers_file),
            "--node", lab.node(index).name, *args]
    if popen:
        return lab.popen(index, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    return lab.exec(index, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)


def quorum(lab: Lab, index: int):
    result = lab.exec(index, ["corosync-quorumtool", "-s"])
    return parse_quorum_status(result.stdout) if result.returncode in (0, 2) else None


def corosync_pids(lab: Lab, index: int) -> list[int]:
    """The corosync processes of node INDEX only: lab nodes share the machine's pid namespace
    (other labs' nodes too), so they are told apart by their network namespace."""
    found = lab.exec(index, ["sh", "-c", "exec pgrep -x --ns $$ --nslist net corosync"])
    return sorted(int(pid) for pid in found.stdout.split())


def exited(pid: int) -> bool:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] == "Z"


def tree_hash(folder: Path) -> dict[str, tuple[int, str]]:
    """name -> (mode, sha256) of every file below FOLDER (the lab node's view of it)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            data = path.read_bytes() if path.is_file() else os.readlink(path).encode()
            out[str(path.relative_to(folder))] = (stat.S_IMODE(path.lstat().st_mode),
                                                  hashlib.sha256(data).hexdigest())
    return out


def etc_changes(lab: Lab, index: int) -> dict[str, tuple[int, str]]:
    """The node's own /etc: the upper layer of its overlay, where every write to /etc inside
    the node lands (the lower layer is this machine's /etc, which other work may touch)."""
    return tree_hash(names.Layout(lab.prefix).node_dir(index) / "etc")


def corosync_files(lab: Lab, index: int) -> dict[str, tuple[int, str]]:
    return tree_hash(lab.node(index).path("/etc/corosync"))


def node_system(lab: Lab, index: int) -> RealSystem:
    node = lab.node(index)
    return RealSystem(root=str(node.root), wrap=node.wrap)


@dataclass(frozen=True)
class LabCorosync:
    """The lab's own service control (pvestrap.lab), as a Service for the backend."""

    lab: Lab
    index: int

    def start(self, system) -> None:
        self.lab.start("corosync", [self.index])

    def stop(self, system) -> None:
        self.lab.stop("corosync", [self.index])

    def start_action(self):
        return PlannedCommand(("pvestrap-lab", "start", "corosync", self.lab.node(self.index).name))

    def stop_action(self):
        return PlannedCommand(("pvestrap-lab", "stop", "corosync", self.lab.node(self.index).name))


def preflight_in_node(lab: Lab, index: int, answers_file: Path):
    """The real local preflight, run inside the node (its NICs, hostname and files)."""
    code = ("import json, sys; from pvestrap import answers, preflight; "
            "plan = answers.load(sys.argv[1]); "
            "report = preflight.run(plan, sys.argv[2]); "
            "print(json.dumps([f.as_dict() for f in report.findings], default=str))")

    def run(plan, node) -> Report:
        result = lab.exec(index, [sys.executable, "-c", code, str(answers_file), node],
                          timeout=120)
        assert result.returncode == 0, result.stderr
        findings = tuple(Finding(d["code"], Severity(d["severity"]), d["message"], d["subject"],
                                 d["check"], d["payload"], d["remedy"], d["ignored"])
                         for d in json.loads(result.stdout))
        return Report("preflight in node", (ReportSection("local", "LOCAL", findings),))

    return run


def assert_cluster(lab: Lab, count: int, links: int) -> None:
    """Every node quorate with COUNT members, then every link connected between every pair.
    apply's promise is the quorum (checked at once); knet brings a link up on its own pace, so
    a link may still be connecting when the last join's quorum wait returned: bounded wait."""
    ids = set(range(1, count + 1))
    for index in range(1, count + 1):
        status = quorum(lab, index)
        assert status is not None and status.quorate, f"n{index} not quorate"
        assert {m.nodeid for m in status.nodes_only} == ids
    seen: dict[int, object] = {}
    assert wait(lambda: all(_links_up(lab, index, ids, links, seen)
                            for index in range(1, count + 1)), 15), seen


def _links_up(lab: Lab, index: int, ids: set[int], links: int, seen: dict[int, object]) -> bool:
    """Node INDEX has LINKS links, each connected to every node of IDS (what it saw: SEEN)."""
    cfg = parse_cfgtool_status(lab.exec(index, ["corosync-cfgtool", "-s"]).stdout)
    peers = parse_cfgtool_nodes(lab.exec(index, ["corosync-cfgtool", "-n"]).stdout)
    seen[index] = (cfg, peers)
    return [link.link for link in cfg.links] == list(range(links)) and \
        all({p.nodeid for p in link.peers if p.connected} == ids for link in cfg.links) and \
        {p.nodeid for p in peers.peers} == ids - {index} and \
        all(sorted(link.link for link in peer.links if link.connected) == list(range(links))
            for peer in peers.peers)


def create_and_join(lab: Lab, answers_file: Path, joiners: list[int]) -> dict[int, str]:
    """apply on n1, then on every joiner at the same time; returns each node's output."""
    first = cli(lab, 1, answers_file, "--yes")
    assert first.returncode == 0, first.stdout
    procs = {i: cli(lab, i, answers_file, "--yes", popen=True) for i in joiners}
    outputs = {1: first.stdout}
    for index, proc in procs.items():
        outputs[index], _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, outputs[index]
    return outputs


# -- the tests -------------------------------------------------------------------------------------

def test_create_then_two_concurrent_joins_form_a_quorate_cluster(lab, tmp_path):
    three = lab(nodes=3, links=2)
    three.start("sshd")
    plan = three.plan()
    answers_file = answers(three, tmp_path)

    create_and_join(three, answers_file, [2, 3])

    assert_cluster(three, 3, 2)
    # Two joins, each a config_version bump, or one bump when the second joiner was waiting
    # when the first took the lock (apply.batch): no edit was lost to the other either way.
    version = CorosyncConf.parse(three.node(1).path(COROSYNC_CONF).read_text()).config_version
    assert version in (2, 3)
    expected = render_corosync_conf(plan, config_version=version)
    keys = set()
    for index in (1, 2, 3):
        node = three.node(index)
        assert node.path(COROSYNC_CONF).read_text() == expected
        assert stat.S_IMODE(node.path(AUTHKEY).stat().st_mode) == 0o400
        keys.add(node.path(AUTHKEY).read_bytes())
    assert len(keys) == 1 and len(keys.pop()) == 256

    # A second apply on every node plans nothing and changes nothing.
    before = {i: corosync_files(three, i) for i in (1, 2, 3)}
    daemons = {i: corosync_pids(three, i) for i in (1, 2, 3)}
    assert all(daemons.values()), daemons
    for index in (1, 2, 3):
        result = apply_node(plan, three.node(index).name, ApplyContext(
            node_system(three, index), root=str(three.node(index).root), out=lambda line: None,
            preflight=lambda *a: pytest.fail("a member must not be preflighted again")))
        assert result.role == "member" and not result.planned and result.outcome is None
    again = cli(three, 2, answers_file, "--yes")
    assert again.returncode == 0, again.stdout
    assert {i: corosync_files(three, i) for i in (1, 2, 3)} == before
    # nobody restarted (a ring id could also change on a token lost under load: not a restart)
    assert {i: corosync_pids(three, i) for i in (1, 2, 3)} == daemons


def test_create_over_the_packaged_corosync_running_without_systemd_restarts_it(lab, tmp_path):
    """Debian's corosync package starts its example config (one node on 127.0.0.1). A lab node
    has no systemd, so create stops that corosync with `corosync-cfgtool -H` and starts its own:
    the old daemon stops answering a moment before it exits, and a corosync started in between
    exits at once ("Another Corosync instance is already running")."""
    one = lab(nodes=1, links=2)
    node = one.node(1)
    node.path(COROSYNC_CONF).parent.mkdir(parents=True, exist_ok=True)
    node.path(COROSYNC_CONF).write_text(PACKAGED_EXAMPLE)
    assert one.exec(1, ["corosync"]).returncode == 0  # the daemon forks itself into the background
    assert wait(lambda: quorum(one, 1) is not None, 10)
    old = corosync_pids(one, 1)
    assert old

    created = cli(one, 1, answers(one, tmp_path), "--yes")
    assert created.returncode == 0, created.stdout
    status = quorum(one, 1)
    assert status is not None and status.quorate and status.local is not None, created.stdout
    assert CorosyncConf.parse(node.path(COROSYNC_CONF).read_text()).cluster_name == one.prefix
    assert node.path(COROSYNC_CONF + ".bak").read_text() == PACKAGED_EXAMPLE
    assert all(exited(pid) for pid in old)  # gone, or a zombie not yet reaped


def test_a_member_command_that_exits_255_is_not_taken_for_ssh_failing(lab):
    """Perl's die exits 255, as ssh does when it cannot connect or log in: pvecm failing on a
    member ("cluster not ready - no quorum?") must not read as "cannot reach"."""
    two = lab(nodes=2, links=1)
    two.start("sshd")
    member = Remote(node_system(two, 1), two.node(2).address(0), connect_timeout=3)
    with pytest.raises(RemoteCommandFailed) as died:
        member.run("perl -e 'die \"cluster not ready - no quorum?\\n\"'", "pvecm delnode n3")
    assert "(exit 255): cluster not ready - no quorum?" in died.value.message
    assert "pvestrap-started" not in died.value.message
    two.stop("sshd", [2])
    with pytest.raises(MemberUnreachable) as unreachable:
        member.run("true", "a command")
    assert "cannot reach root@" in unreachable.value.message


def test_join_whose_members_become_unreachable_rolls_back_everywhere(lab, tmp_path):
    three = lab(nodes=3, links=2)
    three.start("sshd")
    plan = three.plan()
    answers_file = answers(three, tmp_path)
    create_and_join(three, answers_file, [2])
    before = {i: corosync_files(three, i) for i in (1, 2, 3)}
    etc_before = etc_changes(three, 3)

    events: list[StepEvent] = []

    def hook(event: StepEvent) -> None:
        events.append(event)
        if event.step_id == "install" and event.state == "applying":
            # The members now list n3; from here on n3 hears nobody on either knet link.
            three.impair(drop=["n3:udp/5405", "n3:udp/5406"])

    ctx = ApplyContext(node_system(three, 3), root=str(three.node(3).root),
                       out=lambda line: None, on_progress=hook,
                       service=LabCorosync(three, 3),
                       preflight=preflight_in_node(three, 3, answers_file),
                       timeouts=CorosyncTimeouts(quorum=8, remote=20, connect=5, service=20))
    with pytest.raises(StepFailed) as caught:
        apply_node(plan, three.node(3).name, ctx)

    failure = caught.value.as_dict()
    assert failure["step"] == "wait-quorum" and failure["cause"] == "quorum-timeout"
    assert failure["undone"] == ["start", "install", "update-members"]
    assert failure["undo_failures"] == []
    assert ("install", "applying") in [(e.step_id, e.state) for e in events]
    # The old cluster, quorate, with its old membership and its old files, byte for byte.
    for index in (1, 2):
        status = quorum(three, index)
        assert status.quorate and {m.nodeid for m in status.nodes_only} == {1, 2}
        assert status.expected_votes == 2
        version = three.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
        assert version.strip().endswith("= 2")
    assert {i: corosync_files(three, i) for i in (1, 2, 3)} == before
    assert etc_changes(three, 3) == etc_before
    assert quorum(three, 3) is None  # corosync stopped on the joiner

    # Nothing was left half-done: with the network back, the same node joins.
    three.impair(clear=True)
    done = cli(three, 3, answers_file, "--yes")
    assert done.returncode == 0, done.stdout
    assert_cluster(three, 3, 2)


def test_a_joiner_with_an_authkey_is_refused_before_any_change(lab, tmp_path):
    two = lab(nodes=2, links=2)
    two.start("sshd")
    plan = two.plan()
    answers_file = answers(two, tmp_path)
    assert cli(two, 1, answers_file, "--yes").returncode == 0
    key = two.node(2).path(AUTHKEY)
    key.write_bytes(os.urandom(256))
    key.chmod(0o400)
    member_before = corosync_files(two, 1)
    etc_before = etc_changes(two, 2)

    # The real preflight stops it first (its join-authkey check) ...
    gated = cli(two, 2, answers_file, "--yes")
    assert gated.returncode == 1
    assert "[join-authkey]" in gated.stdout and "(authkey-exists)" in gated.stdout
    # ... and the backend refuses on its own when that check is ignored.
    ignored = cli(two, 2, answers_file, "--yes", "--ignore", "join-authkey")
    assert ignored.returncode == 1
    assert "[authkey-exists]" in ignored.stdout

    with pytest.raises(JoinRefused) as caught:
        apply_node(plan, two.node(2).name, ApplyContext(
            node_system(two, 2), root=str(two.node(2).root), out=lambda line: None,
            preflight=plan_only_preflight))
    assert caught.value.code == "join-refused"
    assert caught.value.reasons == ("authkey-exists",)

    assert corosync_files(two, 1) == member_before
    assert etc_changes(two, 2) == etc_before
    assert quorum(two, 2) is None
    status = quorum(two, 1)
    assert status.quorate and [m.nodeid for m in status.nodes_only] == [1]


def test_dry_run_changes_nothing_on_disk(lab, tmp_path):
    two = lab(nodes=2, links=2)
    two.start("sshd")
    answers_file = answers(two, tmp_path)

    fresh = etc_changes(two, 1)
    dry = cli(two, 1, answers_file, "--dry-run")
    assert dry.returncode == 0, dry.stdout
    assert "+++ b/etc/corosync/corosync.conf" in dry.stdout and "+<secret>" in dry.stdout
    assert etc_changes(two, 1) == fresh
    assert quorum(two, 1) is None
    assert not (names.Layout(two.prefix).node_dir(1) / "run/pvestrap").exists()

    assert cli(two, 1, answers_file, "--yes").returncode == 0
    member = corosync_files(two, 1)
    joiner = etc_changes(two, 2)
    dry = cli(two, 2, answers_file, "--dry-run")
    assert dry.returncode == 0, dry.stdout
    assert f"{two.node(1).name}:{COROSYNC_CONF}" in dry.stdout  # the member's diff is shown
    key = two.node(1).path(AUTHKEY).read_bytes()
    assert base64.b64encode(key).decode() not in dry.stdout
    assert corosync_files(two, 1) == member
    assert etc_changes(two, 2) == joiner
    assert quorum(two, 2) is None


def test_a_joiner_waits_for_the_member_lock_and_gives_up_cleanly(lab, tmp_path):
    two = lab(nodes=2, links=2)
    two.start("sshd")
    plan = two.plan()
    answers_file = answers(two, tmp_path)
    assert cli(two, 1, answers_file, "--yes").returncode == 0
    two.exec(1, ["mkdir", "-p", os.path.dirname(JOIN_LOCK)], check=True)
    member_before = corosync_files(two, 1)
    etc_before = etc_changes(two, 2)

    def attempt(retries: int, out):
        timeouts = CorosyncTimeouts(quorum=20, remote=20, lock_wait=1, lock_retries=retries,
                                    backoff=0.5, service=20)
        return apply_node(plan, two.node(2).name, ApplyContext(
            node_system(two, 2), root=str(two.node(2).root), out=out,
            preflight=preflight_in_node(two, 2, answers_file), timeouts=timeouts))

    # Another join holds the lock all along: refused after the retries, nothing changed.
    holder = two.popen(1, ["flock", "-o", JOIN_LOCK, "sleep", "120"])
    try:
        lines: list[str] = []
        with pytest.raises(JoinLocked) as caught:
            attempt(1, lines.append)
        assert caught.value.code == "join-locked"
        assert sum("still busy" in line for line in lines) == 1
        assert corosync_files(two, 1) == member_before
        assert etc_changes(two, 2) == etc_before
    finally:
        holder.kill()
        holder.wait()

    # The other join ends while this one waits (after its first try): it tries again, gets in.
    holder = two.popen(1, ["flock", "-o", JOIN_LOCK, "sleep", "120"])
    lines = []

    def out(line: str) -> None:
        lines.append(line)
        if "still busy" in line:
            holder.kill()

    try:
        result = attempt(3, out)
    finally:
        holder.kill()
        holder.wait()
    assert sum("still busy" in line for line in lines) == 1
    assert result.changed and result.outcome.applied[-1] == "wait-quorum"
    assert_cluster(two, 2, 2)


# -- joiners that wait together join in one change (pvestrap.apply.batch) ------------------------

def join_together(lab: Lab, joiners: dict[int, CorosyncTimeouts]) -> dict[int, object]:
    """apply_node for every joiner at once, each in its node, unattended, gathering the others
    for up to 30 s; returns each one's ApplyResult or the exception it raised."""
    plan = lab.plan()

    def one(index: int):
        ctx = ApplyContext(node_system(lab, index), root=str(lab.node(index).root),
                           out=lambda line: None, service=LabCorosync(lab, index),
                           preflight=plan_only_preflight, timeouts=joiners[index], gather_s=30)
        try:
            return apply_node(plan, lab.node(index).name, ctx)
        except PvestrapError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(joiners)) as pool:
        return dict(zip(joiners, pool.map(one, joiners)))


def conf_names(lab: Lab, index: int) -> list[str]:
    return [str(n.name) for n in
            CorosyncConf.parse(lab.node(index).path(COROSYNC_CONF).read_text()).nodes]


def test_three_joiners_waiting_together_join_in_one_configuration_change(lab, tmp_path):
    four = lab(nodes=4, links=2)
    four.start("sshd")
    answers_file = answers(four, tmp_path)
    assert cli(four, 1, answers_file, "--yes").returncode == 0

    with VersionWatcher(four) as versions:
        results = join_together(four, {i: FAST for i in (2, 3, 4)})
    for index, result in results.items():
        assert not isinstance(result, BaseException), (index, result)
        assert result.role == "join" and result.outcome.applied[-1] == "wait-quorum"
    # One change for the three: n1's corosync.conf went from version 1 to 2 and nowhere else.
    assert versions.seen == [1, 2]
    # One of them (the lock's holder) edited the members; the others only finished at home.
    edited = [i for i, r in results.items() if "update-members" in r.outcome.applied]
    assert len(edited) == 1
    # All three started corosync at the moment the holder wrote on n1 (batch.START), each
    # waiting for it at most START_WAIT_MAX_S: a start 0.1 s apart costs another membership round.
    assert float(four.node(1).path(batch.START).read_text()) > 0
    for result in results.values():
        waits = [a for step_id, actions in result.outcome.plans if step_id == "start"
                 for a in actions if isinstance(a, PlannedWait)]
        assert [w.timeout for w in waits] == [batch.START_WAIT_MAX_S]
    assert_cluster(four, 4, 2)
    expected = render_corosync_conf(four.plan(), config_version=2)
    for index in (1, 2, 3, 4):
        assert four.node(index).path(COROSYNC_CONF).read_text() == expected
        assert four.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]
                         ).stdout.strip().endswith("= 2")


def test_a_batched_joiner_that_fails_its_quorum_wait_leaves_and_the_others_stay(lab, tmp_path):
    four = lab(nodes=4, links=2)
    four.start("sshd")
    answers_file = answers(four, tmp_path)
    assert cli(four, 1, answers_file, "--yes").returncode == 0
    before = etc_changes(four, 4)
    # n4's corosync hears nobody on either knet link (its ssh still works).
    four.impair(drop=["n4:udp/5405", "n4:udp/5406"])
    short = CorosyncTimeouts(quorum=15, remote=20, connect=5, lock_wait=60, lock_retries=2,
                             service=20)
    with VersionWatcher(four) as versions:
        pool = ThreadPoolExecutor(max_workers=1)
        running = pool.submit(join_together, four, {2: FAST, 3: FAST, 4: short})
        # From the moment n1..n3 are a quorate three until n4 has left: never a gap on n1.
        assert wait(lambda: members(four, 1) == 3, 120)
        with QuorumWatcher(four, 1, 3) as watcher:
            results = running.result(timeout=300)
        pool.shutdown()
    assert watcher.samples > 5 and watcher.bad == []

    assert not isinstance(results[2], BaseException), results[2]
    assert not isinstance(results[3], BaseException), results[3]
    failed = results[4]
    assert isinstance(failed, StepFailed) and failed.cause_code == "quorum-timeout"
    assert failed.undone[:2] == ("start", "install")
    # The batch (version 2), then n4 out again (version 3): nothing else.
    assert versions.seen == [1, 2, 3]
    for index in (1, 2, 3):
        assert conf_names(four, index) == [four.node(i).name for i in (1, 2, 3)]
        status = quorum(four, index)
        assert status.quorate and {m.nodeid for m in status.nodes_only} == {1, 2, 3}
        assert status.expected_votes == 3
    assert quorum(four, 4) is None  # corosync stopped on n4
    assert etc_changes(four, 4) == before  # n4's own files back as they were

    # With its network back, n4 joins the normal way.
    four.impair(clear=True)
    done = cli(four, 4, answers_file, "--yes")
    assert done.returncode == 0, done.stdout
    assert_cluster(four, 4, 2)


def test_a_batch_whose_holder_died_after_changing_the_members_still_forms(lab, tmp_path):
    """The batch's holder (n3) was killed (SIGKILL) after its update-members and before it told
    the batched joiners: n1's corosync.conf lists n2, n3 and n4 (version 2), nobody was marked,
    none of them runs corosync. Each of them (n3's rerun included) finds itself listed and
    resumes; a resume must not hold the join lock through its quorum wait, which needs the
    others, who wait for that lock (it did: 2 of 4 votes for 60 s, one joiner after the other)."""
    four = lab(nodes=4, links=2)
    four.start("sshd")
    answers_file = answers(four, tmp_path)
    assert cli(four, 1, answers_file, "--yes").returncode == 0
    plan = four.plan()
    n1 = four.node(1)
    target = plan.join_address(lambda name: ())
    before = n1.path(COROSYNC_CONF).read_text()
    after = joined_conf(plan, [four.node(i).name for i in (3, 2, 4)], before)

    def remote(system, address):
        return Remote(system, address, timeout=20, connect_timeout=5)

    # The holder's own edit of every member, as BatchStep ran it from n3 (real ssh, one reload).
    MembersStep(members_of(CorosyncConf.parse(before), target, lambda name: ()), target, before,
                after, remote).apply(node_system(four, 3))
    assert conf_names(four, 1) == [four.node(i).name for i in (1, 2, 3, 4)]

    with VersionWatcher(four) as versions:
        results = join_together(four, {i: FAST for i in (2, 3, 4)})
    for index, result in results.items():
        assert not isinstance(result, BaseException), (index, result)
        assert result.role == "join" and result.outcome.applied[-1] == "wait-quorum"
        assert "update-members" not in result.outcome.applied  # resumed: no second change
    assert versions.seen == [2]
    assert_cluster(four, 4, 2)
