"""Edit /etc/network/interfaces without disturbing what the plan does not own.

The file is split into blocks that keep their original text: stanzas (`iface`, `mapping`,
`vlan`: a header plus its option lines), one-line statements (`auto`, `allow-*`, `source`), and
text (comments, blank lines, anything else). Joining the blocks gives back the input exactly.

An edit adds or changes only the stanzas the plan owns (a dedicated NIC or a bridge), and inside
such a stanza only the options the plan sets; every other line, the installer's vmbr0, comments
and `source` lines included, stays byte for byte. Editing an already edited file changes nothing.

Parsing follows ifupdown2's rules (ifupdown2 networkinterfaces.py): a stanza's options run until
the next keyword line (`iface`, `auto`, `allow-*`, `source`, `vlan`), across blank lines and
comments; we also stop at `mapping` and `source-directory` (ifupdown's keywords). Comments and
blank lines at the end of a stanza are kept as text between stanzas, where a reader sees them.
New stanzas are laid out as PVE's own writer does (pve-common PVE::Network::Interfaces): `auto X`,
`iface X inet static`, tab-indented `address`, `gateway`, then for a bridge `bridge-ports`,
`bridge-stp off`, `bridge-fd 0`, then `mtu`, and a blank line between stanzas.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from pvestrap.errors import UserError
from pvestrap.plan import InterfaceStanza

_STANZAS = ("iface", "mapping", "vlan")
_STATEMENTS = ("auto", "source", "source-directory")
_LINE = re.compile(r"[^\n]*\n|[^\n]+$")


@dataclass(frozen=True)
class Block:
    """A piece of the file with its original text (`lines` keep their newlines)."""

    kind: str  # iface | mapping | vlan | auto | allow | source | text
    lines: tuple[str, ...]
    lineno: int  # 1-based number of the first line

    @property
    def text(self) -> str:
        return "".join(self.lines)

    @property
    def words(self) -> list[str]:
        return self.lines[0].split()

    @property
    def name(self) -> str | None:
        words = self.words
        return words[1] if self.kind == "iface" and len(words) > 1 else None

    @property
    def family(self) -> str:
        words = self.words
        return words[2] if len(words) > 2 else "inet"

    @property
    def method(self) -> str | None:
        words = self.words
        return words[3] if len(words) > 3 else None

    def options(self) -> list[tuple[int, str, str]]:
        """(index in lines, normalized key, value) of each option line of a stanza."""
        out = []
        for i, line in enumerate(self.lines[1:], start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            key, *rest = stripped.split(None, 1)
            out.append((i, _norm_key(key), " ".join("".join(rest).split())))
        return out

    def brings_up(self, name: str) -> bool:
        """Whether this is an `auto` (or `allow-auto`) line naming NAME."""
        if self.kind not in ("auto", "allow"):
            return False
        words = self.words
        return words[0] in ("auto", "allow-auto") and name in words[1:]


def _norm_key(key: str) -> str:
    return key.replace("_", "-")


def _keyword(line: str) -> str | None:
    words = line.split(None, 1)
    if not words:
        return None
    word = words[0]
    if word in _STANZAS or word in _STATEMENTS:
        return word
    if word.startswith("allow-"):
        return "allow"
    return None


def parse_interfaces(text: str) -> tuple[Block, ...]:
    """Split TEXT into blocks; `"".join(b.text for b in blocks) == text` always holds."""
    lines = _LINE.findall(text)
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        kind = _keyword(lines[i])
        if kind in _STANZAS:
            end = i + 1
            while end < len(lines) and _keyword(lines[end]) is None:
                end += 1
            last = end - 1
            while last > i and _is_filler(lines[last]):
                last -= 1  # trailing comments/blank lines belong between stanzas
            blocks.append(Block(kind, tuple(lines[i:last + 1]), i + 1))
            i = last + 1
        elif kind is not None:
            blocks.append(Block("source" if kind == "source-directory" else kind,
                                (lines[i],), i + 1))
            i += 1
        else:
            blocks.append(Block("text", (lines[i],), i + 1))
            i += 1
    return tuple(blocks)


def _is_filler(line: str) -> bool:
    stripped = line.strip()
    return not stripped or stripped.startswith("#")


# -- what the plan wants ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Wanted:
    name: str
    family: str
    method: str | None  # None: keep whatever method the existing stanza has
    options: tuple[tuple[str, str], ...]

    @property
    def owned_keys(self) -> frozenset[str]:
        keys = {key for key, _ in self.options}
        if "address" in keys:
            keys.add("netmask")  # an old-style netmask would contradict our CIDR address
        return frozenset(keys)


def _wanted(stanza: InterfaceStanza) -> _Wanted:
    """The header and options PVE would write for STANZA, in PVE's order."""
    family, method = "inet", None
    options: list[tuple[str, str]] = []
    if stanza.address is not None:
        version = ipaddress.ip_interface(stanza.address).version
        family, method = ("inet6" if version == 6 else "inet"), "static"
        options.append(("address", stanza.address))
    if stanza.gateway is not None:
        options.append(("gateway", stanza.gateway))
    if stanza.kind == "bridge":
        options += [("bridge-ports", stanza.bridge_ports or "none"), ("bridge-stp", "off"),
                    ("bridge-fd", "0")]
    if stanza.mtu is not None:
        options.append(("mtu", str(stanza.mtu)))
    return _Wanted(stanza.name, family, method, tuple(options))


# -- editing ---------------------------------------------------------------------------------------

def edit_interfaces(existing_text: str, stanzas: Iterable[InterfaceStanza]) -> str:
    """EXISTING_TEXT with the plan's STANZAS added or changed, and nothing else touched.

    STANZAS come from a validated plan (names, CIDR addresses); conflicts with the file (a
    stanza defined twice, an address on a bridge's port) raise UserError naming the lines.
    """
    wanted = [_wanted(s) for s in stanzas]
    _check_unique(wanted)
    text = existing_text
    for want in wanted:
        blocks = parse_interfaces(text)
        _check_conflicts(blocks, want, wanted)
        text = "".join(b.text for b in _apply(list(blocks), want))
    return text


def _check_unique(wanted: Sequence[_Wanted]) -> None:
    seen: set[tuple[str, str]] = set()
    for want in wanted:
        if (want.name, want.family) in seen:
            raise UserError(f"interface {want.name} ({want.family}) is planned twice",
                            code="interface-duplicate",
                            remedy="list each interface once in the node's interfaces")
        seen.add((want.name, want.family))


def _check_conflicts(blocks: Sequence[Block], want: _Wanted, wanted: Sequence[_Wanted]) -> None:
    """Refuse edits ifupdown2 would merge or fight over, naming the lines to fix by hand."""
    same = [b for b in blocks if b.name == want.name and b.family == want.family]
    if len(same) > 1:
        lines = ", ".join(str(b.lineno) for b in same)
        raise UserError(f"/etc/network/interfaces defines iface {want.name} {want.family} "
                        f"{len(same)} times (lines {lines})", code="interfaces-duplicate-stanza",
                        remedy="merge them into one stanza by hand, then render again")
    if "address" not in dict(want.options):
        return
    planned = {w.name for w in wanted}
    for block in blocks:
        if block.kind != "iface" or block.name in planned:
            continue
        for _, key, value in block.options():
            if key == "bridge-ports" and want.name in value.split():
                raise UserError(
                    f"{want.name} is a port of bridge {block.name} (line {block.lineno}); a "
                    "bridge port cannot carry its own address", code="interface-is-bridge-port",
                    remedy=f"use a free NIC for the link, or put the address on {block.name}")


def _apply(blocks: list[Block], want: _Wanted) -> list[Block]:
    index = next((i for i, b in enumerate(blocks)
                  if b.name == want.name and b.family == want.family), None)
    if index is None:
        return _insert_new(blocks, want)
    blocks[index] = _edit_block(blocks[index], want)
    if not _brought_up_before(blocks, index, want.name):
        blocks.insert(index, Block("auto", (f"auto {want.name}\n",), blocks[index].lineno))
    return blocks


def _brought_up_before(blocks: Sequence[Block], index: int, name: str) -> bool:
    """ifupdown2 marks a stanza auto only when an `auto` line for it comes BEFORE the stanza."""
    return any(b.brings_up(name) for b in blocks[:index])


def _edit_block(block: Block, want: _Wanted) -> Block:
    """BLOCK with the plan's header and owned options; its other lines kept in their order."""
    method = want.method or block.method or "manual"
    header = ["iface", want.name, want.family, method]
    options = block.options()
    owned = sorted((key, value) for _, key, value in options if key in want.owned_keys)
    if block.words[:4] == header and len(block.words) == 4 and owned == sorted(want.options):
        return block
    owned_lines = {i for i, key, _ in options if key in want.owned_keys}
    indent = _indent(block.lines[options[0][0]]) if options else "\t"
    new_lines = [" ".join(header) + "\n"]
    new_lines += [f"{indent}{key} {value}\n" for key, value in want.options]
    new_lines += [_terminated(line) for i, line in enumerate(block.lines[1:], start=1)
                  if i not in owned_lines]
    return Block(block.kind, tuple(new_lines), block.lineno)


def _indent(line: str) -> str:
    return line[:len(line) - len(line.lstrip(" \t"))] or "\t"


def _terminated(line: str) -> str:
    return line if line.endswith("\n") else line + "\n"


def _insert_new(blocks: list[Block], want: _Wanted) -> list[Block]:
    """A new stanza before a trailing `source` line (the installer keeps that last), else at end."""
    at = _insertion_point(blocks)
    method = want.method or "manual"
    lines = [] if _brought_up_before(blocks, at, want.name) else [f"auto {want.name}\n"]
    lines.append(f"iface {want.name} {want.family} {method}\n")
    lines += [f"\t{key} {value}\n" for key, value in want.options]
    before = "".join(b.text for b in blocks[:at])
    after = "".join(b.text for b in blocks[at:])
    new: list[Block] = []
    if before and not before.endswith("\n"):
        blocks[at - 1] = Block(blocks[at - 1].kind, blocks[at - 1].lines[:-1]
                               + (_terminated(blocks[at - 1].lines[-1]),), blocks[at - 1].lineno)
        before += "\n"
    if before and not before.endswith("\n\n"):
        new.append(Block("text", ("\n",), 0))
    new.append(Block("iface", tuple(lines), 0))
    if after and not after.startswith("\n"):
        new.append(Block("text", ("\n",), 0))
    return blocks[:at] + new + blocks[at:]


def _insertion_point(blocks: Sequence[Block]) -> int:
    meaningful = [i for i, b in enumerate(blocks) if b.kind != "text"]
    if not meaningful or blocks[meaningful[-1]].kind != "source":
        return len(blocks)
    at = meaningful[-1]
    while at > 0 and blocks[at - 1].kind == "text" and blocks[at - 1].text.strip():
        at -= 1  # keep a comment that introduces the `source` line next to it
    return at
