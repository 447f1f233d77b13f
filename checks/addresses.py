"""Duplicate address detection: is another host already using an address the plan assigns?

Two nodes with one address break corosync in confusing ways (ARP flapping between two MACs), so
before an address is put on an interface this node asks the link's network who has it: an ARP
probe for IPv4 (RFC 5227: sender address 0.0.0.0, so no neighbour cache is touched) and a
Neighbour Solicitation from :: for IPv6 (RFC 4862's DAD), both sent as raw frames through an
AF_PACKET socket from the standard library. Any answer naming the address means it is taken.

detect(targets, wait_s) -> [prober.DadResult] is called by prober.measure(); targets_for(plan,
node) picks the addresses and interfaces (the plan's interface stanza, else the local interface
already in the link's network). Needs root (raw sockets) and an interface that is up.

Findings (subject `pve1/link0 10.10.10.1`): address-free (PASS), address-assigned (PASS: already
on this node), address-in-use (FAIL: payload mac, interface), address-unchecked (SKIP).
"""

from __future__ import annotations

import ipaddress
import json
import select
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.checks.rawudp import internet_checksum
from pvestrap.findings import Finding, Severity

if TYPE_CHECKING:
    from pvestrap.plan import ClusterPlan

ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_PROBES = 3


def local_addresses() -> dict[str, tuple[str, str]]:
    """{address: (interface, cidr)} of this network namespace, from `ip -j addr`."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True,
                             timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for iface in json.loads(out or "[]"):
        for a in iface.get("addr_info", []):
            found[a["local"]] = (iface["ifname"], f"{a['local']}/{a['prefixlen']}")
    return found


def targets_for(plan: "ClusterPlan", node: str) -> tuple["prober.DadTarget", ...]:
    me = plan.node(node)
    local = local_addresses()
    out = []
    for link, address in sorted(me.addresses.items()):
        out.append(prober.DadTarget(address, _interface_for(plan, me, link, address, local), link))
    return tuple(out)


def _interface_for(plan, me, link: int, address: str, local: dict) -> str | None:
    if address in local:
        return local[address][0]
    for stanza in me.interfaces:
        if stanza.address and stanza.address.split("/")[0] == address:
            return stanza.name
    network = plan.link(link).network
    if network:
        net = ipaddress.ip_network(network, strict=False)
        for ip, (iface, _cidr) in local.items():
            candidate = ipaddress.ip_address(ip.split("%")[0])
            if candidate.version == net.version and candidate in net:
                return iface
    return None


def detect(targets: Sequence["prober.DadTarget"], wait_s: float = 1.0) -> list["prober.DadResult"]:
    """Probe every target (concurrently would save little: each waits wait_s at most)."""
    if not targets:
        return []
    local = local_addresses()
    return [_detect_one(t, local, wait_s) for t in targets]


def _detect_one(t: "prober.DadTarget", local: dict, wait_s: float) -> "prober.DadResult":
    if t.address in local:
        return prober.DadResult(t.address, local[t.address][0], t.link, "assigned")
    if not t.interface:
        return prober.DadResult(t.address, None, t.link, "skipped",
                                error="no interface of this node is in the link's network yet")
    try:
        if ipaddress.ip_address(t.address).version == 6:
            mac = _ns_probe(t.interface, t.address, wait_s)
        else:
            mac = _arp_probe(t.interface, t.address, wait_s)
    except OSError as exc:
        return prober.DadResult(t.address, t.interface, t.link, "error",
                                error=f"{t.interface}: {exc.strerror or exc}")
    state = "in-use" if mac else "free"
    return prober.DadResult(t.address, t.interface, t.link, state, mac)


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _listen(sock: socket.socket, frames: list[bytes], wait_s: float,
            match: Callable[[bytes], str | None]) -> str | None:
    """Send the frames spread over wait_s and return the first answer `match` accepts."""
    deadline = time.monotonic() + wait_s
    gap = wait_s / len(frames)
    next_send, pending = time.monotonic(), list(frames)
    while True:
        now = time.monotonic()
        if pending and now >= next_send:
            sock.send(pending.pop(0))
            next_send = now + gap
        if now >= deadline:
            return None
        ready, _, _ = select.select([sock], [], [], max(0.0, min(deadline, next_send) - now))
        if ready:
            frame = sock.recv(2048)
            found = match(frame)
            if found:
                return found


def _arp_probe(interface: str, address: str, wait_s: float) -> str | None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
        sock.bind((interface, ETH_P_ARP))
        mine = sock.getsockname()[4]
        target = socket.inet_aton(address)
        arp = _ARP.pack(1, 0x0800, 6, 4, 1, mine, bytes(4), bytes(6), target)
        frame = b"\xff" * 6 + mine + struct.pack("!H", ETH_P_ARP) + arp

        def match(data: bytes) -> str | None:
            if len(data) < 14 + _ARP.size or data[12:14] != b"\x08\x06":
                return None
            _, _, _, _, op, sha, spa, _tha, tpa = _ARP.unpack_from(data, 14)
            if sha == mine:
                return None
            # a reply from the owner, its own announcement, or another host probing for it too
            if spa == target or (op == 1 and spa == bytes(4) and tpa == target):
                return _mac_text(sha)
            return None

        return _listen(sock, [frame] * _PROBES, wait_s, match)


def _icmp6_checksum(src: bytes, dst: bytes, body: bytes) -> int:
    return internet_checksum(src + dst + struct.pack("!I3xB", len(body), 58) + body)


def _ns_probe(interface: str, address: str, wait_s: float) -> str | None:
    target = socket.inet_pton(socket.AF_INET6, address)
    group = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + target[13:]
    unspecified = bytes(16)
    body = struct.pack("!BBH4x", 135, 0, 0) + target
    body = body[:2] + struct.pack("!H", _icmp6_checksum(unspecified, group, body)) + body[4:]
    ipv6 = struct.pack("!IHBB", 6 << 28, len(body), 58, 255) + unspecified + group
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6)) as sock:
        sock.bind((interface, ETH_P_IPV6))
        mine = sock.getsockname()[4]
        frame = b"\x33\x33" + group[12:] + mine + struct.pack("!H", ETH_P_IPV6) + ipv6 + body

        def match(data: bytes) -> str | None:
            if len(data) < 14 + 40 + 24 or data[6:12] == mine or data[14 + 6] != 58:
                return None
            icmp = data[54:]
            if icmp[0] == 136 and icmp[8:24] == target:  # an advertisement: the owner
                return _mac_text(data[6:12])
            if icmp[0] == 135 and icmp[8:24] == target and data[22:38] == unspecified:
                return _mac_text(data[6:12])  # another host probing for it at the same time
            return None

        return _listen(sock, [frame] * _PROBES, wait_s, match)


@dataclass(frozen=True)
class AddressCheck:
    id: str = "address-conflicts"
    family: str = "addresses"
    title: str = "no other host already uses this node's planned link addresses"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None or not found.dad:
            return [Finding("address-unchecked", Severity.SKIP, "duplicate address detection "
                            "was not run", ctx.node)]
        me = ctx.node or found.node or "this node"
        return [_finding(me, r) for r in found.dad]


def _finding(me: str, r: "prober.DadResult") -> Finding:
    subject = f"{me}/link{r.link} {r.address}" if r.link is not None else f"{me} {r.address}"
    payload = {"address": r.address, "interface": r.interface, "link": r.link, "mac": r.mac}
    if r.state == "assigned":
        return Finding("address-assigned", Severity.PASS, f"{r.address} is already on "
                       f"{r.interface} of this node", subject, payload=payload)
    if r.state == "free":
        return Finding("address-free", Severity.PASS, f"no other host answers for {r.address} on "
                       f"{r.interface}", subject, payload=payload)
    if r.state == "in-use":
        return Finding("address-in-use", Severity.FAIL, f"{r.address} is already used by the "
                       f"host with MAC {r.mac} (seen on {r.interface})", subject, payload=payload,
                       remedy=f"pick another address for this node's link{r.link}, or find the "
                              f"host with MAC {r.mac} (`ip neigh`, the switch's MAC table) and "
                              "free the address there")
    return Finding("address-unchecked", Severity.SKIP, f"{r.address} not checked: {r.error}",
                   subject, payload=payload)
