"""The plain-text report, laid out like PVE's upgrade checker (pve8to9) so admins read it at once.

`= SECTION =` headers, one `PASS:`/`WARN:`/`FAIL:`/`SKIP:`/`INFO:` line per finding, the remedy
indented under each WARN and FAIL, then `= SUMMARY =` with the counts. The lines stay greppable
with colours on: a colour code never sits between the label and its colon.
"""

from __future__ import annotations

import os
import textwrap
from typing import IO, Any, Mapping

from pvestrap.findings import Finding, Severity
from pvestrap.report.model import Report

WIDTH = 100
_COLORS = {Severity.PASS: "32", Severity.WARN: "33", Severity.FAIL: "1;31",
           Severity.SKIP: "2", Severity.INFO: "36"}
_BOLD = "1"


def wants_color(stream: IO[str], env: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set or TERM is dumb."""
    env = os.environ if env is None else env
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in env and env.get("TERM") != "dumb"


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def summary_counts(report: Report) -> dict[str, int]:
    """The SUMMARY numbers. INFO lines are notes, not check results: they are not in TOTAL."""
    counts = {sev: report.count(sev) for sev in Severity}
    return {
        "total": counts[Severity.PASS] + counts[Severity.SKIP] + counts[Severity.WARN]
        + counts[Severity.FAIL],
        "passed": counts[Severity.PASS],
        "skipped": counts[Severity.SKIP],
        "warnings": counts[Severity.WARN],
        "failures": counts[Severity.FAIL],
        "info": counts[Severity.INFO],
        "ignored": sum(1 for f in report.findings if f.ignored),
    }


IGNORED_SUFFIX = " (FAIL ignored by request)"  # what findings.apply_ignores appends


def display_message(f: Finding) -> str:
    """The message without apply_ignores' suffix: renderers mark ignored FAILs their own way."""
    if f.ignored and f.message.endswith(IGNORED_SUFFIX):
        return f.message[:-len(IGNORED_SUFFIX)]
    return f.message


def finding_line(f: Finding, color: bool = False) -> list[str]:
    """The line(s) of one finding: `LABEL: subject: message [code]` and an indented remedy."""
    label = _paint(f.severity.label, _COLORS[f.severity], color)
    where = f"{f.subject}: " if f.subject else ""
    tag = f"{f.code}, FAIL ignored" if f.ignored else f.code
    lines = [f"{label}: {where}{display_message(f)} [{tag}]"]
    if f.remedy and f.severity in (Severity.WARN, Severity.FAIL):
        lines += textwrap.wrap(f.remedy, WIDTH, initial_indent="    fix: ",
                               subsequent_indent="         ", break_on_hyphens=False)
    return lines


def _header(report: Report, color: bool) -> list[str]:
    lines = [_paint(report.title, _BOLD, color)]
    meta = [f"{k}: {v}" for k, v in report.meta.items() if isinstance(v, (str, int, float))]
    if meta:
        lines += textwrap.wrap("; ".join(meta), WIDTH)
    return lines + [""]


def _matrix(name: str, matrix: Mapping[str, Any]) -> list[str]:
    """A link's RTT matrix as a small table (ms; `-` unmeasured, state words where not open)."""
    nodes = [str(n) for n in matrix.get("nodes", ())]
    if not nodes:
        return []
    rtt = matrix.get("rtt_ms") or []
    state = matrix.get("state") or []
    width = max(8, *(len(n) for n in nodes)) + 1
    lines = [f"= {name.upper()} RTT (ms, rows from, columns to) =", "",
             "".ljust(width) + "".join(n.rjust(width) for n in nodes)]
    for i, src in enumerate(nodes):
        cells = []
        for j in range(len(nodes)):
            cells.append(cell_text(_at(rtt, i, j), _at(state, i, j), i == j).rjust(width))
        lines.append(src.ljust(width) + "".join(cells))
    return lines + [""]


def _at(grid: Any, i: int, j: int) -> Any:
    try:
        return grid[i][j]
    except (IndexError, TypeError, KeyError):
        return None


def cell_text(rtt: Any, state: Any, diagonal: bool = False) -> str:
    """What a matrix cell says: an RTT in ms, or why there is none."""
    if diagonal:
        return "."
    if state in ("closed", "filtered", "disconnected"):
        return str(state)
    if isinstance(rtt, (int, float)):
        return f"{rtt:.2f}"
    return "-"


def render_text(report: Report, color: bool = False) -> str:
    lines = _header(report, color)
    for section in report.sections:
        if not section.findings:
            continue
        lines += [_paint(f"= {section.title.upper()} =", _BOLD, color), ""]
        for f in section.findings:
            lines += finding_line(f, color)
        lines.append("")
    for name, matrix in report.matrices.items():
        lines += _matrix(name, matrix)
    c = summary_counts(report)
    lines += [_paint("= SUMMARY =", _BOLD, color), "",
              f"TOTAL:    {c['total']}",
              _paint(f"PASSED:   {c['passed']}", _COLORS[Severity.PASS], color and c["passed"] > 0),
              f"SKIPPED:  {c['skipped']}",
              _paint(f"WARNINGS: {c['warnings']}", _COLORS[Severity.WARN],
                     color and c["warnings"] > 0),
              _paint(f"FAILURES: {c['failures']}", _COLORS[Severity.FAIL],
                     color and c["failures"] > 0)]
    if c["ignored"]:
        lines.append(f"IGNORED:  {c['ignored']} (FAILs turned into WARNs by --ignore)")
    if c["failures"] or c["warnings"]:
        lines += ["", "ATTENTION: read the lines marked FAIL and WARN above; each says how to fix "
                      "it."]
    return "\n".join(lines) + "\n"
