"""The prober: exchanges probes with the peers' responders and turns them into measurements.

Every (peer, link, port) gets its own connected, non-blocking UDP socket bound to this node's
address on that link (so the probe leaves on the right link), and one selector loop drives all
of them at once: a 16-node, 2-link mesh takes about the sample duration, not pairs x timeout.
A connected socket is what tells "closed" from "filtered": the kernel turns an ICMP port
unreachable into ECONNREFUSED, while a dropped probe just never gets an answer.

Each reply gives four timestamps (t1 sent, t2 received there, t3 sent there, t4 received here); the
RTT is (t4 - t1) - (t3 - t2), the network's share without the responder's own delay, and the clock
offset is NTP's ((t2 - t1) + (t3 - t4)) / 2 from the sample with the smallest delay. t1 and t4 are
the kernel's send and receive timestamps (t2 on the far side too), so neither Python's speed nor its
scheduling counts as network time; under libfaketime they are moved onto the process's shifted clock
(probe.kernel_clock_offset). Per (peer, link) a DF-flagged binary search (MtuSearch) finds the
largest probe that passes out, then the largest reply that comes back; TCP connects to the join
target and the QDevice run in the same loop. The ICMP second opinion (latency.icmp_second_opinion,
where UDP got no answer) and duplicate address detection (addresses.detect) are called from
measure() too.

The requests and results (targets, settings, Measurements) are values in
pvestrap.checks.probe_model, re-exported here.

API, as the runner uses it:
    req = request_from_plan(plan, node, ProbeSettings(duration_s=3.0))
      or ProbeRequest(node, udp_targets(peers, sources), tcp=(...), addresses=(...))
    result = measure(req, token, progress=lambda fraction: ...)   # -> Measurements
    Context(..., probes={PROBES_KEY: result})    # what the network checks read, via measurements()
    result.to_dict() / Measurements.from_dict(d)  # JSON for the mesh mode
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
import random
import selectors
import socket
import threading
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable, Iterator

from pvestrap.checks import probe as wire
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.checks.probe_model import (BASE_PORT, PROBES_KEY, DadResult, DadTarget, IcmpResult,
                                         Measurements, MtuResult, PortResult, ProbeRequest,
                                         ProbeSettings, Target, TcpResult, TcpTarget, family_of,
                                         measurements, overhead, samples_pair, udp_targets)

if TYPE_CHECKING:
    from pvestrap.plan import ClusterPlan

__all__ = [  # the engine, and the request and result values it re-exports
    "new_session", "Exchange", "Loop", "measure", "request_from_plan", "main",
    "PROBES_KEY",
    "BASE_PORT",
    "family_of",
    "overhead",
    "Target",
    "TcpTarget",
    "DadTarget",
    "ProbeSettings",
    "ProbeRequest",
    "PortResult",
    "MtuResult",
    "IcmpResult",
    "TcpResult",
    "DadResult",
    "Measurements",
    "measurements",
    "samples_pair",
    "udp_targets",
]

_NS = 1_000_000_000
_SLACK = 1_000_000  # with an estimated clock shift a kernel stamp may seem up to 1 ms late


def request_from_plan(plan: "ClusterPlan", node: str, settings: ProbeSettings | None = None,
                      resolver: Resolver = resolve, shared: bool = False) -> ProbeRequest:
    """What `node` must measure for `plan`: every peer on every link, the join target's TCP
    8006 and 22 (joiners only; RESOLVER, this node's name lookup, picks the target), the
    QDevice's 5403, and DAD for this node's link addresses. SHARED: every node of the plan
    probes at the same time, so each pair's latency is sampled by one of its two nodes
    (probe_model.samples_pair)."""
    from pvestrap.checks import addresses, tcp

    me = plan.node(node)
    peers = {n.name: dict(n.addresses) for n in plan.nodes if n.name != node}
    base = min(plan.links, key=lambda link: link.number).port - min(plan.link_numbers)
    names = [n.name for n in plan.nodes]
    theirs = [p for p in peers if not samples_pair(names, node, p)] if shared else []
    return ProbeRequest(
        node=node,
        targets=udp_targets(peers, dict(me.addresses), base_port=base, sampled_by_peer=theirs),
        tcp=tcp.targets_for(plan, node, resolver),
        addresses=addresses.targets_for(plan, node),
        settings=settings or ProbeSettings(),
    )


# -- the engine ------------------------------------------------------------------------------------

def new_session() -> int:
    """A session id per exchange: with the sequence number it is the probe's nonce, which a
    responder answers once (checks.admission), so no two exchanges may share one."""
    return random.getrandbits(64)


class Exchange:
    """A connected UDP socket to one target (bound to our address on its link)."""

    def __init__(self, target: Target, token: wire.Token, session: int, timed: bool = False,
                 clock_offset: int | None = 0):
        self.target, self.token, self.session = target, token, session
        self.kclock = clock_offset  # kernel timestamp + kclock = our clock; None: untrusted
        self.timed = timed and clock_offset is not None  # kernel departure times, for RTTs
        self.departures: dict[int, int] = {}
        self.unstamped = 0  # probes sent whose kernel departure time was not read yet
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.refused = False
        self.unreachable = False
        family = family_of(target.address)
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            self.error = f"cannot open a socket: {exc.strerror}"
            return
        try:
            if target.source:
                sock.bind((target.source, 0))
            sock.connect((target.address, target.port))
        except OSError as exc:
            sock.close()
            self.error = _describe(exc, target.source)
            return
        wire.enable_ancillary(sock, family)
        if self.timed:
            wire.enable_tx_timestamps(sock)
        sock.setblocking(False)
        self.sock = sock

    def send(self, seq: int, size: int = wire.PROBE_MIN,
             reply_size: int = wire.REPLY_MIN) -> int | None:
        """Send one probe; its t1, or None when the kernel refused it (EMSGSIZE, an error) or
        there is no socket (self.error says why)."""
        if self.sock is None:
            return None
        probe = wire.Probe(self.session, seq, 0, size, reply_size)
        data, t1 = wire.encode_probe(self.token, probe, clock=time.time_ns)
        try:
            self.sock.send(data)
        except OSError as exc:
            self._note(exc)
            return None
        if self.timed:  # the kernel stamps a send within send() unless its queue holds it:
            self.unstamped += 1  # read it now, not on a loop round of its own (EPOLLERR)
            self._departures(self.unstamped)
        return t1

    def _departures(self, limit: int | None) -> None:
        """Kernel departure times from the error queue into self.departures (seq -> ns): at
        most LIMIT of them (each a system call), None: until it is empty."""
        kclock = self.kclock or 0  # timed: never None
        for session, seq, sent in wire.tx_timestamps(self.sock, limit):
            self.unstamped = max(0, self.unstamped - 1)
            if session == self.session:
                self.departures[seq] = sent + kclock

    def _note(self, exc: OSError) -> None:
        if exc.errno == errno.ECONNREFUSED:
            self.refused = True
        elif exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            self.unreachable = True

    def replies(self, drain: bool = True) -> Iterator[tuple[wire.Reply, int, int | None]]:
        """Authentic replies waiting on the socket: (reply, t4_ns, ifindex); errors are noted,
        or raised as OSError for EMSGSIZE (ICMP 'fragmentation needed': the MTU search's).
        Kernel departure times still missing are collected into self.departures first.
        drain=False: stop after the first authentic reply, which saves the read that finds
        the socket empty (one per reply while probing); the selector reports a socket with
        more waiting again."""
        sock = self.sock
        if sock is None:
            return
        if self.timed and self.unstamped:
            self._departures(self.unstamped)
        read = False
        while True:
            try:
                data, anc, _flags, _addr = sock.recvmsg(wire.MAX_DATAGRAM, 256)
            except (BlockingIOError, InterruptedError):
                if self.timed and not read:  # woken by the error queue alone: empty it, or
                    self._departures(None)  # the selector reports it again at once
                return
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise
                self._note(exc)
                read = True
                continue
            read = True
            user = time.time_ns()
            reply = wire.decode_reply(self.token, data)
            if reply is None or reply.session != self.session:
                continue
            arrival = wire.parse_ancillary(anc)
            if self.kclock is not None and arrival.kernel_ns is not None:
                k = arrival.kernel_ns + self.kclock
                user = k if -_SLACK <= user - k < _NS else user
            yield reply, user, arrival.ifindex
            if not drain:
                return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def _describe(exc: OSError, source: str | None) -> str:
    if exc.errno == errno.EADDRNOTAVAIL and source:
        return f"source address {source} is not on this node"
    return exc.strerror or str(exc)


class Loop:
    """One selector for every flow. A flow has: sock (or None), events, done, wake_at(),
    on_timer(now) once wake_at() has passed, and on_event(now) when its socket is ready.

    The timers are a heap: a round costs the flows it touches, not all of them (a 32-node,
    2-link agent drives ~190 flows and wakes ~2000 times a second while it probes; scanning
    every flow on every wake was most of the prober's CPU, and grew with the peers squared
    across the mesh). A flow's place in the heap is renewed after each of its calls, since
    either may move its wake_at(); entries it left behind are skipped when they come up."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.flows: list = []
        self._timers: list[tuple[float, int, Any]] = []  # (wake_at, order, flow)
        self._due: dict[int, float] = {}  # id(flow) -> its current wake_at in the heap
        self._live = 0  # flows not done
        self._order = itertools.count()  # heap ties: never compare two flows

    def add(self, flow) -> None:
        self.flows.append(flow)
        if flow.done:
            return
        self._live += 1
        if flow.sock is not None:
            self.selector.register(flow.sock, flow.events, flow)
        self._schedule(flow)

    def _schedule(self, flow) -> None:
        at = flow.wake_at()
        if self._due.get(id(flow)) != at:
            self._due[id(flow)] = at
            heapq.heappush(self._timers, (at, next(self._order), flow))

    def _after(self, flow) -> None:
        """FLOW was called: retire it when it is done, else renew its timer."""
        if not flow.done:
            self._schedule(flow)
            return
        if self._due.pop(id(flow), None) is not None:
            self._live -= 1
            if flow.sock is not None and flow.sock in self.selector.get_map():
                self.selector.unregister(flow.sock)

    def _next(self) -> float | None:
        """The earliest wake_at of a flow not done (stale heap entries dropped)."""
        timers = self._timers
        while timers:
            at, _, flow = timers[0]
            if self._due.get(id(flow)) == at:
                return at
            heapq.heappop(timers)
        return None

    def _pop_due(self, now: float) -> list:
        """Every flow whose timer has passed, each once (a flow late by more than its period
        sends its next probe in the next round, after a look at what arrived)."""
        due, timers = [], self._timers
        while timers and timers[0][0] <= now:
            at, _, flow = heapq.heappop(timers)
            if self._due.get(id(flow)) == at:
                del self._due[id(flow)]
                due.append(flow)
        return due

    def run(self, progress: Callable[[], None] | None = None) -> None:
        """Until every flow is done: what arrived first, then the timers that are due. In
        that order, a reply already waiting on its socket counts even when the process was
        not scheduled until after its flow's deadline (a busy machine, many agents)."""
        try:
            while self._live > 0:
                first = self._next()
                wait = 0.1 if first is None else max(0.0, first - time.monotonic())
                for key, _ in self.selector.select(min(wait, 0.1)):
                    flow = key.data
                    if not flow.done:
                        flow.on_event(time.monotonic())
                    self._after(flow)
                now = time.monotonic()
                for flow in self._pop_due(now):
                    self._due[id(flow)] = math.nan  # called: scheduled again by _after
                    if not flow.done:
                        flow.on_timer(now)
                    self._after(flow)
                if progress:
                    progress()
        finally:
            self.selector.close()


def _path(target: Target) -> tuple[str, int, str]:
    """(peer, link, address): a link port and the legacy port to the same address."""
    return target.peer, target.link, target.address


def measure(request: ProbeRequest, token: wire.Token,
            progress: Callable[[float], None] | None = None) -> Measurements:
    """Run every exchange of the request at once and return what was measured.

    progress, if given, is called with the fraction done (0..1) a few times a second.
    """
    from pvestrap.checks import addresses, latency, mtu, tcp

    settings = request.settings
    started, t0 = time.time(), time.monotonic()
    loop = Loop()
    searches: dict[tuple[str, int], Any] = {}

    def start_mtu(flow: latency.LatencyFlow, now: float) -> None:
        target = flow.ex.target
        key = (target.peer, target.link)
        if settings.mtu and key not in searches:
            searches[key] = mtu.MtuFlow(Exchange(target, token, new_session(), False, kclock),
                                        settings, now, patience=lambda: flow.slowest_s)
            loop.add(searches[key])

    kclock = wire.kernel_clock_offset()
    exchanges = [Exchange(t, token, new_session(), True, kclock) for t in request.targets]
    # one flow per target, in the request's order; a legacy port's flow knows the link port's
    # flow to the same address
    link_ports = {id(ex): latency.LatencyFlow(ex, settings, t0, start_mtu) for ex in exchanges
                  if not ex.target.legacy}
    by_path = {_path(flow.ex.target): flow for flow in link_ports.values()}
    flows = [link_ports.get(id(ex)) or latency.LatencyFlow(
        ex, settings, t0, start_mtu, by_path.get(_path(ex.target))) for ex in exchanges]
    tcp_flows = [tcp.ConnectFlow(t, settings.tcp_timeout_s) for t in request.tcp]
    for each in (*flows, *tcp_flows):
        loop.add(each)
    dad: list = []
    dad_thread = threading.Thread(
        target=lambda: dad.extend(addresses.detect(request.addresses, settings.dad_wait_s)),
        daemon=True)
    dad_thread.start()
    expected = settings.duration_s + settings.reply_timeout_s

    def tick() -> None:
        if progress:
            progress(min(0.99, (time.monotonic() - t0) / expected))

    try:
        loop.run(tick)
    finally:
        for ex in exchanges:
            ex.close()
        for flow in searches.values():
            flow.ex.close()
    udp = tuple(f.result() for f in flows)
    icmp = latency.icmp_second_opinion(udp, settings) if settings.icmp else ()
    dad_thread.join()
    if progress:
        progress(1.0)
    return Measurements(request.node, started, round(time.monotonic() - t0, 3), udp,
                        tuple(s.result() for s in searches.values()), tuple(icmp),
                        tuple(f.result() for f in tcp_flows), tuple(dad), asdict(settings))


def main(argv: list[str] | None = None) -> int:
    """`python3 -m pvestrap.checks.prober [--token-file F] < request.json > measurements.json`

    The mesh mode's remote half: a ProbeRequest as JSON in, Measurements as JSON out, the token
    from --token-file or $PVESTRAP_PROBE_TOKEN (never from the request, which may be logged).
    """
    import json
    import sys

    from pvestrap.errors import PvestrapError

    args = sys.argv[1:] if argv is None else argv
    try:
        token_file = args[args.index("--token-file") + 1] if "--token-file" in args else None
        token = wire.load_token(file=token_file)
        request = ProbeRequest.from_dict(json.load(sys.stdin))
    except PvestrapError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except (ValueError, TypeError, IndexError) as exc:
        print(f"error: the probe request is not valid: {exc}", file=sys.stderr)
        return 2
    json.dump(measure(request, token).to_dict(), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
