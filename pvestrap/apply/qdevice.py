"""`pvestrap qdevice setup HOST` / `remove` on plain corosync: what `pvecm qdevice setup` does
(pve-cluster, src/PVE/CLI/pvecm.pm), as undoable steps, with every wait bounded.

Setup, run on one member (it reaches the others and the qnetd host over SSH as root):
1. `qnetd-ca`: the qnetd CA on the host (`corosync-qnetd-certutil -i`, unless it exists);
2. `node-certdb`: every member's NSS database from that CA (`corosync-qdevice-net-certutil -i
   -c qnetd-cacert.crt`);
3. `cluster-cert`: this member's certificate request (`-r -n CLUSTER`), signed by the qnetd CA
   on the host (`corosync-qnetd-certutil -s`), imported here (`-M`), which exports the pk12;
4. `import-cert`: the pk12 imported on every other member (`-m`);
5. `conf`: the quorum.device section and config_version + 1 on every member, one reload,
   every member on the new version (the link machinery: byte-for-byte rollback);
6. `start-qdevice`: corosync-qdevice enabled and started on every member;
7. `verify`: every member quorate with the QDevice's votes, every node voting.
A failure undoes the steps before it in reverse: qdevice stopped, every member's corosync.conf
put back byte for byte and reloaded, the members' certificate stores put back as they were,
the cluster certificate and (when this run made it) the CA removed from the qnetd host.

Remove reverses it: the section leaves corosync.conf (config_version + 1, reload), qdevice is
stopped and disabled, /etc/corosync/qdevice removed on every member (kept in the undo memo).
"""

from __future__ import annotations

from dataclasses import dataclass

from pvestrap import qdevice as model
from pvestrap.apply import links
from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait, unsettled
from pvestrap.apply.links import Cluster, MemberHost, MemberOps, Phase, PhaseStep
from pvestrap.apply.qdevice_certs import ClusterCertStep, ImportStep, NodeDbStep, QnetdCaStep
from pvestrap.apply.qdevice_change import (START, STOP, QdeviceChange, dir_snapshot_script,
                                           each_member, node_votes, parse_snapshot, raise_errors,
                                           read_remove, read_setup, run_on)
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.corosync.status import QuorumStatus, StatusUnparsable, parse_quorum_status
from pvestrap.system import System

__all__ = ["QdeviceChange", "node_votes", "read_remove", "read_setup", "run_change", "steps"]

@dataclass(frozen=True)
class ServiceStep:
    """corosync-qdevice started (or stopped) on every member; undo does the opposite."""

    change: QdeviceChange
    start: bool
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", "start-qdevice" if self.start else "stop-qdevice")

    @property
    def description(self) -> str:
        return ("enable and start" if self.start else "stop and disable") + \
            " corosync-qdevice on every member"

    def plan(self, system: System) -> list[Action]:
        verb = "enable --now" if self.start else "disable --now"
        return [PlannedCommand(("ssh", f"root@{m.name}", f"systemctl {verb} corosync-qdevice"))
                for m in self.change.cluster.members]

    def _all(self, system: System, start: bool) -> None:
        script = START if start else STOP
        results = each_member(self.change.cluster.members, lambda m: run_on(
            self.change, system, m, script, ("start" if start else "stop") + " corosync-qdevice"))
        raise_errors(results, ("starting" if start else "stopping") + " corosync-qdevice",
                     "qdevice-service-failed")

    def apply(self, system: System) -> None:
        self._all(system, self.start)

    def undo(self, system: System, memo: None) -> None:
        self._all(system, not self.start)


def member_quorum(system: System, cluster: Cluster, member: MemberHost) -> QuorumStatus | None:
    try:
        out = cluster.access(system, member).run("corosync-quorumtool -s || true",
                                                 "read quorum", mutates=False).stdout
        return parse_quorum_status(out)
    except (PvestrapError, StatusUnparsable):
        return None


def qdevice_problems(status: QuorumStatus | None, change: QdeviceChange) -> list[str]:
    """Why STATUS is not what the change should give (empty: it is)."""
    if status is None:
        return ["no quorum status"]
    problems = [] if status.quorate else ["not quorate"]
    has = "Qdevice" in status.flags
    if change.math is None:
        if has:
            problems.append("still shows a Qdevice")
        want = sum(node_votes(change.after))
    else:
        want = change.math.expected
        if not has:
            problems.append("no Qdevice flag")
        voting = [m for m in status.nodes_only if "V" not in (m.qdevice or "").split(",")]
        if voting:
            problems.append("QDevice not voting for " + ", ".join(m.name for m in voting))
    if status.expected_votes != want:
        problems.append(f"expected votes {status.expected_votes}, not {want}")
    return problems


@dataclass(frozen=True)
class VerifyStep:
    change: QdeviceChange
    id: str = "verify"

    @property
    def description(self) -> str:
        if self.change.math is None:
            return "every member quorate without a QDevice"
        return (f"every member quorate with the QDevice: {self.change.math.expected} expected "
                f"votes, every node voting")

    def plan(self, system: System) -> list[Action]:
        return [PlannedWait(self.description, self.change.cluster.timeouts.verify)]

    def apply(self, system: System) -> None:
        cluster = self.change.cluster

        def problems() -> list[str]:
            found = links.each(cluster.members, lambda m: qdevice_problems(
                member_quorum(system, cluster, m), self.change))
            return [f"{n}: {p}" for n, ps in found.items() for p in ps]

        seen = unsettled(system, problems, cluster.timeouts.verify, cluster.timeouts.poll,
                         "the QDevice")
        if seen is not None:
            raise OperationFailed(f"the members did not settle within "
                                  f"{cluster.timeouts.verify:g} s: " + "; ".join(seen),
                                  code="qdevice-verify-failed",
                                  remedy="check that every node reaches the qnetd host on TCP "
                                         f"{model.QNETD_PORT} and that corosync-qnetd runs")

    def undo(self, system: System, memo: None) -> None:
        return None


# -- remove ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CleanupStep:
    """/etc/corosync/qdevice removed on every member (pvecm's cleanup); undo restores it."""

    change: QdeviceChange
    id: str = "remove-certdb"
    description: str = f"remove {model.QDEVICE_DIR} on every member"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("ssh", f"root@{m.name}", f"rm -rf {model.QDEVICE_DIR}"))
                for m in self.change.cluster.members]

    def apply(self, system: System) -> dict[str, str | None]:
        script = dir_snapshot_script(model.QDEVICE_DIR) + f"; rm -rf {model.QDEVICE_DIR}"
        results = each_member(self.change.cluster.members, lambda m: parse_snapshot(
            run_on(self.change, system, m, script, "remove the certificate store")))
        memo = {n: r for n, r in results.items() if not isinstance(r, PvestrapError)}
        if len(memo) != len(results):
            NodeDbStep(self.change).undo(system, memo)
            raise_errors(results, "removing the certificate stores", "qdevice-cleanup-failed")
        return memo

    def undo(self, system: System, memo: dict[str, str | None]) -> None:
        NodeDbStep(self.change).undo(system, memo)


# -- the whole change ------------------------------------------------------------------------------

def steps(system: System, change: QdeviceChange, ops: MemberOps | None = None,
          force: bool = False) -> list:
    ops = ops or links.ShellOps(system, change.cluster)
    text = change.cluster.text
    if change.math is not None:
        phase = Phase("conf", "add the quorum device to corosync.conf on every member and "
                      "reload corosync", change.after)
        return [QnetdCaStep(change), NodeDbStep(change, force), ClusterCertStep(change),
                ImportStep(change), PhaseStep(phase, change.cluster, text, ops),
                ServiceStep(change, start=True), VerifyStep(change)]
    phase = Phase("conf", "remove the quorum device from corosync.conf on every member and "
                  "reload corosync", change.after)
    return [PhaseStep(phase, change.cluster, text, ops), ServiceStep(change, start=False),
            CleanupStep(change), VerifyStep(change)]


def run_change(system: System, change: QdeviceChange, force: bool = False, on_progress=None):
    """Apply CHANGE under every member's lock, after checking that no member's corosync.conf
    changed since it was read; StepFailed (after the rollback) when a step fails."""
    return links.run_locked(system, change.cluster,
                            lambda ops: steps(system, change, ops, force), on_progress)
