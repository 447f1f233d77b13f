"""Installer settings: what Proxmox's automated installer needs beyond the cluster plan.

Country, time zone, mail address, DNS domain, gateway, DNS server, the management NIC and the disk
layout live in the cluster answer file's optional [installer] table (pvestrap.answer_schema defines
the keys), with per-node overrides under [installer.nodes.NAME]. `--installer FILE` takes the same
keys under [installer] as an override, plus a root password source (that file never goes into the
hook): a crypt(3) hash, or a file or environment variable whose password is hashed with
`openssl passwd -6` at build time and then forgotten.

Layers, each later one winning key by key: the cluster file's [installer], its
[installer.nodes.NAME], the file's [installer], the file's [installer.nodes.NAME].

Both files are checked here, by one procedure: types, enums and ranges (the enum and range of the
answer.toml key each setting becomes), then the installer's own rules, by rendering every node's
answer.toml and naming the setting behind each problem. Problems that only mean "not given yet"
(a missing mail address, no disks) are left to `pvestrap iso answer`, where the settings are
complete.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from pvestrap import answer_schema as S
from pvestrap.answer_schema import ENV_NAME, join_path, key_lines, line_of
from pvestrap.answers import AnswerFileInvalid, resolve_password
from pvestrap.errors import OperationFailed, UserError, ValidationFailed
from pvestrap.findings import Finding, Severity, fail
from pvestrap.iso import installer_rules as R
from pvestrap.iso.toml_schema import MAP, STR, STRS, TABLE, Field, Style, check
from pvestrap.plan import NAME_RE, ClusterPlan, JoinTarget, Node

STYLE = Style(prefix="installer-settings", separator="_")
PASSWORD_SOURCES = ("root_password_hashed", "root_password_file", "root_password_env")
CLUSTER = "cluster answer file"
# Problems that say a key is not given (yet): the other file or the options may still give it.
_INCOMPLETE = ("installer-key-missing", "installer-password-missing", "installer-disks-missing",
               "installer-raid-missing")
_CHECK_HASH = "$6$pvestrap$check"  # stands in for the password while checking the settings


def target_field(target: str) -> Field:
    """The installer's answer.toml field at a dotted path such as disk-setup.zfs.raid."""
    fields, spec = R.FORMAT, None
    for part in target.split("."):
        spec = next(f for f in fields if f.name == part)
        fields = spec.children
    if spec is None:
        raise KeyError(target)
    return spec


def target_rules(target: str) -> dict[str, Any]:
    """The enum and range the installer's rules give the answer.toml key TARGET."""
    spec = target_field(target)
    out: dict[str, Any] = {"enum": list(spec.enum)} if spec.enum else {}
    out.update({k: v for k, v in (("minimum", spec.minimum), ("maximum", spec.maximum))
                if v is not None})
    return out


def _field(key: S.Key) -> Field:
    rules = S.rules_of(key)
    return Field(key.name, key.kind, children=tuple(_field(k) for k in key.children),
                 enum=tuple(rules.get("enum", ())), minimum=rules.get("minimum"),
                 maximum=rules.get("maximum"), doc=key.doc)


def _targets(keys: tuple[S.Key, ...], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key in keys:
        out += [(key.target, prefix + key.name)] if key.target else []
        out += _targets(key.children, f"{prefix}{key.name}.")
    return out


NODE_FIELDS: tuple[Field, ...] = tuple(_field(k) for k in S.INSTALLER_KEYS)
FILE_FIELDS = NODE_FIELDS + tuple(Field(k, STR) for k in PASSWORD_SOURCES)
FILE_FORMAT: tuple[Field, ...] = (Field("installer", TABLE, required=True, children=FILE_FIELDS),)
# answer.toml key -> setting key path, longest first (disk-setup.zfs before disk-setup)
_SETTING_AT = tuple(sorted(_targets(S.INSTALLER_KEYS), key=lambda pair: -len(pair[0])))


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


# -- the cluster file's [installer] (plan.validate) ----------------------------------------------

def plan_problems(plan: ClusterPlan) -> list[Finding]:
    """Every problem of plan.installer, named by its TOML key path."""
    if not isinstance(plan.installer, Mapping):
        return [fail(STYLE.code("type-invalid"), "expected a table", "installer")]
    layers, out = _layers(_thaw(plan.installer), NODE_FIELDS, plan, CLUSTER)
    return out + _rule_problems(plan, layers, CLUSTER)


def cluster_layers(plan: ClusterPlan) -> list[Layer]:
    """The layers of a plan that passed validation."""
    if plan.installer is None:
        return []
    return _layers(_thaw(plan.installer), NODE_FIELDS, plan, CLUSTER)[0]


# -- the --installer file ------------------------------------------------------------------------

def load(path: str | os.PathLike[str] | None, plan: ClusterPlan, node: str) -> Settings:
    """The settings for NODE: the cluster file's [installer], overridden key by key by the
    --installer file when one is given."""
    layers = cluster_layers(plan)
    if path is None:
        return merge(layers, node, CLUSTER)
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
    table = raw.get("installer")
    ok = isinstance(table, dict)
    _, findings = check({k: {} if k == "installer" and ok else v for k, v in raw.items()},
                        FILE_FORMAT, STYLE)
    mine, more = _layers(table if ok else {}, FILE_FIELDS, plan, source)
    shared = dict(mine[0].table)
    password = {k: shared.pop(k) for k in PASSWORD_SOURCES if k in shared}
    mine[0] = replace(mine[0], table=shared)
    findings += more + _rule_problems(plan, layers + mine, source)
    if findings:
        where = key_lines(text)
        raise AnswerFileInvalid([_locate(f, where, source) for f in findings], source=source)
    return merge(layers + mine, node, source, password)


def _shared(table: Any) -> Any:
    return {k: v for k, v in table.items() if k != "nodes"} if isinstance(table, dict) else table


def _locate(f: Finding, where: dict[str, int], source: str) -> Finding:
    line = line_of(where, f.subject)
    prefix = f"{source}:{line}: " if line else f"{source}: "
    return replace(f, message=prefix + f.message, payload={**f.payload, "line": line})


# -- checking ------------------------------------------------------------------------------------

def _layers(table: dict[str, Any], fields: tuple[Field, ...], plan: ClusterPlan,
            source: str) -> tuple[list[Layer], list[Finding]]:
    """Type-check one file's [installer]: its shared layer first, then one per node table."""
    shared, out = check(_shared(table), fields, STYLE, "installer")
    layers = [Layer(_usable(shared, fields, "installer", out), "installer", source)]
    nodes = table.get("nodes", {})
    if not isinstance(nodes, dict):
        return layers, out + [fail(STYLE.code("type-invalid"), "expected a table of nodes",
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
            clean, more = check(node_table, NODE_FIELDS, STYLE, path)
            out += more
            layers.append(Layer(_usable(clean, NODE_FIELDS, path, out), path, source, name))
    return layers, out


def _usable(table: Mapping[str, Any], fields: tuple[Field, ...], path: str,
            out: list[Finding]) -> dict[str, Any]:
    """TABLE without empty strings, filters and disk lists (they would silently mean "not
    set") and control characters (no setting has them), each reported."""
    kept: dict[str, Any] = {}
    kinds = {f.name: f for f in fields}
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


def _rule_problems(plan: ClusterPlan, layers: list[Layer], mine: str) -> list[Finding]:
    """The installer's rules, on every node's answer.toml rendered from the layers (and from
    the shared layers alone, so a shared value every node overrides is checked too). Each
    problem is named by the setting of SOURCE that caused it, once, with the nodes it hits
    where those are not all nodes."""
    found: dict[tuple[str, str], tuple[Finding, list[str]]] = {}
    nodes = [n for n in plan.nodes if isinstance(n.name, str) and NAME_RE.match(n.name)]
    for node in nodes:
        applying = [la for la in layers if la.node in (None, node.name)]
        views = [applying] + ([[la for la in applying if la.node is None]]
                              if any(la.node for la in applying) else [])
        for view in views:
            settings = merge(view, node.name, mine)
            for f in _render_failures(plan, node, settings):
                named = _named(f, plan, node, settings, mine if view is applying else None)
                if named is not None:
                    entry = found.setdefault((named.code, named.subject or ""), (named, []))
                    if node.name not in entry[1]:
                        entry[1].append(node.name)
    return [_for_nodes(f, hit, [n.name for n in nodes]) for f, hit in found.values()]


def _render_failures(plan: ClusterPlan, node: Node, settings: Settings) -> list[Finding]:
    from pvestrap.iso.installer_answer import render  # it builds on this module

    try:
        render(plan, node.name, settings, _CHECK_HASH)
    except ValidationFailed as exc:
        return [f for f in exc.findings if f.severity is Severity.FAIL]
    return []


def _named(f: Finding, plan: ClusterPlan, node: Node, settings: Settings,
           mine: str | None) -> Finding | None:
    """The finding with the setting behind it as subject; None when no setting of MINE is
    (the cluster file's other keys are checked by plan.validate). MINE is None for a view of
    the shared settings alone: they speak for themselves, not for any node's management."""
    subject = f.subject or ""
    if subject.startswith("network.cidr"):
        if f.code != "installer-key-missing" or settings.source != CLUSTER or mine is None:
            return None
        return fail("installer-management-missing", f"node {node.name} is installed with "
                    "network_source from-answer: it needs its management address",
                    f"nodes[{plan.nodes.index(node)}].management", payload={"node": node.name},
                    remedy='add management = "ADDRESS/PREFIX" to the node, or set '
                           'installer.network_source = "from-dhcp"')
    if f.code in _INCOMPLETE:
        return None
    path = _setting_path(subject, settings, settings.source)
    if path is None:
        return None
    told = f"set it through {f.payload.get('from')}"
    remedy = (f.remedy or "").removeprefix(told).removeprefix("; ") or None
    payload = {k: v for k, v in f.payload.items() if k not in ("from", "line")}
    return replace(f, subject=path, remedy=remedy, payload=payload)


def _setting_path(subject: str, settings: Settings, mine: str) -> str | None:
    """answer.toml path -> the TOML path of the setting of MINE that gave the value."""
    match = next(((t, k) for t, k in _SETTING_AT if subject == t or
                  subject.startswith((t + ".", t + "["))), None)
    if match is None:
        return None
    target, key = match
    rest = subject[len(target):]
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in settings.origins:
            if settings.sources.get(prefix, settings.source) != mine:
                return None
            return ".".join([settings.origins[prefix], *parts[n:]]) + rest
    return None


def _for_nodes(f: Finding, hit: list[str], every: list[str]) -> Finding:
    payload = {**f.payload, "nodes": hit}
    if len(hit) == len(every) or (f.subject or "").startswith(("installer.nodes.", "nodes[")):
        return replace(f, payload=payload)
    return replace(f, message=f"{f.message} (node{'s' if len(hit) > 1 else ''} "
                   f"{', '.join(hit)})", payload=payload)


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


def _thaw(value: Any) -> Any:
    """The plan's read-only mappings as the plain dicts and lists the checks walk."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


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
    try:
        clear = resolve_password(target, environ)
    except UserError as exc:  # it names the join key it reads for joining; name ours
        told = "(join.password_file)" if from_file else "(join.password_env)"
        raise UserError(exc.message.replace(told, f"({key})"), code=exc.code,
                        remedy=exc.remedy) from None
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
