"""One apply at a time per node: an flock on /run/pvestrap/apply.lock (under the node's root).

The first-boot hook, a user at the console and a wizard could all start an apply; two of them
interleaving writes to corosync.conf would leave a file neither planned. flock is released by
the kernel when the holder dies, so a crashed apply never leaves a stale lock behind. The holder
writes its pid into the file so the second one can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pvestrap.errors import OperationFailed

LOCK_PATH = "run/pvestrap/apply.lock"


class ApplyLocked(OperationFailed):
    code = "apply-locked"


def lock_file(root: str = "/") -> Path:
    return Path(root, LOCK_PATH)


@contextmanager
def apply_lock(root: str = "/", timeout: float = 0.0, interval: float = 0.1) -> Iterator[Path]:
    """Hold the apply lock for the block. Waits up to `timeout` seconds (0: fail at once),
    then raises ApplyLocked naming the holder's pid."""
    path = lock_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, path, timeout, interval)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def flock_within(fd: int, timeout: float, interval: float = 0.1) -> bool:
    """An exclusive flock on FD, tried every INTERVAL for up to TIMEOUT seconds (0: once);
    whether it was taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)


def _acquire(fd: int, path: Path, timeout: float, interval: float) -> None:
    if flock_within(fd, timeout, interval):
        return
    holder = _holder(path)
    who = f" (pid {holder})" if holder else ""
    waited = f" after waiting {timeout:g} s" if timeout > 0 else ""
    raise ApplyLocked(f"another pvestrap apply is running on this node{who}{waited}",
                      remedy="wait for it to finish, or pass a longer --lock-timeout")


def _holder(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
