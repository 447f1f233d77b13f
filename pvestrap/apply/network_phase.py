"""apply's network phase: the node's /etc/network/interfaces written, the new stanzas brought up
and verified, everything put back on any failure. It runs before the cluster steps (a joiner
reaches the cluster over the new network), and changes nothing of the cluster.

The file's content has ONE source: the interfaces Change of `pvestrap.render.render_node` (the
user's own lines, comments and `source` lines kept byte for byte by
`pvestrap.interfaces.edit_interfaces`), the same text `render --diff` and `apply --dry-run` show.

API (the apply flow, the first boot and the wizard call these):

    steps(plan, node, system, change, timeouts=NetworkTimeouts()) -> list[Step]
        The phase's steps for the engine (pvestrap.apply.engine.run_steps); `change` is the
        interfaces Change from `interfaces_change(plan, node, root)` (None: the file is as
        planned already). Every step plans nothing when the node is as planned.
    refuse_duplicates(plan, node, system, prober=address_probe.probe, note=print) -> None
        Before any change: UserError `link-address-in-use` (exit 2) when another host answers
        for a planned IPv4 address on its NIC (RFC 5227 ARP probe, pvestrap.apply.address_probe).
    run(plan, node, system, *, root="/", out=print, confirm=None, prober=..., timeouts=...,
        on_progress=None) -> ApplyOutcome | None
        The whole phase: plan, show, (confirm), refuse duplicates, apply; None when there was
        nothing to do; a dry run (`system.dry_run`) shows the plan and returns it, nothing
        applied (`outcome.changed` False). A failure raises
        StepFailed (exit 1) naming the step after the rollback; a no raises ApplyDeclined.

The steps, in order:
1. `network:write-interfaces`: the atomic write. Its undo puts the previous bytes back
   (byte-identical, the backup file too), reloads, and waits until every address the node had
   before is back and the planned ones that were not there are gone; that failing is reported.
2. `network:reload`: `ifreload -a` with ifupdown2 (Proxmox VE's default), `ifup IFACE` for each
   planned stanza where only classic ifupdown exists. A stanza ifupdown2 rejects fails here.
3. `network:wait-carrier`: bounded wait until each planned NIC is up with carrier (LOWER_UP).
4. `network:wait-address`: bounded wait until each planned address is on its NIC and neither
   tentative nor dadfailed (IPv6 DAD, RFC 4862: a duplicate fails here).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from pvestrap.apply import address_probe
from pvestrap.apply.engine import (Action, ApplyDeclined, ApplyOutcome, PlannedCommand,
                                   PlannedWait, Progress, StepFailed, plan_steps, run_steps,
                                   unsettled)
from pvestrap.apply.showing import progress_printer, show_plan
from pvestrap.errors import OperationFailed, UserError
from pvestrap.paths import INTERFACES
from pvestrap.plan import ClusterPlan
from pvestrap.render import Change, render_node
from pvestrap.system import System

IFRELOAD = "/usr/sbin/ifreload"  # ifupdown2 (Proxmox VE's default since PVE 7)
IFUP = ("/sbin/ifup", "/usr/sbin/ifup")  # classic ifupdown (ifupdown2 has one too)
Prober = Callable[[str, str], "address_probe.Conflict | None"]
Note = Callable[[str], None]
Addresses = Mapping[str, frozenset[str]]  # interface -> its global addresses as CIDR


@dataclass(frozen=True)
class NetworkTimeouts:
    """Bounded waits, in seconds (a physical NIC's autonegotiation takes a few seconds)."""

    carrier: float = 15.0
    address: float = 15.0
    restore: float = 15.0
    command: float = 120.0
    interval: float = 0.2


@dataclass(frozen=True)
class PlannedAddress:
    nic: str
    address: str  # without the prefix length
    cidr: str
    ports: tuple[str, ...] = ()  # a bridge's ports (the bridge may not exist before the reload)


def planned_addresses(plan: ClusterPlan, node: str) -> tuple[PlannedAddress, ...]:
    """The addresses the plan's stanzas put on this node's NICs (bridges included)."""
    out = []
    for stanza in plan.node(node).interfaces:
        if stanza.address:
            address = stanza.address.split("/", 1)[0]
            ports = tuple((stanza.bridge_ports or "").split()) if stanza.kind == "bridge" else ()
            out.append(PlannedAddress(stanza.name, address, stanza.address, ports))
    return tuple(out)


def done_text(plan: ClusterPlan, node: str, now: bool = True) -> str:
    """What the network phase did (NOW) or found done by an earlier apply, for a message after
    a later step stopped."""
    shown = ", ".join(f"{p.cidr} on {p.nic}" for p in planned_addresses(plan, node))
    if not now:
        return f"{shown} stays configured as planned (by an earlier apply)"
    return f"the network phase configured {shown} ({INTERFACES} written, up and verified) and " \
        "keeps it"


def interfaces_change(plan: ClusterPlan, node: str, root: str = "/") -> Change | None:
    """The node's /etc/network/interfaces Change from render_node, None when already as planned."""
    for change in render_node(plan, node, root):
        if change.path == INTERFACES:
            return change
    return None


# -- reading the NICs ------------------------------------------------------------------------------

def read_links(system: System) -> list[dict]:
    """`ip -j addr show` (read-only, runs in a dry run too); [] when it cannot be read."""
    result = system.query(["ip", "-j", "addr", "show"])
    if not result.ok or not result.stdout.strip():
        return []
    try:
        return list(json.loads(result.stdout))
    except ValueError:
        return []


def _normal(address: str) -> str:
    return str(ipaddress.ip_address(address.split("%", 1)[0]))


def global_addresses(links: Sequence[dict]) -> dict[str, frozenset[str]]:
    return {link["ifname"]: frozenset(f"{_normal(a['local'])}/{a.get('prefixlen', 0)}"
                                      for a in link.get("addr_info", ())
                                      if a.get("local") and a.get("scope") != "link")
            for link in links if link.get("ifname")}


def _link(links: Sequence[dict], name: str) -> dict | None:
    return next((link for link in links if link.get("ifname") == name), None)


def _addr_info(link: dict | None, address: str) -> dict | None:
    want = _normal(address)
    for info in (link or {}).get("addr_info", ()):
        if info.get("local") and _normal(info["local"]) == want:
            return info
    return None


def has_carrier(link: dict | None) -> bool:
    flags = (link or {}).get("flags", ())
    return "UP" in flags and "LOWER_UP" in flags and "NO-CARRIER" not in flags


def address_state(links: Sequence[dict], planned: PlannedAddress) -> str:
    """ready | missing | tentative | dadfailed"""
    info = _addr_info(_link(links, planned.nic), planned.address)
    if info is None:
        return "missing"
    if info.get("dadfailed"):
        return "dadfailed"
    return "tentative" if info.get("tentative") else "ready"


def all_ready(system: System, planned: Sequence[PlannedAddress]) -> bool:
    links = read_links(system)
    return all(address_state(links, p) == "ready" and has_carrier(_link(links, p.nic))
               for p in planned)


# -- bringing stanzas up ---------------------------------------------------------------------------

def reload_argvs(system: System, planned: Sequence[PlannedAddress],
                 stanza_names: Sequence[str]) -> list[tuple[str, ...]]:
    """`ifreload -a` with ifupdown2; `ifup IFACE` per stanza with classic ifupdown."""
    if system.exists(IFRELOAD):
        return [("ifreload", "-a")]
    if any(system.exists(path) for path in IFUP):
        return [("ifup", name) for name in stanza_names]
    raise UserError("neither ifupdown2 (ifreload) nor ifupdown (ifup) is installed: nothing "
                    "could bring the planned interfaces up; nothing was changed",
                    code="network-tools-missing",
                    remedy="install ifupdown2 (Proxmox VE's default): apt-get install ifupdown2")


@dataclass(frozen=True)
class _Context:
    """What every step of one phase shares."""

    change: Change | None
    planned: tuple[PlannedAddress, ...]
    stanzas: tuple[str, ...]
    timeouts: NetworkTimeouts

    def pending(self, system: System) -> bool:
        """Anything to do: the file differs, or a planned address is not up and ready."""
        if self.change is not None and \
                system.read_bytes(INTERFACES) != self.change.after.encode("utf-8"):
            return True
        return not all_ready(system, self.planned)


@dataclass(frozen=True)
class _Memo:
    data: bytes | None
    mode: int | None
    backup: bytes | None
    backup_mode: int | None
    addresses: Addresses


@dataclass(frozen=True)
class WriteInterfaces:
    """The atomic write; undo restores the bytes, reloads, and verifies the previous addresses."""

    ctx: _Context = field(repr=False)
    id: str = "network:write-interfaces"
    description: str = f"write {INTERFACES}"

    def plan(self, system: System) -> list[Action]:
        change = self.ctx.change
        if change is None or system.read_bytes(INTERFACES) == change.after.encode("utf-8"):
            return []
        return [change]

    def apply(self, system: System) -> _Memo:
        bak = INTERFACES + ".bak"
        memo = _Memo(system.read_bytes(INTERFACES), system.file_mode(INTERFACES),
                     system.read_bytes(bak), system.file_mode(bak),
                     global_addresses(read_links(system)))
        assert self.ctx.change is not None  # plan() was not empty
        system.write_text(INTERFACES, self.ctx.change.after, self.ctx.change.mode, backup=True)
        return memo

    def undo(self, system: System, memo: _Memo) -> None:
        argvs = reload_argvs(system, self.ctx.planned, self.ctx.stanzas)
        classic = argvs[0][0] == "ifup"
        if classic:  # ifdown reads the stanza from the file: before the old file is back
            for name in self.ctx.stanzas:
                system.run(["ifdown", "--force", name], check=False,
                           timeout=self.ctx.timeouts.command)
        _put_back(system, INTERFACES, memo.data, memo.mode)
        _put_back(system, INTERFACES + ".bak", memo.backup, memo.backup_mode)
        if not classic:
            system.run(["ifreload", "-a"], timeout=self.ctx.timeouts.command)
        _verify_restored(system, memo.addresses, self.ctx)


def _put_back(system: System, path: str, data: bytes | None, mode: int | None) -> None:
    if data is None:
        system.remove(path)
    elif system.read_bytes(path) != data or system.file_mode(path) != mode:
        system.write_bytes(path, data, mode, backup=False)


def restore_problems(before: Addresses, now: Addresses,
                     planned: Sequence[PlannedAddress]) -> list[str]:
    """What is not as it was: previous addresses missing, planned new ones still there."""
    problems = [f"{name} lacks {cidr}" for name, cidrs in sorted(before.items())
                for cidr in sorted(cidrs - now.get(name, frozenset()))]
    for p in planned:
        was = any(c.split("/")[0] == _normal(p.address) for c in before.get(p.nic, ()))
        if not was and any(c.split("/")[0] == _normal(p.address) for c in now.get(p.nic, ())):
            problems.append(f"{p.nic} still has {p.cidr}")
    return problems


def _verify_restored(system: System, before: Addresses, ctx: _Context) -> None:
    problems = unsettled(
        system, lambda: restore_problems(before, global_addresses(read_links(system)), ctx.planned),
        ctx.timeouts.restore, ctx.timeouts.interval, "the previous addresses")
    if problems is not None:
        raise OperationFailed(f"{INTERFACES} is back as it was, but the addresses are not: "
                              f"{'; '.join(problems)}", code="network-restore-incomplete",
                              remedy="check `ip addr` and run `ifreload -a` from the console")


@dataclass(frozen=True)
class _WhilePending:
    """A step after the write: it plans its actions while the node is not as planned, and has
    no undo of its own (the write's undo reloads the restored file)."""

    ctx: _Context = field(repr=False)

    def plan(self, system: System) -> list[Action]:
        return self.actions(system) if self.ctx.pending(system) else []

    def actions(self, system: System) -> list[Action]:
        raise NotImplementedError

    def undo(self, system: System, memo: None) -> None:
        """Nothing of its own."""


@dataclass(frozen=True)
class Reload(_WhilePending):
    """Bring the planned stanzas up; a stanza the tool rejects fails here."""

    id: str = "network:reload"
    description: str = "bring the planned interfaces up"

    def actions(self, system: System) -> list[Action]:
        return [PlannedCommand(argv)
                for argv in reload_argvs(system, self.ctx.planned, self.ctx.stanzas)]

    def apply(self, system: System) -> None:
        for argv in reload_argvs(system, self.ctx.planned, self.ctx.stanzas):
            system.run(list(argv), timeout=self.ctx.timeouts.command)


class NetworkWaitFailed(OperationFailed):
    code = "network-wait-failed"


@dataclass(frozen=True)
class WaitCarrier(_WhilePending):
    id: str = "network:wait-carrier"
    description: str = "wait until the planned NICs have carrier"

    def actions(self, system: System) -> list[Action]:
        nics = ", ".join(dict.fromkeys(p.nic for p in self.ctx.planned))
        return [PlannedWait(f"carrier (LOWER_UP) on {nics}", self.ctx.timeouts.carrier)]

    def apply(self, system: System) -> None:
        missing: list[str] = []

        def check() -> bool:
            links = read_links(system)
            missing[:] = [p.nic for p in self.ctx.planned if not has_carrier(_link(links, p.nic))]
            return not missing

        if not system.wait_until(check, self.ctx.timeouts.carrier, self.ctx.timeouts.interval,
                                 "carrier"):
            nics = ", ".join(dict.fromkeys(missing))
            raise NetworkWaitFailed(f"no carrier on {nics} within {self.ctx.timeouts.carrier:g} s",
                                    code="network-no-carrier",
                                    remedy=f"check the cable and the switch port of {nics}")


@dataclass(frozen=True)
class WaitAddress(_WhilePending):
    id: str = "network:wait-address"
    description: str = "wait until the planned addresses are up (not tentative, no DAD failure)"

    def actions(self, system: System) -> list[Action]:
        shown = ", ".join(f"{p.cidr} on {p.nic}" for p in self.ctx.planned)
        return [PlannedWait(shown, self.ctx.timeouts.address)]

    def apply(self, system: System) -> None:
        states: dict[PlannedAddress, str] = {}

        def check() -> bool:
            links = read_links(system)
            states.update({p: address_state(links, p) for p in self.ctx.planned})
            return all(s == "ready" for s in states.values()) or "dadfailed" in states.values()

        system.wait_until(check, self.ctx.timeouts.address, self.ctx.timeouts.interval,
                          "the planned addresses")
        failed = [p for p, s in states.items() if s == "dadfailed"]
        if failed:
            raise NetworkWaitFailed(
                f"another host on the network uses {failed[0].cidr}: the kernel's duplicate "
                f"address detection failed it on {failed[0].nic}", code="link-address-in-use",
                remedy="choose a free address for this node in the answer file")
        waiting = [f"{p.cidr} on {p.nic} is {s}" for p, s in states.items() if s != "ready"]
        if waiting:
            raise NetworkWaitFailed(f"{'; '.join(waiting)} after {self.ctx.timeouts.address:g} s",
                                    code="network-address-missing",
                                    remedy="check the stanza and the NIC (`ip addr`)")


def steps(plan: ClusterPlan, node: str, system: System, change: Change | None,
          timeouts: NetworkTimeouts = NetworkTimeouts()) -> list:
    """The network phase's steps for NODE (see the module docstring); [] when the plan owns no
    stanza with an address on this node."""
    planned = planned_addresses(plan, node)
    if not planned and change is None:
        return []
    ctx = _Context(change, planned, tuple(s.name for s in plan.node(node).interfaces), timeouts)
    return [WriteInterfaces(ctx), Reload(ctx), WaitCarrier(ctx), WaitAddress(ctx)]


# -- before any change: nobody else uses the address -----------------------------------------------

def refuse_duplicates(plan: ClusterPlan, node: str, system: System,
                      prober: Prober = address_probe.probe, note: Note = print) -> None:
    """UserError link-address-in-use (exit 2) when another host answers for a planned address
    that is not on its NIC yet. A NIC that is down is set up for the probe and down again."""
    links = read_links(system)
    for p in planned_addresses(plan, node):
        if address_state(links, p) != "missing":
            continue  # ours already
        link = _link(links, p.nic)
        if link is None and p.ports:  # a new bridge: ask on the network of its port
            link = _link(links, p.ports[0])
        if link is None:
            raise UserError(f"{node}: the plan puts {p.cidr} on {p.nic}, which this node does "
                            "not have; nothing was changed", code="network-nic-missing",
                            remedy="name one of this node's NICs in the answer file")
        conflict = _probe(system, p, link["ifname"], link, prober, note)
        if conflict is not None:
            raise UserError(
                f"{node}: {p.address} is already used on {p.nic}'s network by the host with "
                f"MAC {conflict.mac} (it sent an ARP {conflict.how}); nothing was changed",
                code="link-address-in-use",
                remedy="choose a free address for this node in the answer file")


def _probe(system: System, p: PlannedAddress, nic: str, link: dict, prober: Prober,
           note: Note) -> address_probe.Conflict | None:
    down = "UP" not in link.get("flags", ())
    if down:
        system.run(["ip", "link", "set", "dev", nic, "up"])
    try:
        if down:
            system.wait_until(lambda: has_carrier(_link(read_links(system), nic)), 3.0, 0.1,
                              f"carrier on {nic}")
        return prober(nic, p.address)
    except address_probe.ProbeUnavailable as exc:
        note(f"note: {p.address} was not probed for duplicates on {nic}: {exc.strerror}")
        return None
    finally:
        if down:
            system.run(["ip", "link", "set", "dev", nic, "down"])


# -- the whole phase -------------------------------------------------------------------------------

def run(plan: ClusterPlan, node: str, system: System, *, root: str = "/", out: Note = print,
        confirm: Callable[[str], bool] | None = None, prober: Prober = address_probe.probe,
        timeouts: NetworkTimeouts = NetworkTimeouts(),
        on_progress: Progress | None = None) -> ApplyOutcome | None:
    """Plan, show, confirm, probe, apply (see the module docstring); None: nothing to do. A
    dry run (`system.dry_run`) shows the plan and returns it with nothing applied."""
    phase = steps(plan, node, system, interfaces_change(plan, node, root), timeouts)
    plans = plan_steps(phase, system)
    if not any(actions for _, actions in plans):
        return None
    show_plan(plans, out)
    if system.dry_run:
        out("dry run: the network phase changed nothing (the duplicate probe runs at apply)")
        return ApplyOutcome(tuple((step.id, actions) for step, actions in plans), (), ())
    if confirm is not None and not confirm(f"Apply the network changes on {node}?"):
        raise ApplyDeclined()
    refuse_duplicates(plan, node, system, prober, out)
    try:
        return run_steps(phase, system, progress_printer(out, on_progress))
    except StepFailed as exc:
        out(f"network phase failed at step {exc.step_id} [{exc.cause_code}]")
        raise
