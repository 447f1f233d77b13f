"""Installer settings: what Proxmox's automated installer needs beyond the cluster plan.

Country, time zone, mail address, DNS domain, gateway, DNS server, the management NIC and the disk
layout live in the cluster answer file's optional [installer] table (pvestrap.answer_schema defines
the keys), with per-node overrides under [installer.nodes.NAME]. `--installer FILE` takes the same
keys under [installer] as an override, plus a root password source (that file never goes into the
hook): a crypt(3) hash, or a file or environment variable whose password is hashed at build time
and then forgotten.

Layers, each later one winning key by key: the cluster file's [installer], its
[installer.nodes.NAME], the file's [installer], the file's [installer.nodes.NAME]. This module
type-checks each layer (types, and the enum and range of the answer.toml key each setting
becomes) and merges them; pvestrap.installer.validate applies the installer's own rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pvestrap.answer_schema import INSTALLER_KEYS
from pvestrap.findings import Finding, fail
from pvestrap.plan import ClusterPlan
from pvestrap.toml_schema import MAP, STR, STRS, TABLE, Key, Style, check, join_path

STYLE = Style(prefix="installer-settings", separator="_")
PASSWORD_SOURCES = ("root_password_hashed", "root_password_file", "root_password_env")
CLUSTER = "cluster answer file"
FILE_KEYS = INSTALLER_KEYS + tuple(Key(k, STR) for k in PASSWORD_SOURCES)
FILE_FORMAT: tuple[Key, ...] = (Key("installer", TABLE, required=True, children=FILE_KEYS),)


@dataclass(frozen=True)
class Layer:
    """One [installer] table (shared, or one node's) of one file, type-checked."""

    table: Mapping[str, Any]
    path: str                 # its TOML path: installer, installer.nodes.NAME
    source: str               # CLUSTER or the --installer file
    node: str | None = None   # None: applies to every node


@dataclass(frozen=True)
class Settings:
    """One node's installer settings: merged values and where each came from (key paths)."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]
    source: str
    password: Mapping[str, str] = field(default_factory=dict)  # the chosen password source
    sources: Mapping[str, str] = field(default_factory=dict)   # key -> file, where not `source`

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def origin(self, key: str) -> str:
        return f"{self.sources.get(key, self.source)}: {self.origins.get(key, 'installer.' + key)}"


# -- type checks -----------------------------------------------------------------------------------

def check_layers(table: dict[str, Any], keys: tuple[Key, ...], plan: ClusterPlan,
                 source: str) -> tuple[list[Layer], list[Finding]]:
    """Type-check one file's [installer]: its shared layer first, then one per node table."""
    shared, out = check(_shared(table), keys, STYLE, "installer")
    found = [Layer(_usable(shared, keys, "installer", out), "installer", source)]
    nodes = table.get("nodes", {})
    if not isinstance(nodes, dict):
        return found, out + [fail(STYLE.code("type-invalid"), "expected a table of nodes",
                                   "installer.nodes", remedy="write [installer.nodes.NAME]")]
    for name, node_table in nodes.items():
        path = join_path("installer.nodes", name)
        if not plan.has_node(name):
            out.append(fail(STYLE.code("node-unknown"), f"node {name!r} is not in the cluster "
                            "answer file", path, payload={"node": name}, remedy="known nodes: "
                            + ", ".join(str(n.name) for n in plan.nodes)))
        elif not isinstance(node_table, dict):
            out.append(fail(STYLE.code("type-invalid"), "expected a table", path))
        else:
            clean, more = check(node_table, INSTALLER_KEYS, STYLE, path)
            out += more
            found.append(Layer(_usable(clean, INSTALLER_KEYS, path, out), path, source, name))
    return found, out


def _shared(table: Any) -> Any:
    return {k: v for k, v in table.items() if k != "nodes"} if isinstance(table, dict) else table


def _usable(table: Mapping[str, Any], keys: tuple[Key, ...], path: str,
            out: list[Finding]) -> dict[str, Any]:
    """TABLE without empty strings, filters and disk lists (they would silently mean "not
    set") and control characters (no setting has them), each reported."""
    kept: dict[str, Any] = {}
    kinds = {k.name: k for k in keys}
    for name, value in table.items():
        sub, spec = join_path(path, name), kinds[name]
        if spec.kind == TABLE:
            kept[name] = _usable(value, spec.children, sub, out)
            continue
        texts = (list(value) if spec.kind == STRS else
                 [t for kv in value.items() for t in kv] if spec.kind == MAP else [value])
        if spec.kind in (MAP, STRS) and not value and name != "root_ssh_keys" or "" in texts:
            out.append(fail(STYLE.code("value-empty"), "empty value", sub,
                            remedy="give a value, or remove the key"))
        elif any(isinstance(t, str) and any(ord(c) < 0x20 or ord(c) == 0x7F for c in t)
                 for t in texts):
            out.append(fail(STYLE.code("value-invalid"), "contains control characters", sub,
                            remedy="remove line breaks, tabs and other control characters"))
        else:
            kept[name] = value
    return kept


# -- merging -------------------------------------------------------------------------------------

def merge(layers: list[Layer], node: str, source: str,
          password: Mapping[str, str] | None = None) -> Settings:
    """NODE's settings. A later layer wins key by key; choosing disks (disk_list or filter) or a
    filesystem replaces the earlier choice of the same kind, so a node's filter never collides
    with the shared disk_list, nor its ext4 with the shared zfs options."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    sources: dict[str, str] = {}
    disk: dict[str, Any] = {}

    def take(key: str, value: Any, layer: Layer) -> None:
        values[key] = value
        origins[key], sources[key] = f"{layer.path}.{key}", layer.source

    for layer in (la for la in layers if la.node in (None, node)):
        for key, value in layer.table.items():
            if key != "disk":
                take(key, value, layer)
        own = layer.table.get("disk")
        if own is None:
            continue
        origins["disk"], sources["disk"] = f"{layer.path}.disk", layer.source
        dropped = (("disk_list", "filter") if {"disk_list", "filter"} & own.keys() else ()) + (
            ("zfs", "lvm", "btrfs") if "filesystem" in own else ())
        for key in dropped:
            disk.pop(key, None)
            origins.pop(f"disk.{key}", None)
        for key, value in own.items():
            disk[key] = value
            origins[f"disk.{key}"], sources[f"disk.{key}"] = (f"{layer.path}.disk.{key}",
                                                              layer.source)
    if disk:
        values["disk"] = disk
    return Settings(values=values, origins=origins, source=source, password=dict(password or {}),
                    sources={k: v for k, v in sources.items() if v != source})


def thaw(value: Any) -> Any:
    """The plan's read-only mappings as the plain dicts and lists the checks walk."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


