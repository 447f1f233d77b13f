"""Apply's preflight gate, and the recheck after its network phase.

The gate: a preflight FAIL that is not ignored stops apply before the cluster steps
(PreflightFailed names each FAIL and what an earlier phase changed and keeps).

The recheck: the local preflight leaves the probes of a link whose address is only planned for
later (link-port-pending, latency-pending). Once the network phase configured that address, or
found it configured by an earlier apply (a rerun after a FAIL here probes again), a joiner
probes the member it joins over it, before any cluster step. The member's responder runs with
a probe token: the admin's (`--token-file`, the responders they started), or, without one, a
fresh random token of a responder that apply starts on the member over ssh for just the time
of the probes (pvestrap.apply.remote_responders). A member that cannot run one (no pvestrap
there, no ssh: a Proxmox VE API join logs in nowhere) is named, and apply goes on without
probing it: never silently.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from pvestrap import preflight
from pvestrap.apply import network_phase
from pvestrap.checks.probe import Token
from pvestrap.errors import OperationFailed
from pvestrap.findings import Finding, Severity, apply_ignores
from pvestrap.plan import ClusterPlan
from pvestrap.report.model import Report

Preflight = Callable[[ClusterPlan, str], Report]
Out = Callable[[str], None]


class PreflightFailed(OperationFailed):
    code = "preflight-failed"

    def __init__(self, failures: Sequence[Finding], done: str | None = None):
        self.findings = tuple(failures)
        n = len(self.findings)
        changed = f"the cluster was not touched; {done}" if done else "nothing was changed"
        super().__init__(f"preflight found {n} FAIL{'s' if n != 1 else ''}; {changed}",
                         remedy="fix them, or pass --ignore CHECK for a check you accept")

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        for f in self.findings:
            lines.append(f"  - [{f.check or f.code}] {f.message} ({f.code})")
            if f.remedy:
                lines.append(f"    fix: {f.remedy}")
        if self.remedy:
            lines.append(f"  fix: {self.remedy}")
        return "\n".join(lines)


def gate(report: Report, ignore: Sequence[str], out: Out, done: str | None = None) -> None:
    """PreflightFailed on a FAIL not ignored; `done`: what an earlier phase changed and keeps."""
    findings = apply_ignores(report.findings, ignore)
    fails = [f for f in findings if f.severity is Severity.FAIL]
    warns = [f for f in findings if f.severity is Severity.WARN]
    for f in warns:
        out(f"WARN: [{f.check or f.code}] {f.message}")
    out(f"preflight: {len(findings)} results, {len(fails)} FAIL, {len(warns)} WARN")
    if fails:
        raise PreflightFailed(fails, done)


def probe_peers(plan: ClusterPlan, node: str) -> frozenset[str]:
    """The nodes that can answer probes before NODE's cluster steps: the member a joiner joins
    (a creator has none yet)."""
    if plan.role_of(node) != "join":
        return frozenset()
    return frozenset({plan.creator.name})


def probing_preflight(token: Token, root: str = "/",
                      only: frozenset[str] | None = None) -> Preflight:
    """The preflight with probes of ONLY (default probe_peers()), whose responders run with
    TOKEN: apply's recheck after the network phase."""

    def run(plan: ClusterPlan, node: str) -> Report:
        peers = probe_peers(plan, node) if only is None else only
        return preflight.run(plan, node, probes=preflight.Probes(token, only=peers), root=root)

    return run


@dataclass(frozen=True)
class Started:
    """Responders apply started on members: the members whose responder answers, the preflight
    that probes them (with the responders' token), and why each other member has none (a
    sentence naming it and the fix)."""

    answering: frozenset[str]
    preflight: Preflight
    missing: Mapping[str, str]


# (plan, node, members) -> responders on MEMBERS for the block, stopped when it ends
Starter = Callable[[ClusterPlan, str, frozenset[str]], AbstractContextManager[Started]]


def recheck_links(plan: ClusterPlan, node: str) -> list[int]:
    """NODE's links whose address is one the network phase's stanzas configure."""
    planned = {p.address for p in network_phase.planned_addresses(plan, node)}
    return [n for n, a in sorted(plan.node(node).addresses.items()) if a in planned]


def recheck(plan: ClusterPlan, node: str, *, out: Out, ignore: Sequence[str], done: str,
            with_token: Preflight | None = None,
            starter: Starter | None = None) -> None:
    """The probes the preflight left for later, over the links recheck_links() names, against
    the peers that can answer: WITH_TOKEN (the admin's responders), else responders STARTER
    starts (None: none can be started, as in a Proxmox VE API join). A FAIL stops before the
    cluster steps (gate(); DONE says the network stays configured as planned)."""
    links = recheck_links(plan, node)
    if not links:
        return
    shown = ", ".join(f"link{n}" for n in links)
    peers = probe_peers(plan, node)
    if not peers:
        out(f"network: {shown} configured; no peer can answer probes over it yet ({node} "
            "creates the cluster): the joiners' preflight probes it")
        return
    if with_token is not None:
        out(f"network: probing {shown} over the new address ({', '.join(sorted(peers))})")
        gate(with_token(plan, node), ignore, out, done)
        return
    if starter is None:
        out(f"network: {shown} not probed over the new address (no probe token: pass "
            "--token-file, the token of the members' responders)")
        return
    with starter(plan, node, peers) as started:
        for member in sorted(started.missing):
            out(f"network: {shown} not probed over the new address: {started.missing[member]}")
        if not started.answering:
            return
        out(f"network: probing {shown} over the new address "
            f"({', '.join(sorted(started.answering))}; responder started over ssh)")
        gate(started.preflight(plan, node), ignore, out, done)
