"""The JSON report: the same content as the text report, for machines.

Shape (stable; tools parse it):
  {"title", "meta", "summary": {total, passed, skipped, warnings, failures, info, ignored,
   exit_code, exit_code_strict}, "sections": [{"name", "title", "findings": [Finding.as_dict()]}],
   "matrices": {link: {...}}}
Values JSON cannot hold are converted rather than failing the whole report: tuples and sets
become lists, enums their value, NaN/infinity null, anything else (paths, addresses) a string.
"""

from __future__ import annotations

import json
import math
from enum import Enum
from typing import Any, Mapping

from pvestrap.report.model import Report
from pvestrap.report.text import summary_counts


def plain(value: Any) -> Any:
    """`value` as plain JSON data (see the module docstring)."""
    kind = type(value)  # the exact types first: a mesh agent's report is ~20,000 values
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(plain(k)): plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [plain(v) for v in value]
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Enum):
        return plain(value.value)
    if isinstance(value, (list, tuple)):  # before Mapping: an ABC check costs ~10x more
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((plain(v) for v in value), key=str)
    return str(value)


def report_dict(report: Report) -> dict[str, Any]:
    summary: dict[str, Any] = dict(summary_counts(report))
    summary["exit_code"] = report.exit_code()
    summary["exit_code_strict"] = report.exit_code(strict=True)
    return plain({
        "title": report.title,
        "meta": report.meta,
        "summary": summary,
        "sections": [{"name": s.name, "title": s.title,
                      "findings": [f.as_dict() for f in s.findings]} for s in report.sections],
        "matrices": report.matrices,
    })


def render_json(report: Report, indent: int | None = 2) -> str:
    text = json.dumps(report_dict(report), indent=indent, ensure_ascii=False, allow_nan=False)
    return text + "\n"
