"""Processes and namespaces of a lab: run tools, start detached helpers, find and end leftovers.

Ending processes is always by pid, and only for processes that are provably the lab's: they
live in one of the lab's network namespaces, or their command line carries the lab's tag or
state path. A pid from the state file alone is never trusted (it may have been reused).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from pvestrap.errors import OperationFailed

HERE = Path(__file__).resolve().parent
NETNS_DIR = Path("/run/netns")


def _fail(argv: Sequence[str], result: subprocess.CompletedProcess | None, why: str = "") -> \
        OperationFailed:
    if result is not None:
        why = (result.stderr or "").strip() or f"exit status {result.returncode}"
    return OperationFailed(f"`{' '.join(argv[:6])}` failed: {why}", code="lab-command-failed")


def run(argv: Sequence[str], input: str | None = None, check: bool = True,
        timeout: float = 60.0) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _fail(argv, None, str(exc)) from None
    if check and result.returncode != 0:
        raise _fail(argv, result)
    return result


def run_all(jobs: Sequence[tuple[Sequence[str], str | None]], check: bool = True,
            timeout: float = 60.0) -> list[subprocess.CompletedProcess]:
    """Run independent commands at the same time (16 nodes must not cost 16 round trips)."""
    procs = []
    for argv, _ in jobs:
        try:
            procs.append(subprocess.Popen(list(argv), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
        except OSError as exc:
            for p in procs:
                p.kill()
                p.wait()
            raise _fail(argv, None, str(exc)) from None
    results = []
    deadline = time.monotonic() + timeout
    for (argv, stdin), proc in zip(jobs, procs):
        try:
            out, err = proc.communicate(stdin, timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append(subprocess.CompletedProcess(list(argv), proc.returncode, out, err))
    if check:
        for result in results:
            if result.returncode != 0:
                raise _fail(result.args, result)
    return results


def ip_batch(lines: Iterable[str], netns: str | None = None) -> tuple[list[str], str]:
    """An `ip -batch` job (argv, input): one process for many link/address changes."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
    return argv, "".join(f"{line}\n" for line in lines)


# -E -s -S: no PYTHON* variables, no user or system site-packages (the scripts use the standard
# library only), as -I would; but not -P, so the script's own folder comes first on sys.path and
# holder.py imports detach.py beside it by name (no module here has a standard library name:
# tests/test_lab_scripts.py).
SCRIPT_FLAGS = ("-E", "-s", "-S")


def script(name: str) -> list[str]:
    """Run one of the lab's standalone scripts with this Python, without site or environment."""
    return [sys.executable, *SCRIPT_FLAGS, str(HERE / name)]


def spawn(argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
          ready: bool = False, timeout: float = 20.0) -> int:
    """Start ARGV detached (see detach.py) and return its pid."""
    spec = {"argv": list(argv), "log": str(log), "env": env or {}, "ready": ready,
            "timeout": timeout}
    result = run(script("detach.py") + [json.dumps(spec)], check=False, timeout=timeout + 5)
    if result.returncode != 0:
        tail = _tail(log)
        raise OperationFailed(f"cannot start {argv[-1] if argv else '?'}: "
                              f"{result.stderr.strip()}{tail}", code="lab-start-failed")
    return int(result.stdout.strip())


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()[-5:]
    except OSError:
        return ""
    return ("\n  " + "\n  ".join(lines)) if lines else ""


def netns_inode(name: str) -> int | None:
    try:
        return (NETNS_DIR / name).stat().st_ino
    except OSError:
        return None


def netns_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    net: int | None
    cmdline: str


def net_inode(pid: int) -> int | None:
    try:
        link = os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return int(link[link.index("[") + 1:-1])


def info(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return ProcInfo(pid, net_inode(pid), raw.replace(b"\0", b" ").decode(errors="replace").strip())


def processes() -> Iterator[ProcInfo]:
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            found = info(int(entry))
            if found is not None and found.cmdline:
                yield found


def alive(pid: int | None, net: int | None = None) -> bool:
    """Whether PID runs (not a zombie) and, if NET is given, lives in that network namespace."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rpartition(")")[2].split()[0] in ("Z", "X"):
        return False
    return net is None or net_inode(pid) == net


def kill(pids: Iterable[int], timeout: float = 3.0, sig: int = signal.SIGKILL) -> list[int]:
    """Signal PIDS and wait until they are gone; return those still there after TIMEOUT."""
    pending = set()
    for pid in pids:
        try:
            os.kill(pid, sig)
            pending.add(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            _reap(pid)
            if not alive(pid):
                pending.discard(pid)
        if pending:
            time.sleep(0.01)
    return sorted(pending)


def _reap(pid: int) -> None:
    """A process this very process started (a test's popen) must be reaped here."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
