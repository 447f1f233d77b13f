"""The prober on loopback against real responders: open, closed, filtered, MTU, TCP, JSON.

Only 127.0.0.1 / ::1 in the root namespace; everything that needs other addresses is a lab test.
"""

from __future__ import annotations

import json
import select
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pvestrap.checks import probe as wire
from pvestrap.checks import prober
from pvestrap.checks import latency
from pvestrap.checks import responder as rsp
from pvestrap.checks.latency import FEW_SAMPLES
from pvestrap.checks.mtu import PROBES_PER_STEP, MtuFlow, MtuSearch
from pvestrap.plan import ClusterPlan, JoinTarget, Link, Node
from pvestrap.qdevice import QDevice

TOKEN = wire.Token(b"prober-test-token-0123456")
FAST = prober.ProbeSettings(duration_s=0.5, interval_s=0.05, reply_timeout_s=0.5, icmp=False)


@pytest.fixture
def responders():
    """responders(n, token=TOKEN, address=...) -> [port, ...]: loopback responder threads."""
    running = []

    def start(n=1, token=TOKEN, address="127.0.0.1", **kw):
        config = rsp.ResponderConfig(token, ports=(0,) * n, addresses=(address,), ttl_s=60, **kw)
        server = rsp.Responder(config)
        ports = [e.port for e in server.open()]
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, args=(stop.is_set,), daemon=True)
        thread.start()
        running.append((server, stop, thread))
        return ports

    yield start
    for server, stop, thread in running:
        stop.set()
        thread.join(5)
        server.close()


def _free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one(target: prober.Target, settings=FAST, token=TOKEN) -> prober.PortResult:
    found = prober.measure(prober.ProbeRequest("me", (target,), settings=settings), token)
    assert len(found.udp) == 1
    return found.udp[0]


def test_open_port_gives_rtts_and_a_near_zero_clock_offset(responders):
    (port,) = responders()
    r = _one(prober.Target("peer", 0, port, "127.0.0.1", "127.0.0.1"))
    assert r.state == "open"
    assert r.sent == FAST.count and r.received == r.sent
    assert len(r.rtts_ms) == r.received and all(0 < x < 50 for x in r.rtts_ms)
    assert abs(r.offset_s) < 0.005  # one kernel clock: the offset is noise
    assert r.delay_ms == min(r.rtts_ms)


def test_progress_is_reported_up_to_done(responders):
    (port,) = responders()
    seen: list[float] = []
    target = prober.Target("peer", 0, port, "127.0.0.1")
    prober.measure(prober.ProbeRequest("me", (target,), settings=FAST), TOKEN,
                   progress=seen.append)
    assert len(seen) > 2 and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0 <= x <= 1 for x in seen)


def test_ipv6_loopback_works_too(responders):
    (port,) = responders(address="::1")
    r = _one(prober.Target("peer", 0, port, "::1", "::1"))
    assert (r.state, r.received) == ("open", r.sent)


def test_nothing_listening_is_closed():
    r = _one(prober.Target("peer", 0, _free_port(), "127.0.0.1"))
    assert (r.state, r.received) == ("closed", 0)


def test_a_responder_with_another_token_looks_filtered(responders):
    (port,) = responders(token=wire.Token(b"some-other-run-token-xyz"))
    r = _one(prober.Target("peer", 0, port, "127.0.0.1"))
    assert (r.state, r.sent, r.received) == ("filtered", FAST.count, 0)


def test_a_source_address_not_on_this_node_is_an_error_not_a_verdict():
    r = _one(prober.Target("peer", 0, 5405, "127.0.0.1", source="203.0.113.7"))
    assert r.state == "error" and "203.0.113.7" in r.error and r.sent == 0


def test_many_targets_at_once_all_measured():
    """16 peers x 2 links x 2 ports, as in a 16-node mesh, against a real `pvestrap responder`
    process (the timing is in the benchmark)."""
    env = {**os.environ, wire.TOKEN_ENV: TOKEN.secret.decode()}
    argv = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())",
            "responder", "-a", "127.0.0.1", "--ttl", "60", "--rate", "100000"]
    proc = subprocess.Popen(argv + ["-p", "0"] * 4, env=env, stderr=subprocess.PIPE, text=True)
    try:
        ports = [int(re.search(r":(\d+)/udp", proc.stderr.readline()).group(1)) for _ in range(4)]
        peers = {f"pve{i}": {0: "127.0.0.1", 1: "127.0.0.1"} for i in range(1, 17)}
        targets = [prober.Target(t.peer, t.link, ports[t.link * 2 + t.legacy], t.address, t.source,
                                 t.legacy)
                   for t in prober.udp_targets(peers, {0: "127.0.0.1", 1: "127.0.0.1"})]
        found = prober.measure(prober.ProbeRequest("me", tuple(targets), settings=FAST), TOKEN)
    finally:
        proc.kill()
        proc.wait()
    assert len(found.udp) == 64 and len(found.mtu) == 32
    assert {r.state for r in found.udp} == {"open"}
    assert all(r.received == r.sent == FAST.count for r in found.udp if not r.legacy)
    # 5404's samples are not used where the link port answers: a few replies tell it is open
    assert all(FEW_SAMPLES <= r.received == r.sent < FAST.count
               for r in found.udp if r.legacy)


def test_the_legacy_port_is_sampled_in_full_where_the_link_port_is_silent(responders):
    """Where 5405+N does not answer, 5404's samples are the latency's fallback: all of them."""
    (port,) = responders()
    link = prober.Target("peer", 0, _free_port(), "127.0.0.1")
    legacy = prober.Target("peer", 0, port, "127.0.0.1", legacy=True)
    found = prober.measure(prober.ProbeRequest("me", (link, legacy), settings=FAST), TOKEN)
    by_port = {r.legacy: r for r in found.udp}
    assert by_port[False].state == "closed" and by_port[False].received == 0
    assert by_port[True].received == by_port[True].sent == FAST.count


def test_mtu_on_loopback_reaches_the_largest_datagram(responders):
    (port,) = responders()
    found = prober.measure(prober.ProbeRequest("me", (prober.Target("peer", 0, port, "127.0.0.1"),),
                                               settings=FAST), TOKEN)
    (m,) = found.mtu
    lo_mtu = int(open("/sys/class/net/lo/mtu").read())
    assert m.forward_payload == m.reverse_payload == min(lo_mtu - 28, wire.MAX_DATAGRAM)
    assert m.local_mtu == m.peer_mtu == lo_mtu


@given(low=st.integers(64, 2000), span=st.integers(0, 9000), limit=st.integers(0, 12_000))
def test_mtu_search_finds_exactly_the_largest_passing_size(low, span, limit):
    search = MtuSearch(low, low + span)
    steps = 0
    while (size := search.next_size()) is not None:
        search.record(size, size <= limit)
        steps += 1
        assert steps < 40
    expected = None if limit < low else min(limit, low + span)
    assert search.best == expected


@given(low=st.integers(64, 2000), span=st.integers(0, 9000), limit=st.integers(0, 12_000),
       slow=st.lists(st.booleans(), max_size=40))
def test_mtu_search_counts_late_replies(low, span, limit, slow):
    """A step whose replies come after its timeout (a busy responder) is recorded as failed;
    when they arrive during the next step, the size passed after all: the search still ends
    at exactly the largest passing size."""
    search = MtuSearch(low, low + span)
    late: list[int] = []
    for step in range(80):
        for size in late:
            search.record(size, True)
        late = []
        size = search.next_size()
        if size is None:
            break
        delayed = size <= limit and step < len(slow) and slow[step]
        search.record(size, size <= limit and not delayed)
        if delayed:
            late.append(size)
    else:
        pytest.fail("the search did not end")
    assert search.best == (None if limit < low else min(limit, low + span))


class _Path:
    """An Exchange over a simulated path: probes up to FORWARD bytes pass out, replies up to
    REVERSE bytes come back (DF both ways), each reply LATE steps late or never (None)."""

    def __init__(self, forward: int, reverse: int):
        self.forward, self.reverse = forward, reverse
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", 9))  # only for the route MTU: nothing is sent on it
        self.target = prober.Target("peer", 0, 9, "127.0.0.1")
        self.refused, self.error = False, None
        self.sent: list[tuple[int, int]] = []  # (size, reply size)
        self.waiting: list[wire.Reply] = []

    def send(self, seq: int, size: int, reply_size: int) -> int:
        self.sent.append((size, reply_size))
        if size <= self.forward and reply_size <= self.reverse:
            self.waiting.append(wire.Reply(1, seq, 0, 0, 0, size, 1500, reply_size))
        return 0

    def replies(self):
        waiting, self.waiting = self.waiting, []
        for reply in waiting:
            yield reply, 0, None


def _search(path: _Path) -> MtuFlow:
    flow = MtuFlow(path, FAST, 0.0)  # type: ignore[arg-type]
    for _ in range(200):
        if flow.done:
            return flow
        if path.waiting:
            flow.on_event(flow.deadline)
        else:
            flow.on_timer(flow.deadline)
    pytest.fail("the MTU search did not end")


def test_mtu_search_settles_a_clean_path_in_one_step_both_ways():
    path = _Path(forward=10**6, reverse=10**6)
    flow = _search(path)
    path.sock.close()
    top = flow.top
    assert path.sent == [(top, top)] * PROBES_PER_STEP
    assert flow.forward == flow.reverse == top


@given(forward=st.integers(0, 70_000), reverse=st.integers(0, 70_000))
def test_mtu_search_goes_direction_by_direction_when_the_first_step_is_not_answered(forward,
                                                                                    reverse):
    path = _Path(forward, reverse)
    try:
        flow = _search(path)
    finally:
        path.sock.close()
    top = flow.top
    answered = forward >= wire.PROBE_MIN and reverse >= wire.REPLY_MIN  # anything comes back
    out = min(forward, top) if answered else None
    assert flow.forward == out
    assert flow.reverse == (min(reverse, out) if out is not None else None)
    if out == top and flow.reverse == top:
        assert len(path.sent) == PROBES_PER_STEP  # the first step answered: nothing more


def test_loop_reads_waiting_replies_before_the_timers_that_are_due():
    """After the process was not scheduled for a while, a reply already on its socket counts:
    the loop reads it before it fires that flow's (now passed) timeout."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    calls: list[str] = []

    class Flow:
        sock, events, done = a, 1, False  # selectors.EVENT_READ

        def wake_at(self):
            return 0.0  # long passed

        def on_timer(self, now):
            calls.append("timeout")
            self.done = True

        def on_event(self, now):
            calls.append("reply")
            self.done = True

    b.send(b"reply")
    loop = prober.Loop()
    loop.add(Flow())
    loop.run()
    a.close()
    b.close()
    assert calls == ["reply"]


class _TimerFlow:
    """A flow without a socket: its timer fires at AT (relative to the loop's start), once."""

    sock, events, done = None, 1, False

    def __init__(self, name, at, calls):
        self.name, self.at, self.calls = name, time.monotonic() + at, calls

    def wake_at(self):
        return self.at

    def on_timer(self, now):
        self.calls.append(self.name)
        self.done = True

    def on_event(self, now):
        raise AssertionError("no socket, no events")


def test_loop_fires_timers_in_time_order_whatever_the_order_of_the_flows():
    calls: list[str] = []
    loop = prober.Loop()
    for name, at in (("c", 0.06), ("a", 0.0), ("d", 0.09), ("b", 0.03)):
        loop.add(_TimerFlow(name, at, calls))
    loop.run()
    assert calls == ["a", "b", "c", "d"]


def test_loop_follows_a_deadline_that_an_event_moved():
    """A flow's wake_at may move in on_event (the MTU search's next step): the loop's timer
    heap follows it, earlier as well as later."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    calls: list[str] = []

    class Step:
        sock, events, done = a, 1, False  # selectors.EVENT_READ
        at = time.monotonic() + 3600.0  # far away until the reply comes

        def wake_at(self):
            return self.at

        def on_event(self, now):
            a.recv(16)
            calls.append("reply")
            self.at = now + 0.02  # the next step's timeout

        def on_timer(self, now):
            calls.append("step timeout")
            self.done = True

    class Watchdog(_TimerFlow):
        def on_timer(self, now):
            if not step.done:  # the moved deadline was lost: the step would wait an hour
                raise AssertionError("the step's timer did not follow its deadline")
            super().on_timer(now)

    b.send(b"reply")
    loop = prober.Loop()
    step = Step()
    loop.add(step)
    loop.add(Watchdog("watchdog", 1.0, calls))
    try:
        loop.run()
    finally:
        a.close()
        b.close()
    assert calls == ["reply", "step timeout", "watchdog"]


def test_a_flow_reads_one_reply_per_event_and_everything_at_its_last_timeout():
    """LatencyFlow reads one reply per event (no read that finds the socket empty; the
    selector reports a socket with more waiting again), and whatever waits at its final
    timeout still counts."""
    server = rsp.Responder(rsp.ResponderConfig(TOKEN, ports=(0,), addresses=("127.0.0.1",),
                                               ttl_s=60))
    (endpoint,) = server.open()
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop.is_set,), daemon=True)
    thread.start()
    settings = prober.ProbeSettings(duration_s=0.1, interval_s=0.05, reply_timeout_s=0.2)
    ex = prober.Exchange(prober.Target("peer", 0, endpoint.port, "127.0.0.1"), TOKEN,
                         prober.new_session(), True)
    flow = latency.LatencyFlow(ex, settings, time.monotonic(), lambda _flow, _now: None)
    try:
        for _ in range(settings.count):  # both probes out, back to back
            flow.on_timer(time.monotonic())
        deadline = time.monotonic() + 10
        while server.counts["answered"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # loopback: a reply sent is a reply waiting on our socket
        flow.on_event(time.monotonic())
        assert len(flow.rtts) == 1 and not flow.done
        flow.on_timer(time.monotonic())  # the last probe's reply timeout
        assert flow.done and len(flow.rtts) == 2 and not flow.pending
    finally:
        ex.close()
        stop.set()
        thread.join(5)
        server.close()


def test_tcp_open_and_closed():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    open_port = listener.getsockname()[1]
    closed_port = _free_port(socket.SOCK_STREAM)
    try:
        req = prober.ProbeRequest("me", tcp=(
            prober.TcpTarget("pve1", "127.0.0.1", open_port, "join-api"),
            prober.TcpTarget("pve1", "127.0.0.1", closed_port, "join-ssh")), settings=FAST)
        found = prober.measure(req, TOKEN)
    finally:
        listener.close()
    states = {r.port: r for r in found.tcp}
    assert states[open_port].state == "open" and states[open_port].connect_ms is not None
    assert states[closed_port].state == "closed"


def test_icmp_second_opinion_where_udp_is_closed():
    settings = prober.ProbeSettings(duration_s=0.2, interval_s=0.05, reply_timeout_s=0.2,
                                    icmp_count=3)
    target = prober.Target("peer", 1, _free_port(), "127.0.0.1")
    found = prober.measure(prober.ProbeRequest("me", (target,), settings=settings), TOKEN)
    (icmp,) = found.icmp
    assert (icmp.peer, icmp.link, icmp.sent) == ("peer", 1, 3)
    assert icmp.received == 3 and len(icmp.rtts_ms) == 3


def test_measurements_survive_json(responders):
    (port,) = responders()
    targets = (prober.Target("peer", 0, port, "127.0.0.1"),
               prober.Target("peer", 1, _free_port(), "127.0.0.1"))
    found = prober.measure(prober.ProbeRequest("me", targets, settings=FAST), TOKEN)
    again = prober.Measurements.from_dict(json.loads(json.dumps(found.to_dict())))
    assert again == found
    req = prober.ProbeRequest("me", (prober.Target("a", 0, 1, "::1", "::1", True),),
                              (prober.TcpTarget("b", "::1", 22, "join-ssh"),),
                              (prober.DadTarget("10.254.0.1", "eth0", 0),), FAST)
    assert prober.ProbeRequest.from_dict(json.loads(json.dumps(req.to_dict()))) == req


def test_module_entry_point_reads_a_request_and_prints_measurements(responders):
    (port,) = responders()
    req = prober.ProbeRequest("me", (prober.Target("peer", 0, port, "127.0.0.1"),), settings=FAST)
    env = {**os.environ, wire.TOKEN_ENV: TOKEN.secret.decode()}
    proc = subprocess.run([sys.executable, "-m", "pvestrap.checks.prober"],
                          input=json.dumps(req.to_dict()), env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found = prober.Measurements.from_dict(json.loads(proc.stdout))
    assert found.udp[0].state == "open"
    bad = subprocess.run([sys.executable, "-m", "pvestrap.checks.prober"], input="{not json",
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def _plan(**kw) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"}) for i in (1, 2, 3))
    return ClusterPlan("lab", nodes, (Link(0, "10.254.0.0/24"), Link(1, "10.254.1.0/24")), **kw)


def test_without_a_root_password_a_pve_joiner_needs_only_ssh():
    """pvecm add --use_ssh 1 joins over 22; the API (8006) is probed only for the API join."""
    req = prober.request_from_plan(_plan(), "pve2")
    assert {(t.port, t.purpose) for t in req.tcp} == {(22, "join-ssh")}


def test_request_from_plan_for_a_joiner():
    plan = _plan(qdevice=QDevice("10.254.0.50"),
                 join=JoinTarget(password_env="PVE_ROOT_PASSWORD"))
    req = prober.request_from_plan(plan, "pve2")
    assert {(t.peer, t.link, t.port, t.address, t.source, t.legacy) for t in req.targets} == {
        (peer, link, port, f"10.254.{link}.{i}", f"10.254.{link}.2", port == 5404)
        for peer, i in (("pve1", 1), ("pve3", 3)) for link in (0, 1)
        for port in (5404, 5405 + link)}
    assert {(t.name, t.address, t.port, t.purpose) for t in req.tcp} == {
        ("pve1", "10.254.0.1", 8006, "join-api"), ("pve1", "10.254.0.1", 22, "join-ssh"),
        ("qdevice", "10.254.0.50", 5403, "qdevice")}
    assert [(d.address, d.link) for d in req.addresses] == [("10.254.0.2", 0), ("10.254.1.2", 1)]


def test_request_from_plan_for_the_creator_has_no_join_ports():
    req = prober.request_from_plan(_plan(join=JoinTarget()), "pve1")
    assert req.tcp == () and len(req.targets) == 8


def test_the_error_queue_flags_are_linuxs():
    assert wire._ERRQUEUE_NOWAIT == socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT


def _timed_exchange(port: int) -> prober.Exchange:
    ex = prober.Exchange(prober.Target("peer", 0, port, "127.0.0.1", "127.0.0.1"), TOKEN,
                         prober.new_session(), timed=True, clock_offset=0)
    assert ex.sock is not None
    return ex


def test_tx_timestamps_reads_the_error_queue_at_most_limit_times(responders):
    """Departure stamps stay queued beyond the limit, for the next read."""
    (port,) = responders()
    ex = _timed_exchange(port)
    for seq in (1, 2, 3):
        ex.sock.send(wire.encode_probe(TOKEN, wire.Probe(ex.session, seq), clock=time.time_ns)[0])
    first = wire.tx_timestamps(ex.sock, 1)
    rest = wire.tx_timestamps(ex.sock)
    assert [s for _, s, _ in first] == [1] and [s for _, s, _ in rest] == [2, 3]
    assert wire.tx_timestamps(ex.sock) == []
    ex.close()


def test_a_departure_stamp_is_taken_with_its_send_or_by_the_next_replies(responders):
    """The kernel's departure time is read right after send() (loopback stamps within it), so
    its error-queue wake-up costs no loop round; one left behind is read by replies(), and a
    wake-up by the error queue alone empties it (else the selector reports it for ever)."""
    (port,) = responders()
    ex = _timed_exchange(port)
    t1 = ex.send(1)
    assert t1 is not None and ex.unstamped == 0 and 1 in ex.departures
    ex.sock.send(wire.encode_probe(TOKEN, wire.Probe(ex.session, 2), clock=time.time_ns)[0])
    ex.unstamped = 1  # sent, stamp not read: as when the kernel queued the datagram
    deadline = time.monotonic() + 2
    got = []
    while len(got) < 2 and time.monotonic() < deadline:
        got += [r.seq for r, _t4, _i in ex.replies()]
    assert sorted(got) == [1, 2] and 2 in ex.departures and ex.unstamped == 0
    ex.sock.send(wire.encode_probe(TOKEN, wire.Probe(ex.session, 3), clock=time.time_ns)[0])
    assert select.select([ex.sock], [], [], 1)[0]  # the stamp (and soon the reply) wake it
    while 3 not in ex.departures and time.monotonic() < deadline:
        list(ex.replies())
    assert 3 in ex.departures  # counted nowhere (unstamped 0), found by the wake-up
    ex.close()


@pytest.mark.parametrize("n", range(1, 11))
def test_in_a_shared_run_each_pair_is_sampled_by_exactly_one_of_its_nodes(n):
    """samples_pair: every unordered pair once, every node about half of its peers."""
    names = [f"pve{i}" for i in range(1, n + 1)]
    for a in names:
        for b in names:
            if a != b:
                assert prober.samples_pair(names, a, b) != prober.samples_pair(names, b, a)
    load = [sum(prober.samples_pair(names, a, b) for b in names if b != a) for a in names]
    assert sum(load) == n * (n - 1) // 2 and max(load) - min(load) <= 1, load


def test_a_shared_request_leaves_the_peer_sampled_paths_to_a_few_probes():
    """shared=True (the mesh agents): pve2 samples pve3, pve1 samples pve2, on both links and
    both ports; without it (one node probing alone) every path is sampled."""
    shared = prober.request_from_plan(_plan(), "pve2", shared=True)
    assert {(t.peer, t.peer_samples) for t in shared.targets} == {("pve1", True),
                                                                ("pve3", False)}
    assert len(shared.targets) == 8
    alone = prober.request_from_plan(_plan(), "pve2")
    assert not any(t.peer_samples for t in alone.targets)


def test_a_peer_sampled_path_stops_after_a_few_replies_on_both_ports(responders):
    """Against real responders: the path the peer samples gets FEW_SAMPLES replies per port
    and is marked so; the path this node samples gets every probe."""
    link, legacy = responders(2)
    mine = prober.Target("pve3", 0, link, "127.0.0.1")
    theirs = [prober.Target("pve1", 0, link, "127.0.0.1", peer_samples=True),
              prober.Target("pve1", 0, legacy, "127.0.0.1", legacy=True, peer_samples=True)]
    found = prober.measure(prober.ProbeRequest("pve2", (mine, *theirs), settings=FAST), TOKEN)
    by_peer = {(r.peer, r.legacy): r for r in found.udp}
    assert by_peer["pve3", False].received == by_peer["pve3", False].sent == FAST.count
    assert not by_peer["pve3", False].peer_samples
    for key in (("pve1", False), ("pve1", True)):
        r = by_peer[key]
        assert r.state == "open" and r.peer_samples
        assert FEW_SAMPLES <= r.received == r.sent < FAST.count, r
