"""MTU per link: the largest packet that passes with don't-fragment, out and back.

An MTU black hole (jumbo frames on one end, a tunnel in between) is a classic cause of knet links
flapping. The prober sends DF-flagged probes (IP_MTU_DISCOVER = IP_PMTUDISC_DO) and searches
for the largest size that gets a reply (MtuSearch, driven by MtuFlow inside the prober's loop).
Its first step asks the largest size both ways (a probe of the local MTU asking for a reply as
large): on a clean link that one step settles both directions. Only when it gets no answer does
the search go direction by direction, first out (small replies), then back (replies as large as
the probe). A probe larger than the local MTU is refused by our own kernel at once (EMSGSIZE), so
only the sizes in between cost a timeout. The responder also reports the MTU of the interface the
probes arrived on, so one node sees when the two ends of a link disagree.

Findings (subject `pve1->pve2/link1`): mtu-ok (PASS), mtu-below-knet-minimum (FAIL: under 576
for IPv4, 1280 for IPv6), mtu-asymmetric (WARN: the ends or the directions differ),
mtu-unmeasured (SKIP). Payload: forward/reverse payload and MTU, local_mtu, peer_mtu, port.
"""

from __future__ import annotations

import selectors
import socket
from dataclasses import dataclass
from typing import Callable

from pvestrap.checks import probe as wire
from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.findings import Finding, Severity

KNET_MIN_MTU: dict[int, int] = {socket.AF_INET: 576, socket.AF_INET6: 1280}
PROBES_PER_STEP = 3


class MtuSearch:
    """Binary search for the largest size that passes, fed one outcome at a time.

    The largest size is tried first (most links pass at once), then the smallest (does anything
    pass?), then the interval is halved until the largest passing size is known exactly.
    """

    def __init__(self, low: int, high: int):
        self.low, self.high = low, max(low, high)
        self.best: int | None = None
        self.bad: int | None = None

    def next_size(self) -> int | None:
        if self.best is None:
            if self.bad is None:
                return self.high
            return self.low if self.bad > self.low else None
        top = self.bad if self.bad is not None else self.high + 1
        return None if top - self.best <= 1 else (self.best + top) // 2

    def record(self, size: int, ok: bool) -> None:
        if ok:
            self.best = size if self.best is None else max(self.best, size)
            if self.bad is not None and self.bad <= self.best:
                self.bad = None  # a late reply: that size passed after all
        else:
            self.bad = size if self.bad is None else min(self.bad, size)


def route_mtu(sock: socket.socket, family: int) -> int:
    """The MTU the kernel will use towards the connected peer (interface or learned path)."""
    try:
        if family == socket.AF_INET6:
            return sock.getsockopt(socket.IPPROTO_IPV6, wire.IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, wire.IP_MTU)
    except OSError:
        return 0


class MtuFlow:
    """The search for one (peer, link), as a flow of the prober's selector loop.

    local_mtu starts as the route MTU (the search's upper bound) and becomes the MTU of the
    interface the replies arrive on, to compare like with like against the peer's.

    Phases: "both" (one step: the largest size out, asking for a reply as large; an answer,
    even a late one, settles both directions), then, only when it was not answered, "forward"
    (the largest probe that passes, small replies) and "reverse" (the largest reply that comes
    back, up to the forward size).
    """

    events = selectors.EVENT_READ

    def __init__(self, ex: "prober.Exchange", settings: "prober.ProbeSettings", now: float,
                 patience: Callable[[], float] = lambda: 0.0):
        self.ex, self.sock, self.settings = ex, ex.sock, settings
        self.patience = patience
        self.done = ex.sock is None
        self.forward: int | None = None
        self.reverse: int | None = None
        self.local_mtu = self.peer_mtu = 0
        self.phase = "both"
        self.top = 0  # the largest size there is: the route MTU's payload
        self.both: set[int] = set()  # the seqs of the "both" step's probes
        self.asked_both = False
        self.seq, self.size, self.deadline = 0, 0, now
        self.step: set[int] = set()  # the seqs of the probes of the current size
        self.sizes: dict[int, int] = {}  # seq -> size of every probe of this phase
        self.if_mtus: dict[int | None, int] = {}  # arrival ifindex -> its MTU
        if ex.sock is None:
            return
        family = prober.family_of(ex.target.address)
        wire.set_dont_fragment(ex.sock, family)
        self.local_mtu = route_mtu(ex.sock, family)
        self.top = min(self.local_mtu - prober.overhead(family), wire.MAX_DATAGRAM)
        self.search = MtuSearch(wire.PROBE_MIN, self.top)
        self._advance(now)

    def wake_at(self) -> float:
        return self.deadline

    def on_timer(self, now: float) -> None:
        if self.phase != "both":  # silence there says nothing about which direction failed
            self.search.record(self.size, False)
        self._advance(now)

    def on_event(self, now: float) -> None:
        try:
            for reply, _t4, ifindex in self.ex.replies():
                self.peer_mtu = reply.rx_mtu or self.peer_mtu
                self.local_mtu = self._interface_mtu(ifindex) or self.local_mtu
                if reply.seq in self.both and not self.done:
                    self.forward = self.reverse = self.top  # the largest size, out and back
                    self.done = True
                    continue
                size = self.sizes.get(reply.seq)
                if size is None or self.done:
                    continue
                self.search.record(size, True)  # a late reply to an earlier step counts too
                if reply.seq in self.step or size >= self.size:
                    self._advance(now)
        except OSError:  # ICMP "fragmentation needed" from a hop on the way
            self.search.record(self.size, False)
            self._advance(now)
        if self.ex.refused and not self.done:
            self.done = True

    def _interface_mtu(self, ifindex: int | None) -> int:
        """The MTU of the interface replies arrive on, asked once per interface for the
        search (each asking is three system calls; the search takes about a second)."""
        known = self.if_mtus.get(ifindex)
        if known is None:
            known = self.if_mtus[ifindex] = wire.interface_mtu(self.sock, ifindex)
        return known

    def _advance(self, now: float) -> None:
        while True:
            size = self._next_size()
            if size is None:
                self.done = True
                return
            if self._send_step(size):
                self.size, self.deadline = size, now + self.step_timeout()
                return
            self.search.record(size, False)  # refused by our own kernel: over the route MTU

    def step_timeout(self) -> float:
        """How long a step waits for its replies: mtu_step_timeout_s, or 3 times the slowest
        reply the pair's latency probes got when that is longer (a busy responder is not a
        black hole), never beyond reply_timeout_s (the latency probes' own patience)."""
        least = self.settings.mtu_step_timeout_s
        return min(max(least, 3 * self.patience()), max(least, self.settings.reply_timeout_s))

    def _next_size(self) -> int | None:
        if self.phase == "both":
            if not self.asked_both:
                self.asked_both = True
                return self.top
            self.phase = "forward"  # not answered (or refused here): direction by direction
        size = self.search.next_size()
        if size is None and self.phase == "forward":
            self.forward = self.search.best
            if self.forward is None:
                return None
            self.phase, self.sizes = "reverse", {}
            self.search = MtuSearch(wire.REPLY_MIN, self.forward)
            size = self.search.next_size()
        elif size is None:
            self.reverse = self.search.best
        return size

    def _send_step(self, size: int) -> bool:
        reply_size = wire.REPLY_MIN if self.phase == "forward" else size
        self.step = set()
        for _ in range(PROBES_PER_STEP):
            self.seq += 1
            if self.ex.send(self.seq, size, reply_size) is None:
                return False
            if self.phase == "both":
                self.both.add(self.seq)
            else:
                self.step.add(self.seq)
                self.sizes[self.seq] = size
        return True

    def result(self) -> "prober.MtuResult":
        t = self.ex.target
        error = self.ex.error or (None if self.forward else "no probe got an answer")
        return prober.MtuResult(t.peer, t.link, t.port, t.address, self.local_mtu, self.peer_mtu,
                                self.forward, self.reverse, error)


@dataclass(frozen=True)
class MtuCheck:
    id: str = "mtu"
    family: str = "mtu"
    title: str = "largest packet each link carries with don't-fragment, both ways"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None:
            return [Finding("mtu-unmeasured", Severity.SKIP, "no probes were run",
                            ctx.node, remedy=None)]
        me = ctx.node or found.node or "this node"
        out = [f for r in found.mtu for f in self._one(me, r)]
        measured = {(r.peer, r.link) for r in found.mtu}
        for peer, link in sorted({(u.peer, u.link) for u in found.udp} - measured):
            out.append(Finding("mtu-unmeasured", Severity.SKIP, "no port of the peer answered "
                               "on this link, so the MTU could not be searched",
                               f"{me}->{peer}/link{link}", payload={"peer": peer, "link": link}))
        return out

    def _one(self, me: str, r: "prober.MtuResult") -> list[Finding]:
        subject = f"{me}->{r.peer}/link{r.link}"
        if r.forward_payload is None:
            return [Finding("mtu-unmeasured", Severity.SKIP, f"MTU not measured: {r.error}",
                            subject, payload={"peer": r.peer, "link": r.link})]
        fwd, rev = r.mtu(r.forward_payload), r.mtu(r.reverse_payload)
        path = min(m for m in (fwd, rev) if m is not None)
        minimum = KNET_MIN_MTU[r.family]
        payload = {"peer": r.peer, "link": r.link, "port": r.port, "mtu": path,
                   "forward_mtu": fwd, "reverse_mtu": rev, "forward_payload": r.forward_payload,
                   "reverse_payload": r.reverse_payload, "local_mtu": r.local_mtu,
                   "peer_mtu": r.peer_mtu or None, "knet_minimum": minimum}
        out = []
        if path < minimum:
            out.append(Finding(
                "mtu-below-knet-minimum", Severity.FAIL,
                f"only packets up to {path} bytes pass to {r.peer} on link{r.link}; knet needs at "
                f"least {minimum}", subject, payload=payload,
                remedy=f"raise the MTU of link{r.link}'s interfaces and of everything between "
                       f"(switch ports, tunnels) to at least {minimum}, e.g. `mtu 1500` in the "
                       "interface's stanza in /etc/network/interfaces, then `ifreload -a`"))
        ends_differ = bool(r.peer_mtu) and r.peer_mtu != r.local_mtu
        ways_differ = rev is not None and rev != fwd
        if ends_differ or ways_differ:
            out.append(Finding(
                "mtu-asymmetric", Severity.WARN, _asymmetry(r, fwd, rev, ends_differ),
                subject, payload=payload,
                remedy=f"give link{r.link} the same MTU on both nodes and on the switch ports "
                       "between them (`mtu N` in /etc/network/interfaces); knet's path MTU "
                       "discovery copes, but mismatched MTUs are a classic cause of flapping "
                       "links"))
        if not out:
            out.append(Finding("mtu-ok", Severity.PASS,
                               f"packets up to {path} bytes pass to {r.peer} on link{r.link} and "
                               "back", subject, payload=payload))
        return out


def _asymmetry(r: "prober.MtuResult", fwd: int | None, rev: int | None, ends_differ: bool) -> str:
    if ends_differ:
        return (f"the ends of link{r.link} disagree: MTU {r.local_mtu} here, {r.peer_mtu} on "
                f"{r.peer}; {fwd} bytes pass out, {rev} back")
    return f"{fwd} bytes pass out to {r.peer} on link{r.link}, but only {rev} come back"
