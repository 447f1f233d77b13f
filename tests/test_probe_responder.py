"""The responder on loopback: answers its token only, never amplifies, rate-limits, exits on TTL.

Real sockets on 127.0.0.1 / ::1 in the root namespace, nothing else. The CLI tests run the real
`pvestrap responder` command.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pvestrap.checks import admission
from pvestrap.checks import probe as wire
from pvestrap.checks import rawudp
from pvestrap.checks import responder as rsp

TOKEN = wire.Token(b"responder-test-token-0123")
PVESTRAP = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())"]


@pytest.fixture
def serve():
    """serve(**config) -> (responder, port): a responder thread on loopback, stopped afterwards."""
    running = []

    def start(address="127.0.0.1", **kw):
        config = rsp.ResponderConfig(TOKEN, ports=(0,), addresses=(address,), ttl_s=60, **kw)
        server = rsp.Responder(config)
        endpoints = server.open()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop.is_set,), daemon=True)
        thread.start()
        running.append((server, stop, thread))
        return server, endpoints[0].port

    yield start
    for server, stop, thread in running:
        stop.set()
        thread.join(5)
        server.close()


def _client(address: str, port: int, source: str | None = None) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if source:
        sock.bind((source, 0))
    sock.connect((address, port))
    sock.settimeout(1.0)
    return sock


def _eventually(condition) -> bool:
    """The responder counts after sending: give its thread a moment to get there."""
    for _ in range(100):
        if condition():
            return True
        time.sleep(0.01)
    return False


def _exchange(sock, probe: wire.Probe, token=TOKEN) -> bytes | None:
    sock.send(wire.encode_probe(token, probe, clock=time.time_ns)[0])
    try:
        return sock.recv(70_000)
    except (socket.timeout, ConnectionRefusedError):
        return None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_answers_an_authentic_probe_with_its_timestamps(serve, address):
    server, port = serve(address)
    with _client(address, port) as sock:
        before = time.time_ns()
        data = _exchange(sock, wire.Probe(77, 1))
        after = time.time_ns()
    reply = wire.decode_reply(TOKEN, data)
    assert reply is not None and (reply.session, reply.seq) == (77, 1)
    assert before <= reply.t1_ns <= reply.t2_ns <= reply.t3_ns <= after
    assert reply.size == wire.REPLY_MIN and reply.probe_size == wire.PROBE_MIN
    assert reply.rx_mtu == 65536  # loopback's MTU, read on the responder's side
    assert _eventually(lambda: server.counts["answered"] == 1)


def test_stays_silent_for_wrong_token_garbage_and_replies(serve):
    server, port = serve()
    reply_kind, _ = wire.encode_reply(TOKEN, wire.Probe(1, 1, size=200, reply_size=200), 5)
    with _client("127.0.0.1", port) as sock:
        assert _exchange(sock, wire.Probe(1, 1), token=wire.Token(b"a-different-token-999")) is None
        for junk in (b"hello", os.urandom(300), reply_kind):
            sock.send(junk)
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(2048)
    assert server.counts["answered"] == 0
    assert server.counts["rejected"] == 4


def test_a_token_added_while_serving_is_answered_and_sealed_with_that_token(serve):
    """answer_also: one responder for several tokens (first boot's stages); each reply is
    sealed with its probe's token, so a prober of one token never takes another's reply."""
    server, port = serve()
    stage = wire.Token(b"a-stage-token-0123456789")
    with _client("127.0.0.1", port) as sock:
        assert _exchange(sock, wire.Probe(5, 1), token=stage) is None  # not yet
        server.answer_also(stage)
        data = _exchange(sock, wire.Probe(5, 2), token=stage)
        assert data is not None and wire.decode_reply(stage, data).seq == 2
        assert wire.decode_reply(TOKEN, data) is None
        data = _exchange(sock, wire.Probe(6, 1))
        assert data is not None and wire.decode_reply(TOKEN, data).seq == 1
    assert _eventually(lambda: server.counts["answered"] == 2)
    assert server.counts["rejected"] == 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("family, address", [(socket.AF_INET, "127.0.0.1"),
                                             (socket.AF_INET6, "::1")])
def test_the_raw_socket_of_a_busy_port_gets_only_probes_to_that_port(family, address):
    """The kernel filters what a sniffing responder's raw socket is given: a datagram to a
    sniffed port that starts like a probe, nothing else (not corosync's traffic on that port,
    not datagrams to other ports), so Python never reads the rest."""
    ports = [_free_port(), _free_port()]
    other = _free_port()
    raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
    rawudp.attach_probe_filter(raw, family, ports)
    raw.settimeout(0.3)
    probe = wire.encode_probe(TOKEN, wire.Probe(9, 1), clock=time.time_ns)[0]
    with raw, socket.socket(family, socket.SOCK_DGRAM) as tx:
        for port, payload in ((ports[0], probe), (other, probe), (ports[1], b"knet" + probe),
                              (ports[1], probe[:40]), (ports[1], probe)):
            tx.sendto(payload, (address, port))
        got = []
        with contextlib.suppress(socket.timeout):
            while True:
                got.append(raw.recv(70_000))
    header = 20 if family == socket.AF_INET else 0
    assert [(struct.unpack_from("!H", d, header + 2)[0], d[header + 8:]) for d in got] == [
        (ports[0], probe), (ports[1], probe[:40]), (ports[1], probe)]


def test_a_filter_holds_at_most_255_ports():
    assert len(rawudp.probe_filter(socket.AF_INET, list(range(1, 256)))) == 255 + 6
    with pytest.raises(ValueError):
        rawudp.probe_filter(socket.AF_INET, list(range(1, 257)))


@pytest.mark.parametrize("size, wanted", [(64, 64), (64, 9000), (1000, 1000), (1000, 10),
                                          (1400, 5000), (8000, 8000)])
def test_reply_never_larger_than_the_probe_on_the_wire(serve, size, wanted):
    _, port = serve()
    with _client("127.0.0.1", port) as sock:
        data = _exchange(sock, wire.Probe(3, 3, size=size, reply_size=wanted))
    assert data is not None
    assert len(data) <= size
    assert len(data) == max(wire.REPLY_MIN, min(size, wanted))


def test_rate_limit_is_per_source_address(serve):
    server, port = serve(rate_pps=0.001, burst=5)  # no refill during the test
    answered = {}
    for session, source in enumerate(("127.0.0.1", "127.0.0.2")):
        with _client("127.0.0.1", port, source) as sock:
            for seq in range(30):
                sock.send(wire.encode_probe(TOKEN, wire.Probe(session, seq),
                                            clock=time.time_ns)[0])
            sock.settimeout(0.5)
            got = 0
            try:
                while True:
                    sock.recv(2048)
                    got += 1
            except socket.timeout:
                pass
            answered[source] = got
    assert answered == {"127.0.0.1": 5, "127.0.0.2": 5}
    assert server.counts["rate_limited"] == 50


def test_rate_limiter_refills_at_its_rate():
    limiter = admission.RateLimiter(rate=10, burst=2)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("a", 0.05) is False  # half a token
    assert limiter.allow("a", 0.11) is True
    assert limiter.allow("b", 0.11) is True


def test_rate_limiter_table_stays_bounded():
    limiter = admission.RateLimiter(rate=1000, burst=1)
    for i in range(admission.RateLimiter.MAX_SOURCES * 2):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", i * 1.0)
    assert len(limiter.buckets) <= admission.RateLimiter.MAX_SOURCES


def test_ports_for_links_adds_legacy_5404():
    assert rsp.ports_for_links([0, 1]) == (5404, 5405, 5406)
    assert rsp.ports_for_links([0, 3], base_port=6000) == (5999, 6000, 6003)


# -- the command -------------------------------------------------------------------------------

def _env(token: str | None = "cli-test-token-0123456789") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != wire.TOKEN_ENV}
    if token:
        env[wire.TOKEN_ENV] = token
    return env


def test_command_exits_by_itself_after_its_ttl():
    proc = subprocess.run(PVESTRAP + ["responder", "-p", "0", "-a", "127.0.0.1", "--ttl", "0.5"],
                          env=_env(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"listening on 127\.0\.0\.1:\d+/udp", proc.stderr)


def test_command_answers_probes_with_the_token_from_a_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-abcdefghijkl\n")
    proc = subprocess.Popen(PVESTRAP + ["responder", "-p", "0", "-a", "127.0.0.1", "--ttl", "20",
                                        "--token-file", str(token_file)],
                            env=_env(None), stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        port = int(re.search(r":(\d+)/udp", line).group(1))
        with _client("127.0.0.1", port) as sock:
            data = _exchange(sock, wire.Probe(1, 1), token=wire.Token(b"file-token-abcdefghijkl"))
        assert wire.decode_reply(wire.Token(b"file-token-abcdefghijkl"), data) is not None
        assert "file-token" not in line
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args, env_token", [
    (["--ttl", "1"], None),
    (["--ttl", "1", "--token", "short"], None),
    (["--ttl", "1", "--token-file", "/nonexistent/token"], None),
    (["--ttl", "0"], "cli-test-token-0123456789"),
    (["--port", "70000"], "cli-test-token-0123456789"),
    (["--address", "203.0.113.9"], "cli-test-token-0123456789"),
])
def test_command_refuses_bad_input_with_exit_2(args, env_token):
    proc = subprocess.run(PVESTRAP + ["responder", "-p", "0"] + args, env=_env(env_token),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error" in proc.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() \
        else "X"
    return state not in ("Z", "X")


def _wait_gone(pid: int) -> bool:
    for _ in range(200):
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_background_is_idempotent_and_stoppable(tmp_path):
    pid_file = tmp_path / "responder.pid"
    base = PVESTRAP + ["responder", "-p", "0", "-a", "127.0.0.1", "--ttl", "60",
                       "--pid-file", str(pid_file)]
    first = subprocess.run(base + ["--background"], env=_env(), capture_output=True, text=True,
                           timeout=30)
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    try:
        assert first.returncode == 0, first.stderr
        assert pid and _alive(pid)
        second = subprocess.run(base + ["--background"], env=_env(), capture_output=True,
                                text=True, timeout=30)
        assert second.returncode == 0
        assert int(pid_file.read_text()) == pid and _alive(pid)
        assert "already running" in second.stderr
        stop = subprocess.run(base + ["--stop"], env=_env(), capture_output=True, text=True,
                              timeout=30)
        assert stop.returncode == 0
        assert _wait_gone(pid)
        assert rsp.PidLock(str(pid_file)).holder() is None
    finally:
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


# -- freshness, replays and budgets (checks.admission) -------------------------------------------

def _drain(sock, timeout: float = 0.5) -> int:
    sock.settimeout(timeout)
    got = 0
    try:
        while True:
            sock.recv(70_000)
            got += 1
    except socket.timeout:
        return got


def test_a_captured_probe_sent_again_gets_no_second_reply(serve):
    server, port = serve()
    captured, _ = wire.encode_probe(TOKEN, wire.Probe(41, 1), clock=time.time_ns)
    with _client("127.0.0.1", port) as sock:
        sock.send(captured)
        assert _drain(sock) == 1
        for _ in range(5):
            sock.send(captured)  # the same bytes again: a reflection attempt
        assert _drain(sock) == 0
        sock.send(wire.encode_probe(TOKEN, wire.Probe(41, 2), clock=time.time_ns)[0])
        assert _drain(sock) == 1  # the session's next probe is still answered
    assert server.counts["replayed"] == 5 and server.counts["answered"] == 2


def test_stale_probes_get_no_reply(serve):
    server, port = serve()
    now = time.time_ns()
    with _client("127.0.0.1", port) as sock:
        old = wire.Probe(51, 1, t1_ns=now - admission.MAX_SKEW_NS - admission.NS)
        sock.send(wire.encode_probe(TOKEN, old)[0])  # a new session, but from long ago
        assert _drain(sock) == 0
        sock.send(wire.encode_probe(TOKEN, wire.Probe(52, 1), clock=time.time_ns)[0])
        assert _drain(sock) == 1
        late = wire.Probe(52, 2, t1_ns=time.time_ns() - admission.WINDOW_NS - admission.NS)
        sock.send(wire.encode_probe(TOKEN, late)[0])  # captured earlier, sent now
        assert _drain(sock) == 0
    assert server.counts["stale"] == 2 and server.counts["answered"] == 1


def test_a_skewed_clock_is_still_measured():
    """A node seconds off is what the clock-offset check is for: its probes are answered."""
    guard = admission.ReplayGuard()
    skew = 90 * admission.NS
    assert [guard.admit(7, seq, seq * 1000, seq * 1000 + skew) for seq in (1, 2, 3)] == \
        [None, None, None]


def test_an_oversized_or_tampered_probe_gets_no_reply(serve):
    server, port = serve()
    good, _ = wire.encode_probe(TOKEN, wire.Probe(61, 1, size=1000, reply_size=1000),
                                clock=time.time_ns)
    with _client("127.0.0.1", port) as sock:
        sock.send(good + bytes(8000))  # padded past what the MAC covers
        sock.send(os.urandom(60_000))
        sock.send(good[:-1] + bytes([good[-1] ^ 1]))
        assert _drain(sock) == 0
    assert server.counts["rejected"] == 3 and server.counts["answered"] == 0


def test_replay_guard_window_and_bounds():
    guard = admission.ReplayGuard(max_sessions=8)
    assert guard.admit(1, 5000, 0, 10) is None
    assert guard.admit(1, 5000, 0, 10) == "replayed"
    assert guard.admit(1, 4990, 0, 10) is None  # late but within the window: answered once
    assert guard.admit(1, 4990, 0, 10) == "replayed"
    assert guard.admit(1, 5000 - admission.SEQ_WINDOW, 0, 10) == "replayed"  # too far back
    for session in range(100, 200):
        guard.admit(session, 1, 0, 10)
    assert len(guard.sessions) == 8


def test_global_budget_holds_under_50_spoofed_looking_sources(serve):
    """50 loopback sources, each within its own budget, together capped by the global one."""
    server, port = serve(rate_pps=0.001, burst=5, global_rate_pps=0.001, global_burst=20)
    answered = 0
    for index in range(50):
        source = f"127.0.{index // 200}.{index % 200 + 2}"
        with _client("127.0.0.1", port, source) as sock:
            for seq in range(3):
                sock.send(wire.encode_probe(TOKEN, wire.Probe(1000 + index, seq),
                                            clock=time.time_ns)[0])
            answered += _drain(sock, 0.1)
    assert answered == 20
    assert server.counts["answered"] == 20 and server.counts["over_budget"] == 130


@pytest.mark.parametrize("args", [
    ["--rate", "inf"], ["--rate", "nan"], ["--rate", "-1"], ["--rate", "1e9"],
    ["--ttl", "inf"], ["--ttl", "nan"], ["--ttl", "1e12"], ["--address", "not-an-ip"],
])
def test_command_refuses_settings_that_would_disable_a_bound(args):
    proc = subprocess.run(PVESTRAP + ["responder", "-p", "0"] + args,
                          env=_env("cli-test-token-0123456789"), capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and args[0] in proc.stderr


def test_a_relative_log_file_is_written_where_the_user_stands(tmp_path):
    pid_file = tmp_path / "responder.pid"
    base = PVESTRAP + ["responder", "-p", "0", "-a", "127.0.0.1", "--ttl", "60",
                       "--pid-file", str(pid_file)]
    started = subprocess.run(base + ["--background", "--log-file", "responder.log"], env=_env(),
                             capture_output=True, text=True, timeout=30, cwd=tmp_path)
    try:
        assert started.returncode == 0, started.stderr
    finally:
        subprocess.run(base + ["--stop"], env=_env(), capture_output=True, timeout=30)
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    assert pid is None or _wait_gone(pid)
    assert (tmp_path / "responder.log").exists()
    assert not Path("/responder.log").exists()


def test_wake_makes_serve_look_at_stop_without_waiting_for_its_tick():
    config = rsp.ResponderConfig(TOKEN, ports=(0,), addresses=("127.0.0.1",), ttl_s=60)
    with rsp.Responder(config) as server:
        assert server.selector.select(0) == []
        server.wake()  # what the agent does once its orchestrator hung up
        assert [key.data[0] for key, _ in server.selector.select(0)] == ["wake"]
        looked = []
        server.serve(stop=lambda: bool(looked.append(1)) or len(looked) > 1)
        assert len(looked) == 2 and server.selector.select(0) == []  # woken, drained, stopped


def test_the_arrival_interface_mtu_is_asked_again_after_mtu_fresh_s():
    """The responder asks an interface's MTU once per MTU_FRESH_S, not for every reply (three
    system calls each); a changed MTU shows in replies within that time."""
    server = rsp.Responder(rsp.ResponderConfig(TOKEN, ports=(0,), addresses=("127.0.0.1",)))
    server.open()
    try:
        sock = next(k.fileobj for k in server.selector.get_map().values()
                    if k.data[0] == "socket")
        lo = socket.if_nametoindex("lo")
        assert server._rx_mtu(sock, lo, 100.0) == 65536
        server._mtus[lo] = (1234, 100.0)  # as if the admin had changed it since
        assert server._rx_mtu(sock, lo, 100.0 + rsp.MTU_FRESH_S / 2) == 1234
        assert server._rx_mtu(sock, lo, 100.0 + rsp.MTU_FRESH_S) == 65536
    finally:
        server.close()
