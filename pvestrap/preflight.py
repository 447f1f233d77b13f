"""The preflight: which checks run where, and the one `run()` every front-end calls.

Local checks read this machine; network checks read the measurements the prober made against
the peers' responders (checks.prober). `pvestrap preflight`, the wizard, the first boot, the
mesh agent and `apply`'s gate all call `run()`; they differ only in the probe source they pass
(or none: local checks only) and in how they print the Report, so they can never disagree
about what "preflight passed" means.

Order inside a run: the local checks first, then the probes, then the network checks. The local
checks are the CPU-heavy part; run before the probes, they cannot disturb the probes' timing
(the mesh agent's source waits for the orchestrator's GO at that point, so every node probes at
once).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from pvestrap import __version__
from pvestrap.checks import (addresses, clockpair, identity, joinable, latency, mtu, nics, ports,
                             prober, quorum, tcp, timesync, versions)
from pvestrap.checks.base import Check, Context
from pvestrap.checks.localsys import IfAddress, Machine, read_machine
from pvestrap.checks.pending import PENDING_KEY
from pvestrap.checks.probe import Token, new_token
from pvestrap.checks.runner import build_sections, collect
from pvestrap.errors import UserError
from pvestrap.plan import ClusterPlan
from pvestrap.report.model import Report

Progress = Callable[[Check], None]


def local_checks() -> tuple[Check, ...]:
    """Checks that need only this machine (and the plan)."""
    return (*identity.checks(), *timesync.checks(), *nics.checks(), *joinable.checks(),
            *versions.checks(), *quorum.checks())


def network_checks() -> tuple[Check, ...]:
    """Checks that read the probe measurements (ports, latency, MTU, clock offset, TCP, DAD)."""
    return (ports.PortsCheck(), latency.LatencyCheck(), mtu.MtuCheck(),
            clockpair.ClockPairCheck(), tcp.TcpCheck(), addresses.AddressCheck())


def all_checks() -> tuple[Check, ...]:
    return local_checks() + network_checks()


def check_catalogue() -> list[tuple[str, str, str]]:
    """(id, family, title) of every check, for `preflight --help` and `--list-checks`."""
    return [(c.id, c.family, c.title) for c in all_checks()]


# -- where measurements come from ------------------------------------------------------------------

class ProbeSource(Protocol):
    """What a run measures, and how: `measure` returns this node's measurements (None: nothing
    to probe). `pending` are links the apply configures, so they cannot be probed yet."""

    def measure(self, plan: ClusterPlan | None, node: str | None,
                pending: frozenset[int]) -> prober.Measurements | None: ...


@dataclass(frozen=True)
class Probes:
    """The probe source of every front-end: this node measures the peers' responders.

    token: the token the responders were started with; needed only for UDP targets (TCP and
        duplicate address detection work without one).
    duration_s: latency sampling per path (None: the plan's, else 3 s).
    only: the plan's nodes to probe (None: every other node). The wizard probes only the node
        it joins: the other nodes of a new cluster are not up, and silence reads as filtered.
    peers: peers named by address ({name: {link: address}}), for a machine without a plan.
    progress: called with the fraction done, a few times a second.
    keep: called with what was measured (first boot saves it beside its report).
    shared: every node of the plan probes every other at the same time (the mesh agents, after
        one GO): each pair's latency is sampled by one of its two nodes (prober.samples_pair),
        the other only checks that its ports answer.
    """

    token: Token | None = None
    duration_s: float | None = None
    only: frozenset[str] | None = None
    peers: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    progress: Callable[[float], None] | None = None
    keep: Callable[[prober.Measurements], None] | None = None
    shared: bool = False

    def request(self, plan: ClusterPlan | None, node: str | None,
                pending: frozenset[int] = frozenset()) -> prober.ProbeRequest | None:
        settings = prober.ProbeSettings(duration_s=self.duration_s or (
            plan.preflight.thresholds.duration_s if plan else 3.0))
        if plan is not None and node is not None and plan.has_node(node):
            request = prober.request_from_plan(plan, node, settings, shared=self.shared)
            return dataclasses.replace(request, targets=tuple(
                t for t in request.targets
                if (self.only is None or t.peer in self.only) and t.link not in pending))
        if self.peers:
            return prober.ProbeRequest(node, prober.udp_targets(self.peers), settings=settings)
        return None

    def measure(self, plan: ClusterPlan | None, node: str | None,
                pending: frozenset[int] = frozenset()) -> prober.Measurements | None:
        request = self.request(plan, node, pending)
        if request is None:
            return None
        if request.targets and self.token is None:
            raise UserError("probing peers needs the token their responders were started with",
                            code="probe-token-missing",
                            remedy="pass --token-file FILE (or set PVESTRAP_PROBE_TOKEN); or use "
                                   "--mesh to let pvestrap start the responders itself")
        measured = prober.measure(request, self.token or new_token(), progress=self.progress)
        if self.keep is not None:
            self.keep(measured)
        return measured


@dataclass(frozen=True)
class AfterLocalChecks:
    """A probe source that calls BEFORE first. run() measures once its local checks ran, so
    BEFORE runs between the two: the mesh agent says READY there and waits for GO, first boot
    tells its peers it is "checked" and waits until they are too. The local checks are
    CPU-heavy and must not run next to anyone's probes. BEFORE stops the run by raising."""

    probes: ProbeSource
    before: Callable[[], None]

    def measure(self, plan: ClusterPlan | None, node: str | None,
                pending: frozenset[int]) -> prober.Measurements | None:
        self.before()
        return self.probes.measure(plan, node, pending)


# -- the run ---------------------------------------------------------------------------------------

def run(plan: ClusterPlan | None, node: str | None, *, probes: ProbeSource | None = None,
        ignore: Sequence[str] = (), pending: frozenset[int] | None = None, root: str = "/",
        machine: Machine | None = None, on_progress: Progress | None = None) -> Report:
    """The preflight of NODE: its local checks, then (with a probe source) its measurements
    and the network checks. The machine is judged as planned (the plan's new interface
    stanzas in place). `pending`: the links not to probe, because this node's address on them
    is not configured yet; None (the default) finds them on the machine: the links whose
    address is only planned (checks.pending). So a preflight before apply's network phase
    skips exactly those probes, and the same call after it probes them. `machine` is only for
    tests that bring their own."""
    started = time.monotonic()
    seen = planned_machine(machine if machine is not None else read_machine(root), plan, node)
    waiting = pending_links(seen, plan, node)
    if pending is not None:
        waiting = {n: waiting.get(n) for n in pending}
    ctx = Context(plan=plan, node=node, root=root, options=_options(plan, seen, waiting))
    by_family = collect(local_checks(), ctx, on_progress)
    grids: dict[str, Any] = {}
    if probes is not None:
        measured = probes.measure(plan, node, frozenset(waiting))
        probed = dataclasses.replace(ctx, probes={prober.PROBES_KEY: measured} if measured
                                     else {})
        for family, found in collect(network_checks(), probed, on_progress).items():
            by_family.setdefault(family, []).extend(found)
        if plan is not None and node is not None and measured is not None and measured.udp:
            grids = matrices(plan, node, measured)
    ignored = tuple(ignore) + (plan.preflight.ignore_checks if plan else ())
    meta = _meta(plan, node)
    meta["duration_s"] = round(time.monotonic() - started, 3)
    if waiting:
        meta["pending_links"] = sorted(waiting)
    return Report("pvestrap preflight", build_sections(by_family, ignored), meta, grids)


def _options(plan: ClusterPlan | None, machine: Machine,
             waiting: Mapping[int, str | None]) -> dict[str, Any]:
    """One read of the machine (as planned), shared by every local check."""
    opts: dict[str, Any] = {"machine": machine, PENDING_KEY: dict(waiting)}
    if plan is not None and plan.preflight.ntp_servers:
        opts["ntp_servers"] = list(plan.preflight.ntp_servers)
    return opts


def _meta(plan: ClusterPlan | None, node: str | None) -> dict[str, Any]:
    return {
        "cluster": plan.cluster_name if plan else None,
        "node": node,
        "host": socket.gethostname(),
        "pvestrap": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "latency_fail_ms": plan.preflight.thresholds.latency_fail_ms if plan else 2.0,
    }


def pending_links(machine: Machine, plan: ClusterPlan | None,
                  node: str | None) -> dict[int, str | None]:
    """{link: NIC} of NODE's links whose address is only planned on MACHINE (as
    planned_machine shows it): a new stanza that apply's network phase writes and brings up.
    Nothing can be sent from them yet, so their probes wait (checks.pending)."""
    if plan is None or node is None or not plan.has_node(node):
        return {}
    out: dict[int, str | None] = {}
    for number, address in sorted(plan.node(node).addresses.items()):
        nic = nics.planned_nic(machine, address)
        if nic is not None:
            out[number] = nic.name
    return out


def planned_machine(machine: Machine, plan: ClusterPlan | None, node: str | None) -> Machine:
    """The machine as it will be once the plan's new interface stanzas are applied: their
    addresses on their NICs, so the local checks judge the planned link layout."""
    if plan is None or node is None or not plan.has_node(node):
        return machine
    planned_cidrs = {s.name: s.address for s in plan.node(node).interfaces if s.address}
    if not planned_cidrs:
        return machine
    out = []
    for iface in machine.interfaces:
        cidr = planned_cidrs.get(iface.name)
        if cidr and not iface.has_address(cidr.split("/")[0]):
            addr, _, prefix = cidr.partition("/")
            planned = IfAddress(addr, int(prefix or 32), planned=True)
            iface = dataclasses.replace(iface, addresses=iface.addresses + (planned,))
        out.append(iface)
    return dataclasses.replace(machine, interfaces=tuple(out))


# -- the heatmaps ----------------------------------------------------------------------------------

def matrices(plan: ClusterPlan, node: str | None,
             measured: prober.Measurements | None) -> dict[str, dict[str, Any]]:
    """Per link: rows = from node, columns = to node; median RTT, port state and loss. Only
    NODE's row is filled (from its own measurements); the mesh merges every node's row."""
    names = [n.name for n in plan.nodes]
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, dict[str, Any]] = {}
    for link in plan.links:
        grid: dict[str, list[list[Any]]] = {
            key: [[None] * len(names) for _ in names] for key in ("rtt_ms", "state", "loss_pct")}
        for port in (measured.udp if measured is not None else ()):
            i, j = index.get(node or ""), index.get(port.peer)
            if port.link != link.number or port.legacy or i is None or j is None:
                continue
            grid["state"][i][j] = port.state
            rtts = sorted(port.rtts_ms)
            if rtts:
                grid["rtt_ms"][i][j] = round(rtts[len(rtts) // 2], 3)
            if port.sent:
                grid["loss_pct"][i][j] = round(port.loss_pct, 1)
        out[f"link{link.number}"] = {"nodes": names, **grid, "port": link.port,
                                     "threshold_ms": plan.preflight.thresholds.latency_fail_ms}
    return out


def merge_rows(base: Mapping[str, Mapping[str, Any]],
               grids: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """BASE's matrices with every measured row of GRIDS laid over it (each node measured its
    own row: the mesh's N x N picture, and the demo's knet picture of every node)."""
    out = {link: _copy(grid) for link, grid in base.items()}
    for node_grids in grids:
        for link, grid in node_grids.items():
            merged = out.setdefault(link, _copy(grid))
            for key in _ROWS:
                for i, row in enumerate(grid.get(key) or ()):
                    if key in merged and any(cell is not None for cell in row):
                        merged[key][i] = list(row)
    return out


_ROWS = ("rtt_ms", "state", "loss_pct")


def own_rows(grids: Mapping[str, Mapping[str, Any]], node: str) -> dict[str, dict[str, Any]]:
    """GRIDS (matrices() of NODE) with every row but NODE's emptied: what a mesh agent sends.
    merge_rows skips an empty row as it skips a row of None, so the merged grid is the same,
    and a mesh carries N cells per node and grid instead of N x N (N^3 for the whole mesh: at
    32 nodes 6,144 cells per agent to build, send and parse, all but 192 of them None)."""
    out: dict[str, dict[str, Any]] = {}
    for link, grid in grids.items():
        names = list(grid.get("nodes") or ())
        mine = names.index(node) if node in names else -1
        out[link] = {k: [list(row) if i == mine else [] for i, row in enumerate(v)]
                     if k in _ROWS else v for k, v in grid.items()}
    return out


def _copy(grid: Mapping[str, Any]) -> dict[str, Any]:
    return {k: [list(row) for row in v] if k in _ROWS else v for k, v in grid.items()}
