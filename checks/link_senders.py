"""Who sends to corosync's link ports: a listener for hosts that are not in the nodelist.

A node removed from the cluster but powered on again (the guide's "make sure that it will never
power on again in the existing cluster network") keeps sending knet packets to its old peers'
link ports; knet drops them (block_unlisted_ips), so corosync itself shows nothing. This listens
on a packet socket (AF_PACKET, cooked: the network-layer packet and its direction) for a while
and counts, per source address, the UDP datagrams arriving for the given ports, IPv4 and IPv6.
It only reads: nothing is answered or sent. Used by `pvestrap doctor` (check link-strangers)
and meant for node removal too ("is the removed node still talking?").

Needs CAP_NET_RAW (root); without it `listen` says so instead of failing.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
PACKET_OUTGOING = 4
UDP = 17


@dataclass
class Senders:
    """source address -> {port: datagrams}; error: why nothing could be listened to."""

    seen: dict[str, dict[int, int]] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"seen": {a: {str(p): n for p, n in ports.items()} for a, ports in
                         self.seen.items()}, "error": self.error, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict | None) -> Senders:
        data = data or {}
        seen = {a: {int(p): int(n) for p, n in ports.items()} for a, ports in
                (data.get("seen") or {}).items()}
        return cls(seen, data.get("error"), float(data.get("seconds") or 0.0))


def udp_destination(proto: int, packet: bytes) -> tuple[str, int] | None:
    """(source address, UDP destination port) of an IPv4/IPv6 packet, else None."""
    if proto == ETH_P_IP and len(packet) >= 20 and packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        frag = struct.unpack("!H", packet[6:8])[0] & 0x1FFF
        if packet[9] != UDP or frag or len(packet) < ihl + 4:
            return None
        return socket.inet_ntop(socket.AF_INET, packet[12:16]), \
            struct.unpack("!H", packet[ihl + 2:ihl + 4])[0]
    if proto == ETH_P_IPV6 and len(packet) >= 44 and packet[0] >> 4 == 6:
        if packet[6] != UDP:  # extension headers are not followed: knet sends none
            return None
        return socket.inet_ntop(socket.AF_INET6, packet[8:24]), \
            struct.unpack("!H", packet[42:44])[0]
    return None


def listen(ports: Iterable[int], seconds: float, stop: Callable[[], bool] = lambda: False,
           clock: Callable[[], float] = time.monotonic) -> Senders:
    """Count incoming UDP datagrams to PORTS per source for SECONDS (or until STOP())."""
    wanted = set(ports)
    out = Senders()
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    except OSError as exc:
        out.error = f"cannot open a packet socket ({exc.strerror}): run as root"
        return out
    start = clock()
    with sock:
        sock.setblocking(False)
        while not stop():
            left = seconds - (clock() - start)
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], min(left, 0.2))
            while ready:
                try:
                    packet, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue
                found = udp_destination(addr[1], packet)
                if found and found[1] in wanted:
                    per = out.seen.setdefault(found[0], {})
                    per[found[1]] = per.get(found[1], 0) + 1
    out.seconds = round(clock() - start, 3)
    return out
