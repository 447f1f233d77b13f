"""Latency, jitter and loss per peer and link, from the probe exchanges.

corosync's totem ring stalls when a link is slow or jittery: the project fails a link whose
median RTT is above thresholds.latency_fail_ms (2 ms by default; Proxmox's documentation asks for
under 5 ms and says clusters of more than three nodes are unlikely to work above around 10 ms),
and warns on jitter and loss. Samples come from the link's own port (5405 + N), or from 5404
where only that answered. Where no UDP port answered at all, ICMP echo (ping3) gives a second
opinion, reported as INFO: the path exists, but corosync's port is blocked (see the ports check).

LatencyFlow is the sampling itself: N probes at a fixed interval to one target, a flow of the
prober's selector loop. The legacy port's flow stops after FEW_SAMPLES replies once the link
port of the same peer and link has answered: its samples would not be used (best_port), and a
few replies are what tells open from closed or filtered; where the link port stays silent it
sends all N, as the fallback's samples. A path whose latency the peer samples (the mesh
preflight: probe_model.samples_pair) stops after FEW_SAMPLES replies on either port.

Statistics: min, median, p99 (nearest rank), max, jitter (mean difference between consecutive
RTTs, RFC 3550's idea without the smoothing), loss (% of probes unanswered), samples.

Findings (subject `pve1->pve2/link0`): latency-ok (PASS), latency-high (FAIL), latency-jitter
(WARN), packet-loss (WARN over loss_warn_pct, FAIL over loss_fail_pct), latency-icmp (INFO),
latency-unmeasured (SKIP), latency-pending (SKIP: this node's link address is only planned, see
checks.pending; subject `pve1/link0`), latency-by-peer (INFO: the peer samples this pair, its
report judges it).
"""

from __future__ import annotations

import math
import random
import selectors
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

from pvestrap.checks import probe as wire
from pvestrap.checks import pending, prober
from pvestrap.checks.base import Context
from pvestrap.findings import Finding, Severity
from pvestrap.plan import Thresholds

FEW_SAMPLES = 3  # replies that tell a port answers, where its samples are not judged
GUIDANCE = ("Proxmox advises under 5 ms and says clusters of more than three nodes are unlikely "
            "to work above around 10 ms")


def stats(rtts: Sequence[float]) -> dict[str, float]:
    """min/median/p99/max/jitter in ms, rounded to the microsecond."""
    ordered = sorted(rtts)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    jitter = (statistics.fmean(abs(b - a) for a, b in zip(rtts, rtts[1:]))
              if len(rtts) > 1 else 0.0)
    values = {"min_ms": ordered[0], "median_ms": statistics.median(ordered), "p99_ms": p99,
              "max_ms": ordered[-1], "jitter_ms": jitter}
    return {k: round(v, 3) for k, v in values.items()}


def thresholds_of(ctx: Context) -> Thresholds:
    return ctx.plan.preflight.thresholds if ctx.plan is not None else Thresholds()


def best_port(results: Iterable["prober.PortResult"]) -> "prober.PortResult | None":
    """The link port's result if it answered, else the legacy port's, else None."""
    answered = [r for r in results if r.received]
    answered.sort(key=lambda r: r.legacy)
    return answered[0] if answered else None


def icmp_second_opinion(udp: Sequence["prober.PortResult"],
                        settings: "prober.ProbeSettings") -> list["prober.IcmpResult"]:
    """Ping (ping3) every (peer, link) where no UDP port answered, all pairs at once."""
    pairs: dict[tuple[str, int], "prober.PortResult"] = {}
    for r in udp:
        if r.state != "error":
            pairs.setdefault((r.peer, r.link), r)
    answered = {(r.peer, r.link) for r in udp if r.received}
    todo = [r for key, r in sorted(pairs.items()) if key not in answered]
    if not todo:
        return []
    from concurrent.futures import ThreadPoolExecutor  # ~3 ms to load: only when pinging

    with ThreadPoolExecutor(max_workers=min(32, len(todo))) as pool:
        return list(pool.map(lambda r: _ping(r, settings), todo))


def _ping(r: "prober.PortResult", settings: "prober.ProbeSettings") -> "prober.IcmpResult":
    import ping3

    rtts, error = [], None
    source = r.source if r.source and ":" not in r.source else ""  # ping3 binds IPv4 only
    for seq in range(settings.icmp_count):
        try:
            got = ping3.ping(r.address, timeout=settings.icmp_timeout_s, unit="ms",
                             src_addr=source, seq=seq)
        except OSError as exc:  # e.g. no permission for raw sockets
            error = exc.strerror or str(exc)
            break
        if got is False:
            error = "ping failed"
            break
        if got is not None:
            rtts.append(round(float(got), 4))
    return prober.IcmpResult(r.peer, r.link, r.address, settings.icmp_count, len(rtts),
                             tuple(rtts), error)


def sample(reply: wire.Reply, t1: int, t4: int) -> tuple[float, float]:
    """(rtt_ms, offset_s): the network's round trip without the responder's hold time."""
    total, hold = t4 - t1, reply.t3_ns - reply.t2_ns
    rtt = total - hold if 0 <= hold <= total else total
    offset = ((reply.t2_ns - t1) + (reply.t3_ns - t4)) / 2
    return rtt / 1e6, offset / 1e9


class LatencyFlow:
    """N probes at a fixed interval to one target; replies give RTTs and clock samples.
    ON_FIRST_REPLY(flow, now) starts the pair's MTU search, whose patience is slowest_s."""

    events = selectors.EVENT_READ

    def __init__(self, ex: "prober.Exchange", settings: "prober.ProbeSettings", start: float,
                 on_first_reply, link_port: "LatencyFlow | None" = None):
        self.ex, self.sock, self.settings = ex, ex.sock, settings
        self.count = settings.count
        self.next_at = start + random.uniform(0, settings.interval_s)
        self.sent = 0
        self.pending: dict[int, int] = {}
        self.rtts: list[float] = []
        self.best: tuple[float, float] | None = None  # (delay_ms, offset_s)
        self.slowest_s = 0.0  # the longest a reply took to come back, responder's delay included
        self.on_first_reply = on_first_reply
        self.link_port = link_port  # a legacy port's flow: the link port's, to the same peer
        self.done = ex.sock is None

    def wake_at(self) -> float:
        return self.next_at

    def on_timer(self, now: float) -> None:
        if self.sent >= self.count:
            self._read(now, drain=True)  # a reply already waiting still counts
            self.done = True  # the last probe's reply timeout has passed
            return
        if self._enough():
            self.count = self.sent  # its samples are not judged: a few replies were enough
            self.next_at = now + self.settings.reply_timeout_s
            self.done = not self.pending
            return
        self.sent += 1
        t1 = self.ex.send(self.sent)
        if t1 is not None:
            self.pending[self.sent] = t1
        interval = self.settings.interval_s
        self.next_at = (self.next_at + interval if self.sent < self.count
                        else now + self.settings.reply_timeout_s)

    def _enough(self) -> bool:
        """A few replies, where the samples are not the pair's latency: the legacy port once
        the link port answered, either port of a path the peer samples."""
        if len(self.rtts) < FEW_SAMPLES:
            return False
        return self.ex.target.peer_samples or (self.link_port is not None
                                               and bool(self.link_port.rtts))

    def on_event(self, now: float) -> None:
        self._read(now, drain=False)  # one probe in flight per interval: one reply at a time
        if self.sent >= self.count and self.ex.refused and not self.rtts:
            self.done = True  # closed: no reason to wait out the timeout

    def _read(self, now: float, drain: bool) -> None:
        try:
            for reply, t4, _ifindex in self.ex.replies(drain):
                self._take(reply, t4, now)
        except OSError:
            pass  # EMSGSIZE: these probes are small; the MTU search deals with the path

    def _take(self, reply: wire.Reply, t4: int, now: float) -> None:
        t1 = self.pending.pop(reply.seq, None)
        if t1 is None:
            return
        self.slowest_s = max(self.slowest_s, (t4 - t1) / 1e9)
        left = self.ex.departures.pop(reply.seq, None)
        if left is not None and -1_000_000 <= left - t1 < 1_000_000_000:
            t1 = left  # when the kernel sent it, not when Python was about to
        rtt, offset = sample(reply, t1, t4)
        self.rtts.append(rtt)
        if self.best is None or rtt < self.best[0]:
            self.best = (rtt, offset)
        if len(self.rtts) == 1:
            self.on_first_reply(self, now)
        if (self.sent >= self.count and not self.pending) or self.settings.until_answered:
            self.done = True

    def result(self) -> "prober.PortResult":
        t, ex = self.ex.target, self.ex
        state = ("open" if self.rtts else "error" if ex.error else "closed" if ex.refused
                 else "unreachable" if ex.unreachable else "filtered")
        return prober.PortResult(t.peer, t.link, t.port, t.address, t.source, t.legacy, state,
                                 self.sent, len(self.rtts), tuple(round(r, 4) for r in self.rtts),
                                 self.best[1] if self.best else None,
                                 round(self.best[0], 4) if self.best else None, ex.error,
                                 t.peer_samples)


@dataclass(frozen=True)
class LatencyCheck:
    id: str = "latency"
    family: str = "latency"
    title: str = "round-trip time, jitter and loss to every peer on every link"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None:
            return [Finding("latency-unmeasured", Severity.SKIP, "no probes were run", ctx.node)]
        me = ctx.node or found.node or "this node"
        limits = thresholds_of(ctx)
        groups: dict[tuple[str, int], list] = {}
        for r in found.udp:
            groups.setdefault((r.peer, r.link), []).append(r)
        icmp = {(i.peer, i.link): i for i in found.icmp}
        out: list[Finding] = pending.latency_findings(ctx)
        for (peer, link), results in sorted(groups.items()):
            subject = f"{me}->{peer}/link{link}"
            chosen = best_port(results)
            if chosen is not None and chosen.peer_samples:
                out.append(by_peer(subject, peer, link, chosen))
            elif chosen is not None:
                out += judge(subject, peer, link, chosen, limits)
            else:
                out.append(_icmp_or_skip(subject, peer, link, icmp.get((peer, link)), results))
        return out


def judge(subject: str, peer: str, link: int, r: "prober.PortResult",
          limits: Thresholds) -> list[Finding]:
    measured = stats(r.rtts_ms)
    payload = {"peer": peer, "link": link, "port": r.port, **measured,
               "loss_pct": round(r.loss_pct, 2), "samples": r.received, "sent": r.sent,
               "limit_ms": limits.latency_fail_ms}
    summary = (f"median {payload['median_ms']} ms to {peer} on link{link} (min "
               f"{payload['min_ms']}, p99 {payload['p99_ms']}, max {payload['max_ms']}, jitter "
               f"{payload['jitter_ms']} ms, loss {payload['loss_pct']} %, {r.received} samples)")
    out = []
    if measured["median_ms"] > limits.latency_fail_ms:
        out.append(Finding(
            "latency-high", Severity.FAIL, f"{summary}: above the {limits.latency_fail_ms:g} ms "
            f"limit; {GUIDANCE}", subject, payload=payload,
            remedy="give corosync a dedicated, switched low-latency network (its own NICs, not "
                   "shared with storage, backup or VM traffic, not routed or tunnelled); if the "
                   "latency is known and accepted, raise latency_fail_ms"))
    if measured["jitter_ms"] > limits.jitter_warn_ms:
        out.append(Finding(
            "latency-jitter", Severity.WARN, f"{summary}: jitter above "
            f"{limits.jitter_warn_ms:g} ms", subject, payload=payload,
            remedy="look for congestion on this link (shared with storage or migration "
                   "traffic, a busy switch); corosync's token timing suffers from jitter"))
    loss = round(r.loss_pct, 2)
    if loss > limits.loss_warn_pct:
        severity = Severity.FAIL if loss > limits.loss_fail_pct else Severity.WARN
        out.append(Finding(
            "packet-loss", severity, f"{loss} % of probes to {peer} on link{link} were lost "
            f"(limits: warn over {limits.loss_warn_pct:g} %, fail over "
            f"{limits.loss_fail_pct:g} %)", subject, payload=payload,
            remedy="check cabling, NIC and switch error counters (`ip -s link`, `ethtool -S`) "
                   "and rate limits on the path"))
    if not out:
        out.append(Finding("latency-ok", Severity.PASS, summary, subject, payload=payload))
    return out


def by_peer(subject: str, peer: str, link: int, r: "prober.PortResult") -> Finding:
    """The pair's latency is PEER's to judge (a round trip is the pair's, sampled once):
    here the port answered, and its few samples are shown, not judged."""
    measured = stats(r.rtts_ms)
    payload = {"peer": peer, "link": link, "port": r.port, **measured, "samples": r.received,
               "sent": r.sent, "sampled_by": peer}
    return Finding("latency-by-peer", Severity.INFO,
                   f"{peer} samples this pair's latency on link{link} (its findings judge it); "
                   f"here port {r.port} answered {r.received} of {r.sent} probes, median "
                   f"{measured['median_ms']} ms", subject, payload=payload)


def _icmp_or_skip(subject: str, peer: str, link: int, icmp: "prober.IcmpResult | None",
                  results: list) -> Finding:
    if icmp is not None and icmp.received:
        payload = {"peer": peer, "link": link, **stats(icmp.rtts_ms), "sent": icmp.sent,
                   "samples": icmp.received,
                   "loss_pct": round(100.0 * (icmp.sent - icmp.received) / icmp.sent, 2)}
        return Finding("latency-icmp", Severity.INFO,
                       f"no UDP port answered, but ping does: median {payload['median_ms']} ms to "
                       f"{peer} on link{link} ({icmp.received}/{icmp.sent} replies)", subject,
                       payload=payload)
    why = next((r.error for r in results if r.error), None) or "no port answered"
    return Finding("latency-unmeasured", Severity.SKIP, f"latency to {peer} on link{link} not "
                   f"measured: {why}", subject, payload={"peer": peer, "link": link})
