"""Issue 14 item 4: a clock offset given to a running lab reaches what is started afterwards.

`lab impair --clock n3=+1.5s` after sshd and chronyd are already running: both are restarted
with the new clock, a process started before the change is listed by `lab status` as running with
the old one, and `preflight --mesh` from n1, over the lab's real sshd and with the default
`pvestrap` remote command (no --remote-command: the SSH sessions find the lab's pvestrap),
measures n3 1.5 s ahead of the others, within 10 ms.
"""

from __future__ import annotations

import json
import sys

import pytest

from pvestrap import answers

pytestmark = pytest.mark.lab


def _offsets(report: dict) -> dict[tuple[str, str], float]:
    out = {}
    for f in (f for section in report["sections"] for f in section["findings"]):
        if f["code"].startswith("clock-offset-") and "offset_s" in f.get("payload", {}):
            me, _, peer = f["subject"].partition("->")
            out[(me, peer)] = f["payload"]["offset_s"]
    return out


def test_clock_set_on_a_running_lab_reaches_ssh_sessions_and_the_mesh(lab, tmp_path):
    three = lab(nodes=3, links=1)
    three.start("sshd")
    three.start("chrony", ["n3"])
    before = three.status()["nodes"][2]["services"]
    sleeper = three.popen("n3", [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        three.impair(clock="n3=+1.5s")
        n3 = three.status()["nodes"][2]
        assert set(n3["services"]) == {"sshd", "chrony"}
        assert n3["services"]["sshd"] != before["sshd"], "sshd kept its old clock"
        assert n3["services"]["chrony"] != before["chrony"], "chronyd kept its old clock"
        stale = {p["pid"]: p["clock"] for p in n3["stale"]}
        assert stale == {sleeper.pid: "+0"}, n3["stale"]
        assert all(not node["stale"] for node in three.status()["nodes"][:2])
    finally:
        sleeper.kill()
        sleeper.wait()

    path = tmp_path / "cluster.toml"
    path.write_text(answers.dumps(three.plan()))
    out = three.exec("n1", [sys.executable, "-m", "pvestrap", "preflight", "--mesh", "--json",
                            "--answers", str(path), "--duration", "1"], timeout=180)
    assert out.stdout.startswith("{"), out.stdout[-2000:] + out.stderr[-2000:]
    offsets = _offsets(json.loads(out.stdout))
    names = [node.name for node in three.plan().nodes]
    for me in names[:2]:
        assert abs(offsets[(me, names[2])] - 1.5) <= 0.010, offsets
        assert abs(offsets[(names[2], me)] + 1.5) <= 0.010, offsets
    assert abs(offsets[(names[0], names[1])]) <= 0.010, offsets
    assert out.returncode == 1  # 1.5 s is over the 1 s FAIL threshold
