"""The two /etc/pve files whose networks the doctor compares with corosync's links.

datacenter.cfg (`migration: [type=]secure,network=CIDR`, PVE's DataCenterConfig.pm) names the
migration network; storage.cfg (`TYPE: ID` sections, indented `key value` lines, PVE's
PVE/Storage/Plugin.pm) names the storage servers: `server`/`server2` (NFS, CIFS, GlusterFS,
PBS), `portal` (iSCSI, ZFS over iSCSI: host[:port]) and `monhost` (Ceph RBD/CephFS: a list).
Unknown lines are skipped: these files are read for hints, never rewritten.
"""

from __future__ import annotations

import ipaddress
import re

_SECTION = re.compile(r"^(\S+):\s*(\S+)\s*$")
_SERVER_KEYS = ("server", "server2", "portal", "monhost")


def migration_network(text: str | None) -> str | None:
    """The CIDR of datacenter.cfg's migration property, or None."""
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "migration":
            for part in value.strip().split(","):
                name, eq, val = part.partition("=")
                if eq and name.strip() == "network":
                    return val.strip()
    return None


def _host(text: str) -> str:
    """host of host, host:port, [v6]:port or v6."""
    text = text.strip()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def storage_servers(text: str | None) -> dict[str, list[str]]:
    """storage id -> the server addresses/names it talks to."""
    out: dict[str, list[str]] = {}
    current = None
    for line in (text or "").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            m = _SECTION.match(line)
            current = m.group(2) if m else None
            continue
        if current is None:
            continue
        key, _, value = line.strip().partition(" ")
        if key in _SERVER_KEYS:
            hosts = [_host(h) for h in re.split(r"[\s,;]+", value.strip()) if h]
            out.setdefault(current, []).extend(hosts)
    return out


def network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def in_network(address: str, network) -> bool:
    try:
        return ipaddress.ip_address(address) in network
    except (ValueError, TypeError):
        return False
