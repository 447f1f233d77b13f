"""The cluster plan: the one model everything reads (answers, wizard, render, preflight, apply).

Plain frozen dataclasses. `validate(plan)` collects EVERY problem as a finding with a field path
(`nodes[2].link1`, `datacenter.keyboard`); `plan.check()` raises once with all (nothing runs after).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from pvestrap import pvecm_versions
from pvestrap.datacenter_schema import LANGUAGES, mac_prefix_problem, next_id_problems
from pvestrap.errors import ValidationFailed
from pvestrap.findings import Finding, fail
from pvestrap.qdevice import QDevice, plan_problems

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
ROLES = ("create", "join")
BACKENDS = ("auto", "pve", "corosync")


def normalize_keyboard(value: str) -> str:
    """The installer's answer.toml spells four layouts differently; datacenter.cfg wants these."""
    return INSTALLER_KEYBOARDS.get(value, value)


@dataclass(frozen=True)
class Link:
    """A corosync knet link: number 0..7, its network, and its priority (higher is preferred)."""

    number: int
    network: str | None = None
    priority: int = 0

    @property
    def port(self) -> int:
        return 5405 + self.number


@dataclass(frozen=True)
class InterfaceStanza:
    """An /etc/network/interfaces stanza the plan owns (a dedicated NIC, or a bridge)."""

    name: str
    address: str | None = None
    mtu: int | None = None
    kind: str = "nic"  # nic | bridge
    bridge_ports: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class Node:
    name: str
    nodeid: int
    addresses: Mapping[int, str]  # link number -> address
    votes: int = 1
    interfaces: tuple[InterfaceStanza, ...] = ()
    management: str | None = None  # management address as CIDR (installer, wizard)

    def address(self, link: int) -> str:
        return self.addresses[link]

    @property
    def counted_votes(self) -> int:
        """The votes corosync counts: a node written without quorum_votes (pvecm addnode does
        that for 0 votes) counts as 1."""
        return self.votes or 1


@dataclass(frozen=True)
class JoinTarget:
    """Where joiners join and how they prove who the cluster is.

    The password is never held here: only a reference (file or environment variable), resolved
    at the moment of joining and never written to logs, reports or answer files.
    """

    address: str | None = None
    fingerprint: str | None = None
    password_file: str | None = None
    password_env: str | None = None

    @property
    def names_password(self) -> bool:
        """Whether the plan can give the root password: the API join (pvecm add, TCP 8006) is
        possible; without it a Proxmox VE node joins with pvecm add --use_ssh (TCP 22)."""
        return bool(self.password_file or self.password_env)


@dataclass(frozen=True)
class Datacenter:
    """The datacenter.cfg options the wizard handles (None = not set, so not written)."""

    keyboard: str | None = None
    language: str | None = None
    console: str | None = None
    migration_type: str | None = None
    migration_network: str | None = None
    replication_type: str | None = None
    replication_network: str | None = None
    ha_shutdown_policy: str | None = None
    bwlimit: Mapping[str, int] = field(default_factory=dict)
    mac_prefix: str | None = None
    next_id_lower: int | None = None
    next_id_upper: int | None = None
    email_from: str | None = None
    http_proxy: str | None = None
    max_workers: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Thresholds:
    latency_fail_ms: float = 2.0
    jitter_warn_ms: float = 0.5
    loss_warn_pct: float = 1.0
    loss_fail_pct: float = 10.0
    clock_warn_s: float = 0.1
    clock_fail_s: float = 1.0
    duration_s: float = 3.0


@dataclass(frozen=True)
class Preflight:
    thresholds: Thresholds = field(default_factory=Thresholds)
    ignore_checks: tuple[str, ...] = ()
    ntp_servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPlan:
    cluster_name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    create_node: str | None = None  # defaults to the node with the lowest nodeid
    join: JoinTarget = field(default_factory=JoinTarget)
    datacenter: Datacenter = field(default_factory=Datacenter)
    preflight: Preflight = field(default_factory=Preflight)
    pve_version: str | None = None  # target PVE release, e.g. "9.2" (token_coefficient: 125)
    backend: str = "auto"
    # [installer] for `pvestrap iso answer/prepare`, as read: a read-only mapping of the answer
    # file's snake_case keys, per-node overrides under "nodes". Checked by pvestrap.iso.
    installer: Mapping[str, Any] | None = None
    # The pve-cluster version installed on the node this plan is applied on (pvestrap.nodefacts
    # fills it in from dpkg; never read from an answer file). It outranks pve_version.
    pve_cluster: str | None = None
    qdevice: QDevice | None = None  # [qdevice]: an external vote

    # -- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    @property
    def creator(self) -> Node:
        if self.create_node:
            return self.node(self.create_node)
        return min(self.nodes, key=lambda n: n.nodeid)

    def role_of(self, name: str) -> str:
        return "create" if self.creator.name == name else "join"

    def link(self, number: int) -> Link:
        for link in self.links:
            if link.number == number:
                return link
        raise KeyError(number)

    @property
    def link_numbers(self) -> tuple[int, ...]:
        return tuple(sorted(link.number for link in self.links if isinstance(link.number, int)))

    @property
    def pvecm_version(self) -> str | None:
        """The pve-cluster version whose pvecm behaviour applies (pvestrap.pvecm_versions): the
        node's installed one, else the one the answer file's pve_version plans ahead for."""
        if self.pve_cluster:
            return self.pve_cluster
        return pvecm_versions.pve_cluster_for_release(self.pve_version) if self.pve_version \
            else None

    @property
    def token_coefficient(self) -> int | None:
        """What pvecm create writes: token_coefficient: 125 from pve-cluster 9.1.0 (PVE 9.2)."""
        version = self.pvecm_version
        if version and pvecm_versions.has(version, pvecm_versions.TOKEN_COEFFICIENT):
            return pvecm_versions.DEFAULT_TOKEN_COEFFICIENT
        return None

    def join_address(self) -> str:
        """The address joiners contact: the explicit target, else the creator's link0 address."""
        if self.join.address:
            return self.join.address
        creator = self.creator
        return creator.addresses[min(creator.addresses)]

    def check(self, source: str | None = None) -> "ClusterPlan":
        problems = validate(self)
        if problems:
            raise ValidationFailed(problems, source=source)
        return self


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


# -- validation ------------------------------------------------------------------------------------

def validate(plan: ClusterPlan) -> list[Finding]:
    """Every problem with the plan, each with a field path. An empty list means valid."""
    out: list[Finding] = []
    out += _forbidden_characters(plan)
    out += _check_name(plan.cluster_name, "cluster.name", "cluster-name-invalid", "cluster name")
    out += _check_links(plan)
    out += _check_nodes(plan)
    out += _check_join(plan)
    major = next(iter(_version_tuple(plan.pve_version or "")), None)
    out += _check_datacenter(plan.datacenter, major)
    out += _check_preflight(plan.preflight)
    out += plan_problems(plan)
    if plan.backend not in BACKENDS:
        out.append(fail("backend-invalid", f"unknown backend {plan.backend!r}", "cluster.backend",
                        remedy=f"use one of {', '.join(BACKENDS)}"))
    if plan.pve_version is not None and not _version_tuple(plan.pve_version):
        out.append(fail("pve-version-invalid", f"{plan.pve_version!r} is not a version like 9.2",
                        "cluster.pve_version"))
    return out


def name_problem(value: object) -> str | None:
    """Why VALUE is not a valid node or cluster name, or None when it is: the one name rule."""
    if not isinstance(value, str):
        return "not text"
    if len(value) > NAME_MAX:
        return f"longer than {NAME_MAX} characters"
    if not NAME_RE.fullmatch(value):  # fullmatch: `$` alone lets a trailing newline through
        return "only letters, digits and inner hyphens are allowed"
    return None


def _check_name(value: str, path: str, code: str, what: str) -> list[Finding]:
    if name_problem(value):
        return [fail(code, f"{what} {value!r} is not valid", path, payload={"value": value},
                     remedy=f"use {NAME_RULE} (e.g. 'pve-prod1')")]
    return []


def _check_links(plan: ClusterPlan) -> list[Finding]:
    out: list[Finding] = []
    if not plan.links:
        out.append(fail("links-missing", "the plan has no links", "links",
                        remedy="add at least link 0"))
    if len(plan.links) > MAX_LINK + 1:
        out.append(fail("links-too-many", f"{len(plan.links)} links; corosync allows at most 8",
                        "links", payload={"count": len(plan.links)}))
    seen: set[int] = set()
    for i, link in enumerate(plan.links):
        path = f"links[{i}]"
        if not isinstance(link.number, int) or not 0 <= link.number <= MAX_LINK:
            out.append(fail("link-number-out-of-range", f"link number {link.number} is not 0..7",
                            f"{path}.number", payload={"number": link.number}))
        elif link.number in seen:
            out.append(fail("link-duplicate", f"link {link.number} is defined twice",
                            f"{path}.number", payload={"number": link.number}))
        seen.add(link.number)
        if not isinstance(link.priority, int) or not 0 <= link.priority <= 255:
            out.append(fail("link-priority-out-of-range",
                            f"priority {link.priority} is not 0..255", f"{path}.priority",
                            remedy="higher numbers are preferred; use 0..255"))
        if link.network is not None and _network(link.network) is None:
            out.append(fail("link-network-invalid", f"{link.network!r} is not a network in CIDR "
                            "notation", f"{path}.network", remedy="e.g. 10.10.10.0/24"))
    return out


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False) if "/" in text else None
    except (ValueError, TypeError):
        return None


def ip_or_none(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """TEXT as an IP address, or None when it is not one (a host name, garbage, not text)."""
    try:
        return ipaddress.ip_address(text)
    except (ValueError, TypeError):
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


def _check_nodes(plan: ClusterPlan) -> list[Finding]:
    out: list[Finding] = []
    if not plan.nodes:
        out.append(fail("nodes-missing", "the plan has no nodes", "nodes"))
    names: dict[str, int] = {}
    nodeids: dict[int, str] = {}
    used: dict[str, str] = {}
    link_set = set(plan.link_numbers)
    families: dict[int, dict[int, str]] = {}
    networks = {link.number: _network(link.network) for link in plan.links if link.network}
    for i, node in enumerate(plan.nodes):
        path = f"nodes[{i}]"
        out += _check_name(node.name, f"{path}.name", "node-name-invalid", "node name")
        if node.name in names:
            out.append(fail("node-name-duplicate", f"node name {node.name!r} is used twice",
                            f"{path}.name", payload={"name": node.name}))
        names.setdefault(node.name, i)
        if not isinstance(node.nodeid, int) or not 1 <= node.nodeid <= NODEID_MAX:
            out.append(fail("nodeid-invalid", f"nodeid {node.nodeid!r} must be a whole number "
                            f"1..{NODEID_MAX}",
                            f"{path}.nodeid"))
        elif node.nodeid in nodeids:
            out.append(fail("nodeid-duplicate", f"nodeid {node.nodeid} is used by node "
                            f"{nodeids[node.nodeid]} too", f"{path}.nodeid",
                            payload={"nodeid": node.nodeid}))
        else:
            nodeids[node.nodeid] = node.name
        if not isinstance(node.votes, int) or node.votes < 0:
            out.append(fail("votes-invalid", f"votes {node.votes!r} must be a whole number >= 0",
                            f"{path}.votes"))
        if set(node.addresses) != link_set:
            out.append(fail("node-link-set-mismatch",
                            f"node {node.name} has links {sorted(node.addresses)}, the cluster has "
                            f"{sorted(link_set)}", path,
                            payload={"node": sorted(node.addresses), "cluster": sorted(link_set)},
                            remedy="every node needs exactly one address on every link"))
        for number, addr_text in sorted(node.addresses.items()):
            apath = f"{path}.link{number}"
            problem = link_address_problem(addr_text)
            if problem:
                out.append(fail(problem[0], problem[1], apath, payload={"address": addr_text},
                                remedy=problem[2]))
                continue
            addr = ipaddress.ip_address(addr_text)
            if addr_text in used:
                out.append(fail("address-duplicate", f"{addr_text} is used by node "
                                f"{used[addr_text]} too", apath, payload={"address": addr_text}))
            used.setdefault(addr_text, node.name)
            fam = families.setdefault(number, {})
            fam.setdefault(addr.version, node.name)
            if len(fam) > 1 and addr.version != min(fam):
                out.append(fail("link-mixed-family", f"link {number} mixes IPv4 and IPv6", apath,
                                remedy="use one address family per link"))
            net = networks.get(number)
            if net is not None and (addr.version != net.version or addr not in net):
                out.append(fail("address-outside-network", f"{addr_text} is not inside link "
                                f"{number}'s network {net}", apath,
                                payload={"address": addr_text, "network": str(net)}))
        for j, stanza in enumerate(node.interfaces):
            out += _check_stanza(stanza, f"{path}.interfaces[{j}]")
        if node.management is not None and _network(node.management) is None:
            out.append(fail("management-invalid", f"{node.management!r} is not an address in CIDR "
                            "notation", f"{path}.management", remedy="e.g. 192.168.1.11/24"))
    if plan.create_node is not None and plan.create_node not in names:
        out.append(fail("create-node-unknown", f"create_node {plan.create_node!r} is not one of "
                        "the nodes", "cluster.create_node"))
    return out


def _check_stanza(stanza: InterfaceStanza, path: str) -> list[Finding]:
    out: list[Finding] = []
    if not IFACE_RE.match(stanza.name or ""):
        out.append(fail("interface-name-invalid", f"{stanza.name!r} is not an interface name",
                        f"{path}.name"))
    if stanza.kind not in ("nic", "bridge"):
        out.append(fail("interface-kind-invalid", f"kind {stanza.kind!r} is not nic or bridge",
                        f"{path}.kind"))
    if stanza.address is not None and _network(stanza.address) is None:
        out.append(fail("interface-address-invalid", f"{stanza.address!r} is not an address in "
                        "CIDR notation", f"{path}.address", remedy="e.g. 10.10.10.1/24"))
    mtu = stanza.mtu
    if mtu is not None and (not isinstance(mtu, int) or not 576 <= mtu <= 65535):
        out.append(fail("interface-mtu-invalid", f"mtu {stanza.mtu!r} is not 576..65535 "
                        "(knet's minimum is 576 for IPv4, 1280 for IPv6)", f"{path}.mtu"))
    if stanza.gateway is not None and ip_or_none(stanza.gateway) is None:
        out.append(fail("interface-gateway-invalid", f"{stanza.gateway!r} is not an IP address",
                        f"{path}.gateway"))
    return out


def _check_join(plan: ClusterPlan) -> list[Finding]:
    out: list[Finding] = []
    j = plan.join
    if j.fingerprint is not None and not FINGERPRINT_RE.match(j.fingerprint):
        out.append(fail("fingerprint-invalid", "the fingerprint is not 32 colon-separated hex "
                        "pairs", "join.fingerprint",
                        remedy="copy it from the cluster node's Join Information or "
                               "`pvenode cert info` (SHA-256)"))
    if j.address is not None and ip_or_none(j.address) is None and not HOST_RE.match(j.address):
        out.append(fail("join-address-invalid", f"{j.address!r} is neither an IP address nor a "
                        "host name", "join.address", remedy="e.g. 10.10.10.1"))
    if j.password_file and j.password_env:
        out.append(fail("password-source-ambiguous", "give password_file or password_env, not "
                        "both", "join"))
    return out


def _check_transfer(kind: str, type_: str | None, net: str | None) -> list[Finding]:
    out: list[Finding] = []
    if type_ is not None and type_ not in TRANSFER_TYPES:
        out.append(fail(f"{kind}-type-invalid", f"{kind} type {type_!r} is not secure or insecure",
                        f"datacenter.{kind}.type"))
    if net is not None and _network(net) is None:
        out.append(fail(f"{kind}-network-invalid", f"{kind} network {net!r} is not a CIDR",
                        f"datacenter.{kind}.network", remedy="e.g. 10.10.10.0/24"))
    return out


def _check_datacenter(dc: Datacenter, pve_major: int | None) -> list[Finding]:
    out: list[Finding] = []
    out += _check_transfer("migration", dc.migration_type, dc.migration_network)
    out += _check_transfer("replication", dc.replication_type, dc.replication_network)
    if dc.keyboard is not None and dc.keyboard not in KEYBOARDS:
        out.append(fail("keyboard-invalid", f"keyboard {dc.keyboard!r} is not known",
                        "datacenter.keyboard",
                        remedy=f"one of {', '.join(sorted(KEYBOARDS))} (or dk/jp/se/si)"))
    if dc.console is not None and dc.console not in CONSOLES:
        out.append(fail("console-invalid", f"console {dc.console!r} is not known",
                        "datacenter.console", remedy=f"one of {', '.join(CONSOLES)}"))
    if dc.ha_shutdown_policy is not None and dc.ha_shutdown_policy not in HA_POLICIES:
        out.append(fail("ha-policy-invalid", f"shutdown policy {dc.ha_shutdown_policy!r} is not "
                        "known", "datacenter.ha_shutdown_policy",
                        remedy=f"one of {', '.join(HA_POLICIES)}"))
    for key, value in dc.bwlimit.items():
        if key not in BWLIMIT_KEYS:
            out.append(fail("bwlimit-key-invalid", f"bwlimit key {key!r} is not known",
                            f"datacenter.bwlimit.{key}",
                            remedy=f"one of {', '.join(BWLIMIT_KEYS)}"))
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            out.append(fail("bwlimit-invalid", f"bwlimit {key} must be KiB/s, a whole number >= 0",
                            f"datacenter.bwlimit.{key}"))
    out += _check_pve_schema(dc, pve_major)
    if dc.email_from is not None and not re.match(r"^[^@\s]+@[^@\s]+$", dc.email_from):
        out.append(fail("email-invalid", f"{dc.email_from!r} is not an e-mail address",
                        "datacenter.email_from"))
    if dc.http_proxy is not None and not re.match(r"^http://\S+$", dc.http_proxy):
        out.append(fail("http-proxy-invalid", f"{dc.http_proxy!r} must start with http://",
                        "datacenter.http_proxy"))
    if dc.max_workers is not None and (not isinstance(dc.max_workers, int) or dc.max_workers < 1):
        out.append(fail("max-workers-invalid", "max_workers must be a whole number >= 1",
                        "datacenter.max_workers"))
    return out


def _check_pve_schema(dc: Datacenter, pve_major: int | None) -> list[Finding]:
    """language, mac_prefix and next-id as PVE's own schema checks them (DataCenterConfig.pm)."""
    out: list[Finding] = []
    if dc.language is not None and dc.language not in LANGUAGES:
        out.append(fail("language-invalid", f"language {dc.language!r} is not one PVE knows "
                        "(it would drop it with a warning on every read)", "datacenter.language",
                        payload={"value": dc.language, "allowed": list(LANGUAGES)},
                        remedy=f"one of {', '.join(LANGUAGES)}"))
    problem = None if dc.mac_prefix is None else mac_prefix_problem(dc.mac_prefix, pve_major)
    if problem:
        out.append(fail("mac-prefix-invalid", f"mac_prefix {dc.mac_prefix!r} {problem}",
                        "datacenter.mac_prefix", payload={"value": dc.mac_prefix},
                        remedy="e.g. BC:24:11 (Proxmox's OUI) or 02:AB:CD"))
    for key, text in next_id_problems(dc.next_id_lower, dc.next_id_upper):
        out.append(fail("next-id-invalid", text, "datacenter.next_id" + (f".{key}" if key else ""),
                        remedy="lower is inclusive, upper exclusive; PVE's defaults are 100 and "
                               "1000000"))
    return out


def _check_preflight(pf: Preflight) -> list[Finding]:
    out: list[Finding] = []
    for name in ("latency_fail_ms", "jitter_warn_ms", "loss_warn_pct", "loss_fail_pct",
                 "clock_warn_s", "clock_fail_s", "duration_s"):
        value = getattr(pf.thresholds, name)
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not math.isfinite(value) or value <= 0):
            out.append(fail("threshold-invalid", f"{name} must be a number > 0",
                            f"preflight.{name}"))
    if "all" in pf.ignore_checks:
        out.append(fail("ignore-all-refused", "ignore_checks may not contain \"all\" in a file",
                        "preflight.ignore_checks", remedy="name each check id to ignore"))
    return out


def _strings(value: object, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(k, path)
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")
    elif hasattr(value, "__dataclass_fields__"):
        for name in value.__dataclass_fields__:
            yield from _strings(getattr(value, name), f"{path}.{name}" if path else name)


def _forbidden_characters(plan: ClusterPlan) -> list[Finding]:
    """`{ } \\n \\r` in any value could inject sections into corosync.conf (pcs refuses them)."""
    out = []
    for path, text in _strings(plan, ""):
        if path.startswith("datacenter.description"):
            continue  # written as '#' comment lines, never into corosync.conf
        bad = sorted({c for c in text if c in FORBIDDEN_CHARS})
        if bad:
            out.append(fail("value-forbidden-character",
                            f"value contains {', '.join(repr(c) for c in bad)}", path,
                            remedy="remove braces and line breaks from the value"))
    return out
