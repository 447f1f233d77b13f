"""Issue 6's first-boot acceptance: the first-boot script in every node of a 4-node, 2-link lab,
nodes 3 and 4 started 10 s after nodes 1 and 2, ends with a quorate 4-node cluster; and so it
does when runs are killed (SIGKILL, by pid) halfway and started again.

Each node runs iso/pvestrap-firstboot.sh, as the systemd unit does, with the flow's own
argparse entry point (`python -m pvestrap.firstboot`, what the ISO hook carries) under
`python -X importtime`: the import log proves the unattended path never loads typer, rich,
questionary, click, pydantic or scapy. Everything is real: corosync, sshd and ssh between the
nodes, the responders, the probes and the preflight.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import pvestrap.iso
from pvestrap.answers import dumps
from pvestrap.corosync.status import parse_quorum_status
from labtesting import VersionWatcher
from pvestrap.firstboot import secret

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SCRIPT = Path(pvestrap.iso.__file__).with_name("pvestrap-firstboot.sh")
STATE = "/run/pvestrap/firstboot"  # a lab node's own /run (its /var/lib is this machine's)
ARGS = ("--peer-wait 120 --turn-wait 180 --apply-timeout 180 --quorum-timeout 60 "
        "--linger 180 --duration 1")
FORBIDDEN = ("typer", "rich", "questionary", "click", "pydantic", "scapy")
LATE_S = 10.0
TIMEOUT_S = 300.0


@dataclass
class Run:
    index: int
    proc: subprocess.Popen
    out: Path
    err: Path


@pytest.fixture
def runs():
    """Every first boot a test starts; the ones still running at the end are killed."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait()


def start(lab, index: int, answers: Path, folder: Path, runs: list, tag: str = "") -> Run:
    env = {"PVESTRAP_ANSWERS": str(answers), "PVESTRAP_STATE_DIR": STATE,
           "PVESTRAP_FIRSTBOOT": f"{sys.executable} -X importtime -m pvestrap.firstboot",
           "PVESTRAP_FIRSTBOOT_ARGS": ARGS}
    out, err = folder / f"n{index}{tag}.out", folder / f"n{index}{tag}.err"
    with out.open("w") as fout, err.open("w") as ferr:
        proc = lab.popen(index, ["sh", str(SCRIPT)], env=env, stdout=fout, stderr=ferr)
    run = Run(index, proc, out, err)
    runs.append(run)
    return run


def start_all(lab, answers: Path, folder: Path, runs: list) -> dict[int, Run]:
    """Nodes 1 and 2 now, nodes 3 and 4 ten seconds later."""
    current = {i: start(lab, i, answers, folder, runs) for i in (1, 2)}
    time.sleep(LATE_S)
    current.update({i: start(lab, i, answers, folder, runs) for i in (3, 4)})
    return current


def wait_all(current: dict[int, Run], deadline: float) -> dict[int, int | None]:
    codes = {}
    for index, run in sorted(current.items()):
        try:
            codes[index] = run.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            codes[index] = None
    return codes


def tail(run: Run) -> str:
    return f"n{run.index}: " + "\n".join(run.out.read_text().splitlines()[-25:])


def state(lab, index: int, name: str) -> dict | None:
    try:
        return json.loads(lab.node(index).path(f"{STATE}/{name}").read_text())
    except (OSError, ValueError):
        return None


def assert_cluster(lab, plan, current: dict[int, Run], codes: dict[int, int | None]) -> None:
    """Every run ended 0, every node sees a quorate cluster of all four, with its done
    marker, and its saved preflight had no FAIL and reached every peer on every link."""
    for index, run in current.items():
        assert codes[index] == 0, tail(run)
    names = {n.nodeid: n.name for n in plan.nodes}
    for node in plan.nodes:
        index = node.nodeid
        result = lab.exec(index, ["corosync-quorumtool", "-s"], timeout=30)
        status = parse_quorum_status(result.stdout)
        assert status.quorate, result.stdout
        assert {m.nodeid for m in status.nodes_only} == set(names), result.stdout
        done = state(lab, index, "firstboot.done")
        assert done is not None and done["node"] == node.name
        assert done["cluster"] == plan.cluster_name
        assert state(lab, index, "firstboot.json")["phase"] == "applied"
        saved = state(lab, index, "firstboot-preflight.json")
        assert saved["report"]["summary"]["failures"] == 0
        reached = {(r["peer"], r["link"]) for r in saved["measurements"]["udp"]
                   if r["state"] == "open" and not r["legacy"]}
        assert reached == {(names[i], link) for i in names if i != index for link in (0, 1)}


def assert_core_imports_only(runs: list[Run]) -> None:
    pattern = re.compile(r"\|\s+(" + "|".join(FORBIDDEN) + r")(\.|\s*$)", re.M)
    for run in runs:
        log = run.err.read_text()
        assert "import time:" in log, f"n{run.index}: no import log:\n{log[-2000:]}"
        assert not pattern.findall(log), f"n{run.index} imported {set(pattern.findall(log))}"


def lab_with_answers(lab, tmp_path: Path):
    four = lab(nodes=4, links=2)
    four.start("sshd")  # a corosync joiner reads and updates the cluster over SSH
    plan = four.plan()
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(plan))
    secret.ensure(secret.path_for(answers))  # as `pvestrap iso prepare` makes it
    return four, plan, answers


def assert_secret_never_shown(answers: Path, runs: list[Run]) -> None:
    """The cluster's first-boot secret is in no run's output (the journal) and no state file."""
    value = secret.read(secret.path_for(answers)).hex()
    for run in runs:
        assert value not in run.out.read_text().lower() + run.err.read_text().lower()


def test_four_nodes_two_late_end_quorate(lab, runs, tmp_path):
    four, plan, answers = lab_with_answers(lab, tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    with VersionWatcher(four, 1) as versions:
        current = start_all(four, answers, tmp_path, runs)
        codes = wait_all(current, deadline)
    assert_cluster(four, plan, current, codes)
    assert_core_imports_only(runs)
    # The three joiners were all ready when the first of them took n1's join lock: one
    # configuration change for the three (pvestrap.apply.batch), not one each.
    assert versions.seen == [1, 2], [tail(r) for r in current.values()]
    assert_secret_never_shown(answers, runs)

    # A finished node does nothing: the script exits 0 at once, nothing changes.
    before = four.node(1).path("/etc/corosync/corosync.conf").read_bytes()
    again = start(four, 1, answers, tmp_path, runs, tag="-again")
    assert again.proc.wait(timeout=30) == 0
    assert "import time:" not in again.err.read_text()  # the flow did not even start
    assert four.node(1).path("/etc/corosync/corosync.conf").read_bytes() == before


def test_killed_halfway_and_rerun_still_ends_quorate(lab, runs, tmp_path):
    """Four kills, at four different points: n4 in its preflight (local checks, peer wait or
    probes), n2 after its preflight passed (waiting for its turn), n1 in the middle of creating
    (its corosync.conf written), n3 in the middle of joining (as soon as the members list it).
    Each is killed with SIGKILL by pid and started again at once, like a node that reboots.
    When n3 held the lock of a batch, the members list its batched joiners too, none of them
    told: they and n3's rerun each resume, letting the join lock go after their install
    (apply.batch.ReleaseStep)."""
    four, plan, answers = lab_with_answers(lab, tmp_path)
    conf = "/etc/corosync/corosync.conf"
    triggers = {
        4: lambda: (state(four, 4, "firstboot.json") or {}).get("phase") == "started",
        2: lambda: (state(four, 2, "firstboot.json") or {}).get("phase") == "preflight-passed",
        1: lambda: four.node(1).path(conf).exists(),
        # the moment the members list n3: before or just after n3 installed the key (a join
        # killed after it updated the members must resume, not be refused as join-node-exists)
        3: lambda: f"name: {four.node(3).name}\n" in four.node(1).path(conf).read_text(
            errors="replace") if four.node(1).path(conf).exists() else False,
    }
    deadline = time.monotonic() + TIMEOUT_S
    current = {i: start(four, i, answers, tmp_path, runs) for i in (1, 2)}
    late_at = time.monotonic() + LATE_S
    killed = {}
    while triggers and time.monotonic() < deadline:
        if late_at and time.monotonic() >= late_at:
            current.update({i: start(four, i, answers, tmp_path, runs) for i in (3, 4)})
            late_at = 0.0
        for index in [i for i in triggers if i in current and triggers[i]()]:
            run = current[index]
            os.kill(run.proc.pid, signal.SIGKILL)
            killed[index] = run.proc.wait(timeout=10)
            current[index] = start(four, index, answers, tmp_path, runs, tag="-rerun")
            del triggers[index]
        time.sleep(0.02)
    assert not triggers, f"never reached the kill points of {sorted(triggers)}"
    assert killed == {i: -signal.SIGKILL for i in (1, 2, 3, 4)}
    codes = wait_all(current, deadline)
    assert_cluster(four, plan, current, codes)
    assert_core_imports_only(runs)
