"""The preflight probe protocol: the bytes on the wire between a prober and a responder.

One UDP exchange gives reachability, round-trip time and the pairwise clock offset (NTP's
four-timestamp method), so a probe carries the sender's send time (t1) and a reply adds the
responder's receive (t2) and send (t3) times. Every datagram ends in an HMAC-SHA256 over all of
its bytes, truncated to 16 bytes, keyed with a per-run token: a responder answers only probes made
with its token and stays silent otherwise, so it cannot be used by strangers, and a prober cannot
be fooled by strays.

Layout (network byte order):

    header  magic "PVSP" | version u8 | kind u8 | size u16 | session u64 | seq u32
    probe   header | zero padding | t1 i64                              | mac[16]
    reply   header | t1 i64 | t2 i64 | rx_mtu u32 | zero padding | t3 i64 | mac[16]

The send time is the last field before the MAC on purpose: the sender hashes everything else
first and reads the clock at the last moment (`clock=`), so hashing a large probe does not count
as network time. `size` is, in a probe, the reply size the prober asks for (large replies measure
the reverse path's MTU), and in a reply, the probe's size as received. A reply is never larger
than its probe (no amplification): every probe is padded to at least REPLY_MIN bytes, and the
requested reply size is clamped to the probe's size. `rx_mtu` is the MTU of the interface the
probe arrived on at the responder (0 when unknown): what the far end of the link believes.

Public API: Token (load_token, given_token, new_token), Probe, Reply, encode_probe, decode_probe,
encode_reply, decode_reply, PROBE_MIN, REPLY_MIN, MAX_DATAGRAM; the encoders return (bytes,
send time). Decoders return None for anything that is not an authentic datagram of the right
kind: callers drop those silently. Below them, the socket details both ends share: DF,
kernel receive/send timestamps (and their shift under libfaketime), arrival interface and
address, the interface MTU.
"""

from __future__ import annotations

import hmac
import os
import secrets
import struct
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Callable, Mapping

from pvestrap.errors import UserError
from pvestrap.inputs import read_input

MAGIC = b"PVSP"
VERSION = 1
KIND_PROBE = 1
KIND_REPLY = 2
MAC_LEN = 16

HEADER = struct.Struct("!4sBBHQI")
TIMES = struct.Struct("!qqI")  # reply: t1 echoed, t2, rx_mtu
STAMP = struct.Struct("!q")  # the send time, last before the MAC
REPLY_MIN = HEADER.size + TIMES.size + STAMP.size + MAC_LEN
PROBE_MIN = REPLY_MIN
MAX_DATAGRAM = 65507  # largest UDP payload over IPv4
MAX_SIZE_FIELD = 0xFFFF

TOKEN_ENV = "PVESTRAP_PROBE_TOKEN"
TOKEN_FILE_MAX = 4096  # a token is one line; the file may hold a comment or two
TOKEN_MIN_CHARS = 16


@dataclass(frozen=True)
class Token:
    """The per-run shared secret. Its repr never shows the secret (it ends up in logs otherwise)."""

    secret: bytes = field(repr=False)
    _keyed: object = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) < TOKEN_MIN_CHARS:
            raise UserError(f"the probe token is too short ({len(self.secret)} characters)",
                            remedy=f"use at least {TOKEN_MIN_CHARS} characters, e.g. from "
                                   "`python3 -c 'import secrets; print(secrets.token_hex(16))'`")
        object.__setattr__(self, "_keyed", hmac.new(self.secret, digestmod=sha256))

    def hasher(self):
        """A keyed HMAC ready for update(); copying skips the key schedule on every datagram."""
        return self._keyed.copy()

    def mac(self, data: bytes) -> bytes:
        h = self.hasher()
        h.update(data)
        return h.digest()[:MAC_LEN]

    def __str__(self) -> str:
        return "Token(<hidden>)"


def new_token() -> Token:
    """A fresh random token for one preflight run."""
    return Token(secrets.token_hex(16).encode())


def load_token(value: str | None = None, file: str | None = None,
               environ: Mapping[str, str] | None = None) -> Token:
    """The token from exactly one of: a value, a file (first line), or $PVESTRAP_PROBE_TOKEN.

    A file or the environment keeps the secret out of the process list; a value on the command
    line is accepted because it is sometimes all a remote shell offers.
    """
    env = os.environ if environ is None else environ
    if value is not None and file is not None:
        raise UserError("give the probe token either as a value or as a file, not both",
                        remedy="drop --token or --token-file")
    if file is not None:
        data = read_input(file, "probe token file (--token-file)", limit=TOKEN_FILE_MAX,
                          code="token-unreadable")
        return Token(data.split(b"\n", 1)[0].strip())
    if value is not None:
        return Token(value.strip().encode())
    if env.get(TOKEN_ENV):
        return Token(env[TOKEN_ENV].strip().encode())
    raise UserError("no probe token given",
                    remedy=f"pass --token-file FILE, set {TOKEN_ENV}, or pass --token VALUE")


def given_token(file: str | None, environ: Mapping[str, str] | None = None) -> Token | None:
    """The token of --token-file FILE or $PVESTRAP_PROBE_TOKEN, None when neither is given (a
    front-end that can run without probes, or start its own responders)."""
    env = os.environ if environ is None else environ
    return load_token(None, file, env) if file or env.get(TOKEN_ENV) else None


@dataclass(frozen=True)
class Probe:
    """A probe. size: bytes on the wire; reply_size: what to send back; t1_ns: send time."""

    session: int
    seq: int
    t1_ns: int = 0
    size: int = PROBE_MIN
    reply_size: int = REPLY_MIN


@dataclass(frozen=True)
class Reply:
    """A reply as the prober reads it. probe_size: the probe's size as the responder saw it."""

    session: int
    seq: int
    t1_ns: int
    t2_ns: int
    t3_ns: int
    probe_size: int
    rx_mtu: int
    size: int


def _seal(token: Token, body: bytes, stamp: int | None, clock: Callable[[], int] | None):
    """body + send time + MAC; with a clock, the time is read after hashing the body."""
    h = token.hasher()
    h.update(body)
    when = clock() if clock is not None else stamp
    tail = STAMP.pack(when)
    h.update(tail)
    return body + tail + h.digest()[:MAC_LEN], when


def encode_probe(token: Token, probe: Probe,
                 clock: Callable[[], int] | None = None) -> tuple[bytes, int]:
    """(datagram, t1). t1 is probe.t1_ns, or clock() read at the last moment when given."""
    if not PROBE_MIN <= probe.size <= MAX_DATAGRAM:
        raise ValueError(f"probe size {probe.size} is outside {PROBE_MIN}..{MAX_DATAGRAM}")
    reply_size = max(REPLY_MIN, min(probe.reply_size, probe.size, MAX_SIZE_FIELD))
    head = HEADER.pack(MAGIC, VERSION, KIND_PROBE, reply_size, probe.session, probe.seq)
    body = head + bytes(probe.size - len(head) - STAMP.size - MAC_LEN)
    return _seal(token, body, probe.t1_ns, clock)


def _authentic(token: Token, data: bytes, kind: int) -> tuple | None:
    if len(data) < REPLY_MIN or data[:4] != MAGIC:
        return None
    fields = HEADER.unpack_from(data)
    if fields[1] != VERSION or fields[2] != kind:
        return None
    if not hmac.compare_digest(token.mac(data[:-MAC_LEN]), data[-MAC_LEN:]):
        return None
    return fields


def _stamp(data: bytes) -> int:
    return STAMP.unpack_from(data, len(data) - MAC_LEN - STAMP.size)[0]


def decode_probe(token: Token, data: bytes) -> Probe | None:
    """The probe, or None when data is not an authentic probe (the responder then stays silent)."""
    fields = _authentic(token, data, KIND_PROBE)
    if fields is None:
        return None
    _, _, _, reply_size, session, seq = fields
    return Probe(session, seq, _stamp(data), len(data), max(REPLY_MIN, min(reply_size, len(data))))


def encode_reply(token: Token, probe: Probe, t2_ns: int, rx_mtu: int = 0, t3_ns: int = 0,
                 clock: Callable[[], int] | None = None) -> tuple[bytes, int]:
    """(reply, t3) to a decoded probe: probe.reply_size bytes, never more than probe.size.

    With a clock, t3 is read after everything else is hashed: the closest stdlib Python gets
    to stamping the moment the reply leaves.
    """
    size = max(REPLY_MIN, min(probe.reply_size, probe.size))
    head = HEADER.pack(MAGIC, VERSION, KIND_REPLY, min(probe.size, MAX_SIZE_FIELD), probe.session,
                       probe.seq)
    body = head + TIMES.pack(probe.t1_ns, t2_ns, max(0, min(rx_mtu, 0xFFFFFFFF)))
    body += bytes(size - len(body) - STAMP.size - MAC_LEN)
    return _seal(token, body, t3_ns, clock)


def decode_reply(token: Token, data: bytes) -> Reply | None:
    fields = _authentic(token, data, KIND_REPLY)
    if fields is None:
        return None
    _, _, _, probe_size, session, seq = fields
    t1, t2, rx_mtu = TIMES.unpack_from(data, HEADER.size)
    return Reply(session, seq, t1, t2, _stamp(data), probe_size, rx_mtu, len(data))


# -- socket details both ends rely on (Linux values; the socket module lacks most of them) -------

SO_TIMESTAMPNS = 35
IP_PKTINFO = 8
IP_MTU_DISCOVER = 10
IP_MTU = 14
IP_PMTUDISC_DO = 2
IPV6_MTU_DISCOVER = 23
IPV6_MTU = 24
IPV6_PMTUDISC_DO = 2
SIOCGIFMTU = 0x8921
_TIMESPEC = struct.Struct("@qq")
_IN_PKTINFO = struct.Struct("@i4s4s")
_IN6_PKTINFO = struct.Struct("@16sI")


def kernel_clock_trusted(environ: dict[str, str] | None = None) -> bool:
    """Whether this process's clock is the kernel's (libfaketime shifts only the process's)."""
    env = os.environ if environ is None else environ
    return "faketime" not in env.get("LD_PRELOAD", "") and "FAKETIME" not in env


def kernel_clock_offset(environ: dict[str, str] | None = None, samples: int = 8) -> int | None:
    """Nanoseconds to add to a kernel timestamp to read it on this process's clock.

    Kernel timestamps (SO_TIMESTAMPNS on receive, SO_TIMESTAMPING on send) are taken when the
    packet passes, before the scheduler wakes us, which keeps our RTTs as tight as ping's. Under
    libfaketime (the lab's way to skew a node's clock) the process sees a shifted clock the
    kernel knows nothing about; the shift is learnt by timestamping datagrams sent to ourselves
    over loopback: the kernel's stamp falls between our clock readings before and after, and
    the tightest bracket wins. 0 for a normal process; None when it cannot be learnt (then
    every timestamp is taken in Python).
    """
    import socket
    import time

    if kernel_clock_trusted(environ):
        return 0
    best: tuple[int, int] | None = None
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            rx.settimeout(1.0)
            for _ in range(samples):
                before = time.time_ns()
                tx.sendto(b"t", rx.getsockname())
                _, anc, _, _ = rx.recvmsg(16, 256)
                after = time.time_ns()
                kernel = parse_ancillary(anc).kernel_ns
                if kernel is not None and (best is None or after - before < best[0]):
                    best = (after - before, (before + after) // 2 - kernel)
    except OSError:
        return None
    return best[1] if best else None


def set_dont_fragment(sock, family: int) -> None:
    """DF on every datagram: MTU probes must fail rather than be fragmented on the way."""
    import socket

    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)


def enable_ancillary(sock, family: int) -> None:
    """Ask for the receive timestamp and the arrival interface/address with every datagram."""
    import socket

    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)


@dataclass(frozen=True)
class Arrival:
    """What the kernel told us about a received datagram: when, on which interface, to whom."""

    kernel_ns: int | None
    ifindex: int | None
    local_address: str | None


def parse_ancillary(ancdata) -> Arrival:
    import socket

    when = ifindex = local = None
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            when = sec * 1_000_000_000 + nsec
        elif level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            ifindex, _, dst = _IN_PKTINFO.unpack_from(data)
            local = socket.inet_ntop(socket.AF_INET, dst)
        elif (level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
              and len(data) >= _IN6_PKTINFO.size):
            dst, ifindex = _IN6_PKTINFO.unpack_from(data)
            local = socket.inet_ntop(socket.AF_INET6, dst)
    return Arrival(when, ifindex, local)


def source_ancillary(family: int, local_address: str | None) -> list:
    """Ancillary data that makes a reply leave from the address the probe was sent to.

    A responder bound to the wildcard address would otherwise answer from whatever address the
    routing table picks, and the prober's connected socket would discard the reply.
    """
    import socket

    if not local_address:
        return []
    if family == socket.AF_INET6:
        info = _IN6_PKTINFO.pack(socket.inet_pton(socket.AF_INET6, local_address), 0)
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
    info = _IN_PKTINFO.pack(0, socket.inet_pton(socket.AF_INET, local_address), bytes(4))
    return [(socket.IPPROTO_IP, IP_PKTINFO, info)]


def interface_mtu(sock, ifindex: int | None) -> int:
    """The MTU of an interface of this network namespace (0 when unknown).

    Asked through an ioctl on our own socket rather than /sys, which may show another
    namespace's interfaces when the process was moved with nsenter.
    """
    import fcntl
    import socket

    if not ifindex:
        return 0
    try:
        name = socket.if_indextoname(ifindex)
        req = struct.pack("16si", name.encode()[:15], 0)
        return struct.unpack_from("16si", fcntl.ioctl(sock.fileno(), SIOCGIFMTU, req))[1]
    except OSError:
        return 0


SO_TIMESTAMPING = 37
_SOF_TX_SOFTWARE = 1 << 1
_SOF_SOFTWARE = 1 << 4


def enable_tx_timestamps(sock) -> None:
    """Ask the kernel for the moment each datagram leaves (software TX timestamps).

    The departure is stamped where the driver takes the frame, after the system call and the
    UDP/IP stack; reading the clock in Python before send() would count all that as network.
    """
    import socket

    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, _SOF_TX_SOFTWARE | _SOF_SOFTWARE)


# socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT on Linux, as a plain int: or-ing the IntFlags costs
# more than the system call, once per reply (tests/test_probe_prober.py checks the value).
_ERRQUEUE_NOWAIT = 0x2000 | 0x40


def tx_timestamps(sock, limit: int | None = None) -> list[tuple[int, int, int]]:
    """(session, seq, departure_ns) for every timestamp waiting on the error queue (at most
    LIMIT reads of it: a caller that knows how many to expect saves the one that finds it
    empty).

    The kernel hands back a copy of the frame with each timestamp; our header inside it names
    the probe, so nothing depends on counting sends (EMSGSIZE refusals would skew a count).
    """
    import socket

    out: list[tuple[int, int, int]] = []
    reads = 0
    while limit is None or reads < limit:
        reads += 1
        try:
            data, anc, _flags, _addr = sock.recvmsg(256, 256, _ERRQUEUE_NOWAIT)
        except (BlockingIOError, InterruptedError):
            return out
        except OSError:
            return out
        at = data.find(MAGIC)
        if at < 0 or len(data) < at + HEADER.size:
            continue
        _, _, kind, _, session, seq = HEADER.unpack_from(data, at)
        for level, kind_, cdata in anc:
            if level == socket.SOL_SOCKET and kind_ == SO_TIMESTAMPING and len(cdata) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                if kind == KIND_PROBE and (sec or nsec):
                    out.append((session, seq, sec * 1_000_000_000 + nsec))
    return out
