"""What must be one and the same on every node: config_version, the authkey, the cluster name.

The guide: "Always increment the config_version number on configuration changes, omitting this
can lead to problems" (Corosync Configuration); corosync reloads a file only with a higher
version, and a node whose file is older than what runs comes back with the old config after a
restart. The authkey encrypts knet: a node with another key is a stranger to the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

from pvestrap.checks.base import Context
from pvestrap.doctor import facts as F
from pvestrap.doctor.view import view_of
from pvestrap.findings import Finding, Severity, fail, passed
from pvestrap.plan import NAME_RULE, name_problem

FAMILY = "config"


@dataclass(frozen=True)
class ConfigVersionCheck:
    id: ClassVar[str] = "config-version"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "config_version equal in every node's file and in what corosync runs"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        if view.conf is None:
            return []
        files: dict[str, int | None] = {}
        out: list[Finding] = []
        for name, node in sorted(view.nodes.items()):
            mine = node.conf.config_version if node.conf else None
            files[name] = mine
            running = node.runtime_version
            payload = {"node": name, "file": mine, "running": running}
            if mine is not None and running is not None and mine < running:
                out.append(fail("config-version-behind", f"{name}'s {F.COROSYNC_CONF} has "
                                f"config_version {mine}, older than the {running} corosync "
                                "runs: a restart there loads the old configuration", name,
                                check=self.id, payload=payload,
                                remedy="copy the current corosync.conf to the node (on PVE from "
                                       "/etc/pve/corosync.conf) before corosync restarts"))
            elif mine is not None and running is not None and mine > running:
                out.append(fail("config-version-not-loaded", f"{name}'s file has config_version "
                                f"{mine} but corosync runs {running}: the edit was not loaded",
                                name, check=self.id, payload=payload,
                                remedy="check the file (`pvestrap conf lint`), then "
                                       "`corosync-cfgtool -R` on one node"))
            pve = node.pve_conf.config_version if node.pve_conf else None
            if pve is not None and mine is not None and pve != mine:
                out.append(fail("config-version-pve-differs", f"{name}: /etc/pve/corosync.conf "
                                f"has config_version {pve}, {F.COROSYNC_CONF} {mine}", name,
                                check=self.id, payload={**payload, "pve": pve},
                                remedy="pmxcfs copies the file when its version is higher: "
                                       "check `journalctl -u pve-cluster` on the node"))
        known = {n: v for n, v in files.items() if v is not None}
        if len(set(known.values())) > 1:
            common = Counter(known.values()).most_common(1)[0][0]
            odd = sorted(n for n, v in known.items() if v != common)
            out.append(fail("config-version-differs", "config_version differs between nodes: "
                            + ", ".join(f"{n} {v}" for n, v in sorted(known.items())),
                            ", ".join(odd), check=self.id, payload={"versions": known},
                            remedy="put the same, newest corosync.conf on every node "
                                   "(config_version raised once), then `corosync-cfgtool -R`"))
        if out:
            return out
        version = next(iter(known.values()), None)
        where = f"{len(known)} nodes" if view.mesh else view.local
        return [passed("config-version-equal", f"config_version {version} in the file and in "
                       f"corosync on {where}", "totem", self.id, payload={"versions": known})]


@dataclass(frozen=True)
class AuthkeyCheck:
    id: ClassVar[str] = "authkey"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "the same /etc/corosync/authkey on every node (hashes compared)"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        if view.conf is None:
            return []
        hashes = {n: v.facts.get("authkey_sha256") for n, v in sorted(view.nodes.items())}
        missing = sorted(n for n, h in hashes.items() if not h)
        out = [fail("authkey-missing", f"{n} has no readable {F.AUTHKEY}", n, check=self.id,
                    remedy="copy the authkey from another node (mode 0400, root), then restart "
                           "corosync there") for n in missing]
        known = {n: h for n, h in hashes.items() if h}
        short = {n: h[:12] for n, h in known.items()}
        if len(set(known.values())) > 1:
            common = Counter(known.values()).most_common(1)[0][0]
            odd = sorted(n for n, h in known.items() if h != common)
            verb = "has" if len(odd) == 1 else "have"
            out.append(fail("authkey-differs", f"{', '.join(odd)} {verb} another authkey than "
                            "the rest", ", ".join(odd),
                            check=self.id, payload={"sha256_prefix": short, "odd": odd},
                            remedy="copy /etc/corosync/authkey from a healthy node to "
                                   f"{', '.join(odd)} (mode 0400), then restart corosync there; "
                                   "corosync reads the key only at start"))
        if out:
            return out
        if not view.mesh or len(known) < 2:
            return [Finding("authkey-single", Severity.SKIP, "only this node's authkey was read: "
                            "run with --mesh to compare every node's", view.local, self.id)]
        return [passed("authkey-equal", f"the same authkey on {len(known)} nodes", "authkey",
                       self.id, payload={"sha256_prefix": short})]


@dataclass(frozen=True)
class ClusterNameCheck:
    id: ClassVar[str] = "cluster-name"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "cluster name valid and the same on every node"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        names = {n: v.conf.cluster_name for n, v in sorted(view.nodes.items()) if v.conf}
        distinct = set(names.values())
        if len(distinct) > 1:
            return [fail("cluster-name-differs", "the nodes name different clusters: "
                         + ", ".join(f"{n} {c}" for n, c in names.items()), "cluster",
                         check=self.id, payload={"names": names},
                         remedy="a node with another cluster_name is not in this cluster: "
                                "put the cluster's corosync.conf on it")]
        name = next(iter(distinct), None)
        if not name:
            return []
        if name_problem(name):
            return [fail("cluster-name-invalid", f"cluster name {name!r} breaks PVE's rule "
                         f"({NAME_RULE})", "cluster",
                         check=self.id, payload={"name": name},
                         remedy="a cluster name cannot be changed in place; keep it, but know "
                                "pvecm and the GUI refuse it for new clusters")]
        return [passed("cluster-name-ok", f"cluster {name}", "cluster", self.id,
                       payload={"name": name})]


def checks() -> tuple:
    return (ConfigVersionCheck(), AuthkeyCheck(), ClusterNameCheck())
