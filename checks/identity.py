"""Identity: the node's name resolves to one usable local address, and names follow the rules.

`pvecm create` refuses a hostname that resolves to a loopback address, and PVE's upgrade checker
wants the resolved address configured on exactly one local interface. Corosync resolves names
with `ip_version: ipv4-6` (IPv4 first); other PVE tools take getaddrinfo's first answer, so a
name whose first answer is IPv6 while the links are IPv4 is flagged too.

The name checked is the plan's name for this node (ctx.node) when there is one: it is the name
the cluster will know. A host name that differs from it is reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import (LIVE, Machine, Sources, corosync_order, ip_version,
                                      is_loopback, link_addresses, short_hostname)
from pvestrap.findings import Finding, Severity, fail, info, passed, warn
from pvestrap.plan import NAME_RULE, name_problem

FAMILY = "identity"
_NAME_REMEDY = f"use {NAME_RULE} (e.g. 'pve1')"


def node_name(ctx: Context, machine: Machine) -> str:
    return ctx.node or short_hostname(machine.hostname)


@dataclass(frozen=True)
class HostnameCheck:
    """The node name resolves to a non-loopback address on exactly one local interface, up."""

    id: ClassVar[str] = "hostname"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "node name resolves to one local, non-loopback address that is up"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        machine = self.sources.machine_for(ctx)
        name = node_name(ctx, machine)
        raw = self.sources.resolver(name)
        if not raw:
            return [fail("hostname-unresolved", f"{name} does not resolve to any address", name,
                         check=self.id, payload={"name": name},
                         remedy=f"add '<address> {name}' to /etc/hosts (the address of the "
                                "management interface)")]
        ordered = corosync_order(raw)
        address = ordered[0]
        base = {"name": name, "address": address, "addresses": list(raw)}
        if is_loopback(address):
            return [fail("hostname-loopback", f"{name} resolves to the loopback address {address}",
                         name, check=self.id, payload=base,
                         remedy=f"in /etc/hosts, map {name} to the node's real address instead of "
                                f"{address} (Debian's installer writes 127.0.1.1)")]
        out = [self._local(machine, name, address, base)]
        out += self._ipv6_first(ctx, name, raw, base)
        return out

    def _local(self, machine: Machine, name: str, address: str,
               base: Mapping[str, Any]) -> Finding:
        carriers = machine.carrying(address)
        names = [i.name for i in carriers]
        payload = dict(base, interfaces=names)
        if not carriers:
            return fail("hostname-address-not-local",
                        f"{name} resolves to {address}, which is not configured on this machine",
                        name, check=self.id, payload=payload,
                        remedy=f"configure {address} on the management interface, or fix the "
                               f"entry for {name} in /etc/hosts")
        if len(carriers) > 1:
            return warn("hostname-address-ambiguous",
                        f"{address} ({name}) is configured on {len(names)} interfaces: "
                        f"{', '.join(names)}", name, check=self.id, payload=payload,
                        remedy="keep the node's address on exactly one interface")
        iface = carriers[0]
        payload["interface"] = iface.name
        payload["operstate"] = iface.operstate
        if not iface.up:
            return fail("hostname-interface-down",
                        f"{address} ({name}) is on {iface.name}, which is not up "
                        f"({iface.operstate})", name, check=self.id, payload=payload,
                        remedy=f"bring {iface.name} up and check its cable (ip link show "
                               f"{iface.name})")
        return passed("hostname-resolves", f"{name} resolves to {address} on {iface.name}", name,
                   self.id, payload=payload)

    def _ipv6_first(self, ctx: Context, name: str, raw: tuple[str, ...],
                    base: Mapping[str, Any]) -> list[Finding]:
        links = link_addresses(ctx)
        link_versions = {ip_version(a) for a in links.values()}
        if not links or ip_version(raw[0]) != 6 or link_versions != {4}:
            return []
        return [warn("hostname-ipv6-first",
                     f"{name} resolves to IPv6 {raw[0]} first while the links are IPv4", name,
                     check=self.id, payload=dict(base, first=raw[0]),
                     remedy=f"list the IPv4 address of {name} first in /etc/hosts (or drop the "
                            "IPv6 entry), so every tool picks the same address")]


@dataclass(frozen=True)
class NamesCheck:
    """Node and cluster names follow pve-cluster's rule; the host name is the plan's node name."""

    id: ClassVar[str] = "names"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "node and cluster names follow the rules; host name matches the plan"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        machine = self.sources.machine_for(ctx)
        host = short_hostname(machine.hostname)
        name = ctx.node or host
        out = [self._name("node", name)]
        if ctx.plan is not None:
            out.append(self._name("cluster", ctx.plan.cluster_name))
        if ctx.node and host != ctx.node:
            out.append(warn("hostname-node-mismatch",
                            f"the host name is {host}, the plan calls this node {ctx.node}",
                            ctx.node, check=self.id, payload={"hostname": host, "node": ctx.node},
                            remedy=f"set the host name to {ctx.node} (hostnamectl set-hostname "
                                   f"{ctx.node}, and /etc/hosts) before creating or joining: PVE "
                                   "uses the host name as the node name"))
        return out

    def _name(self, what: str, value: str) -> Finding:
        problem = name_problem(value)
        if problem:
            return fail(f"{what}-name-invalid", f"{what} name {value!r}: {problem}", value,
                        check=self.id, payload={"name": value, "problem": problem},
                        remedy=_NAME_REMEDY + (" (a cluster name cannot be changed later)"
                                               if what == "cluster" else ""))
        return passed(f"{what}-name-valid", f"{what} name {value} is valid", value, self.id,
                   payload={"name": value})


def compare_resolutions(views: Mapping[str, Mapping[str, str | None]],
                        check: str = "name-consistency") -> list[Finding]:
    """Findings for name -> address views as seen from several nodes.

    views: {observer node: {node name: the address it resolves to (corosync order), or None}}.
    Every observer must see every name at the same address; this is what the runner calls after
    collecting each node's `names-resolved` payload.
    """
    names = sorted({n for view in views.values() for n in view})
    out: list[Finding] = []
    for name in names:
        seen = {obs: view.get(name) for obs, view in sorted(views.items()) if name in view}
        unresolved = sorted(obs for obs, addr in seen.items() if addr is None)
        distinct = sorted({addr for addr in seen.values() if addr is not None})
        payload = {"name": name, "seen": seen}
        if len(distinct) > 1:
            out.append(fail("hostname-mismatch",
                            f"{name} resolves to different addresses on different nodes: "
                            + ", ".join(f"{o}: {a}" for o, a in seen.items()), name, check=check,
                            payload=payload,
                            remedy=f"make /etc/hosts (or DNS) give {name} the same address on "
                                   "every node"))
        if unresolved:
            out.append(warn("peer-name-unresolved",
                            f"{name} does not resolve on {', '.join(unresolved)}", name,
                            check=check, payload=dict(payload, observers=unresolved),
                            remedy=f"add {name} to /etc/hosts on {', '.join(unresolved)}"))
        if len(distinct) == 1 and not unresolved:
            out.append(passed("hostname-consistent",
                           f"{name} resolves to {distinct[0]} on {len(seen)} node(s)", name, check,
                           payload=payload))
    return out


@dataclass(frozen=True)
class NameConsistencyCheck:
    """Every node name resolves to the same address on every node.

    This node resolves all of the plan's names (reported as INFO `names-resolved`, whose payload
    the runner collects); the views of other nodes come in ctx.options["resolutions"]
    ({observer: {name: address or None}}). With only this node's view nothing can be compared
    across nodes yet, and that is said with a SKIP.
    """

    id: ClassVar[str] = "name-consistency"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "every node name resolves to the same address on every node"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        if ctx.plan is None:
            return [Finding("name-consistency-skipped", Severity.SKIP,
                            "no plan: there are no peer names to compare", None, self.id)]
        machine = self.sources.machine_for(ctx)
        me = node_name(ctx, machine)
        mine = {n.name: self._first(n.name) for n in ctx.plan.nodes}
        out = [info("names-resolved", f"{me} resolved {len(mine)} node names", me, self.id,
                     payload={"observer": me, "resolutions": mine})]
        views: dict[str, Mapping[str, str | None]] = dict(ctx.options.get("resolutions") or {})
        views[me] = mine
        if len(views) < 2:
            out.append(Finding("name-consistency-single", Severity.SKIP,
                               "only this node's view of the names is known", me, self.id))
            out += [f for f in compare_resolutions(views, self.id)
                    if f.severity is not Severity.PASS]
            return out
        return out + compare_resolutions(views, self.id)

    def _first(self, name: str) -> str | None:
        addrs = corosync_order(self.sources.resolver(name))
        return addrs[0] if addrs else None


def checks(sources: Sources = LIVE) -> tuple[HostnameCheck, NamesCheck, NameConsistencyCheck]:
    return (HostnameCheck(sources), NamesCheck(sources), NameConsistencyCheck(sources))
