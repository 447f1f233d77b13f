"""Hosts that talk on the cluster's link ports but are not in the nodelist.

The admin guide warns that a removed node which powers on again "as it is" screws up the
cluster: its corosync still has the old corosync.conf and keeps sending knet packets to the
members' link ports (UDP 5405 + N). knet drops them without a word (at most a debug line), so
neither corosync-quorumtool nor corosync-cfgtool shows it. A raw socket does: it receives a copy
of every UDP datagram arriving on this node, and any datagram for a link port from an address
that no node of corosync.conf has is a stranger. pvestrap's own preflight probes (magic PVSP)
are not strangers: a joiner probes the members before it is in the nodelist.

`listen` needs root (CAP_NET_RAW); without it the finding is a SKIP. Used by `pvestrap status`
(and `doctor`): `stranger_findings(conf, listen(ports_of(conf), seconds))`.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from typing import Iterable, Mapping

from pvestrap.checks.probe import MAGIC
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.findings import Finding, Severity, fail, passed

CHECK = "link-strangers"
KNET_PORT = 5405  # corosync's default mcastport; knet link N uses it + N
_UDP = struct.Struct("!HHHH")


class ListenUnavailable(Exception):
    """No raw socket here (not root, no CAP_NET_RAW)."""


def ports_of(conf: CorosyncConf) -> dict[int, int]:
    """UDP port -> link number, for every link of CONF."""
    return {KNET_PORT + n: n for n in conf.link_numbers}


def known_addresses(conf: CorosyncConf) -> set[str]:
    return {a for n in conf.nodes for a in n.addresses.values()}


def parse_datagram(family: int, data: bytes, addr) -> tuple[str, int, bytes] | None:
    """(source address, destination port, payload) of a raw-socket UDP datagram."""
    if family == socket.AF_INET:
        if len(data) < 20:
            return None
        ihl = (data[0] & 0x0F) * 4
        src, udp = socket.inet_ntop(socket.AF_INET, data[12:16]), data[ihl:]
    else:
        src, udp = addr[0], data
    if len(udp) < _UDP.size:
        return None
    _sport, dport, _length, _sum = _UDP.unpack_from(udp)
    return src, dport, udp[_UDP.size:]


def listen(ports: Iterable[int], seconds: float, known: Iterable[str] = ()
           ) -> dict[str, set[int]]:
    """Sources (address -> destination ports) of UDP datagrams for PORTS that arrive here in
    SECONDS from addresses not in KNOWN, pvestrap probes left out."""
    wanted, skip = set(ports), set(known)
    socks, errors = [], []
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socks.append((socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP), family))
        except OSError as exc:
            errors.append(exc.strerror or str(exc))
    if not socks:
        raise ListenUnavailable("; ".join(sorted(set(errors))) or "no raw socket")
    found: dict[str, set[int]] = {}
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([s for s, _ in socks], [], [], left)
            for sock in ready:
                family = next(f for s, f in socks if s is sock)
                data, addr = sock.recvfrom(65535)
                parsed = parse_datagram(family, data, addr)
                if parsed is None:
                    continue
                src, dport, payload = parsed
                if dport in wanted and src not in skip and not payload.startswith(MAGIC):
                    found.setdefault(src.split("%")[0], set()).add(dport)
    finally:
        for sock, _ in socks:
            sock.close()
    return found


def stranger_findings(conf: CorosyncConf, heard: Mapping[str, set[int]] | None,
                      seconds: float, why: str | None = None) -> list[Finding]:
    """Findings for what `listen` heard (None: it could not listen, WHY says why)."""
    if heard is None:
        return [Finding("strangers-not-checked", Severity.SKIP, f"could not listen on the link "
                        f"ports: {why}", "links", CHECK, {"error": why})]
    ports = ports_of(conf)
    out = []
    for address, dports in sorted(heard.items()):
        links = sorted(ports[p] for p in dports if p in ports)
        out.append(fail("link-stranger", f"{address} sends to link port(s) "
                        f"{', '.join(str(p) for p in sorted(dports))} but is not in the "
                        "nodelist (a removed node that came back with its old corosync.conf?)",
                        address, check=CHECK, payload={"address": address,
                                                       "ports": sorted(dports), "links": links},
                        remedy=f"find the host at {address}: power it off, or run `pvestrap "
                               "node separate` on it (stops corosync, keeps its files aside); "
                               "it can join again cleanly with `pvestrap apply`"))
    if not out:
        out.append(passed("no-link-strangers", f"nobody outside the nodelist sent to the link "
                          f"ports in {seconds:g} s", "links", CHECK,
                          payload={"seconds": seconds, "ports": sorted(ports)}))
    return out


def heard_findings(conf: CorosyncConf, seconds: float) -> list[Finding]:
    """Listen on CONF's link ports for SECONDS here and report the strangers."""
    try:
        heard = listen(ports_of(conf), seconds, known_addresses(conf))
    except ListenUnavailable as exc:
        return stranger_findings(conf, None, seconds, str(exc))
    return stranger_findings(conf, heard, seconds)
