"""Post-flight verification: what corosync itself says about the running cluster, as findings.

`pvestrap status` and the link changes read the cluster through corosync's own tools, never
through config files alone: `corosync-quorumtool -s` (quorate, votes, members), `corosync-cfgtool
-s` (every configured node's state on every link, as this node's knet sees it), `-n` (addresses
and MTU of the reachable peers), `corosync-cmapctl -m stats stats.knet.` (knet's ping/pong
round-trip times per link and peer) and `corosync-cmapctl -g totem.config_version` (the version
corosync runs, which differs from the file's when an edit was not reloaded). Every command is a
query run through a `System` (mutates=False), so tests feed recorded outputs and a dry run runs
them for real.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pvestrap import __version__
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import (
    QUORUMTOOL,
    KnetLinkStats,
    LinksStatus,
    PeersStatus,
    QuorumStatus,
    parse_cfgtool_nodes,
    parse_cfgtool_status,
    parse_knet_stats,
    read_quorum,
    read_status,
)
from pvestrap.corosync.tree import ConfParseError
from pvestrap.findings import Finding, Severity, fail, warn
from pvestrap.paths import COROSYNC_CONF
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import System

CHECK = "status"
LATENCY_WARN_MS = 2.0  # the project's latency requirement (pve-facts.md)
CFGTOOL_LINKS = ("corosync-cfgtool", "-s")
CFGTOOL_PEERS = ("corosync-cfgtool", "-n")
KNET_STATS = ("corosync-cmapctl", "-m", "stats", "stats.knet.")
RUNTIME_VERSION = ("corosync-cmapctl", "-g", "totem.config_version")
_VERSION = re.compile(r"^totem\.config_version \(\w+\) = (\d+)$", re.MULTILINE)
SECTIONS = (("quorum", "QUORUM"), ("members", "MEMBERS"), ("qdevice", "QDEVICE"),
            ("links", "KNET LINKS"), ("config", "CONFIGURATION"))


@dataclass(frozen=True)
class Observed:
    """What the tools said (None where a tool failed; `errors` says why, per command)."""

    quorum: QuorumStatus | None = None
    links: LinksStatus | None = None
    peers: PeersStatus | None = None
    knet: tuple[KnetLinkStats, ...] = ()
    runtime_version: int | None = None
    conf: CorosyncConf | None = None
    errors: Mapping[str, str] = field(default_factory=dict)

    @property
    def local_nodeid(self) -> int | None:
        for source in (self.links, self.peers):
            if source is not None:
                return source.local_nodeid
        return self.quorum.node_id if self.quorum else None

    def names(self) -> dict[int, str]:
        """nodeid -> node name: corosync.conf first, then the member list, else `nodeN`."""
        out: dict[int, str] = {}
        for member in (self.quorum.nodes_only if self.quorum else ()):
            out[member.nodeid] = member.name
        for node in (self.conf.nodes if self.conf else ()):
            if isinstance(node.nodeid, int) and node.name:
                out[node.nodeid] = node.name
        for nodeid in self._configured_ids():
            out.setdefault(nodeid, f"node{nodeid}")
        return dict(sorted(out.items()))

    def _configured_ids(self) -> set[int]:
        ids = {p.nodeid for link in (self.links.links if self.links else ()) for p in link.peers
               if p.nodeid is not None}  # positional outputs (3.0.0, -b) name no node ids
        return ids | {n.nodeid for n in self.conf.nodes if isinstance(n.nodeid, int)} \
            if self.conf else ids


def observe(system: System, conf_path: str = COROSYNC_CONF) -> Observed:
    """Ask corosync on this node (through SYSTEM's read-only seam) everything the verification
    reads."""
    errors: dict[str, str] = {}

    def read(argv: Sequence[str], parse):
        return read_status(system.query, argv, parse, errors)

    return Observed(read_quorum(system.query, QUORUMTOOL, errors),
                    read(CFGTOOL_LINKS, parse_cfgtool_status),
                    read(CFGTOOL_PEERS, parse_cfgtool_nodes),
                    read(KNET_STATS, parse_knet_stats) or (),
                    read(RUNTIME_VERSION, runtime_version),
                    _read_conf(system, conf_path, errors), errors)


def runtime_version(text: str | None) -> int | None:
    """totem.config_version from `corosync-cmapctl -g totem.config_version`."""
    match = _VERSION.search(text or "")
    return int(match.group(1)) if match else None


def _read_conf(system: System, path: str, errors: dict[str, str]) -> CorosyncConf | None:
    text = system.read_text(path)
    if text is None:
        errors[path] = "not found"
        return None
    try:
        return CorosyncConf.parse(text, path)
    except ConfParseError as exc:
        errors[path] = exc.message
        return None


# -- findings --------------------------------------------------------------------------------------

def quorum_findings(obs: Observed) -> list[Finding]:
    q = obs.quorum
    if q is None:
        why = obs.errors.get(" ".join(QUORUMTOOL), "no output")
        return [fail("corosync-not-running", f"corosync-quorumtool cannot read the cluster: {why}",
                     "corosync", payload={"error": why},
                     remedy="start corosync (systemctl start corosync) and read its log "
                            "(journalctl -b -u corosync)")]
    votes = {"expected_votes": q.expected_votes, "total_votes": q.total_votes,
             "quorum": q.quorum, "highest_expected": q.highest_expected, "nodes": q.nodes,
             "ring_id": q.ring_id, "node_id": q.node_id}
    out = [Finding("cluster-quorate", Severity.PASS,
                   f"quorate: {q.total_votes} of {q.expected_votes} expected votes "
                   f"(quorum {q.quorum})", "cluster", payload=votes)
           if q.quorate else
           fail("cluster-not-quorate", f"NOT quorate: {q.total_votes} votes, quorum needs "
                f"{q.quorum}" + (" (activity blocked)" if q.activity_blocked else ""), "cluster",
                payload=votes, remedy="bring the missing nodes (or their links) back; never "
                "lower expected votes while the others may still run")]
    if q.total_votes is not None and q.expected_votes is not None \
            and q.total_votes < q.expected_votes:
        out.append(warn("cluster-votes-missing", f"{q.expected_votes - q.total_votes} expected "
                        "vote(s) are missing", "cluster", payload=votes,
                        remedy="a node that is down or cut off takes its votes with it"))
    return out


def member_findings(obs: Observed, expect_nodes: int | None = None) -> list[Finding]:
    q = obs.quorum
    if q is None:
        return []
    present = {m.nodeid for m in q.nodes_only}
    names = obs.names()
    out = []
    for node in (obs.conf.nodes if obs.conf else ()):
        if isinstance(node.nodeid, int) and node.nodeid not in present:
            out.append(warn("member-missing", f"{node.name} (nodeid {node.nodeid}) is in "
                            "corosync.conf but not a member", node.name or str(node.nodeid),
                            payload={"nodeid": node.nodeid, "name": node.name},
                            remedy="check that corosync runs there and that its links reach "
                                   "this node (pvestrap status on that node)"))
    members = [names.get(i, str(i)) for i in sorted(present)]
    wanted = max(expect_nodes or 0, len(obs.conf.nodes) if obs.conf else 0)
    if expect_nodes is not None and len(present) < expect_nodes:
        out.append(warn("members-below-expected", f"{len(present)} members, {expect_nodes} "
                        "expected", "cluster", payload={"members": members,
                                                        "expected": expect_nodes}))
    if not out:
        out.append(Finding("members-complete", Severity.PASS, f"{len(present)} members: "
                           + ", ".join(members), "cluster",
                           payload={"members": members, "expected": wanted or len(present)}))
    return out


def link_findings(obs: Observed, latency_warn_ms: float = LATENCY_WARN_MS) -> list[Finding]:
    """Per link and peer, this node's knet view: connected or down, and its RTT."""
    if obs.links is None:
        why = obs.errors.get(" ".join(CFGTOOL_LINKS), "no output")
        return [fail("knet-status-unavailable", f"corosync-cfgtool -s failed: {why}", "links",
                     payload={"error": why}, remedy="is corosync running on this node?")]
    names, me = obs.names(), obs.local_nodeid
    stats = {(s.nodeid, s.link): s for s in obs.knet}
    out = []
    ordered = sorted(n.nodeid for n in (obs.conf.nodes if obs.conf else ())
                     if isinstance(n.nodeid, int))
    for link in obs.links.links:
        if link.summary is not None and not link.peers:  # corosync 2: a ring, no per-node state
            out.append(_ring(link))
        for peer in link.peers:
            nodeid = peer.nodeid if peer.nodeid is not None else (
                ordered[peer.position] if peer.position is not None
                and peer.position < len(ordered) else None)  # cfgtool's order: sorted nodeids
            if nodeid is None or nodeid == me or peer.state == "localhost":
                continue
            out += _one_link(obs, link.link, nodeid, peer.connected, names,
                             stats.get((nodeid, link.link)), latency_warn_ms)
    running = {link.link for link in obs.links.links}
    for number in (obs.conf.link_numbers if obs.conf else ()):
        if number not in running:
            out.append(fail("knet-link-not-running", f"link{number} is in corosync.conf but "
                            "corosync does not run it", f"link{number}", payload={"link": number},
                            remedy="corosync-cfgtool -R loads it (or see the CONFIGURATION "
                                   "section)"))
    return out


def _ring(link) -> Finding:
    """corosync 2's `RING ID N` block: its status text is all there is."""
    payload = {"link": link.link, "address": link.address, "status": link.summary}
    if link.faulty:
        return fail("ring-faulty", f"ring {link.link} ({link.address}): {link.summary}",
                    f"ring{link.link}", payload=payload,
                    remedy="fix the ring's network, then `corosync-cfgtool -r` re-enables it")
    return Finding("ring-active", Severity.PASS, f"ring {link.link} ({link.address}): "
                   f"{link.summary}", f"ring{link.link}", payload=payload)


def _one_link(obs: Observed, number: int, nodeid: int, connected: bool, names: dict[int, str],
              stats: KnetLinkStats | None, threshold_ms: float) -> list[Finding]:
    name = names.get(nodeid, f"node{nodeid}")
    reachable = obs.peers.peer(nodeid) if obs.peers else None
    peer_link = reachable.link(number) if reachable else None
    payload: dict[str, Any] = {
        "link": number, "peer": name, "nodeid": nodeid,
        "from": names.get(obs.local_nodeid or -1), "state": "connected" if connected
        else "disconnected",
        "local_address": peer_link.local_address if peer_link else None,
        "remote_address": peer_link.remote_address if peer_link else None,
        "mtu": peer_link.mtu if peer_link else None,
        "latency_ave_ms": _ms(stats.latency_ave_us) if stats else None,
        "latency_max_ms": _ms(stats.latency_max_us) if stats else None,
        "latency_samples": stats.latency_samples if stats else 0,
        "down_count": stats.down_count if stats else None}
    subject = f"{name}/link{number}"
    if not connected:
        return [fail("knet-link-down", f"link{number} to {name} is disconnected", subject,
                     payload=payload, remedy=f"check the network of link{number} between the "
                     f"nodes (cable, switch, firewall: UDP {5405 + number} must pass)")]
    ave = payload["latency_ave_ms"]
    out = [Finding("knet-link-connected", Severity.PASS, f"link{number} to {name} is connected"
                   + (f", RTT {ave:.3f} ms" if ave is not None else ""), subject,
                   payload=payload)]
    if ave is not None and ave > threshold_ms:
        out.append(warn("knet-latency-high", f"link{number} to {name}: average RTT {ave:.3f} ms "
                        f"is above {threshold_ms:g} ms", subject,
                        payload={**payload, "threshold_ms": threshold_ms},
                        remedy="corosync wants a low-latency network (under 2 ms; Proxmox "
                               "says clusters rarely work above about 10 ms)"))
    return out


def _ms(us: int | None) -> float | None:
    return None if us is None else round(us / 1000.0, 3)


def config_findings(obs: Observed) -> list[Finding]:
    if obs.conf is None:
        why = obs.errors.get(COROSYNC_CONF, "unreadable")
        return [warn("conf-unreadable", f"{COROSYNC_CONF}: {why}", COROSYNC_CONF,
                     payload={"error": why})]
    on_disk, running = obs.conf.config_version, obs.runtime_version
    payload = {"file": on_disk, "running": running}
    if running is None:
        return []
    if on_disk != running:
        return [warn("conf-not-loaded", f"corosync runs config_version {running}, the file "
                     f"says {on_disk}", COROSYNC_CONF, payload=payload,
                     remedy="an edit was not loaded: check it, then `corosync-cfgtool -R`")]
    return [Finding("conf-loaded", Severity.PASS, f"corosync runs config_version {running}, "
                    "as in the file", COROSYNC_CONF, payload=payload)]


# -- the report ------------------------------------------------------------------------------------

def matrices(obs: Observed, latency_warn_ms: float = LATENCY_WARN_MS) -> dict[str, Any]:
    """Per link: this node's row of the N x N matrix (knet's RTT and link state), so the
    HTML heatmap shows the cluster as corosync sees it."""
    if obs.links is None:
        return {}
    names = obs.names()
    order = list(names)
    row = order.index(obs.local_nodeid) if obs.local_nodeid in order else None
    stats = {(s.nodeid, s.link): s for s in obs.knet}
    out: dict[str, Any] = {}
    for link in obs.links.links:
        rtt: list[list[float | None]] = [[None] * len(order) for _ in order]
        state: list[list[str | None]] = [[None] * len(order) for _ in order]
        for peer in link.peers:
            if row is None or peer.nodeid not in order or peer.nodeid == obs.local_nodeid:
                continue
            col = order.index(peer.nodeid)
            state[row][col] = "connected" if peer.connected else "disconnected"
            s = stats.get((peer.nodeid, link.link))
            if peer.connected and s is not None:
                rtt[row][col] = _ms(s.latency_ave_us)
        out[f"link{link.link}"] = {"nodes": [names[i] for i in order], "rtt_ms": rtt,
                                   "state": state, "port": 5405 + link.link,
                                   "threshold_ms": latency_warn_ms, "source": "knet"}
    return out


def build_report(obs: Observed, expect_nodes: int | None = None,
                 latency_warn_ms: float = LATENCY_WARN_MS,
                 meta: Mapping[str, Any] | None = None,
                 qdevice: Sequence[Finding] = ()) -> Report:
    found = {"quorum": quorum_findings(obs), "members": member_findings(obs, expect_nodes),
             "qdevice": list(qdevice),
             "links": link_findings(obs, latency_warn_ms) if obs.quorum else [],
             "config": config_findings(obs) if obs.quorum else []}
    sections = tuple(ReportSection(name, title, tuple(_checked(found[name])))
                     for name, title in SECTIONS if found[name])
    names = obs.names()
    info = {"cluster": obs.conf.cluster_name if obs.conf else (
                obs.quorum.cluster_name if obs.quorum else None),
            "node": names.get(obs.local_nodeid or -1), "host": socket.gethostname(),
            "pvestrap": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "latency_fail_ms": latency_warn_ms,
            **(meta or {})}
    return Report("pvestrap status", sections, info, matrices(obs, latency_warn_ms))


def _checked(findings: Iterable[Finding]) -> list[Finding]:
    return [f if f.check else Finding(f.code, f.severity, f.message, f.subject, CHECK,
                                      f.payload, f.remedy, f.ignored) for f in findings]


def status_report(system: System, expect_nodes: int | None = None,
                  latency_warn_ms: float = LATENCY_WARN_MS) -> Report:
    """`pvestrap status`: observe this node's corosync and report."""
    started = time.monotonic()
    from pvestrap.verify_qdevice import qdevice_findings

    obs = observe(system)
    report = build_report(obs, expect_nodes, latency_warn_ms,
                          qdevice=qdevice_findings(obs, system))
    return Report(report.title, report.sections,
                  {**report.meta, "duration_s": round(time.monotonic() - started, 3)},
                  report.matrices)


# -- convergence after a change (every member, through its own tools) ------------------------------

def convergence_findings(node: str, conf: CorosyncConf, running: int | None,
                         peers: PeersStatus | None) -> list[Finding]:
    """What keeps member NODE from running CONF: another config_version, a peer it does not
    reach, a link of CONF not connected (or at another address), a link CONF dropped still up.
    Empty when NODE runs CONF and sees every other node on every link of it."""
    out = []
    want = conf.config_version
    if running != want:
        out.append(fail("conf-version-not-running", f"{node} runs config_version {running}, "
                        f"not {want}", node, payload={"node": node, "running": running,
                                                      "expected": want}))
    if peers is None:
        return out + [fail("knet-status-unavailable", f"{node}: corosync-cfgtool -n gave no "
                           "answer", node, payload={"node": node})]
    me = peers.local_nodeid
    links = set(conf.link_numbers)
    for other in conf.nodes:
        if other.nodeid == me or not isinstance(other.nodeid, int):
            continue
        seen = peers.peer(other.nodeid)
        for number in sorted(links):
            subject = f"{node}->{other.name}/link{number}"
            payload = {"node": node, "peer": other.name, "link": number,
                       "expected_address": other.addresses.get(number)}
            link = seen.link(number) if seen else None
            if link is None or not link.connected:
                out.append(fail("knet-link-down", f"{node} does not reach {other.name} on "
                                f"link{number}", subject, payload=payload))
            elif link.remote_address != other.addresses.get(number):
                out.append(fail("knet-link-address-stale", f"{node} reaches {other.name} on "
                                f"link{number} at {link.remote_address}", subject,
                                payload={**payload, "address": link.remote_address}))
        for link in (seen.links if seen else ()):
            if link.link not in links and link.connected:
                out.append(fail("knet-link-not-removed", f"{node} still runs link{link.link} "
                                f"to {other.name}", f"{node}->{other.name}/link{link.link}",
                                payload={"node": node, "peer": other.name, "link": link.link}))
    return out


# -- a new network, before a link moves onto it ----------------------------------------------------

_PING_LOSS = re.compile(r"(\d+(?:\.\d+)?)% packet loss")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/[\d.]+ ms")


def address_findings(node: str, link: int, address: str, ip_json: str) -> list[Finding]:
    """Whether NODE holds ADDRESS on an interface that is up (`ip -j addr show` output)."""
    subject = f"{node}/link{link}"
    try:
        interfaces = json.loads(ip_json or "[]")
    except ValueError:
        return [fail("link-address-unknown", f"{node}: `ip -j addr show` printed no JSON",
                     subject, payload={"address": address})]
    for iface in interfaces:
        for info in iface.get("addr_info", ()):
            if info.get("local") != address:
                continue
            payload = {"address": address, "interface": iface.get("ifname"),
                       "prefixlen": info.get("prefixlen"), "mtu": iface.get("mtu"),
                       "operstate": iface.get("operstate")}
            if "UP" not in iface.get("flags", ()) or iface.get("operstate") == "DOWN":
                return [fail("link-interface-down", f"{address} is on {iface.get('ifname')}, "
                             "which is down", subject, payload=payload,
                             remedy=f"bring {iface.get('ifname')} up (ifup / ifreload -a)")]
            return [Finding("link-address-on-node", Severity.PASS, f"{address} is on "
                            f"{iface.get('ifname')}", subject, payload=payload)]
    return [fail("link-address-not-on-node", f"{address} is not configured on {node}", subject,
                 payload={"address": address},
                 remedy=f"configure {address} on {node}'s NIC for the new network first "
                        "(/etc/network/interfaces, ifreload -a)")]


def ping_findings(node: str, peer: str, link: int, source: str, target: str,
                  output: str) -> list[Finding]:
    """ICMP from NODE's new address to PEER's (`ping -q` output): reachable, lossy or not."""
    loss = _PING_LOSS.search(output or "")
    rtt = _PING_RTT.search(output or "")
    loss_pct = float(loss.group(1)) if loss else None
    payload = {"from": source, "to": target, "link": link, "loss_pct": loss_pct,
               "rtt_avg_ms": float(rtt.group(2)) if rtt else None,
               "rtt_max_ms": float(rtt.group(3)) if rtt else None}
    subject = f"{node}->{peer}/link{link}"
    if loss_pct is None or loss_pct >= 100.0:
        return [fail("link-peer-unreachable", f"{node} cannot reach {peer} at {target} from "
                     f"{source}", subject, payload=payload,
                     remedy="check cabling, VLANs, switch ports and firewalls of the new "
                            "network between these two nodes")]
    if loss_pct > 0:
        return [warn("link-peer-loss", f"{loss_pct:g}% of pings from {node} to "
                     f"{peer} on the new network were lost", subject, payload=payload,
                     remedy="corosync needs a loss-free network: find the lossy hop")]
    return [Finding("link-peer-reachable", Severity.PASS, f"{node} reaches {peer} at {target}"
                    + (f", RTT {payload['rtt_avg_ms']:.3f} ms" if rtt else ""), subject,
                    payload=payload)]
