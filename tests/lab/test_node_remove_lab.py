"""`pvestrap node remove` on running lab clusters: real corosync (knet), real sshd and ssh.

The command runs inside n1 as a user would run it and reaches the other members over SSH. A
node is "powered off" by stopping its corosync and taking its NICs down (no ICMP answer, as the
admin guide asks before `pvecm delnode`). A watcher asks n1's corosync-quorumtool every 100 ms
and must never see the cluster inquorate or with another member count.
"""

from __future__ import annotations

import json
import re
import sys

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import parse_quorum_status
from labtesting import QuorumWatcher, etc_hashes, members, wait

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
CONF = "/etc/corosync/corosync.conf"


def start_cluster(lab, nodes: int, links: int = 1):
    """NODES nodes running corosync with the facade's corosync.conf, sshd up, quorate."""
    made = lab(nodes=nodes, links=links)
    conf = CorosyncConf.create(made.plan())
    made.write_corosync()  # the authkey
    for node in made.nodes:
        node.path(CONF).write_text(conf.text())
    made.start("corosync")
    made.start("sshd")
    assert wait(lambda: members(made, 1) == nodes, 30), "the cluster did not form"
    return made, conf


def power_off(lab, index: int, links: int = 1) -> None:
    """corosync stopped and every NIC down: the node answers nothing any more; returns once
    n1's knet has noticed (knet keeps a link up until its pong timeout)."""
    lab.stop("corosync", [index])
    for link in range(links):
        lab.exec(index, ["ip", "link", "set", f"eth{link}", "down"], check=True)

    def gone() -> bool:
        out = lab.exec(1, ["corosync-cfgtool", "-s"]).stdout
        return not re.search(rf"nodeid:\s+{index}:\s+connected", out)

    assert wait(gone, 30), f"n1's knet still sees n{index}"


def node_cmd(lab, *args: str, node: int = 1, timeout: float = 180):
    return lab.exec(node, [*PVESTRAP, "node", *args], timeout=timeout)


def quorum(lab, index: int):
    return parse_quorum_status(lab.exec(index, ["corosync-quorumtool", "-s"]).stdout)


def quorum_or_none(lab, index: int):
    result = lab.exec(index, ["corosync-quorumtool", "-s"])
    return parse_quorum_status(result.stdout) if result.returncode in (0, 2) else None


def runtime_version(lab, index: int) -> int:
    out = lab.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
    return int(out.split("=")[1])


def known_hosts(lab, index: int) -> str:
    return lab.node(index).path("/root/.ssh/known_hosts").read_text()


def test_remove_a_powered_off_node_from_four(lab):
    four, conf = start_cluster(lab, 4)
    n4 = four.node(4)
    power_off(four, 4)
    assert wait(lambda: members(four, 1) == 3, 30)
    assert n4.address(0) in known_hosts(four, 2)
    with QuorumWatcher(four, "n1", 3) as watcher:
        out = node_cmd(four, "remove", n4.name, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[applied] remove-" in out.stderr and "[applied] verify" in out.stderr
    want = conf.remove_node(n4.name).bump_version()
    for index in (1, 2, 3):
        assert four.node(index).path(CONF).read_text() == want.text()
        assert runtime_version(four, index) == 2  # bumped once
        status = quorum(four, index)
        assert status.quorate and status.expected_votes == 3
        assert {m.nodeid for m in status.nodes_only} == {1, 2, 3}
        assert n4.address(0) not in known_hosts(four, index)
        assert four.node(1).address(0) in known_hosts(four, index)
    assert watcher.samples > 10
    assert watcher.bad == [], watcher.bad[0][1]
    again = node_cmd(four, "remove", n4.name, "--yes")
    assert again.returncode == 1 and "[node-not-in-cluster]" in again.stdout


def test_remove_refuses_a_node_that_is_still_up(lab):
    three, _ = start_cluster(lab, 3)
    before = etc_hashes(three)
    n3 = three.node(3)
    out = node_cmd(three, "remove", n3.name, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    line = next(x for x in out.stdout.splitlines() if "[node-still-online]" in x)
    assert "corosync's membership" in line and "knet link0 to it is connected" in line
    assert f"{n3.address(0)} answers ICMP" in line
    assert "nothing was changed" in out.stderr
    assert etc_hashes(three) == before
    assert all(members(three, i) == 3 for i in (1, 2, 3))

    dry = node_cmd(three, "remove", n3.name, "--json")
    doc = json.loads(dry.stdout)
    assert dry.returncode == 1 and doc["status"] == "refused"
    codes = {f["code"] for s in doc["preflight"]["sections"] for f in s["findings"]}
    assert "node-still-online" in codes
    assert etc_hashes(three) == before


def test_lost_quorum_needs_expected_votes(lab):
    two, conf = start_cluster(lab, 2)
    n2 = two.node(2)
    power_off(two, 2)
    assert wait(lambda: quorum(two, 1).quorate is False, 30)
    before = etc_hashes(two)

    refused = node_cmd(two, "remove", n2.name, "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[cluster-not-quorate]" in refused.stdout and "--expected-votes" in refused.stdout
    assert etc_hashes(two) == before

    bad = node_cmd(two, "remove", n2.name, "--yes", "--expected-votes", "2")
    assert bad.returncode == 2 and "--expected-votes 2 is outside 1" in bad.stderr
    assert etc_hashes(two) == before

    done = node_cmd(two, "remove", n2.name, "--yes", "--expected-votes", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[applied] expected-votes" in done.stderr
    assert "expected votes were lowered to 1 for the removal" in done.stdout
    status = quorum(two, 1)
    assert status.quorate and status.expected_votes == 1
    assert [m.nodeid for m in status.nodes_only] == [1]
    assert two.node(1).path(CONF).read_text() == conf.remove_node(n2.name).bump_version().text()


def test_dry_run_shows_the_diff_and_changes_nothing(lab):
    three, _ = start_cluster(lab, 3)
    power_off(three, 3)
    assert wait(lambda: members(three, 1) == 2, 30)
    before = etc_hashes(three)
    n3 = three.node(3)
    out = node_cmd(three, "remove", n3.name, "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"^-\s+name: {n3.name}$", out.stdout, re.M)
    assert "+  config_version: 2" in out.stdout and "dry run: nothing was changed" in out.stdout
    assert etc_hashes(three) == before
    doc = json.loads(node_cmd(three, "remove", n3.name, "--dry-run", "--json").stdout)
    assert doc["status"] == "dry-run" and doc["preflight"]["summary"]["failures"] == 0
    assert [s["step"] for s in doc["plan"]] == [f"remove-{n3.name}", "known-hosts", "verify"]
    assert f"-    name: {n3.name}" in doc["diff"]
    assert etc_hashes(three) == before


def test_a_member_unreachable_mid_write_rolls_back_every_member(lab):
    """In-process on n1 (its files under its root, its commands through its nsenter wrap) so a
    hook can cut n3's SSH at the moment the write starts."""
    from pvestrap.apply import removal as rm
    from pvestrap.apply.engine import StepFailed
    from pvestrap.apply.links import LinkTimeouts
    from pvestrap.system import RealSystem

    four, conf = start_cluster(lab, 4)
    n4 = four.node(4)
    power_off(four, 4)
    assert wait(lambda: members(four, 1) == 3, 30)
    files = {i: four.node(i).path(CONF).read_bytes() for i in (1, 2, 3)}
    baks = {i: four.node(i).path(CONF + ".bak").exists() for i in (1, 2, 3)}
    system = RealSystem(root=str(four.node(1).root), wrap=four.node(1).wrap)
    removal, _ = rm.read_removal(system, n4.name, timeouts=LinkTimeouts(remote=8, connect=3,
                                                                         verify=20))
    assert [f for f in rm.preflight(system, removal) if f.severity.value == "fail"] == []
    events = []

    def hook(event):
        events.append((event.step_id, event.state))
        if (event.step_id, event.state) == (f"remove-{n4.name}", "applying"):
            four.impair(drop="n3:tcp/22")

    with QuorumWatcher(four, "n1", 3) as watcher:
        with pytest.raises(StepFailed) as caught:
            rm.run_removal(system, removal, hook)
    failure = caught.value.as_dict()
    assert failure["step"] == f"remove-{n4.name}" and failure["undo_failures"] == []
    assert four.node(3).name in failure["message"]
    for i in (1, 2, 3):
        assert four.node(i).path(CONF).read_bytes() == files[i]  # byte for byte
        assert four.node(i).path(CONF + ".bak").exists() == baks[i]
        assert runtime_version(four, i) == 1
        assert quorum(four, i).expected_votes == 4
    assert watcher.samples > 5
    assert watcher.bad == [], watcher.bad[0][1]
    four.impair(clear=True)
    done = node_cmd(four, "remove", n4.name, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr


def test_separate_then_join_again_with_apply(lab, tmp_path):
    from pvestrap.answers import dumps

    three, conf = start_cluster(lab, 3)
    n3 = three.node(3)
    key = n3.path("/etc/corosync/authkey").read_bytes()
    out = node_cmd(three, "separate", "--yes", node=3)
    assert out.returncode == 0, out.stdout + out.stderr
    aside = re.search(r"its old files are in (\S+);", out.stdout).group(1)
    assert not n3.path(CONF).exists() and not n3.path("/etc/corosync/authkey").exists()
    assert n3.path(aside + CONF).read_text() == conf.text()
    assert n3.path(aside + "/etc/corosync/authkey").read_bytes() == key
    assert three.exec(3, ["corosync-quorumtool", "-s"]).returncode not in (0, 2)  # stopped
    want = conf.remove_node(n3.name).bump_version()
    for index in (1, 2):
        assert three.node(index).path(CONF).read_text() == want.text()
        status = quorum(three, index)
        assert status.quorate and status.expected_votes == 2
        assert {m.nodeid for m in status.nodes_only} == {1, 2}
        assert n3.address(0) not in known_hosts(three, index)

    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))
    joined = three.exec(3, [*PVESTRAP, "apply", "--answers", str(answers), "--node", n3.name,
                            "--yes"], timeout=240)
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert wait(lambda: all(members(three, i) == 3 for i in (1, 2, 3)), 60)
    assert all(quorum(three, i).expected_votes == 3 for i in (1, 2, 3))


def test_a_removed_node_that_comes_back_as_it_was_is_detected_and_can_rejoin(lab, tmp_path):
    from pvestrap.answers import dumps

    three, _ = start_cluster(lab, 3)
    n3 = three.node(3)
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))
    power_off(three, 3)
    assert node_cmd(three, "remove", n3.name, "--yes").returncode == 0
    three.exec(3, ["ip", "link", "set", "eth0", "up"], check=True)
    three.start("corosync", [3])  # powered on as it was: the old corosync.conf
    assert wait(lambda: quorum_or_none(three, 3) is not None, 30)

    status = three.exec(1, [*PVESTRAP, "status", "--json", "--listen", "5"], timeout=60)
    assert status.returncode == 1, status.stdout + status.stderr
    found = [f for s in json.loads(status.stdout)["sections"] for f in s["findings"]
             if f["code"] == "link-stranger"]
    assert [(f["subject"], f["payload"]["links"]) for f in found] == [(n3.address(0), [0])]
    assert all(members(three, i) == 2 for i in (1, 2))  # never silently accepted

    def apply_n3():
        return three.exec(3, [*PVESTRAP, "apply", "--answers", str(answers), "--node",
                              n3.name, "--yes"], timeout=240)

    refused = apply_n3()
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[removed-node-returned]" in refused.stdout + refused.stderr
    separated = node_cmd(three, "separate", "--yes", node=3)
    assert separated.returncode == 0, separated.stdout + separated.stderr
    assert "[dropped-by-members]" in separated.stdout
    assert not n3.path(CONF).exists()
    joined = apply_n3()
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert wait(lambda: all(members(three, i) == 3 for i in (1, 2, 3)), 60)
    clean = three.exec(1, [*PVESTRAP, "status", "--listen", "3"], timeout=60)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "[link-strangers-none]" in clean.stdout
