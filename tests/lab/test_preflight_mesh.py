"""Issue 4's acceptance: a mesh preflight over a lab with known faults names exactly those faults.

4 nodes, 2 links. n2 has +3 ms on link0 (eth0), n3 DROPs UDP 5405 (link0: filtered) and REJECTs
UDP 5406 (link1: closed), n4's hostname resolves to 127.0.1.1 and its clock is 2 s ahead, n1's
link1 NIC (eth1) has MTU 1200. Every node runs the real agent (responder + checks + probes) in
its own namespaces; the orchestrator merges one report.
"""

from __future__ import annotations

import sys

import pytest

from pvestrap import answers, mesh
from pvestrap.findings import Severity

pytestmark = pytest.mark.lab


def _run(lb, duration=2.0, debug=True):
    """debug=False runs the agent as the mesh over SSH does (`pvestrap preflight --agent`: no
    CLI in front of it, pvestrap.launch)."""
    plan = lb.plan()
    text = answers.dumps(plan)

    def launcher(node, agent):
        return lb.command(node, [sys.executable, "-m", "pvestrap",
                                 *(["--debug"] if debug else []), *agent[1:]])

    results = mesh.run_mesh(plan, text, duration_s=duration, launcher=launcher, timeout_s=90)
    for r in results:
        assert r.error is None, (r.node, r.error)
    return plan, results, mesh.merge(plan, results)


def _fails(report):
    return {(f.code, f.subject) for f in report.findings if f.severity is Severity.FAIL}


def test_clean_lab_passes_everything(lab):
    lb = lab(nodes=3, links=2)
    lb.start("sshd")  # joiners of the corosync backend need TCP 22 to the creating node
    _plan, _results, report = _run(lb, duration=1.0, debug=False)
    assert _fails(report) == set(), sorted(_fails(report))
    matrix = report.matrices["link0"]
    assert all(matrix["state"][i][j] == "open" for i in range(3) for j in range(3) if i != j)
    # each pair's round trip is sampled from one of its ends (its latency-ok), and the other
    # end's ports answered a few probes (latency-by-peer, naming who sampled it)
    judged: dict[tuple[frozenset, int], list[str]] = {}
    for f in report.findings:
        if f.code in ("latency-ok", "latency-by-peer"):
            me = f.subject.split("->")[0]
            judged.setdefault((frozenset((me, f.payload["peer"])), f.payload["link"]),
                              []).append(f.code)
    assert len(judged) == 3 * 2 and all(sorted(codes) == ["latency-by-peer", "latency-ok"]
                                        for codes in judged.values()), judged


def test_impaired_lab_names_exactly_the_injected_problems(lab):
    lb = lab(nodes=4, links=2, delay="n2:eth0=3ms", drop="n3:udp/5405", reject="n3:udp/5406",
             hosts="n4=loopback", clock="n4=+2s", mtu="n1:eth1=1200")
    lb.start("sshd")
    plan, results, report = _run(lb)
    n = [node.name for node in plan.nodes]
    fails = report.findings
    by_code: dict[str, list] = {}
    for f in fails:
        if f.severity is Severity.FAIL:
            by_code.setdefault(f.code, []).append(f)

    # filtered (DROP) on n3's link0 port and closed (REJECT) on n3's link1 port, from every peer
    filtered = {(f.payload.get("peer"), f.payload.get("link"))
                for f in by_code.pop("link-port-filtered", [])}
    closed = {(f.payload.get("peer"), f.payload.get("link"))
              for f in by_code.pop("link-port-closed", [])}
    assert filtered == {(n[2], 0)}, filtered
    assert closed == {(n[2], 1)}, closed

    # +3 ms on n2's eth0 delays frames leaving AND entering it (the lab's contract: +1 ms gives
    # ping 2.0 ms), so every round trip with n2 on link0 gains 6 ms; nothing else is slow.
    high = by_code.pop("latency-high", [])
    pairs = {frozenset((f.subject.split("->")[0], f.payload["peer"])) for f in high}
    assert all(n[1] in pair for pair in pairs), pairs
    assert {frozenset((n[1], n[0])), frozenset((n[1], n[3]))} <= pairs, pairs
    for f in high:
        assert f.payload["link"] == 0
        assert abs(f.payload["median_ms"] - 6.0) <= 0.3, f.payload

    # n4 resolves its own name to 127.0.1.1
    loop = by_code.pop("hostname-loopback", [])
    assert {f.subject.split(":")[0] for f in loop} == {n[3]}

    # n4's clock is 2 s ahead: every pair with n4 is over the 1 s FAIL threshold
    clock = by_code.pop("clock-offset-high", [])
    assert clock and all(n[3] in (f.subject or "") for f in clock)
    for f in clock:
        assert 1.7 <= abs(f.payload["offset_s"]) <= 2.3, f.payload

    # n1's link1 NIC has MTU 1200, the rest 1500: n1 can send at most 1200 on link1
    mtu = [f for f in report.findings if f.code == "mtu-asymmetric"]
    assert mtu and all(f.payload.get("link") == 1 for f in mtu)

    assert not by_code, {k: [f.subject for f in v] for k, v in by_code.items()}
