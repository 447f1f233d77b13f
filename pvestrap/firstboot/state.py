"""What first boot remembers between runs: how far it got, and that it is done.

The hook runs once per boot until it succeeds, and a node may be rebooted or killed at any
moment, so every run must be able to pick up where the last one stopped and a finished node
must do nothing at all. Two files under the state folder (/var/lib/pvestrap on a node):

- `firstboot.json`: the phase reached (started, preflight-passed, applied) for one answer
  file (its SHA-256) and node. A phase recorded for another file or node does not count: a
  changed answer file starts over.
- `firstboot.done`: written last, after the cluster was created or joined. Its existence is
  the "nothing to do" signal for the script, the systemd unit (ConditionPathExists=!) and
  `main`.

A third, `firstboot.lock`, is an flock held for the whole run: the unit, the installer's hook
and an admin typing the command cannot run two first boots at once. The kernel drops the lock
when its holder dies (SIGKILL included), so it never goes stale.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed

STATE_DIR = "/var/lib/pvestrap"
PHASES = ("started", "preflight-passed", "applied")


class FirstbootRunning(OperationFailed):
    code = "firstboot-running"


@dataclass(frozen=True)
class StateDir:
    path: str = STATE_DIR

    @property
    def progress_file(self) -> Path:
        return Path(self.path, "firstboot.json")

    @property
    def done_file(self) -> Path:
        return Path(self.path, "firstboot.done")

    @property
    def lock_file(self) -> Path:
        return Path(self.path, "firstboot.lock")

    def file(self, name: str) -> Path:
        return Path(self.path, name)

    # -- reading ---------------------------------------------------------------------------
    def done(self) -> dict[str, Any] | None:
        """The done marker's content ({} when it is unreadable), or None when not done."""
        if not self.done_file.exists():
            return None
        return _read_json(self.done_file) or {}

    def phase(self, digest: str, node: str) -> str | None:
        """The phase an earlier run reached with this answer file on this node, if any."""
        data = _read_json(self.progress_file)
        if not data or data.get("answers_sha256") != digest or data.get("node") != node:
            return None
        phase = data.get("phase")
        return phase if phase in PHASES else None

    # -- writing ---------------------------------------------------------------------------
    def record(self, digest: str, node: str, phase: str) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown first-boot phase {phase!r}")
        self._write(self.progress_file, {"answers_sha256": digest, "node": node, "phase": phase,
                                         "time": _now()})

    def mark_done(self, digest: str, node: str, cluster: str) -> None:
        self._write(self.done_file, {"answers_sha256": digest, "node": node,
                                     "cluster": cluster, "time": _now()})

    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        self._write(path, data)
        return path

    def _write(self, path: Path, data: Any) -> None:
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True) + "\n", 0o644,
                     backup=False)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the first-boot lock for the block, or refuse at once naming the holder."""
        os.makedirs(self.path, mode=0o755, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise FirstbootRunning(f"another first boot is running on this node{who}",
                                       remedy="wait for it: `journalctl -fu "
                                              "pvestrap-firstboot`") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
