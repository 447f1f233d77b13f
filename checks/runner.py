"""Run checks and gather their findings into report sections (pvestrap.preflight.run uses it).

The runner owns the cross-cutting rules: every finding carries the id of the check that made it,
a crashing check becomes one FAIL finding (a bug in one check must not hide the others), and
`--ignore CHECK` downgrades FAILs to WARNs with a note, after everything ran.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Mapping, Sequence

from pvestrap.errors import UserError
from pvestrap.findings import Finding, Severity, apply_ignores
from pvestrap.report.model import ReportSection, section_rank

from pvestrap.checks.base import Check, Context

SECTION_TITLES = {
    "plan": "CLUSTER PLAN",
    "identity": "HOSTNAME AND NAMES",
    "timesync": "TIME SYNCHRONISATION",
    "nics": "NETWORK INTERFACES",
    "addresses": "ADDRESS CONFLICTS",
    "ports": "COROSYNC PORTS",
    "tcp": "TCP SERVICES",
    "latency": "LATENCY",
    "mtu": "MTU",
    "clock": "CLOCK OFFSET BETWEEN NODES",
    "joinable": "JOIN PRECONDITIONS",
    "versions": "VERSIONS",
    "quorum": "QUORUM",
    "status": "CLUSTER STATUS",
}


def check_ignore_ids(given: Iterable[str], known: Iterable[str], flag: str = "--ignore") -> None:
    """Refuse a check id that no check has (a typo would silently ignore nothing), naming the
    closest real one."""
    ids = sorted(set(known))
    for wanted in given:
        if wanted not in ids:
            import difflib  # only for a typo: not part of every start

            close = difflib.get_close_matches(wanted, ids, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{flag} {wanted!r}: no check has that id", code="ignore-unknown",
                            remedy=f"{hint}--list-checks shows every check id")


def run_one(check: Check, ctx: Context) -> list[Finding]:
    try:
        found = list(check.run(ctx))
    except Exception as exc:  # a bug in one check is reported, the others still run
        return [Finding("check-crashed", Severity.FAIL,
                        f"check {check.id} crashed: {type(exc).__name__}: {exc}",
                        check=check.id, payload={"exception": type(exc).__name__},
                        remedy="this is a bug in pvestrap; please report it with --debug output")]
    return [f if f.check else dataclasses.replace(f, check=check.id) for f in found]


def collect(checks: Sequence[Check], ctx: Context,
            on_progress: Callable[[Check], None] | None = None) -> dict[str, list[Finding]]:
    """Every check's findings by family (the report section), in check order."""
    by_family: dict[str, list[Finding]] = {}
    for check in checks:
        if on_progress:
            on_progress(check)
        by_family.setdefault(check.family, []).extend(run_one(check, ctx))
    return by_family


def build_sections(by_family: Mapping[str, Sequence[Finding]],
                   ignore: Iterable[str] = ()) -> tuple[ReportSection, ...]:
    """Non-empty families as titled sections in report order, with --ignore applied."""
    ignored = tuple(ignore)
    return tuple(
        ReportSection(name, SECTION_TITLES.get(name, name.upper()),
                      tuple(apply_ignores(fs, ignored)))
        for name, fs in sorted(by_family.items(), key=lambda kv: section_rank(kv[0]))
        if fs
    )
