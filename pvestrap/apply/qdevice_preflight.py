"""Measure what the QDevice checks (pvestrap.checks.qdevice) judge: on every member, over SSH
(this node by sh), whether corosync-qdevice is installed, whether a certificate store exists,
and a TCP connect to the qnetd host's port 5403 (open / closed / filtered, and its time); on
the qnetd host, over root SSH, whether corosync-qnetd is installed and answers its tool.
"""

from __future__ import annotations

import ipaddress
import shlex

from pvestrap import qdevice as model
from pvestrap.apply import links
from pvestrap.apply.links import MemberHost
from pvestrap.apply.qdevice import QdeviceChange
from pvestrap.checks import qdevice as checks
from pvestrap.errors import PvestrapError
from pvestrap.findings import Finding
from pvestrap.system import System

CONNECT_TIMEOUT = 3.0
# A TCP connect, told apart: refused (closed), no answer (filtered), connected (open, RTT).
_CONNECT = r"""
import socket, sys, time
host, port, source, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(limit)
if source:
    s.bind((source, 0))
start = time.monotonic()
try:
    s.connect((host, port))
    print("port=open %.3f" % ((time.monotonic() - start) * 1000))
except ConnectionRefusedError:
    print("port=closed")
except socket.timeout:
    print("port=filtered")
except OSError as exc:
    print("port=error %s" % (exc.strerror or exc))
"""


def member_script(host: str, source: str | None) -> str:
    return "; ".join([
        "command -v corosync-qdevice >/dev/null && echo pkg=yes || echo pkg=no",
        f"test -d {model.NODE_DB} && echo store=yes || echo store=no",
        "python3 -c " + shlex.quote(_CONNECT) + " " + " ".join(shlex.quote(a) for a in (
            host, str(model.QNETD_PORT), source or "", str(CONNECT_TIMEOUT)))])


def source_address(member: MemberHost, change: QdeviceChange) -> str | None:
    """The member's address in the QDevice's network (pvecm --network), if one is given."""
    network = change.qdevice.network if change.qdevice else None
    if not network:
        return None
    net = ipaddress.ip_network(network, strict=False)
    node = next((n for n in change.before.nodes if n.name == member.name), None)
    for address in (node.addresses.values() if node else ()):
        if ipaddress.ip_address(address) in net:
            return address
    return None


def _parse(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep and key in ("pkg", "store", "port", "inst", "run"):
            found[key] = value.strip()
    return found


def _port(text: str | None) -> tuple[str, float | None]:
    if not text:
        return "error no answer", None
    state, _, rest = text.partition(" ")
    if state == "open":
        try:
            return "open", float(rest)
        except ValueError:
            return "open", None
    return (state if state in ("closed", "filtered") else f"error {rest}".strip()), None


def preflight(system: System, change: QdeviceChange, force: bool = False) -> list[Finding]:
    """Every QDevice check for setting up CHANGE (what `qdevice setup` shows before asking)."""
    q = change.qdevice
    assert q is not None and change.math is not None
    cluster = change.cluster

    def one(member: MemberHost) -> dict[str, str]:
        try:
            return _parse(cluster.access(system, member).run(
                member_script(q.host, source_address(member, change)), "check the QDevice",
                mutates=False, timeout=CONNECT_TIMEOUT + 30).stdout)
        except PvestrapError as exc:
            return {"error": exc.message}

    measured = links.each(cluster.members, one)
    addresses = {a: str(n.name) for n in change.before.nodes for a in n.addresses.values()}
    out = list(host_side(system, change, addresses))
    ports: dict[str, tuple[str, float | None]] = {}
    installed, stores = {}, []
    for name, found in measured.items():
        if "error" in found:
            ports[name] = (f"error: {found['error']}", None)
            continue
        ports[name] = _port(found.get("port"))
        installed[name] = found.get("pkg") == "yes"
        if found.get("store") == "yes":
            stores.append(name)
    out += checks.port_findings(q.host, ports)
    out += checks.package_findings(installed)
    out += checks.vote_findings(change.math, force)
    out += checks.configured_findings(model.configured(change.before), sorted(stores), force)
    return out


def host_side(system: System, change: QdeviceChange, addresses: dict[str, str]) -> list[Finding]:
    host = change.host
    if host in addresses:
        return checks.host_findings(host, addresses, None)
    script = ("command -v corosync-qnetd >/dev/null && echo inst=yes || echo inst=no; "
              "if corosync-qnetd-tool -s >/dev/null 2>&1; then echo run=yes; "
              "else echo run=no; fi")
    try:
        out = change.qnetd(system).run(script, "check corosync-qnetd", mutates=False).stdout
    except PvestrapError as exc:
        return checks.host_findings(host, addresses, exc.message)
    found = _parse(out)
    return (checks.host_findings(host, addresses, None)
            + checks.qnetd_findings(host, found.get("inst") == "yes", found.get("run") == "yes"))
