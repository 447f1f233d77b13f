"""The effector every apply step goes through: commands, files under a root, the clock.

Steps never call subprocess or open() themselves. They receive a `System`, so one step list serves a
real apply (`RealSystem`), a lab node whose files live under a folder (`RealSystem(root=...)`), a
dry run that records instead of acting and tests (an in-memory node): `DryRunSystem` and
`RecordingSystem` in pvestrap.recorded. The `System` protocol declares everything callers use;
nothing asks a system for more. Secrets (the root password of a join) travel as `Secret` values:
they reach the command and nothing else; every record, error and CompletedProcess shows `<secret>`
instead.
"""

from __future__ import annotations

import os
import shlex
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Protocol, Sequence, Union, overload

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed
from pvestrap.inputs import read_limited

DEFAULT_TIMEOUT = 120.0
QUERY_TIMEOUT = 15.0  # a read-only command: corosync's and chrony's tools answer at once
SECRET_MARK = "<secret>"


@dataclass(frozen=True)
class Secret:
    """A value that may be handed to a command but never recorded, printed or logged."""

    value: str = field(repr=False)

    def __str__(self) -> str:
        return SECRET_MARK

    def __repr__(self) -> str:
        return f"Secret({SECRET_MARK})"


Arg = Union[str, Secret]


@dataclass(frozen=True)
class OwnedFile:
    """What one open file held (at most the limit asked for + 1 bytes, nothing when it is not
    a regular file) and what fstat said of that same file: no swap between check and read."""

    data: bytes = field(repr=False)
    mode: int
    uid: int
    regular: bool


@dataclass(frozen=True)
class CommandResult:
    """What a read-only command printed; never an exception (a tool that cannot start is rc
    127, a hang rc 124)."""

    argv: tuple[str, ...]
    rc: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0


Runner = Callable[[Sequence[str]], CommandResult]  # the read-only command seam


@overload
def reveal(value: Arg) -> str: ...


@overload
def reveal(value: Arg | None) -> str | None: ...


def reveal(value: Arg | None) -> str | None:
    return value.value if isinstance(value, Secret) else value


def redact(argv: Sequence[Arg]) -> tuple[str, ...]:
    return tuple(SECRET_MARK if isinstance(a, Secret) else str(a) for a in argv)


def show_command(argv: Sequence[Arg], input: Arg | None = None) -> str:
    """How a command appears in plans, logs and errors: quoted, secrets masked."""
    text = shlex.join(redact(argv))
    if isinstance(input, Secret):
        text += f" < {SECRET_MARK}"
    elif input:
        text += " < (input)"
    return text


def _scrub(text: str, secrets: Sequence[Secret]) -> str:
    """A program might echo what it was given; its output must not carry the secret on."""
    for s in secrets:
        if s.value:
            text = text.replace(s.value, SECRET_MARK)
    return text


class CommandFailed(OperationFailed):
    """A command exited non-zero. argv is already redacted; output is scrubbed of secrets."""

    code = "command-failed"

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str,
                 *, message: str | None = None, remedy: str | None = None):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        detail = f": {' / '.join(tail)}" if tail else ""
        super().__init__(message or f"`{shlex.join(self.argv)}` exited {returncode}{detail}",
                         remedy=remedy)


class CommandTimeout(CommandFailed):
    """A command did not finish in time; it and its children were killed."""

    code = "command-timeout"

    def __init__(self, argv: Sequence[str], timeout: float, stdout: str, stderr: str):
        self.timeout = timeout
        super().__init__(argv, None, stdout, stderr,
                         message=f"`{shlex.join(argv)}` did not finish within {timeout:g} s "
                                 "and was stopped")


class System(Protocol):
    """What a step may do. Paths are absolute paths as seen on the node (`/etc/corosync/...`)."""

    @property
    def dry_run(self) -> bool: ...

    @property
    def root(self) -> str:
        """Where the node's files are: "/", or a lab node's folder (locks live there too)."""
        ...

    def run(self, argv: Sequence[Arg], input: Arg | None = None,
            timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
            mutates: bool = True) -> subprocess.CompletedProcess[str]: ...

    def query(self, argv: Sequence[str], timeout: float = QUERY_TIMEOUT) -> CommandResult:
        """A read-only command (run even in a dry run) as a CommandResult: a System is a
        Runner too, the seam the checks and the status readers take."""
        ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def read_text(self, path: str) -> str | None: ...

    def file_mode(self, path: str) -> int | None: ...

    def read_owned(self, path: str, limit: int) -> OwnedFile | None: ...

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen:
        """Start a long-lived command (an ssh session holding a lock); only a system that
        really runs commands can, a fake or a dry run raises TypeError."""
        ...

    def write_bytes(self, path: str, data: bytes, mode: int | None = None,
                    backup: bool = True) -> None: ...

    def write_text(self, path: str, text: str, mode: int | None = None,
                   backup: bool = True) -> None: ...

    def remove(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool: ...


def poll(system: System, check: Callable[[], bool], timeout: float, interval: float) -> bool:
    """Call check until it holds or timeout passes (on the system's own clock); one last try."""
    deadline = system.now() + timeout
    while True:
        if check():
            return True
        left = deadline - system.now()
        if left <= 0:
            return False
        system.sleep(min(interval, left))


class Queries:
    """query() in terms of run(): every System's read-only seam is the same code."""

    def query(self, argv: Sequence[str], timeout: float = QUERY_TIMEOUT) -> CommandResult:
        run = self.run  # type: ignore[attr-defined]
        try:
            done = run(list(argv), timeout=timeout, check=False, mutates=False)
        except CommandTimeout as exc:
            return CommandResult(tuple(argv), 124, exc.stdout, exc.stderr or exc.message)
        except CommandFailed as exc:  # it could not start
            return CommandResult(tuple(argv), 127, "", exc.stderr or exc.message)
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


def run_command(argv: Sequence[str], timeout: float = 5.0) -> CommandResult:
    """A read-only command on this machine (the checks' default Runner). LC_ALL=C keeps outputs
    parseable (chronyc and timedatectl localise nothing today, but pveversion and ntpq could)."""
    return RealSystem(env={"LC_ALL": "C"}).query(argv, timeout)


# -- real ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealSystem(Queries):
    """Acts for real. `root` maps node paths (a lab node's files live under a folder); `env`
    is laid over the environment of every command; `wrap` prefixes every command (e.g.
    `nsenter -t PID -n -m` to run inside a lab node's namespaces). Command arguments are not
    rewritten by root.
    """

    root: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    wrap: tuple[str, ...] = ()
    dry_run: bool = False

    def path(self, path: str) -> Path:
        p = PurePosixPath(path)
        if not p.is_absolute():
            raise ValueError(f"node paths are absolute: {path!r}")
        return Path(self.root, *p.parts[1:])

    def run(self, argv: Sequence[Arg], input: Arg | None = None,
            timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
            mutates: bool = True) -> subprocess.CompletedProcess[str]:
        secrets = [a for a in (*argv, input) if isinstance(a, Secret)]
        shown = redact([*self.wrap, *argv])
        real = [*self.wrap, *(reveal(a) for a in argv)]
        env = {**os.environ, **self.env} if self.env else None
        try:
            proc = subprocess.Popen(real, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env,
                                    start_new_session=True)
        except OSError as exc:
            message = f"cannot run `{shlex.join(shown)}`: {exc.strerror}"
            raise CommandFailed(shown, None, "", str(exc), message=message) from None
        try:
            out, err = proc.communicate(reveal(input) or "", timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a daemonized grandchild keeps the pipes open
                out, err = "", ""
            assert timeout is not None  # only a limit expires
            raise CommandTimeout(shown, timeout, _scrub(out, secrets),
                                 _scrub(err, secrets)) from None
        result = subprocess.CompletedProcess(shown, proc.returncode, _scrub(out, secrets),
                                             _scrub(err, secrets))
        if check and result.returncode != 0:
            raise CommandFailed(shown, result.returncode, result.stdout, result.stderr)
        return result

    def read_bytes(self, path: str) -> bytes | None:
        try:
            return self.path(path).read_bytes()
        except FileNotFoundError:
            return None

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def file_mode(self, path: str) -> int | None:
        try:
            return stat.S_IMODE(self.path(path).stat().st_mode)
        except FileNotFoundError:
            return None

    def read_owned(self, path: str, limit: int) -> OwnedFile | None:
        try:
            data, info = read_limited(self.path(path), limit)
        except FileNotFoundError:
            return None
        return OwnedFile(data, stat.S_IMODE(info.st_mode), info.st_uid,
                         stat.S_ISREG(info.st_mode))

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen:
        if self.dry_run:
            raise TypeError("a dry run cannot hold an ssh session")
        env = {**os.environ, **self.env} if self.env else None
        return subprocess.Popen([*self.wrap, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True)

    def write_bytes(self, path: str, data: bytes, mode: int | None = None,
                    backup: bool = True) -> None:
        atomic_write(self.path(path), data, mode, backup)

    def write_text(self, path: str, text: str, mode: int | None = None,
                   backup: bool = True) -> None:
        self.write_bytes(path, text.encode("utf-8", errors="surrogateescape"), mode, backup)

    def remove(self, path: str) -> None:
        try:
            self.path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise OperationFailed(f"cannot remove {path}: {exc.strerror or exc}",
                                  code="remove-failed") from exc

    def exists(self, path: str) -> bool:
        return self.path(path).exists()

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        """Seconds since the epoch: the clock NTP keeps the same on every node, for a moment
        several nodes act at (now() is this process's own, for durations)."""
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool:
        return poll(self, check, timeout, interval)


def _kill_group(proc: subprocess.Popen) -> None:
    """The command runs in its own session: stop it and whatever it started, nothing else.
    TERM first (pvecm cleans up its lock), KILL for whatever is left of the group."""
    for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
