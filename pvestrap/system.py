"""The effector every apply step goes through: commands, files under a root, the clock.

Steps never call subprocess or open() themselves. They receive a `System`, so one step list
serves a real apply (`RealSystem`), a dry run that records instead of acting (`DryRunSystem`),
a lab node whose files live under a folder (`RealSystem(root=...)`) and tests
(`RecordingSystem`, an in-memory fake). Secrets (the root password of a join) travel as
`Secret` values: they reach the command and nothing else; every record, error and
CompletedProcess shows `<secret>` instead.
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
from typing import Callable, Mapping, Protocol, Sequence, Union

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed

DEFAULT_TIMEOUT = 120.0
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

    dry_run: bool

    def run(self, argv: Sequence[Arg], input: Arg | None = None,
            timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
            mutates: bool = True) -> subprocess.CompletedProcess[str]: ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def read_text(self, path: str) -> str | None: ...

    def file_mode(self, path: str) -> int | None: ...

    def read_owned(self, path: str, limit: int) -> OwnedFile | None: ...

    def write_bytes(self, path: str, data: bytes, mode: int | None = None,
                    backup: bool = True) -> None: ...

    def write_text(self, path: str, text: str, mode: int | None = None,
                   backup: bool = True) -> None: ...

    def remove(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def now(self) -> float: ...

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


# -- real ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealSystem:
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
            fd = os.open(self.path(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            regular = stat.S_ISREG(st.st_mode)
            chunks: list[bytes] = []
            while regular and (left := limit + 1 - sum(map(len, chunks))) > 0:
                chunk = os.read(fd, left)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        return OwnedFile(b"".join(chunks), stat.S_IMODE(st.st_mode), st.st_uid, regular)

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


# -- records ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordedCommand:
    argv: tuple[str, ...]  # redacted
    input: str | None      # "<secret>" for secrets
    mutates: bool = True

    def __str__(self) -> str:
        return show_command(self.argv) + (f" < {self.input}" if self.input == SECRET_MARK
                                           else " < (input)" if self.input else "")


@dataclass(frozen=True)
class RecordedWrite:
    path: str
    text: str
    mode: int | None
    backup: bool = True


@dataclass(frozen=True)
class RecordedRemove:
    path: str


@dataclass(frozen=True)
class RecordedWait:
    what: str
    timeout: float


Record = Union[RecordedCommand, RecordedWrite, RecordedRemove, RecordedWait]


def _record_command(argv: Sequence[Arg], input: Arg | None, mutates: bool) -> RecordedCommand:
    shown_input = SECRET_MARK if isinstance(input, Secret) else input
    return RecordedCommand(redact(argv), shown_input, mutates)


class DryRunSystem:
    """Reads the real node (through `inner`), changes nothing, and records what it would do.

    Writes and removals land in an overlay, so a later read in the same run sees them; commands
    marked `mutates=False` (queries) really run, the others are recorded and answered with exit 0
    and no output; waits are recorded and reported as met.
    """

    dry_run = True

    def __init__(self, inner: System):
        self.inner = inner
        self.records: list[Record] = []
        self._overlay: dict[str, tuple[bytes, int | None] | None] = {}
        self._slept = 0.0

    def run(self, argv: Sequence[Arg], input: Arg | None = None,
            timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
            mutates: bool = True) -> subprocess.CompletedProcess[str]:
        if not mutates:
            return self.inner.run(argv, input, timeout, check, mutates=False)
        self.records.append(_record_command(argv, input, mutates))
        return subprocess.CompletedProcess(redact(argv), 0, "", "")

    def read_bytes(self, path: str) -> bytes | None:
        if path in self._overlay:
            entry = self._overlay[path]
            return None if entry is None else entry[0]
        return self.inner.read_bytes(path)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def file_mode(self, path: str) -> int | None:
        if path in self._overlay:
            entry = self._overlay[path]
            return None if entry is None else entry[1]
        return self.inner.file_mode(path)

    def read_owned(self, path: str, limit: int) -> OwnedFile | None:
        if path in self._overlay:
            entry = self._overlay[path]  # written by this dry run: ours
            return None if entry is None else OwnedFile(entry[0][:limit + 1], entry[1] or 0o644,
                                                        os.geteuid(), True)
        return self.inner.read_owned(path, limit)

    def write_bytes(self, path: str, data: bytes, mode: int | None = None,
                    backup: bool = True) -> None:
        text = data.decode("utf-8", errors="replace")
        self.records.append(RecordedWrite(path, text, mode, backup))
        self._overlay[path] = (data, mode if mode is not None else self.file_mode(path))

    def write_text(self, path: str, text: str, mode: int | None = None,
                   backup: bool = True) -> None:
        self.write_bytes(path, text.encode("utf-8", errors="surrogateescape"), mode, backup)

    def remove(self, path: str) -> None:
        self.records.append(RecordedRemove(path))
        self._overlay[path] = None

    def exists(self, path: str) -> bool:
        if path in self._overlay:
            return self._overlay[path] is not None
        return self.inner.exists(path)

    def now(self) -> float:
        return self.inner.now() + self._slept

    def sleep(self, seconds: float) -> None:
        self._slept += max(0.0, seconds)

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool:
        self.records.append(RecordedWait(what, timeout))
        return True


# -- test fake -------------------------------------------------------------------------------------

Responder = Callable[["RecordingSystem", tuple[str, ...], "str | None"],
                     "subprocess.CompletedProcess[str] | tuple[int, str, str]"]


class RecordingSystem:
    """An in-memory node for tests: files in a dict, a fake clock, scripted command answers.

    `on(prefix, answer)` answers commands whose argv starts with prefix; answer is
    (returncode, stdout, stderr) or a function (system, argv, input) -> that tuple, which may
    change files (to act like the real program). Unscripted commands succeed silently.
    Everything is recorded with secrets masked; `secrets_seen` holds what the commands really
    got, so a test can prove the password reached stdin.
    """

    dry_run = False

    def __init__(self, files: Mapping[str, str | bytes] | None = None):
        self.files: dict[str, tuple[bytes, int]] = {}
        for path, content in (files or {}).items():
            data = content.encode() if isinstance(content, str) else content
            self.files[path] = (data, 0o644)
        self.records: list[Record] = []
        self.secrets_seen: list[str] = []
        self.clock = 0.0
        self._answers: list[tuple[tuple[str, ...], object]] = []
        self.fail_writes: set[str] = set()

    def on(self, prefix: Sequence[str], answer: object) -> "RecordingSystem":
        self._answers.insert(0, (tuple(prefix), answer))
        return self

    @property
    def commands(self) -> list[tuple[str, ...]]:
        return [r.argv for r in self.records if isinstance(r, RecordedCommand)]

    def run(self, argv: Sequence[Arg], input: Arg | None = None,
            timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
            mutates: bool = True) -> subprocess.CompletedProcess[str]:
        self.records.append(_record_command(argv, input, mutates))
        self.secrets_seen += [a.value for a in (*argv, input) if isinstance(a, Secret)]
        plain = tuple(reveal(a) for a in argv)
        rc, out, err = 0, "", ""
        for prefix, answer in self._answers:
            if plain[:len(prefix)] == prefix:
                got = answer(self, plain, reveal(input)) if callable(answer) else answer
                rc, out, err = (got.returncode, got.stdout, got.stderr) \
                    if isinstance(got, subprocess.CompletedProcess) else got
                break
        if rc == -1:
            raise CommandTimeout(redact(argv), timeout or 0, out, err)
        if check and rc != 0:
            raise CommandFailed(redact(argv), rc, out, err)
        return subprocess.CompletedProcess(redact(argv), rc, out, err)

    def read_bytes(self, path: str) -> bytes | None:
        entry = self.files.get(path)
        return None if entry is None else entry[0]

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="surrogateescape")

    def file_mode(self, path: str) -> int | None:
        entry = self.files.get(path)
        return None if entry is None else entry[1]

    def read_owned(self, path: str, limit: int) -> OwnedFile | None:
        entry = self.files.get(path)  # an in-memory node: every file is root's
        return None if entry is None else OwnedFile(entry[0][:limit + 1], entry[1], 0, True)

    def write_bytes(self, path: str, data: bytes, mode: int | None = None,
                    backup: bool = True) -> None:
        if path in self.fail_writes:
            raise OSError(28, "No space left on device", path)
        self.records.append(RecordedWrite(path, data.decode("utf-8", "replace"), mode, backup))
        old = self.files.get(path)
        if old is not None and backup:
            self.files[path + ".bak"] = old
        self.files[path] = (data, mode if mode is not None else old[1] if old else 0o644)

    def write_text(self, path: str, text: str, mode: int | None = None,
                   backup: bool = True) -> None:
        self.write_bytes(path, text.encode("utf-8", errors="surrogateescape"), mode, backup)

    def remove(self, path: str) -> None:
        self.records.append(RecordedRemove(path))
        self.files.pop(path, None)

    def exists(self, path: str) -> bool:
        return path in self.files or any(p.startswith(path.rstrip("/") + "/") for p in self.files)

    def now(self) -> float:
        return self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += max(0.0, seconds)

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool:
        self.records.append(RecordedWait(what, timeout))
        return poll(self, check, timeout, interval)
