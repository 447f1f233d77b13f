"""corosync.conf as an ordered tree: parse, edit through a facade, write back.

The grammar is corosync's own (exec/coroparse.c): one item per line, `name {` opens a section,
`}` alone closes it, `key: value` (split at the first ':'), whole-line `#` comments. The tree keeps
everything corosync would read, in order, plus the comment and blank lines before each item, so a
file can be edited without losing what the user wrote. Two writers: `format_tree` keeps the tree's
order and layout; `canonical` lays it out the way pvecm writes it (pve-cluster Corosync.pm).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, NamedTuple, Union

from pvestrap.errors import UserError, ValidationFailed
from pvestrap.findings import Finding, fail
from pvestrap.plan import MAX_LINK, NAME_MAX, NAME_RE, NODEID_MAX

if TYPE_CHECKING:
    from pvestrap.plan import ClusterPlan

INDENT = "  "
BLANKS = " \t\u00a0"  # corosync also trims 0xA0 (no-break space)
MAX_LINE = 510  # corosync reads lines into a 512-byte buffer (newline and NUL included)
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

    def get(self, key: str, default: str | None = None) -> str | None:
        found = self.item(key)
        return found.value if found else default

    def with_children(self, children: Iterable[Union[Item, "Section"]]) -> "Section":
        return dataclasses.replace(self, children=tuple(children))

    def replace(self, old: Union[Item, "Section"], new: Union[Item, "Section", None]) -> "Section":
        """Swap one child (found by identity, not equality) for another, or drop it."""
        return self.with_children(new if c is old else c for c in self.children
                                  if c is not old or new is not None)

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
                             "'name {' or '}')", remedy=f"write it as 'key: value'")


# -- writing ---------------------------------------------------------------------------------------

def format_tree(root: Section) -> str:
    """The tree as text in its own order, with its comments and blank lines, two-space indent."""
    out: list[str] = []
    for child in root.children:
        _emit(child, 0, out)
    _emit_lines(root.trailing, 0, out)
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
    return {addr_number(c): c for c in node.children if addr_number(c) is not None}


def read_node(node: Section) -> ConfNode:
    return ConfNode(node.get("name"), as_int(node.get("nodeid")),
                    as_int(node.get("quorum_votes", "1")),
                    {n: item.value for n, item in sorted(node_addresses(node).items())})


def interface_number(iface: Section) -> int | str:
    """linknumber (corosync 3), else the corosync 2 ringnumber, else corosync's default 0."""
    value = iface.get("linknumber", iface.get("ringnumber"))
    return 0 if value is None else as_int(value)


# -- the facade ------------------------------------------------------------------------------------

def refuse_forbidden(*values: object) -> None:
    """`{ } \\n \\r` in a value would open, close or end sections: config injection."""
    for value in values:
        bad = sorted({c for c in str(value) if c in FORBIDDEN})
        if bad:
            raise UserError(f"value {str(value)!r} contains {', '.join(map(repr, bad))}",
                            code="conf-forbidden-character",
                            remedy="remove braces and line breaks from the value")


@dataclass(frozen=True)
class CorosyncConf:
    """Domain operations over the tree. Immutable: every operation returns a new CorosyncConf.

    An operation checks everything it is given and raises (UserError, or ValidationFailed
    carrying every problem) before anything changes, so a refused edit never reaches a file.
    """

    tree: Section

    @classmethod
    def parse(cls, text: str, source: str = "corosync.conf") -> "CorosyncConf":
        return cls(parse(text, source))

    @classmethod
    def create(cls, plan: "ClusterPlan") -> "CorosyncConf":
        """The whole cluster's file in pvecm's keys, values and layout (create_conf, then the
        nodes `pvecm add` adds), at config_version 1: pvecm itself would be at 1 + one per join."""
        plan.check("plan")
        nodes = tuple(Section("node", _node_items(n.name, n.nodeid, n.votes, n.addresses))
                      for n in plan.nodes)
        totem = [Item("cluster_name", plan.cluster_name), Item("config_version", "1"),
                 *(_interface(link.number, link.priority) for link in plan.links),
                 Item("ip_version", "ipv4-6"), Item("link_mode", "passive"),
                 Item("secauth", "on"), Item("version", "2")]
        if plan.token_coefficient:
            totem.append(Item("token_coefficient", str(plan.token_coefficient)))
        return cls(canonical_tree(Section("", (
            Section("logging", (Item("debug", "off"), Item("to_syslog", "yes"))),
            Section("nodelist", nodes),
            Section("quorum", (Item("provider", "corosync_votequorum"),)),
            Section("totem", tuple(totem))))))

    def text(self) -> str:
        """The file in the tree's own order: edits land beside their neighbours."""
        return format_tree(self.tree)

    def canonical(self) -> str:
        """The file as pvecm would write it."""
        return canonical(self.tree)

    # -- reading -------------------------------------------------------------------------------
    def _top(self, name: str) -> Section:
        found = self.tree.section(name)
        if found is None:
            raise UserError(f"corosync.conf has no '{name}' section",
                            code="conf-section-missing", remedy=f"add a '{name} {{' section")
        return found

    def _totem(self, key: str) -> str | None:
        totem = self.tree.section("totem")
        return totem.get(key) if totem else None

    @property
    def cluster_name(self) -> str | None:
        return self._totem("cluster_name")

    @property
    def config_version(self) -> int | None:
        value = as_int(self._totem("config_version"))
        return value if isinstance(value, int) else None

    @property
    def nodes(self) -> list[ConfNode]:
        nodelist = self.tree.section("nodelist")
        return [read_node(n) for n in nodelist.sections("node")] if nodelist else []

    def _interfaces(self) -> dict[int | str, Section]:
        totem = self.tree.section("totem")
        return {interface_number(i): i for i in totem.sections("interface")} if totem else {}

    @property
    def link_numbers(self) -> tuple[int, ...]:
        """Links named by an interface section or by any node's ringN_addr."""
        numbers = {n for n in self._interfaces() if isinstance(n, int)}
        for node in self.nodes:
            numbers |= set(node.addresses)
        return tuple(sorted(numbers))

    @property
    def priorities(self) -> dict[int, int]:
        """Link number -> knet_link_priority (0, corosync's default, when unset or unreadable)."""
        interfaces = self._interfaces()
        values = {n: as_int(interfaces[n].get("knet_link_priority", "0")) if n in interfaces
                  else 0 for n in self.link_numbers}
        return {n: v if isinstance(v, int) else 0 for n, v in values.items()}

    def to_plan(self) -> "ClusterPlan":
        """The ClusterPlan this file describes; not validated (call .check() on it)."""
        from pvestrap.corosync_lint import derive_plan

        return derive_plan(self.tree)[0]

    # -- edits ---------------------------------------------------------------------------------
    def add_node(self, name: str, addresses: Mapping[int, str], votes: int = 1,
                 nodeid: int | None = None) -> "CorosyncConf":
        """Add a node as the cluster side of `pvecm add` does: the lowest free nodeid >= 1."""
        refuse_forbidden(name, votes, nodeid, *addresses, *addresses.values())
        nodelist, current = self._top("nodelist"), self.nodes
        taken = {n.nodeid for n in current}
        if nodeid is None:
            nodeid = min(set(range(1, len(taken) + 2)) - taken)
        problems = _check_name(name)
        if name in {n.name for n in current}:
            problems.append(fail("node-name-duplicate", f"node {name} exists already", "name"))
        if _not_int(nodeid, 1, NODEID_MAX):
            problems.append(fail("nodeid-invalid", f"nodeid {nodeid!r} is not 1..{NODEID_MAX}",
                                 "nodeid"))
        elif nodeid in taken:
            problems.append(fail("nodeid-duplicate", f"nodeid {nodeid} is taken", "nodeid",
                                 payload={"nodeid": nodeid}))
        if _not_int(votes, 0):
            problems.append(fail("votes-invalid", f"votes {votes!r} is not >= 0", "votes"))
        if current and set(addresses) != set(self.link_numbers):
            problems.append(fail(
                "node-link-set-mismatch", f"node {name} has links {sorted(addresses)}, the "
                f"cluster has {list(self.link_numbers)}", "addresses",
                payload={"node": sorted(addresses), "cluster": list(self.link_numbers)},
                remedy="give one address for every link of the cluster"))
        problems += self._check_addresses({(name, n): a for n, a in addresses.items()}, name)
        _raise(problems)
        siblings = nodelist.sections("node")
        layout = ("",) if siblings and "" in siblings[-1].comments else ()
        node = Section("node", _node_items(name, nodeid, votes, addresses), layout)
        return self._edit(nodelist, nodelist.with_children(nodelist.children + (node,)))

    def remove_node(self, name: str) -> "CorosyncConf":
        nodelist = self._top("nodelist")
        nodes = nodelist.sections("node")
        match = [n for n in nodes if n.get("name") == name]
        if not match:
            raise UserError(f"no node named {name!r} in corosync.conf", code="node-unknown")
        if len(nodes) == 1:
            raise UserError(f"{name} is the only node; corosync.conf needs one", code="node-last")
        return self._edit(nodelist, nodelist.replace(match[0], None))

    def add_link(self, number: int, addresses: Mapping[str, str],
                 priority: int = 0) -> "CorosyncConf":
        """A new knet link: an interface section, and a ringN_addr on every node."""
        refuse_forbidden(number, priority, *addresses, *addresses.values())
        problems = _check_link(number, priority)
        if number in self.link_numbers:
            problems.append(fail("link-exists", f"link {number} exists already", "number",
                                 payload={"number": number}))
        for missing in sorted({n.name for n in self.nodes} - set(addresses), key=str):
            problems.append(fail("link-address-missing", f"no address for node {missing} on "
                                 f"link {number}", f"{missing}/link{number}",
                                 remedy="every node needs an address on every link"))
        problems += self._check_addresses({(n, number): a for n, a in addresses.items()})
        _raise(problems)
        return self._with_priority(number, priority)._set_addresses(number, addresses)

    def set_link_addresses(self, number: int, addresses: Mapping[str, str]) -> "CorosyncConf":
        """Move some or all nodes of a link to new addresses."""
        refuse_forbidden(number, *addresses, *addresses.values())
        problems = [] if number in self.link_numbers else [
            fail("link-unknown", f"link {number} does not exist", "number",
                 payload={"number": number})]
        _raise(problems + self._check_addresses({(n, number): a for n, a in addresses.items()}))
        return self._set_addresses(number, addresses)

    def set_priority(self, number: int, priority: int) -> "CorosyncConf":
        """knet_link_priority (the higher is preferred); 0 drops the key, as pvecm writes it."""
        refuse_forbidden(number, priority)
        problems = _check_link(number, priority)
        if number not in self.link_numbers:
            problems.append(fail("link-unknown", f"link {number} does not exist", "number",
                                 payload={"number": number}))
        _raise(problems)
        return self._with_priority(number, priority)

    def bump_version(self) -> "CorosyncConf":
        """config_version + 1: corosync only takes a changed file whose version went up."""
        totem = self._top("totem")
        if self.config_version is None:
            raise UserError("totem.config_version is missing or not a whole number",
                            code="conf-config-version-missing",
                            remedy="add 'config_version: 1' to the totem section")
        return self._edit(totem, totem.set("config_version", str(self.config_version + 1)))

    # -- edit helpers --------------------------------------------------------------------------
    def _edit(self, old: Section, new: Section) -> "CorosyncConf":
        return CorosyncConf(self.tree.replace(old, new))

    def _check_addresses(self, wanted: Mapping[tuple[str, int], str],
                         new_node: str | None = None) -> list[Finding]:
        """IP addresses of known nodes, each used once in the cluster (the slots being
        replaced do not count)."""
        used = {a: n.name for n in self.nodes for k, a in n.addresses.items()
                if (n.name, k) not in wanted}
        known = {n.name for n in self.nodes} | {new_node}
        out = []
        for (name, number), address in wanted.items():
            subject = f"{name}/link{number}"
            if name not in known:
                out.append(fail("node-unknown", f"no node named {name!r}", subject))
            elif not _is_ip(address):
                out.append(fail("address-not-ip", f"{address!r} is not an IP address", subject,
                                remedy="write the IP address (pvecm stores IPs, not names)"))
            elif address in used:
                out.append(fail("address-duplicate", f"{address} is used by {used[address]}",
                                subject, payload={"address": address, "link": number}))
            used.setdefault(address, name)
        return out

    def _set_addresses(self, number: int, addresses: Mapping[str, str]) -> "CorosyncConf":
        nodelist = self._top("nodelist")
        return self._edit(nodelist, nodelist.with_children(
            _set_address(c, number, addresses[c.get("name")])
            if isinstance(c, Section) and c.name == "node" and c.get("name") in addresses else c
            for c in nodelist.children))

    def _with_priority(self, number: int, priority: int) -> "CorosyncConf":
        """Set a link's priority, first adding an interface section for every link that lacks
        one (pvecm's verify_conf wants an interface for all links or for none)."""
        totem = self._top("totem")
        for missing in sorted(set(self.link_numbers) | {number}):
            if missing not in {interface_number(i) for i in totem.sections("interface")}:
                totem = _insert_numbered(totem, _interface(missing, 0), _iface_number, missing)
        iface = next(i for i in totem.sections("interface") if interface_number(i) == number)
        changed = _set_sorted(iface, "knet_link_priority", str(priority)) if priority else \
            iface.remove("knet_link_priority")
        return self._edit(self._top("totem"), totem.replace(iface, changed))


def _raise(problems: list[Finding]) -> None:
    if problems:
        raise ValidationFailed(problems, source="corosync.conf edit")


def _not_int(value: object, low: int, high: int | None = None) -> bool:
    return (not isinstance(value, int) or isinstance(value, bool) or value < low
            or (high is not None and value > high))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _check_name(name: str) -> list[Finding]:
    if isinstance(name, str) and NAME_RE.match(name) and len(name) <= NAME_MAX:
        return []
    return [fail("node-name-invalid", f"node name {name!r} is not valid", "name",
                 remedy="letters, digits and inner hyphens, at most 15 characters")]


def _check_link(number: int, priority: int) -> list[Finding]:
    out = []
    if _not_int(number, 0, MAX_LINK):
        out.append(fail("link-number-out-of-range", f"link number {number!r} is not 0..7",
                        "number", payload={"number": number}))
    if _not_int(priority, 0, 255):
        out.append(fail("link-priority-out-of-range", f"priority {priority!r} is not 0..255",
                        "priority", remedy="higher numbers are preferred; use 0..255"))
    return out


def _node_items(name: str, nodeid: int, votes: int,
                addresses: Mapping[int, str]) -> tuple[Item, ...]:
    return (Item("name", name), Item("nodeid", str(nodeid)), Item("quorum_votes", str(votes)),
            *(Item(f"ring{n}_addr", addresses[n]) for n in sorted(addresses)))


def _interface(number: int, priority: int) -> Section:
    items = (Item("knet_link_priority", str(priority)),) if priority else ()
    return Section("interface", items + (Item("linknumber", str(number)),))


def _set_sorted(section: Section, key: str, value: str) -> Section:
    """Change the key in place, or insert it before the first key sorting after it."""
    if section.item(key) is not None:
        return section.set(key, value)
    children = list(section.children)
    at = next((i for i, c in enumerate(children) if isinstance(c, Item) and c.key > key),
              len(children))
    return section.with_children(children[:at] + [Item(key, value)] + children[at:])


def _iface_number(child: Node_) -> int | str | None:
    is_iface = isinstance(child, Section) and child.name == "interface"
    return interface_number(child) if is_iface else None


def _insert_numbered(section: Section, new: Node_, number_of, number: int) -> Section:
    """Insert after the last numbered sibling (number_of not None) with a lower number, else
    before the first one, else at the end: edits of a pvecm-ordered file stay in its order."""
    children = list(section.children)
    numbered = [(i, number_of(c)) for i, c in enumerate(children) if number_of(c) is not None]
    lower = [i for i, n in numbered if isinstance(n, int) and n < number]
    at = lower[-1] + 1 if lower else numbered[0][0] if numbered else len(children)
    return section.with_children(children[:at] + [new] + children[at:])


def _set_address(node: Section, number: int, address: str) -> Section:
    current = node_addresses(node).get(number)
    if current:
        return node.replace(current, dataclasses.replace(current, value=address))
    return _insert_numbered(node, Item(f"ring{number}_addr", address), addr_number, number)
