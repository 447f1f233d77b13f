"""Where the keys of a TOML text are: tomllib keeps no positions, so findings named by key path
get their line from here (the cluster answer file, the installer settings and answer.toml)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from pvestrap.toml_schema import join_path

_LAST_PART = re.compile(r'(\[\d+\]|\.(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"))$')


def key_lines(text: str) -> dict[str, int]:
    """Map the key paths of a TOML text that tomllib accepted to the lines defining them.

    tomllib keeps no positions, so the text is walked line by line: headers set the current
    table (arrays of tables count their entries) and every key/value is re-parsed with tomllib,
    growing over continuation lines, so quoted and dotted keys, inline tables and multi-line
    values are read exactly as the loader read them.
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    where: dict[str, int] = {}
    counts: dict[str, int] = {}
    table, i = "", 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
        elif stripped.startswith("["):
            table = _header(stripped, counts, where, i + 1)
            i += 1
        else:
            i = _key_value(lines, i, table, where)
    return where


def line_of(where: dict[str, int], path: str | None) -> int | None:
    """The line of `path`, else of the nearest enclosing key or table that is in the file."""
    while path:
        if path in where:
            return where[path]
        shorter = _LAST_PART.sub("", path)
        if shorter == path:
            path = ""
        else:
            path = shorter
    return None


def _descend(doc: Any) -> tuple[list[str], Any]:
    """Key names along a document made of one nested key (a header or a `key = 0` line)."""
    parts: list[str] = []
    while isinstance(doc, list) and doc:
        doc = doc[0]
    while isinstance(doc, dict) and len(doc) == 1:
        name, doc = next(iter(doc.items()))
        parts.append(name)
        while isinstance(doc, list) and doc:
            doc = doc[0]
    return parts, doc


def _header(stripped: str, counts: dict[str, int], where: dict[str, int], lineno: int) -> str:
    parts, _ = _descend(tomllib.loads(stripped))
    path = ""
    for n, name in enumerate(parts):
        path = join_path(path, name)
        where.setdefault(path, lineno)
        last = n == len(parts) - 1
        if last and stripped.startswith("[["):
            counts[path] = counts.get(path, -1) + 1
        if path in counts:
            path = f"{path}[{counts[path]}]"
            where.setdefault(path, lineno)
    return path


def _split_key(line: str) -> str | None:
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return line[:i]
        i += 1
    return None


_SPECIAL = re.compile(r"\"\"\"|\'\'\'|[\"\'#\[\]{}]")
_BASIC_END = {'"': re.compile(r'\\.|"'), '"""': re.compile(r'\\.|"""')}


def _value_end(lines: list[str], i: int, start: int) -> int:
    """The last line of the value that starts at lines[i][start:], found in one pass: strings
    (basic, literal, both multi-line), comments and bracket depth are tracked, so a long value
    costs one scan instead of a parse per line (a 40 KB string took 38 s that way)."""
    quote, depth = "", 0
    for j in range(i, len(lines)):
        line, k = lines[j], start if j == i else 0
        while k < len(line):
            if quote:
                k, quote = _string_end(line, k, quote)
                continue
            found = _SPECIAL.search(line, k)
            if found is None or found.group() == "#":
                break
            token, k = found.group(), found.end()
            if token in "[{":
                depth += 1
            elif token in "]}":
                depth -= 1
            else:
                quote = token
        if quote in ('"', "'"):
            quote = ""  # a one-line string cannot go on: tomllib will say what is wrong
        if not quote and depth <= 0:
            return j
    return len(lines) - 1


def _string_end(line: str, k: int, quote: str) -> tuple[int, str]:
    """(where scanning goes on, the quote still open) inside a string starting at line[k:]."""
    if quote in _BASIC_END:  # basic strings have escapes: a backslash skips the next character
        for found in _BASIC_END[quote].finditer(line, k):
            if found.group() == quote:
                return found.end(), ""
        return len(line), quote
    end = line.find(quote, k)
    return (len(line), quote) if end < 0 else (end + len(quote), "")


def _key_value(lines: list[str], i: int, table: str, where: dict[str, int]) -> int:
    key_text = _split_key(lines[i])
    if key_text is None:
        return i + 1
    parts, _ = _descend(tomllib.loads(key_text + "= 0"))
    for j in range(_value_end(lines, i, len(key_text) + 1), len(lines)):
        try:
            doc = tomllib.loads("\n".join(lines[i:j + 1]))
        except tomllib.TOMLDecodeError:
            continue
        path, value = table, doc
        for name in parts:
            path = join_path(path, name)
            value = value[name]
            where.setdefault(path, i + 1)
        _record(path, value, i + 1, where)
        return j + 1
    return len(lines)


def _record(path: str, value: Any, lineno: int, where: dict[str, int]) -> None:
    if isinstance(value, dict):
        items = [(join_path(path, k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{n}]", v) for n, v in enumerate(value)]
    else:
        return
    for sub, v in items:
        where.setdefault(sub, lineno)
        _record(sub, v, lineno, where)
