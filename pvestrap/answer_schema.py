"""The answer file's format, defined once.

The loader's type checks, its unknown-key and missing-key findings and the JSON Schema for editors
(written by pvestrap.answer_export) are all derived from the `FORMAT` tree below, so they cannot
drift apart. Value rules that need
more than a type (name regex, CIDRs, link sets) belong to `pvestrap.plan.validate`; the schema
repeats the simple ones (patterns, ranges, enums) so editors can flag them early.

The optional [installer] table (settings for Proxmox's automated installer) names, for each key,
the answer.toml key it becomes (`target`): its enum and range are the installer's own, read from
`pvestrap.iso.installer_rules`, which also checks the values (through plan.validate).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from pvestrap import plan as P
from pvestrap.findings import Finding, fail

STR, INT, NUM, STRS, TABLE, TABLES = "string", "integer", "number", "strings", "table", "tables"
BOOL, MAP = "boolean", "map"  # MAP: a table of free-form keys to strings (udev globs)
BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINK_KEY = r"^link[0-7]$"
_INDEX = re.compile(r"\[[0-9]+\]")


@dataclass(frozen=True)
class Key:
    """One key of the format. `pattern` makes it a family of keys (link0..link7).

    `rules` are extra JSON Schema keywords; each must be something the loader or
    plan.validate() also refuses, so a file the loader accepts always satisfies the schema.
    `target` (installer settings) is the installer answer.toml key the value is rendered to.
    """

    name: str
    kind: str
    doc: str
    required: bool = False
    children: tuple["Key", ...] = ()
    pattern: str | None = None
    rules: tuple[tuple[str, Any], ...] = ()
    target: str | None = None


def _rules(**kw: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(kw.items())


_NAME = _rules(pattern=P.NAME_RE.pattern, maxLength=P.NAME_MAX)
_TRANSFER = (
    Key("type", STR, "secure (over SSH, default) or insecure (plain TCP)",
        rules=_rules(enum=list(P.TRANSFER_TYPES))),
    Key("network", STR, "CIDR of the network to use, e.g. 10.10.20.0/24"),
)
_THRESHOLD_DOCS = {
    "latency_fail_ms": "round-trip time (ms) from which a link FAILs",
    "jitter_warn_ms": "jitter (ms) from which a link WARNs",
    "loss_warn_pct": "packet loss (%) from which a link WARNs",
    "loss_fail_pct": "packet loss (%) from which a link FAILs",
    "clock_warn_s": "clock offset (s) from which a pair of nodes WARNs",
    "clock_fail_s": "clock offset (s) from which a pair of nodes FAILs",
    "duration_s": "how long each link is measured (s)",
}


def _options(fs: str, keys: tuple[tuple[str, str, str], ...]) -> Key:
    """[installer.disk.FS]: each key becomes disk-setup.FS.key (kebab-case) in answer.toml."""
    return Key(fs, TABLE, f"{fs} options", target=f"disk-setup.{fs}", children=tuple(
        Key(n, kind, doc, target=f"disk-setup.{fs}.{n.replace('_', '-')}")
        for n, kind, doc in keys))


_KEYBOARDS = _rules(enum=sorted(P.KEYBOARDS | set(P.INSTALLER_KEYBOARDS)))
INSTALLER_KEYS: tuple[Key, ...] = (
    Key("country", STR, "ISO 3166-1 alpha-2 country code, lower case, e.g. at",
        target="global.country", rules=_rules(pattern="^[a-z]{2}$")),
    Key("timezone", STR, "UTC or Area/Location, e.g. Europe/Vienna", target="global.timezone",
        rules=_rules(pattern="^(UTC|[A-Za-z]+/.+)$")),
    Key("keyboard", STR, "keyboard layout (default: datacenter.keyboard)",
        target="global.keyboard", rules=_KEYBOARDS),
    Key("mailto", STR, "root's mail address", target="global.mailto",
        rules=_rules(pattern=r"^[^@\s]+@[^@\s]+$", **{"not": {"const": "mail@example.invalid"}})),
    Key("domain", STR, "DNS domain; a node's FQDN is NAME.domain (at most 253 characters)",
        target="global.fqdn", rules=_rules(pattern=P.HOST_RE.pattern)),
    Key("network_source", STR, "from-answer (management address, default) or from-dhcp",
        target="network.source"),
    Key("gateway", STR, "default gateway's IP address (from-answer)", target="network.gateway"),
    Key("dns", STR, "DNS server's IP address (from-answer)", target="network.dns"),
    Key("network_filter", MAP, "udev property -> glob picking the management NIC",
        target="network.filter"),
    Key("root_ssh_keys", STRS, "OpenSSH public keys for root", target="global.root-ssh-keys"),
    Key("reboot_on_error", BOOL, "reboot when installing fails", target="global.reboot-on-error"),
    Key("first_boot_ordering", STR, "when the first-boot hook runs (default fully-up)",
        target="first-boot.ordering"),
    Key("disk", TABLE, "disk setup", target="disk-setup", children=(
        Key("filesystem", STR, "root filesystem", target="disk-setup.filesystem"),
        Key("disk_list", STRS, "disks to install on (or filter)", target="disk-setup.disk-list"),
        Key("filter", MAP, "udev property -> glob choosing the disks", target="disk-setup.filter"),
        Key("filter_match", STR, "whether any or all filters must match",
            target="disk-setup.filter-match"),
        _options("zfs", (("raid", STR, "RAID level"), ("ashift", INT, "sector size, 2^ashift"),
                         ("arc_max", INT, "ARC size (MiB)"), ("checksum", STR, "algorithm"),
                         ("compress", STR, "algorithm"), ("copies", INT, "copies of data"),
                         ("hdsize", NUM, "GiB to use"))),
        _options("lvm", (("hdsize", NUM, "GiB to use"), ("swapsize", NUM, "GiB, <= hdsize / 2"),
                         ("maxroot", NUM, "GiB for root"), ("maxvz", NUM, "GiB for data"),
                         ("minfree", NUM, "GiB left free"))),
        _options("btrfs", (("raid", STR, "RAID level"), ("compress", STR, "algorithm"),
                           ("hdsize", NUM, "GiB to use"))),
    )),
)
_INSTALLER = Key("installer", TABLE, "Proxmox automated-installer settings for pvestrap iso "
                 "answer/prepare (never a password)", children=INSTALLER_KEYS + (
                     Key("nodes", TABLE, "per-node overrides", children=(
                         Key("NAME", TABLE, "one node's settings, winning over the shared ones",
                             pattern=P.NAME_RE.pattern, children=INSTALLER_KEYS),)),))


FORMAT: tuple[Key, ...] = (
    Key("cluster", TABLE, "The cluster as a whole.", required=True, children=(
        Key("name", STR, "cluster name; cannot be changed later", required=True, rules=_NAME),
        Key("create_node", STR, "node that creates the cluster (default: lowest nodeid)",
            rules=_NAME),
        Key("pve_version", STR, 'target PVE release, e.g. "9.2" (>= 9.2 writes '
            "token_coefficient: 125)", rules=_rules(pattern=r"^[0-9]+")),
        Key("backend", STR, "auto, pve (pvecm) or corosync (plain Debian)",
            rules=_rules(enum=list(P.BACKENDS))),
    )),
    Key("links", TABLES, "corosync knet links, link0..link7", required=True,
        rules=_rules(minItems=1, maxItems=P.MAX_LINK + 1), children=(
            Key("number", INT, "link number 0..7 (UDP port 5405 + number)", required=True,
                rules=_rules(minimum=0, maximum=P.MAX_LINK)),
            Key("network", STR, "the link's network in CIDR notation"),
            Key("priority", INT, "0..255; the higher number is preferred",
                rules=_rules(minimum=0, maximum=255)),
        )),
    Key("nodes", TABLES, "every node of the cluster", required=True,
        rules=_rules(minItems=1), children=(
            Key("name", STR, "the node's hostname (short)", required=True, rules=_NAME),
            Key("nodeid", INT, "corosync nodeid (default: lowest free id in file order)",
                rules=_rules(minimum=1)),
            Key("votes", INT, "quorum votes (default 1)", rules=_rules(minimum=0)),
            Key("linkN", STR, "the node's IP address on link N", pattern=LINK_KEY),
            Key("management", STR, "management address in CIDR notation"),
            Key("interfaces", TABLES, "/etc/network/interfaces stanzas the plan owns", children=(
                Key("name", STR, "interface name, e.g. eno2", required=True,
                    rules=_rules(pattern=P.IFACE_RE.pattern)),
                Key("address", STR, "static address in CIDR notation"),
                Key("mtu", INT, "MTU 576..65535", rules=_rules(minimum=576, maximum=65535)),
                Key("kind", STR, "nic (default) or bridge", rules=_rules(enum=["nic", "bridge"])),
                Key("bridge_ports", STR, "ports of a bridge, e.g. eno1"),
                Key("gateway", STR, "gateway address (bridges)"),
            )),
        )),
    Key("join", TABLE, "how joining nodes reach the cluster; never the password itself",
        children=(
            Key("address", STR, "address joiners contact (default: the create node's link0)"),
            Key("fingerprint", STR, "SHA-256 fingerprint of the cluster node's certificate",
                rules=_rules(pattern=P.FINGERPRINT_RE.pattern)),
            Key("join_info", STR, "the GUI's base64 Join Information (fills address and "
                "fingerprint)"),
            Key("password_file", STR, "absolute path of a file holding root's password "
                "(not world-readable)", rules=_rules(pattern="^/")),
            Key("password_env", STR, "name of an environment variable holding root's password",
                rules=_rules(pattern=ENV_NAME.pattern)),
        )),
    Key("datacenter", TABLE, "datacenter.cfg options (written on the create node)", children=(
        Key("keyboard", STR, "keyboard layout (installer spellings dk/jp/se/si accepted)",
            rules=_KEYBOARDS),
        Key("language", STR, "default GUI language, e.g. en"),
        Key("console", STR, "default console viewer", rules=_rules(enum=list(P.CONSOLES))),
        Key("ha_shutdown_policy", STR, "HA policy on node shutdown",
            rules=_rules(enum=list(P.HA_POLICIES))),
        Key("migration", TABLE, "migration settings", children=_TRANSFER),
        Key("replication", TABLE, "replication settings", children=_TRANSFER),
        Key("bwlimit", TABLE, "bandwidth limits in KiB/s", children=tuple(
            Key(k, INT, f"{k} limit (KiB/s)", rules=_rules(minimum=0)) for k in P.BWLIMIT_KEYS)),
        Key("mac_prefix", STR, "unicast MAC prefix for new NICs (default BC:24:11)",
            rules=_rules(pattern=P.MAC_PREFIX_RE.pattern)),
        Key("next_id", TABLE, "range for new guest ids", children=tuple(
            Key(k, INT, f"{k} bound", rules=_rules(minimum=100, maximum=999_999_999))
            for k in ("lower", "upper"))),
        Key("email_from", STR, "sender address of notification mails",
            rules=_rules(pattern=r"^[^@\s]+@[^@\s]+$")),
        Key("http_proxy", STR, "proxy for downloads (http://...)",
            rules=_rules(pattern=r"^http://\S+$")),
        Key("max_workers", INT, "parallel workers for bulk actions", rules=_rules(minimum=1)),
        Key("description", STR, "datacenter notes (multi-line)"),
    )),
    Key("preflight", TABLE, "preflight thresholds and overrides", children=tuple(
        Key(f.name, NUM, _THRESHOLD_DOCS.get(f.name, f.name),
            rules=_rules(exclusiveMinimum=0, default=f.default))
        for f in dataclasses.fields(P.Thresholds)
    ) + (
        Key("ignore_checks", STRS, "check ids whose FAIL is downgraded to WARN (never \"all\")",
            rules=_rules(items={"type": "string", "not": {"const": "all"}})),
        Key("ntp_servers", STRS, "NTP servers the clocks are compared with"),
        Key("qdevice", STR, "address of a corosync-qnetd host"),
    )),
    _INSTALLER,
)


# -- checking a parsed file ------------------------------------------------------------------------

def join_path(path: str, name: str) -> str:
    """TOML key path as shown to users; odd keys are quoted the way TOML would need them."""
    part = name if BARE_KEY.match(name) else json.dumps(name, ensure_ascii=False)
    return f"{path}.{part}" if path else part


def check(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Finding]]:
    """Type-check a parsed file against FORMAT.

    Returns only the well-typed known values (so the plan can still be built and validated for
    the remaining problems) and a finding for every key that is unknown, missing, mistyped or a
    secret.
    """
    out: list[Finding] = []
    return _table(raw, FORMAT, "", out), out


def _table(raw: dict[str, Any], keys: tuple[Key, ...], path: str, out: list[Finding]) -> dict:
    clean: dict[str, Any] = {}
    for name, value in raw.items():
        sub = join_path(path, name)
        if is_secret(name):
            out.append(_secret(sub))
            continue
        key = _find_key(keys, name)
        if key is None:
            out.append(_unknown(name, sub, keys))
            out.extend(_secrets_within(value, sub))
            continue
        ok, checked = _value(value, key, sub, out)
        if ok:
            clean[name] = checked
    for key in keys:
        if key.required and key.name not in raw:
            out.append(fail("answer-key-missing", f"required key {key.name!r} is missing",
                            join_path(path, key.name), payload={"key": key.name},
                            remedy=f"add {key.name} ({key.doc})"))
    return clean


def _find_key(keys: tuple[Key, ...], name: str) -> Key | None:
    for key in keys:
        if re.fullmatch(key.pattern, name) if key.pattern else key.name == name:
            return key
    return None


def _value(value: Any, key: Key, path: str, out: list[Finding]) -> tuple[bool, Any]:
    if key.kind == TABLE:
        if not isinstance(value, dict):
            return _mistyped(value, key, path, out)
        return True, _table(value, key.children, path, out)
    if key.kind == TABLES:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            return _mistyped(value, key, path, out)
        return True, [_table(v, key.children, f"{path}[{i}]", out) for i, v in enumerate(value)]
    if key.kind == MAP:
        return _map(value, key, path, out)
    if key.kind == STRS:
        if not isinstance(value, list):
            return _mistyped(value, key, path, out)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                _mistyped(item, Key(key.name, STR, key.doc), f"{path}[{i}]", out)
        return True, tuple(item for item in value if isinstance(item, str))
    if not type_ok(value, key.kind):
        return _mistyped(value, key, path, out)
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        out.append(fail("answer-number-out-of-range", "integers in TOML must fit in 64 bits",
                        path, remedy="use a realistic value"))
        return False, None
    if key.kind == NUM and not math.isfinite(value):
        out.append(fail("answer-number-out-of-range", f"{value} is not a finite number", path,
                        remedy="use a number such as 2.0"))
        return False, None
    return True, float(value) if key.kind == NUM else value


def _map(value: Any, key: Key, path: str, out: list[Finding]) -> tuple[bool, Any]:
    """Free-form keys to strings: a value of another type is named by its own key path (and
    the table is dropped: a filter missing one of its globs would pick other devices)."""
    if not isinstance(value, dict):
        return _mistyped(value, key, path, out)
    bad = [name for name, item in value.items() if not isinstance(item, str)]
    for name in bad:
        _mistyped(value[name], Key(name, STR, key.doc), join_path(path, name), out)
    return not bad, dict(value)


def type_ok(value: Any, kind: str) -> bool:
    """Whether a parsed TOML value has the scalar kind (a bool is never a number)."""
    if kind == BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == STR:
        return isinstance(value, str)
    if kind == INT:
        return isinstance(value, int)
    return isinstance(value, (int, float))


_EXPECTED = {STR: "a string", INT: "a whole number", NUM: "a number", BOOL: "true or false",
             STRS: "an array of strings", TABLE: "a table", TABLES: "an array of tables",
             MAP: "a table of strings"}


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for messages (the value itself is never shown)."""
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((str, "string"), (int, "integer"), (float, "float"), (dict, "table"),
                       (list, "array")):
        if isinstance(value, kind):
            return name
    if isinstance(value, (datetime.date, datetime.time)):
        return "date-time"
    return type(value).__name__


def _mistyped(value: Any, key: Key, path: str, out: list[Finding]) -> tuple[bool, None]:
    got = toml_type(value)
    remedy = None
    if key.kind == STR and got in ("integer", "float"):
        remedy = "put the value in double quotes"
    elif key.kind == TABLES and got == "table":
        remedy = f"write each entry as [[{_INDEX.sub('', path)}]]"
    elif key.kind in (INT, NUM) and got == "string":
        remedy = "write the number without quotes"
    elif key.kind == BOOL and got == "string":
        remedy = "write true or false without quotes"
    article = "an" if got[0] in "aeiou" else "a"
    out.append(fail("answer-type-invalid", f"expected {_EXPECTED[key.kind]}, got {article} {got}",
                    path, payload={"expected": key.kind, "got": got}, remedy=remedy))
    return False, None


def is_secret(name: str) -> bool:
    """Keys that would hold a password in clear (root_password, password, root-password ...)."""
    norm = name.lower().replace("-", "_")
    return ("password" in norm or "passwd" in norm) and norm not in ("password_file",
                                                                       "password_env")


def _secret(path: str) -> Finding:
    if path == "installer" or path.startswith(("installer.", "installer[")):
        remedy = ("remove it: the hook copies this file to every node; give the installer's "
                  "root password when the ISO is built (pvestrap iso answer/prepare "
                  "--root-password-file FILE or --root-password-env NAME)")
    else:
        remedy = ("remove it; put the password in a file only root can read and set "
                  "join.password_file, or name an environment variable in join.password_env")
    return fail("answer-secret-refused", "a password may not be written in the answer file", path,
                remedy=remedy)


def _secrets_within(value: Any, path: str) -> list[Finding]:
    """Secrets nested under an unknown key (a pasted installer [global] with root-password)."""
    out: list[Finding] = []
    if isinstance(value, dict):
        for name, sub in value.items():
            sub_path = join_path(path, name)
            out += [_secret(sub_path)] if is_secret(name) else _secrets_within(sub, sub_path)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            out += _secrets_within(sub, f"{path}[{i}]")
    return out


def _unknown(name: str, path: str, keys: tuple[Key, ...]) -> Finding:
    known = [k.name for k in keys if not k.pattern]
    links = any(k.pattern == LINK_KEY for k in keys)
    family = [f"link{n}" for n in range(P.MAX_LINK + 1)] if links else []
    suggestion = None
    snake = name.lower().replace("-", "_")
    if snake in known:
        suggestion = snake
    else:
        close = difflib.get_close_matches(name, known + family, n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    if links and re.fullmatch(r"link[0-9]+", name):
        remedy = "corosync has links 0..7 only: use link0 .. link7"
    elif suggestion:
        remedy = f"did you mean {suggestion!r}?"
    else:
        remedy = f"known keys here: {', '.join(known + family[:1])}" if known else None
    return fail("answer-key-unknown", f"unknown key {name!r}", path,
                payload={"key": name, "suggestion": suggestion}, remedy=remedy)


# -- value rules -------------------------------------------------------------------------------

def rules_of(key: Key) -> dict[str, Any]:
    """A key's value rules as JSON Schema keywords: for an installer setting, the enum and range
    the installer's rules give its answer.toml key, then the key's own rules (which win)."""
    out: dict[str, Any] = {}
    if key.target is not None:
        from pvestrap.iso.installer_settings import target_rules  # it builds on this module

        out.update(target_rules(key.target))
    out.update(key.rules)
    return out


# -- where keys are in the text --------------------------------------------------------------------

_LAST_PART = re.compile(r'(\[\d+\]|\.(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"))$')
_CLOSERS = ("]", "}", '"""', "'''")


def key_lines(text: str) -> dict[str, int]:
    """Map the key paths of a TOML text that tomllib accepted to the lines defining them.

    tomllib keeps no positions, so the text is walked line by line: headers set the current
    table (arrays of tables count their entries) and every key/value is re-parsed with tomllib,
    growing over continuation lines, so quoted and dotted keys, inline tables and multi-line
    values are read exactly as the loader read them.
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    where: dict[str, int] = {}
    counts: dict[str, int] = {}
    table, i = "", 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
        elif stripped.startswith("["):
            table = _header(stripped, counts, where, i + 1)
            i += 1
        else:
            i = _key_value(lines, i, table, where)
    return where


def line_of(where: dict[str, int], path: str | None) -> int | None:
    """The line of `path`, else of the nearest enclosing key or table that is in the file."""
    while path:
        if path in where:
            return where[path]
        shorter = _LAST_PART.sub("", path)
        if shorter == path:
            path = ""
        else:
            path = shorter
    return None


def _descend(doc: Any) -> tuple[list[str], Any]:
    """Key names along a document made of one nested key (a header or a `key = 0` line)."""
    parts: list[str] = []
    while isinstance(doc, list) and doc:
        doc = doc[0]
    while isinstance(doc, dict) and len(doc) == 1:
        name, doc = next(iter(doc.items()))
        parts.append(name)
        while isinstance(doc, list) and doc:
            doc = doc[0]
    return parts, doc


def _header(stripped: str, counts: dict[str, int], where: dict[str, int], lineno: int) -> str:
    parts, _ = _descend(tomllib.loads(stripped))
    path = ""
    for n, name in enumerate(parts):
        path = join_path(path, name)
        where.setdefault(path, lineno)
        last = n == len(parts) - 1
        if last and stripped.startswith("[["):
            counts[path] = counts.get(path, -1) + 1
        if path in counts:
            path = f"{path}[{counts[path]}]"
            where.setdefault(path, lineno)
    return path


def _split_key(line: str) -> str | None:
    quote, i = None, 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "=":
            return line[:i]
        i += 1
    return None


def _key_value(lines: list[str], i: int, table: str, where: dict[str, int]) -> int:
    key_text = _split_key(lines[i])
    if key_text is None:
        return i + 1
    parts, _ = _descend(tomllib.loads(key_text + "= 0"))
    for j in range(i, len(lines)):
        if j > i and not any(c in lines[j] for c in _CLOSERS):
            continue
        try:
            doc = tomllib.loads("\n".join(lines[i:j + 1]))
        except tomllib.TOMLDecodeError:
            continue
        path, value = table, doc
        for name in parts:
            path = join_path(path, name)
            value = value[name]
            where.setdefault(path, i + 1)
        _record(path, value, i + 1, where)
        return j + 1
    return len(lines)


def _record(path: str, value: Any, lineno: int, where: dict[str, int]) -> None:
    if isinstance(value, dict):
        items = [(join_path(path, k), v) for k, v in value.items()]
    elif isinstance(value, list):
        items = [(f"{path}[{n}]", v) for n, v in enumerate(value)]
    else:
        return
    for sub, v in items:
        where.setdefault(sub, lineno)
        _record(sub, v, lineno, where)
