"""The installer's own rules, applied to installer settings: every node's answer.toml is
rendered from the settings and checked like any answer.toml, and each problem is named by the
setting behind it (with its line). The cluster answer file's [installer] is checked here when the
file is loaded; `--installer FILE` (pvestrap iso answer/prepare) is loaded and checked here too.
Problems that only mean "not given yet" (a missing mail address, no disks) are left to
`pvestrap iso answer`, where the settings are complete.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import replace
from typing import Mapping

from pvestrap.answer_schema import INSTALLER_KEYS
from pvestrap.errors import AnswerFileInvalid, UserError, ValidationFailed
from pvestrap.findings import Finding, Severity, fail
from pvestrap.inputs import read_input
from pvestrap.installer.answer import render
from pvestrap.installer.settings import (CLUSTER, FILE_FORMAT, FILE_KEYS, PASSWORD_SOURCES, STYLE,
                                         Layer, Settings, check_layers, merge, thaw)
from pvestrap.plan import ClusterPlan, Node, name_problem
from pvestrap.toml_lines import key_lines, line_of
from pvestrap.toml_schema import Key, check

# Problems that say a key is not given (yet): the other file or the options may still give it.
_INCOMPLETE = ("installer-key-missing", "installer-password-missing", "installer-disks-missing",
               "installer-raid-missing")
_CHECK_HASH = "$6$pvestrap$check"  # stands in for the password while checking the settings


def _targets(keys: tuple[Key, ...], prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for key in keys:
        out += [(key.target, prefix + key.name)] if key.target else []
        out += _targets(key.children, f"{prefix}{key.name}.")
    return out


# answer.toml key -> setting key path, longest first (disk-setup.zfs before disk-setup)
_SETTING_AT = tuple(sorted(_targets(INSTALLER_KEYS), key=lambda pair: -len(pair[0])))


# -- the cluster file's [installer] ----------------------------------------------------------------

def plan_problems(plan: ClusterPlan) -> list[Finding]:
    """Every problem of plan.installer, named by its TOML key path."""
    if not isinstance(plan.installer, Mapping):
        return [fail(STYLE.code("type-invalid"), "expected a table", "installer")]
    layers, out = check_layers(thaw(plan.installer), INSTALLER_KEYS, plan, CLUSTER)
    return out + _rule_problems(plan, layers, CLUSTER)


def cluster_layers(plan: ClusterPlan) -> list[Layer]:
    """The layers of a plan that passed validation."""
    if plan.installer is None:
        return []
    return check_layers(thaw(plan.installer), INSTALLER_KEYS, plan, CLUSTER)[0]


# -- the --installer file ------------------------------------------------------------------------

def load(path: str | os.PathLike[str] | None, plan: ClusterPlan, node: str) -> Settings:
    """The settings for NODE: the cluster file's [installer], overridden key by key by the
    --installer file when one is given."""
    layers = cluster_layers(plan)
    if path is None:
        return merge(layers, node, CLUSTER)
    source = str(path)
    data = read_input(path, "installer settings file", code="installer-settings-unreadable")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text", code="installer-settings-unreadable",
                        remedy="save the file as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source}: not valid TOML: {exc}",
                        code="installer-settings-invalid") from None
    table = raw.get("installer")
    ok = isinstance(table, dict)
    _, findings = check({k: {} if k == "installer" and ok else v for k, v in raw.items()},
                        FILE_FORMAT, STYLE)
    mine, more = check_layers(table if isinstance(table, dict) else {}, FILE_KEYS, plan, source)
    shared = dict(mine[0].table)
    password = {k: shared.pop(k) for k in PASSWORD_SOURCES if k in shared}
    mine[0] = replace(mine[0], table=shared)
    findings += more + _rule_problems(plan, layers + mine, source)
    if findings:
        where = key_lines(text)
        raise AnswerFileInvalid([_locate(f, where, source) for f in findings], source=source)
    return merge(layers + mine, node, source, password)


def _locate(f: Finding, where: dict[str, int], source: str) -> Finding:
    line = line_of(where, f.subject)
    prefix = f"{source}:{line}: " if line else f"{source}: "
    return replace(f, message=prefix + f.message, payload={**f.payload, "line": line})


def _rule_problems(plan: ClusterPlan, layers: list[Layer], mine: str) -> list[Finding]:
    """The installer's rules, on every node's answer.toml rendered from the layers (and from
    the shared layers alone, so a shared value every node overrides is checked too). Each
    problem is named by the setting of SOURCE that caused it, once, with the nodes it hits
    where those are not all nodes."""
    found: dict[tuple[str, str], tuple[Finding, list[str]]] = {}
    nodes = [n for n in plan.nodes if name_problem(n.name) is None]
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


