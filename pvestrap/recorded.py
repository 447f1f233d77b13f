"""Systems that record instead of acting: DryRunSystem (what `apply --dry-run` shows: it reads
the real node and records every change) and RecordingSystem (an in-memory node for tests, with
scripted command answers). Both keep pvestrap.system's System contract.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

from pvestrap.system import (DEFAULT_TIMEOUT, SECRET_MARK, Arg, CommandFailed, CommandTimeout,
                             OwnedFile, Queries, Secret, System, poll, redact, reveal,
                             show_command)


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
# What a command answers (RecordingSystem.on): (returncode, stdout, stderr) or a
# CompletedProcess, or a function (system, argv, input) that returns one of them.
Reply = Union[tuple[int, str, str], "subprocess.CompletedProcess[str]"]
Answer = Union[Reply, Callable[["RecordingSystem", tuple[str, ...], "str | None"], Reply]]


def _record_command(argv: Sequence[Arg], input: Arg | None, mutates: bool) -> RecordedCommand:
    shown_input = SECRET_MARK if isinstance(input, Secret) else input
    return RecordedCommand(redact(argv), shown_input, mutates)


class DryRunSystem(Queries):
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

    @property
    def root(self) -> str:
        return self.inner.root

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen:
        raise TypeError("a dry run cannot hold an ssh session")

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

    def wall(self) -> float:
        return self.inner.wall() + self._slept

    def sleep(self, seconds: float) -> None:
        self._slept += max(0.0, seconds)

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool:
        self.records.append(RecordedWait(what, timeout))
        return True


# -- test fake -------------------------------------------------------------------------------------

WALL_EPOCH = 1_800_000_000.0  # the test fake's wall clock at its clock 0 (2027-01-15)

Responder = Callable[["RecordingSystem", tuple[str, ...], "str | None"],
                     "subprocess.CompletedProcess[str] | tuple[int, str, str]"]


class RecordingSystem(Queries):
    """An in-memory node for tests: files in a dict, a fake clock (wall() is WALL_EPOCH + it),
    scripted command answers.

    `on(prefix, answer)` answers commands whose argv starts with prefix; answer is
    (returncode, stdout, stderr) or a function (system, argv, input) -> that tuple, which may
    change files (to act like the real program). Unscripted commands succeed silently.
    Everything is recorded with secrets masked; `secrets_seen` holds what the commands really
    got, so a test can prove the password reached stdin.
    """

    dry_run = False
    root = "/"  # its files are in memory; locks, like the real node's, under /

    def __init__(self, files: Mapping[str, str | bytes] | None = None):
        self.files: dict[str, tuple[bytes, int]] = {}
        for path, content in (files or {}).items():
            data = content.encode() if isinstance(content, str) else content
            self.files[path] = (data, 0o644)
        self.records: list[Record] = []
        self.secrets_seen: list[str] = []
        self.clock = 0.0
        self._answers: list[tuple[tuple[str, ...], Answer]] = []
        self.fail_writes: set[str] = set()

    def on(self, prefix: Sequence[str], answer: Answer) -> "RecordingSystem":
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

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen:
        raise TypeError("an in-memory node cannot hold an ssh session")

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

    def wall(self) -> float:
        return WALL_EPOCH + self.clock

    def sleep(self, seconds: float) -> None:
        self.clock += max(0.0, seconds)

    def wait_until(self, check: Callable[[], bool], timeout: float, interval: float = 0.5,
                   what: str = "condition") -> bool:
        self.records.append(RecordedWait(what, timeout))
        return poll(self, check, timeout, interval)
