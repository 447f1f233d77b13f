"""A fleet: several clusters described by one Ansible inventory, checked together.

An inventory names one group per cluster under the parent group `pvestrap_clusters`. Group
variables hold the answer file's tables (`pvestrap_cluster`, `pvestrap_links`,
`pvestrap_datacenter`, `pvestrap_preflight`, `pvestrap_join`, also set on the parent or `all`
for every cluster); each host's `pvestrap_node` is its [[nodes]] entry (name: the inventory host
name's first label unless given; link0..link7; nodeid optional). Each group becomes an answer
file, rendered here and validated by loading it back, so a bad inventory is reported with the
answer file's key paths and lines, before any node is touched.

Then what no single cluster can see (the Proxmox VE admin guide, "Cluster Manager": cluster
names must be unique where clusters share a network):
- the same cluster name in two groups (`fleet-cluster-name-duplicate`),
- a host listed in two cluster groups (`fleet-node-in-two-clusters`),
- one address on two clusters' links (`fleet-address-duplicate`), and link networks that
  overlap without being the same network (`fleet-network-overlap`); clusters on the very same
  network are fine when their names differ (`fleet-network-shared`, info).

The input is `ansible-inventory --list --export` (group variables stay on their groups).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pvestrap.answer_export import dumps_document
from pvestrap.answers import loads
from pvestrap.errors import PvestrapError, UserError
from pvestrap.findings import Finding, Severity, fail, info
from pvestrap.plan import ClusterPlan

PARENT = "pvestrap_clusters"
TABLES = ("cluster", "links", "join", "datacenter", "preflight")


@dataclass(frozen=True)
class ClusterGroup:
    """One inventory group: its hosts, the answer file rendered from it, and the plan (None when
    the answer file is invalid; `error` then says why, with key paths and lines)."""

    group: str
    hosts: tuple[str, ...]
    answers: str
    plan: ClusterPlan | None = None
    error: PvestrapError | None = None

    @property
    def valid_plan(self) -> ClusterPlan:
        """The plan, for code that takes valid groups only (a ValueError for an invalid one)."""
        if self.plan is None:
            raise ValueError(f"group {self.group} has no valid plan: {self.error}")
        return self.plan



def cluster_groups(export: Mapping[str, Any], parent: str = PARENT) -> list[ClusterGroup]:
    """Every child group of PARENT as an answer file and, when it is valid, a plan."""
    if not isinstance(export, Mapping) or not isinstance(export.get(parent), Mapping):
        raise UserError(f"the inventory has no group {parent!r}", code="fleet-parent-missing",
                        remedy=f"put one group per cluster under a group named {parent}")
    names = list(export[parent].get("children") or ())
    if not names:
        raise UserError(f"group {parent!r} has no cluster groups", code="fleet-empty",
                        remedy=f"add one child group per cluster under {parent}")
    hostvars = (export.get("_meta") or {}).get("hostvars") or {}
    inherited = {**_vars(export, "all"), **_vars(export, parent)}
    return [_group(name, export, {**inherited, **_vars(export, name)}, hostvars)
            for name in names]


def _vars(export: Mapping[str, Any], group: str) -> dict[str, Any]:
    return dict((export.get(group) or {}).get("vars") or {})


def _group(name: str, export: Mapping[str, Any], gvars: Mapping[str, Any],
           hostvars: Mapping[str, Any]) -> ClusterGroup:
    hosts = tuple((export.get(name) or {}).get("hosts") or ())
    doc: dict[str, Any] = {t: gvars.get(f"pvestrap_{t}") for t in TABLES}
    doc["nodes"] = [_node(host, (hostvars.get(host) or {}).get("pvestrap_node")) for host in hosts]
    source = f"inventory group {name} (as an answer file)"
    try:
        text = dumps_document({k: doc[k] for k in ("cluster", "links", "nodes", "join",
                                                   "datacenter", "preflight")})
    except TypeError as exc:
        err = UserError(f"{source}: a value cannot be written as TOML: {exc}",
                        code="fleet-value-invalid", remedy="use strings, numbers, lists and "
                        "mappings in pvestrap_* variables")
        return ClusterGroup(name, hosts, "", None, err)
    try:
        return ClusterGroup(name, hosts, text, loads(text, source=source))
    except UserError as exc:
        return ClusterGroup(name, hosts, text, None, exc)


def _node(host: str, given: Any) -> dict[str, Any]:
    node = dict(given) if isinstance(given, Mapping) else {}
    return {"name": node.pop("name", host.split(".")[0]), **node}


# -- what only the fleet can see -------------------------------------------------------------------

def fleet_findings(groups: Sequence[ClusterGroup]) -> list[Finding]:
    out = _duplicate_names(groups) + _shared_hosts(groups) + _address_clashes(groups)
    if any(f.severity is Severity.FAIL for f in out):
        return out
    return out + [Finding("fleet-consistent", Severity.PASS,
                           f"{len(groups)} clusters: unique names, no host in two clusters, "
                           "no address or network clash", check="fleet")]


def _duplicate_names(groups: Sequence[ClusterGroup]) -> list[Finding]:
    by_name: dict[str, list[str]] = {}
    for g in groups:
        if g.plan is not None:
            by_name.setdefault(g.plan.cluster_name, []).append(g.group)
    return [fail("fleet-cluster-name-duplicate",
                 f"cluster name {name!r} is used by groups {' and '.join(owners)}",
                 ", ".join(owners), check="fleet", payload={"name": name, "groups": owners},
                 remedy="give every cluster its own name (pvestrap_cluster.name): clusters "
                        "that share a network must have unique names")
            for name, owners in by_name.items() if len(owners) > 1]


def _shared_hosts(groups: Sequence[ClusterGroup]) -> list[Finding]:
    by_host: dict[str, list[str]] = {}
    for g in groups:
        for host in g.hosts:
            by_host.setdefault(host, []).append(g.group)
    return [fail("fleet-node-in-two-clusters",
                 f"host {host} is listed in groups {' and '.join(owners)}", host, check="fleet",
                 payload={"host": host, "groups": owners},
                 remedy="a node belongs to one cluster: remove it from all groups but one")
            for host, owners in by_host.items() if len(owners) > 1]


def _address_clashes(groups: Sequence[ClusterGroup]) -> list[Finding]:
    valid = [g for g in groups if g.plan is not None]
    out: list[Finding] = []
    for a, b in itertools.combinations(valid, 2):
        mine = {addr: n.name for n in a.valid_plan.nodes for addr in n.addresses.values()}
        for node in b.valid_plan.nodes:
            for addr in node.addresses.values():
                if addr in mine:
                    out.append(fail(
                        "fleet-address-duplicate", f"address {addr} is used by {mine[addr]} "
                        f"(group {a.group}) and {node.name} (group {b.group})", addr,
                        check="fleet", payload={"address": addr, "groups": [a.group, b.group]},
                        remedy="give every node of the fleet its own link addresses"))
        out += _networks(a, b)
    return out


def _networks(a: ClusterGroup, b: ClusterGroup) -> list[Finding]:
    out = []
    for la in a.valid_plan.links:
        for lb in b.valid_plan.links:
            if la.network is None or lb.network is None:
                continue  # a link without a network: its addresses are compared above
            na = ipaddress.ip_network(la.network, strict=False)
            nb = ipaddress.ip_network(lb.network, strict=False)
            if na.version != nb.version or not na.overlaps(nb):
                continue
            where = f"{a.group} link{la.number} {na} / {b.group} link{lb.number} {nb}"
            payload = {"groups": [a.group, b.group], "networks": [str(na), str(nb)]}
            if na == nb:
                out.append(info("fleet-network-shared", f"{na} carries both clusters (their "
                                "names must differ)", where, check="fleet", payload=payload))
            else:
                out.append(fail("fleet-network-overlap", f"{na} and {nb} overlap but differ",
                                where, check="fleet", payload=payload,
                                remedy="use the same network for both, or networks that do "
                                       "not overlap"))
    return out


def invalid_findings(groups: Sequence[ClusterGroup]) -> list[Finding]:
    """One FAIL per invalid group, its answer-file problems in the payload."""
    out = []
    for g in groups:
        if g.error is not None:
            out.append(fail("fleet-group-invalid", g.error.render(), g.group, check="fleet",
                            payload={"group": g.group}, remedy="fix the group's pvestrap_* "
                            "variables (key paths and lines refer to its rendered answer file)"))
    return out
