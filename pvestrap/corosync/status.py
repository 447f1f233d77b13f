"""Parsers for what corosync and pvecm print about a running cluster.

Verification (`pvestrap status`, the quorum waits of apply) reads these outputs rather than
guessing from config files: `corosync-quorumtool -s` (also what `pvecm status` prints, with a
"Cluster information" block and hex node ids), `pvecm nodes` / `corosync-quorumtool -l`,
`corosync-cfgtool -s` (per link, every configured node) and `-n` (per reachable peer, every
link), and `corosync-cmapctl -m stats` (knet's own per-link counters and latency). The formats
were taken from corosync's tools/ sources and checked against real output of corosync 3.1.7
(tests/data/status/). Output that does not look like the tool's raises StatusUnparsable naming
the line, so a changed format is noticed instead of read as "no members".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pvestrap.errors import OperationFailed
from pvestrap.system import Runner

T = TypeVar("T")
KNET_NO_SAMPLE = 4294967295  # latency_min before the first sample (UINT32_MAX)


class StatusUnparsable(OperationFailed):
    code = "status-unparsable"

    def __init__(self, what: str, detail: str, line: int | None = None):
        where = f" (line {line})" if line else ""
        super().__init__(f"cannot read {what} output{where}: {detail}",
                         remedy="run the command by hand; if corosync changed its output "
                                "format, report it")


# -- quorum ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    nodeid: int
    votes: int | None
    name: str  # node name, or its address with `-i` (pvecm status)
    local: bool = False
    qdevice: str | None = None  # A,V,NMW style flags when a QDevice is configured

    @property
    def is_qdevice(self) -> bool:
        return self.nodeid == 0


@dataclass(frozen=True)
class QuorumStatus:
    quorate: bool
    members: tuple[Member, ...]
    expected_votes: int | None = None
    highest_expected: int | None = None
    total_votes: int | None = None
    quorum: int | None = None
    flags: tuple[str, ...] = ()
    nodes: int | None = None
    node_id: int | None = None
    ring_id: str | None = None
    provider: str | None = None
    activity_blocked: bool = False
    cluster_name: str | None = None   # the pvecm status "Cluster information" block
    config_version: int | None = None
    transport: str | None = None
    secure_auth: str | None = None

    @property
    def local(self) -> Member | None:
        return next((m for m in self.members if m.local), None)

    @property
    def nodes_only(self) -> tuple[Member, ...]:
        return tuple(m for m in self.members if not m.is_qdevice)


_UNDERLINE = re.compile(r"^[-~]{3,}$")
_KEY_VALUE = re.compile(r"^([A-Za-z][A-Za-z ]*?):\s*(.*?)\s*$")


def _sections(text: str) -> dict[str, list[tuple[int, str]]]:
    """Title -> numbered lines. A title is a line followed by a ---/~~~ underline (pvecm
    prints the tool's headings; the admin guide shows them with ~~~)."""
    lines = text.splitlines()
    out: dict[str, list[tuple[int, str]]] = {}
    current = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1].strip()) and line.strip():
            current = line.strip()
            out.setdefault(current, [])
            i += 2
            continue
        if line.strip() and not _UNDERLINE.match(line.strip()):
            out.setdefault(current, []).append((i + 1, line))
        i += 1
    return out


def _int(text: str, what: str, line: int | None = None) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise StatusUnparsable(what, f"{text!r} is not a number", line) from None


def _pairs(rows: Iterable[tuple[int, str]], what: str) -> dict[str, tuple[int, str]]:
    out = {}
    for number, line in rows:
        m = _KEY_VALUE.match(line.strip())
        if not m:
            raise StatusUnparsable(what, f"expected 'Key: value', got {line.strip()!r}", number)
        out[m.group(1)] = (number, m.group(2))
    return out


def parse_members(text: str, what: str = "membership") -> tuple[Member, ...]:
    """The "Membership information" table (`pvecm nodes`, `corosync-quorumtool -l`, and the
    tail of `-s`). Node ids may be decimal or 0x hex; `(local)` marks this node."""
    rows = _sections(text).get("Membership information")
    if rows is None:
        raise StatusUnparsable(what, "no 'Membership information' table")
    header = rows[0][1].split() if rows else []
    if header[:1] != ["Nodeid"]:
        raise StatusUnparsable(what, "the table has no 'Nodeid' header",
                               rows[0][0] if rows else None)
    has_votes = "Votes" in header
    has_qdevice = "Qdevice" in header
    return tuple(_member(n, line, has_votes, has_qdevice, what) for n, line in rows[1:])


def _member(number: int, line: str, has_votes: bool, has_qdevice: bool, what: str) -> Member:
    text = line.strip()
    local = text.endswith("(local)")
    text = re.sub(r"\s*\(local\)$", "", text)
    text = re.sub(r"\s*\(votes \d+\)$", "", text)
    text = re.sub(r"\s*\[[^]]*\]$", "", text)  # qdevice extra info
    tokens = text.split()
    minimum = 2 + has_votes
    if len(tokens) < minimum:
        raise StatusUnparsable(what, f"short member line {line.strip()!r}", number)
    nodeid = _int(tokens[0], what, number)
    votes = _int(tokens[1], what, number) if has_votes else None
    rest = tokens[1 + has_votes:]
    flags = None
    if has_qdevice and nodeid != 0 and len(rest) > 1:
        flags, rest = rest[0], rest[1:]
    return Member(nodeid, votes, " ".join(rest), local, flags)


def parse_quorum_status(text: str, what: str = "corosync-quorumtool -s") -> QuorumStatus:
    """`corosync-quorumtool -s` (any of -i/-H/-o) and `pvecm status`."""
    sections = _sections(text)
    quorum = _pairs(sections.get("Quorum information", []), what)
    votes = _pairs(sections.get("Votequorum information", []), what)
    cluster = _pairs(sections.get("Cluster information", []), what)
    if "Quorate" not in quorum and "Flags" not in votes:
        if cluster and not quorum:  # pvecm status when CMAP is not there (stderr says so)
            raise StatusUnparsable(what, "only the 'Cluster information' block: corosync is "
                                   "not running on this node")
        raise StatusUnparsable(what, "neither 'Quorate:' nor 'Flags:' found")
    flags = tuple(votes.get("Flags", (0, ""))[1].split())
    quorate = (quorum["Quorate"][1] == "Yes") if "Quorate" in quorum else "Quorate" in flags
    quorum_field = votes.get("Quorum", (0, ""))
    return QuorumStatus(
        quorate=quorate,
        members=parse_members(text, what) if "Membership information" in sections else (),
        expected_votes=_opt_int(votes, "Expected votes", what),
        highest_expected=_opt_int(votes, "Highest expected", what),
        total_votes=_opt_int(votes, "Total votes", what),
        quorum=_int(quorum_field[1].split()[0], what, quorum_field[0]) if quorum_field[1] else None,
        flags=flags,
        nodes=_opt_int(quorum, "Nodes", what),
        node_id=_opt_int(quorum, "Node ID", what),
        ring_id=quorum.get("Ring ID", (0, None))[1],
        provider=quorum.get("Quorum provider", (0, None))[1],
        activity_blocked="Activity blocked" in quorum_field[1],
        cluster_name=cluster.get("Name", (0, None))[1],
        config_version=_opt_int(cluster, "Config Version", what),
        transport=cluster.get("Transport", (0, None))[1],
        secure_auth=cluster.get("Secure auth", (0, None))[1],
    )


parse_pvecm_status = parse_quorum_status
parse_pvecm_nodes = parse_members


def _opt_int(pairs: Mapping[str, tuple[int, str]], key: str, what: str) -> int | None:
    if key not in pairs:
        return None
    number, value = pairs[key]
    return _int(value.split()[0], what, number) if value else None


# -- corosync-cfgtool ------------------------------------------------------------------------------

QUORUMTOOL = ("corosync-quorumtool", "-s")
PVECM_STATUS = ("pvecm", "status")  # the same block, after pvecm's cluster information


def read_status(query: Runner, argv: Sequence[str], parse: Callable[[str], T],
                errors: dict[str, str] | None = None) -> T | None:
    """ARGV through the read-only seam (any System's `query`, or `run_command` on this
    machine), parsed. None when the tool printed nothing or not its format; why goes into
    ERRORS under the command (corosync's tools exit non-zero for states they report too, so
    the output decides, not the exit code)."""
    what = " ".join(argv)
    result = query(argv)
    if not result.stdout.strip():
        if errors is not None:
            errors[what] = result.stderr.strip() or f"exit {result.rc}"
        return None
    try:
        return parse(result.stdout)
    except StatusUnparsable as exc:
        if errors is not None:
            errors[what] = exc.message
        return None


def read_quorum(query: Runner, argv: Sequence[str] = QUORUMTOOL,
                errors: dict[str, str] | None = None) -> QuorumStatus | None:
    """The one quorum reader (apply's waits, status, first boot, the pve backend)."""
    return read_status(query, argv, lambda text: parse_quorum_status(text, " ".join(argv)),
                       errors)


@dataclass(frozen=True)
class PeerState:
    """One node's state on one link. nodeid is None where corosync printed only positions:
    3.0.0-3.0.1 (`node 0:`) and the brief `-b` form (one character per node of the sorted
    nodelist); position is then its index there."""

    nodeid: int | None
    state: str  # localhost | connected | disconnected | knet error | config error
    enabled: bool = True
    position: int | None = None

    @property
    def connected(self) -> bool:
        return self.state in ("connected", "localhost")


@dataclass(frozen=True)
class LinkStatus:
    """A link (corosync 3, knet) or a ring (corosync 2: `summary` is its status text, e.g.
    "ring 0 active with no faults", and there are no per-node states)."""

    link: int
    transport: str | None
    address: str
    peers: tuple[PeerState, ...]
    summary: str | None = None

    @property
    def faulty(self) -> bool:
        if self.summary is not None and not self.peers:
            return "FAULTY" in self.summary.upper()
        return any(not p.connected for p in self.peers)

    def peer(self, nodeid: int) -> PeerState | None:
        return next((p for p in self.peers if p.nodeid == nodeid), None)


@dataclass(frozen=True)
class LinksStatus:
    """`corosync-cfgtool -s` (and `-b -s`, `-i`) of corosync 2.x, 3.0 and 3.1: every link (or
    ring), and for every configured node its state there. local_nodeid/transport are None
    where the output does not say (the man page's bare blocks; transport before 3.1.1)."""

    local_nodeid: int | None
    transport: str | None
    links: tuple[LinkStatus, ...]

    def link(self, number: int) -> LinkStatus | None:
        return next((link for link in self.links if link.link == number), None)


_HEADERS = ("Printing link status.", "Printing ring status.")
_LOCAL = re.compile(r"^Local node ID (\d+)(?:, transport (\S+))?$")
_LINK = re.compile(r"^(LINK|RING) ID (\d+):?(?: (\S+))?$")
_ADDR = re.compile(r"^(?:addr|id)\s*=\s*(\S+)$")
_SUMMARY = re.compile(r"^status\s*=\s*(.*?)\s*$")
_PEER = re.compile(r"^(nodeid:?|node)\s*(\d+):\s*(.+?)\s*$")
_OLD_STATE = re.compile(r"^link enabled:\s*([01])\s+link connected:\s*([01])$")
_STATES = ("localhost", "connected", "disconnected", "knet error", "config error")
_BRIEF = {"n": "localhost", "?": "knet error", "d": "config error"}


def _local_line(lines: list[str], what: str, required: bool = True) -> tuple[int | None,
                                                                            str | None]:
    for line in lines:
        m = _LOCAL.match(line.strip())
        if m:
            return int(m.group(1)), m.group(2)
    if required:
        raise StatusUnparsable(what, "no 'Local node ID N' line")
    return None, None


def _peer_state(kind: str, number: int, text: str, local: int | None, line: int,
                what: str) -> PeerState:
    nodeid, position = (None, number) if kind == "node" else (number, None)
    if m := _OLD_STATE.match(text):  # 3.0.0-3.0.3: "link enabled:1  link connected:1"
        enabled, connected = m.group(1) == "1", m.group(2) == "1"
        state = "localhost" if nodeid is not None and nodeid == local else \
            ("connected" if connected else "disconnected")
        return PeerState(nodeid, state, enabled, position)
    state, _, rest = text.partition(" (")
    if state not in _STATES or rest not in ("", "not enabled)"):
        raise StatusUnparsable(what, f"unknown link state {text!r}", line)
    return PeerState(nodeid, state, not rest, position)


def _brief(summary: str) -> tuple[PeerState, ...]:
    """`status = n33`: one character per node, 'n' this node, else bit 1 enabled, 2 connected."""
    out = []
    for i, char in enumerate(summary):
        if char in _BRIEF:
            out.append(PeerState(None, _BRIEF[char], True, i))
        elif char.isdigit():
            bits = int(char)
            out.append(PeerState(None, "connected" if bits & 2 else "disconnected",
                                 bool(bits & 1), i))
    return tuple(out)


def parse_cfgtool_status(text: str, what: str = "corosync-cfgtool -s") -> LinksStatus:
    lines = text.splitlines()
    local, transport = _local_line(lines, what, required=False)
    links: list[dict] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line in _HEADERS or _LOCAL.match(line) or line == "status:" \
                or line.startswith("**"):
            continue
        if m := _LINK.match(line):
            links.append({"link": int(m.group(2)), "transport": m.group(3), "address": "",
                          "peers": [], "summary": None, "ring": m.group(1) == "RING"})
        elif links and (m := _ADDR.match(line)):
            links[-1]["address"] = m.group(1)
        elif links and (m := _SUMMARY.match(line)):
            links[-1]["summary"] = m.group(1)
            if not links[-1]["ring"] and re.fullmatch(r"[0-9n?d]+", m.group(1)):
                links[-1]["peers"] = list(_brief(m.group(1)))
        elif links and (m := _PEER.match(line)):
            kind = "node" if m.group(1) == "node" else "nodeid"
            links[-1]["peers"].append(_peer_state(kind, int(m.group(2)), m.group(3), local,
                                                  number, what))
        else:
            raise StatusUnparsable(what, f"unexpected line {line!r}", number)
    if not links and local is None:
        raise StatusUnparsable(what, "no 'Local node ID' line and no 'LINK ID'/'RING ID' block")
    if transport is None and links:
        transport = "knet" if not links[0]["ring"] else None
    return LinksStatus(local, transport, tuple(
        LinkStatus(d["link"], d["transport"], d["address"], tuple(d["peers"]), d["summary"])
        for d in links))


@dataclass(frozen=True)
class PeerLink:
    link: int
    transport: str | None
    local_address: str
    remote_address: str
    enabled: bool
    connected: bool
    mtu: int | None


@dataclass(frozen=True)
class ReachablePeer:
    nodeid: int
    links: tuple[PeerLink, ...]
    flags: tuple[str, ...] = ()  # remote, external
    onwire: tuple[int, int, int] | None = None  # knet on-wire versions min, max, current

    def link(self, number: int) -> PeerLink | None:
        return next((link for link in self.links if link.link == number), None)


@dataclass(frozen=True)
class PeersStatus:
    """`corosync-cfgtool -n` (3.1.1 on): only REACHABLE peers are listed; a missing node is
    unreachable. Before 3.1.5 the LINK lines carry no transport word."""

    local_nodeid: int
    transport: str | None
    peers: tuple[ReachablePeer, ...]

    def peer(self, nodeid: int) -> ReachablePeer | None:
        return next((p for p in self.peers if p.nodeid == nodeid), None)


_NODE = re.compile(r"^nodeid:\s*(\d+) reachable((?: remote| external)*)"
                   r"(?:\s+onwire \(min/max/cur\): (\d+), (\d+), (\d+))?$")
_PEER_LINK = re.compile(r"^LINK: (\d+)(?: (\S+))? \(([^)]*)\)\s*((?:\w+\s+)*?)mtu: (\d+)$")


def parse_cfgtool_nodes(text: str, what: str = "corosync-cfgtool -n") -> PeersStatus:
    lines = text.splitlines()
    local, transport = _local_line(lines, what)
    peers: list[tuple[int, tuple[str, ...], list[PeerLink], tuple | None]] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or _LOCAL.match(line):
            continue
        if m := _NODE.match(line):
            onwire = tuple(int(g) for g in m.groups()[2:]) if m.group(3) else None
            peers.append((int(m.group(1)), tuple(m.group(2).split()), [], onwire))
        elif peers and (m := _PEER_LINK.match(line)):
            src, _, dst = m.group(3).partition("->")
            words = m.group(4).split()
            peers[-1][2].append(PeerLink(int(m.group(1)), m.group(2), src, dst,
                                         "enabled" in words, "connected" in words,
                                         int(m.group(5))))
        else:
            raise StatusUnparsable(what, f"unexpected line {line!r}", number)
    return PeersStatus(local, transport,  # type: ignore[arg-type]
                       tuple(ReachablePeer(n, tuple(ls), fl, ow) for n, fl, ls, ow in peers))


# -- corosync-cmapctl -m stats ---------------------------------------------------------------------

@dataclass(frozen=True)
class KnetLinkStats:
    """knet's view of one link to one node. Latencies are microseconds as knet reports them,
    None before the first sample."""

    nodeid: int
    link: int
    connected: bool
    enabled: bool
    latency_ave_us: int | None
    latency_min_us: int | None
    latency_max_us: int | None
    latency_samples: int
    down_count: int
    up_count: int
    mtu: int | None
    retries: int = 0  # rx_total_retries + tx_*_retries: sends knet had to repeat


_STAT = re.compile(r"^stats\.knet\.node(\d+)\.link(\d+)\.(\w+) \((\w+)\) = (.*)$")
_CMAP_LINE = re.compile(r"^\S+ \(\w+\) = .*$")


def parse_knet_stats(text: str,
                     what: str = "corosync-cmapctl -m stats") -> tuple[KnetLinkStats, ...]:
    """Per node and link (sorted), from the stats.knet.nodeN.linkM.* keys."""
    raw: dict[tuple[int, int], dict[str, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if not _CMAP_LINE.match(line):
            raise StatusUnparsable(what, f"unexpected line {line!r}", number)
        if m := _STAT.match(line):
            raw.setdefault((int(m.group(1)), int(m.group(2))), {})[m.group(3)] = m.group(5)
    return tuple(_knet(nodeid, link, keys, what) for (nodeid, link), keys in sorted(raw.items()))


def _knet(nodeid: int, link: int, keys: Mapping[str, str], what: str) -> KnetLinkStats:
    def num(key: str, default: int = 0) -> int:
        return _int(keys[key], what) if key in keys else default

    samples = num("latency_samples")
    has = samples > 0

    def latency(key: str) -> int | None:
        value = num(key, KNET_NO_SAMPLE)
        return value if has and value != KNET_NO_SAMPLE else None

    return KnetLinkStats(nodeid, link, num("connected") == 1, num("enabled") == 1,
                         latency("latency_ave"), latency("latency_min"),
                         latency("latency_max"), samples, num("down_count"), num("up_count"),
                         num("mtu") if "mtu" in keys else None,
                         sum(num(k) for k in keys if k.endswith("_retries")))
