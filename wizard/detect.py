"""What the machine tells the wizard before it asks anything.

The wizard's defaults and choices come from here: whether this is Proxmox VE (pvecm, or the
cluster file system folder), whether the node is already in a cluster, its short host name and
the addresses that name resolves to, every up interface with its addresses, the free NICs
(candidates for a dedicated corosync network), the NTP state and the console keyboard layout.

Everything is read through the same seams the checks use (`Machine`, a resolver, a command
runner, a root folder), so tests hand in recorded facts and a lab node reads its own namespace.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Callable

from pvestrap.checks.joinable import is_stock_conf
from pvestrap.checks.localsys import (Interface, Machine, Resolver, is_loopback, read_machine,
                                      resolve, short_hostname)
from pvestrap.checks.nics import free_nics, management_interfaces
from pvestrap.checks.timesync import SyncState, read_sync_state
from pvestrap.nodefacts import runs_pve
from pvestrap.paths import CONF_PATHS
from pvestrap.plan import KEYBOARDS
from pvestrap.system import Runner, run_command

KEYBOARD_FILE = "/etc/default/keyboard"
# XKB layout names that differ from datacenter.cfg's keyboard names.
_XKB_LAYOUTS = {"us": "en-us", "gb": "en-gb", "dk": "da", "jp": "ja", "se": "sv", "si": "sl",
                "br": "pt-br", "ch": "de-ch", "be": "fr-be", "ca": "fr-ca"}
_CLUSTER_NAME = re.compile(r"^\s*cluster_name\s*:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class HostAddress:
    """A global address on an interface that is up: a candidate for a corosync link."""

    interface: str
    address: str
    prefixlen: int
    management: bool = False  # on the default route's device or vmbr0

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def network(self) -> str:
        return str(ipaddress.ip_interface(self.cidr).network)


@dataclass(frozen=True)
class ExistingCluster:
    """A cluster this node already belongs to: the file that says so and its cluster name."""

    config: str
    name: str | None


@dataclass(frozen=True)
class Detected:
    hostname: str
    host_addresses: tuple[str, ...]
    is_pve: bool
    cluster: ExistingCluster | None
    addresses: tuple[HostAddress, ...]
    free_nics: tuple[Interface, ...]
    ntp: SyncState
    keyboard: str | None = None
    machine: Machine | None = None

    @property
    def clustered(self) -> bool:
        return self.cluster is not None

    @property
    def backend(self) -> str:
        return "pve" if self.is_pve else "corosync"

    def address_info(self, address: str) -> HostAddress | None:
        for found in self.addresses:
            if found.address == address:
                return found
        return None

    @property
    def host_address(self) -> str | None:
        """The address the host name resolves to that is configured here (PVE's node IP)."""
        local = {a.address for a in self.addresses}
        for addr in self.host_addresses:
            if addr in local:
                return addr
        return None


def detect(root: str = "/", machine: Machine | None = None, resolver: Resolver = resolve,
           runner: Runner = run_command,
           exists: Callable[[str], bool] | None = None) -> Detected:
    """Read the machine once. `root` moves the file reads (tests); the network facts are the
    current network namespace's, as corosync would see them."""
    machine = machine or read_machine(root, runner)
    under = _under(root)
    present = exists or (lambda path: os.path.lexists(under(path)))
    name = short_hostname(machine.hostname)
    return Detected(
        hostname=name,
        host_addresses=tuple(a for a in resolver(name) if not is_loopback(a)),
        is_pve=runs_pve(present),
        cluster=existing_cluster(under),
        addresses=host_addresses(machine),
        free_nics=free_nics(machine),
        ntp=read_sync_state(runner),
        keyboard=read_keyboard(under(KEYBOARD_FILE)),
        machine=machine,
    )


def _under(root: str) -> Callable[[str], str]:
    return lambda path: os.path.join(root, path.lstrip("/"))


def host_addresses(machine: Machine) -> tuple[HostAddress, ...]:
    """Global addresses on up, non-loopback interfaces; IPv4 first, then by interface name."""
    mgmt = set(management_interfaces(machine))
    out = []
    for iface in machine.interfaces:
        if iface.kind == "loopback" or not iface.up or iface.master is not None:
            continue
        for addr in iface.global_addresses:
            if not is_loopback(addr.address):
                out.append(HostAddress(iface.name, addr.address, addr.prefixlen,
                                       iface.name in mgmt))
    return tuple(sorted(out, key=lambda a: (ipaddress.ip_address(a.address).version,
                                            a.interface, ipaddress.ip_address(a.address))))


def existing_cluster(under: Callable[[str], str]) -> ExistingCluster | None:
    """A cluster config that is not Debian's packaged example, or an authkey beside one."""
    for path in CONF_PATHS:
        full = under(path)
        if not os.path.lexists(full):
            continue
        if path.startswith("/etc/corosync/") and is_stock_conf(full):
            continue
        return ExistingCluster(path, _cluster_name(full))
    return None


def _cluster_name(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            found = _CLUSTER_NAME.search(fh.read())
    except OSError:
        return None
    return found.group(1) if found else None


def read_keyboard(path: str) -> str | None:
    """The console's XKB layout as a datacenter.cfg keyboard name, when there is one."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    found = re.search(r'^\s*XKBLAYOUT\s*=\s*"?([A-Za-z-]+)', text, re.MULTILINE)
    if not found:
        return None
    layout = found.group(1).split(",")[0].lower()
    layout = _XKB_LAYOUTS.get(layout, layout)
    return layout if layout in KEYBOARDS else None


def describe(found: Detected) -> str:
    """What was detected, as the wizard shows it before the first question."""
    kind = "Proxmox VE (pvecm)" if found.is_pve else "plain Debian (corosync backend)"
    if found.host_address:
        host = found.host_address
    elif found.host_addresses:
        host = f"{', '.join(found.host_addresses)}, not an address of this machine"
    else:
        host = "nothing (not in /etc/hosts or DNS)"
    lines = [f"This machine: {found.hostname}, {kind}; its name resolves to {host}."]
    for addr in found.addresses:
        note = " (management)" if addr.management else ""
        lines.append(f"  {addr.interface}: {addr.cidr}{note}")
    free = ", ".join(n.name for n in found.free_nics) or "none"
    lines.append(f"  free NICs (for a dedicated cluster network): {free}")
    ntp = found.ntp
    if ntp.daemon is None:
        lines.append("  time: no time daemon found (chrony is PVE's default)")
    else:
        state = "synchronized" if ntp.synced else "NOT synchronized"
        lines.append(f"  time: {ntp.daemon}, {state}")
    return "\n".join(lines)


__all__ = ["Detected", "describe", "ExistingCluster", "HostAddress", "detect", "host_addresses",
           "read_keyboard"]
