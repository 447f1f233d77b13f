"""The doctor's checks read the cluster through this: every node's facts, parsed once.

A `DoctorView` holds one `NodeView` per node that answered (one, on a single-node run; every
node with --mesh) and the nodes that did not answer. Parsing failures are kept per node and
per source (`errors`), so a check reports "could not read X on node Y" instead of crashing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pvestrap.checks.localsys import Machine
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import (
    KnetLinkStats,
    LinksStatus,
    QuorumStatus,
    StatusUnparsable,
    parse_cfgtool_status,
    parse_knet_stats,
    parse_quorum_status,
)
from pvestrap.corosync.tree import ConfParseError
from pvestrap.doctor import facts as F

_CMAP = re.compile(r"^(\S+) \((\w+)\) = (.*)$")


def cmap_values(text: str) -> dict[str, str]:
    """`corosync-cmapctl` key (type) = value lines -> {key: value}."""
    out = {}
    for line in text.splitlines():
        m = _CMAP.match(line.strip())
        if m:
            out[m.group(1)] = m.group(3)
    return out


@dataclass(frozen=True)
class KnetSample:
    t: float
    stats: tuple[KnetLinkStats, ...]
    links: LinksStatus | None


@dataclass
class NodeView:
    facts: Mapping[str, Any]
    errors: dict[str, str] = field(default_factory=dict)

    def _text(self, argv: tuple[str, ...]) -> str | None:
        out = self.facts.get("commands", {}).get(" ".join(argv)) or {}
        if not (out.get("stdout") or "").strip():
            self.errors.setdefault(" ".join(argv), out.get("stderr") or
                                   f"no output (exit {out.get('rc')})")
            return None
        return out["stdout"]

    def file(self, path: str) -> str | None:
        return (self.facts.get("files") or {}).get(path)

    def _conf(self, path: str) -> CorosyncConf | None:
        text = self.file(path)
        if text is None:
            return None
        try:
            return CorosyncConf.parse(text, path)
        except ConfParseError as exc:
            self.errors[path] = exc.message
            return None

    @cached_property
    def conf(self) -> CorosyncConf | None:
        """/etc/corosync/corosync.conf: what corosync on this node reads."""
        return self._conf(F.COROSYNC_CONF)

    @cached_property
    def pve_conf(self) -> CorosyncConf | None:
        """/etc/pve/corosync.conf (PVE only): the cluster-wide copy pmxcfs syncs."""
        return self._conf(F.PVE_COROSYNC_CONF)

    @cached_property
    def quorum(self) -> QuorumStatus | None:
        text = self._text(F.QUORUM)
        try:
            return parse_quorum_status(text) if text else None
        except StatusUnparsable as exc:
            self.errors[" ".join(F.QUORUM)] = exc.message
            return None

    @cached_property
    def runtime_version(self) -> int | None:
        value = cmap_values(self._text(F.RUNTIME_VERSION) or "").get("totem.config_version")
        return int(value) if value and value.isdigit() else None

    def runtime(self, argv: tuple[str, ...], key: str) -> int | None:
        value = cmap_values(self._text(argv) or "").get(key)
        return int(value) if value and value.isdigit() else None

    @cached_property
    def nodeid(self) -> int | None:
        found = self.runtime(F.VOTEQUORUM, "runtime.votequorum.this_node_id")
        return found if found is not None else (self.quorum.node_id if self.quorum else None)

    @cached_property
    def name(self) -> str:
        """The node's name in the nodelist (by its running nodeid), else its hostname."""
        for node in (self.conf.nodes if self.conf else ()):
            if self.nodeid is not None and node.nodeid == self.nodeid and node.name:
                return node.name
        return str(self.facts.get("hostname") or "this-node")

    @cached_property
    def machine(self) -> Machine | None:
        data = self.facts.get("machine")
        return Machine.from_dict(data) if data else None

    @cached_property
    def window(self) -> tuple[KnetSample, ...]:
        out = []
        for raw in self.facts.get("window") or ():
            knet_text = (raw.get("knet") or {}).get("stdout") or ""
            links_text = (raw.get("links") or {}).get("stdout") or ""
            try:
                stats = parse_knet_stats(knet_text) if knet_text.strip() else ()
                links = parse_cfgtool_status(links_text) if links_text.strip() else None
            except StatusUnparsable as exc:
                self.errors["knet window"] = exc.message
                continue
            out.append(KnetSample(float(raw.get("t", 0.0)), stats, links))
        return tuple(out)


def view_of(ctx: Any) -> DoctorView:
    """The DoctorView a doctor check reads (Context.options["doctor"])."""
    return ctx.options["doctor"]


@dataclass
class DoctorView:
    """local: the node the run started on (its conf names the cluster); unanswered: node ->
    why it gave no facts (mesh)."""

    nodes: dict[str, NodeView]
    local: str
    mesh: bool = False
    unanswered: dict[str, str] = field(default_factory=dict)
    latency_ms: float = 2.0

    @classmethod
    def of(cls, facts_by_node: Mapping[str, Mapping[str, Any]], local: str | None = None,
           mesh: bool = False, unanswered: Mapping[str, str] | None = None,
           latency_ms: float = 2.0) -> DoctorView:
        views = {}
        for facts in facts_by_node.values():
            view = NodeView(facts)
            views[view.name] = view
        first = local if local in views else next(iter(views), local or "this-node")
        return cls(views, first, mesh, dict(unanswered or {}), latency_ms)

    @property
    def me(self) -> NodeView | None:
        return self.nodes.get(self.local)

    @property
    def conf(self) -> CorosyncConf | None:
        """The cluster's configuration as this node has it (PVE's cluster-wide copy first)."""
        me = self.me
        if me is None:
            return None
        return me.pve_conf or me.conf

    def names_by_id(self) -> dict[int, str]:
        conf = self.conf
        return {n.nodeid: n.name or f"node{n.nodeid}" for n in (conf.nodes if conf else ())
                if isinstance(n.nodeid, int)}
