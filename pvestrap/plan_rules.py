"""The plan's value rules: names, link numbers, addresses and the datacenter.cfg choices.

The leaf of the plan: the model (pvestrap.plan) and its validation (pvestrap.plan_validation) read
these, and so do the wizard, the answer file and corosync.conf's facade (through pvestrap.plan).
"""

from __future__ import annotations

import ipaddress
import re

# Node and cluster names: pve-cluster's rule (PVE/API2/ClusterConfig.pm, pve-node and
# cluster_name formats; at most 15 characters, corosync's cluster_name limit).
NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
NAME_MAX = 15
NAME_RULE = f"letters, digits and inner hyphens (not first or last), at most {NAME_MAX} characters"
MAX_LINK = 7
NODEID_MAX = 2**32 - 1  # corosync's nodeid is an unsigned 32-bit number
FORBIDDEN_CHARS = "{}\n\r"
FINGERPRINT_RE = re.compile(r"^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$")
HOST_RE = re.compile(r"^(?=.{1,253}$)[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
                     r"(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
IFACE_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,14}$")

DEFAULT_MAC_PREFIX = "BC:24:11"
KEYBOARDS = frozenset(
    "de de-ch da en-gb en-us es fi fr fr-be fr-ca fr-ch hu is it ja lt mk nl no pl pt pt-br "
    "sv sl tr".split()
)
INSTALLER_KEYBOARDS = {"dk": "da", "jp": "ja", "se": "sv", "si": "sl"}
CONSOLES = ("applet", "vv", "html5", "xtermjs")
HA_POLICIES = ("freeze", "failover", "conditional", "migrate")
TRANSFER_TYPES = ("secure", "insecure")
BWLIMIT_KEYS = ("default", "restore", "migration", "clone", "move")
BACKENDS = ("auto", "pve", "corosync")


def normalize_keyboard(value: str) -> str:
    """The installer's answer.toml spells four layouts differently; datacenter.cfg wants these."""
    return INSTALLER_KEYBOARDS.get(value, value)


def name_problem(value: object) -> str | None:
    """Why VALUE is not a valid node or cluster name, or None when it is: the one name rule."""
    if not isinstance(value, str):
        return "not text"
    if len(value) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    if not NAME_RE.fullmatch(value):  # fullmatch: `$` alone lets a trailing newline through
        return "only letters, digits and inner hyphens are allowed"
    return None


def network_or_none(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False) if "/" in text else None
    except (ValueError, TypeError):
        return None


def ip_or_none(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """TEXT as an IP address, or None when it is not one (a host name, garbage, not text)."""
    if not isinstance(text, str):  # ip_address() would take a number or 4 bytes as an address
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def link_address_problem(text: object) -> tuple[str, str, str] | None:
    """(code, what is wrong, the fix) when TEXT cannot be a corosync link address, else None.

    corosync binds knet to a unicast address of this node: the wildcard, loopback, multicast
    and broadcast addresses are refused, and an IPv6 scope id may only name an interface (it
    reaches `ping -I` and corosync.conf: nothing else may ride along on it).
    """
    addr = ip_or_none(text)
    if addr is None:
        return ("address-not-ip", f"{text!r} is not an IP address",
                "write the IP address, not a hostname (pvecm stores IPs)")
    scope = getattr(addr, "scope_id", None)
    if scope is not None and not IFACE_RE.match(scope):
        return ("address-scope-invalid", f"{text!r}: the scope id {scope!r} is not an "
                "interface name", "write the address as fe80::1%eth1, or without a scope id")
    kind = ("the unspecified address" if addr.is_unspecified else "a loopback address"
            if addr.is_loopback else "a multicast address" if addr.is_multicast
            else "the broadcast address" if addr == ipaddress.IPv4Address("255.255.255.255")
            else None)
    if kind:
        return ("address-not-unicast", f"{text} is {kind}, not a node's address on the link",
                "write this node's unicast address on the link's network")
    return None
