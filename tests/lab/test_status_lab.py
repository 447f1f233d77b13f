"""`pvestrap status` inside a node of a real 3-node, 2-link corosync lab cluster.

First everything is connected and quorate; then nftables on n3 drops UDP 5406 (link1's port),
and n1's report must name exactly that link and peer as down once knet notices.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]


def status(lab, node, *args) -> tuple[int, dict]:
    out = lab.exec(node, [*PVESTRAP, "status", "--json", *args], timeout=60)
    assert out.stdout.startswith("{"), out.stderr
    return out.returncode, json.loads(out.stdout)


def findings(report: dict) -> list[dict]:
    return [f for s in report["sections"] for f in s["findings"]]


def by_code(report: dict, code: str) -> list[dict]:
    return [f for f in findings(report) if f["code"] == code]


def wait_status(lab, node, done, timeout: float, *args) -> tuple[int, dict]:
    """Run status until DONE(report) holds (knet needs a few seconds to notice a change)."""
    deadline = time.monotonic() + timeout
    while True:
        rc, report = status(lab, node, *args)
        if done(report) or time.monotonic() > deadline:
            return rc, report
        time.sleep(0.5)


def healthy(report: dict) -> bool:
    links = by_code(report, "knet-link-connected")
    return (bool(by_code(report, "cluster-quorate")) and len(links) == 4
            and all(f["payload"]["latency_samples"] > 0 for f in links)
            and report["summary"]["failures"] == 0 and report["summary"]["warnings"] == 0)


def test_status_reports_a_healthy_cluster_then_exactly_the_dropped_link(lab, tmp_path):
    three = lab(nodes=3, links=2)
    three.write_corosync()
    three.start("corosync")
    n2, n3 = three.node(2).name, three.node(3).name

    rc, report = wait_status(three, "n1", healthy, 30.0, "--expect-nodes", "3")
    assert rc == 0 and healthy(report), json.dumps(report, indent=1)
    quorate = by_code(report, "cluster-quorate")[0]["payload"]
    assert (quorate["expected_votes"], quorate["total_votes"], quorate["nodes"]) == (3, 3, 3)
    assert by_code(report, "members-complete")[0]["payload"]["members"] == \
        [n.name for n in three.nodes]
    links = {(f["payload"]["peer"], f["payload"]["link"]): f["payload"]
             for f in by_code(report, "knet-link-connected")}
    assert sorted(links) == [(n2, 0), (n2, 1), (n3, 0), (n3, 1)]
    assert links[(n3, 1)]["remote_address"] == "10.254.1.3"
    assert all(0 < p["latency_ave_ms"] < 50 for p in links.values())
    row = report["matrices"]["link1"]
    assert row["nodes"] == [n.name for n in three.nodes]
    assert row["state"][0] == [None, "connected", "connected"]
    assert all(isinstance(v, float) for v in row["rtt_ms"][0][1:])

    three.impair(drop="n3:udp/5406")
    rc, report = wait_status(three, "n1", lambda r: bool(by_code(r, "knet-link-down")), 15.0)
    assert rc == 1
    down = [(f["subject"], f["severity"]) for f in findings(report) if f["severity"] == "fail"]
    assert down == [(f"{n3}/link1", "fail")], json.dumps(report, indent=1)
    assert by_code(report, "knet-link-down")[0]["payload"]["state"] == "disconnected"
    assert by_code(report, "cluster-quorate"), "link0 still carries the cluster"
    assert sorted(f["subject"] for f in by_code(report, "knet-link-connected")) == \
        sorted([f"{n2}/link0", f"{n2}/link1", f"{n3}/link0"])
    assert report["matrices"]["link1"]["state"][0] == [None, "connected", "disconnected"]

    html = tmp_path / "status.html"
    inside = three.node(1).path("/tmp") / html.name
    out = three.exec("n1", [*PVESTRAP, "status", "--html", f"/tmp/{html.name}"], timeout=60)
    assert out.returncode == 1 and "FAIL: " in out.stdout and "[knet-link-down]" in out.stdout
    assert 'data-link="link1"' in inside.read_text()
