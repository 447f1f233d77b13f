"""A cluster member reached over SSH, the way `pvecm add --use_ssh` reaches it.

Root logs in with a key (`BatchMode=yes`: a missing key or an unknown host key fails at once
instead of prompting), every command has a timeout, and ssh's own exit code 255 (connection or
login failed) is told apart from the remote command failing, also with 255 (the member's shell
says on stderr that it started the command). Commands go through the local
`System`, so a lab node's `wrap` runs ssh inside that node and a dry run records writes.

Files travel base64-encoded on stdin and stdout: binary content (the authkey) survives text
pipes and never appears on a command line or in a process list. A write is the `.new` + `mv`
dance (a reader sees the old file or the new one), keeping the previous file as `.bak`.

Joins are serialized by an flock on the member (`member_lock`), held by one long-running ssh
session for the whole join; the kernel drops it when that session ends, so a joiner that dies
never leaves a stale lock. The session is also an ssh control master: the join's other commands
to that member reuse its connection instead of paying for a new handshake each.

`MembersStep` is the join's edit of the cluster: the new corosync.conf on every member, one
reload, and on failure every member's previous files put back byte for byte.
"""

from __future__ import annotations

import base64
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from pvestrap.apply.engine import Action, PlannedCommand
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.paths import COROSYNC_CONF as CONF
from pvestrap.reach import by_name
from pvestrap.render import Change
from pvestrap.system import Arg, CommandFailed, CommandTimeout, Secret, System

SSH_UNREACHABLE = 255  # ssh's own failure: no route, refused, no key, host key mismatch
# What the member's shell prints to stderr before a command: exit 255 with it is the command's
# own (a Perl tool that dies, pvecm among them, exits 255), without it ssh's.
STARTED = "\x1epvestrap-started\x1e"
STARTED_SH = f"printf {shlex.quote(STARTED)} >&2;"  # no % or backslash: printed as is
JOIN_LOCK = "/run/pvestrap/join.lock"
CONTROL_DIR = "/run/pvestrap"
CONTROL_PATH = CONTROL_DIR + "/ssh-%C"  # ssh expands %C to a hash of (local host, host, port, user)
# The member's join lock is a lease: its holder on the member exits (and flock lets go) when the
# joiner's heartbeat stops for LOCK_LEASE_S, so a joiner that loses power or its network frees
# the member within that bound instead of when sshd notices the dead connection (hours with TCP
# keepalive). perl-base is Essential on Debian and Proxmox VE, so every member has perl.
LOCK_LEASE_S = 15
HEARTBEAT_S = LOCK_LEASE_S / 5
LEASE_HOLDER = ('$| = 1; print "locked\\n"; $SIG{ALRM} = sub { exit 0 }; '
                'while (1) { alarm(%d); defined(my $beat = <STDIN>) or exit 0; }')
ABSENT = "-"  # on the stdin of a `put`: remove the file instead of writing it

# Shell functions sent ahead of a remote script. `show` prints one line per file:
# "file PATH MODE BASE64" or "none PATH". `put PATH MODE` reads one line of base64 (or "-")
# from stdin and writes PATH atomically (PATH.new, fsync, rename) or removes it.
_SHOW = ('show() { if [ -f "$1" ]; then printf "file %s %s " "$1" "$(stat -c %a -- "$1")"; '
         'base64 -w0 -- "$1"; echo; else printf "none %s\\n" "$1"; fi; }')
_PUT = ('put() { IFS= read -r data || data=""; if [ "$data" = "' + ABSENT + '" ]; then '
        'rm -f -- "$1"; return 0; fi; printf "%s" "$data" | base64 -d > "$1.new"; '
        'chmod "$2" "$1.new"; sync -- "$1.new" 2>/dev/null || :; mv -f -- "$1.new" "$1"; }')


class MemberUnreachable(OperationFailed):
    """ssh could not reach or log in to the member, or it did not answer in time."""

    code = "member-unreachable"


class RemoteCommandFailed(OperationFailed):
    """The command ran on the member and failed; `stdout` is what it printed before."""

    code = "remote-command-failed"

    def __init__(self, message: str, stdout: str = ""):
        super().__init__(message)
        self.stdout = stdout


class JoinLocked(OperationFailed):
    """Another join held the member's lock for longer than we were willing to wait."""

    code = "join-locked"


@dataclass(frozen=True)
class RemoteFile:
    """A file's state on a member: data None means it does not exist."""

    path: str
    data: bytes | None
    mode: int | None

    def put_line(self) -> str:
        return ABSENT if self.data is None else base64.b64encode(self.data).decode()

    @property
    def mode_text(self) -> str:
        return f"{self.mode if self.mode is not None else 0o644:o}"


def parse_show(text: str) -> dict[str, RemoteFile]:
    """The `show` lines of a remote script's output (other lines are left alone)."""
    import binascii

    out: dict[str, RemoteFile] = {}
    for line in text.splitlines():
        words = line.split(" ", 3)
        if words[0] == "none" and len(words) == 2:
            out[words[1]] = RemoteFile(words[1], None, None)
        elif words[0] == "file" and len(words) >= 3:
            try:
                data = base64.b64decode(words[3] if len(words) == 4 else "", validate=True)
                out[words[1]] = RemoteFile(words[1], data, int(words[2], 8))
            except (binascii.Error, ValueError):
                continue
    return out


def show_script(paths: Sequence[str]) -> str:
    return "; ".join([_SHOW, *(f"show {shlex.quote(p)}" for p in paths)])


def put_script(files: Sequence[RemoteFile]) -> tuple[str, str]:
    """(script, stdin) that make each file exactly as given (content and mode, or absent)."""
    script = "; ".join(["set -e", "umask 077", _PUT,
                        *(f"put {shlex.quote(f.path)} {f.mode_text}" for f in files)])
    return script, "".join(f.put_line() + "\n" for f in files)


def replace_script(path: str, keep_backup: bool = True) -> str:
    """Print the current state of PATH and PATH.bak, then replace PATH with stdin's base64,
    keeping its mode (0644 for a new file) and moving the old content to PATH.bak."""
    p = shlex.quote(path)
    bak = shlex.quote(path + ".bak")
    lines = ["set -e", "umask 077", _SHOW, _PUT, f"show {p}", f"show {bak}",
             f'mode=$(stat -c %a -- {p} 2>/dev/null || echo 644)']
    if keep_backup:
        lines.append(f"if [ -f {p} ]; then cp -p -- {p} {bak}.new; mv -f -- {bak}.new {bak}; fi")
    lines.append(f'put {p} "$mode"')
    return "; ".join(lines)


def replaced(path: str, run: Callable[[], subprocess.CompletedProcess[str]]
             ) -> tuple[tuple[RemoteFile, RemoteFile] | None, str | None]:
    """RUN a replace_script of PATH: (PATH's and PATH.bak's states before it, None when the reply
    lacks either; the error, None on success). A failed run counts what it printed first."""
    try:
        out, error = run().stdout, None
    except RemoteCommandFailed as exc:
        out, error = exc.stdout, exc.message
    except PvestrapError as exc:
        return None, exc.message
    files = parse_show(out)
    old, bak = files.get(path), files.get(path + ".bak")
    return (None if old is None or bak is None else (old, bak)), error


@dataclass(frozen=True)
class Remote:
    """One member, reached through the local system's ssh."""

    system: System
    address: str
    user: str = "root"
    timeout: float = 30.0
    connect_timeout: float = 5.0
    control_path: str | None = None

    @property
    def target(self) -> str:
        return f"{self.user}@{self.address}"

    def options(self) -> list[str]:
        """UpdateHostKeys=no: OpenSSH's default (yes) appends the other host keys a known host
        offers to root's known_hosts on every connection, a change outside the plan that no
        undo restores (ssh_config(5))."""
        connect = max(1, round(self.connect_timeout))
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2",
                "-o", "UpdateHostKeys=no"]
        if self.control_path:
            opts += ["-o", "ControlMaster=no", "-o", f"ControlPath={self.control_path}"]
        return opts

    def argv(self, script: str, marked: bool = False) -> tuple[str, ...]:
        """MARKED: the member's shell says on stderr that it started SCRIPT (ssh joins the words
        after the host into one command line)."""
        return ("ssh", *self.options(), self.target, "--", *([STARTED_SH] if marked else []),
                script)

    def shown(self, command: str) -> tuple[str, ...]:
        """How a remote command appears in a plan: short, without the ssh options."""
        return ("ssh", self.target, command)

    def run(self, script: str, what: str, input: Arg | None = None, mutates: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        limit = self.timeout if timeout is None else timeout
        try:
            return self.system.run(self.argv(script, marked=True), input=input, timeout=limit,
                                   mutates=mutates)
        except CommandTimeout:
            raise MemberUnreachable(f"{self.address} did not finish '{what}' within {limit:g} s",
                                    remedy=self._remedy()) from None
        except CommandFailed as exc:
            # stderr only: what a read printed (an authkey, in base64) stays out of messages
            stderr = exc.stderr.replace(STARTED, "")
            tail = " / ".join(stderr.strip().splitlines()[-3:])
            if self.ssh_failed(exc.returncode, exc.stderr):
                raise MemberUnreachable(f"cannot reach {self.target} over ssh for '{what}'"
                                        + (f": {tail}" if tail else ""),
                                        remedy=self._remedy()) from None
            raise RemoteCommandFailed(f"'{what}' failed on {self.address} (exit "
                                      f"{exc.returncode})" + (f": {tail}" if tail else ""),
                                      exc.stdout) from None

    def ssh_failed(self, returncode: int | None, stderr: str) -> bool:
        """ssh itself failed (not the command: the member's shell never said it started)."""
        return returncode == SSH_UNREACHABLE and STARTED not in stderr

    def _remedy(self) -> str:
        return (f"check that {self.address} is up and that root on this node can log in there "
                f"with a key and a known host key (`ssh {self.target} true` must work without "
                "a prompt)")

    def read_files(self, paths: Sequence[str], what: str = "read files"
                   ) -> dict[str, RemoteFile]:
        result = self.run(show_script(paths), what, mutates=False)
        found = parse_show(result.stdout)
        missing = [p for p in paths if p not in found]
        if missing:
            raise RemoteCommandFailed(f"'{what}' on {self.address} returned nothing for "
                                      f"{', '.join(missing)}")
        return found

    def put_files(self, files: Sequence[RemoteFile], what: str = "restore files") -> None:
        script, stdin = put_script(files)
        secret = any(f.path.endswith("authkey") for f in files)
        self.run(script, what, input=Secret(stdin) if secret else stdin)


# -- the member lock -------------------------------------------------------------------------------

def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Close the session's stdin (the remote lease holder ends, flock lets go, ssh exits); stop it
    and what it started if it does not."""
    try:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def _first_line(proc: subprocess.Popen, timeout: float) -> bytes:
    """The session's first line, or b"" when it ends or says nothing in time."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return b""
        chunk = os.read(fd, 256)
        if not chunk:
            return b""
        data += chunk
    return data.split(b"\n", 1)[0]


def _try_lock(system: System, remote: Remote, wait: float,
              waiter: Callable[[float], str] | None = None
              ) -> tuple[subprocess.Popen | None, bytes]:
    """One attempt: (the session, what it said: b"locked", or b"batched" from a WAITER that
    ends the wait without the lock), or (None, b"") when the lock stayed busy for WAIT seconds."""
    script = waiter(wait) if waiter is not None else (
        f"mkdir -p {shlex.quote(os.path.dirname(JOIN_LOCK))} && exec " + shlex.join(
            ["flock", "-w", str(max(1, round(wait))), JOIN_LOCK, "perl", "-e",
             LEASE_HOLDER % LOCK_LEASE_S]))
    opts = replace(remote, control_path=None).options()
    master = ["-o", "ControlMaster=yes", "-o", f"ControlPath={CONTROL_PATH}",
              "-o", "ControlPersist=no"]
    proc = system.spawn(["ssh", *opts, *master, remote.target, "--", script])
    line = _first_line(proc, wait + remote.connect_timeout + 10).strip()
    if line in (b"locked", b"batched"):
        return proc, line
    _stop(proc, grace=2)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.returncode == SSH_UNREACHABLE or (proc.returncode not in (1, None) and not line):
        raise MemberUnreachable(f"cannot reach {remote.target} over ssh to take the join lock"
                                + (f": {err.splitlines()[-1]}" if err else ""),
                                remedy=remote._remedy())
    return None, b""


@contextmanager
def member_lock(system: System, remote: Remote, wait: float = 60.0, retries: int = 3,
                backoff: float = 1.0, notify: Callable[[str], None] | None = None,
                waiter: Callable[[float], str] | None = None) -> Iterator[str | None]:
    """Hold the member's join lock for the block; yields the ssh ControlPath that reuses the
    lock's connection. Waits up to WAIT seconds per attempt, RETRIES more attempts after a
    pause (NOTIFY hears of each), then raises JoinLocked. WAITER: the program that waits on the
    member instead of flock (apply.batch's queue); when it says the holder of the lock took
    this node into its batch, the block runs without the lock and gets None (its connection,
    CONTROL_PATH, stays open for the block)."""
    system.run(["mkdir", "-p", CONTROL_DIR], timeout=10)
    proc, said = None, b""
    for attempt in range(retries + 1):
        proc, said = _try_lock(system, remote, wait, waiter)
        if proc is not None:
            break
        if attempt < retries:
            pause = backoff * 2 ** attempt
            if notify is not None:
                notify(f"join lock on {remote.address} still busy after {wait:g} s; trying "
                       f"again in {pause:g} s (attempt {attempt + 2} of {retries + 1})")
            system.sleep(pause)
    if proc is None:
        raise JoinLocked(f"{remote.address} stayed locked by another join for "
                         f"{(retries + 1) * wait:g} s", remedy=f"check what holds {JOIN_LOCK} on "
                         f"{remote.address} (`fuser -v {JOIN_LOCK}`), then apply again")
    if said == b"batched":  # the session stays for the block: CONTROL_PATH reuses it
        try:
            yield None
        finally:
            _stop(proc)
        return
    beating = threading.Event()
    heart = threading.Thread(target=_heartbeat, args=(proc, beating), daemon=True)
    heart.start()
    try:
        yield CONTROL_PATH
    finally:
        beating.set()
        heart.join()
        _stop(proc)


def _heartbeat(proc: subprocess.Popen, stop: threading.Event) -> None:
    """Keep the member's lease on the join lock alive while the join runs."""
    while not stop.wait(HEARTBEAT_S):
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            return  # the session is gone: the lease ends on the member by itself


# -- the join's edit of every member ---------------------------------------------------------------

@dataclass(frozen=True)
class MemberAddress:
    name: str
    address: str  # where ssh reaches the member (reach_address)


def reach_address(name: str, link0: str, target: str, resolver: Resolver = resolve) -> str:
    """Where this node reaches member NAME over SSH, the way Proxmox VE reaches its nodes
    (pvestrap.reach: by the node name when it resolves here to non-loopback addresses only,
    else at its link0 address). The member the join talks to (TARGET, plan.join_address) is
    reached at TARGET, so its ssh connection is shared."""
    found = resolver(name)
    if target in (name, link0, *found):
        return target
    return by_name(name, link0, found)


def members_of(conf: CorosyncConf, target: str, resolver: Resolver = resolve,
               leaving: str | None = None) -> tuple[MemberAddress, ...]:
    """CONF's members but LEAVING, each with the address it is reached at (reach_address)."""
    return tuple(MemberAddress(str(n.name), reach_address(str(n.name), n.addresses[min(
        n.addresses)], target, resolver)) for n in conf.nodes if n.name != leaving)


@dataclass(frozen=True)
class MembersStep:
    """The new corosync.conf on every member (`.new` + mv, `.bak` kept), then one reload."""

    members: tuple[MemberAddress, ...]
    reload_at: str
    before: str
    after: str
    remote: Callable[[System, str], Remote] = field(compare=False)
    id: str = "update-members"

    @property
    def description(self) -> str:
        names = ", ".join(f"{m.name} (ssh to {m.address})" for m in self.members)
        return f"write the new {CONF} on {names} and reload corosync there"

    def plan(self, system: System) -> list[Action]:
        changes: list[Action] = [Change(f"{m.name}:{CONF}", self.before, self.after,
                                        0o644) for m in self.members]
        reload = self.remote(system, self.reload_at).shown("corosync-cfgtool -R")
        return changes + [PlannedCommand(reload)]

    def apply(self, system: System) -> dict[str, tuple[RemoteFile, RemoteFile]]:
        """The other members first, at the same time; then the member that reloads, which
        writes and reloads in one call (each ssh call costs a process and a remote shell)."""
        stdin = base64.b64encode(self.after.encode()).decode() + "\n"
        last = [m for m in self.members if m.address == self.reload_at][:1]
        first = [m for m in self.members if m not in last]
        results = _each(first, lambda m: self._replace(system, m, stdin, reload=False))
        errors = [f"{name}: {error}" for name, (_, error) in results.items() if error]
        if not errors and last:
            results[last[0].name] = self._replace(system, last[0], stdin, reload=True)
            errors += [f"{last[0].name}: {results[last[0].name][1]}"] \
                if results[last[0].name][1] else []
        elif not errors:
            try:
                self.remote(system, self.reload_at).run("corosync-cfgtool -R",
                                                        "corosync-cfgtool -R")
            except PvestrapError as exc:
                errors.append(f"reload at {self.reload_at}: {exc.message}")
        memo = {name: states for name, (states, _) in results.items() if states is not None}
        if not errors:
            return memo
        self._put_back(system, memo)
        raise OperationFailed("the members' corosync.conf could not be updated (" +
                              "; ".join(errors) + "); what was written is put back",
                              code="members-update-failed",
                              remedy="check ssh to every member and their free space")

    def _replace(self, system: System, member: MemberAddress, stdin: str, reload: bool
                 ) -> tuple[tuple[RemoteFile, RemoteFile] | None, str | None]:
        remote = self.remote(system, member.address)
        script = replace_script(CONF) + ("; corosync-cfgtool -R" if reload else "")
        what = "write corosync.conf" + (" and reload" if reload else "")
        return replaced(CONF, lambda: remote.run(script, what, input=stdin))

    def _put_back(self, system: System, memo: dict[str, tuple[RemoteFile, RemoteFile]]) -> None:
        by_name = {m.name: m for m in self.members}
        results = _each([by_name[n] for n in memo],
                        lambda m: self._put(system, m, memo[m.name]))
        errors = [f"{name}: {error}" for name, (_, error) in results.items() if error]
        if memo:
            try:
                self.remote(system, self.reload_at).run("corosync-cfgtool -R",
                                                        "corosync-cfgtool -R")
            except PvestrapError as exc:
                errors.append(f"reload at {self.reload_at}: {exc.message}")
        if errors:
            raise OperationFailed("could not put back corosync.conf on: " + "; ".join(errors),
                                  code="members-restore-failed",
                                  remedy=f"restore {CONF} from its .bak there by "
                                         "hand and run `corosync-cfgtool -R`")

    def _put(self, system: System, member: MemberAddress,
             states: tuple[RemoteFile, RemoteFile]) -> tuple[None, str | None]:
        try:
            self.remote(system, member.address).put_files(states, "put corosync.conf back")
            return None, None
        except PvestrapError as exc:
            return None, exc.message

    def undo(self, system: System, memo: dict[str, tuple[RemoteFile, RemoteFile]]) -> None:
        self._put_back(system, memo)


def _each(members: Sequence[MemberAddress], work: Callable[[MemberAddress], Any]
          ) -> dict[str, Any]:
    """WORK for every member at the same time (an ssh handshake each is most of the cost)."""
    if not members:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(members))) as pool:
        futures = {m.name: pool.submit(work, m) for m in members}
        return {name: future.result() for name, future in futures.items()}
