"""`pvestrap node separate` on Proxmox VE: the admin guide's "Separate A Node Without
Reinstalling" (pve-docs pvecm.adoc) as undoable steps, run on the leaving node:

    systemctl stop pve-cluster; systemctl stop corosync; pmxcfs -l
    rm /etc/pve/corosync.conf; rm /etc/corosync/*       (here: kept aside, byte for byte)
    killall pmxcfs; systemctl start pve-cluster          (here: the pid in its pid file)
    pvecm delnode NAME   (on a remaining member, over SSH; `pvecm expected N` first when asked)
    rm /var/lib/corosync/*                               (here: kept aside)

pmxcfs writes its pid to /run/pve-cluster.pid also in local mode (pve-cluster's
src/pmxcfs/pmxcfs.c); the pve-cluster unit (Type=forking) uses the same file. A pmxcfs started
by hand is not in the unit's cgroup, so it is stopped by that pid, not by systemctl.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from pvestrap.apply.corosync_service import quorum_status
from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait
from pvestrap.apply.links import MemberHost, MemberOps, ShellOps
from pvestrap.apply.removal import Removal, undo_delnode
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.paths import COROSYNC_CONF, PVE_COROSYNC_CONF
from pvestrap.system import System

PVE_MOUNT = "/etc/pve"
PMXCFS_PID = "/run/pve-cluster.pid"
WAIT = 30.0


def mounted(system: System) -> bool:
    return system.run(["mountpoint", "-q", PVE_MOUNT], check=False, mutates=False,
                      timeout=10).returncode == 0


def _wait(system: System, check, what: str, code: str) -> None:
    if not system.wait_until(check, WAIT, 0.2, what):
        raise OperationFailed(f"waited {WAIT:g} s for {what} in vain", code=code)


def systemctl(system: System, action: str, unit: str) -> None:
    system.run(["systemctl", action, unit], timeout=120)


def start_local(system: System) -> None:
    """`pmxcfs -l`: the cluster filesystem without corosync, writable without quorum."""
    system.run(["pmxcfs", "-l"], timeout=60)
    _wait(system, lambda: mounted(system), "pmxcfs -l to mount /etc/pve", "pmxcfs-local-failed")


def stop_local(system: System) -> None:
    """The guide's `killall pmxcfs`, by the pid pmxcfs wrote (only that process)."""
    pid = (system.read_text(PMXCFS_PID) or "").strip()
    if not pid.isdigit():
        raise OperationFailed(f"{PMXCFS_PID} names no pmxcfs ({pid!r})",
                              code="pmxcfs-pid-missing")
    system.run(["kill", "-TERM", pid], timeout=10)

    def gone() -> bool:
        alive = system.run(["kill", "-0", pid], check=False, mutates=False, timeout=10)
        return alive.returncode != 0 and not mounted(system)

    _wait(system, gone, "the local pmxcfs to exit", "pmxcfs-stop-timeout")


@dataclass(frozen=True)
class StopClusterStep:
    """pve-cluster, then corosync, stop here; undo starts both and waits for quorum."""

    id: str = "stop-pve-cluster"
    description: str = "stop pve-cluster and corosync on this node"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("systemctl", "stop", unit),
                               undo_argv=("systemctl", "start", unit))
                for unit in ("pve-cluster", "corosync")]

    def apply(self, system: System) -> None:
        systemctl(system, "stop", "pve-cluster")
        systemctl(system, "stop", "corosync")
        _wait(system, lambda: quorum_status(system) is None and not mounted(system),
              "corosync and pmxcfs to stop", "pve-cluster-stop-timeout")

    def undo(self, system: System, memo: None) -> None:
        systemctl(system, "start", "pve-cluster")
        systemctl(system, "start", "corosync")

        def back() -> bool:
            status = quorum_status(system)
            return bool(status and status.quorate)

        _wait(system, back, "corosync to rejoin a quorate cluster", "corosync-rejoin-timeout")


@dataclass(frozen=True)
class LocalModeStep:
    """pmxcfs in local mode (started, or with stop=True stopped); undo does the opposite."""

    stop: bool = False

    @property
    def id(self) -> str:
        return "stop-local-pmxcfs" if self.stop else "pmxcfs-local"

    @property
    def description(self) -> str:
        return "stop the local-mode pmxcfs" if self.stop else \
            "start the cluster filesystem in local mode (pmxcfs -l)"

    def plan(self, system: System) -> list[Action]:
        kill = ("kill", "-TERM", f"$(cat {PMXCFS_PID})")
        start = ("pmxcfs", "-l")
        return [PlannedCommand(kill, undo_argv=start) if self.stop else
                PlannedCommand(start, undo_argv=kill)]

    def apply(self, system: System) -> None:
        (stop_local if self.stop else start_local)(system)

    def undo(self, system: System, memo: None) -> None:
        (start_local if self.stop else stop_local)(system)


@dataclass(frozen=True)
class ConfAsideStep:
    """/etc/pve/corosync.conf copied to ASIDE/etc/pve/corosync.conf, then removed from the
    local-mode pmxcfs; undo copies it back."""

    aside: str
    id: str = "pve-conf-aside"

    @property
    def target(self) -> str:
        return self.aside + PVE_COROSYNC_CONF

    @property
    def description(self) -> str:
        return f"move {PVE_COROSYNC_CONF} aside to {self.target}"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("cp", PVE_COROSYNC_CONF, self.target),
                               undo_argv=("cp", self.target, PVE_COROSYNC_CONF)),
                PlannedCommand(("rm", PVE_COROSYNC_CONF))]

    def apply(self, system: System) -> bool:
        if not system.exists(PVE_COROSYNC_CONF):
            return False
        system.run(["mkdir", "-p", os.path.dirname(self.target)], timeout=30)
        system.run(["cp", PVE_COROSYNC_CONF, self.target], timeout=30)
        system.run(["rm", PVE_COROSYNC_CONF], timeout=30)
        return True

    def undo(self, system: System, memo: bool) -> None:
        if memo:
            system.run(["cp", self.target, PVE_COROSYNC_CONF], timeout=30)


@dataclass(frozen=True)
class StartClusterStep:
    """pve-cluster starts again (pmxcfs without a corosync.conf: a standalone node)."""

    id: str = "start-pve-cluster"
    description: str = "start pve-cluster (standalone: no corosync.conf)"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("systemctl", "start", "pve-cluster"),
                               undo_argv=("systemctl", "stop", "pve-cluster"))]

    def apply(self, system: System) -> None:
        systemctl(system, "start", "pve-cluster")
        _wait(system, lambda: mounted(system), "pve-cluster to mount /etc/pve",
              "pve-cluster-start-failed")

    def undo(self, system: System, memo: None) -> None:
        systemctl(system, "stop", "pve-cluster")
        _wait(system, lambda: not mounted(system), "pve-cluster to stop",
              "pve-cluster-stop-timeout")


@dataclass(frozen=True)
class RemoteDelnodeStep:
    """`pvecm delnode NAME` on a staying member (it refuses without quorum); undone by
    removal.undo_delnode: the old nodelist back at a config_version above delnode's (pmxcfs
    refuses a lower one). This node's copies kept ASIDE get that file too, so that its corosync,
    started again by the later undos, is not older than the cluster's (corosync.conf(5),
    config_version: a node joining with an older one is terminated)."""

    removal: Removal = field(compare=False)
    member: MemberHost
    control_path: str | None = None
    aside: str | None = None
    ops: MemberOps | None = field(default=None, compare=False)
    id: str = "delnode"

    @property
    def name(self) -> str:
        return self.removal.name

    @property
    def description(self) -> str:
        return f"pvecm delnode {self.name} on {self.member.name}"

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("ssh", f"root@{self.member.name}",
                                shlex.join(("pvecm", "delnode", self.name)))),
                PlannedWait(f"{self.member.name}'s pmxcfs hands the nodelist to every member",
                            self.removal.cluster.timeouts.verify)]

    def apply(self, system: System) -> bool:
        shell = self.removal.cluster.access(system, self.member, self.control_path)
        shell.run(shlex.join(("pvecm", "delnode", self.name)), f"pvecm delnode {self.name}",
                  timeout=180)
        return True

    def undo(self, system: System, memo: bool) -> None:
        if not memo:
            return
        ops = self.ops or ShellOps(system, self.removal.cluster, self.control_path)
        try:
            current = ops.read(self.member)
        except PvestrapError:
            current = None
        text = undo_delnode(system, self.removal, ops, current)
        for path in (PVE_COROSYNC_CONF, COROSYNC_CONF):
            kept = f"{self.aside}{path}" if self.aside else None
            if kept and system.exists(kept):
                system.write_text(kept, text, backup=False)
