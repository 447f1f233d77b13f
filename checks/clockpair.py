"""The clock offset between this node and every peer, from the probe timestamps.

corosync, pmxcfs and HA all assume the nodes agree on the time; a node seconds off shows up as
strange log ordering, certificate and ticket errors. Every reply carries the responder's receive
and send times, so NTP's four-timestamp method gives the offset without any NTP server:
offset = ((t2 - t1) + (t3 - t4)) / 2, taken from the exchange with the smallest delay (the least
disturbed one), over every port and link of the peer. The error is at most half that delay.

A positive offset means the peer's clock is ahead of ours.

Findings (subject `pve1->pve2`): clock-offset-ok (PASS), clock-offset-warn (WARN over
thresholds.clock_warn_s), clock-offset-high (FAIL over clock_fail_s), clock-offset-unmeasured
(SKIP). Payload: offset_s, delay_ms, uncertainty_ms, link, port.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.checks.latency import thresholds_of
from pvestrap.findings import Finding, Severity

REMEDY = ("synchronise both nodes with the same NTP servers: chrony (`server NTP iburst` in "
          "/etc/chrony/chrony.conf, then `chronyc makestep` and `chronyc tracking`); every "
          "node of a cluster should use the same time sources")


@dataclass(frozen=True)
class ClockPairCheck:
    id: str = "clock-offset"
    family: str = "clock"
    title: str = "clock offset between this node and every peer"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None:
            return [Finding("clock-offset-unmeasured", Severity.SKIP, "no probes were run",
                            ctx.node)]
        me = ctx.node or found.node or "this node"
        limits = thresholds_of(ctx)
        best: dict[str, prober.PortResult] = {}
        for r in found.udp:
            held = best.get(r.peer)
            if r.offset_s is None:
                best.setdefault(r.peer, r)
            elif held is None or held.delay_ms is None or (
                    r.delay_ms is not None and r.delay_ms < held.delay_ms):
                best[r.peer] = r
        return [_finding(me, peer, r, limits) for peer, r in sorted(best.items())]


def _finding(me: str, peer: str, r: "prober.PortResult", limits) -> Finding:
    subject = f"{me}->{peer}"
    if r.offset_s is None or r.delay_ms is None:  # both come from the least delayed sample
        return Finding("clock-offset-unmeasured", Severity.SKIP, f"no probe to {peer} was "
                       "answered, so the clock offset is unknown", subject, payload={"peer": peer})
    offset = r.offset_s
    payload = {"peer": peer, "offset_s": round(offset, 6), "delay_ms": r.delay_ms,
               "uncertainty_ms": round(r.delay_ms / 2, 4), "link": r.link, "port": r.port,
               "warn_s": limits.clock_warn_s, "fail_s": limits.clock_fail_s}
    side = "ahead of" if offset >= 0 else "behind"
    text = f"{peer}'s clock is {abs(offset):.3f} s {side} this node's (+- {r.delay_ms / 2:.3f} ms)"
    if abs(offset) > limits.clock_fail_s:
        return Finding("clock-offset-high", Severity.FAIL,
                       f"{text}: over {limits.clock_fail_s:g} s", subject, payload=payload,
                       remedy=REMEDY)
    if abs(offset) > limits.clock_warn_s:
        return Finding("clock-offset-warn", Severity.WARN,
                       f"{text}: over {limits.clock_warn_s:g} s", subject, payload=payload,
                       remedy=REMEDY)
    return Finding("clock-offset-ok", Severity.PASS, text, subject, payload=payload)
