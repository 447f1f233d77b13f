"""The network checks against real impairments in the lab (pvestrap.lab's `lab` fixture).

Each test starts real `pvestrap responder` processes inside lab nodes, runs the real prober in
another node (`python -m pvestrap.checks.prober`, JSON in and out, as the mesh mode will), and
judges the measurements with the real checks. The impairments are the lab's: nftables DROP and
REJECT inside a node, a NIC's MTU, libfaketime for a node's clock, the forwarder's delay.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import select
import statistics
import subprocess
import sys
import time

import pytest

from pvestrap.checks import prober as P
from pvestrap.checks.base import Context
from pvestrap.checks.probe import TOKEN_ENV
from pvestrap.findings import Severity
from pvestrap.preflight import network_checks

pytestmark = pytest.mark.lab

CLI = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())"]
TOKEN = "lab-run-" + secrets.token_hex(12)
QUICK = P.ProbeSettings(duration_s=1.0, interval_s=0.05, reply_timeout_s=0.5, icmp=False)


@pytest.fixture
def responders(request):
    """responders(lab, nodes, ports=...) starts `pvestrap responder` in each node; all killed
    at the end. Returns once every port of every node is answering (or sniffed)."""
    started: list[subprocess.Popen] = []

    def start(lab, nodes, ports=(5404, 5405, 5406), extra=()):
        for node in nodes:
            argv = CLI + ["responder", "--ttl", "120", *extra]
            for port in ports:
                argv += ["-p", str(port)]
            proc = lab.popen(node, argv, env={TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE)
            started.append(proc)
            _wait_listening(proc, 2 * len(ports))
        return started

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def _wait_listening(proc: subprocess.Popen, endpoints: int, timeout: float = 30.0) -> list[str]:
    """Read the responder's log (raw fd reads: select() cannot see Python's buffer) until every
    endpoint reported in."""
    text = ""
    deadline = time.monotonic() + timeout
    fd = proc.stderr.fileno()
    while sum(w in line for line in text.splitlines()
              for w in ("listening", "raw socket", "skipping")) < endpoints:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"responder did not start: {text}"
        chunk = os.read(fd, 65536).decode()
        assert chunk, f"responder exited: {text}"
        text += chunk
    return text.splitlines()


def probe_from(lab, node, request: P.ProbeRequest) -> P.Measurements:
    done = lab.exec(node, [sys.executable, "-m", "pvestrap.checks.prober"],
                    input=json.dumps(request.to_dict()), env={TOKEN_ENV: TOKEN}, timeout=120)
    assert done.returncode == 0, done.stderr
    return P.Measurements.from_dict(json.loads(done.stdout))


def plan_request(lab, index: int, settings=QUICK, tcp=False) -> tuple[P.ProbeRequest, object]:
    """What node INDEX measures for the lab's plan; TCP to the join target only when asked
    (no lab node runs pveproxy or sshd unless a test starts one)."""
    plan = lab.plan()
    req = P.request_from_plan(plan, lab.node(index).name, settings)
    return (req if tcp else dataclasses.replace(req, tcp=())), plan


def judge(found: P.Measurements, plan=None):
    ctx = Context(plan=plan, node=found.node, probes={P.PROBES_KEY: found})
    return [f for check in network_checks() for f in check.run(ctx)]


def by_code(findings, code: str) -> dict[str, object]:
    return {f.subject: f for f in findings if f.code == code}


def failing(findings) -> set[tuple[str, str]]:
    return {(f.code, f.subject) for f in findings if f.severity is Severity.FAIL}


def test_drop_is_filtered_and_reject_is_closed(lab, responders):
    two = lab(nodes=2, links=2, drop="n2:udp/5405", reject="n2:udp/5406")
    responders(two, ["n2"])
    req, plan = plan_request(two, 1)
    findings = judge(probe_from(two, "n1", req), plan)
    n1, n2 = two.node(1).name, two.node(2).name
    assert failing(findings) == {("link-port-filtered", f"{n1}->{n2}/link0:5405"),
                                 ("link-port-closed", f"{n1}->{n2}/link1:5406")}
    filtered = by_code(findings, "link-port-filtered")[f"{n1}->{n2}/link0:5405"]
    assert filtered.payload["received"] == 0 and filtered.payload["sent"] == QUICK.count
    assert set(by_code(findings, "legacy-port-open")) == {f"{n1}->{n2}/link0:5404",
                                                          f"{n1}->{n2}/link1:5404"}
    # latency still measured, from 5404, where the link's own port is blocked
    ok = by_code(findings, "latency-ok")
    assert ok[f"{n1}->{n2}/link0"].payload["port"] == 5404


def test_mtu_1200_on_one_end_is_found_from_both_ends_and_flagged(lab, responders):
    two = lab(nodes=2, links=2, mtu="n1:eth1=1200")
    responders(two, ["n1", "n2"])
    n1, n2 = two.node(1).name, two.node(2).name
    for me, peer, local, remote in ((1, n2, 1200, 1500), (2, n1, 1500, 1200)):
        req, plan = plan_request(two, me)
        found = probe_from(two, f"n{me}", req)
        findings = judge(found, plan)
        name = two.node(me).name
        flagged = by_code(findings, "mtu-asymmetric")
        assert set(flagged) == {f"{name}->{peer}/link1"}
        payload = flagged[f"{name}->{peer}/link1"].payload
        assert payload["mtu"] == 1200 and payload["reverse_payload"] == 1172
        if local == 1200:
            assert payload["forward_payload"] == 1172  # our own kernel refuses more (EMSGSIZE)
        else:  # veth accepts a frame up to MTU + 4 (VLAN slack) on receive: 1204 gets through
            assert 1172 <= payload["forward_payload"] <= 1176
        assert (payload["local_mtu"], payload["peer_mtu"]) == (local, remote)
        assert by_code(findings, "mtu-ok")[f"{name}->{peer}/link0"].payload["mtu"] == 1500
        assert not failing(findings)


def test_mtu_below_knets_minimum_fails(lab, responders):
    two = lab(nodes=2, links=1, mtu=["n1:eth0=552", "n2:eth0=552"])
    responders(two, ["n2"], ports=(5404, 5405))
    req, plan = plan_request(two, 1)
    findings = judge(probe_from(two, "n1", req), plan)
    low = by_code(findings, "mtu-below-knet-minimum")
    (subject,) = low
    assert low[subject].payload["mtu"] == 552 and low[subject].payload["forward_payload"] == 524


def test_clock_two_seconds_ahead_is_measured(lab, responders):
    three = lab(nodes=3, links=1, clock="n3=+2s")
    responders(three, ["n2", "n3"], ports=(5404, 5405))
    req, plan = plan_request(three, 1)
    findings = judge(probe_from(three, "n1", req), plan)
    n1, n2, n3 = (three.node(i).name for i in (1, 2, 3))
    high = by_code(findings, "clock-offset-high")
    assert set(high) == {f"{n1}->{n3}"}
    assert high[f"{n1}->{n3}"].payload["offset_s"] == pytest.approx(2.0, abs=0.02)
    ok = by_code(findings, "clock-offset-ok")
    assert abs(ok[f"{n1}->{n2}"].payload["offset_s"]) < 0.005
    assert failing(findings) == {("clock-offset-high", f"{n1}->{n3}")}


def test_injected_delay_is_measured_like_ping_does(lab, responders):
    two = lab(nodes=2, links=2, delay="n2:eth0=1.5ms")
    responders(two, ["n2"])
    settings = P.ProbeSettings(duration_s=2.0, interval_s=0.05, icmp=False)
    req, plan = plan_request(two, 1, settings)
    found = probe_from(two, "n1", req)
    ping = two.exec("n1", ["ping", "-q", "-c", "40", "-i", "0.05", "10.254.0.2"]).stdout
    findings = judge(found, plan)
    n1, n2 = two.node(1).name, two.node(2).name
    high = by_code(findings, "latency-high")[f"{n1}->{n2}/link0"]
    assert high.payload["median_ms"] == pytest.approx(3.0, abs=0.3)  # 1.5 ms out, 1.5 back
    ping_avg = float(ping.rsplit("=", 1)[1].split("/")[1])
    assert high.payload["median_ms"] == pytest.approx(ping_avg, abs=0.3)
    assert by_code(findings, "latency-ok")[f"{n1}->{n2}/link1"].payload["median_ms"] < 1.0
    assert failing(findings) == {("latency-high", f"{n1}->{n2}/link0")}


def test_icmp_second_opinion_where_udp_is_dropped(lab):
    two = lab(nodes=2, links=1, drop=["n2:udp/5405", "n2:udp/5404"])
    settings = P.ProbeSettings(duration_s=0.5, reply_timeout_s=0.5, icmp_count=4)
    req, plan = plan_request(two, 1, settings)
    findings = judge(probe_from(two, "n1", req), plan)
    n1, n2 = two.node(1).name, two.node(2).name
    icmp = by_code(findings, "latency-icmp")[f"{n1}->{n2}/link0"]
    assert icmp.severity is Severity.INFO and icmp.payload["samples"] == 4


def test_tcp_open_closed_filtered(lab):
    two = lab(nodes=2, links=1, drop="n1:tcp/5403")
    listener = two.popen("n1", [sys.executable, "-c",
                                "import socket,time; s=socket.socket(); "
                                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                                "s.bind(('10.254.0.1', 8006)); s.listen(); "
                                "print('up', flush=True); "
                                "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "up"
        req, plan = plan_request(two, 2, P.ProbeSettings(tcp_timeout_s=1.0, icmp=False), tcp=True)
        assert [(t.port, t.purpose) for t in req.tcp] == [(22, "join-ssh")]  # corosync backend
        req = P.ProbeRequest(req.node, (), req.tcp + (
            P.TcpTarget(two.node(1).name, "10.254.0.1", 8006, "join-api"),
            P.TcpTarget("qdevice", "10.254.0.1", 5403, "qdevice"),), (), req.settings)
        findings = judge(probe_from(two, "n2", req), plan)
    finally:
        listener.kill()
        listener.wait()
    n1, n2 = two.node(1).name, two.node(2).name
    assert set(by_code(findings, "tcp-port-open")) == {f"{n2}->{n1}:8006/tcp"}
    assert set(by_code(findings, "tcp-port-closed")) == {f"{n2}->{n1}:22/tcp"}
    assert set(by_code(findings, "tcp-port-filtered")) == {f"{n2}->qdevice:5403/tcp"}


def _mac(lab, node: str, nic: str) -> str:
    links = json.loads(lab.exec(node, ["ip", "-j", "link", "show", nic]).stdout)
    return links[0]["address"]


def test_duplicate_address_detection_ipv4_and_ipv6(lab):
    two = lab(nodes=2, links=1)
    suffix = secrets.token_hex(2)
    taken6, free6 = f"fd5a:{suffix}::1", f"fd5a:{suffix}::c8"
    two.exec("n1", ["ip", "addr", "add", f"{taken6}/64", "dev", "eth0", "nodad"], check=True)
    targets = tuple(P.DadTarget(a, "eth0", 0) for a in
                    ("10.254.0.1", "10.254.0.200", taken6, free6, "10.254.0.2"))
    found = probe_from(two, "n2", P.ProbeRequest(two.node(2).name, addresses=targets,
                                                 settings=QUICK))
    states = {r.address: (r.state, r.mac) for r in found.dad}
    mac = _mac(two, "n1", "eth0")
    assert states == {"10.254.0.1": ("in-use", mac), "10.254.0.200": ("free", None),
                      taken6: ("in-use", mac), free6: ("free", None),
                      "10.254.0.2": ("assigned", None)}
    findings = judge(found)
    assert failing(findings) == {("address-in-use", f"{two.node(2).name}/link0 10.254.0.1"),
                                 ("address-in-use", f"{two.node(2).name}/link0 {taken6}")}


def test_clean_lab_passes_every_network_check(lab, responders):
    three = lab(nodes=3, links=2)
    responders(three, ["n2", "n3"])
    req, plan = plan_request(three, 1)  # the creator: no join target to reach
    findings = judge(probe_from(three, "n1", req), plan)
    assert not [f for f in findings if f.severity in (Severity.FAIL, Severity.WARN)]
    assert {f.code for f in findings} == {"link-port-open", "legacy-port-open", "latency-ok",
                                          "mtu-ok", "clock-offset-ok", "address-assigned",
                                          "tcp-unmeasured"}
    rtts = [f.payload["median_ms"] for f in findings if f.code == "latency-ok"]
    assert len(rtts) == 4 and statistics.median(rtts) < 1.0
