"""Lint an existing corosync.conf: the plan's rules plus the rules only a config file can break.

The file is turned into the ClusterPlan it describes and checked by pvestrap.plan.validate, so
a rule lives in one place; each finding's subject is then moved from the plan's field path
(`nodes[2].link1`) to the place in the file (`nodelist.node[2].ring1_addr`, with the line number
in the payload). Rules no plan can break (crypto off, a missing config_version, legacy
transports, repeated sections) are checked on the tree itself.
"""

from __future__ import annotations

import dataclasses
import re

from pvestrap.corosync.derive import Where, derive_plan
from pvestrap.corosync.tree import ConfParseError, Item, Section, as_int, interface_number, parse
from pvestrap.findings import Finding, Severity, fail
from pvestrap.plan import HOST_RE, ClusterPlan, validate

CHECK = "corosync-conf"
REPEATABLE = ("node", "interface")
LEGACY_TRANSPORTS = ("udp", "udpu")
# What corosync 3 does with totem.secauth / crypto_cipher / crypto_hash (exec/totemconfig.c,
# built with unencrypted support as Debian's is): no setting means no crypto.
CIPHERS = ("none", "aes256", "aes192", "aes128")
HASHES = ("none", "md5", "sha1", "sha256", "sha384", "sha512")


# -- lint ------------------------------------------------------------------------------------------

def lint(text: str, source: str = "corosync.conf") -> list[Finding]:
    """Every problem with a corosync.conf, most of them with the line in the payload."""
    try:
        tree = parse(text, source)
    except ConfParseError as exc:
        return [fail("conf-parse-error", exc.problem, source, check=CHECK,
                     payload={"line": exc.line, "source": source}, remedy=exc.remedy)]
    plan, where = derive_plan(tree)
    out = _structure(tree)
    out += _required(tree)
    out += _plan_rules(plan, where, tree)
    out += _crypto(tree.section("totem"))
    out += _legacy(tree)
    return sorted(out, key=lambda f: f.payload.get("line") or 0)


def _at(code: str, severity: Severity, message: str, subject: str, line: int,
        remedy: str | None = None, **payload: object) -> Finding:
    return Finding(code, severity, message, subject, CHECK, {"line": line, **payload}, remedy)


def _structure(section: Section, prefix: str = "") -> list[Finding]:
    """Repeated sections pvecm refuses to read and repeated keys corosync silently overrides."""
    out: list[Finding] = []
    seen: dict[tuple[bool, str], list[int]] = {}
    counts: dict[str, int] = {}
    for child in section.children:
        is_key = isinstance(child, Item)
        name = child.key if isinstance(child, Item) else child.name
        seen.setdefault((is_key, name), []).append(child.line)
        if isinstance(child, Section):
            index = counts[name] = counts.get(name, -1) + 1
            sub = f"{prefix}{name}[{index}]" if name in REPEATABLE else f"{prefix}{name}"
            out += _structure(child, f"{sub}.")
    for (is_key, name), lines in seen.items():
        if len(lines) > 1 and is_key:
            out.append(_at("conf-key-duplicate", Severity.WARN, f"{name} is set {len(lines)} "
                           "times; corosync uses the last one", f"{prefix}{name}", lines[-1],
                           "keep one line", lines=lines))
        elif len(lines) > 1 and name not in REPEATABLE:
            out.append(_at("conf-section-repeated", Severity.FAIL, f"section {name} appears "
                           f"{len(lines)} times; pvecm refuses to read such a file",
                           f"{prefix}{name}", lines[1], "merge them into one section",
                           lines=lines))
    return out


def _required(tree: Section) -> list[Finding]:
    out = []
    for name in ("totem", "nodelist"):
        if tree.section(name) is None:
            out.append(_at("conf-section-missing", Severity.FAIL, f"there is no {name} section",
                           name, 0, f"add a '{name} {{' section"))
    quorum = tree.section("quorum")
    provider = quorum.get("provider") if quorum else None
    if provider != "corosync_votequorum":
        out.append(_at("conf-quorum-provider", Severity.WARN, "quorum.provider is not "
                       "corosync_votequorum: the cluster would not track quorum",
                       "quorum.provider", _line(quorum, "provider"),
                       "set 'provider: corosync_votequorum' in the quorum section",
                       value=provider))
    totem = tree.section("totem")
    for k, iface in enumerate(totem.sections("interface") if totem else ()):
        number = interface_number(iface)
        if not isinstance(number, int):
            key = "linknumber" if iface.item("linknumber") else "ringnumber"
            out.append(_at("conf-linknumber-invalid", Severity.FAIL, f"{key} {number!r} is not "
                           "a whole number", f"totem.interface[{k}].{key}", _line(iface, key),
                           "use the link's number, 0..7", value=number))
    if totem is not None:
        version = as_int(totem.get("config_version"))
        if version is None:
            out.append(_at("conf-config-version-missing", Severity.WARN, "totem.config_version "
                           "is missing: corosync takes it as 0, but pvecm refuses to edit the "
                           "file", "totem.config_version",
                           totem.line, "add 'config_version: 1' to the totem section"))
        elif not isinstance(version, int):
            out.append(_at("conf-config-version-invalid", Severity.FAIL, f"config_version "
                           f"{version!r} is not a whole number", "totem.config_version",
                           _line(totem, "config_version"), value=version))
    return out


def _line(section: Section | None, key: str) -> int:
    if section is None:
        return 0
    item = section.item(key)
    return item.line if item else section.line


def _plan_rules(plan: ClusterPlan, where: Where, tree: Section) -> list[Finding]:
    """The plan's validation, moved onto the file's places; a missing name or nodeid is
    reported as missing rather than as invalid."""
    out: list[Finding] = []
    missing: set[str] = set()
    for i, node in enumerate(plan.nodes):
        conf_path, line = where[f"nodes[{i}]"]
        if node.name is None:
            missing.add(where[f"nodes[{i}].name"][0])
            out.append(_at("conf-node-name-missing", Severity.FAIL, "the node has no name",
                           conf_path, line, "add 'name: NODENAME' (it must match the hostname)"))
        if node.nodeid is None:
            missing.add(where[f"nodes[{i}].nodeid"][0])
            out.append(_at("conf-nodeid-missing", Severity.FAIL, "the node has no nodeid",
                           conf_path, line, "add 'nodeid: N' (knet needs one per node)"))
    for finding in validate(plan):
        subject, line = where.get(finding.subject or "", (finding.subject, 0))
        if subject in missing:
            continue
        if finding.code == "cluster-name-invalid" and not plan.cluster_name:
            finding = dataclasses.replace(finding, code="conf-cluster-name-missing",
                                          message="totem.cluster_name is missing",
                                          remedy="add 'cluster_name: NAME' to totem")
        if finding.code == "address-not-ip" and not HOST_RE.match(_address(plan, finding)):
            finding = dataclasses.replace(
                finding, code="address-invalid", message=f"{finding.message}, nor a hostname")
        elif finding.code == "address-not-ip":
            finding = dataclasses.replace(
                finding, severity=Severity.WARN, message=f"{finding.message}: a hostname, "
                "resolved by corosync at start (a changed DNS entry moves the link)",
                remedy="write the IP address, as pvecm has since PVE 5.1")
        out.append(Finding(finding.code, finding.severity, finding.message, subject, CHECK,
                           {**finding.payload, "line": line}, finding.remedy))
    return out + _interface_coverage(plan, tree)


def _address(plan: ClusterPlan, finding: Finding) -> str:
    """The address a plan finding is about (the plan puts its path in the subject)."""
    m = re.fullmatch(r"nodes\[(\d+)\]\.link(\d+)", finding.subject or "")
    return plan.nodes[int(m.group(1))].addresses[int(m.group(2))] if m else ""


def _interface_coverage(plan: ClusterPlan, tree: Section) -> list[Finding]:
    """pvecm's verify_conf: with any interface section, every link needs one."""
    totem = tree.section("totem")
    if totem is None or not totem.sections("interface"):
        return []
    have = {interface_number(i) for i in totem.sections("interface")}
    return [_at("conf-link-interface-missing", Severity.WARN, f"link {link.number} has "
                "addresses but no interface section", "totem", totem.line,
                f"add 'interface {{ linknumber: {link.number} }}' to totem",
                number=link.number)
            for link in plan.links if link.number not in have]


def _crypto(totem: Section | None) -> list[Finding]:
    if totem is None:
        return []
    secauth = totem.get("secauth")
    cipher = hash_ = "none"
    if secauth == "on":
        cipher, hash_ = "aes256", "sha256"
    given_cipher, given_hash = totem.get("crypto_cipher"), totem.get("crypto_hash")
    if given_cipher in CIPHERS:
        cipher = given_cipher
    if given_hash in HASHES:
        hash_ = given_hash
    if cipher != "none" and hash_ != "none":
        return []
    line = max(_line(totem, k) for k in ("secauth", "crypto_cipher", "crypto_hash"))
    return [_at("conf-crypto-off", Severity.FAIL, f"cluster traffic is not encrypted and "
                f"authenticated (cipher {cipher}, hash {hash_})", "totem", line,
                "set 'secauth: on' (or crypto_cipher: aes256 and crypto_hash: sha256) and "
                "remove crypto_*: none", cipher=cipher, hash=hash_, secauth=secauth)]


def _legacy(tree: Section) -> list[Finding]:
    """Notes about corosync 2 settings and quorum options that change how votes count."""
    out = []
    totem, quorum = tree.section("totem"), tree.section("quorum")
    transport = totem.get("transport") if totem else None
    if transport in LEGACY_TRANSPORTS:
        out.append(_at("conf-transport-legacy", Severity.INFO, f"transport {transport} is "
                       "corosync 2's (no knet); it needs UDP 5404 as well as 5405",
                       "totem.transport", _line(totem, "transport"),
                       transport=transport, ports=[5404, 5405]))
    for k, iface in enumerate(totem.sections("interface") if totem else ()):
        if iface.item("ringnumber") and not iface.item("linknumber"):
            out.append(_at("conf-legacy-key", Severity.INFO, "ringnumber is corosync 2's name; "
                           "corosync 3 reads linknumber", f"totem.interface[{k}].ringnumber",
                           _line(iface, "ringnumber"), "rename it to linknumber",
                           key="ringnumber"))
    if totem and totem.item("rrp_mode"):
        out.append(_at("conf-legacy-key", Severity.INFO, "rrp_mode is corosync 2's redundant "
                       "ring mode; corosync 3 uses knet links (link_mode)", "totem.rrp_mode",
                       _line(totem, "rrp_mode"), "replace it with 'link_mode: passive'",
                       key="rrp_mode"))
    for key in ("two_node", "expected_votes"):
        value = quorum.get(key) if quorum else None
        if value is not None:
            out.append(_at(f"conf-{key.replace('_', '-')}", Severity.INFO,
                           f"quorum.{key} is set to {value}; pvecm never writes it",
                           f"quorum.{key}", _line(quorum, key), value=value))
    return out
