"""What a node measures and what it measured: the prober's requests and results as frozen values.

The network checks read a Measurements (via measurements(ctx)); the mesh mode carries requests and
results as JSON (to_dict / from_dict). The engine that fills them in is pvestrap.checks.prober,
which re-exports every name here.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Collection, Mapping, Sequence

if TYPE_CHECKING:
    from pvestrap.checks.base import Context

PROBES_KEY = "network"
BASE_PORT = 5405


def family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def overhead(family: int) -> int:
    """IP + UDP header bytes: payload + overhead = the packet size an MTU limits."""
    return 48 if family == socket.AF_INET6 else 28


# -- what to measure ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """One UDP port of one peer on one link; source: this node's own address on that link.
    peer_samples: the peer samples this path's latency (see samples_pair), so this node only
    needs a few replies to know the port answers."""

    peer: str
    link: int
    port: int
    address: str
    source: str | None = None
    legacy: bool = False
    peer_samples: bool = False


@dataclass(frozen=True)
class TcpTarget:
    """purpose: join-api (8006), join-ssh (22) or qdevice (5403)."""

    name: str
    address: str
    port: int
    purpose: str


@dataclass(frozen=True)
class DadTarget:
    """An address the plan will put on `interface` (duplicate address detection)."""

    address: str
    interface: str | None
    link: int | None = None


@dataclass(frozen=True)
class ProbeSettings:
    duration_s: float = 3.0  # how long latency samples are taken
    interval_s: float = 0.05  # between probes to one target
    reply_timeout_s: float = 1.0  # how long the last probe may take
    mtu: bool = True
    mtu_step_timeout_s: float = 0.2
    tcp_timeout_s: float = 2.0
    icmp: bool = True  # ping where UDP got no answer
    icmp_count: int = 4
    icmp_timeout_s: float = 0.5
    dad_wait_s: float = 1.0
    # A presence round (first boot asking whether a peer reached a stage), not a measurement:
    # a path's flow ends at its first reply instead of sending all `count` probes.
    until_answered: bool = False

    @property
    def count(self) -> int:
        return max(1, round(self.duration_s / self.interval_s))


@dataclass(frozen=True)
class ProbeRequest:
    node: str | None
    targets: tuple[Target, ...] = ()
    tcp: tuple[TcpTarget, ...] = ()
    addresses: tuple[DadTarget, ...] = ()
    settings: ProbeSettings = field(default_factory=ProbeSettings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ProbeRequest":
        return cls(data.get("node"),
                   tuple(_revive(Target, t) for t in data.get("targets", ())),
                   tuple(_revive(TcpTarget, t) for t in data.get("tcp", ())),
                   tuple(_revive(DadTarget, t) for t in data.get("addresses", ())),
                   _revive(ProbeSettings, data.get("settings", {})))


# -- what was measured ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PortResult:
    """state: open (answered), closed (ICMP port unreachable), filtered (silence),
    unreachable (no route / no neighbour), error (e.g. the source address is not local).
    rtts_ms: per reply, in arrival order; offset_s/delay_ms: the best (least delayed) sample."""

    peer: str
    link: int
    port: int
    address: str
    source: str | None
    legacy: bool
    state: str
    sent: int
    received: int
    rtts_ms: tuple[float, ...] = ()
    offset_s: float | None = None
    delay_ms: float | None = None
    error: str | None = None
    peer_samples: bool = False  # Target.peer_samples: these few samples are not judged here

    @property
    def loss_pct(self) -> float:
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0


@dataclass(frozen=True)
class MtuResult:
    """Largest UDP payloads that passed with DF set: out (forward) and back (reverse, searched
    up to forward only, since a reply is never larger than its probe). local_mtu: MTU of our
    interface the replies arrived on (the route MTU if none came); peer_mtu: MTU of the
    interface the probes arrived on over there (0: unknown)."""

    peer: str
    link: int
    port: int
    address: str
    local_mtu: int
    peer_mtu: int
    forward_payload: int | None
    reverse_payload: int | None
    error: str | None = None

    @property
    def family(self) -> int:
        return family_of(self.address)

    def mtu(self, payload: int | None) -> int | None:
        return None if payload is None else payload + overhead(self.family)


@dataclass(frozen=True)
class IcmpResult:
    peer: str
    link: int
    address: str
    sent: int
    received: int
    rtts_ms: tuple[float, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class TcpResult:
    """state: open, closed (RST), filtered (no answer), unreachable, error."""

    name: str
    address: str
    port: int
    purpose: str
    state: str
    connect_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class DadResult:
    """state: free, in-use (someone answered: mac), assigned (already ours), error/skipped."""

    address: str
    interface: str | None
    link: int | None
    state: str
    mac: str | None = None
    error: str | None = None


_PARTS = {"udp": PortResult, "mtu": MtuResult, "icmp": IcmpResult, "tcp": TcpResult,
          "dad": DadResult}


@dataclass(frozen=True)
class Measurements:
    """Everything one node measured; the network checks read nothing else."""

    node: str | None
    started: float  # wall clock, seconds
    duration_s: float
    udp: tuple[PortResult, ...] = ()
    mtu: tuple[MtuResult, ...] = ()
    icmp: tuple[IcmpResult, ...] = ()
    tcp: tuple[TcpResult, ...] = ()
    dad: tuple[DadResult, ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Measurements":
        parts = {}
        for name, kind in _PARTS.items():
            parts[name] = tuple(_revive(kind, item) for item in data.get(name, ()))
        return cls(data.get("node"), float(data.get("started", 0.0)),
                   float(data.get("duration_s", 0.0)), settings=dict(data.get("settings", {})),
                   **parts)


def _revive(kind: type, item: Mapping[str, Any]):
    known = {f.name for f in fields(kind)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in item.items() if k in known}
    return kind(**values)


def measurements(ctx: "Context") -> Measurements | None:
    """The probe results in a check context (a Measurements, or its JSON form), else None."""
    found = ctx.probes.get(PROBES_KEY) if ctx.probes else None
    if isinstance(found, Mapping):
        return Measurements.from_dict(found)
    return found


# -- building requests ---------------------------------------------------------------------------

def udp_targets(peers: Mapping[str, Mapping[int, str]], sources: Mapping[int, str] | None = None,
                *, base_port: int = BASE_PORT, legacy: bool = True,
                sampled_by_peer: Collection[str] = ()) -> tuple[Target, ...]:
    """Targets for every peer and link: the link's port (base + N) and, if legacy, base - 1;
    the paths to SAMPLED_BY_PEER are Target.peer_samples."""
    out = []
    for peer in sorted(peers):
        theirs = peer in sampled_by_peer
        for link, address in sorted(peers[peer].items()):
            source = (sources or {}).get(link)
            out.append(Target(peer, link, base_port + link, address, source,
                              peer_samples=theirs))
            if legacy:
                out.append(Target(peer, link, base_port - 1, address, source, legacy=True,
                                  peer_samples=theirs))
    return tuple(out)


def samples_pair(nodes: Sequence[str], me: str, peer: str) -> bool:
    """Whether ME samples the latency of the pair (ME, PEER) when every node of NODES probes
    every other at the same time (the mesh preflight).

    A round trip is the pair's, not one direction's: sampled from both ends, every path would
    be measured twice (and every node would answer twice as many probes). So one end samples
    it and the other sends probes only until its ports answered a few times (each direction's
    ports are still checked). Each node samples the next (N-1)/2 nodes after it in NODES' order,
    wrapping around (with an even N, the node opposite is sampled by the earlier of the two):
    every pair once, and every node about half of its peers."""
    i, j, n = nodes.index(me), nodes.index(peer), len(nodes)
    ahead = (j - i) % n
    return 0 < ahead <= (n - 1) // 2 or (n % 2 == 0 and ahead == n // 2 and i < j)
