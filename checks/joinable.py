"""Join preconditions: what pve-cluster's assert_joinable and the cluster side would refuse.

`pvecm add` refuses (all at once, and --force overrides all of them) when the joiner has an
authkey, a corosync.conf, running corosync or guests; the cluster refuses a joiner whose link
set differs from its own, whose address is in use, or when it is not quorate. Running these
first turns a half-done join into a clear report. Whether the link addresses are local is the
nics family's `link-address-missing`, not repeated here.

On the creating node only the corosync.conf check applies: `pvecm create` refuses an existing
one, reuses an existing authkey and keeps its guests.
"""

from __future__ import annotations

import glob
import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import (LIVE, Sources, is_loopback, link_addresses, path_under,
                                      role)
from pvestrap.errors import OperationFailed
from pvestrap.findings import Finding, Severity, fail, passed, warn
from pvestrap.fingerprint import API_PORT, TIMEOUT, fetch_fingerprint
from pvestrap.paths import AUTHKEY, CONF_PATHS

FAMILY = "joinable"
GUEST_GLOBS = {"qemu": ("etc/pve/qemu-server/*.conf", "etc/pve/nodes/*/qemu-server/*.conf"),
               "lxc": ("etc/pve/lxc/*.conf", "etc/pve/nodes/*/lxc/*.conf")}


def _joining(ctx: Context) -> bool:
    """Join checks apply to a joiner, and to a machine checked without a plan (can it join?)."""
    return role(ctx) in ("join", None)


def _not_joining(check: str, ctx: Context) -> list[Finding]:
    return [Finding("join-check-skipped", Severity.SKIP, "this node creates the cluster",
                    ctx.node, check)]


@dataclass(frozen=True)
class AuthkeyCheck:
    id: ClassVar[str] = "join-authkey"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "no corosync authkey on a joining node"

    def run(self, ctx: Context) -> list[Finding]:
        if not _joining(ctx):
            return _not_joining(self.id, ctx)
        path = path_under(ctx.root, AUTHKEY)
        if os.path.lexists(path):
            return [fail("authkey-exists", f"{AUTHKEY} exists: this node looks like (part of) a "
                         "cluster already", ctx.node, check=self.id, payload={"path": AUTHKEY},
                         remedy="if this node is in no cluster, move the file away "
                                f"(mv {AUTHKEY} /root/) before joining")]
        return [passed("authkey-absent", f"no {AUTHKEY}", ctx.node, self.id,
                    payload={"path": AUTHKEY})]


_RING_ADDR = re.compile(r"^\s*ring\d+_addr\s*:\s*(\S+)", re.MULTILINE)


def is_stock_conf(path: str) -> bool:
    """Debian's corosync package ships an example corosync.conf whose only node is 127.0.0.1.

    A file naming no address but loopback ones cannot describe a cluster; treating it as one
    would refuse every fresh Debian node. /etc/pve/corosync.conf is never a stock file.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return False
    return not any(not is_loopback(a) for a in _RING_ADDR.findall(text))


@dataclass(frozen=True)
class CorosyncConfCheck:
    id: ClassVar[str] = "join-corosync-conf"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "no corosync.conf yet (create and join both refuse one)"

    def run(self, ctx: Context) -> list[Finding]:
        present = [p for p in CONF_PATHS if os.path.lexists(path_under(ctx.root, p))]
        stock = [p for p in present if p.startswith("/etc/corosync/")
                 and is_stock_conf(path_under(ctx.root, p))]
        found = [p for p in present if p not in stock]
        if found:
            return [fail("corosync-conf-exists", f"{', '.join(found)} exists: this node is "
                         "already configured for a cluster", ctx.node, check=self.id,
                         payload={"paths": found},
                         remedy="remove the node from its old cluster first (pvecm's 'Separate "
                                "a Node Without Reinstalling'), or reinstall it")]
        note = f" ({stock[0]} is the packaged example: it will be replaced)" if stock else ""
        return [passed("corosync-conf-absent", f"no cluster corosync.conf{note}", ctx.node, self.id,
                    payload={"paths": list(CONF_PATHS), "stock": stock})]


@dataclass(frozen=True)
class CorosyncRunningCheck:
    id: ClassVar[str] = "join-corosync-running"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "corosync is not running on a joining node"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        if not _joining(ctx):
            return _not_joining(self.id, ctx)
        res = self.sources.runner(["corosync-quorumtool", "-l"])
        payload = {"command": "corosync-quorumtool -l", "rc": res.rc}
        if res.ok:
            return [fail("corosync-running", "corosync is running (corosync-quorumtool -l "
                         "answers)", ctx.node, check=self.id,
                         payload=dict(payload, output=res.stdout.strip().splitlines()[:20]),
                         remedy="stop corosync (systemctl stop corosync) and find out which "
                                "cluster this node belongs to before joining another")]
        return [passed("corosync-stopped", "corosync is not running", ctx.node, self.id,
                    payload=payload)]


def guest_ids(root: str) -> dict[str, list[int]]:
    """VMIDs of the guests configured on this node: {"qemu": [...], "lxc": [...]}."""
    out: dict[str, list[int]] = {}
    for kind, patterns in GUEST_GLOBS.items():
        ids: set[int] = set()
        for pattern in patterns:
            for path in glob.glob(os.path.join(root, pattern)):
                stem = os.path.basename(path)[:-len(".conf")]
                if stem.isdigit():
                    ids.add(int(stem))
        out[kind] = sorted(ids)
    return out


@dataclass(frozen=True)
class GuestsCheck:
    id: ClassVar[str] = "join-guests"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "no guests on a joining node (their VMIDs could clash)"

    def run(self, ctx: Context) -> list[Finding]:
        if not _joining(ctx):
            return _not_joining(self.id, ctx)
        ids = guest_ids(ctx.root)
        vmids = sorted(set(ids["qemu"]) | set(ids["lxc"]))
        payload = {"vmids": vmids, **ids}
        if vmids:
            return [fail("guests-exist", f"{len(vmids)} guest(s) on this node: "
                         f"{', '.join(map(str, vmids))}", ctx.node, check=self.id,
                         payload=payload,
                         remedy="back up the guests (vzdump), remove them, join, then restore "
                                "them with free VMIDs")]
        return [passed("no-guests", "no guests on this node", ctx.node, self.id, payload=payload)]


# -- the cluster side ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterNode:
    name: str
    nodeid: int
    addresses: Mapping[int, str]


@dataclass(frozen=True)
class ClusterView:
    """What the cluster looks like to the joiner (from its corosync.conf and quorum state)."""

    links: tuple[int, ...]
    nodes: tuple[ClusterNode, ...]
    quorate: bool | None = None
    name: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> "ClusterView":
        nodes = tuple(ClusterNode(n["name"], int(n.get("nodeid", 0)),
                                  {int(k): str(v) for k, v in n.get("addresses", {}).items()})
                      for n in data.get("nodes", ()))
        links = data.get("links")
        if links is None:
            links = sorted({k for n in nodes for k in n.addresses})
        return cls(tuple(int(x) for x in links), nodes, data.get("quorate"), data.get("name"))


def _view(ctx: Context) -> ClusterView | None:
    given = ctx.options.get("cluster")
    if isinstance(given, ClusterView) or given is None:
        return given
    return ClusterView.from_mapping(given)


@dataclass(frozen=True)
class ClusterSideCheck:
    """What the cluster would refuse: link set, addresses or name in use, no quorum.

    Needs ctx.options["cluster"] (a ClusterView or its mapping form); SKIP without it.
    """

    id: ClassVar[str] = "join-cluster"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "the cluster accepts this node: same links, free addresses, quorate"

    def run(self, ctx: Context) -> list[Finding]:
        view = _view(ctx)
        if role(ctx) != "join" or view is None:
            why = "no view of the existing cluster" if view is None else "this node is not joining"
            return [Finding("join-cluster-skipped", Severity.SKIP, why, ctx.node, self.id)]
        mine = link_addresses(ctx)
        out = []
        if set(mine) != set(view.links):
            out.append(fail("link-set-mismatch", f"this node plans links {sorted(mine)}, the "
                            f"cluster has {sorted(view.links)}", ctx.node, check=self.id,
                            payload={"node": sorted(mine), "cluster": sorted(view.links)},
                            remedy="give exactly one address per cluster link "
                                   f"({', '.join(f'link{n}' for n in sorted(view.links))})"))
        out += self._used(ctx, view, mine)
        if view.quorate is False:
            out.append(fail("cluster-not-quorate", "the cluster is not quorate: it refuses "
                            "joins", ctx.node, check=self.id, payload={"quorate": False},
                            remedy="restore quorum (pvecm status) before adding nodes"))
        if not out:
            out.append(passed("cluster-accepts-join", f"links {sorted(view.links)} match and the "
                           "addresses are free", ctx.node, self.id,
                           payload={"links": sorted(view.links), "nodes": len(view.nodes)}))
        return out

    def _used(self, ctx: Context, view: ClusterView, mine: Mapping[int, str]) -> list[Finding]:
        out = []
        for member in view.nodes:
            if member.name == ctx.node:
                out.append(fail("node-name-used-in-cluster", f"the cluster already has a node "
                                f"named {member.name}", ctx.node, check=self.id,
                                payload={"name": member.name, "nodeid": member.nodeid},
                                remedy="pick another host name, or remove the stale node first "
                                       "(pvecm delnode)"))
            for number, addr in sorted(mine.items()):
                if _same(addr, member.addresses.values()):
                    out.append(fail("address-used-in-cluster", f"link{number} address {addr} is "
                                    f"already used by cluster node {member.name}",
                                    f"{ctx.node}/link{number}", check=self.id,
                                    payload={"link": number, "address": addr, "used_by":
                                             member.name},
                                    remedy="give this node an address no member uses"))
        return out


def _same(address: str, others: Any) -> bool:
    try:
        want = ipaddress.ip_address(address)
        return any(ipaddress.ip_address(o) == want for o in others)
    except ValueError:
        return address in others


# -- the certificate fingerprint -------------------------------------------------------------------

@dataclass(frozen=True)
class FingerprintCheck:
    """The join target's certificate on TCP 8006 has the planned fingerprint."""

    id: ClassVar[str] = "join-fingerprint"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "the join target presents the planned certificate fingerprint"
    port: int = API_PORT
    timeout_s: float = TIMEOUT
    fetch: Callable[[str, int, float], str] = fetch_fingerprint
    sources: Sources = LIVE  # the name lookup that picks the join target (plan.join_address)

    def run(self, ctx: Context) -> list[Finding]:
        if ctx.plan is None or role(ctx) != "join":
            return [Finding("fingerprint-skipped", Severity.SKIP, "this node is not joining",
                            ctx.node, self.id)]
        target = ctx.plan.join_address(self.sources.resolver)
        planned = ctx.plan.join.fingerprint
        payload: dict[str, Any] = {"target": target, "port": self.port, "planned": planned}
        try:
            seen = self.fetch(target, self.port, self.timeout_s)
        except OperationFailed as exc:
            payload["error"] = exc.message
            if planned is None:
                return [Finding("fingerprint-skipped", Severity.SKIP, f"no fingerprint planned "
                                f"and {target}:{self.port} did not answer", target, self.id,
                                payload=payload)]
            return [warn("fingerprint-unverified", f"could not fetch the certificate of "
                         f"{target}:{self.port}", target, check=self.id, payload=payload,
                         remedy=f"check that pveproxy runs on {target} and TCP {self.port} is "
                                "open")]
        payload["seen"] = seen
        if planned is None:
            return [Finding("fingerprint-unpinned", Severity.INFO, f"{target} presents {seen}; "
                            "the plan pins no fingerprint", target, self.id, payload=payload,
                            remedy="put it into join.fingerprint after comparing it with "
                                   "`pvenode cert info` on that node")]
        if seen.upper() != planned.upper():
            return [fail("fingerprint-mismatch", f"{target}:{self.port} presents {seen}, the "
                         f"plan expects {planned}", target, check=self.id, payload=payload,
                         remedy="verify on the cluster node (pvenode cert info) which is right; "
                                "a mismatch can also mean someone is in between")]
        return [passed("fingerprint-ok", f"{target} presents the planned fingerprint", target,
                    self.id, payload=payload)]


def checks(sources: Sources = LIVE) -> tuple[Any, ...]:
    return (AuthkeyCheck(), CorosyncConfCheck(), CorosyncRunningCheck(sources), GuestsCheck(),
            ClusterSideCheck(), FingerprintCheck(sources=sources))
