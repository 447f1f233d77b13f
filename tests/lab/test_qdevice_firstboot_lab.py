"""First boot of a 2-node lab whose answer file has `[qdevice]`: both nodes run the unattended
flow at once (`python -m pvestrap.firstboot`, what the ISO hook runs) and end as a
quorate 2-node cluster with a working QDevice, set up by the node that joined last. Real
corosync, corosync-qnetd (the lab's qnetd host), corosync-qdevice, sshd; no mocks.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest

from pvestrap.answers import dumps
from pvestrap.firstboot import secret
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.qdevice import QDevice

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STATE = "/run/pvestrap/firstboot"
ARGS = ["--peer-wait", "120", "--turn-wait", "180", "--apply-timeout", "180",
        "--quorum-timeout", "60", "--linger", "120", "--duration", "1"]


def test_first_boot_sets_up_the_qdevice_after_the_last_join(lab, tmp_path):
    two = lab(nodes=2, qnetd=True)
    two.start("sshd")
    plan = dataclasses.replace(two.plan(), qdevice=QDevice("10.254.0.100"))
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(plan))
    secret.ensure(secret.path_for(answers))  # the cluster's first-boot secret, 0600
    runs = {}
    for index in (1, 2):
        out = (tmp_path / f"n{index}.out").open("w")
        runs[index] = two.popen(index, [sys.executable, "-m", "pvestrap.firstboot",
                                        "--answers", str(answers), "--state-dir", STATE, *ARGS],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        codes = {i: p.wait(timeout=400) for i, p in runs.items()}
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = {i: (tmp_path / f"n{i}.out").read_text() for i in runs}
    assert codes == {1: 0, 2: 0}, "\n".join(f"n{i}: {t[-3000:]}" for i, t in logs.items())
    assert "setting up the QDevice" in logs[2] and "setting up the QDevice" not in logs[1]

    deadline = time.monotonic() + 30
    while True:
        statuses = {i: parse_quorum_status(two.exec(i, ["corosync-quorumtool", "-s"]).stdout)
                    for i in (1, 2)}
        if all("Qdevice" in s.flags and s.total_votes == 3 for s in statuses.values()) or \
                time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for index, status in statuses.items():
        assert status.quorate and "Qdevice" in status.flags, index
        assert status.expected_votes == 3 and status.total_votes == 3
        assert all("V" in m.qdevice.split(",") for m in status.nodes_only)
        assert two.exec(index, ["corosync-qdevice-tool", "-s"]).returncode == 0
