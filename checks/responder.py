"""The responder: answers authenticated preflight probes so peers can measure the path to us.

It listens on UDP 5404 and each link's port (5405 + N), answers probes made with the run's token
(see checks.probe) and stays silent for everything else, so to a stranger it looks like a filtered
port. Each probe is answered once and only while it is fresh, replies are never larger than the
probe, and they are rate-limited per source address and in total (checks.admission), so the
responder can be turned neither into an amplifier nor into a reflector of captured probes. It exits
after its TTL: a forgotten responder does not linger on a production node.

Where a port is already taken (corosync owns 5405 on a cluster member), the responder still answers
on it: a raw socket receives a copy of every UDP datagram, the responder picks out the probes for
that port (a socket filter lets the kernel drop everything else), and sends the reply with a
hand-built UDP header whose source port is the busy port (both from checks.rawudp). The standard
library's raw sockets do this without scapy, which takes over a second to import and is not on
every node. corosync sees the probe too and discards it as garbage.

Public API: ResponderConfig, Responder (open, serve, close; a context manager), Endpoint,
ResponderStats, ports_for_links, and for `--background`: PidLock, daemonize, stop_running.
"""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable, cast

from pvestrap.checks import probe as wire
from pvestrap.checks.rawudp import UDP_HEADER, attach_probe_filter, udp_datagram
from pvestrap.checks.admission import MAX_RATE_PPS, MAX_TTL_S, Admission, check_setting
from pvestrap.errors import OperationFailed, UserError

LEGACY_PORT = 5404
BASE_PORT = 5405
DEFAULT_PORTS = (LEGACY_PORT, BASE_PORT)
WILDCARDS = ("0.0.0.0", "::")
_ANC_SPACE = 256
_SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 4 << 20
_SLACK = 1_000_000  # with an estimated clock shift a kernel stamp may seem up to 1 ms late
MTU_FRESH_S = 1.0  # an interface's MTU is asked again after this long (an admin may change it)


def ports_for_links(links: Iterable[int], base_port: int = BASE_PORT) -> tuple[int, ...]:
    """Legacy 5404 plus every link's port: the ports a node of the plan must answer on."""
    return tuple(sorted({base_port - 1, *(base_port + n for n in links)}))


@dataclass(frozen=True)
class ResponderConfig:
    """addresses: where to listen; empty means every address (0.0.0.0 and ::)."""

    token: wire.Token
    ports: tuple[int, ...] = DEFAULT_PORTS
    addresses: tuple[str, ...] = ()
    ttl_s: float = 600.0
    rate_pps: float = 250.0
    burst: float = 250.0
    global_rate_pps: float = 4000.0  # all sources together: a 32-node, 2-link mesh needs ~1300
    global_burst: float = 4000.0
    sniff_busy_ports: bool = True

    def __post_init__(self) -> None:
        for name, value, upper in (("ttl_s", self.ttl_s, MAX_TTL_S),
                                   ("rate_pps", self.rate_pps, MAX_RATE_PPS),
                                   ("global_rate_pps", self.global_rate_pps, MAX_RATE_PPS)):
            problem = check_setting(name, value, upper)
            if problem:
                raise UserError(f"responder setting {problem}",
                                remedy=f"use a value above 0 and at most {upper:g}")


@dataclass(frozen=True)
class Endpoint:
    """One (address, port) and how it is served: socket, sniff (raw, port busy) or skipped."""

    address: str
    port: int
    mode: str
    reason: str = ""


@dataclass(frozen=True)
class ResponderStats:
    answered: int
    rejected: int  # not an authentic probe: dropped silently
    stale: int  # authentic but too old for its session (or our clock): a capture sent again
    replayed: int  # authentic but answered already
    rate_limited: int  # over its source's budget
    over_budget: int  # over the budget of all sources together
    send_errors: int


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class Responder:
    """Open the endpoints, answer probes until the TTL runs out (or `stop()` returns True)."""

    def __init__(self, config: ResponderConfig, log: Callable[[str], None] | None = None):
        self.config = config
        self.tokens: tuple[wire.Token, ...] = (config.token,)  # answer_also() adds to it
        self.log = log or (lambda _msg: None)
        self.admission = Admission(config.rate_pps, config.burst, config.global_rate_pps,
                                   config.global_burst)
        self.selector = selectors.DefaultSelector()
        self.endpoints: list[Endpoint] = []
        self.sniffed: dict[int, set[tuple[str, int]]] = {}  # family -> {(address, port)}
        self.kclock = wire.kernel_clock_offset()  # kernel stamp + kclock = our clock
        self.counts = {"answered": 0, "rejected": 0, "stale": 0, "replayed": 0,
                       "rate_limited": 0, "over_budget": 0, "send_errors": 0}
        self._waker: socket.socket | None = None  # wake(): serve() looks at stop() at once
        self._mtus: dict[int | None, tuple[int, float]] = {}  # ifindex -> (MTU, asked at)
        self._sources: dict[tuple[int, str | None], list] = {}  # (family, local) -> ancillary

    def __enter__(self) -> "Responder":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- opening -----------------------------------------------------------------------------
    def open(self) -> tuple[Endpoint, ...]:
        self._waker, woken = socket.socketpair()
        woken.setblocking(False)
        self.selector.register(woken, selectors.EVENT_READ, ("wake", 0))
        addresses = self.config.addresses or WILDCARDS
        for address in addresses:
            for port in self.config.ports:
                explicit = bool(self.config.addresses)
                self.endpoints.append(self._bind(address, port, explicit))
        for family, wanted in self.sniffed.items():
            self._open_sniffer(family, wanted)
        if not any(e.mode != "skipped" for e in self.endpoints):
            self.close()
            raise OperationFailed("the responder could not listen on any port",
                                  remedy="see the lines above; run as root to answer on busy ports")
        return tuple(self.endpoints)

    def _bind(self, address: str, port: int, explicit: bool) -> Endpoint:
        family = _family(address)
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError as exc:
            return self._skip(address, port, f"no {'IPv6' if family == socket.AF_INET6 else 'IPv4'}"
                                              f" here ({exc.strerror})")
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE and self.config.sniff_busy_ports:
                self.sniffed.setdefault(family, set()).add((address, port))
                return Endpoint(address, port, "sniff", "port in use (corosync?)")
            if exc.errno == errno.EADDRNOTAVAIL and explicit:
                self.close()
                raise UserError(f"{address} is not an address of this machine",
                                remedy="give --address only for addresses on local interfaces"
                                ) from exc
            return self._skip(address, port, exc.strerror or str(exc))
        wire.enable_ancillary(sock, family)
        wire.set_dont_fragment(sock, family)
        _large_receive_buffer(sock)
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, ("socket", family))
        port = sock.getsockname()[1]  # port 0 (tests): the kernel's choice
        self.log(f"listening on {_where(address, port)}/udp")
        return Endpoint(address, port, "socket")

    def _skip(self, address: str, port: int, reason: str) -> Endpoint:
        self.log(f"skipping {_where(address, port)}/udp: {reason}")
        return Endpoint(address, port, "skipped", reason)

    def _open_sniffer(self, family: int, wanted: set[tuple[str, int]]) -> None:
        try:
            raw = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
        except OSError as exc:
            reason = f"port in use and no raw socket ({exc.strerror}); peers will see it filtered"
            for i, e in enumerate(self.endpoints):
                if (e.address, e.port) in wanted and e.mode == "sniff":
                    self.endpoints[i] = self._skip(e.address, e.port, reason)
            return
        if family == socket.AF_INET6:
            raw.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        else:
            raw.setsockopt(socket.IPPROTO_IP, wire.IP_PKTINFO, 1)
        try:
            attach_probe_filter(raw, family, sorted({port for _, port in wanted}))
        except OSError as exc:  # no filter: _parse_raw picks the probes out, at more CPU
            self.log(f"the raw socket takes every UDP datagram ({exc.strerror})")
        raw.setsockopt(socket.SOL_SOCKET, wire.SO_TIMESTAMPNS, 1)
        wire.set_dont_fragment(raw, family)
        raw.setblocking(False)
        self.selector.register(raw, selectors.EVENT_READ, ("sniff", family))
        for address, port in sorted(wanted):
            self.log(f"{_where(address, port)}/udp is in use: answering probes on it through a "
                     "raw socket")

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
            cast(socket.socket, key.fileobj).close()  # only sockets are registered
        self.selector.close()
        if self._waker is not None:
            self._waker.close()

    def answer_also(self, token: wire.Token) -> None:
        """From now on also answer probes made with TOKEN (each reply is sealed with the
        token its probe was made with). One responder for several tokens: first boot's stages
        (firstboot.presence) add theirs here instead of each opening a responder with raw
        sockets of its own, which every UDP datagram of the node is copied to. Safe while
        serve() runs: the tuple is replaced, never changed."""
        if token not in self.tokens:
            self.tokens = (*self.tokens, token)

    def wake(self) -> None:
        """Make serve() look at its stop() now, not at its next 0.2 s tick: an agent whose
        orchestrator hung up exits at once (every agent's session, 32 of them, ends sooner)."""
        if self._waker is not None:
            try:
                self._waker.send(b"\0")
            except OSError:
                pass  # closed, or woken enough already (its buffer is full)

    # -- serving -----------------------------------------------------------------------------
    def serve(self, stop: Callable[[], bool] | None = None) -> ResponderStats:
        deadline = time.monotonic() + self.config.ttl_s
        while not (stop and stop()):
            left = deadline - time.monotonic()
            if left <= 0:
                self.log(f"TTL of {self.config.ttl_s:g} s reached: exiting")
                break
            for key, _ in self.selector.select(min(left, 0.2)):
                kind, family = key.data
                handler = {"socket": self._on_socket, "sniff": self._on_sniffed,
                           "wake": self._on_wake}[kind]
                handler(cast(socket.socket, key.fileobj), family)
        return ResponderStats(**self.counts)

    @staticmethod
    def _on_wake(sock: socket.socket, _family: int) -> None:
        try:
            sock.recv(4096)
        except OSError:
            pass

    def _times(self, arrival: wire.Arrival, user_rx: int) -> int:
        if self.kclock is None or arrival.kernel_ns is None:
            return user_rx
        k = arrival.kernel_ns + self.kclock
        return k if -_SLACK <= user_rx - k < 1_000_000_000 else user_rx

    def _accept(self, data: bytes, source: str, t2: int, now: float
                ) -> tuple[wire.Probe, wire.Token] | None:
        """The probe and its token when it earns a reply: authentic (made with one of our
        tokens), fresh, new and within budget."""
        for token in self.tokens:
            found = wire.decode_probe(token, data)
            if found is not None:
                break
        else:
            self.counts["rejected"] += 1
            return None
        why = self.admission.decide(found.session, found.seq, found.t1_ns, t2, source, now)
        if why is not None:
            self.counts[why] += 1
            return None
        return found, token

    def _rx_mtu(self, sock: socket.socket, ifindex: int | None, now: float) -> int:
        """The arrival interface's MTU, asked at most once per MTU_FRESH_S (each asking is
        three system calls; a reply to every probe would ask ~2000 times a second)."""
        known = self._mtus.get(ifindex)
        if known is None or now - known[1] >= MTU_FRESH_S:
            known = self._mtus[ifindex] = (wire.interface_mtu(sock, ifindex), now)
        return known[0]

    def _source(self, family: int, local: str | None) -> list:
        """wire.source_ancillary, built once per local address."""
        key = (family, local)
        anc = self._sources.get(key)
        if anc is None:
            anc = self._sources[key] = wire.source_ancillary(family, local)
        return anc

    def _on_socket(self, sock: socket.socket, family: int) -> None:
        for _ in range(64):  # drain a burst, but let the other sockets have a turn
            try:
                data, anc, _flags, addr = sock.recvmsg(wire.MAX_DATAGRAM, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error for an earlier reply
            user_rx, now = time.time_ns(), time.monotonic()
            arrival = wire.parse_ancillary(anc)
            t2 = self._times(arrival, user_rx)
            accepted = self._accept(data, addr[0], t2, now)
            if accepted is None:
                continue
            found, token = accepted
            rx_mtu = self._rx_mtu(sock, arrival.ifindex, now)
            anc = self._source(family, arrival.local_address)
            reply, _ = wire.encode_reply(token, found, t2, rx_mtu, clock=time.time_ns)
            try:
                sock.sendmsg([reply], anc, 0, addr)
                self.counts["answered"] += 1
            except OSError:
                self.counts["send_errors"] += 1  # EMSGSIZE: the reverse path is smaller

    def _on_sniffed(self, raw: socket.socket, family: int) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, addr = raw.recvmsg(wire.MAX_DATAGRAM + 60, _ANC_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            user_rx, now = time.time_ns(), time.monotonic()
            arrival = wire.parse_ancillary(anc)
            parsed = self._parse_raw(family, data, addr, arrival)
            if parsed is None:
                continue
            src, dst, sport, dport, payload = parsed
            t2 = self._times(arrival, user_rx)
            accepted = self._accept(payload, src, t2, now)
            if accepted is None:
                continue
            found, token = accepted
            rx_mtu = self._rx_mtu(raw, arrival.ifindex, now)
            anc = self._source(family, dst)
            reply, _ = wire.encode_reply(token, found, t2, rx_mtu, clock=time.time_ns)
            packet = udp_datagram(family, dst, src, dport, sport, reply)
            try:
                raw.sendmsg([packet], anc, 0, (src, 0))
                self.counts["answered"] += 1
            except OSError:
                self.counts["send_errors"] += 1

    def _parse_raw(self, family: int, data: bytes, addr, arrival: wire.Arrival):
        """(src, dst, sport, dport, payload) of a datagram for a sniffed port, else None."""
        dst: str | None
        if family == socket.AF_INET:
            if len(data) < 20:
                return None
            ihl = (data[0] & 0x0F) * 4
            src = socket.inet_ntop(socket.AF_INET, data[12:16])
            dst = socket.inet_ntop(socket.AF_INET, data[16:20])
            udp = data[ihl:]
        else:
            src, dst, udp = addr[0], arrival.local_address, data
        if dst is None or len(udp) < UDP_HEADER.size:
            return None
        sport, dport, length, _ = UDP_HEADER.unpack_from(udp)
        wanted = self.sniffed.get(family, set())
        wildcard = WILDCARDS[family == socket.AF_INET6]
        if (dst, dport) not in wanted and (wildcard, dport) not in wanted:
            return None
        return src, dst, sport, dport, udp[UDP_HEADER.size:length]


def _large_receive_buffer(sock: socket.socket) -> None:
    """Room for a burst from many peers while Python is busy elsewhere (root may exceed the
    system's rmem_max with SO_RCVBUFFORCE; others get what rmem_max allows)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# -- running in the background -------------------------------------------------------------------

class PidLock:
    """An exclusive lock on the pid file, held for the responder's whole life.

    A lock, unlike a pid that is merely present in a file, cannot go stale: when the responder
    dies, the kernel drops it. A second start that cannot take the lock knows one is running.
    """

    def __init__(self, path: str):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open the pid file {self.path}: {exc.strerror}",
                            remedy="choose a writable --pid-file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def write_pid(self, pid: int) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def holder(self) -> int | None:
        """The pid of the live responder holding the lock, or None."""
        try:
            with open(self.path) as fh:
                text = fh.read().strip()
        except OSError:
            return None
        probe_lock = PidLock(self.path)
        if probe_lock.acquire():
            assert probe_lock.fd is not None
            os.close(probe_lock.fd)  # nobody holds it: a leftover file
            return None
        return int(text) if text.isdigit() else None


def daemonize(lock: PidLock, log_file: str | None = None) -> int | None:
    """Detach (double fork). Returns the daemon's pid in the caller and None in the daemon.

    The caller returns only after the daemon has written its pid, so whoever started it can
    rely on the pid file at once.
    """
    read_end, write_end = os.pipe()
    first = os.fork()
    if first:
        os.close(write_end)
        os.waitpid(first, 0)
        data = os.read(read_end, 32)
        os.close(read_end)
        if not data.strip().isdigit():
            raise OperationFailed("the background responder did not start")
        return int(data)
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    _redirect_stdio(log_file)
    lock.write_pid(os.getpid())
    os.write(write_end, str(os.getpid()).encode())
    os.close(write_end)
    return None


def _redirect_stdio(log_file: str | None) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_file else null
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)


def stop_running(pid_file: str) -> int | None:
    """Stop the responder holding pid_file's lock; its pid, or None when none was running."""
    pid = PidLock(pid_file).holder()
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"responder" not in fh.read():
                raise OperationFailed(f"pid {pid} in {pid_file} is not a pvestrap responder",
                                      remedy="remove the stale pid file by hand")
        os.kill(pid, signal.SIGTERM)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return pid
