"""The rules of Proxmox's automated installer for answer.toml, as pvestrap checks them.

Facts read from proxmox/pve-installer (proxmox-auto-installer src/utils.rs, the `verify_*`
functions of `parse_answer`; proxmox-installer-common) and proxmox-rs proxmox-installer-types
(src/answer.rs, built with its `legacy` feature): keys are kebab-case and unknown keys are refused
(serde deny_unknown_fields). The snake_case spellings that type still accepts as serde aliases
(root_password, root_ssh_keys, disk_list, arc_max ...) are accepted here too, with the warning
Proxmox's `validate-answer` prints for them ("deprecated key"); other snake_case keys
(disk_setup, first_boot ...) the installer refuses, and so does pvestrap.

Nothing is stricter than the installer: the root password needs 8 characters and has no maximum
(ROOT_PASSWORD_MIN_LENGTH, no cap), and the numeric disk options (ashift, arc-max, copies, sizes)
are bounded only by their types (u32, f64): the ranges in proxmox-installer-types' API schema are
not applied when the installer reads answer.toml. The cross-field rules (password xor hash,
network from-answer needs cidr/dns/gateway/filter, disk-list xor filter, one filesystem's options,
RAID minimum disk counts, duplicate disks, swapsize <= hdsize / 2) are the installer's; a few
checks the installer does not make (a gateway outside the management network, an SSH key or a
password hash that does not look like one) are warnings.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import replace
from typing import Any

from pvestrap.findings import Finding, Severity, fail, warn
from pvestrap.toml_lines import key_lines, line_of
from pvestrap.toml_schema import (BOOL, INT, MAP, NUM, STR, STR_OR_TABLE, STRS, TABLE, Key, Style,
                                  check, rules)

STYLE = Style(prefix="installer", separator="-")
KEYBOARDS = ("de", "de-ch", "dk", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch",
             "hu", "is", "it", "jp", "lt", "mk", "nl", "no", "pl", "pt", "pt-br", "se", "si", "tr")
FILESYSTEMS = ("ext4", "xfs", "zfs", "btrfs")
ORDERINGS = ("before-network", "network-online", "fully-up")
# Minimum disks per RAID level (proxmox-installer-common get_min_disks); the installer takes the
# lower-case spelling and, since 2025, the upper-case one too.
ZFS_RAID = {"raid0": 1, "raid1": 2, "raid10": 4, "raidz-1": 3, "raidz-2": 4, "raidz-3": 5}
BTRFS_RAID = {"raid0": 1, "raid1": 2, "raid10": 4}
PASSWORD_MIN = 8  # proxmox-installer-common ROOT_PASSWORD_MIN_LENGTH; no maximum
U32 = rules(minimum=0, maximum=2**32 - 1)  # serde's u32: the only bound of an integer option
MAIL_PLACEHOLDER = "mail@example.invalid"
SECRET_KEYS = (("global", "root-password"), ("global", "root-password-hashed"),
               ("global", "subscription-key"), ("post-installation-webhook", "auth-token"))

_MAIL = re.compile(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}"
                   r"[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$")
_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_CRYPT = re.compile(r"^\$[0-9a-z]{1,8}\$[^\s:$]*(\$[^\s:]*)?$")
_SSH_KEY = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) "
                      r"[A-Za-z0-9+/]+={0,3}( .*)?$")
_IFNAME = re.compile(r"^[a-z][a-z0-9_]{1,20}([:.]\d+)?$", re.IGNORECASE)
_FINGERPRINT = re.compile(r"^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$")
_URL = re.compile(r"^https?://\S+$")
_TZ_AREAS = ("Africa", "America", "Antarctica", "Arctic", "Asia", "Atlantic", "Australia",
             "Europe", "Indian", "Pacific")


def _raids(levels: dict[str, int]) -> tuple[str, ...]:
    return tuple(levels) + tuple(level.upper() for level in levels)


FORMAT: tuple[Key, ...] = (
    Key("global", TABLE, required=True, children=(
        Key("country", STR, required=True, doc="ISO 3166-1 alpha-2 code, e.g. at"),
        Key("fqdn", STR_OR_TABLE, required=True, doc="host name with domain", children=(
            Key("source", STR, rules=rules(enum=("from-dhcp",))),
            Key("domain", STR),
        )),
        Key("keyboard", STR, required=True, rules=rules(enum=KEYBOARDS)),
        Key("mailto", STR, required=True, doc="root's mail address"),
        Key("timezone", STR, required=True, doc="e.g. Europe/Vienna"),
        Key("root-password", STR, aliases=("root_password",)),
        Key("root-password-hashed", STR, aliases=("root_password_hashed",)),
        Key("reboot-on-error", BOOL, aliases=("reboot_on_error",)),
        Key("reboot-mode", STR, rules=rules(enum=("reboot", "power-off")),
            aliases=("reboot_mode",)),
        Key("root-ssh-keys", STRS, aliases=("root_ssh_keys",)),
        Key("subscription-key", STR),
    )),
    Key("network", TABLE, required=True, children=(
        Key("source", STR, rules=rules(enum=("from-dhcp", "from-answer"))),
        Key("cidr", STR),
        Key("dns", STR),
        Key("gateway", STR),
        Key("filter", MAP),
        Key("interface-name-pinning", TABLE, children=(
            Key("enabled", BOOL, required=True),
            Key("mapping", MAP),
        )),
    )),
    Key("disk-setup", TABLE, required=True, children=(
        Key("filesystem", STR, required=True, rules=rules(enum=FILESYSTEMS)),
        Key("disk-list", STRS, aliases=("disk_list",)),
        Key("filter", MAP),
        Key("filter-match", STR, rules=rules(enum=("any", "all")), aliases=("filter_match",)),
        Key("zfs", TABLE, children=(
            Key("raid", STR, rules=rules(enum=_raids(ZFS_RAID))),
            Key("ashift", INT, rules=U32),
            Key("arc-max", INT, rules=U32, aliases=("arc_max",)),
            Key("checksum", STR, rules=rules(enum=("on", "fletcher4", "sha256"))),
            Key("compress", STR, rules=rules(enum=("on", "off", "lzjb", "lz4", "zle", "gzip",
                                                   "zstd"))),
            Key("copies", INT, rules=U32),
            Key("hdsize", NUM),
        )),
        Key("lvm", TABLE, children=(
            Key("hdsize", NUM),
            Key("swapsize", NUM),
            Key("maxroot", NUM),
            Key("maxvz", NUM),
            Key("minfree", NUM),
        )),
        Key("btrfs", TABLE, children=(
            Key("hdsize", NUM),
            Key("raid", STR, rules=rules(enum=_raids(BTRFS_RAID))),
            Key("compress", STR, rules=rules(enum=("on", "off", "zlib", "lzo", "zstd"))),
        )),
    )),
    Key("first-boot", TABLE, children=(
        Key("source", STR, required=True, rules=rules(enum=("from-iso", "from-url"))),
        Key("ordering", STR, rules=rules(enum=ORDERINGS)),
        Key("url", STR),
        Key("cert-fingerprint", STR, aliases=("cert_fingerprint",)),
    )),
    Key("post-installation-webhook", TABLE, children=(
        Key("url", STR, required=True),
        Key("cert-fingerprint", STR, aliases=("cert_fingerprint",)),
        Key("auth-token", STR, aliases=("auth_token",)),
    )),
)


def key_at(target: str) -> Key:
    """The answer.toml key at a dotted path such as disk-setup.zfs.raid."""
    key = Key("", TABLE, children=FORMAT)
    for part in target.split("."):
        found = key.child(part)
        if found is None:
            raise KeyError(target)
        key = found
    return key


def rules_at(target: str) -> tuple[tuple[str, object], ...]:
    """The enum and range the installer gives the answer.toml key TARGET, as JSON Schema."""
    key = key_at(target)
    return tuple((name, list(value) if name == "enum" else value) for name, value in key.rules
                 if name in ("enum", "minimum", "maximum"))


def check_text(text: str, source: str) -> list[Finding]:
    """Every problem of an answer.toml text, each with its key path and line (payload)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        return [fail("installer-toml-invalid", f"not valid TOML: {exc}", None,
                     payload={"line": line}, remedy="fix the syntax at that line")]
    clean, findings = check(raw, FORMAT, STYLE)
    refused = {f.subject for f in findings if f.severity is Severity.FAIL}
    findings += [f for f in cross_field(clean) if not _follows_on(f, refused)]
    where = key_lines(text)
    located = [replace(f, payload={**f.payload, "line": line_of(where, f.subject)})
               for f in findings]
    return sorted(located, key=lambda f: (f.payload["line"] is None, f.payload["line"] or 0))


def _follows_on(f: Finding, refused: set[str | None]) -> bool:
    """A key "missing" only because the format check refused the value given for it: that
    problem is reported once, as the refusal."""
    keys = f.payload.get("keys") or [f.subject]
    return f.code.endswith("-missing") and any(key in refused for key in keys)


def cross_field(clean: dict[str, Any]) -> list[Finding]:
    """The cross-field rules, on values the format check let through."""
    out: list[Finding] = []
    if "global" in clean:
        out += _global(clean["global"])
    if "network" in clean:
        out += _network(clean["network"])
    if "disk-setup" in clean:
        out += _disks(clean["disk-setup"])
    for section in ("first-boot", "post-installation-webhook"):
        if section in clean:
            out += _hook_source(clean[section], section)
    return out


# -- [global] ------------------------------------------------------------------------------------

def _global(g: dict[str, Any]) -> list[Finding]:
    out = _password(g)
    if isinstance(g.get("fqdn"), str):
        problem = fqdn_problem(g["fqdn"])
        if problem:
            out.append(fail("installer-fqdn-invalid", problem, "global.fqdn",
                            payload={"fqdn": g["fqdn"]},
                            remedy="write host.domain, e.g. pve1.example.com"))
    elif isinstance(g.get("fqdn"), dict) and g["fqdn"].get("domain"):
        problem = domain_problem(g["fqdn"]["domain"])
        if problem:
            out.append(fail("installer-fqdn-invalid", problem, "global.fqdn.domain"))
    if "mailto" in g and (not _MAIL.match(g["mailto"]) or g["mailto"] == MAIL_PLACEHOLDER):
        out.append(fail("installer-mailto-invalid", f"{g['mailto']!r} is not a usable mail "
                        "address", "global.mailto", remedy="e.g. admin@example.com (the "
                        f"installer refuses its own placeholder {MAIL_PLACEHOLDER})"))
    if "country" in g and not re.fullmatch(r"[a-z]{2}", g["country"]):
        out.append(fail("installer-country-invalid", f"{g['country']!r} is not a two-letter "
                        "lower-case country code", "global.country", remedy="e.g. at, de, us"))
    if "timezone" in g and not timezone_ok(g["timezone"]):
        out.append(fail("installer-timezone-invalid", f"{g['timezone']!r} is not a time zone "
                        "the installer offers", "global.timezone",
                        remedy="UTC or Area/City, e.g. Europe/Vienna"))
    for i, key in enumerate(g.get("root-ssh-keys", ())):
        if not _SSH_KEY.match(key):
            out.append(warn("installer-ssh-key-suspicious", "does not look like an OpenSSH "
                            "public key", f"global.root-ssh-keys[{i}]",
                            remedy="paste one line of ~/.ssh/id_*.pub"))
    return out


def _password(g: dict[str, Any]) -> list[Finding]:
    clear, hashed = g.get("root-password"), g.get("root-password-hashed")
    if clear is not None and hashed is not None:
        return [fail("installer-password-conflict", "root-password and root-password-hashed "
                     "cannot both be set", "global.root-password-hashed",
                     remedy="keep only root-password-hashed")]
    if clear is None and hashed is None:
        return [fail("installer-password-missing", "the installer needs root-password or "
                     "root-password-hashed (root-ssh-keys do not replace it)", "global",
                     payload={"keys": ["global.root-password", "global.root-password-hashed"]},
                     remedy="add root-password-hashed (openssl passwd -6)")]
    if clear is not None and len(clear) < PASSWORD_MIN:
        return [fail("installer-password-length", f"root-password must be at least "
                     f"{PASSWORD_MIN} characters", "global.root-password",
                     payload={"length": len(clear)})]
    if hashed is not None and not _CRYPT.match(hashed):
        # The installer does not check it (it hands the hash to the new system as is): a
        # warning, as root could then not log in with a password.
        return [warn("installer-password-hash-suspicious", "root-password-hashed does not look "
                     "like a crypt(3) hash: root could not log in with a password",
                     "global.root-password-hashed", remedy="make one with: openssl passwd -6")]
    return []


def fqdn_problem(fqdn: str) -> str | None:
    """The installer's FQDN rule: host and domain, 63-character labels, 253 in all, and a host
    part that is not purely numeric."""
    if len(fqdn) > 253:
        return f"FQDN too long ({len(fqdn)} > 253 characters)"
    parts = fqdn.split(".")
    bad = next((p for p in parts if not _LABEL.match(p)), None)
    if bad is not None:
        return f"invalid part {bad!r}: letters, digits and inner hyphens only"
    if len(parts) < 2:
        return f"{fqdn!r} has no domain; the installer needs host.domain"
    if parts[0].isdigit():
        return "the host part cannot be purely numeric"
    return None


def domain_problem(domain: str) -> str | None:
    bad = next((p for p in domain.split(".") if not _LABEL.match(p)), None)
    return f"invalid domain part {bad!r}" if bad is not None else None


def timezone_ok(name: str) -> bool:
    """UTC or a zone of the country/zone table the installer offers (Area/Location); where
    this machine has a time zone database, the zone must also exist in it."""
    if name == "UTC":
        return True
    if name.split("/")[0] not in _TZ_AREAS or "/" not in name:
        return False
    return _zone_exists(name) or not _zone_exists("Europe/Vienna")


def _zone_exists(name: str) -> bool:
    import zoneinfo  # ~2 ms to load: only for an answer file that names a time zone

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


# -- [network] -----------------------------------------------------------------------------------

_STATIC = ("cidr", "dns", "gateway", "filter")


def _network(n: dict[str, Any]) -> list[Finding]:
    out = []
    if n.get("source", "from-dhcp") == "from-answer":
        for key in _STATIC:
            if not n.get(key):
                out.append(fail("installer-key-missing", f"network source from-answer needs "
                                f"{key!r}", f"network.{key}", payload={"key": key},
                                remedy=_STATIC_HELP[key]))
        out += _addresses(n)
    else:
        for key in _STATIC:
            if key in n:
                out.append(fail("installer-key-not-allowed", f"{key!r} is only allowed with "
                                "source = \"from-answer\"", f"network.{key}",
                                remedy="remove it, or set source = \"from-answer\""))
    pinning = n.get("interface-name-pinning", {})
    out += _pinning(pinning.get("mapping", {})) if pinning.get("enabled") else []
    return out


_STATIC_HELP = {
    "cidr": "the management address with prefix, e.g. 192.168.1.11/24",
    "dns": "a DNS server address",
    "gateway": "the default gateway's address",
    "filter": "a udev property glob picking the NIC, e.g. filter.ID_NET_NAME = \"eno1\"",
}


def _addresses(n: dict[str, Any]) -> list[Finding]:
    out = []
    interface = None
    if n.get("cidr"):
        try:
            if "/" not in n["cidr"]:
                raise ValueError("no prefix length")
            interface = ipaddress.ip_interface(n["cidr"])
        except ValueError:
            out.append(fail("installer-cidr-invalid", f"{n['cidr']!r} is not an address with "
                            "a prefix length", "network.cidr", remedy="e.g. 192.168.1.11/24"))
    for key in ("dns", "gateway"):
        if not n.get(key):
            continue
        try:
            address = ipaddress.ip_address(n[key])
        except ValueError:
            out.append(fail("installer-address-invalid", f"{n[key]!r} is not an IP address",
                            f"network.{key}"))
            continue
        if key == "gateway" and interface is not None and address not in interface.network:
            out.append(warn("installer-gateway-off-subnet", f"gateway {address} is outside "
                            f"{interface.network}", "network.gateway",
                            payload={"gateway": str(address),
                                     "network": str(interface.network)},
                            remedy="check cidr and gateway"))
    return out


def _pinning(mapping: dict[str, str]) -> list[Finding]:
    out: list[Finding] = []
    seen: dict[str, str] = {}
    for mac, name in mapping.items():
        path = f"network.interface-name-pinning.mapping.{mac}"
        if not 2 <= len(name) <= 15 or not _IFNAME.match(name):
            out.append(fail("installer-ifname-invalid", f"interface name {name!r} must be 2..15 "
                            "characters, start with a letter and hold letters, digits and "
                            "underscores", path))
        elif name in seen:
            out.append(fail("installer-ifname-duplicate", f"{name!r} is also given to "
                            f"{seen[name]}", path))
        seen.setdefault(name, mac)
    return out


# -- [disk-setup] --------------------------------------------------------------------------------

_FS_OPTIONS = {"ext4": "lvm", "xfs": "lvm", "zfs": "zfs", "btrfs": "btrfs"}


def _disks(d: dict[str, Any]) -> list[Finding]:
    out = []
    disks, filters = d.get("disk-list", ()), d.get("filter", {})
    if not disks and not filters:
        out.append(fail("installer-disks-missing", "set either disk-list or filter",
                        "disk-setup", payload={"keys": ["disk-setup.disk-list",
                                                        "disk-setup.filter"]},
                        remedy="e.g. disk-list = [\"sda\"]"))
    elif disks and filters:
        out.append(fail("installer-disks-conflict", "disk-list and filter cannot both be set",
                        "disk-setup.filter", remedy="keep one of them"))
    for i, disk in enumerate(disks):
        if disk in disks[:i]:
            out.append(fail("installer-disk-duplicate", f"{disk} is listed twice",
                            f"disk-setup.disk-list[{i}]"))
    fs = d.get("filesystem")
    if fs is None:
        return out
    own = _FS_OPTIONS[fs]
    for other in ("lvm", "zfs", "btrfs"):
        if other != own and other in d:
            out.append(fail("installer-fs-options-conflict", f"{other} options do not apply to "
                            f"filesystem {fs} (it takes {own} options)", f"disk-setup.{other}",
                            remedy=f"remove [disk-setup.{other}]"))
    if own == "lvm":
        out += _lvm(d, disks)
    else:
        out += _raid(d, disks, own, ZFS_RAID if own == "zfs" else BTRFS_RAID)
    return out


def _lvm(d: dict[str, Any], disks: tuple[str, ...]) -> list[Finding]:
    out = []
    if len(disks) > 1:
        out.append(fail("installer-disks-too-many", f"{d['filesystem']} installs on one disk; "
                        f"{len(disks)} are listed", "disk-setup.disk-list",
                        remedy="list one disk, or use zfs/btrfs with a RAID level"))
    lvm = d.get("lvm", {})
    if "swapsize" in lvm and "hdsize" in lvm and lvm["swapsize"] > lvm["hdsize"] / 2:
        out.append(fail("installer-swapsize-too-large", f"swapsize {lvm['swapsize']} GiB is "
                        f"more than half of hdsize {lvm['hdsize']} GiB", "disk-setup.lvm.swapsize",
                        payload={"swapsize": lvm["swapsize"], "hdsize": lvm["hdsize"]}))
    return out


def _raid(d: dict[str, Any], disks: tuple[str, ...], fs: str,
          levels: dict[str, int]) -> list[Finding]:
    raid = d.get(fs, {}).get("raid")
    if raid is None:
        return [fail("installer-raid-missing", f"{fs} needs a RAID level",
                     f"disk-setup.{fs}.raid", remedy=f"one of: {', '.join(levels)}")]
    need = levels[raid.lower()]
    if disks and len(disks) < need:
        return [fail("installer-disks-too-few", f"{fs} {raid} needs at least {need} disks, "
                     f"{len(disks)} listed", "disk-setup.disk-list",
                     payload={"raid": raid, "need": need, "listed": len(disks)})]
    return []


# -- [first-boot], [post-installation-webhook] ---------------------------------------------------

def _hook_source(t: dict[str, Any], section: str) -> list[Finding]:
    out = []
    from_url = section != "first-boot" or t.get("source") == "from-url"
    if from_url and section == "first-boot" and not t.get("url"):
        out.append(fail("installer-key-missing", "source from-url needs a url",
                        f"{section}.url", payload={"key": "url"}))
    if not from_url and "url" in t:
        out.append(warn("installer-key-ignored", "url is only used with source = \"from-url\"",
                        f"{section}.url"))
    if t.get("url") and not _URL.match(t["url"]):
        out.append(fail("installer-url-invalid", f"{t['url']!r} is not an http(s) URL",
                        f"{section}.url"))
    if "cert-fingerprint" in t and not _FINGERPRINT.match(t["cert-fingerprint"]):
        out.append(fail("installer-fingerprint-invalid", "not a SHA-256 fingerprint (32 "
                        "colon-separated hex pairs)", f"{section}.cert-fingerprint"))
    return out
