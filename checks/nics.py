"""NICs: what the node has, which NICs are free for corosync links, and how the links sit on them.

Corosync wants its own network: link0 sharing a NIC or bridge with the management/VM network
means a busy backup or migration can delay the token and fence nodes. A single link has no
fallback. Bonds in load-balancing modes reorder or drop the small, latency-critical knet
packets, and 802.3ad with slow LACP needs up to 90 s to notice a dead port.

Free NICs: physical NICs that are not enslaved to a bridge or bond and carry no address (a
link-local fe80:: does not count). Inside a network namespace or a container there are no
physical NICs, only veths; there, and only there, veths count as NICs (that is how the lab and
LXC-style test nodes are wired). A machine with a physical NIC never offers its veths, which
belong to guests or containers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import LIVE, Interface, Machine, Sources, link_addresses
from pvestrap.findings import Finding, Severity, fail, info, passed, warn

FAMILY = "nics"
UNSUITABLE_BOND_MODES = frozenset({"balance-rr", "balance-xor", "balance-tlb", "balance-alb"})
MANAGEMENT_BRIDGE = "vmbr0"


def nic_kinds(machine: Machine) -> frozenset[str]:
    """Kinds that count as a NIC on this machine (see the module docstring about veths)."""
    if any(i.kind == "physical" for i in machine.interfaces):
        return frozenset({"physical"})
    return frozenset({"veth"})


def free_nics(machine: Machine) -> tuple[Interface, ...]:
    """NICs that are not enslaved and carry no address: candidates for a corosync link."""
    kinds = nic_kinds(machine)
    return tuple(i for i in machine.interfaces
                 if i.kind in kinds and i.master is None and not i.global_addresses)


def describe(iface: Interface) -> dict[str, Any]:
    """The inventory row of one interface (a plain dict: the payload and the JSON report)."""
    return {"name": iface.name, "kind": iface.kind, "mac": iface.mac, "operstate": iface.operstate,
            "up": iface.up, "carrier": iface.carrier, "speed_mbps": iface.speed_mbps,
            "mtu": iface.mtu, "addresses": [a.cidr for a in iface.global_addresses],
            "master": iface.master, "bond_mode": iface.bond_mode, "lacp_rate": iface.lacp_rate}


def management_interfaces(machine: Machine) -> tuple[str, ...]:
    """Where management and VM traffic go: the default route's devices and the vmbr0 bridge."""
    names = list(machine.default_route)
    if machine.interface(MANAGEMENT_BRIDGE) and MANAGEMENT_BRIDGE not in names:
        names.append(MANAGEMENT_BRIDGE)
    return tuple(names)


def link_interface(machine: Machine, address: str) -> Interface | None:
    """The up interface carrying `address`; else any interface carrying it; else None."""
    carriers = machine.carrying(address)
    up = [i for i in carriers if i.up]
    return next(iter(up or carriers), None)


def planned_nic(machine: Machine, address: str) -> Interface | None:
    """The NIC on which ADDRESS is only planned (the plan's new stanza, which apply's network
    phase writes and brings up; preflight.planned_machine puts it there); None when the
    address is configured somewhere, or nowhere at all."""
    iface = link_interface(machine, address)
    if iface is not None and iface.only_planned(address) and iface.master is None:
        return iface
    return None


def _cables(machine: Machine, devices: frozenset[str]) -> frozenset[str]:
    """The NICs among shared lower devices; guest taps on a shared bridge are not cables."""
    kinds = nic_kinds(machine)
    nics = frozenset(d for d in devices if (i := machine.interface(d)) and i.kind in kinds)
    return nics or devices


@dataclass(frozen=True)
class InventoryCheck:
    """Lists every interface, and every free NIC as INFO `nic-free` (offered for links)."""

    id: ClassVar[str] = "nic-inventory"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "interface inventory and free NICs"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        machine = self.sources.machine_for(ctx)
        rows = [describe(i) for i in machine.interfaces]
        out = [Finding("nic-inventory", Severity.INFO,
                       f"{len(rows)} interfaces: " + ", ".join(f"{r['name']} ({r['kind']})"
                                                             for r in rows),
                       ctx.node, self.id, payload={"interfaces": rows,
                                                   "nic_kinds": sorted(nic_kinds(machine))})]
        for iface in free_nics(machine):
            state = "up" if iface.up else iface.operstate.lower()
            speed = f", {iface.speed_mbps} Mb/s" if iface.speed_mbps else ""
            out.append(Finding("nic-free", Severity.INFO,
                               f"{iface.name} is free ({iface.kind}, {state}{speed}, MTU "
                               f"{iface.mtu}): usable for a corosync link", _subject(ctx, iface),
                               self.id, payload=dict(describe(iface), offer_for_links=True)))
        return out


def _subject(ctx: Context, iface: Interface | str) -> str:
    name = iface if isinstance(iface, str) else iface.name
    return f"{ctx.node}/{name}" if ctx.node else name


@dataclass(frozen=True)
class LinkAddressCheck:
    """Each planned link address of this node is configured on a local interface that is up."""

    id: ClassVar[str] = "link-address"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "link addresses are on local interfaces that are up"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        links = link_addresses(ctx)
        if not links:
            return [Finding("link-address-skipped", Severity.SKIP,
                            "no plan for this node: no link addresses to look for", ctx.node,
                            self.id)]
        machine = self.sources.machine_for(ctx)
        return [self._one(machine, ctx.node or "", n, a) for n, a in sorted(links.items())]

    def _one(self, machine: Machine, node: str, number: int, address: str) -> Finding:
        subject = f"{node}/link{number}"
        iface = link_interface(machine, address)
        payload = {"link": number, "address": address,
                   "interface": iface.name if iface else None,
                   "operstate": iface.operstate if iface else None}
        if iface is not None and planned_nic(machine, address) is iface:
            return info("link-address-planned",
                        f"link{number} address {address} is planned on {iface.name} (not "
                        "configured yet): apply writes its stanza to /etc/network/interfaces and "
                        "brings it up before the probes that need it",
                        subject, self.id, payload=dict(payload, planned_on=iface.name))
        if iface is None or not iface.up:
            where = (f"is on {iface.name}, which is not up ({iface.operstate})" if iface
                     else "is not configured on any interface")
            return fail("link-address-missing", f"link{number} address {address} {where}",
                        subject, check=self.id, payload=payload,
                        remedy=f"configure {address} on the NIC meant for link{number} (see the "
                               "free NICs above) and bring it up")
        return passed("link-address-local", f"link{number} address {address} is on {iface.name}",
                   subject, self.id, payload=payload)


@dataclass(frozen=True)
class LinkLayoutCheck:
    """Link redundancy, link0 apart from management, and bonds fit for corosync."""

    id: ClassVar[str] = "link-layout"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "link redundancy, link0 separate from management, bond modes"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        if ctx.plan is None:
            return [Finding("link-layout-skipped", Severity.SKIP, "no plan: no links to inspect",
                            ctx.node, self.id)]
        out = self._redundancy(ctx)
        links = link_addresses(ctx)
        if links:
            machine = self.sources.machine_for(ctx)
            ifaces = {n: link_interface(machine, a) for n, a in links.items()}
            out += self._management(ctx, machine, ifaces)
            out += self._shared(ctx, machine, ifaces)
            out += self._bonds(ctx, machine, ifaces)
        if not any(f.severity is Severity.WARN for f in out):
            out.append(passed("link-layout-ok", "links are redundant, link0 is separate from "
                           "management and no unsuitable bond carries a link", ctx.node, self.id,
                           payload={"links": list(ctx.plan.link_numbers)}))
        return out

    def _redundancy(self, ctx: Context) -> list[Finding]:
        assert ctx.plan is not None
        if len(ctx.plan.links) == 1:
            return [warn("link-no-redundancy", "the plan has a single corosync link", "links",
                         check=self.id, payload={"links": list(ctx.plan.link_numbers)},
                         remedy="add a second link on another NIC and network (knet fails over "
                                "between links by priority)")]
        return []

    def _management(self, ctx: Context, machine: Machine,
                    ifaces: dict[int, Interface | None]) -> list[Finding]:
        link0 = ifaces.get(0)
        if link0 is None:
            return []
        for mgmt in management_interfaces(machine):
            shared = _cables(machine, machine.lower(link0.name) & machine.lower(mgmt))
            if link0.name == mgmt or shared:
                return [warn("link0-shares-management",
                             f"link0 ({link0.name}) shares {', '.join(sorted(shared)) or mgmt} "
                             f"with the management/VM network ({mgmt})", f"{ctx.node}/link0",
                             check=self.id,
                             payload={"link": 0, "interface": link0.name, "management": mgmt,
                                      "shared": sorted(shared)},
                             remedy="give link0 a NIC of its own (a free NIC, or a VLAN is still "
                                    "better than nothing) and keep the management network as "
                                    "a lower-priority fallback link")]
        return []

    def _shared(self, ctx: Context, machine: Machine,
                ifaces: dict[int, Interface | None]) -> list[Finding]:
        out: list[Finding] = []
        numbers = sorted(n for n, i in ifaces.items() if i is not None)
        for pos, a in enumerate(numbers):
            for b in numbers[pos + 1:]:
                ia, ib = ifaces[a], ifaces[b]
                assert ia is not None and ib is not None
                shared = _cables(machine, machine.lower(ia.name) & machine.lower(ib.name))
                if shared:
                    over = ", ".join(sorted(shared))
                    out.append(warn("links-share-nic", f"link{a} and link{b} both run over {over}",
                                    f"{ctx.node}/link{a}+link{b}", check=self.id,
                                    payload={"links": [a, b], "shared": sorted(shared)},
                                    remedy="put each link on its own NIC, or a cable fault takes "
                                           "all of them down at once"))
        return out

    def _bonds(self, ctx: Context, machine: Machine,
               ifaces: dict[int, Interface | None]) -> list[Finding]:
        out: list[Finding] = []
        for number, iface in sorted(ifaces.items()):
            if iface is None:
                continue
            for bond in (i for i in machine.stack(iface.name) if i.kind == "bond"):
                out += self._bond(ctx, number, bond)
        return out

    def _bond(self, ctx: Context, number: int, bond: Interface) -> list[Finding]:
        subject = f"{ctx.node}/link{number}/{bond.name}"
        payload = {"link": number, "bond": bond.name, "mode": bond.bond_mode,
                   "lacp_rate": bond.lacp_rate}
        if bond.bond_mode in UNSUITABLE_BOND_MODES:
            return [warn("bond-mode-unsuitable", f"link{number} runs over bond {bond.name} in "
                         f"{bond.bond_mode} mode", subject, check=self.id, payload=payload,
                         remedy="use active-backup, or 802.3ad with bond-lacp-rate fast; better, "
                                "give corosync separate links instead of a bond")]
        if bond.bond_mode == "802.3ad" and bond.lacp_rate != "fast":
            return [warn("bond-lacp-slow", f"bond {bond.name} (link{number}) uses LACP rate "
                         f"{bond.lacp_rate or 'slow'}", subject, check=self.id, payload=payload,
                         remedy="set `bond-lacp-rate fast` on the bond and the switch ports")]
        return []


def checks(sources: Sources = LIVE) -> tuple[InventoryCheck, LinkAddressCheck, LinkLayoutCheck]:
    return (InventoryCheck(sources), LinkAddressCheck(sources), LinkLayoutCheck(sources))
