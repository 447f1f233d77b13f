"""The one checker for pvestrap's TOML formats: a format is a tree of `Key`s.

It serves the cluster answer file (pvestrap.answer_schema), its [installer] settings and
Proxmox's installer answer.toml (pvestrap.installer.answer_format). One walk reports unknown,
missing, mistyped and (where the format's `Style` asks) out-of-range keys as findings named by
their TOML key path, and returns the well-typed known values, so the caller can go on checking
what is left. How a format spells its keys and what its findings are called is its `Style`.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from pvestrap.findings import Finding, fail, warn

STR, INT, NUM, STRS, TABLE, TABLES = "string", "integer", "number", "strings", "table", "tables"
BOOL, MAP = "boolean", "map"  # MAP: a table of free-form keys to strings (udev globs)
STR_OR_TABLE = "string-or-table"
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_INDEX = re.compile(r"\[[0-9]+\]")
_EXPECTED = {STR: "a string", INT: "a whole number", NUM: "a number", BOOL: "true or false",
             STRS: "an array of strings", TABLE: "a table", TABLES: "an array of tables",
             MAP: "a table of strings", STR_OR_TABLE: "a string or a table"}

# What a key spelled in the other case style (kebab vs snake) is, unless it is one of the key's
# `aliases` (accepted under the key's name with a {prefix}-key-deprecated warning):
MISSPELLED = "misspelled"  # refused as {prefix}-key-misspelled
UNKNOWN = "unknown"        # refused as {prefix}-key-unknown, suggesting the right spelling


@dataclass(frozen=True)
class Key:
    """One key of a format. `pattern` makes it a family of keys (link0..link7, a node's name),
    `family` lists the names it stands for (for suggestions) and `near` is a looser pattern
    with its remedy, for names that look like the family but are not in it (link8).

    `rules` are JSON Schema keywords (enum, minimum, maximum, pattern ...): the editor schema
    shows them all; the walk checks enum and range where the style says so.
    `target` (installer settings) is the installer answer.toml key the value is rendered to.
    `aliases` are deprecated spellings the format still accepts (with a warning).
    """

    name: str
    kind: str
    doc: str = ""
    required: bool = False
    children: tuple["Key", ...] = ()
    pattern: str | None = None
    rules: tuple[tuple[str, Any], ...] = ()
    target: str | None = None
    family: tuple[str, ...] = ()
    near: tuple[str, str] | None = None
    aliases: tuple[str, ...] = ()

    def rule(self, name: str) -> Any:
        return dict(self.rules).get(name)

    def child(self, name: str) -> "Key | None":
        for key in self.children:
            if re.fullmatch(key.pattern, name) if key.pattern else key.name == name:
                return key
        return None


def rules(**kw: Any) -> tuple[tuple[str, Any], ...]:
    """JSON Schema keywords for `Key.rules`."""
    return tuple(kw.items())


@dataclass(frozen=True)
class Style:
    """How a format spells its keys and names its findings."""

    prefix: str                  # finding codes: f"{prefix}-key-unknown" ...
    separator: str               # "-" (kebab-case) or "_" (snake_case)
    values: bool = True          # check enum and range here (False: the caller's rules do)
    respelled: str = MISSPELLED  # a key in the other case style: MISSPELLED or UNKNOWN
    secret: Callable[[str], Finding] | None = None  # refuse password-like keys at a path

    def code(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def join_path(path: str, name: str) -> str:
    """TOML key path as shown to users; odd keys are quoted the way TOML would need them."""
    part = name if BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)
    return f"{path}.{part}" if path else part


def check(raw: dict[str, Any], keys: tuple[Key, ...], style: Style,
          path: str = "") -> tuple[dict[str, Any], list[Finding]]:
    """Return the well-typed known values of RAW and a finding for every other key."""
    out: list[Finding] = []
    return _table(raw, keys, style, path, out), out


def is_secret(name: str) -> bool:
    """Keys that would hold a password in clear (root_password, password, root-password ...)."""
    norm = name.lower().replace("-", "_")
    return ("password" in norm or "passwd" in norm) and norm not in ("password_file",
                                                                       "password_env")


def _table(raw: dict[str, Any], keys: tuple[Key, ...], style: Style, path: str,
           out: list[Finding]) -> dict[str, Any]:
    holder = Key("", TABLE, children=keys)
    clean: dict[str, Any] = {}
    given: set[str] = set()
    excused: set[str] = set()
    for name, value in raw.items():
        sub = join_path(path, name)
        key, spelled = holder.child(name), name
        named = key is not None and bool(key.pattern)  # NAME is data (a node's name), no field
        if style.secret is not None and is_secret(name) and not named:
            out.append(style.secret(sub))
            continue
        if key is None:
            key, spelled = _respelled(name, keys, style, sub, out)
        if key is None:
            excused.add(spelled)  # a misspelled key is not also missing
            if style.secret is not None:
                out.extend(_secrets_within(value, sub, style.secret))
            continue
        if spelled in given:
            out.append(fail(style.code("key-duplicate"), f"{spelled!r} is given twice (also "
                            "in its other spelling)", sub, payload={"key": spelled},
                            remedy="keep one of them"))
            continue
        given.add(spelled)
        ok, checked = _value(value, key, style, sub, out)
        if ok:
            clean[spelled] = checked
    for key in keys:
        if key.required and key.name not in given | excused:
            out.append(fail(style.code("key-missing"), f"required key {key.name!r} is missing",
                            join_path(path, key.name), payload={"key": key.name},
                            remedy=f"add {key.name}" + (f" ({key.doc})" if key.doc else "")))
    return clean


def _respelled(name: str, keys: tuple[Key, ...], style: Style, path: str,
               out: list[Finding]) -> tuple[Key | None, str]:
    """The key NAME stands for when it is a deprecated alias (accepted, with a warning), else
    (None, NAME) with the finding that says why not: misspelled (the other case style) or
    unknown."""
    alias = next((k for k in keys if name in k.aliases), None)
    if alias is not None:
        out.append(warn(style.code("key-deprecated"), f"{name!r} is a deprecated spelling; use "
                        f"{alias.name!r}", path, payload={"key": name, "suggestion": alias.name},
                        remedy=f"rename it to {alias.name}"))
        return alias, alias.name
    other = "_" if style.separator == "-" else "-"
    right = name.replace(other, style.separator)
    known = any(not k.pattern and k.name == right for k in keys)
    if other not in name or not known or style.respelled == UNKNOWN:
        out.append(_unknown(name, path, keys, style))
        return None, name
    casing = "kebab-case" if style.separator == "-" else "snake_case"
    out.append(fail(style.code("key-misspelled"), f"{name!r} must be spelled {right!r} "
                    f"({casing})", path, payload={"key": name, "suggestion": right},
                    remedy=f"rename it to {right}"))
    return None, right


def _unknown(name: str, path: str, keys: tuple[Key, ...], style: Style) -> Finding:
    known = [k.name for k in keys if not k.pattern]
    family = [n for k in keys for n in k.family]
    near = next((k.near[1] for k in keys if k.near and re.fullmatch(k.near[0], name)), None)
    right = name.lower().replace("-" if style.separator == "_" else "_", style.separator)
    if right in known:
        suggestion: str | None = right
    else:
        import difflib  # only for an unknown key: not part of every start

        close = difflib.get_close_matches(name, known + family, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    if near:
        remedy: str | None = near
    elif suggestion:
        remedy = f"did you mean {suggestion!r}?"
    else:
        remedy = f"known keys here: {', '.join(known + family[:1])}" if known else None
    return fail(style.code("key-unknown"), f"unknown key {name!r}", path,
                payload={"key": name, "suggestion": suggestion}, remedy=remedy)


def _value(value: Any, key: Key, style: Style, path: str,
           out: list[Finding]) -> tuple[bool, Any]:
    kind = key.kind
    if kind == STR_OR_TABLE:
        kind = TABLE if isinstance(value, dict) else STR
    if kind == TABLE:
        if not isinstance(value, dict):
            return _mistyped(value, key, style, path, out)
        return True, _table(value, key.children, style, path, out)
    if kind == TABLES:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return _mistyped(value, key, style, path, out)
        return True, [_table(v, key.children, style, f"{path}[{i}]", out)
                      for i, v in enumerate(value)]
    if kind == MAP:
        return _map(value, key, style, path, out)
    if kind == STRS:
        if not isinstance(value, list):
            return _mistyped(value, key, style, path, out)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                _mistyped(item, Key(key.name, STR, key.doc), style, f"{path}[{i}]", out)
        return True, tuple(item for item in value if isinstance(item, str))
    if not type_ok(value, kind):
        return _mistyped(value, key, style, path, out)
    if not _representable(value, kind, style, path, out):
        return False, None
    if style.values and not _in_range(value, key, style, path, out):
        return False, None
    return True, float(value) if kind == NUM else value


def _map(value: Any, key: Key, style: Style, path: str,
         out: list[Finding]) -> tuple[bool, Any]:
    """Free-form keys to strings: a value of another type is named by its own key path (and
    the table is dropped: a filter missing one of its globs would pick other devices)."""
    if not isinstance(value, dict):
        return _mistyped(value, key, style, path, out)
    bad = [name for name, item in value.items() if not isinstance(item, str)]
    for name in bad:
        _mistyped(value[name], Key(name, STR, key.doc), style, join_path(path, name), out)
    return not bad, dict(value)


def type_ok(value: Any, kind: str) -> bool:
    """Whether a parsed TOML value has the scalar kind (a bool is never a number)."""
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _representable(value: Any, kind: str, style: Style, path: str, out: list[Finding]) -> bool:
    """Integers fit in 64 bits (as in every TOML reader but Python's); numbers are finite."""
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        out.append(fail(style.code("number-out-of-range"), "integers in TOML must fit in 64 "
                        "bits", path, remedy="use a realistic value"))
        return False
    if kind == NUM and not math.isfinite(value):
        out.append(fail(style.code("number-out-of-range"), f"{value} is not a finite number",
                        path, remedy="use a number such as 2.0"))
        return False
    return True


def _in_range(value: Any, key: Key, style: Style, path: str, out: list[Finding]) -> bool:
    enum = key.rule("enum")
    if enum and value not in enum:
        out.append(fail(style.code("value-invalid"), f"{value!r} is not one of "
                        f"{', '.join(enum)}", path, payload={"value": value, "allowed": list(enum)},
                        remedy=f"use one of: {', '.join(enum)}"))
        return False
    low, high = key.rule("minimum"), key.rule("maximum")
    if isinstance(value, (int, float)) and (
            (low is not None and value < low) or (high is not None and value > high)):
        bounds = (f"{_num(low)}..{_num(high)}" if low is not None and high is not None
                  else f">= {_num(low)}" if low is not None else f"<= {_num(high)}")
        out.append(fail(style.code("value-out-of-range"), f"{_num(value)} is outside "
                        f"{bounds}", path, payload={"value": value, "minimum": low,
                                                    "maximum": high},
                        remedy=f"use a value {bounds}"))
        return False
    return True


def _num(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for messages (the value itself is never shown)."""
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((str, "string"), (int, "integer"), (float, "float"), (dict, "table"),
                       (list, "array")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (datetime.date, datetime.time)):
        return "date-time"
    return type(value).__name__


def _mistyped(value: Any, key: Key, style: Style, path: str,
              out: list[Finding]) -> tuple[bool, None]:
    got = toml_type(value)
    remedy = None
    if key.kind == STR and got in ("integer", "float"):
        remedy = "put the value in double quotes"
    elif key.kind == TABLES and got == "table":
        remedy = f"write each entry as [[{_INDEX.sub('', path)}]]"
    elif key.kind in (INT, NUM) and got == "string":
        remedy = "write the number without quotes"
    elif key.kind == BOOL and got == "string":
        remedy = "write true or false without quotes"
    article = "an" if got[0] in "aeiou" else "a"
    out.append(fail(style.code("type-invalid"), f"expected {_EXPECTED[key.kind]}, got "
                    f"{article} {got}", path, payload={"expected": key.kind, "got": got},
                    remedy=remedy))
    return False, None


def _secrets_within(value: Any, path: str, secret: Callable[[str], Finding]) -> list[Finding]:
    """Secrets nested under an unknown key (a pasted installer [global] with root-password)."""
    out: list[Finding] = []
    if isinstance(value, dict):
        for name, sub in value.items():
            sub_path = join_path(path, name)
            out += [secret(sub_path)] if is_secret(name) else _secrets_within(sub, sub_path,
                                                                               secret)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            out += _secrets_within(sub, f"{path}[{i}]", secret)
    return out
