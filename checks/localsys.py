"""Facts about the machine the checks run on, read once into plain values.

Checks never call `ip` or read /sys themselves: they are handed a `Machine` (interfaces, their
addresses and membership, the default route) and a resolver. On a node the facts are read live
with `read_machine()`; unit tests build a `Machine` from recorded facts (`Machine.from_dict`), and
the runner can ship the dict form between nodes. Commands run through the `Runner` seam
(pvestrap.system: every System offers it as `query`, `run_command` is this machine) so tests
can replay recorded outputs of chronyc, corosync-quorumtool and friends.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from pvestrap.reach import Resolver, is_loopback
from pvestrap.system import Runner, run_command

if TYPE_CHECKING:
    from pvestrap.checks.base import Context

# Interface kinds. "physical" means backed by a device (PCI, virtio, USB ...).
KINDS = ("physical", "veth", "bridge", "bond", "vlan", "loopback", "virtual")
_LINKINFO_KINDS = {"veth": "veth", "bridge": "bridge", "bond": "bond", "vlan": "vlan"}


def resolve(name: str) -> tuple[str, ...]:
    """Addresses of `name` in getaddrinfo order (what most programs take first), deduplicated.

    An unresolvable name yields an empty tuple: "does not resolve" is a finding, not an error.
    """
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return ()
    out: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = str(sockaddr[0]).split("%", 1)[0]
        if addr not in out:
            out.append(addr)
    return tuple(out)


def corosync_order(addresses: Iterable[str]) -> tuple[str, ...]:
    """The order corosync picks from with `ip_version: ipv4-6`: IPv4 first, then IPv6, stable."""
    addrs = list(addresses)
    return tuple(sorted(addrs, key=lambda a: 0 if ip_version(a) == 4 else 1))


def ip_version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).version
    except ValueError:
        return None


def short_hostname(name: str) -> str:
    """PVE's node name is the first label of the host name."""
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class IfAddress:
    address: str
    prefixlen: int
    scope: str = "global"
    planned: bool = False  # from the plan's stanza, not configured yet (preflight.planned_machine)

    @property
    def version(self) -> int | None:
        return ip_version(self.address)

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True)
class Interface:
    """One network interface as the kernel reports it.

    up: administratively up AND lower layer up (carrier): the only state in which corosync can
    send. master: the bridge or bond this interface is enslaved to. parent: the lower device of
    a VLAN. bond_mode / lacp_rate: first word of /sys/class/net/BOND/bonding/{mode,lacp_rate}.
    """

    name: str
    kind: str
    mac: str | None = None
    operstate: str = "UNKNOWN"
    flags: tuple[str, ...] = ()
    carrier: bool | None = None
    speed_mbps: int | None = None
    mtu: int = 1500
    addresses: tuple[IfAddress, ...] = ()
    master: str | None = None
    parent: str | None = None
    bond_mode: str | None = None
    lacp_rate: str | None = None

    @property
    def up(self) -> bool:
        return "UP" in self.flags and "LOWER_UP" in self.flags

    @property
    def global_addresses(self) -> tuple[IfAddress, ...]:
        """Addresses other than link-local ones (every up IPv6 interface gets an fe80::)."""
        return tuple(a for a in self.addresses if a.scope != "link")

    def has_address(self, address: str) -> bool:
        want = _normal(address)
        return any(_normal(a.address) == want for a in self.addresses)

    def only_planned(self, address: str) -> bool:
        """ADDRESS is here only as planned (apply's network phase configures it)."""
        want = _normal(address)
        found = [a for a in self.addresses if _normal(a.address) == want]
        return bool(found) and all(a.planned for a in found)


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address


@dataclass(frozen=True)
class Machine:
    """The facts the local checks read. `default_route` lists the devices of default routes."""

    hostname: str
    interfaces: tuple[Interface, ...] = ()
    default_route: tuple[str, ...] = ()

    def interface(self, name: str) -> Interface | None:
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        return None

    def carrying(self, address: str) -> tuple[Interface, ...]:
        """Every interface that has `address` configured."""
        return tuple(i for i in self.interfaces if i.has_address(address))

    def members(self, name: str) -> tuple[Interface, ...]:
        """Ports of a bridge, slaves of a bond."""
        return tuple(i for i in self.interfaces if i.master == name)

    def lower(self, name: str, _seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """The devices at the bottom of `name`'s stack (bridge -> bond -> NICs, vlan -> parent).

        Two interfaces that share any lower device share a cable, whatever their names.
        """
        iface = self.interface(name)
        if iface is None or name in _seen:
            return frozenset({name})
        seen = _seen | {name}
        below: set[str] = set()
        if iface.kind in ("bridge", "bond"):
            for member in self.members(name):
                below |= self.lower(member.name, seen)
        elif iface.kind == "vlan" and iface.parent:
            below |= self.lower(iface.parent, seen)
        return frozenset(below or {name})

    def stack(self, name: str) -> tuple[Interface, ...]:
        """`name` and every device under it, including the bonds and bridges on the way."""
        iface = self.interface(name)
        if iface is None:
            return ()
        out = [iface]
        pending = [iface]
        while pending:
            cur = pending.pop()
            nxt = list(self.members(cur.name)) if cur.kind in ("bridge", "bond") else []
            if cur.kind == "vlan" and cur.parent and self.interface(cur.parent):
                nxt.append(self.interface(cur.parent))  # type: ignore[arg-type]
            for n in nxt:
                if n not in out:
                    out.append(n)
                    pending.append(n)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Machine":
        ifaces = []
        for raw in data.get("interfaces", ()):
            raw = dict(raw)
            raw["addresses"] = tuple(IfAddress(**a) for a in raw.get("addresses", ()))
            raw["flags"] = tuple(raw.get("flags", ()))
            ifaces.append(Interface(**raw))
        return cls(hostname=data["hostname"], interfaces=tuple(ifaces),
                   default_route=tuple(data.get("default_route", ())))


# -- reading the live machine ----------------------------------------------------------------------

def read_machine(root: str = "/", runner: Runner = run_command) -> Machine:
    """Read interfaces and routes without root: `ip -j -d addr`, `ip -j route` and /sys/class/net.

    `root` only moves the sysfs reads (tests of a copied tree); `ip` always reports the kernel of
    the current network namespace, which is what corosync would use.
    """
    res = runner(["ip", "-j", "-d", "addr", "show"])
    links = json.loads(res.stdout) if res.ok and res.stdout.strip() else []
    sysnet = os.path.join(root, "sys/class/net")
    interfaces = tuple(_interface(link, sysnet) for link in links)
    routes: list[str] = []
    for fam in ("-4", "-6"):
        r = runner(["ip", "-j", fam, "route", "show", "default"])
        if r.ok and r.stdout.strip():
            routes += [d["dev"] for d in json.loads(r.stdout) if d.get("dev")]
    return Machine(hostname=socket.gethostname(), interfaces=interfaces,
                   default_route=tuple(dict.fromkeys(routes)))


def _interface(link: Mapping[str, Any], sysnet: str) -> Interface:
    name = link["ifname"]
    base = os.path.join(sysnet, name)
    kind = _kind(link, base)
    addrs = tuple(
        IfAddress(a["local"], int(a.get("prefixlen", 0)), a.get("scope", "global"))
        for a in link.get("addr_info", ()) if a.get("local")
    )
    bond_mode = lacp = None
    if kind == "bond":
        bond_mode = _first_word(_read(os.path.join(base, "bonding/mode")))
        lacp = _first_word(_read(os.path.join(base, "bonding/lacp_rate")))
    carrier = _read(os.path.join(base, "carrier"))
    return Interface(
        name=name, kind=kind, mac=link.get("address"), operstate=link.get("operstate", "UNKNOWN"),
        flags=tuple(link.get("flags", ())),
        carrier=None if carrier is None else carrier.strip() == "1",
        speed_mbps=_speed(_read(os.path.join(base, "speed"))), mtu=int(link.get("mtu", 0)),
        addresses=addrs, master=link.get("master"),
        parent=link.get("link") if kind == "vlan" else None,
        bond_mode=bond_mode, lacp_rate=lacp,
    )


def _kind(link: Mapping[str, Any], base: str) -> str:
    """Classify by the kernel's own link kind; a device without one is physical if sysfs has a
    `device` for it (a NIC on a bus), otherwise some other virtual device (ifb, dummy ...)."""
    if link.get("link_type") == "loopback":
        return "loopback"
    info_kind = (link.get("linkinfo") or {}).get("info_kind")
    if info_kind:
        return _LINKINFO_KINDS.get(info_kind, "virtual")
    if link.get("parentbus") or os.path.exists(os.path.join(base, "device")):
        return "physical"
    return "virtual"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:  # e.g. EINVAL reading speed/carrier of a down link
        return None


def _first_word(text: str | None) -> str | None:
    return text.split()[0] if text and text.split() else None


def _speed(text: str | None) -> int | None:
    try:
        value = int((text or "").strip())
    except ValueError:
        return None
    return value if value > 0 else None


# -- what a check reads from its context ----------------------------------------------------------

@dataclass(frozen=True)
class Sources:
    """The seams of the local checks: machine facts, name resolution and command running.

    machine=None reads the live machine; the runner can also put a Machine (or its dict form)
    into ctx.options["machine"] so several checks share one read.
    """

    machine: Machine | None = None
    resolver: Resolver = resolve
    runner: Runner = run_command

    def machine_for(self, ctx: "Context") -> Machine:
        if self.machine is not None:
            return self.machine
        given = ctx.options.get("machine")
        if isinstance(given, Machine):
            return given
        if isinstance(given, Mapping):
            return Machine.from_dict(given)
        return read_machine(ctx.root, self.runner)


LIVE = Sources()


def path_under(root: str, path: str) -> str:
    """`path` (absolute, like /etc/pve/corosync.conf) inside the checked root."""
    return os.path.join(root, path.lstrip("/"))


def link_addresses(ctx: "Context") -> dict[int, str]:
    """This node's planned link addresses ({} without a plan or when the node is not in it)."""
    if ctx.plan is None or not ctx.node or not ctx.plan.has_node(ctx.node):
        return {}
    return dict(ctx.plan.node(ctx.node).addresses)


def role(ctx: "Context") -> str | None:
    """create | join for a node of the plan; None for a machine checked without one."""
    if ctx.plan is None or not ctx.node or not ctx.plan.has_node(ctx.node):
        return None
    return ctx.plan.role_of(ctx.node)


__all__ = ["IfAddress", "Interface", "KINDS", "LIVE", "Machine", "Resolver", "Sources",
           "corosync_order", "ip_version", "is_loopback", "link_addresses", "path_under",
           "read_machine", "resolve", "role", "short_hostname"]
