"""corosync.conf as an ordered tree: parse and write back (the editing facade, CorosyncConf, is in
pvestrap.corosync.facade).

The grammar is corosync's own (exec/coroparse.c): one item per line, `name {` opens a section,
`}` alone closes it, `key: value` (split at the first ':'), whole-line `#` comments. The tree keeps
everything corosync would read, in order, plus the comment and blank lines before each item, so a
file can be edited without losing what the user wrote. Two layouts: `format_tree` keeps the tree's
order and layout; `canonical` lays it out the way pvecm writes it (pve-cluster Corosync.pm).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Union, overload

from pvestrap.errors import UserError

INDENT = "  "
BLANKS = " \t\u00a0"  # corosync also trims 0xA0 (no-break space)
MAX_LINE = 510  # corosync reads lines into a 512-byte buffer (newline and NUL included)
# corosync's sections nest four deep at most (quorum { device { net { } } }); a deeper file is
# not a corosync.conf, and the tree's readers and writer recurse once per level.
MAX_DEPTH = 16
FORBIDDEN = "{}\n\r"
ADDR_KEY = re.compile(r"^(ring|link)(\d+)_addr$")


# -- the tree --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """`key: value`. `comments` are the lines above it: '' for a blank line, '# ...' verbatim."""

    key: str
    value: str
    comments: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Section:
    """`name { ... }`. The root of a file is a Section named ''. `trailing` holds the comment and
    blank lines between the last child and the closing brace (or the end of the file)."""

    name: str
    children: tuple[Union[Item, "Section"], ...] = ()
    comments: tuple[str, ...] = ()
    trailing: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)

    def sections(self, name: str) -> tuple["Section", ...]:
        return tuple(c for c in self.children if isinstance(c, Section) and c.name == name)

    def section(self, name: str) -> "Section | None":
        found = self.sections(name)
        return found[0] if found else None

    def items(self, key: str | None = None) -> tuple[Item, ...]:
        return tuple(c for c in self.children if isinstance(c, Item) and key in (None, c.key))

    def item(self, key: str) -> Item | None:
        """The item corosync uses: a repeated key overrides the earlier one."""
        found = self.items(key)
        return found[-1] if found else None

    @overload
    def get(self, key: str) -> str | None: ...

    @overload
    def get(self, key: str, default: str) -> str: ...

    @overload
    def get(self, key: str, default: str | None) -> str | None: ...

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.item(key)
        return found.value if found else default

    def with_children(self, children: Iterable[Union[Item, "Section"]]) -> "Section":
        return dataclasses.replace(self, children=tuple(children))

    def replace(self, old: Union[Item, "Section"], new: Union[Item, "Section", None]) -> "Section":
        """Swap one child (found by identity, not equality) for another, or drop it."""
        kept: list[Union[Item, Section]] = []
        for child in self.children:
            if child is not old:
                kept.append(child)
            elif new is not None:
                kept.append(new)
        return self.with_children(kept)

    def set(self, key: str, value: str) -> "Section":
        """Change the effective item in place (keeping its comments), or append a new one."""
        current = self.item(key)
        if current is None:
            return self.with_children(self.children + (Item(key, value),))
        return self.replace(current, dataclasses.replace(current, value=value))

    def remove(self, key: str) -> "Section":
        return self.with_children(c for c in self.children
                                  if not (isinstance(c, Item) and c.key == key))

    def plain(self) -> tuple:
        """The content corosync sees, without comments, blank lines or line numbers."""
        return tuple((c.key, c.value) if isinstance(c, Item) else (c.name, c.plain())
                     for c in self.children)


Node_ = Union[Item, Section]


# -- parsing ---------------------------------------------------------------------------------------

class ConfParseError(UserError):
    """A line corosync would refuse too. `line` is 1-based."""

    code = "conf-parse-error"

    def __init__(self, source: str, line: int, problem: str, remedy: str | None = None):
        super().__init__(f"{source}:{line}: {problem}", remedy=remedy)
        self.line = line
        self.problem = problem


@dataclass
class _Open:
    """A section being read (mutable scratch space of the parser only)."""

    name: str
    line: int
    comments: tuple[str, ...]
    children: list = field(default_factory=list)
    pending: list = field(default_factory=list)

    def close(self) -> Section:
        return Section(self.name, tuple(self.children), self.comments, tuple(self.pending),
                       self.line)


def parse(text: str, source: str = "corosync.conf") -> Section:
    """Parse corosync.conf text into a tree; ConfParseError names the first bad line."""
    stack = [_Open("", 0, ())]
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, 1):
        _parse_line(raw, number, stack, source)
    if len(stack) > 1:
        top = stack[-1]
        raise ConfParseError(source, top.line, f"section '{top.name}' is never closed "
                             "(missing '}')", remedy="add a line with '}' to close it")
    return stack[0].close()


def _parse_line(raw: str, number: int, stack: list[_Open], source: str) -> None:
    if len(raw.rstrip("\r")) > MAX_LINE:
        raise ConfParseError(source, number, f"line is longer than {MAX_LINE} characters "
                             "(corosync's limit)")
    line = raw.rstrip("\r").rstrip(BLANKS).lstrip(BLANKS)
    current = stack[-1]
    if not line or line.startswith("#"):
        current.pending.append(line)
        return
    comments, current.pending = tuple(current.pending), []
    if "{" in line:
        name, after = line.split("{", 1)
        name = name.rstrip(BLANKS + ":{")
        if after.strip(BLANKS):
            raise ConfParseError(source, number, "unexpected text after '{'",
                                 remedy="put each item on its own line")
        if not name:
            raise ConfParseError(source, number, "missing section name before '{'")
        if len(stack) > MAX_DEPTH:
            raise ConfParseError(source, number, f"sections nest deeper than {MAX_DEPTH} levels "
                                 "(corosync's own nest 4 deep)",
                                 remedy="is this a corosync.conf? close the sections above")
        stack.append(_Open(name, number, comments))
    elif ":" in line:
        key, value = line.split(":", 1)
        key = key.rstrip(BLANKS + ":{")
        if not key:
            raise ConfParseError(source, number, "missing key name before ':'")
        current.children.append(Item(key, value.strip(BLANKS), comments, number))
    elif line == "}":
        if len(stack) == 1:
            raise ConfParseError(source, number, "unmatched '}'",
                                 remedy="remove it, or open the section it closes")
        current.pending = list(comments)
        stack.pop()
        stack[-1].children.append(current.close())
    elif "}" in line:
        raise ConfParseError(source, number, "unexpected text before or after '}'",
                             remedy="put '}' on a line of its own")
    else:
        raise ConfParseError(source, number, "missing ':' (expected 'key: value', "
                             "'name {' or '}')", remedy="write it as 'key: value'")


# -- writing ---------------------------------------------------------------------------------------

def format_tree(root: Section) -> str:
    """The tree as text in its own order, with its comments and blank lines, two-space indent."""
    out: list[str] = []
    for child in root.children:
        _emit(child, 0, out)
    _emit_lines(root.trailing, 0, out)
    for number, line in enumerate(out, 1):
        if len(line) > MAX_LINE:  # a long line that indenting pushed past corosync's buffer
            raise ConfParseError("the formatted file", number, f"line would be {len(line)} "
                                 f"characters long once indented (corosync reads at most "
                                 f"{MAX_LINE})", remedy="shorten that value or comment first")
    return "\n".join(out) + "\n" if out else ""


def _emit_lines(lines: Iterable[str], depth: int, out: list[str]) -> None:
    out.extend(INDENT * depth + text if text else "" for text in lines)


def _emit(node: Node_, depth: int, out: list[str]) -> None:
    _emit_lines(node.comments, depth, out)
    pad = INDENT * depth
    if isinstance(node, Item):
        out.append(f"{pad}{node.key}: {node.value}" if node.value else f"{pad}{node.key}:")
        return
    out.append(f"{pad}{node.name} {{")
    for child in node.children:
        _emit(child, depth + 1, out)
    _emit_lines(node.trailing, depth + 1, out)
    out.append(f"{pad}}}")


def canonical_tree(root: Section) -> Section:
    """The tree in pvecm's order and layout (pve-cluster Corosync.pm write_conf).

    Keys and sections sorted by name at every level; the repeated nodelist.node sections sorted
    by node name (ring0_addr when unnamed) and totem.interface by linknumber (ringnumber), both as
    strings, as pvecm's hash keys are; a blank line after each top-level section and nowhere
    else. pvecm drops comments; here they stay attached to their item.
    """
    children = _sorted_children(root, "")
    out = []
    for i, child in enumerate(children):
        after_section = i > 0 and isinstance(children[i - 1], Section)
        out.append(dataclasses.replace(child, comments=("",) * after_section + child.comments))
    trailing = ("",) * bool(children and isinstance(children[-1], Section))
    return Section("", tuple(out), (), trailing + _no_blanks(root.trailing))


def canonical(root: Section) -> str:
    return format_tree(canonical_tree(root))


def _no_blanks(lines: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(text for text in lines if text)


def _sorted_children(section: Section, path: str) -> tuple[Node_, ...]:
    def order(child: Node_) -> tuple[str, str]:
        if isinstance(child, Item):
            return (child.key, "")
        if f"{path}.{child.name}" == ".nodelist.node":
            return (child.name, child.get("name") or child.get("ring0_addr") or "")
        if f"{path}.{child.name}" == ".totem.interface":
            return (child.name, child.get("linknumber") or child.get("ringnumber") or "")
        return (child.name, "")

    out: list[Node_] = []
    for child in sorted(section.children, key=order):
        if isinstance(child, Section):
            child = Section(child.name, _sorted_children(child, f"{path}.{child.name}"),
                            _no_blanks(child.comments), _no_blanks(child.trailing), child.line)
        else:
            child = dataclasses.replace(child, comments=_no_blanks(child.comments))
        out.append(child)
    return tuple(out)


# -- reading the domain out of the tree -----------------------------------------------------------

class ConfNode(NamedTuple):
    name: str | None
    nodeid: int | str | None  # the raw text when it is not a whole number
    votes: int | str
    addresses: dict[int, str]


@overload
def as_int(text: str) -> int | str: ...


@overload
def as_int(text: str | None) -> int | str | None: ...


def as_int(text: str | None) -> int | str | None:
    """A whole number when the text is one (corosync reads these as integers), else the text."""
    if text is not None and re.fullmatch(r"[0-9]+", text.strip()):
        return int(text)
    return text


def addr_number(child: Node_) -> int | None:
    """N of a ringN_addr (or linkN_addr, which pvecm also reads) item, else None."""
    m = ADDR_KEY.match(child.key) if isinstance(child, Item) else None
    return int(m.group(2)) if m else None


def node_addresses(node: Section) -> dict[int, Item]:
    """Link number -> the node's address item for it."""
    return {number: c for c in node.children
            if isinstance(c, Item) and (number := addr_number(c)) is not None}


def read_node(node: Section) -> ConfNode:
    return ConfNode(node.get("name"), as_int(node.get("nodeid")),
                    as_int(node.get("quorum_votes", "1")),
                    {n: item.value for n, item in sorted(node_addresses(node).items())})


def interface_number(iface: Section) -> int | str:
    """linknumber (corosync 3), else the corosync 2 ringnumber, else corosync's default 0."""
    value = iface.get("linknumber", iface.get("ringnumber"))
    return 0 if value is None else as_int(value)

