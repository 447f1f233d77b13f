"""The report: findings of a run in sections, plus the per-link matrices for the heatmaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pvestrap.findings import Finding, Severity

SECTION_ORDER = ("plan", "identity", "timesync", "nics", "addresses", "ports", "tcp", "latency",
                 "mtu", "clock", "joinable", "versions", "quorum", "cluster", "members", "links",
                 "config", "network", "status")


def section_rank(name: str) -> tuple[int, str]:
    """Where a section stands in a report: SECTION_ORDER first, unknown names after, by name."""
    return (SECTION_ORDER.index(name) if name in SECTION_ORDER else len(SECTION_ORDER), name)


@dataclass(frozen=True)
class ReportSection:
    name: str
    title: str
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Report:
    """title: e.g. "pvestrap preflight"; meta: cluster, node, time, version, duration.

    matrices: {"link0": {"nodes": [...], "rtt_ms": [[...]], "state": [[...]]}} for HTML heatmaps
    (rows = from, columns = to; None on the diagonal or where unmeasured).
    """

    title: str
    sections: tuple[ReportSection, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    matrices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.sections for f in s.findings]

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    def exit_code(self, strict: bool = False) -> int:
        """0 all pass, 1 any FAIL, 3 only WARN when strict."""
        if self.count(Severity.FAIL):
            return 1
        if strict and self.count(Severity.WARN):
            return 3
        return 0
