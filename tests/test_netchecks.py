"""The network checks' verdicts on given measurements: codes, severities, subjects, payloads.

The measurements are written out here (the prober itself is tested against real sockets in
test_probe_prober.py and in the lab tests); what is under test is the judging.
"""

from __future__ import annotations

import dataclasses

import pytest

from pvestrap.checks import prober as P
from pvestrap.checks.addresses import AddressCheck
from pvestrap.checks.base import Check, Context
from pvestrap.checks.clockpair import ClockPairCheck
from pvestrap.checks.latency import LatencyCheck, stats
from pvestrap.checks.mtu import MtuCheck
from pvestrap.checks.ports import PortsCheck
from pvestrap.checks.tcp import TcpCheck
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node, Preflight, Thresholds
from pvestrap.preflight import network_checks


def port(peer="pve2", link=0, port_=5405, state="open", rtts=(0.2,) * 20, sent=20,
         offset=0.0, legacy=False, error=None) -> P.PortResult:
    received = len(rtts) if state == "open" else 0
    return P.PortResult(peer, link, port_, f"10.254.{link}.2", f"10.254.{link}.1", legacy, state,
                        sent, received, tuple(rtts) if state == "open" else (),
                        offset if state == "open" else None,
                        min(rtts) if state == "open" and rtts else None, error)


def ctx(plan=None, **parts) -> Context:
    found = P.Measurements("pve1", 0.0, 1.0, **{k: tuple(v) for k, v in parts.items()})
    return Context(plan=plan, node="pve1", probes={P.PROBES_KEY: found})


def codes(findings):
    return [(f.code, f.severity, f.subject) for f in findings]


def test_every_network_check_follows_the_protocol_and_skips_without_probes():
    empty = Context(node="pve1")
    checks = network_checks()
    assert len({c.id for c in checks}) == len(checks)
    for check in checks:
        assert isinstance(check, Check)
        found = check.run(empty)
        assert found and {f.severity for f in found} == {Severity.SKIP}


def test_ports_open_closed_filtered_and_legacy():
    found = PortsCheck().run(ctx(udp=[
        port(), port(link=1, port_=5406, state="closed"), port(port_=5404, legacy=True),
        port(peer="pve3", state="filtered"), port(peer="pve3", port_=5404, legacy=True,
                                                 state="filtered"),
        port(peer="pve4", state="unreachable"), port(peer="pve5", state="error",
                                                     error="source address x is not on this node"),
    ]))
    assert codes(found) == [
        ("link-port-open", Severity.PASS, "pve1->pve2/link0:5405"),
        ("link-port-closed", Severity.FAIL, "pve1->pve2/link1:5406"),
        ("legacy-port-open", Severity.INFO, "pve1->pve2/link0:5404"),
        ("link-port-filtered", Severity.FAIL, "pve1->pve3/link0:5405"),
        ("legacy-port-filtered", Severity.WARN, "pve1->pve3/link0:5404"),
        ("link-port-unreachable", Severity.FAIL, "pve1->pve4/link0:5405"),
        ("link-port-unmeasured", Severity.SKIP, "pve1->pve5/link0:5405"),
    ]
    assert found[1].payload["port"] == 5406 and found[1].payload["peer"] == "pve2"
    assert all(f.remedy for f in found if f.severity in (Severity.WARN, Severity.FAIL))
    assert "5406" in found[1].remedy and "udp dport 5405" in found[3].remedy


def test_latency_ok_payload_has_the_statistics():
    rtts = [0.1, 0.3, 0.2, 0.25, 0.15] * 4
    (f,) = LatencyCheck().run(ctx(udp=[port(rtts=rtts)]))
    assert (f.code, f.severity, f.subject) == ("latency-ok", Severity.PASS, "pve1->pve2/link0")
    assert f.payload["min_ms"] == 0.1 and f.payload["max_ms"] == 0.3
    assert f.payload["median_ms"] == 0.2 and f.payload["p99_ms"] == 0.3
    assert f.payload["samples"] == 20 and f.payload["loss_pct"] == 0.0 and f.payload["port"] == 5405


def test_a_path_the_peer_samples_is_shown_not_judged():
    """Few samples (the mesh: the peer samples this pair), slow and lossy: INFO naming who
    judges, no latency-high, jitter or packet-loss from this side."""
    few = dataclasses.replace(port(rtts=(9.0, 0.2, 9.5), sent=4), peer_samples=True)
    (f,) = LatencyCheck().run(ctx(udp=[few]))
    assert (f.code, f.severity, f.subject) == ("latency-by-peer", Severity.INFO,
                                               "pve1->pve2/link0")
    assert f.payload["sampled_by"] == "pve2" and f.payload["samples"] == 3
    assert f.payload["sent"] == 4 and f.payload["median_ms"] == 9.0
    assert "pve2 samples this pair" in f.message


def test_latency_high_fails_above_the_threshold_and_cites_the_guidance():
    (f,) = LatencyCheck().run(ctx(udp=[port(rtts=[3.0, 3.1, 3.05, 2.95] * 5)]))
    assert (f.code, f.severity) == ("latency-high", Severity.FAIL)
    assert f.payload["median_ms"] == pytest.approx(3.025) and f.payload["limit_ms"] == 2.0
    assert "5 ms" in f.message and "10 ms" in f.message and f.remedy


def test_thresholds_come_from_the_plan():
    plan = ClusterPlan("c", (Node("pve1", 1, {0: "10.254.0.1"}),), (Link(0),),
                       preflight=Preflight(Thresholds(latency_fail_ms=5.0)))
    (f,) = LatencyCheck().run(ctx(plan, udp=[port(rtts=[3.0] * 20)]))
    assert f.code == "latency-ok" and f.payload["limit_ms"] == 5.0


def test_jitter_and_loss():
    jittery = [0.2, 1.4] * 10
    found = LatencyCheck().run(ctx(udp=[port(rtts=jittery, sent=21)]))
    assert [(f.code, f.severity) for f in found] == [("latency-jitter", Severity.WARN),
                                                     ("packet-loss", Severity.WARN)]
    assert found[0].payload["jitter_ms"] == pytest.approx(1.2)
    assert found[1].payload["loss_pct"] == pytest.approx(4.76)
    (lossy,) = LatencyCheck().run(ctx(udp=[port(rtts=[0.2] * 10, sent=20)]))
    assert (lossy.code, lossy.severity, lossy.payload["loss_pct"]) == \
        ("packet-loss", Severity.FAIL, 50.0)


def test_latency_prefers_the_link_port_then_legacy_then_icmp():
    found = LatencyCheck().run(ctx(
        udp=[port(state="filtered"), port(port_=5404, legacy=True, rtts=[0.4] * 20),
             port(link=1, port_=5406, state="filtered"),
             port(link=1, port_=5404, legacy=True, state="filtered"),
             port(peer="pve3", state="closed")],
        icmp=[P.IcmpResult("pve2", 1, "10.254.1.2", 4, 4, (0.3, 0.3, 0.5, 0.3))]))
    assert codes(found) == [("latency-ok", Severity.PASS, "pve1->pve2/link0"),
                            ("latency-icmp", Severity.INFO, "pve1->pve2/link1"),
                            ("latency-unmeasured", Severity.SKIP, "pve1->pve3/link0")]
    assert found[0].payload["port"] == 5404 and found[1].payload["median_ms"] == 0.3


def test_stats_percentile_and_jitter():
    values = [float(i) for i in range(1, 101)]
    s = stats(values)
    assert (s["min_ms"], s["median_ms"], s["p99_ms"], s["max_ms"]) == (1.0, 50.5, 99.0, 100.0)
    assert s["jitter_ms"] == 1.0
    assert stats([0.5])["jitter_ms"] == 0.0


def mtu(forward, reverse, local=1500, peer=1500, address="10.254.1.2") -> P.MtuResult:
    return P.MtuResult("pve2", 1, 5406, address, local, peer, forward, reverse)


def test_mtu_ok_asymmetric_and_below_minimum():
    found = MtuCheck().run(ctx(mtu=[mtu(1472, 1472)]))
    assert codes(found) == [("mtu-ok", Severity.PASS, "pve1->pve2/link1")]
    assert found[0].payload["mtu"] == 1500

    (ends,) = MtuCheck().run(ctx(mtu=[mtu(1172, 1172, local=1200, peer=1500)]))
    assert (ends.code, ends.severity) == ("mtu-asymmetric", Severity.WARN)
    assert (ends.payload["mtu"], ends.payload["local_mtu"], ends.payload["peer_mtu"]) == \
        (1200, 1200, 1500)
    (ways,) = MtuCheck().run(ctx(mtu=[mtu(1472, 1172)]))
    assert ways.code == "mtu-asymmetric" and ways.payload["reverse_mtu"] == 1200

    low = MtuCheck().run(ctx(mtu=[mtu(524, 524, local=552, peer=552)]))
    assert codes(low) == [("mtu-below-knet-minimum", Severity.FAIL, "pve1->pve2/link1")]
    assert low[0].payload["mtu"] == 552 and low[0].payload["knet_minimum"] == 576
    v6 = MtuCheck().run(ctx(mtu=[mtu(1352, 1352, local=1400, peer=1400, address="fd5a::2")]))
    assert codes(v6) == [("mtu-ok", Severity.PASS, "pve1->pve2/link1")]
    v6low = MtuCheck().run(ctx(mtu=[mtu(1152, 1152, local=1200, peer=1200, address="fd5a::2")]))
    assert v6low[0].code == "mtu-below-knet-minimum" and v6low[0].payload["knet_minimum"] == 1280


def test_mtu_unmeasured_when_nothing_answered():
    found = MtuCheck().run(ctx(udp=[port(state="filtered")],
                               mtu=[P.MtuResult("pve3", 0, 5405, "10.254.0.3", 1500, 0, None, None,
                                                "no probe got an answer")]))
    assert codes(found) == [("mtu-unmeasured", Severity.SKIP, "pve1->pve3/link0"),
                            ("mtu-unmeasured", Severity.SKIP, "pve1->pve2/link0")]


def test_clock_offset_uses_the_least_delayed_sample_per_peer():
    a = port(offset=2.0004, rtts=[0.5] * 20)
    b = port(port_=5404, legacy=True, offset=2.0001, rtts=[0.2] * 20)
    found = ClockPairCheck().run(ctx(udp=[a, b, port(peer="pve3", offset=-0.3),
                                          port(peer="pve4", offset=0.01),
                                          port(peer="pve5", state="filtered")]))
    assert codes(found) == [("clock-offset-high", Severity.FAIL, "pve1->pve2"),
                            ("clock-offset-warn", Severity.WARN, "pve1->pve3"),
                            ("clock-offset-ok", Severity.PASS, "pve1->pve4"),
                            ("clock-offset-unmeasured", Severity.SKIP, "pve1->pve5")]
    assert found[0].payload["offset_s"] == 2.0001 and found[0].payload["port"] == 5404
    assert found[1].payload["offset_s"] == -0.3
    assert found[0].remedy and found[1].remedy


def test_tcp_states():
    found = TcpCheck().run(ctx(tcp=[
        P.TcpResult("pve1", "10.254.0.1", 8006, "join-api", "open", 0.3),
        P.TcpResult("pve1", "10.254.0.1", 22, "join-ssh", "closed", error="connection refused"),
        P.TcpResult("qdevice", "10.254.0.9", 5403, "qdevice", "filtered", error="no answer"),
    ]))
    assert codes(found) == [("tcp-port-open", Severity.PASS, "pve1->pve1:8006/tcp"),
                            ("tcp-port-closed", Severity.FAIL, "pve1->pve1:22/tcp"),
                            ("tcp-port-filtered", Severity.FAIL, "pve1->qdevice:5403/tcp")]
    assert found[2].payload == {"name": "qdevice", "address": "10.254.0.9", "port": 5403,
                                "purpose": "qdevice", "connect_ms": None}
    (nothing,) = TcpCheck().run(ctx())
    assert (nothing.code, nothing.severity) == ("tcp-unmeasured", Severity.SKIP)


def test_address_states():
    found = AddressCheck().run(ctx(dad=[
        P.DadResult("10.254.0.1", "eth0", 0, "assigned"),
        P.DadResult("10.254.1.1", "eth1", 1, "in-use", "02:00:00:00:00:07"),
        P.DadResult("10.254.2.1", "eth2", 2, "free"),
        P.DadResult("10.254.3.1", None, 3, "skipped", error="no interface"),
    ]))
    assert codes(found) == [("address-assigned", Severity.PASS, "pve1/link0 10.254.0.1"),
                            ("address-in-use", Severity.FAIL, "pve1/link1 10.254.1.1"),
                            ("address-free", Severity.PASS, "pve1/link2 10.254.2.1"),
                            ("address-unchecked", Severity.SKIP, "pve1/link3 10.254.3.1")]
    assert found[1].payload["mac"] == "02:00:00:00:00:07" and found[1].remedy


def test_checks_accept_the_json_form_of_measurements():
    found = P.Measurements("pve1", 0.0, 1.0, udp=(port(),))
    as_json = Context(node="pve1", probes={P.PROBES_KEY: found.to_dict()})
    assert codes(PortsCheck().run(as_json)) == [("link-port-open", Severity.PASS,
                                                 "pve1->pve2/link0:5405")]
