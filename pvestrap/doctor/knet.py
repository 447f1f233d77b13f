"""Links, measured: knet's own per-link statistics sampled over a window, on every node.

corosync exposes knet's counters in cmap (`stats.knet.nodeN.linkM.*`): connected, down_count,
up_count, latency_ave/_samples (microseconds; knet pings every knet_ping_interval and times the
pong: a round trip), and the retry counters, sampled every half second (facts.sample_window).
How the window's latency is read from knet's running average is in _window_ave. The threshold
is the guide's "latencies under 2 milliseconds" (Network Requirements).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from statistics import mean
from typing import ClassVar

from pvestrap.checks.base import Context
from pvestrap.corosync.status import KnetLinkStats
from pvestrap.doctor.view import DoctorView, NodeView, view_of
from pvestrap.findings import Finding, Severity, fail, passed, warn

FAMILY = "links"


@dataclass(frozen=True)
class LinkWindow:
    node: str
    peer: str
    peer_id: int
    link: int
    states: tuple[bool, ...]  # connected, per sample
    down_changes: int
    up_changes: int
    new_samples: int
    window_ave_us: float | None
    max_us: int | None
    retries: int
    basis: str = "window"  # window | knet-average (knet's running mean) | none

    @property
    def down_now(self) -> bool:
        return bool(self.states) and not self.states[-1]

    @property
    def flapped(self) -> bool:
        flips = sum(1 for a, b in zip(self.states, self.states[1:]) if a != b)
        return self.down_changes > 0 or flips > 0


def _window_ave(series: list[KnetLinkStats]) -> tuple[int, float | None, str]:
    """(new pongs, latency in us, basis) over the window.

    knet keeps latency_ave = (ave * (n - 1) + x) / n with n = latency_samples, which grows
    per pong until knet_ping_precision (2048 by default) and then stays: a plain mean at
    first, a slow running average later (libknet threads_heartbeat.c). While n grows, each
    step between two samples gives the mean of its new pongs exactly; the window's value is
    the median of those (one late pong on a busy host does not make a link slow). Once n
    stays, single pongs cannot be told apart, and knet's own running average is the value."""
    steps: list[tuple[float, int]] = []
    for a, b in itertools.pairwise(series):
        grown = b.latency_samples - a.latency_samples
        if grown > 0 and b.latency_ave_us is not None:
            total = b.latency_ave_us * b.latency_samples - (a.latency_ave_us or 0) * \
                a.latency_samples
            steps.append((max(0.0, total / grown), grown))
    if steps:
        return sum(n for _, n in steps), _weighted_median(steps), "window"
    last = series[-1] if series else None
    if last is not None and last.latency_ave_us is not None and last.latency_samples > 0:
        return 0, float(last.latency_ave_us), "knet-average"
    return 0, None, "none"


def _weighted_median(values: list[tuple[float, int]]) -> float:
    ordered = sorted(values)
    half = sum(n for _, n in ordered) / 2
    seen = 0
    for value, n in ordered:
        seen += n
        if seen >= half:
            return value
    return ordered[-1][0]


def windows(view: DoctorView, node: NodeView) -> list[LinkWindow]:
    """Every (peer, link) this node's knet knows, over its sampled window."""
    samples = [s for s in node.window if s.stats or s.links]
    if not samples:
        return []
    names = view.names_by_id()
    keys = sorted({(k.nodeid, k.link) for s in samples for k in s.stats if k.nodeid != node.nodeid}
                  | {(p.nodeid, link.link) for s in samples if s.links
                     for link in s.links.links for p in link.peers
                     if p.state != "localhost" and p.nodeid is not None})
    out = []
    for nodeid, link in keys:
        series = [_stat(s.stats, nodeid, link) for s in samples]
        states = tuple(_connected(s, nodeid, link, stat) for s, stat in zip(samples, series))
        have = [x for x in series if x is not None]
        first, last = (have[0], have[-1]) if have else (None, None)
        new, ave, basis = _window_ave(have)
        out.append(LinkWindow(node.name, names.get(nodeid, f"node{nodeid}"), nodeid, link,
                              states,
                              (last.down_count - first.down_count) if first and last else 0,
                              (last.up_count - first.up_count) if first and last else 0,
                              new, ave, last.latency_max_us if last else None,
                              (last.retries - first.retries) if first and last else 0, basis))
    return out


def _stat(stats, nodeid: int, link: int) -> KnetLinkStats | None:
    return next((k for k in stats if k.nodeid == nodeid and k.link == link), None)


def _connected(sample, nodeid: int, link: int, stat: KnetLinkStats | None) -> bool:
    if sample.links is not None:
        state = sample.links.link(link)
        peer = state.peer(nodeid) if state else None
        if peer is not None:
            return peer.connected
    return bool(stat and stat.connected)


def link_latency_ms(view: DoctorView) -> dict[int, float]:
    """Per link: the mean window latency over every measured (node, peer) pair."""
    per: dict[int, list[float]] = {}
    for node in view.nodes.values():
        for w in windows(view, node):
            if w.window_ave_us is not None:
                per.setdefault(w.link, []).append(w.window_ave_us / 1000)
    return {link: round(mean(v), 3) for link, v in sorted(per.items())}


def _payload(w: LinkWindow) -> dict:
    return {"node": w.node, "peer": w.peer, "link": w.link, "states": list(w.states),
            "down_changes": w.down_changes, "up_changes": w.up_changes,
            "window_samples": w.new_samples, "retries": w.retries, "basis": w.basis,
            "latency_window_ms": (None if w.window_ave_us is None
                                  else round(w.window_ave_us / 1000, 3)),
            "latency_max_ms": None if w.max_us is None else round(w.max_us / 1000, 3)}


@dataclass(frozen=True)
class KnetLinksCheck:
    id: ClassVar[str] = "knet-links"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "every knet link to every peer up, and steady during the window"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        out: list[Finding] = []
        up = 0
        for node in view.nodes.values():
            found = windows(view, node)
            if not found:
                out.append(Finding("knet-unmeasured", Severity.SKIP, f"{node.name}: no knet "
                                   "statistics (corosync not running, or not knet)", node.name,
                                   self.id, payload={"errors": dict(node.errors)}))
            for w in found:
                subject = f"{w.node}->{w.peer}/link{w.link}"
                if w.down_now:
                    out.append(fail("knet-link-down", f"link{w.link} from {w.node} to {w.peer} "
                                    "is down", subject, check=self.id, payload=_payload(w),
                                    remedy=f"check {w.peer}'s link{w.link} address, NIC, cable "
                                           "and firewall (UDP to the link's port); "
                                           "`corosync-cfgtool -n` on both nodes"))
                elif w.flapped:
                    out.append(fail("knet-link-flapping", f"link{w.link} from {w.node} to "
                                    f"{w.peer} went down {max(w.down_changes, 1)} time(s) during "
                                    "the window", subject, check=self.id, payload=_payload(w),
                                    remedy="a flapping link costs token retransmits: check the "
                                           "NIC and switch counters (errors, drops), the cable, "
                                           "and what else loads this network"))
                else:
                    up += 1
                if w.retries > 0:
                    out.append(warn("knet-link-retries", f"link{w.link} {w.node}->{w.peer}: "
                                    f"{w.retries} send retries during the window", subject,
                                    check=self.id, payload=_payload(w),
                                    remedy="look for a congested or lossy network on this link"))
        if up:
            out.append(passed("knet-links-up", f"{up} link(s) up and steady during the window",
                              "links", self.id, payload={"links_up": up}))
        return out


@dataclass(frozen=True)
class KnetLatencyCheck:
    id: ClassVar[str] = "knet-latency"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "knet's measured latency per link and peer under the guide's 2 ms"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        limit = view.latency_ms
        out: list[Finding] = []
        for node in view.nodes.values():
            for w in windows(view, node):
                if w.window_ave_us is None or w.down_now:
                    continue
                ms = w.window_ave_us / 1000
                payload = {**_payload(w), "limit_ms": limit}
                subject = f"{w.node}->{w.peer}/link{w.link}"
                where = "(median of the window's pongs)" if w.basis == "window" else \
                    "(knet's running average of its last pongs)"
                if ms > limit:
                    out.append(fail("knet-latency-high", f"link{w.link} {w.node}->{w.peer}: "
                                    f"{ms:.2f} ms {where}, over the {limit:g} ms limit", subject,
                                    check=self.id, payload=payload,
                                    remedy="the guide asks for latencies under 2 ms: move this "
                                           "link to a quieter, local network, or lower its "
                                           "knet_link_priority"))
                else:
                    out.append(passed("knet-latency-ok", f"link{w.link} {w.node}->{w.peer}: "
                                      f"{ms:.2f} ms", subject, self.id, payload=payload))
        return out or [Finding("knet-latency-unmeasured", Severity.SKIP, "knet took no latency "
                               "sample during the window (a longer --window helps)", "links",
                               self.id)]
