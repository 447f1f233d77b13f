"""Quorum math for the planned cluster: votes, how many nodes may fail, token timing.

Pure arithmetic over the plan (plus the members of an existing cluster from
ctx.options["cluster"], which keep counting after the change). votequorum needs more than half
of all votes: quorum = floor(total / 2) + 1. A QDevice (QNet) adds one vote to a cluster with an
even node count; with an odd count it would have to bring N - 1 votes (last-man-standing), which
makes it a single point of failure: PVE advises against that.

Token timing (corosync >= 3.1): from 3 nodes on, the runtime token grows by token_coefficient
per node beyond two; consensus is 1.2 x token. A node that loses the token is fenced by the HA
watchdog after about 60 s, so token + consensus must stay well below that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

from pvestrap import qdevice as qdevice_model
from pvestrap.checks.base import Context
from pvestrap.findings import Finding, Severity, warn

FAMILY = "quorum"
DEFAULT_TOKEN_MS = 3000
DEFAULT_COEFFICIENT_MS = 650
TOKEN_LIMIT_MS = 50_000  # margin below the ~60 s HA fencing window


@dataclass(frozen=True)
class QuorumMath:
    """node_votes: per node. tolerance: how many nodes may fail in the worst case (those with
    the most votes first) while the rest stays quorate, the QDevice still voting;
    tolerance_without_qdevice: the same when the QDevice is gone too."""

    node_votes: tuple[int, ...]
    qdevice_votes: int
    total: int
    quorum: int
    tolerance: int
    tolerance_without_qdevice: int


def qdevice_votes(nodes: int) -> int:
    """The votes of a QDevice with the algorithm pvecm picks for NODES (pvestrap.qdevice)."""
    return qdevice_model.qdevice_votes(qdevice_model.default_algorithm(nodes), nodes) \
        if nodes else 0


def _tolerance(votes: Sequence[int], total: int, quorum: int) -> int:
    remaining = total
    failed = 0
    for vote in sorted(votes, reverse=True):
        if remaining - vote < quorum:
            break
        remaining -= vote
        failed += 1
    return failed


def quorum_math(votes: Sequence[int], qdevice: bool = False) -> QuorumMath:
    node_total = sum(votes)
    qd = qdevice_votes(len(votes)) if qdevice else 0
    total = node_total + qd
    quorum = total // 2 + 1
    tol = _tolerance(votes, total, quorum) if total else 0
    tol_without = _tolerance(votes, node_total, quorum)
    return QuorumMath(tuple(votes), qd, total, quorum, tol, tol_without)


@dataclass(frozen=True)
class TokenTiming:
    nodes: int
    token_ms: int
    coefficient_ms: int
    runtime_token_ms: int
    consensus_ms: int

    @property
    def total_ms(self) -> int:
        return self.runtime_token_ms + self.consensus_ms


def token_timing(nodes: int, token_ms: int = DEFAULT_TOKEN_MS,
                 coefficient_ms: int = DEFAULT_COEFFICIENT_MS) -> TokenTiming:
    """corosync applies token_coefficient only with 3 or more nodes in the nodelist."""
    runtime = token_ms + (nodes - 2) * coefficient_ms if nodes >= 3 else token_ms
    return TokenTiming(nodes, token_ms, coefficient_ms, runtime, int(runtime * 1.2))


def planned_votes(ctx: Context) -> dict[str, int]:
    """Votes per node after the change: the plan's nodes plus existing members not in it."""
    votes: dict[str, int] = {}
    if ctx.plan is not None:
        votes.update({n.name: n.counted_votes for n in ctx.plan.nodes})
    cluster = ctx.options.get("cluster")
    if isinstance(cluster, Mapping):
        members = [m["name"] for m in cluster.get("nodes", ())]
    else:
        members = [m.name for m in getattr(cluster, "nodes", ())]
    for name in members:
        votes.setdefault(name, 1)
    return votes


@dataclass(frozen=True)
class QuorumCheck:
    id: ClassVar[str] = "quorum"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "votes, quorum and how many nodes may fail; QDevice fit"

    def run(self, ctx: Context) -> list[Finding]:
        votes = planned_votes(ctx)
        if not votes:
            return [Finding("quorum-skipped", Severity.SKIP, "no plan: no nodes to count", None,
                            self.id)]
        qdevice = bool(ctx.plan and ctx.plan.qdevice)
        math = quorum_math(list(votes.values()), qdevice)
        n = len(votes)
        payload: dict[str, Any] = {"nodes": n, "votes": votes, "qdevice": qdevice,
                                   "qdevice_votes": math.qdevice_votes, "total_votes": math.total,
                                   "quorum": math.quorum, "tolerance": math.tolerance,
                                   "tolerance_without_qdevice": math.tolerance_without_qdevice}
        out = [Finding("quorum-tolerance", Severity.INFO,
                       f"{n} node(s), {math.total} votes, quorum {math.quorum}: "
                       f"{math.tolerance} node(s) may fail", "cluster", self.id, payload=payload)]
        if n == 2 and not qdevice:
            out.append(warn("two-node-no-qdevice", "a 2-node cluster without a QDevice loses "
                            "quorum when either node fails", "cluster", check=self.id,
                            payload=payload,
                            remedy="add a QDevice (pvecm qdevice setup <host>) or a third node"))
        if qdevice and n % 2 == 1:
            out.append(warn("qdevice-odd-nodes", f"a QDevice with {n} nodes must carry "
                            f"{math.qdevice_votes} votes and becomes a single point of failure",
                            "cluster", check=self.id, payload=payload,
                            remedy="use a QDevice only with an even number of nodes"))
        return out


@dataclass(frozen=True)
class TokenTimingCheck:
    id: ClassVar[str] = "token-timing"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "token + consensus stay well below the ~60 s HA fencing window"
    token_ms: int = DEFAULT_TOKEN_MS
    limit_ms: int = TOKEN_LIMIT_MS

    def run(self, ctx: Context) -> list[Finding]:
        votes = planned_votes(ctx)
        if not votes:
            return [Finding("token-timing-skipped", Severity.SKIP, "no plan: no nodes to count",
                            None, self.id)]
        coefficient = (ctx.plan.token_coefficient if ctx.plan else None) or DEFAULT_COEFFICIENT_MS
        t = token_timing(len(votes), self.token_ms, coefficient)
        payload = {"nodes": t.nodes, "token_ms": t.token_ms, "token_coefficient_ms":
                   t.coefficient_ms, "runtime_token_ms": t.runtime_token_ms,
                   "consensus_ms": t.consensus_ms, "total_ms": t.total_ms,
                   "limit_ms": self.limit_ms}
        text = (f"token {t.runtime_token_ms} ms + consensus {t.consensus_ms} ms = "
                f"{t.total_ms / 1000:.1f} s for {t.nodes} nodes")
        if t.total_ms > self.limit_ms:
            return [warn("token-timeout-long", text, "cluster", check=self.id, payload=payload,
                         remedy="set token_coefficient: 125 in totem (PVE >= 9.2 does this for "
                                "new clusters), or split the cluster")]
        return [Finding("token-timeout-ok", Severity.PASS, text, "cluster", self.id,
                        payload=payload)]


def checks() -> tuple[QuorumCheck, TokenTimingCheck]:
    return (QuorumCheck(), TokenTimingCheck())
