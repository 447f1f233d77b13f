"""Writing answer files: export a plan (`dumps`), the commented example (`example`) and the
format's JSON Schema (`json_schema`, generated from pvestrap.answer_schema.FORMAT).

A small TOML writer of our own (the stdlib only reads TOML). Whatever `dumps` writes loads back
to an equal plan; password references are written, passwords never exist here to be written.
"""

from __future__ import annotations

import math
import re
from dataclasses import fields
from typing import Any, Iterable, Mapping

from pvestrap.answer_schema import FORMAT
from pvestrap.plan import ClusterPlan, Datacenter, Link, Node, Thresholds
from pvestrap.toml_schema import MAP, STRS, TABLE, TABLES, Key

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"',
            "\\": "\\\\"}


def toml_string(text: str) -> str:
    """A TOML basic string; control characters escaped, other unicode kept as is."""
    out = []
    for c in text:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _multiline(text: str) -> str:
    """Readable multi-line text where nothing in it needs escaping, else one escaped line."""
    simple = "\n" in text and not re.search(r'["\\\x00-\x08\x0b-\x1f\x7f]', text)
    return f'"""\n{text}"""' if simple else toml_string(text)


def _key(name: str) -> str:
    return name if _BARE.match(name) else toml_string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _pairs(items: Iterable[tuple[str, Any]]) -> list[str]:
    """key = value lines, skipping unset values (None, empty tables)."""
    return [f"{_key(k)} = {_value(v)}" for k, v in items if v is not None and v != {}]


def dumps(plan: ClusterPlan) -> str:
    """The plan as an answer file that loads back to an equal plan."""
    parts = ["# pvestrap answer file. Check it with: pvestrap answer validate FILE",
             "# Passwords are never written here (use join.password_file or join.password_env).",
             ""]
    parts += ["[cluster]"] + _pairs([
        ("name", plan.cluster_name), ("create_node", plan.create_node),
        ("pve_version", plan.pve_version),
        ("backend", None if plan.backend == "auto" else plan.backend)]) + [""]
    for link in plan.links:
        parts += _link(link)
    for node in plan.nodes:
        parts += _node(node)
    join = plan.join
    parts += _table("join", _pairs([
        ("address", join.address), ("fingerprint", join.fingerprint),
        ("password_file", join.password_file), ("password_env", join.password_env)]))
    parts += _table("datacenter", _datacenter(plan.datacenter))
    parts += _table("preflight", _preflight(plan))
    if plan.qdevice is not None:
        q = plan.qdevice
        parts += _table("qdevice", _pairs([
            ("host", q.host), ("algorithm", q.algorithm),
            ("tie_breaker", None if q.tie_breaker == "lowest" else q.tie_breaker),
            ("network", q.network)]))
    if plan.installer is not None:
        parts += _installer(plan.installer, "installer")
    return "\n".join(parts).rstrip("\n") + "\n"


def _table(name: str, lines: list[str]) -> list[str]:
    return [f"[{name}]", *lines, ""] if lines else []


def _link(link: Link) -> list[str]:
    return ["[[links]]"] + _pairs([
        ("number", link.number), ("network", link.network),
        ("priority", link.priority or None)]) + [""]


def _node(node: Node) -> list[str]:
    lines = ["[[nodes]]"] + _pairs([
        ("name", node.name), ("nodeid", node.nodeid),
        ("votes", None if node.votes == 1 else node.votes)])
    lines += _pairs((f"link{n}", addr) for n, addr in sorted(node.addresses.items()))
    lines += _pairs([("management", node.management)]) + [""]
    for stanza in node.interfaces:
        lines += ["[[nodes.interfaces]]"] + _pairs([
            ("name", stanza.name), ("address", stanza.address), ("mtu", stanza.mtu),
            ("kind", None if stanza.kind == "nic" else stanza.kind),
            ("bridge_ports", stanza.bridge_ports), ("gateway", stanza.gateway)]) + [""]
    return lines


def _installer(table: Mapping[str, Any], name: str) -> list[str]:
    """[installer] as read: values as `key = value` (filters and disk options as inline tables),
    then [NAME.disk] and [NAME.nodes.X]; empty tables are kept, so the plan comes back equal."""
    plain = [f"{_key(k)} = {_value(v)}" for k, v in table.items() if k not in ("disk", "nodes")]
    implied = not plain and ("disk" in table or "nodes" in table)  # by [NAME.disk] ...
    lines = [] if implied else [f"[{name}]", *plain, ""]
    if "disk" in table:
        lines += [f"[{name}.disk]"] + [f"{_key(k)} = {_value(v)}"
                                        for k, v in table["disk"].items()] + [""]
    if "nodes" in table:
        if not table["nodes"]:
            lines += [f"[{name}.nodes]", ""]
        for node, own in table["nodes"].items():
            lines += _installer(own, f"{name}.nodes.{_key(node)}")
    return lines


def _sub(**values: Any) -> dict[str, Any] | None:
    present = {k: v for k, v in values.items() if v is not None}
    return present or None


def _datacenter(dc: Datacenter) -> list[str]:
    lines = _pairs([
        ("keyboard", dc.keyboard), ("language", dc.language), ("console", dc.console),
        ("ha_shutdown_policy", dc.ha_shutdown_policy),
        ("migration", _sub(type=dc.migration_type, network=dc.migration_network)),
        ("replication", _sub(type=dc.replication_type, network=dc.replication_network)),
        ("bwlimit", dict(dc.bwlimit) or None), ("mac_prefix", dc.mac_prefix),
        ("next_id", _sub(lower=dc.next_id_lower, upper=dc.next_id_upper)),
        ("email_from", dc.email_from), ("http_proxy", dc.http_proxy),
        ("max_workers", dc.max_workers)])
    if dc.description is not None:
        lines.append(f"description = {_multiline(dc.description)}")
    return lines


def _preflight(plan: ClusterPlan) -> list[str]:
    pf, default = plan.preflight, Thresholds()
    changed = [(f.name, getattr(pf.thresholds, f.name)) for f in fields(Thresholds)
               if getattr(pf.thresholds, f.name) != getattr(default, f.name)]
    return _pairs(changed + [
        ("ignore_checks", list(pf.ignore_checks) or None),
        ("ntp_servers", list(pf.ntp_servers) or None)])


# -- JSON Schema -----------------------------------------------------------------------------------

def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the format, for editors (taplo, VS Code Even Better TOML)."""
    root = _object_schema(FORMAT)
    return {"$schema": SCHEMA_URI, "title": "pvestrap answer file",
            "description": "The whole cluster; each node picks its own part by hostname.", **root}


def _object_schema(keys: tuple[Key, ...]) -> dict[str, Any]:
    props = {k.name: _key_schema(k) for k in keys if not k.pattern}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    patterns = {k.pattern: _key_schema(k) for k in keys if k.pattern}
    if patterns:
        schema["patternProperties"] = patterns
    required = [k.name for k in keys if k.required]
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


def _key_schema(key: Key) -> dict[str, Any]:
    if key.kind == TABLE:
        schema = _object_schema(key.children)
    elif key.kind == TABLES:
        schema = {"type": "array", "items": _object_schema(key.children)}
    elif key.kind == STRS:
        schema = {"type": "array", "items": {"type": "string"}}
    elif key.kind == MAP:
        schema = {"type": "object", "additionalProperties": {"type": "string"}}
    else:
        schema = {"type": key.kind}
    schema = {"description": key.doc, **schema}
    schema.update(key.rules)
    return schema


def example() -> str:
    """A commented answer file for a 3-node, 2-link cluster that validates as it is."""
    return _EXAMPLE


_EXAMPLE = '''\
# pvestrap answer file: the WHOLE cluster in one file. Copy the same file to every node;
# each node finds its own [[nodes]] entry by hostname (or `--node NAME`).
# Check it with:  pvestrap answer validate answers.toml
# Editors can check it too:  pvestrap answer schema > pvestrap-answers.schema.json

[cluster]
# Letters, digits and inner hyphens, at most 15 characters. Cannot be changed later.
name = "prod"
# The node that runs `pvecm create`; the others join it. Default: the lowest nodeid.
create_node = "pve1"
# Target Proxmox VE release. From 9.2 on, new clusters get token_coefficient: 125.
pve_version = "9.2"
# auto (pvecm when Proxmox VE is installed, else plain corosync) | pve | corosync
backend = "auto"

# corosync knet links: link N uses UDP port 5405 + N. Two links on separate switches
# keep the cluster quorate when one network fails. Every node needs an address on every link.
[[links]]
number = 0
network = "10.10.10.0/24"
priority = 20          # 0..255; the HIGHER number is preferred

[[links]]
number = 1
network = "10.10.20.0/24"
priority = 10

[[nodes]]
name = "pve1"          # the node's short hostname
nodeid = 1             # optional: nodes without one get the lowest free ids in file order
link0 = "10.10.10.1"   # IP addresses, not hostnames (pvecm stores IPs)
link1 = "10.10.20.1"
management = "192.168.1.11/24"

  # Stanzas pvestrap writes into /etc/network/interfaces; every other line stays untouched.
  [[nodes.interfaces]]
  name = "eno2"
  address = "10.10.10.1/24"
  mtu = 9000

  [[nodes.interfaces]]
  name = "eno3"
  address = "10.10.20.1/24"

[[nodes]]
name = "pve2"
nodeid = 2
link0 = "10.10.10.2"
link1 = "10.10.20.2"
management = "192.168.1.12/24"

[[nodes]]
name = "pve3"
nodeid = 3
link0 = "10.10.10.3"
link1 = "10.10.20.3"
management = "192.168.1.13/24"

[join]
# Where joining nodes connect. Default: the create node's name where it resolves on the joiner
# (to non-loopback addresses only: how its ssh host key is known), else its link0 address.
address = "10.10.10.1"
# SHA-256 fingerprint of the create node's certificate (`pvenode cert info`). Or paste the
# GUI's Join Information instead: join_info = "<base64>" fills address and fingerprint.
# fingerprint = "AA:BB:..."
# root's password NEVER goes in this file. Name where to read it at join time:
password_env = "PVE_ROOT_PASSWORD"
# password_file = "/root/.pve-root-pw"   # must not be readable by other users

# datacenter.cfg, written once on the create node after the cluster is quorate.
[datacenter]
keyboard = "en-us"     # the installer's dk/jp/se/si are accepted (da/ja/sv/sl)
language = "en"
console = "html5"      # applet | vv | html5 | xtermjs
ha_shutdown_policy = "conditional"
migration = { type = "secure", network = "10.10.20.0/24" }
bwlimit = { default = 102400, migration = 512000 }   # KiB/s
next_id = { lower = 1000, upper = 9999 }
email_from = "pve@example.com"
description = """
Production cluster.
Built by pvestrap from answers.toml."""

[preflight]
latency_fail_ms = 2.0  # round trips above this FAIL (Proxmox says < 5 ms; 2 ms is safer)
clock_warn_s = 0.1
ignore_checks = []     # check ids whose FAIL becomes a WARN; "all" is refused here
ntp_servers = ["0.debian.pool.ntp.org"]

# An external vote for an even node count (the admin guide: "Corosync External Vote Support"):
# corosync-qnetd on a host outside the cluster; first boot sets it up after the last join.
# [qdevice]
# host = "192.168.1.50"     # the qnetd host's IP (TCP 5403 from every node, root SSH from one)
# algorithm = "ffsplit"     # default: ffsplit for an even node count, lms for an odd one
# tie_breaker = "lowest"    # lowest | highest | a node id

# Proxmox's automated installer, for `pvestrap iso answer` and `pvestrap iso prepare`: with
# this table ONE file describes the rack. Every key is optional; a node's own
# [installer.nodes.NAME] wins over the shared values. `--installer FILE` (same keys) overrides
# this table key by key. Never a password here (the hook copies this file to every node): give
# root's password when the ISO is built (--root-password-file FILE / --root-password-env NAME).
# [installer]
# country = "at"                  # ISO 3166-1 alpha-2, lower case
# timezone = "Europe/Vienna"      # UTC or Area/Location
# keyboard = "en-us"              # default: datacenter.keyboard
# mailto = "ops@example.com"
# domain = "example.com"          # each node's FQDN is NAME.example.com
# network_source = "from-answer"  # the node's management address (default) | from-dhcp
# gateway = "192.168.1.1"
# dns = "192.168.1.2"
# network_filter = { ID_NET_NAME = "eno1" }   # udev property = glob picking the NIC
# root_ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnly ops@example.com"]
# reboot_on_error = false
# first_boot_ordering = "fully-up"            # before-network | network-online | fully-up
#
# [installer.disk]
# filesystem = "zfs"              # ext4 | xfs | zfs | btrfs
# disk_list = ["sda", "sdb"]      # or: filter = { ID_MODEL = "*SSD*" } and filter_match = "all"
# zfs = { raid = "raid1", ashift = 12, compress = "lz4" }
#
# [installer.nodes.pve3.disk]     # pve3 has other disks
# filesystem = "ext4"
# filter = { ID_SERIAL = "*SAMSUNG*" }
# lvm = { hdsize = 100, swapsize = 8 }
'''


def dumps_document(doc: Mapping[str, Any]) -> str:
    """A raw answer document (tables, arrays of tables, plain values) as TOML, keys in the
    given order, for answer files assembled elsewhere (an Ansible inventory) and then validated
    by loading them back. None values are left out: a required key then shows as missing."""
    head: list[str] = []
    tables: list[str] = []
    for name, value in doc.items():
        if value is None:
            continue
        if _is_table_array(value):
            for item in value:
                tables += _raw_table(f"[[{_key(name)}]]", _key(name), item)
        elif isinstance(value, Mapping):
            tables += _raw_table(f"[{_key(name)}]", _key(name), value)
        else:
            head.append(f"{_key(name)} = {_value(value)}")
    return "\n".join(head + ([""] if head else []) + tables).rstrip("\n") + "\n"


def _is_table_array(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and \
        all(isinstance(v, Mapping) for v in value)


def _raw_table(header: str, path: str, table: Mapping[str, Any]) -> list[str]:
    lines, later = [header], []
    for name, value in table.items():
        if value is None:
            continue
        if _is_table_array(value):
            for item in value:
                later += _raw_table(f"[[{path}.{_key(name)}]]", f"{path}.{_key(name)}", item)
        else:
            lines.append(f"{_key(name)} = {_value(value)}")
    return lines + [""] + later
