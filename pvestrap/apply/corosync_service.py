"""The corosync daemon on a node: how it is started and stopped (`Service`: systemd on a Debian
host, the daemon itself where there is no systemd, or a lab's own service control), whether it
answers and is quorate, and when it has really stopped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pvestrap.apply.engine import Action, PlannedCommand
from pvestrap.corosync.status import QuorumStatus, read_quorum
from pvestrap.errors import OperationFailed
from pvestrap.paths import COROSYNC_PID
from pvestrap.system import System


class Service(Protocol):
    def start(self, system: System) -> None: ...

    def stop(self, system: System) -> None: ...

    def start_action(self) -> Action: ...

    def stop_action(self) -> Action: ...


@dataclass(frozen=True)
class CommandService:
    """corosync started and stopped by commands on the node."""

    start_argv: tuple[str, ...] = ("systemctl", "start", "corosync")
    stop_argv: tuple[str, ...] = ("systemctl", "stop", "corosync")
    timeout: float = 60.0

    def start(self, system: System) -> None:
        system.run(self.start_argv, timeout=self.timeout)

    def stop(self, system: System) -> None:
        system.run(self.stop_argv, timeout=self.timeout)

    def start_action(self) -> Action:
        return PlannedCommand(self.start_argv, undo_argv=self.stop_argv)

    def stop_action(self) -> Action:
        return PlannedCommand(self.stop_argv)


SYSTEMD = CommandService()
# Without systemd (a container, a lab node): the daemon forks itself into the background;
# `-H --force` asks it to shut down whatever other daemons think.
DIRECT = CommandService(("corosync",), ("corosync-cfgtool", "-H", "--force"))


def default_service(system: System) -> Service:
    return SYSTEMD if system.exists("/run/systemd/system") else DIRECT


def quorum_status(system: System) -> QuorumStatus | None:
    """`corosync-quorumtool -s` on the node; None when corosync does not answer (not running)."""
    return read_quorum(system.query)


def stopped(system: System) -> bool:
    """corosync neither answers nor is still on its way out. It stops answering a moment
    before it exits and lets go of its pid lock; a corosync started in between exits at once
    with "Another Corosync instance is already running." (status 18). `systemctl stop` waits
    for the exit, `corosync-cfgtool -H` (the daemon without systemd) does not."""
    return quorum_status(system) is None and not _exiting(system)


def _exiting(system: System) -> bool:
    """The pid file names a corosync that is still alive (a zombie holds no lock; a file left
    by a killed corosync names a process that is gone)."""
    pid = (system.read_text(COROSYNC_PID) or "").strip()
    stat = system.read_text(f"/proc/{pid}/stat") if pid.isdigit() else None
    if stat is None:
        return False
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    return name == "corosync" and rest.split()[:1] != ["Z"]


def wait_stopped(system: System, timeout: float) -> None:
    if not system.wait_until(lambda: stopped(system), timeout, 0.2, "corosync to stop"):
        raise OperationFailed(f"corosync still runs {timeout:g} s after stopping it",
                              code="corosync-stop-timeout")


def quorate_with(status: QuorumStatus | None, members: int | None) -> bool:
    """Quorate, this node a member, and (when given) at least MEMBERS nodes in the membership."""
    if status is None or not status.quorate or status.local is None:
        return False
    return members is None or len(status.nodes_only) >= members
