"""Which authentic probes get a reply: fresh, never seen before, and within the reply budgets.

The MAC (checks.probe) proves a probe was made with the run's token, but not that it was made
now: a datagram captured on the wire stays authentic for as long as the token lives. So the
responder also asks:

- Is it fresh? Every probe carries its send time t1 under the MAC. The first probe of a session
  may be at most MAX_SKEW from our clock (clocks seconds apart are what the clock-offset check
  measures, so this bound is wide); every later probe of the session must keep the same distance
  (t2 - t1) within WINDOW, so a probe captured and sent again later is refused, whatever the two
  clocks say.
- Is it new? (session, seq) is a nonce: each probe is answered once. A session remembers its
  highest sequence number and which of the SEQ_WINDOW numbers below it were answered.
- Is there budget left? A token bucket per source address, and one for all sources together, so
  spoofed sources cannot add up to more than the global rate.

Every table here is bounded: an attacker without the token cannot create sessions at all, and
sessions or sources beyond the bounds evict the least recently used.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

NS = 1_000_000_000
MAX_SKEW_NS = 15 * 60 * NS
WINDOW_NS = 5 * NS
SEQ_WINDOW = 1024
MAX_SESSIONS = 4096

# Bounds of the responder's settings (`pvestrap responder --rate/--ttl/--global-rate`).
MAX_TTL_S = 7 * 24 * 3600.0
MAX_RATE_PPS = 100_000.0


def check_setting(name: str, value: float, upper: float) -> str | None:
    """Why value is not a usable setting (finite, above 0, at most upper), or None."""
    if not math.isfinite(value) or value <= 0:
        return f"{name} must be a finite number greater than 0, not {value!r}"
    if value > upper:
        return f"{name} {value:g} is above the limit of {upper:g}"
    return None


@dataclass
class _Session:
    gap_ns: int  # t2 - t1 of the session's first probe: clock offset plus one-way delay
    top: int  # highest sequence number answered
    seen: int  # bit k set: top - k was answered


class ReplayGuard:
    """Admits each probe once, and only while it is fresh (see the module docstring)."""

    def __init__(self, max_sessions: int = MAX_SESSIONS):
        self.max_sessions = max_sessions
        self.sessions: OrderedDict[int, _Session] = OrderedDict()

    def admit(self, session: int, seq: int, t1_ns: int, t2_ns: int) -> str | None:
        """None when the probe may be answered, else why not ("stale" or "replayed")."""
        gap = t2_ns - t1_ns
        known = self.sessions.get(session)
        if known is None:
            if abs(gap) > MAX_SKEW_NS:
                return "stale"
            self._remember(session, _Session(gap, seq, 1))
            return None
        if abs(gap - known.gap_ns) > WINDOW_NS:
            return "stale"
        self.sessions.move_to_end(session)
        if seq > known.top:
            shift = min(seq - known.top, SEQ_WINDOW)
            known.seen = ((known.seen << shift) | 1) & ((1 << SEQ_WINDOW) - 1)
            known.top = seq
            return None
        back = known.top - seq
        if back >= SEQ_WINDOW or known.seen >> back & 1:
            return "replayed"
        known.seen |= 1 << back
        return None

    def _remember(self, session: int, state: _Session) -> None:
        self.sessions[session] = state
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)


class RateLimiter:
    """A token bucket per key (a source address); the table is bounded so floods cannot grow it."""

    MAX_SOURCES = 4096

    def __init__(self, rate: float, burst: float):
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, source: str, now: float) -> bool:
        tokens, last = self.buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self.buckets) >= self.MAX_SOURCES and source not in self.buckets:
            self._prune(now)
        if tokens < 1.0:
            self.buckets[source] = (tokens, now)
            return False
        self.buckets[source] = (tokens - 1.0, now)
        return True

    def _prune(self, now: float) -> None:
        idle = self.burst / self.rate if self.rate > 0 else 0.0
        self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < idle}
        while len(self.buckets) >= self.MAX_SOURCES:
            self.buckets.pop(next(iter(self.buckets)))


class Admission:
    """The whole decision for one authentic probe: fresh and new, then per-source and global
    budgets. `decide` returns None (answer it) or the counter to bump."""

    GLOBAL = "*"

    def __init__(self, rate_pps: float, burst: float, global_rate_pps: float,
                 global_burst: float):
        self.replays = ReplayGuard()
        self.per_source = RateLimiter(rate_pps, burst)
        self.overall = RateLimiter(global_rate_pps, global_burst)

    def decide(self, session: int, seq: int, t1_ns: int, t2_ns: int, source: str,
               now: float) -> str | None:
        why = self.replays.admit(session, seq, t1_ns, t2_ns)
        if why is not None:
            return why
        if not self.per_source.allow(source, now):
            return "rate_limited"
        if not self.overall.allow(self.GLOBAL, now):
            return "over_budget"
        return None
