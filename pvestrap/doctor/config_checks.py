"""The doctor's configuration checks: corosync.conf against the admin guide, on every node.

Sources (pve-docs pvecm.adoc, "Cluster Network", "Corosync Redundancy", "Link Address Types",
"Corosync Configuration"): links on their own networks, not shared with storage; IP addresses
rather than hostnames (resolved once, at start, by getaddrinfo on each node); the higher
knet_link_priority is the one used in passive mode; config_version raised on every change and
the same everywhere; one authkey (corosync refuses packets it cannot decrypt).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any, ClassVar

from pvestrap.checks.base import Context
from pvestrap.checks.quorum import TOKEN_LIMIT_MS, token_timing
from pvestrap.corosync.lint import lint
from pvestrap.doctor import facts as F
from pvestrap.doctor.knet import link_latency_ms
from pvestrap.doctor.pvefiles import (
    in_network,
    migration_network,
    network_of,
    storage_servers,
)
from pvestrap.doctor.view import DoctorView, NodeView, view_of
from pvestrap.findings import Finding, Severity, fail, info, passed, warn

FAMILY = "config"


def _no_conf(check: str, view: DoctorView) -> list[Finding]:
    return [Finding("corosync-conf-missing", Severity.FAIL, f"{view.local} has no readable "
                    "corosync.conf: not a cluster node, or the file is broken", view.local, check,
                    payload={"errors": dict(view.me.errors) if view.me else {}},
                    remedy="run doctor on a cluster member; `pvestrap conf lint FILE` shows "
                           "what is wrong with the file")]


@dataclass(frozen=True)
class ConfLintCheck:
    id: ClassVar[str] = "conf-lint"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "corosync.conf passes pvestrap's lint (structure, keys, values)"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        me = view.me
        path = F.PVE_COROSYNC_CONF if me and me.file(F.PVE_COROSYNC_CONF) else F.COROSYNC_CONF
        text = me.file(path) if me else None
        if text is None:
            return _no_conf(self.id, view)
        found = [dataclasses.replace(f, check=self.id) for f in lint(text, path)]
        return found or [passed("conf-lint-clean", f"{path} passes lint", path, self.id)]


@dataclass(frozen=True)
class LinkRedundancyCheck:
    id: ClassVar[str] = "link-redundancy"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "more than one corosync link (the guide's redundancy)"

    def run(self, ctx: Context) -> list[Finding]:
        conf = view_of(ctx).conf
        if conf is None:
            return []
        links = conf.link_numbers
        payload = {"links": list(links)}
        if len(links) < 2:
            return [warn("single-link", f"corosync has one link (link{links[0] if links else 0})"
                         ": a failed NIC, cable or switch splits the cluster", "links",
                         check=self.id, payload=payload,
                         remedy="add a second link on its own network: `pvestrap link add` (or "
                                "ringX_addr per node plus an interface section, config_version "
                                "+1), as the guide's Corosync Redundancy section shows")]
        return [passed("links-redundant", f"{len(links)} links: "
                       + ", ".join(f"link{n}" for n in links), "links", self.id, payload=payload)]


def _link_networks(node: NodeView, conf) -> dict[int, Any]:
    """link -> the network of the interface holding this node's link address."""
    me = next((n for n in conf.nodes if n.name == node.name), None)
    machine = node.machine
    out: dict[int, Any] = {}
    if me is None or machine is None:
        return out
    for link, address in me.addresses.items():
        for iface in machine.carrying(address):
            for a in iface.addresses:
                if a.address == address:
                    out[link] = network_of(a.cidr)
    return out


def _management_network(node: NodeView):
    machine = node.machine
    for address in node.facts.get("hostname_addresses") or ():
        if machine is None or ipaddress.ip_address(address).is_loopback:
            continue
        for iface in machine.carrying(address):
            for a in iface.addresses:
                if a.address == address:
                    return address, network_of(a.cidr)
    return None, None


@dataclass(frozen=True)
class LinkNetworksCheck:
    id: ClassVar[str] = "link-networks"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "links not shared with management, migration or storage traffic"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf = view.conf
        if conf is None:
            return []
        out: list[Finding] = []
        for node in view.nodes.values():
            out += self._node(node, conf)
        return out or [passed("link-networks-separate", "every link has its own network, "
                              "apart from management, migration and storage", "links", self.id)]

    def _node(self, node: NodeView, conf) -> list[Finding]:
        nets = _link_networks(node, conf)
        mgmt_addr, mgmt = _management_network(node)
        migration = network_of(migration_network(node.file(F.DATACENTER_CFG)) or "")
        storages = storage_servers(node.file(F.STORAGE_CFG))
        prio = conf.priorities
        top = max(prio.values()) if prio else 0
        out = []
        for link, net in sorted(nets.items()):
            where = f"{node.name}/link{link}"
            base = {"node": node.name, "link": link, "network": str(net)}
            fallback = len(nets) > 1 and prio.get(link, 0) < top
            if mgmt is not None and net == mgmt:
                out.append(warn("link-shares-management", f"link{link} ({net}) is the management "
                                f"network ({node.name}'s hostname resolves to {mgmt_addr})", where,
                                check=self.id, payload={**base, "management": mgmt_addr},
                                remedy="give corosync its own network (the guide: 'ideally "
                                       "corosync runs on its own network'); keep this one as a "
                                       "lower-priority fallback link"))
            if migration is not None and net is not None and net.overlaps(migration):
                out.append(warn("link-shares-migration", f"link{link} ({net}) overlaps the "
                                f"migration network {migration} of datacenter.cfg", where,
                                check=self.id, payload={**base, "migration": str(migration)},
                                remedy="move migration traffic (datacenter.cfg `migration: "
                                       "network=`) or the link to another network"))
            for storage, hosts in sorted(storages.items()):
                inside = [h for h in hosts if in_network(h, net)]
                if inside and not fallback:
                    out.append(warn("link-shares-storage", f"link{link} ({net}) carries storage "
                                    f"'{storage}' ({', '.join(inside)})", where, check=self.id,
                                    payload={**base, "storage": storage, "servers": inside},
                                    remedy="the guide: do not share corosync's network with "
                                           "storage, except as a low-priority fallback link"))
        by_net: dict[str, list[int]] = {}
        for link, net in nets.items():
            by_net.setdefault(str(net), []).append(link)
        for net_text, links in sorted(by_net.items()):
            if len(links) > 1:
                out.append(warn("links-share-network", f"links {links} of {node.name} are all on "
                                f"{net_text}: they fail together", node.name, check=self.id,
                                payload={"node": node.name, "links": links, "network": net_text},
                                remedy="the guide: every link should be on its own network"))
        return out


@dataclass(frozen=True)
class LinkHostnamesCheck:
    id: ClassVar[str] = "link-hostnames"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "hostname link addresses resolve identically on every node"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf = view.conf
        if conf is None:
            return []
        owners = {a: (n.name or "?", link) for n in conf.nodes
                  for link, a in n.addresses.items()}
        names = sorted({a for node in view.nodes.values() for a in
                        (node.facts.get("resolved") or {})})
        out = []
        for name in names:
            out += self._one(view, name, owners.get(name, ("?", 0)))
        return out or [passed("link-addresses-ip", "every link address is an IP address",
                              "links", self.id)]

    def _one(self, view: DoctorView, name: str, owner: tuple[str, int]) -> list[Finding]:
        seen = {n: tuple((v.facts.get("resolved") or {}).get(name, ())) for n, v in
                view.nodes.items() if name in (v.facts.get("resolved") or {})}
        first = {n: a[0] if a else None for n, a in seen.items()}
        payload = {"name": name, "owner": owner[0], "link": owner[1], "resolved": first}
        subject = f"{owner[0]}/link{owner[1]}"
        remedy = (f"write the IP address instead of {name!r} in corosync.conf (config_version "
                  "+1), as the guide recommends; or make every node resolve it alike "
                  "(/etc/hosts on each node)")
        unresolved = sorted(n for n, a in first.items() if a is None)
        if unresolved:
            return [fail("link-hostname-unresolved", f"{name} (link{owner[1]} of {owner[0]}) "
                         f"does not resolve on {', '.join(unresolved)}: corosync there cannot "
                         "start", subject, check=self.id, payload=payload, remedy=remedy)]
        if len(set(first.values())) > 1:
            text = "; ".join(f"{n}: {a}" for n, a in sorted(first.items()))
            return [fail("link-hostname-differs", f"{name} (link{owner[1]} of {owner[0]}) "
                         f"resolves differently: {text}", subject, check=self.id,
                         payload=payload, remedy=remedy)]
        address = next(iter(first.values()), None)
        holder = view.nodes.get(owner[0])
        if holder is not None and holder.machine is not None and address and \
                not holder.machine.carrying(address):
            return [fail("link-hostname-elsewhere", f"{name} resolves to {address}, which "
                         f"{owner[0]} does not have", subject, check=self.id, payload=payload,
                         remedy=remedy)]
        where = "every node" if view.mesh else view.local
        return [passed("link-hostname-consistent", f"{name} resolves to {address} on {where}",
                       subject, self.id, payload=payload)]


@dataclass(frozen=True)
class LinkPriorityCheck:
    id: ClassVar[str] = "link-priority"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "the preferred link (highest knet_link_priority) is not the slower one"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf = view.conf
        if conf is None or len(conf.link_numbers) < 2:
            return []
        prio = conf.priorities
        payload: dict[str, Any] = {"priorities": {f"link{k}": v for k, v in prio.items()}}
        if len(set(prio.values())) == 1:
            return [info("link-priorities-equal", "every link has the same knet_link_priority",
                         "links", self.id, payload=payload)]
        measured = link_latency_ms(view)
        payload["latency_ms"] = {f"link{k}": v for k, v in measured.items()}
        best = max(prio, key=lambda k: (prio[k], -k))
        slower = {k: v for k, v in measured.items() if best in measured and k != best
                  and measured[best] > 1.5 * v + 0.5}
        if slower:
            return [warn("link-priority-slower-preferred", f"link{best} has the highest priority "
                         f"but is slower ({measured[best]:.2f} ms) than "
                         + ", ".join(f"link{k} ({v:.2f} ms)" for k, v in slower.items()),
                         f"link{best}", check=self.id, payload=payload,
                         remedy="give the faster, dedicated link the highest knet_link_priority "
                                "(totem.interface, config_version +1)")]
        return [passed("link-priority-ok", f"link{best} is preferred and not slower", "links",
                       self.id, payload=payload)]


@dataclass(frozen=True)
class TokenCheck:
    id: ClassVar[str] = "token-timing"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "token + consensus for the node count stay below the HA fencing window"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf, me = view.conf, view.me
        if conf is None or me is None:
            return []
        totem = conf.tree.section("totem")
        n = len(conf.nodes)
        token_text = (totem.get("token") if totem else None) or "3000"
        token = int(token_text) if token_text.isdigit() else 3000
        coeff_text = (totem.get("token_coefficient") if totem else None) or "650"
        t = token_timing(n, token, int(coeff_text) if coeff_text.isdigit() else 650)
        running = me.runtime(F.RUNTIME_TOTEM, "runtime.config.totem.token")
        consensus = me.runtime(F.RUNTIME_TOTEM, "runtime.config.totem.consensus")
        total = (running + consensus) if running and consensus else t.total_ms
        payload = {"nodes": n, "token_ms": token, "runtime_token_ms": running or
                   t.runtime_token_ms, "consensus_ms": consensus or t.consensus_ms,
                   "total_ms": total, "limit_ms": TOKEN_LIMIT_MS}
        text = f"token + consensus = {total / 1000:.1f} s for {n} nodes"
        if total > TOKEN_LIMIT_MS:
            return [warn("token-timeout-long", text, "totem", check=self.id, payload=payload,
                         remedy="set token_coefficient: 125 in totem (what PVE >= 9.2 writes), "
                                "config_version +1")]
        return [passed("token-timeout-ok", text, "totem", self.id, payload=payload)]


def checks() -> tuple:
    return (ConfLintCheck(), LinkRedundancyCheck(), LinkNetworksCheck(), LinkHostnamesCheck(),
            LinkPriorityCheck(), TokenCheck())
