"""The responder on a port someone else owns: it answers through a raw socket, in a lab node.

On a cluster member corosync owns 5405; the preflight must still see the port as open from the
other nodes. First with a plain socket holding the port, then with a real corosync cluster,
which must stay quorate while the probes pass by.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import subprocess
import sys
import time

import pytest

from pvestrap.checks import prober
from pvestrap.checks.latency import FEW_SAMPLES
from pvestrap.checks.probe import TOKEN_ENV

pytestmark = pytest.mark.lab

CLI = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())"]
TOKEN = "lab-sniff-" + secrets.token_hex(12)
QUICK = prober.ProbeSettings(duration_s=1.0, interval_s=0.05, reply_timeout_s=0.5, icmp=False)
HOLD = ("import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind((sys.argv[1], int(sys.argv[2]))); print('held', flush=True); time.sleep(120)")


@pytest.fixture
def processes():
    """Processes a test starts inside lab nodes; killed at the end, passed or failed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def _read_until(proc: subprocess.Popen, pattern: str, count: int, timeout: float = 30.0) -> str:
    text, deadline, fd = "", time.monotonic() + timeout, proc.stderr.fileno()
    while len(re.findall(pattern, text)) < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"timed out waiting for {pattern!r}: {text}"
        chunk = os.read(fd, 65536).decode()
        assert chunk, f"exited: {text}"
        text += chunk
    return text


def _responder(lab, node, processes, ports, address=None) -> str:
    argv = CLI + ["responder", "--ttl", "120"]
    for port in ports:
        argv += ["-p", str(port)]
    if address:
        argv += ["-a", address]
    proc = lab.popen(node, argv, env={TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE)
    processes.append(proc)
    per_address = 1 if address else 2
    return _read_until(proc, r"listening|raw socket|skipping", per_address * len(ports))


def _probe(lab, node, targets) -> prober.Measurements:
    req = prober.ProbeRequest(lab.node(node).name, tuple(targets), settings=QUICK)
    done = lab.exec(node, [sys.executable, "-m", "pvestrap.checks.prober"],
                    input=json.dumps(req.to_dict()), env={TOKEN_ENV: TOKEN}, timeout=120)
    assert done.returncode == 0, done.stderr
    return prober.Measurements.from_dict(json.loads(done.stdout))


def test_busy_port_is_answered_through_a_raw_socket(lab, processes):
    two = lab(nodes=2, links=1)
    holder = two.popen("n2", [sys.executable, "-c", HOLD, "10.254.0.2", "5405"],
                       stdout=subprocess.PIPE, text=True)
    processes.append(holder)
    assert holder.stdout.readline().strip() == "held"
    log = _responder(two, "n2", processes, (5404, 5405))
    assert re.search(r"0\.0\.0\.0:5405/udp is in use: answering probes on it through a raw socket",
                     log)
    found = _probe(two, "n1", prober.udp_targets({two.node(2).name: {0: "10.254.0.2"}},
                                                 {0: "10.254.0.1"}))
    states = {r.port: (r.state, r.received) for r in found.udp}
    assert states[5405] == ("open", QUICK.count)
    # 5404 stops after FEW_SAMPLES replies once the link port answered (checks.latency)
    assert states[5404][0] == "open" and FEW_SAMPLES <= states[5404][1] <= QUICK.count
    sniffed = next(r for r in found.udp if r.port == 5405)
    assert abs(sniffed.offset_s) < 0.005 and max(sniffed.rtts_ms) < 50
    (mtu,) = found.mtu
    assert mtu.forward_payload == 1472 and mtu.reverse_payload == 1472
    assert holder.poll() is None  # the owner keeps its port


def test_wrong_token_gets_no_answer_from_the_raw_socket_either(lab, processes):
    two = lab(nodes=2, links=1)
    holder = two.popen("n2", [sys.executable, "-c", HOLD, "0.0.0.0", "5405"],
                       stdout=subprocess.PIPE, text=True)
    processes.append(holder)
    assert holder.stdout.readline().strip() == "held"
    _responder(two, "n2", processes, (5405,), address="10.254.0.2")
    req = prober.ProbeRequest("n1", (prober.Target("n2", 0, 5405, "10.254.0.2", "10.254.0.1"),),
                              settings=QUICK)
    done = two.exec("n1", [sys.executable, "-m", "pvestrap.checks.prober"],
                    input=json.dumps(req.to_dict()), env={TOKEN_ENV: "another-token-" + "x" * 10})
    (r,) = prober.Measurements.from_dict(json.loads(done.stdout)).udp
    assert (r.state, r.received) == ("filtered", 0)


def _quorate(lab, node, members: int) -> bool:
    out = lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
    listed = re.findall(r"^\s+\d+\s+\d+\s+\S+", out.split("Membership information")[-1], re.M)
    return bool(re.search(r"^Quorate:\s+Yes", out, re.M)) and len(listed) == members


def _wait_quorate(lab, node, members: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _quorate(lab, node, members):
            return True
        time.sleep(0.3)
    return False


def test_probes_reach_corosync_members_on_5405_and_corosync_stays_quorate(lab, processes):
    two = lab(nodes=2, links=1)
    two.write_corosync()
    two.start("corosync")
    assert _wait_quorate(two, "n1", 2)
    log = _responder(two, "n2", processes, (5404, 5405))
    assert "5405/udp is in use" in log
    found = _probe(two, "n1", prober.udp_targets({two.node(2).name: {0: "10.254.0.2"}},
                                                 {0: "10.254.0.1"}))
    by_port = {r.port: r for r in found.udp}
    assert by_port[5405].state == "open" and by_port[5405].received == QUICK.count
    assert by_port[5404].state == "open"
    assert _quorate(two, "n1", 2) and _quorate(two, "n2", 2)
    links = two.exec("n1", ["corosync-cfgtool", "-s"]).stdout
    assert re.search(r"nodeid:\s+2:\s+connected", links), links


HOLD6 = ("import socket, time; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
         "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); s.bind(('::', 5405)); "
         "print('held', flush=True); time.sleep(120)")


def test_busy_port_is_answered_over_ipv6_too(lab, processes):
    """A dual-stack owner takes 5405 for both families; both raw sockets answer (IPv6 needs the
    UDP checksum the responder computes itself)."""
    two = lab(nodes=2, links=1)
    suffix = secrets.token_hex(2)
    for i in (1, 2):
        two.exec(f"n{i}", ["ip", "addr", "add", f"fd5a:{suffix}::{i}/64", "dev", "eth0", "nodad"],
                 check=True)
    holder = two.popen("n2", [sys.executable, "-c", HOLD6], stdout=subprocess.PIPE, text=True)
    processes.append(holder)
    assert holder.stdout.readline().strip() == "held"
    log = _responder(two, "n2", processes, (5405,))
    assert "[::]:5405/udp is in use" in log and "0.0.0.0:5405/udp is in use" in log
    found = _probe(two, "n1", [
        prober.Target("n2", 0, 5405, f"fd5a:{suffix}::2", f"fd5a:{suffix}::1"),
        prober.Target("n2", 0, 5405, "10.254.0.2", "10.254.0.1")])
    assert [(r.address, r.state, r.received) for r in found.udp] == [
        (f"fd5a:{suffix}::2", "open", QUICK.count), ("10.254.0.2", "open", QUICK.count)]


def test_ports_come_from_the_answer_file(lab, processes, tmp_path):
    from pvestrap.answer_export import dumps

    three = lab(nodes=2, links=3)
    path = tmp_path / "answers.toml"
    path.write_text(dumps(three.plan()))
    argv = CLI + ["responder", "--ttl", "120", "--answers", str(path), "-a", "10.254.2.2"]
    proc = three.popen("n2", argv, env={TOKEN_ENV: TOKEN}, stderr=subprocess.PIPE)
    processes.append(proc)
    log = _read_until(proc, r"listening", 4)
    assert sorted(map(int, re.findall(r"10\.254\.2\.2:(\d+)/udp", log))) == [5404, 5405, 5406, 5407]
