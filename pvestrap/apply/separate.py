"""`pvestrap node separate`: this node leaves its cluster without a reinstall (the admin guide's
"Separate A Node Without Reinstalling"), checked first, every removed file kept aside.

Run on the leaving node. Before any change: it is a member of a quorate cluster; the others stay
quorate without it (or `--expected-votes N` for them, the guide's `pvecm expected 1`); each
other node is a member with the same corosync.conf and answers over SSH; on Proxmox VE no
shared storage of /etc/pve/storage.cfg stays reachable from it and none of its guests uses one
(storage locking does not work across clusters, VMIDs collide). Then, as steps that are undone
in reverse on a failure:

- plain corosync: corosync stops here; /etc/corosync/* and /var/lib/corosync/* move to
  /var/lib/pvestrap/separated/STAMP/ (same paths below it); the other members drop this node
  from their nodelist (config_version + 1, written over SSH, corosync reloaded, verified);
  their known_hosts forget it;
- Proxmox VE: the guide's sequence (pvestrap/apply/separate_pve.py): pve-cluster and corosync
  stop, pmxcfs runs in local mode, /etc/pve/corosync.conf and /etc/corosync/* move aside, the
  local pmxcfs stops, pve-cluster starts (standalone), /var/lib/corosync/* moves aside; then
  the cluster side as `node remove` does it (pvestrap/apply/removal.py), on the first staying
  member over SSH: /etc/pve/nodes/NAME moved aside there (to MEMBER:/var/lib/pvestrap/removed/
  NAME-STAMP), NAME's keys out of every staying member's known_hosts and the cluster-wide
  /etc/pve/priv/known_hosts, `pvecm delnode NAME` (`pvecm expected N` first with
  --expected-votes); then the staying members are verified.

The node can then join this or another cluster with `pvestrap apply`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from pvestrap.apply import links, removal, separate_pve
from pvestrap.apply.corosync_service import Service, quorum_status, wait_stopped
from pvestrap.apply.engine import Action, PlannedCommand
from pvestrap.apply.links import LinkTimeouts, Phase, PhaseStep
from pvestrap.checks import removal as checks
from pvestrap.checks import separation
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.findings import Finding, info
from pvestrap.system import System
from pvestrap.verify import COROSYNC_CONF

ASIDE = "/var/lib/pvestrap/separated"
LEFTOVERS = ("/etc/corosync", "/var/lib/corosync")
STORAGE_CFG = "/etc/pve/storage.cfg"


@dataclass(frozen=True)
class Separation:
    removal: removal.Removal   # target: this node; cluster: the members that stay
    service: Service
    dropped_by: str | None = None  # a member whose corosync.conf no longer lists this node
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))

    @property
    def aside(self) -> str:
        return f"{ASIDE}/{self.stamp}"

    @property
    def name(self) -> str:
        return self.removal.name


def read_separation(system: System, service: Service, expected_votes: int | None = None,
                    timeouts: LinkTimeouts = LinkTimeouts(), backend: str | None = None
                    ) -> Separation:
    from pvestrap.apply.pve import is_pve

    cluster = links.read_cluster(system, None, timeouts)
    me = cluster.local
    stay = tuple(m for m in cluster.members if not m.local)
    if not stay:
        raise UserError(f"{me.name} is the only node of {cluster.conf.cluster_name}: there is "
                        "no cluster to leave", code="separate-last-node",
                        remedy="nothing to separate from")
    votes = checks.vote_plan(cluster.conf, me.name, cluster.observed.quorum)
    removal.refuse_expected_votes(votes, expected_votes, meaning="the votes of the nodes that stay")
    target = next(n for n in cluster.conf.nodes if n.name == me.name)
    kind = backend or ("pve" if is_pve(system) else "corosync")
    leaving = removal.Removal(me.name, dataclasses.replace(cluster, members=stay), target,
                              cluster.conf.remove_node(me.name).bump_version(), votes, kind,
                              expected_votes)
    return Separation(leaving, service, dropped_by(system, leaving))


def dropped_by(system: System, leaving: removal.Removal) -> str | None:
    """The first staying member that answers and no longer lists this node (it was removed
    while it was away and came back as it was), else None."""
    ops = links.ShellOps(system, leaving.cluster)
    for member in leaving.cluster.members:
        try:
            text = ops.read(member)
            conf = CorosyncConf.parse(text or "", f"{member.name}:{COROSYNC_CONF}")
        except PvestrapError:
            continue
        return None if any(n.name == leaving.name for n in conf.nodes) else member.name
    return None


def preflight(system: System, sep: Separation) -> list[Finding]:
    r = sep.removal
    if sep.dropped_by:
        return [info("dropped-by-members", f"{sep.dropped_by}'s corosync.conf no longer lists "
                     f"{r.name}: it was removed while away; only this node's corosync is "
                     "stopped and its files kept aside", r.name, separation.CHECK_QUORUM,
                     payload={"member": sep.dropped_by})]
    obs = r.cluster.observed
    quorate = bool(obs.quorum and obs.quorum.quorate)
    out = separation.quorum_findings(r.votes, quorate, r.expected_votes, r.name)
    out += removal.member_findings(system, r)
    if r.backend == "pve":
        storages = separation.parse_storage_cfg(system.read_text(STORAGE_CFG) or "")
        out += separation.storage_findings(r.name, storages)
        out += separation.guest_storage_findings(r.name, storages, guest_configs(system, r.name))
    return out


def guest_configs(system: System, name: str) -> dict[str, str]:
    """'qemu-server/100' -> the config text, for this node's guests."""
    root = str(system.root)
    out = {}
    for kind in ("qemu-server", "lxc"):
        folder = os.path.join(root, "etc/pve/nodes", name, kind)
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for entry in names:
            if entry.endswith(".conf"):
                out[f"{kind}/{entry[:-5]}"] = system.read_text(
                    f"/etc/pve/nodes/{name}/{kind}/{entry}") or ""
    return out


# -- steps on the leaving node ---------------------------------------------------------------------

@dataclass(frozen=True)
class StopStep:
    """corosync stops here; undo starts it again and waits until it is back in a quorate
    cluster."""

    service: Service
    timeout: float = 30.0
    id: str = "stop-corosync"
    description: str = "stop corosync on this node"

    def plan(self, system: System) -> list[Action]:
        return [self.service.stop_action()] if quorum_status(system) is not None else []

    def apply(self, system: System) -> None:
        self.service.stop(system)
        wait_stopped(system, self.timeout)

    def undo(self, system: System, memo: None) -> None:
        self.service.start(system)

        def back() -> bool:
            status = quorum_status(system)
            return bool(status and status.quorate)

        if not system.wait_until(back, self.timeout * 2, 0.5, "corosync to rejoin"):
            raise OperationFailed("corosync did not rejoin a quorate cluster after a restart",
                                  code="corosync-rejoin-timeout")


@dataclass(frozen=True)
class AsideStep:
    """Everything in /etc/corosync and /var/lib/corosync moved below ASIDE/STAMP (the same
    paths), never deleted; undo moves it back."""

    sep: Separation
    folders: tuple[str, ...] = LEFTOVERS
    id: str = "keep-aside"

    @property
    def description(self) -> str:
        return f"move {', '.join(p + '/*' for p in self.folders)} aside to {self.sep.aside}"

    def entries(self, system: System) -> list[str]:
        root = str(system.root)
        out = []
        for folder in self.folders:
            try:
                names = sorted(os.listdir(os.path.join(root, folder.lstrip("/"))))
            except OSError:
                continue
            out += [f"{folder}/{n}" for n in names]
        return out

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("mv", "-T", p, self.sep.aside + p),
                               undo_argv=("mv", "-T", self.sep.aside + p, p))
                for p in self.entries(system)]

    def apply(self, system: System) -> list[str]:
        moved: list[str] = []
        try:
            for path in self.entries(system):
                system.run(["mkdir", "-p", os.path.dirname(self.sep.aside + path)], timeout=30)
                system.run(["mv", "-T", path, self.sep.aside + path], timeout=60)
                moved.append(path)
        except Exception:
            self.undo(system, moved)
            raise
        return moved

    def undo(self, system: System, memo: Sequence[str]) -> None:
        for path in reversed(memo):
            system.run(["mv", "-T", self.sep.aside + path, path], timeout=60)


def steps(system: System, sep: Separation, control_path: str | None = None) -> list:
    r = sep.removal
    if r.backend == "pve":
        return pve_steps(sep, control_path)
    ops = links.ShellOps(system, r.cluster, control_path)
    out: list = [StopStep(sep.service), AsideStep(sep)]
    if sep.dropped_by:
        return out
    if r.expected_votes is not None:
        tool = ("corosync-quorumtool", "-e", str(r.expected_votes))
        out.append(removal.ExpectedVotesStep(tool, r.votes.expected_now, None,
                                             member=r.cluster.members[0], cluster=r.cluster))
    phase = Phase(f"remove-{r.name}", f"remove {r.name} from the nodelist of every staying "
                  "member and reload corosync there", r.after)
    return out + [PhaseStep(phase, r.cluster, r.cluster.text, ops),
                  removal.KnownHostsStep(r), removal.VerifyStep(r)]


def pve_steps(sep: Separation, control_path: str | None = None) -> list:
    """The admin guide's order (see separate_pve); the cluster side on the first staying
    member."""
    r = sep.removal
    out: list = [separate_pve.StopClusterStep(), separate_pve.LocalModeStep(),
                 separate_pve.ConfAsideStep(sep.aside),
                 AsideStep(sep, ("/etc/corosync",), id="etc-corosync-aside"),
                 separate_pve.LocalModeStep(stop=True), separate_pve.StartClusterStep(),
                 AsideStep(sep, ("/var/lib/corosync",), id="var-lib-corosync-aside")]
    if sep.dropped_by:
        return out
    first = r.cluster.writer
    if r.expected_votes is not None:
        out.append(removal.ExpectedVotesStep(("pvecm", "expected", str(r.expected_votes)),
                                             r.votes.expected_now, None, member=first,
                                             cluster=r.cluster, writable=removal.PVE_LOCAL))
    return out + [removal.NodesDirAsideStep(r, control_path), removal.KnownHostsStep(r),
                  separate_pve.RemoteDelnodeStep(r, first, control_path, sep.aside),
                  removal.VerifyStep(r)]


def run_separation(system: System, sep: Separation, on_progress=None):
    from pvestrap.apply.engine import run_steps

    cluster = sep.removal.cluster
    if sep.dropped_by:
        return run_steps(steps(system, sep), system, on_progress)
    with links.locked(system, cluster) as control_path:
        ops = links.ShellOps(system, cluster, control_path)
        texts = links.each(cluster.members, ops.read)
        changed = sorted(n for n, t in texts.items() if t != cluster.text)
        if changed:
            raise OperationFailed(f"corosync.conf changed on {', '.join(changed)} since it was "
                                  "read", code="conf-changed-meanwhile",
                                  remedy="run the command again to plan from the new file")
        return run_steps(steps(system, sep, control_path), system, on_progress)
