"""Is an address already used by another host on a NIC's network? An ARP probe (RFC 5227).

Before apply gives a NIC a new IPv4 address it asks the network, the way RFC 5227 ("IPv4 Address
Conflict Detection", section 2.1.1) does: ARP requests whose sender IP is 0.0.0.0 (so no host's
ARP cache learns anything from them) and whose target IP is the address; any ARP packet that
comes back with that address as its sender (a reply, or the host's own request), or another
host's probe for the same address, means the address is taken. RFC 5227 spaces its 3 probes 1-2 s
apart and waits 2 s more; this probe keeps the count and shortens the spacing (a bounded pause
of an interactive apply), which still hears any host that answers ARP at all.

IPv6 needs no probe of ours: the kernel runs Duplicate Address Detection (RFC 4862) on every new
address and marks it `dadfailed`, which the network phase's address wait reads from `ip -j addr`
(and then rolls back). So `probe()` answers None for IPv6 addresses.

Standard library only: an AF_PACKET raw socket bound to the NIC (needs CAP_NET_RAW, i.e. root,
which apply is). The socket lives in the network namespace of the calling process.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
PROBES = 3
INTERVAL = 0.25  # s between probes (RFC 5227: PROBE_MIN 1 s .. PROBE_MAX 2 s)
LISTEN = 1.0  # s after the last probe (RFC 5227: ANNOUNCE_WAIT 2 s)


@dataclass(frozen=True)
class Conflict:
    """Another host uses (or is claiming) the address: its MAC, and how it showed itself."""

    address: str
    mac: str
    how: str  # "reply" | "request" | "probe"


class ProbeUnavailable(OSError):
    """The probe could not be sent (no raw sockets, NIC down or gone)."""


def probe(nic: str, address: str, probes: int = PROBES, interval: float = INTERVAL,
          listen: float = LISTEN) -> Conflict | None:
    """The host already using ADDRESS on NIC's network, or None (IPv6: always None, see the
    module docstring). Raises ProbeUnavailable when it cannot probe."""
    if ipaddress.ip_address(address).version != 4:
        return None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError as exc:
        raise ProbeUnavailable(exc.errno, f"no raw socket for the ARP probe: "
                                          f"{exc.strerror}") from exc
    with sock:
        try:
            sock.bind((nic, ETH_P_ARP))
            mac = sock.getsockname()[4]
            return _exchange(sock, mac, address, probes, interval, listen)
        except ProbeUnavailable:
            raise
        except OSError as exc:
            raise ProbeUnavailable(exc.errno, f"ARP probe on {nic}: {exc.strerror}") from exc


def arp_probe_frame(mac: bytes, address: str) -> bytes:
    """An Ethernet broadcast carrying an ARP probe: who has ADDRESS, from 0.0.0.0 at MAC."""
    target = socket.inet_aton(address)
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, b"\0" * 4, b"\0" * 6, target)
    return BROADCAST + mac + struct.pack("!H", ETH_P_ARP) + arp


def conflict_in(frame: bytes, mac: bytes, address: str) -> Conflict | None:
    """The conflict one received frame shows, if any (our own frames never count)."""
    if len(frame) < 42 or frame[12:14] != struct.pack("!H", ETH_P_ARP):
        return None
    _, ptype, hlen, plen, op, sha, spa, _, tpa = struct.unpack("!HHBBH6s4s6s4s", frame[14:42])
    if ptype != 0x0800 or hlen != 6 or plen != 4 or sha == mac:
        return None
    wanted = socket.inet_aton(address)
    shown = ":".join(f"{b:02x}" for b in sha)
    if spa == wanted:
        return Conflict(address, shown, "reply" if op == 2 else "request")
    if op == 1 and spa == b"\0" * 4 and tpa == wanted:
        return Conflict(address, shown, "probe")
    return None


def _exchange(sock: socket.socket, mac: bytes, address: str, probes: int, interval: float,
              listen: float) -> Conflict | None:
    frame = arp_probe_frame(mac, address)
    sent = 0
    next_send = time.monotonic()
    deadline = next_send + interval * (probes - 1) + listen
    while True:
        now = time.monotonic()
        if sent < probes and now >= next_send:
            sock.send(frame)
            sent += 1
            next_send = now + interval
        if now >= deadline:
            return None
        wake = min(deadline, next_send) if sent < probes else deadline
        ready, _, _ = select.select([sock], [], [], max(0.0, wake - now))
        if ready:
            found = conflict_in(sock.recv(2048), mac, address)
            if found is not None:
                return found
