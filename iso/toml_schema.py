"""A small declarative checker for the two TOML formats of the ISO side.

The installer's answer.toml (kebab-case, Proxmox's rules) and pvestrap's installer settings
(snake_case, like the cluster answer file) are both described as trees of `Field`s; one walker
reports unknown, missing and mistyped keys, enum and range violations as findings named by their
key path, so the formats and their checks cannot drift apart.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from pvestrap.answer_schema import (BOOL, INT, MAP, NUM, STR, STRS, TABLE, join_path, toml_type,
                                     type_ok)
from pvestrap.findings import Finding, fail

STR_OR_TABLE = "string-or-table"
_EXPECTED = {STR: "a string", INT: "a whole number", NUM: "a number", BOOL: "true or false",
             STRS: "an array of strings", TABLE: "a table", MAP: "a table of strings",
             STR_OR_TABLE: "a string or a table"}


@dataclass(frozen=True)
class Field:
    """One key. MAP is a table of free-form string keys to string values (udev filters)."""

    name: str
    kind: str
    required: bool = False
    children: tuple["Field", ...] = ()
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class Style:
    """How a format spells its keys, and the codes its findings carry."""

    prefix: str          # finding codes: f"{prefix}-key-unknown" ...
    separator: str       # "-" (kebab-case) or "_" (snake_case)

    def code(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def check(raw: dict[str, Any], fields: tuple[Field, ...], style: Style,
          path: str = "") -> tuple[dict[str, Any], list[Finding]]:
    """Return the well-typed known values and a finding for every other key."""
    out: list[Finding] = []
    return _table(raw, fields, style, path, out), out


def _table(raw: dict[str, Any], fields: tuple[Field, ...], style: Style, path: str,
           out: list[Finding]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    by_name = {f.name: f for f in fields}
    for name, value in raw.items():
        sub = join_path(path, name)
        field = by_name.get(name)
        if field is None:
            out.append(_unknown(name, sub, fields, style))
            continue
        ok, checked = _value(value, field, style, sub, out)
        if ok:
            clean[name] = checked
    for field in fields:
        if field.required and field.name not in raw:
            out.append(fail(style.code("key-missing"), f"required key {field.name!r} is missing",
                            join_path(path, field.name), payload={"key": field.name},
                            remedy=f"add {field.name}" + (f" ({field.doc})" if field.doc else "")))
    return clean


def _unknown(name: str, path: str, fields: tuple[Field, ...], style: Style) -> Finding:
    known = [f.name for f in fields]
    other = "_" if style.separator == "-" else "-"
    respelled = name.replace(other, style.separator)
    if other in name and respelled in known:
        casing = "kebab-case" if style.separator == "-" else "snake_case"
        return fail(style.code("key-misspelled"), f"{name!r} must be spelled {respelled!r} "
                    f"({casing})", path, payload={"key": name, "suggestion": respelled},
                    remedy=f"rename it to {respelled}")
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    suggestion = close[0] if close else None
    remedy = (f"did you mean {suggestion!r}?" if suggestion
              else f"known keys here: {', '.join(known)}" if known else None)
    return fail(style.code("key-unknown"), f"unknown key {name!r}", path,
                payload={"key": name, "suggestion": suggestion}, remedy=remedy)


def _value(value: Any, field: Field, style: Style, path: str,
           out: list[Finding]) -> tuple[bool, Any]:
    kind = field.kind
    if kind == STR_OR_TABLE:
        kind = TABLE if isinstance(value, dict) else STR
    if kind == TABLE:
        if not isinstance(value, dict):
            return _mistyped(value, field, style, path, out)
        return True, _table(value, field.children, style, path, out)
    if kind == MAP:
        return _map(value, field, style, path, out)
    if kind == STRS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return _mistyped(value, field, style, path, out)
        return True, tuple(value)
    if not _scalar_ok(value, kind):
        return _mistyped(value, field, style, path, out)
    return _in_range(value, field, style, path, out)


def _map(value: Any, field: Field, style: Style, path: str,
         out: list[Finding]) -> tuple[bool, Any]:
    if not isinstance(value, dict):
        return _mistyped(value, field, style, path, out)
    bad = [k for k, v in value.items() if not isinstance(v, str)]
    for key in bad:
        out.append(fail(style.code("type-invalid"), f"expected a string, got "
                        f"{toml_type(value[key])}", join_path(path, key),
                        payload={"expected": STR, "got": toml_type(value[key])},
                        remedy="put the value in double quotes"))
    return not bad, dict(value)


def _scalar_ok(value: Any, kind: str) -> bool:
    """The cluster file's type rule; here a non-finite number is a type error too."""
    return type_ok(value, kind) and (kind != NUM or math.isfinite(value))


def _in_range(value: Any, field: Field, style: Style, path: str,
              out: list[Finding]) -> tuple[bool, Any]:
    if field.enum and value not in field.enum:
        out.append(fail(style.code("value-invalid"), f"{value!r} is not one of "
                        f"{', '.join(field.enum)}", path,
                        payload={"value": value, "allowed": list(field.enum)},
                        remedy=f"use one of: {', '.join(field.enum)}"))
        return False, None
    low, high = field.minimum, field.maximum
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            (low is not None and value < low) or (high is not None and value > high)):
        bounds = (f"{_num(low)}..{_num(high)}" if low is not None and high is not None
                  else f">= {_num(low)}" if low is not None else f"<= {_num(high)}")
        out.append(fail(style.code("value-out-of-range"), f"{_num(value)} is outside "
                        f"{bounds}", path, payload={"value": value, "minimum": low,
                                                    "maximum": high},
                        remedy=f"use a value {bounds}"))
        return False, None
    return True, value


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mistyped(value: Any, field: Field, style: Style, path: str,
              out: list[Finding]) -> tuple[bool, None]:
    got = toml_type(value)
    remedy = None
    if field.kind == STR and got in ("integer", "float"):
        remedy = "put the value in double quotes"
    elif field.kind in (INT, NUM) and got == "string":
        remedy = "write the number without quotes"
    elif field.kind == BOOL and got == "string":
        remedy = "write true or false without quotes"
    article = "an" if got[0] in "aeiou" else "a"
    out.append(fail(style.code("type-invalid"), f"expected {_EXPECTED[field.kind]}, got "
                    f"{article} {got}", path, payload={"expected": field.kind, "got": got},
                    remedy=remedy))
    return False, None
