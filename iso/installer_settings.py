"""What the automated installer needs beyond the cluster answer file: `--installer FILE`.

The cluster file describes the cluster; the installer also wants a country, a time zone, a mail
address, the DNS domain, the gateway and DNS server, the management NIC, the disk layout and a root
password. They live in an `[installer]` table (snake_case, like the cluster file), with per-node
overrides under `[installer.nodes.NAME]`. The root password is never in clear in any file pvestrap
writes: the settings give a crypt(3) hash, or name a file or environment variable holding the
password, which is hashed with `openssl passwd -6` at build time and then forgotten.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pvestrap.answer_schema import ENV_NAME, key_lines, line_of
from pvestrap.answers import AnswerFileInvalid, resolve_password
from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Finding, fail
from pvestrap.iso import installer_rules as R
from pvestrap.iso.toml_schema import BOOL, INT, MAP, NUM, STR, STRS, TABLE, Field, Style, check
from pvestrap.plan import ClusterPlan, JoinTarget

STYLE = Style(prefix="installer-settings", separator="_")
PASSWORD_SOURCES = ("root_password_hashed", "root_password_file", "root_password_env")

_DISK = Field("disk", TABLE, children=(
    Field("filesystem", STR, enum=R.FILESYSTEMS),
    Field("disk_list", STRS),
    Field("filter", MAP),
    Field("filter_match", STR, enum=("any", "all")),
    Field("zfs", TABLE, children=(
        Field("raid", STR, enum=tuple(R.ZFS_RAID)),
        Field("ashift", INT, minimum=9, maximum=16),
        Field("arc_max", INT, minimum=64),
        Field("checksum", STR), Field("compress", STR),
        Field("copies", INT, minimum=1, maximum=3),
        Field("hdsize", NUM, minimum=2),
    )),
    Field("lvm", TABLE, children=tuple(
        Field(k, NUM, minimum=0) for k in ("hdsize", "swapsize", "maxroot", "maxvz", "minfree"))),
    Field("btrfs", TABLE, children=(
        Field("raid", STR, enum=tuple(R.BTRFS_RAID)),
        Field("compress", STR), Field("hdsize", NUM, minimum=2),
    )),
))
_NODE_KEYS: tuple[Field, ...] = (
    Field("country", STR), Field("timezone", STR), Field("keyboard", STR),
    Field("mailto", STR), Field("domain", STR),
    Field("network_source", STR, enum=("from-answer", "from-dhcp")),
    Field("gateway", STR), Field("dns", STR), Field("network_filter", MAP),
    Field("root_ssh_keys", STRS), Field("reboot_on_error", BOOL),
    Field("first_boot_ordering", STR, enum=R.ORDERINGS),
    _DISK,
)
FORMAT: tuple[Field, ...] = (
    Field("installer", TABLE, required=True, children=_NODE_KEYS + tuple(
        Field(k, STR) for k in PASSWORD_SOURCES)),
)


@dataclass(frozen=True)
class Settings:
    """One node's installer settings: merged values and where each came from (key paths)."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]
    source: str
    password: Mapping[str, str] = field(default_factory=dict)  # the chosen password source

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def origin(self, key: str) -> str:
        return f"{self.source}: {self.origins.get(key, 'installer.' + key)}"


def load(path: str | os.PathLike[str] | None, plan: ClusterPlan, node: str) -> Settings:
    """The settings for NODE; no file means empty settings (everything must then come from
    options, and the answer's checks say what is missing)."""
    if path is None:
        return Settings(values={}, origins={}, source="(no --installer file)")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read installer settings {source}: "
                        f"{getattr(exc, 'strerror', None) or exc}",
                        code="installer-settings-unreadable") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}",
                        code="installer-settings-invalid") from None
    findings = _check(raw, plan)
    if findings:
        where = key_lines(text)
        raise AnswerFileInvalid([_locate(f, where, source) for f in findings], source=source)
    return _merge(raw["installer"], node, source)


def _locate(f: Finding, where: dict[str, int], source: str) -> Finding:
    line = line_of(where, f.subject)
    prefix = f"{source}:{line}: " if line else f"{source}: "
    return Finding(f.code, f.severity, prefix + f.message, f.subject, f.check,
                   {**f.payload, "line": line}, f.remedy)


def _check(raw: dict[str, Any], plan: ClusterPlan) -> list[Finding]:
    table = raw.get("installer")
    nodes = table.get("nodes", {}) if isinstance(table, dict) else {}
    base = dict(raw)
    if isinstance(table, dict):
        base["installer"] = {k: v for k, v in table.items() if k != "nodes"}
    _, out = check(base, FORMAT, STYLE)
    if not isinstance(nodes, dict):
        return out + [fail("installer-settings-type-invalid", "expected a table of nodes",
                           "installer.nodes", remedy="write [installer.nodes.NAME] tables")]
    for name, node_table in nodes.items():
        path = f"installer.nodes.{name}"
        if not plan.has_node(name):
            out.append(fail("installer-settings-node-unknown", f"node {name!r} is not in the "
                            "cluster answer file", path, remedy="known nodes: " +
                            ", ".join(n.name for n in plan.nodes)))
        elif not isinstance(node_table, dict):
            out.append(fail("installer-settings-type-invalid", "expected a table", path))
        else:
            out += check(node_table, _NODE_KEYS, STYLE, path)[1]
    return out


def _merge(table: dict[str, Any], node: str, source: str) -> Settings:
    """Per-node keys win. Choosing disks or a filesystem for a node replaces the shared choice
    of the same kind, so a node's filter never collides with the shared disk_list."""
    values = {k: v for k, v in table.items() if k not in ("nodes", *PASSWORD_SOURCES)}
    origins = {k: f"installer.{k}" for k in values}
    disk = dict(values.get("disk", {}))
    disk_origins = {k: f"installer.disk.{k}" for k in disk}
    mine = table.get("nodes", {}).get(node, {})
    for key, value in mine.items():
        if key != "disk":
            values[key], origins[key] = value, f"installer.nodes.{node}.{key}"
    own_disk = mine.get("disk", {})
    if {"disk_list", "filter"} & own_disk.keys():
        for k in ("disk_list", "filter"):
            disk.pop(k, None)
    if "filesystem" in own_disk:
        for k in ("zfs", "lvm", "btrfs"):
            disk.pop(k, None)
    for key, value in own_disk.items():
        disk[key], disk_origins[key] = value, f"installer.nodes.{node}.disk.{key}"
    if disk:
        values["disk"] = disk
    origins.update({f"disk.{k}": v for k, v in disk_origins.items()})
    password = {k: table[k] for k in PASSWORD_SOURCES if k in table}
    return Settings(values=values, origins=origins, source=source, password=password)


# -- the root password ---------------------------------------------------------------------------

def root_password_hash(settings: Settings, *, password_file: str | None = None,
                       password_env: str | None = None,
                       environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(crypt hash or None, where it came from). Options win over the settings file; two
    sources at the same level are refused rather than guessed between."""
    given = {k: v for k, v in (("--root-password-file", password_file),
                               ("--root-password-env", password_env)) if v}
    level, where = (given, "option") if given else (dict(settings.password), settings.source)
    if len(level) > 1:
        raise UserError(f"{where}: give one root password source, not {', '.join(level)}",
                        code="installer-password-conflict")
    if not level:
        return None, "none"
    (key, value), = level.items()
    if key == "root_password_hashed":
        return value, f"{settings.source}: installer.root_password_hashed"
    from_file = key.replace("-", "_").endswith("_file")
    if not from_file and not ENV_NAME.match(value):
        raise UserError(f"{key} must be the NAME of an environment variable",
                        code="installer-password-env-invalid")
    target = JoinTarget(password_file=value) if from_file else JoinTarget(password_env=value)
    clear = resolve_password(target, environ)
    if not R.PASSWORD_MIN <= len(clear) <= R.PASSWORD_MAX:
        raise UserError(f"the root password from {key} {value} must be {R.PASSWORD_MIN}.."
                        f"{R.PASSWORD_MAX} characters (the installer's rule)",
                        code="installer-password-length")
    return hash_password(clear), f"{key} {value} (hashed)"


def hash_password(clear: str) -> str:
    """SHA-512 crypt via `openssl passwd -6`; the password goes through stdin, never argv."""
    try:
        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=clear + "\n",
                              capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise OperationFailed("openssl is not installed; cannot hash the root password",
                              code="openssl-missing",
                              remedy="install openssl, or give root_password_hashed") from None
    hashed = done.stdout.strip()
    if done.returncode != 0 or not hashed.startswith("$6$"):
        raise OperationFailed(f"openssl passwd failed: {done.stderr.strip()[:200]}",
                              code="openssl-failed")
    return hashed
