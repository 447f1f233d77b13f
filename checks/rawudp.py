"""UDP by hand, for answering on a port another process holds (the responder beside corosync).

A raw socket (SOCK_RAW, IPPROTO_UDP) receives a copy of every UDP datagram of the node and sends
whatever it is given: the reply needs its UDP header built here, with the checksum over the
pseudo-header (mandatory on IPv6), and the socket needs a filter so that the kernel, not
Python, drops what is not a probe for a busy port.

Public API: UDP_HEADER, internet_checksum, udp_datagram, probe_filter, attach_probe_filter.
"""

from __future__ import annotations

import socket
import struct
from typing import Sequence

from pvestrap.checks.probe import MAGIC

UDP_HEADER = struct.Struct("!HHHH")  # source port, destination port, length, checksum


def internet_checksum(data: bytes) -> int:
    """RFC 1071's ones' complement sum (UDP, ICMPv6), over DATA padded to an even length."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_datagram(family: int, src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header plus payload with the checksum over the pseudo-header (mandatory on IPv6)."""
    length = UDP_HEADER.size + len(payload)
    s, d = socket.inet_pton(family, src), socket.inet_pton(family, dst)
    if family == socket.AF_INET6:
        pseudo = s + d + struct.pack("!I3xB", length, socket.IPPROTO_UDP)
    else:
        pseudo = s + d + struct.pack("!xBH", socket.IPPROTO_UDP, length)
    csum = internet_checksum(pseudo + UDP_HEADER.pack(sport, dport, length, 0) + payload) or 0xFFFF
    return UDP_HEADER.pack(sport, dport, length, csum) + payload


# Classic BPF (linux/filter.h): the kernel runs it on every datagram the raw socket would get.
_SO_ATTACH_FILTER = 26
_BPF = struct.Struct("HBBI")  # struct sock_filter: code, jt, jf, k
_LDX_IP_HEADER_LEN = 0x01 | 0x10 | 0xA0  # ldx 4*([0]&0xf): X = the IPv4 header's length
_LD_HALF, _LD_WORD = 0x00 | 0x08, 0x00 | 0x00
_ABS, _IND = 0x20, 0x40
_JEQ = 0x05 | 0x10 | 0x00
_RET = 0x06 | 0x00
_MAGIC_WORD = int.from_bytes(MAGIC, "big")


def probe_filter(family: int, ports: Sequence[int]) -> list[bytes]:
    """A socket filter passing only UDP datagrams to one of PORTS whose payload starts with
    the probe magic: a raw socket gets a copy of every UDP datagram of the machine (corosync's
    knet traffic on the same port, replies to this node's own prober, probes its bound sockets
    answer already), and each one it passes costs a read and a parse in Python. An IPv4 raw
    socket's datagrams start at the IP header, an IPv6 one's at the UDP header."""
    if not 0 < len(ports) < 256:
        raise ValueError(f"{len(ports)} ports do not fit one filter's jumps")
    load = _IND if family == socket.AF_INET else _ABS
    code = [_BPF.pack(_LDX_IP_HEADER_LEN, 0, 0, 0)] if family == socket.AF_INET else []
    code.append(_BPF.pack(_LD_HALF | load, 0, 0, 2))  # the UDP destination port
    last = len(ports) - 1
    for i, port in enumerate(ports):  # equal: on to the magic; the last one unequal: drop
        code.append(_BPF.pack(_JEQ, last - i, 3 if i == last else 0, port))
    code.append(_BPF.pack(_LD_WORD | load, 0, 0, UDP_HEADER.size))  # the payload's first word
    code.append(_BPF.pack(_JEQ, 0, 1, _MAGIC_WORD))
    code.append(_BPF.pack(_RET, 0, 0, 0xFFFF))  # pass (up to 64 KiB of it)
    code.append(_BPF.pack(_RET, 0, 0, 0))  # drop
    return code


def attach_probe_filter(sock: socket.socket, family: int, ports: Sequence[int]) -> None:
    """Attach probe_filter (the kernel copies the program: the buffer may go after)."""
    import ctypes  # only where a port is busy: not on every responder's import path

    code = probe_filter(family, ports)
    program = ctypes.create_string_buffer(b"".join(code))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER,
                    struct.pack("HP", len(code), ctypes.addressof(program)))
