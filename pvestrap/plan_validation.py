"""Validation of a cluster plan: `validate(plan)` collects EVERY problem as a finding with a field
path (`nodes[2].link1`, `datacenter.keyboard`); `ClusterPlan.check()` raises once with them all.
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import TYPE_CHECKING, Iterator, Mapping

from pvestrap.datacenter_schema import LANGUAGES, mac_prefix_problem, next_id_problems
from pvestrap.findings import Finding, fail
from pvestrap.plan_rules import (BACKENDS, BWLIMIT_KEYS, CONSOLES, FINGERPRINT_RE, FORBIDDEN_CHARS,
                                 HA_POLICIES, HOST_RE, IFACE_RE, KEYBOARDS, MAX_LINK, NAME_RULE,
                                 NODEID_MAX, TRANSFER_TYPES, ip_or_none, link_address_problem,
                                 name_problem, network_or_none)
from pvestrap.qdevice import plan_problems

if TYPE_CHECKING:  # the model's ClusterPlan.check() calls validate()
    from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, Node, Preflight


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


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
        if link.network is not None and network_or_none(link.network) is None:
            out.append(fail("link-network-invalid", f"{link.network!r} is not a network in CIDR "
                            "notation", f"{path}.network", remedy="e.g. 10.10.10.0/24"))
    return out


def _check_nodes(plan: ClusterPlan) -> list[Finding]:
    out: list[Finding] = []
    if not plan.nodes:
        out.append(fail("nodes-missing", "the plan has no nodes", "nodes"))
    names: dict[str, int] = {}
    nodeids: dict[int, str] = {}
    addresses = _LinkAddresses(plan)
    for i, node in enumerate(plan.nodes):
        path = f"nodes[{i}]"
        out += _check_node_identity(node, path, names, nodeids)
        names.setdefault(node.name, i)
        out += addresses.check(node, path)
        for j, stanza in enumerate(node.interfaces):
            out += _check_stanza(stanza, f"{path}.interfaces[{j}]")
        if node.management is not None and network_or_none(node.management) is None:
            out.append(fail("management-invalid", f"{node.management!r} is not an address in CIDR "
                            "notation", f"{path}.management", remedy="e.g. 192.168.1.11/24"))
    if plan.create_node is not None and plan.create_node not in names:
        out.append(fail("create-node-unknown", f"create_node {plan.create_node!r} is not one of "
                        "the nodes", "cluster.create_node"))
    return out


def _check_node_identity(node: Node, path: str, names: Mapping[str, int],
                         nodeids: dict[int, str]) -> list[Finding]:
    """The node's name, nodeid and votes; NAMES and NODEIDS are those of the nodes before it
    (a valid, new nodeid is added to NODEIDS)."""
    out = _check_name(node.name, f"{path}.name", "node-name-invalid", "node name")
    if node.name in names:
        out.append(fail("node-name-duplicate", f"node name {node.name!r} is used twice",
                        f"{path}.name", payload={"name": node.name}))
    if not isinstance(node.nodeid, int) or not 1 <= node.nodeid <= NODEID_MAX:
        out.append(fail("nodeid-invalid", f"nodeid {node.nodeid!r} must be a whole number "
                        f"1..{NODEID_MAX}", f"{path}.nodeid"))
    elif node.nodeid in nodeids:
        out.append(fail("nodeid-duplicate", f"nodeid {node.nodeid} is used by node "
                        f"{nodeids[node.nodeid]} too", f"{path}.nodeid",
                        payload={"nodeid": node.nodeid}))
    else:
        nodeids[node.nodeid] = node.name
    if not isinstance(node.votes, int) or node.votes < 0:
        out.append(fail("votes-invalid", f"votes {node.votes!r} must be a whole number >= 0",
                        f"{path}.votes"))
    return out


class _LinkAddresses:
    """The link address checks, node by node, with what they remember across nodes: which node
    uses each address, and the address family each link saw first."""

    def __init__(self, plan: ClusterPlan) -> None:
        self.links = set(plan.link_numbers)
        self.networks = {link.number: network_or_none(link.network) for link in plan.links
                         if link.network}
        self.used: dict[str, str] = {}
        self.families: dict[int, dict[int, str]] = {}

    def check(self, node: Node, path: str) -> list[Finding]:
        out: list[Finding] = []
        if set(node.addresses) != self.links:
            out.append(fail("node-link-set-mismatch",
                            f"node {node.name} has links {sorted(node.addresses)}, the cluster has "
                            f"{sorted(self.links)}", path,
                            payload={"node": sorted(node.addresses), "cluster": sorted(self.links)},
                            remedy="every node needs exactly one address on every link"))
        for number, addr_text in sorted(node.addresses.items()):
            out += self._check_address(node.name, number, addr_text, f"{path}.link{number}")
        return out

    def _check_address(self, name: str, number: int, addr_text: str, path: str) -> list[Finding]:
        problem = link_address_problem(addr_text)
        if problem:
            return [fail(problem[0], problem[1], path, payload={"address": addr_text},
                         remedy=problem[2])]
        out: list[Finding] = []
        addr = ipaddress.ip_address(addr_text)
        if addr_text in self.used:
            out.append(fail("address-duplicate", f"{addr_text} is used by node "
                            f"{self.used[addr_text]} too", path, payload={"address": addr_text}))
        self.used.setdefault(addr_text, name)
        fam = self.families.setdefault(number, {})
        fam.setdefault(addr.version, name)
        if len(fam) > 1 and addr.version != min(fam):
            out.append(fail("link-mixed-family", f"link {number} mixes IPv4 and IPv6", path,
                            remedy="use one address family per link"))
        net = self.networks.get(number)
        if net is not None and (addr.version != net.version or addr not in net):
            out.append(fail("address-outside-network", f"{addr_text} is not inside link "
                            f"{number}'s network {net}", path,
                            payload={"address": addr_text, "network": str(net)}))
        return out


def _check_stanza(stanza: InterfaceStanza, path: str) -> list[Finding]:
    out: list[Finding] = []
    if not IFACE_RE.match(stanza.name or ""):
        out.append(fail("interface-name-invalid", f"{stanza.name!r} is not an interface name",
                        f"{path}.name"))
    if stanza.kind not in ("nic", "bridge"):
        out.append(fail("interface-kind-invalid", f"kind {stanza.kind!r} is not nic or bridge",
                        f"{path}.kind"))
    if stanza.address is not None and network_or_none(stanza.address) is None:
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
    if net is not None and network_or_none(net) is None:
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
