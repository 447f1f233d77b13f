"""`pvestrap qdevice setup/remove/status` on lab clusters with a qnetd host: real corosync 3.1.7,
Debian's real corosync-qnetd and corosync-qdevice, real sshd and ssh; no mocks.

The command runs inside n1 as a user would run it and reaches the other members and the qnetd
host over SSH as root. The qnetd host (`lab up --qnetd`) is not a cluster node.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from pvestrap.apply import qdevice as qd
from pvestrap.apply.engine import StepFailed
from pvestrap.apply.links import LinkTimeouts
from pvestrap.corosync.facade import CorosyncConf
from labtesting import etc_hashes, members, wait
from pvestrap.qdevice import QDevice
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.system import RealSystem

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
CONF = "/etc/corosync/corosync.conf"
QNETD = "10.254.0.100"


def start_cluster(lab, nodes: int):
    """NODES nodes running corosync (pvecm's corosync.conf: no two_node), sshd up, quorate,
    and a qnetd host running corosync-qnetd and sshd."""
    made = lab(nodes=nodes, qnetd=True)
    conf = CorosyncConf.create(made.plan())
    made.write_corosync()  # the authkey
    for node in made.nodes:
        node.path(CONF).write_text(conf.text())
    made.start("corosync")
    made.start("sshd")
    assert wait(lambda: members(made, 1) == nodes, 30), "the cluster did not form"
    return made


def qdevice(lab, *args: str, node: int = 1, timeout: float = 240):
    return lab.exec(node, [*PVESTRAP, "qdevice", *args], timeout=timeout)


def quorum(lab, index: int):
    return parse_quorum_status(lab.exec(index, ["corosync-quorumtool", "-s"]).stdout)


def qdevice_running(lab, index: int) -> bool:
    """corosync-qdevice-tool talks to the node's own qdevice (its socket is in the node's /run)."""
    return lab.exec(index, ["corosync-qdevice-tool", "-s"]).returncode == 0


def settled(lab, nodes: int, votes: int, qdevice_flag: bool) -> bool:
    for index in range(1, nodes + 1):
        status = quorum(lab, index)
        if not status.quorate or status.expected_votes != votes or \
                status.total_votes != votes or ("Qdevice" in status.flags) != qdevice_flag:
            return False
    return True


def test_two_nodes_setup_survive_and_remove(lab):
    two = start_cluster(lab, 2)
    before = {n.name: n.path(CONF).read_bytes() for n in two.nodes}

    result = qdevice(two, "setup", QNETD, "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "done" and doc["expected_votes"] == 3
    for index in (1, 2):
        out = two.exec(index, ["corosync-quorumtool", "-s"]).stdout
        assert "Flags:            Quorate Qdevice" in out
        status = parse_quorum_status(out)
        assert status.expected_votes == 3 and status.total_votes == 3
        assert all("V" in m.qdevice.split(",") for m in status.nodes_only)
        conf = CorosyncConf.parse(two.node(index).path(CONF).read_text())
        assert conf.config_version == 2 and "device" in conf.text()

    shown = json.loads(two.exec(1, [*PVESTRAP, "status", "--json"]).stdout)
    section = next(s for s in shown["sections"] if s["name"] == "qdevice")
    connected = next(f for f in section["findings"] if f["code"] == "qdevice-connected")
    assert connected["payload"]["votes"] == 1 and connected["payload"]["algorithm"] == "ffsplit"
    assert connected["payload"]["flags"] == {"" + n.name: "A,V,NMW" for n in two.nodes}

    # the qnetd host's process killed: the nodes still have their two votes
    os.kill(two.status()["qnetd"]["services"]["qnetd"], signal.SIGKILL)
    assert wait(lambda: quorum(two, 1).total_votes == 2, 30)
    assert all(quorum(two, i).quorate for i in (1, 2))
    two.start("qnetd")
    assert wait(lambda: settled(two, 2, 3, True), 60), "the QDevice did not come back"

    # one node's corosync stopped: the other stays quorate thanks to the QDevice
    two.stop("corosync", [2])
    assert wait(lambda: quorum(two, 1).nodes == 1, 30)
    status = quorum(two, 1)
    assert status.quorate and status.total_votes == 2 and status.expected_votes == 3
    two.start("corosync", [2])
    assert wait(lambda: members(two, 1) == 2, 30)

    result = qdevice(two, "remove", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert wait(lambda: settled(two, 2, 2, False), 30)
    for node in two.nodes:
        conf = CorosyncConf.parse(node.path(CONF).read_text())
        assert "device" not in conf.text() and conf.config_version == 3
        assert not qdevice_running(two, node.index)
        assert not node.path("/etc/corosync/qdevice").exists()
        assert node.path(CONF).read_bytes() != before[node.name]  # version 3, not 1


def test_three_nodes_refused_unless_forced_and_vote_math(lab):
    three = start_cluster(lab, 3)
    hashes = etc_hashes(three)
    result = qdevice(three, "setup", QNETD, "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[qdevice-odd-nodes]" in result.stdout and "no single node may fail" in result.stdout
    assert "nothing was changed" in result.stderr
    assert etc_hashes(three) == hashes

    # a dry run with --force shows the plan (lms, no votes key) and changes nothing
    dry = qdevice(three, "setup", QNETD, "--force", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "+      algorithm: lms" in dry.stdout and "dry run: nothing was changed" in dry.stdout
    assert etc_hashes(three) == hashes
    assert not qdevice_running(three, 1)

    result = qdevice(three, "setup", QNETD, "--force", "--yes", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    votes = json.loads(result.stdout)["preflight"]["meta"]["votes"]
    assert votes["algorithm"] == "lms" and votes["qdevice_votes"] == 2
    assert wait(lambda: settled(three, 3, votes["expected_votes"], True), 60)
    status = quorum(three, 1)
    device = next(m for m in status.members if m.is_qdevice)
    assert (status.expected_votes, status.quorum, device.votes) == \
        (votes["expected_votes"], votes["quorum"], votes["qdevice_votes"]) == (5, 3, 2)


def test_port_blocked_fails_preflight_before_any_change(lab):
    two = start_cluster(lab, 2)
    two.impair(drop="qnetd:tcp/5403")
    hashes = etc_hashes(two)
    result = qdevice(two, "setup", QNETD, "--yes", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "refused"
    codes = {f["code"]: f for s in doc["preflight"]["sections"] for f in s["findings"]}
    assert codes["qdevice-port-filtered"]["payload"]["state"] == "filtered"
    assert etc_hashes(two) == hashes
    assert not any(n.path("/etc/corosync/qdevice").exists() for n in two.nodes)


def test_qnetd_killed_after_certificates_rolls_back_byte_for_byte(lab):
    two = start_cluster(lab, 2)
    before = {n.name: (n.path(CONF).read_bytes(), n.path(CONF + ".bak").exists())
              for n in two.nodes}
    node = two.node(1)
    system = RealSystem(root=str(node.root), wrap=node.wrap)
    change = qd.read_setup(system, QDevice(QNETD), LinkTimeouts(verify=15))
    seen = []

    def progress(event) -> None:
        seen.append((event.step_id, event.state))
        if (event.step_id, event.state) == ("import-cert", "applied"):
            os.kill(two.status()["qnetd"]["services"]["qnetd"], signal.SIGKILL)

    with pytest.raises(StepFailed) as failed:
        qd.run_change(system, change, on_progress=progress)
    assert failed.value.step_id == "verify"
    assert not failed.value.undo_failures
    assert ("conf", "undone") in seen and ("node-certdb", "undone") in seen
    for n in two.nodes:
        assert (n.path(CONF).read_bytes(), n.path(CONF + ".bak").exists()) == before[n.name]
        assert not n.path("/etc/corosync/qdevice").exists()
        assert not qdevice_running(two, n.index)
    assert wait(lambda: settled(two, 2, 2, False), 30)
