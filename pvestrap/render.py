"""Render a node's files from the plan: corosync.conf, datacenter.cfg, /etc/network/interfaces.

Rendering never writes: `render_node` returns the files whose content would change as `Change`
values (path, before, after, mode); `unified_diff` shows one, `write_changes` applies them with
atomic writes. The layouts follow what Proxmox itself writes, so a file we render and a file PVE
rewrites later do not fight over formatting:

- corosync.conf as pve-cluster's writer dumps it (PVE::Corosync::write_conf), written by
  pvestrap.corosync (CorosyncConf.create and the tree's canonical layout): top-level sections
  sorted (logging, nodelist, quorum, totem), keys sorted inside each section, two-space indent, a
  blank line after each top-level section (also after the last), `node` entries sorted by node
  name and `interface` entries by link number, `knet_link_priority` only when non-zero.
- datacenter.cfg as PVE::DataCenterConfig::write_datacenter_config does: the description as
  `#`-prefixed, percent-encoded comment lines, one blank line, then `key: value` lines sorted by
  key; property strings print their default key bare (`migration: secure,network=CIDR`), then the
  other keys sorted; the default mac_prefix is never written.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence
from urllib.parse import unquote

from pvestrap.atomic import atomic_write
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.planned import is_listed_as_planned, places_node
from pvestrap.corosync.tree import ConfParseError
from pvestrap.errors import PvestrapError, UserError
from pvestrap.interfaces import edit_interfaces
from pvestrap.nodefacts import backend_for
from pvestrap.paths import COROSYNC_CONF, DATACENTER_CFG, INTERFACES
from pvestrap.plan import DEFAULT_MAC_PREFIX, ClusterPlan, Datacenter, Node
from pvestrap.system import System

# /etc/pve is pmxcfs: it shows every file as 0640 root:www-data whatever we ask for.
MODES = {COROSYNC_CONF: 0o644, DATACENTER_CFG: 0o640, INTERFACES: 0o644}


@dataclass(frozen=True)
class Change:
    """One file that rendering would change. `before` is None when the file does not exist;
    `writer` names the command that writes it where that is not pvestrap itself (pvecm)."""

    path: str
    before: str | None
    after: str
    mode: int
    writer: str = ""


# -- templates -------------------------------------------------------------------------------------

def _environment():
    """A fresh Jinja2 environment over the packaged templates (no shared module state)."""
    import jinja2

    def load(name: str) -> str:
        return resources.files("pvestrap.templates").joinpath(name).read_text(encoding="utf-8")

    return jinja2.Environment(loader=jinja2.FunctionLoader(load), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              autoescape=False)


def _render(template: str, **context: object) -> str:
    return _environment().get_template(template).render(**context)


# -- corosync.conf ---------------------------------------------------------------------------------

def render_corosync_conf(plan: ClusterPlan, config_version: int | None = None) -> str:
    """corosync.conf for the whole cluster, byte for byte as pve-cluster would write it (the one
    writer is CorosyncConf.create; the plan is validated before any text exists).

    config_version defaults to what pvecm ends at when it builds the cluster: it starts a new
    file at 0 and adds one per write (create: 1, each join: +1), so N nodes give N. A node with
    0 votes gets no quorum_votes line (pvecm addnode leaves it out; corosync counts it as 1).
    """
    version = len(plan.nodes) if config_version is None else config_version
    return CorosyncConf.create(plan, version).text()


def corosync_conf_for(plan: ClusterPlan, node_name: str, before: str | None,
                      cluster: str | None = None) -> str:
    """The corosync.conf NODE has once its own apply is done (written by us or by pvecm).

    - Without CLUSTER, a file that already places the node in the planned cluster
      (pvestrap.corosync.planned) stays as it is: the node is a member; the other nodes' joins
      change it, not its apply.
    - The creator: the cluster as `pvecm create` starts it, this node alone, config_version 1.
    - A joiner: CLUSTER (the corosync.conf its join target has now) with this node added and
      the next config_version, as pvecm addnode and the corosync backend's join write it; a
      CLUSTER that lists the node as planned already (a join killed half-way) as it is. Without
      CLUSTER (render, offline) the cluster is predicted from the plan: the creator and the
      joiners before this node in the plan's order, each join one config_version.
    """
    if cluster is None and before is not None and _places(plan, node_name, before):
        return before
    if plan.role_of(node_name) == "create":
        return render_corosync_conf(replace(plan, nodes=(plan.node(node_name),),
                                            create_node=node_name))
    if cluster is None:
        cluster = render_corosync_conf(replace(plan, nodes=_joined_before(plan, node_name)))
    if is_listed_as_planned(plan, node_name, CorosyncConf.parse(cluster, _CLUSTER_CONF)):
        return cluster
    return joined_conf(plan, (node_name,), cluster)


_CLUSTER_CONF = f"the cluster's {COROSYNC_CONF}"


def joined_conf(plan: ClusterPlan, names: Sequence[str], cluster: str) -> str:
    """CLUSTER's corosync.conf with the planned nodes NAMES added and one config_version more:
    what pvecm addnode writes for one joiner, and the corosync backend for a batch of joiners
    (pvestrap.apply.batch) in one change."""
    conf = CorosyncConf.parse(cluster, _CLUSTER_CONF)
    for name in names:
        node = plan.node(name)
        conf = conf.add_node(node.name, dict(node.addresses), node.votes, node.nodeid)
    return conf.bump_version().canonical()


def _joined_before(plan: ClusterPlan, node_name: str) -> tuple[Node, ...]:
    creator = plan.creator
    earlier = []
    for node in plan.nodes:
        if node.name == node_name:
            break
        if node.name != creator.name:
            earlier.append(node)
    return (creator, *earlier)


def _places(plan: ClusterPlan, node_name: str, text: str) -> bool:
    try:
        conf = CorosyncConf.parse(text, COROSYNC_CONF)
    except ConfParseError:
        return False
    return places_node(plan, node_name, conf)


# -- datacenter.cfg --------------------------------------------------------------------------------

# Property-string keys whose format has a default key (printed bare, first).
_DEFAULT_KEYS = {"migration": "type", "replication": "type"}
_PROPERTY_KEYS = ("migration", "replication", "ha", "next-id", "bwlimit")
_KEY_LINE = re.compile(r"^(\S+?):\s*(.*)$")


@dataclass(frozen=True)
class _DatacenterFile:
    description: str
    entries: Mapping[str, str]


def render_datacenter_cfg(plan: ClusterPlan, existing: str | None) -> str:
    """datacenter.cfg with the plan's options merged over EXISTING.

    Keys the plan does not set are kept with their values. When the merged meaning equals the
    existing file's (e.g. the installer's bare `keyboard: en-us`), the existing text is returned
    unchanged, so an already-right node gets no change at all.
    """
    plan.check()
    current = _parse_datacenter(existing or "")
    merged = _merge_datacenter(current, plan.datacenter)
    if existing is not None and _meaning(current) == _meaning(merged):
        return existing
    lines = merged.description.split("\n")
    while lines and lines[-1] == "":
        lines.pop()  # Perl's split drops trailing empty fields: no empty comment lines at the end
    return _render("datacenter.cfg.j2", description=[_encode_text(line) for line in lines],
                   entries=sorted(merged.entries.items()))


def datacenter_options(plan: ClusterPlan, existing: str | None) -> dict[str, str]:
    """The options `pvesh set /cluster/options` needs to turn EXISTING into what the plan wants:
    key -> value as datacenter.cfg spells it ('description' included), only those that change."""
    plan.check()
    current = _parse_datacenter(existing or "")
    merged = _merge_datacenter(current, plan.datacenter)
    out = {k: v for k, v in sorted(merged.entries.items()) if current.entries.get(k) != v}
    if merged.description.rstrip("\n") != current.description.rstrip("\n"):
        out["description"] = merged.description.rstrip("\n")
    return out


def _parse_datacenter(text: str) -> _DatacenterFile:
    """Comments at column 0 form the description (percent-decoded); other lines are `key: value`."""
    description = ""
    entries: dict[str, str] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        if raw.startswith("#"):
            description += _decode_text(raw[1:]) + "\n"
            continue
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _KEY_LINE.match(line)
        if not match:
            raise UserError(f"datacenter.cfg line {number}: {line!r} is not 'key: value'",
                            code="datacenter-cfg-invalid",
                            remedy="fix or remove that line, then render again")
        entries[match.group(1)] = match.group(2)
    return _DatacenterFile(description, entries)


def _merge_datacenter(current: _DatacenterFile, dc: Datacenter) -> _DatacenterFile:
    entries = dict(current.entries)
    for key, value in _plan_entries(dc).items():
        if isinstance(value, dict):
            # only the plan's sub-keys change: `network` alone keeps an existing `insecure`
            default_key = _DEFAULT_KEYS.get(key)
            merged = _property_dict(entries.get(key, ""), default_key)
            merged.update(value)
            if default_key:
                merged.setdefault(default_key, "secure")  # required when network is given
            value = _property_string(merged, default_key)
        entries[key] = value
    if entries.get("console") == "applet":
        entries["console"] = "html5"  # PVE's writer maps the deprecated applet viewer to html5
    if entries.get("mac_prefix", "").upper() == DEFAULT_MAC_PREFIX:
        del entries["mac_prefix"]  # PVE never writes its own default prefix
    description = current.description if dc.description is None else dc.description
    return _DatacenterFile(description, entries)


def _plan_entries(dc: Datacenter) -> dict[str, str | dict[str, str]]:
    """What the plan sets: plain values, and property strings as dicts of the sub-keys it sets
    (None = not set, so the existing value stays)."""
    out: dict[str, str | dict[str, str]] = {}
    for key in ("keyboard", "language", "console", "email_from", "http_proxy", "mac_prefix",
                "max_workers"):
        value = getattr(dc, key)
        if value is not None:
            out[key] = str(value)
    props: dict[str, Mapping[str, object]] = {
        "migration": {"type": dc.migration_type, "network": dc.migration_network},
        "replication": {"type": dc.replication_type, "network": dc.replication_network},
        "ha": {"shutdown_policy": dc.ha_shutdown_policy},
        "bwlimit": dict(dc.bwlimit),
        "next-id": {"lower": dc.next_id_lower, "upper": dc.next_id_upper},
    }
    for key, values in props.items():
        given = {k: str(v) for k, v in values.items() if v is not None}
        if given:
            out[key] = given
    return out


def _property_string(values: Mapping[str, str], default_key: str | None = None) -> str:
    """`k=v,k=v` as pve-common prints it: the default key's bare value first, then keys sorted."""
    parts = [values[default_key]] if default_key is not None and default_key in values else []
    parts += [f"{k}={v}" for k, v in sorted(values.items()) if k != default_key]
    return ",".join(parts)


def _property_dict(text: str, default_key: str | None) -> dict[str, str]:
    """`secure,network=X` or `type=secure,network=X` -> {"type": "secure", "network": "X"}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if part:
            key, sep, value = part.partition("=")
            out.update({key: value} if sep else {default_key or "": key})
    return out


def _plan_sets_datacenter(dc: Datacenter) -> bool:
    return bool(_plan_entries(dc)) or dc.description is not None


def _meaning(cfg: _DatacenterFile) -> tuple[str, frozenset[tuple[str, object]]]:
    """What PVE would read from the file: equal meanings need no rewrite."""
    entries: set[tuple[str, object]] = set()
    for key, value in cfg.entries.items():
        if key == "mac_prefix" and value.strip().upper() == DEFAULT_MAC_PREFIX:
            continue  # PVE reads a missing prefix as the default
        if key == "console" and value.strip() == "applet":
            value = "html5"
        if key in _PROPERTY_KEYS:
            parsed = _property_dict(value, _DEFAULT_KEYS.get(key))
            entries.add((key, frozenset(parsed.items())))
        else:
            entries.add((key, value.strip()))
    return cfg.description.rstrip("\n"), frozenset(entries)


def _encode_text(line: str) -> str:
    """pve-common's encode_text: percent-encode control bytes, non-ASCII, ':' and '%'."""
    out = []
    for byte in line.encode("utf-8"):
        safe = 0x20 <= byte <= 0x7E and byte not in (0x25, 0x3A)
        out.append(chr(byte) if safe else f"%{byte:02X}")
    return "".join(out)


def _decode_text(text: str) -> str:
    return unquote(text, errors="replace")


# -- a node's changes ------------------------------------------------------------------------------

Reader = Callable[[str], "tuple[str | None, int | None]"]  # path -> (text, mode); None: absent


def render_node(plan: ClusterPlan, node_name: str, root: str | os.PathLike[str] = "/",
                backend: str | None = None) -> list[Change]:
    """NODE_NAME's changes against the files under ROOT (see node_changes); BACKEND None: the
    plan's, or Proxmox VE when ROOT has pvecm or /etc/pve."""
    def exists(path: str) -> bool:
        return os.path.lexists(_under(root, path))

    return node_changes(plan, node_name, lambda path: _read(root, path),
                        backend or backend_for(plan, exists))


def node_changes(plan: ClusterPlan, node_name: str, read: Reader, backend: str,
                 cluster: str | None = None) -> list[Change]:
    """The files NODE_NAME's apply changes, read through READ; only real changes. The one
    source of file contents for `render`, `apply --dry-run` and apply (both backends).

    corosync.conf on every node (corosync_conf_for; CLUSTER: the join target's corosync.conf
    when known); datacenter.cfg only on a Proxmox VE node that creates the cluster (a joiner's
    copy is replaced by the cluster's) and only when the plan sets an option there; interfaces
    only when the node owns stanzas.
    """
    plan.check()
    if not plan.has_node(node_name):
        raise UserError(f"node {node_name!r} is not in the plan",
                        code="node-unknown",
                        remedy=f"use one of {', '.join(n.name for n in plan.nodes)}")
    node = plan.node(node_name)
    wanted = {COROSYNC_CONF: lambda before: corosync_conf_for(plan, node_name, before, cluster)}
    if backend == "pve" and plan.role_of(node_name) == "create" and \
            _plan_sets_datacenter(plan.datacenter):
        wanted[DATACENTER_CFG] = lambda before: render_datacenter_cfg(plan, before)
    if node.interfaces:
        wanted[INTERFACES] = lambda before: edit_interfaces(before or "", node.interfaces)
    changes = []
    for path, produce in wanted.items():
        before, mode = read(path)
        after = produce(before)
        if after != before:
            changes.append(Change(path, before, after, mode if mode is not None else MODES[path]))
    return changes


def fresh_node(path: str) -> tuple[str | None, int | None]:
    """The Reader of a node that has none of the files yet."""
    return None, None


def system_reader(system: System) -> Reader:
    """A Reader over the node's System (what apply and its dry run see)."""
    return lambda path: (system.read_text(path), system.file_mode(path))


def node_change(changes: Iterable[Change], path: str) -> Change | None:
    """The change of PATH among CHANGES (None: that file stays as it is)."""
    return next((change for change in changes if change.path == path), None)


def _under(root: str | os.PathLike[str], path: str) -> Path:
    """PATH under ROOT; refused when a symlink on the way leads out of ROOT (a copy of a node's
    / may hold absolute links that would point into this machine's own /etc)."""
    target = Path(root) / path.lstrip("/")
    real_root = Path(root).resolve()
    if real_root == Path("/"):
        return target
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    real = existing.resolve()
    if real != real_root and real_root not in real.parents:
        raise UserError(f"{target} leads out of {root} (to {real})", code="render-root-escape",
                        remedy=f"replace the symlink {existing} with the file or folder itself")
    return target


def _read(root: str | os.PathLike[str], path: str) -> tuple[str | None, int | None]:
    target = _under(root, path)
    try:
        data = target.read_bytes()
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise UserError(f"cannot read {target}: {exc.strerror or exc}", code="file-unreadable",
                        remedy="check the path and its permissions") from exc
    try:
        return data.decode("utf-8"), mode
    except UnicodeDecodeError as exc:
        raise UserError(f"{target} is not UTF-8 text (byte {exc.start})", code="file-not-text",
                        remedy="fix the file's encoding before rendering over it") from exc


def unified_diff(change: Change) -> str:
    """The change as a unified diff (`/dev/null` as the old side of a new file)."""
    old = change.before.splitlines(keepends=True) if change.before is not None else []
    new = change.after.splitlines(keepends=True)
    fromfile = f"a{change.path}" if change.before is not None else "/dev/null"
    lines = difflib.unified_diff(old, new, fromfile=fromfile, tofile=f"b{change.path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def write_changes(changes: Iterable[Change], root: str | os.PathLike[str]) -> list[str]:
    """Write every change under ROOT, all or nothing; return the written paths.

    ROOT is a copy or mount of a node's /, never this machine's own: changing the live system is
    `pvestrap apply`'s job (preflight, plan, confirm, rollback). Every target is checked before
    the first write (no symlink out of ROOT, the atomic write refuses a symlinked file); each file
    is written atomically with a backup, and when one fails the ones already written get their
    old content back.
    """
    if Path(root).resolve() == Path("/"):
        raise UserError(f"--root {root} is this machine's /: render never writes the live "
                        "system", code="render-root-live",
                        remedy="render into a copy (--root DIR), or change this node with "
                               "`pvestrap apply` (preflight, plan, confirm)")
    pending = [(change, _under(root, change.path)) for change in changes]
    written: list[tuple[Change, Path, bytes | None]] = []
    try:
        for change, target in pending:
            target.parent.mkdir(parents=True, exist_ok=True)
            backup = _backup_of(target)
            if atomic_write(target, change.after, mode=change.mode, error=UserError):
                written.append((change, target, backup))
    except PvestrapError:
        for change, target, backup in reversed(written):
            _put_back(target, change.before, change.mode)
            _put_back(target.with_name(target.name + ".bak"), backup, change.mode)
        raise
    return [str(target) for _, target, _ in written]


def _backup_of(target: Path) -> bytes | None:
    """The content of TARGET.bak before a write replaces it (None: there was none)."""
    bak = target.with_name(target.name + ".bak")
    return bak.read_bytes() if bak.is_file() and not bak.is_symlink() else None


def _put_back(path: Path, content: str | bytes | None, mode: int) -> None:
    if content is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, content, mode=mode, backup=False)
