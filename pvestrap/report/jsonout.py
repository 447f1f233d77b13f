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
from json.encoder import encode_basestring  # the C one where there is one
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
    data = report_dict(report)
    if indent is None:
        return json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"
    return indented(data, indent) + "\n"


def indented(data: Any, indent: int = 2) -> str:
    """json.dumps(data, indent=INDENT, ensure_ascii=False, allow_nan=False) for plain data,
    character for character, in about half the time: the standard library encodes indented
    JSON in Python generators (its C encoder cannot indent), and a 32-node mesh report is
    ~10,000 findings, 6.5 MB, written after every agent is done (0.13 s of a 2-core
    machine's time at the end of the run, growing with the pairs)."""
    parts: list[str] = []
    _encode(data, parts, "\n", " " * indent)
    return "".join(parts)


def _encode(value: Any, out: list[str], newline: str, step: str) -> None:
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))
    elif kind is dict or kind is list or kind is tuple:
        if not value:
            out.append("{}" if kind is dict else "[]")
            return
        inner = newline + step
        opening = "{" if kind is dict else "["
        for i, item in enumerate(value.items() if kind is dict else value):
            out.append((opening if i == 0 else ",") + inner)
            if kind is dict:
                key, item = item
                if type(key) is not str:  # not plain data: the standard library's rules
                    raise TypeError(f"keys must be str here, not {type(key).__name__}")
                out.append(encode_basestring(key) + ": ")
            _encode(item, out, inner, step)
        out.append(newline + ("}" if kind is dict else "]"))
    elif value is None or kind is bool:
        out.append("null" if value is None else "true" if value else "false")
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float and math.isfinite(value):
        out.append(float.__repr__(value))
    else:  # NaN and infinity (ValueError), and anything plain() would have converted
        out.append(json.dumps(value, ensure_ascii=False, allow_nan=False))
