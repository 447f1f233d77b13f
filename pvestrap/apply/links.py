"""Changing a running cluster's corosync.conf on every member, in phases (link add/move, node
removal, the QDevice): reach the members, lock them, write, reload once, wait until every member
runs the new file; else put every member's files back byte for byte.

Each phase is the admin guide's manual procedure ("Edit corosync.conf": edit a `.new` copy,
bump config_version, keep a `.bak`, move it into place, let corosync reload) done for every
member over SSH: it writes the file on every member, runs `corosync-cfgtool -R` once (every
corosync of the cluster reloads its own file) and waits until every member runs the new
config_version and sees every other on every link at the configured addresses.

On Proxmox VE the cluster's copy, /etc/pve/corosync.conf in pmxcfs, is written too, the way
pvecm writes it (corosync.conf.new renamed over it under the cfs lock `file-corosync_conf`;
pve-cluster src/PVE/Corosync.pm atomic_write_conf, src/PVE/Cluster.pm cfs_lock_file), and after
the members' own files: pmxcfs copies a changed /etc/pve/corosync.conf to every member's
/etc/corosync and runs `corosync-cfgtool -R` one second later without knowing whether the others
have it yet, and never copies a lower config_version (src/pmxcfs/dcdb.c,
dcdb_sync_corosync_conf). With every member's file already equal it does neither, so the one
reload is pvestrap's and a rollback can put the old version back.
"""

from __future__ import annotations

import base64
import fcntl
import os
import posixpath
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait, unsettled
from pvestrap.apply.remote import (JOIN_LOCK, Remote, RemoteCommandFailed, RemoteFile,
                                   member_lock, parse_show, put_script, replace_script,
                                   replaced, show_script)
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import StatusUnparsable, parse_cfgtool_nodes
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.findings import Finding, fail
from pvestrap.paths import COROSYNC_CONF, PVE_COROSYNC_CONF
from pvestrap.render import Change
from pvestrap.system import System
from pvestrap.verify import Observed, convergence_findings, runtime_version

RELOAD = ("corosync-cfgtool", "-R")
CFS_LOCK = "/etc/pve/priv/lock/file-corosync_conf"  # cfs_lock_file('corosync.conf'), Cluster.pm
SPLIT = "@@pvestrap@@"


@dataclass(frozen=True)
class LinkTimeouts:
    verify: float = 60.0   # until every member runs the change and sees every link up
    poll: float = 0.5
    remote: float = 30.0   # one command on a member
    connect: float = 5.0   # ssh ConnectTimeout
    lock_wait: float = 30.0
    pings: int = 3


@dataclass(frozen=True)
class MemberHost:
    """A cluster member as pvestrap reaches it to run commands (corosync's view of a member is
    pvestrap.corosync.status.MemberHost)."""

    name: str
    nodeid: int
    address: str  # where pvestrap reaches it (ssh; the local node runs commands itself)
    local: bool = False


@dataclass(frozen=True)
class Phase:
    id: str
    description: str
    conf: CorosyncConf


# -- reaching the members --------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalShell(Remote):
    """This node: the same scripts as on a member, run by sh instead of ssh."""

    address: str = "this node"

    def argv(self, script: str, marked: bool = False) -> tuple[str, ...]:
        return ("sh", "-c", script)

    def ssh_failed(self, returncode: int | None, stderr: str) -> bool:
        return False  # no ssh: an exit 255 is the script's own


@dataclass(frozen=True)
class Cluster:
    """The cluster as this node sees it, and how each member is reached."""

    conf: CorosyncConf
    text: str
    observed: Observed
    members: tuple[MemberHost, ...]
    timeouts: LinkTimeouts = field(default_factory=LinkTimeouts)
    shared: str | None = None  # Proxmox VE: pmxcfs's cluster-wide copy, written with the members'

    @property
    def conf_file(self) -> tuple[str, int]:
        """The file a user reviews and edits, and its mode: pmxcfs's copy (0640, the only
        mode pmxcfs allows outside priv/; src/pmxcfs/pmxcfs.c) or corosync.conf."""
        return (self.shared, 0o640) if self.shared else (COROSYNC_CONF, 0o644)

    def access(self, system: System, member: MemberHost,
               control_path: str | None = None) -> Remote | LocalShell:
        if member.local:
            return LocalShell(system, timeout=self.timeouts.remote)
        return Remote(system, member.address, timeout=self.timeouts.remote,
                      connect_timeout=self.timeouts.connect, control_path=control_path)

    @property
    def local(self) -> MemberHost:
        return next(m for m in self.members if m.local)

    @property
    def writer(self) -> MemberHost:
        """The member that does the cluster-wide part once (pmxcfs's copy, the reload): this
        node when it is a member, else the first member (node separate: this node leaves)."""
        return next((m for m in self.members if m.local), self.members[0])


def read_cluster(system: System, changing: int | None,
                 timeouts: LinkTimeouts = LinkTimeouts()) -> Cluster:
    """corosync.conf and corosync's state here; members reached on their first link that is
    not the one being changed (link CHANGING; None: their first link)."""
    from pvestrap.verify import observe

    obs = observe(system)
    if obs.conf is None:
        raise UserError(f"{COROSYNC_CONF} is missing or unreadable: "
                        f"{obs.errors.get(COROSYNC_CONF, '')}", code="not-a-cluster-member",
                        remedy="run this on a member of the cluster")
    me = obs.local_nodeid
    if me is None:
        raise OperationFailed("corosync does not answer here: "
                              + "; ".join(f"{k}: {v}" for k, v in obs.errors.items()),
                              code="corosync-not-running",
                              remedy="run this on a cluster member whose corosync runs")
    order = sorted(obs.conf.link_numbers, key=lambda n: (n == changing, n))
    members = []
    for node in obs.conf.nodes:
        address = next((node.addresses[n] for n in order if n in node.addresses), None)
        if node.name is None or not isinstance(node.nodeid, int) or address is None:
            raise UserError(f"corosync.conf has a node without name, nodeid or address "
                            f"({node})", code="conf-node-incomplete",
                            remedy="every node needs name, nodeid and ringN_addr")
        members.append(MemberHost(node.name, node.nodeid, address, node.nodeid == me))
    if not any(m.local for m in members):
        raise UserError(f"this node (nodeid {me}) is not in {COROSYNC_CONF}",
                        code="not-a-cluster-member")
    shared = PVE_COROSYNC_CONF if system.exists(PVE_COROSYNC_CONF) else None
    return Cluster(obs.conf, system.read_text(COROSYNC_CONF) or "", obs, tuple(members),
                   timeouts, shared)


def each(members: Sequence[MemberHost], work: Callable[[MemberHost], Any]) -> dict[str, Any]:
    """WORK on every member at once (ssh handshakes are most of the cost); name -> result."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(members)))) as pool:
        futures = {m.name: pool.submit(work, m) for m in members}
        return {name: f.result() for name, f in futures.items()}


def each_safely(members: Sequence[MemberHost], work: Callable[[MemberHost], Any]) -> dict[str, Any]:
    """`each`, with a member's PvestrapError as its result instead of ending the others."""
    def guarded(member: MemberHost):
        try:
            return work(member)
        except PvestrapError as exc:
            return exc
    return each(members, guarded)


@contextmanager
def locked(system: System, cluster: Cluster) -> Iterator[str]:
    """Every member's join lock (the one a join takes on the member it talks to) and this
    node's apply lock, in name order so two changes never wait for each other. Yields the ssh
    ControlPath the locks' sessions share, so later commands reuse their connections."""
    from pvestrap.apply.lock import apply_lock
    from pvestrap.apply.remote import CONTROL_PATH

    t = cluster.timeouts
    root = system.root
    with ExitStack() as stack:
        stack.enter_context(apply_lock(root, timeout=t.lock_wait))
        for m in sorted(cluster.members, key=lambda m: m.name):
            if m.local:
                stack.enter_context(_flock(os.path.join(root, JOIN_LOCK.lstrip("/")),
                                           t.lock_wait, t.poll))
            else:
                remote = Remote(system, m.address, timeout=t.remote, connect_timeout=t.connect)
                stack.enter_context(member_lock(system, remote, wait=t.lock_wait, retries=1))
        yield CONTROL_PATH


@contextmanager
def _flock(path: str, wait: float, interval: float) -> Iterator[None]:
    """flock(2) on PATH, the lock `flock(1)` takes for a join on this node."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise OperationFailed(f"{JOIN_LOCK} stayed locked for {wait:g} s: a join "
                                          "or link change runs here", code="join-locked",
                                          remedy=f"`fuser -v {JOIN_LOCK}` shows who") from None
                time.sleep(interval)
        yield  # closing the descriptor releases the lock
    finally:
        os.close(fd)


# -- one phase: write everywhere, reload once, wait until every member runs it ---------------------

States = tuple[RemoteFile, RemoteFile]  # corosync.conf and its .bak, as they were


class MemberOps(Protocol):
    """What a phase does to the members; `ShellOps` does it over SSH, tests with a model."""

    def replace(self, member: MemberHost, text: str) -> tuple[States | None, str | None]: ...
    def restore(self, member: MemberHost, states: States) -> str | None: ...
    def reload(self) -> None: ...
    def corosync_state(self, member: MemberHost) -> tuple[str, str]: ...
    def read(self, member: MemberHost) -> str | None: ...
    # Proxmox VE only (Cluster.shared): pmxcfs's copy, on this node
    def replace_shared(self, text: str) -> tuple[States | None, str | None]: ...
    def restore_shared(self, states: States) -> str | None: ...


def cfs_locked(script: str, wait: float, lock: str = CFS_LOCK) -> str:
    """SCRIPT under pmxcfs's cluster-wide lock on corosync.conf, the one pvecm takes: the lock
    directory made with mkdir, retried every 0.1 s with an unlock request (mtime 0: pmxcfs drops
    a lock older than 120 s), removed on exit (src/PVE/Cluster.pm, $cfs_lock). Exit 75 when it
    stays held for WAIT seconds."""
    quoted = shlex.quote(lock)
    tries = max(1, round(wait * 10))
    return "; ".join([
        f"mkdir -p {shlex.quote(posixpath.dirname(lock))}",
        f"n=0; until mkdir {quoted} 2>/dev/null; do n=$((n+1)); if [ $n -ge {tries} ]; then "
        f"echo 'pmxcfs lock {posixpath.basename(lock)} stays held' >&2; exit 75; fi; "
        f"touch -m -d @0 {quoted} 2>/dev/null || :; sleep 0.1; done",
        f"trap {shlex.quote('rmdir ' + quoted)} EXIT", script])


@dataclass(frozen=True)
class ShellOps:
    """The admin guide's file dance and corosync's tools, on the members over SSH (this node
    without it). Replies carry the files' previous state, so a rollback is byte for byte."""

    system: System
    cluster: Cluster
    control_path: str | None = None

    def _run(self, member: MemberHost, script: str, what: str, **kw):
        return self.cluster.access(self.system, member, self.control_path).run(script, what, **kw)

    def replace(self, member: MemberHost, text: str) -> tuple[States | None, str | None]:
        return self._replace(member, COROSYNC_CONF, replace_script(COROSYNC_CONF), text)

    def restore(self, member: MemberHost, states: States) -> str | None:
        script, stdin = put_script(states)
        return self._put(member, script, stdin)

    def replace_shared(self, text: str) -> tuple[States | None, str | None]:
        """pmxcfs's copy replaced as pvecm does it (its mode kept, no .bak in /etc/pve)."""
        path = self.cluster.shared or PVE_COROSYNC_CONF
        script = cfs_locked(replace_script(path, keep_backup=False),
                            self.cluster.timeouts.lock_wait)
        return self._replace(self.cluster.writer, path, script, text)

    def restore_shared(self, states: States) -> str | None:
        script, stdin = put_script(states)
        return self._put(self.cluster.writer,
                         cfs_locked(script, self.cluster.timeouts.lock_wait), stdin)

    def _replace(self, member: MemberHost, path: str, script: str,
                 text: str) -> tuple[States | None, str | None]:
        stdin = base64.b64encode(text.encode()).decode() + "\n"
        return replaced(path, lambda: self._run(member, script, f"write {path}", input=stdin))

    def _put(self, member: MemberHost, script: str, stdin: str) -> str | None:
        try:
            self._run(member, script, "put corosync.conf back", input=stdin)
        except PvestrapError as exc:
            return exc.message
        return None

    def reload(self) -> None:
        self._run(self.cluster.writer, " ".join(RELOAD), "reload corosync")

    def corosync_state(self, member: MemberHost) -> tuple[str, str]:
        from pvestrap.verify import CFGTOOL_PEERS, RUNTIME_VERSION

        script = f"{' '.join(RUNTIME_VERSION)}; echo {SPLIT}; {' '.join(CFGTOOL_PEERS)}"
        try:
            out = self._run(member, script, "read corosync's state", mutates=False).stdout
        except RemoteCommandFailed as exc:
            out = exc.stdout  # cfgtool exits 1 while a link is down; what it printed counts
        version, _, peers = out.partition(SPLIT)
        return version, peers

    def read(self, member: MemberHost) -> str | None:
        files = parse_show(self._run(member, show_script([COROSYNC_CONF]), "read corosync.conf",
                                     mutates=False).stdout)
        found = files.get(COROSYNC_CONF)
        return None if found is None or found.data is None else found.data.decode()


class LinkVerifyFailed(OperationFailed):
    """The members did not converge on the new config in time; `problems` say where."""

    code = "link-verify-failed"

    def __init__(self, message: str, problems: Sequence[Finding]):
        self.problems = tuple(problems)
        shown = "; ".join(f.message for f in self.problems[:6])
        more = f" (+{len(self.problems) - 6} more)" if len(self.problems) > 6 else ""
        super().__init__(f"{message}: {shown}{more}",
                         remedy="check the new network between the nodes named (firewall: "
                                "the link's UDP port 5405+N), then try again")


@dataclass(frozen=True)
class PhaseStep:
    """An engine step: the phase's corosync.conf on every member (then pmxcfs's copy, on Proxmox
    VE), one reload, verified; undo puts the files back byte for byte in the reverse order,
    reloads and verifies the old state. The memo maps member names (and the shared copy's path)
    to the files as they were."""

    phase: Phase
    cluster: Cluster
    before: str
    ops: MemberOps = field(compare=False)
    ignore: tuple[str, ...] = ()  # findings that do not keep the members from converging

    @property
    def id(self) -> str:
        return self.phase.id

    @property
    def description(self) -> str:
        return self.phase.description

    def plan(self, system: System) -> list[Action]:
        conf, shared = self.phase.conf, self.cluster.shared
        return [*(Change(f"{m.name}:{COROSYNC_CONF}", self.before, conf.text(), 0o644)
                  for m in self.cluster.members),
                *([Change(shared, self.before, conf.text(), 0o640)] if shared else []),
                PlannedCommand(RELOAD),
                PlannedWait(f"every member to run config_version {conf.config_version} and "
                            f"reach every other on links {list(conf.link_numbers)}",
                            self.cluster.timeouts.verify)]

    def apply(self, system: System) -> dict[str, States]:
        text, memo, reloading = self.phase.conf.text(), {}, False
        try:
            results = each(self.cluster.members, lambda m: self.ops.replace(m, text))
            if self.cluster.shared:
                results[self.cluster.shared] = self._shared(results, text)
            memo = {n: states for n, (states, _) in results.items() if states}
            errors = [f"{n}: {e}" for n, (_, e) in results.items() if e]
            if errors:
                raise OperationFailed("corosync.conf could not be written on every member: "
                                      + "; ".join(errors), code="members-update-failed")
            reloading = True
            self.ops.reload()
            wait_converged(system, self.cluster, self.ops, self.phase.conf, self.ignore)
        except PvestrapError as exc:
            try:
                self.undo(system, memo, reload=reloading)
            except PvestrapError as again:
                raise OperationFailed(f"{exc.message}; putting it back failed too: "
                                      f"{again.message}", code="link-rollback-failed",
                                      remedy=again.remedy) from exc
            raise
        return memo

    def _shared(self, members: dict, text: str) -> tuple[States | None, str | None]:
        """pmxcfs's copy, once every member holds TEXT (else it is left alone)."""
        if any(error or not states for states, error in members.values()):
            return None, None
        return self.ops.replace_shared(text)

    def undo(self, system: System, memo: dict[str, States], reload: bool = True) -> None:
        by_name = {m.name: m for m in self.cluster.members}
        results = each([by_name[n] for n in memo if n in by_name],
                       lambda m: self.ops.restore(m, memo[m.name]))
        shared = self.cluster.shared
        if shared in memo:
            results[shared] = self.ops.restore_shared(memo[shared])
        errors = [f"{n}: {e}" for n, e in results.items() if e]
        if errors:
            raise OperationFailed("could not put corosync.conf back on: " + "; ".join(errors),
                                  code="members-restore-failed",
                                  remedy=f"restore {COROSYNC_CONF} from its .bak there"
                                         + (f" and {shared} as it was" if shared else "")
                                         + " and run `corosync-cfgtool -R`")
        if reload:  # back to what ran before; links that were down then may stay down
            self.ops.reload()
            wait_converged(system, self.cluster, self.ops, CorosyncConf.parse(self.before),
                           ignore=("knet-link-down",))


def converged(cluster: Cluster, ops: MemberOps, conf: CorosyncConf,
              ignore: Sequence[str] = ()) -> list[Finding]:
    """Problems keeping the members from running CONF with every link up (empty: done)."""

    def one(member: MemberHost) -> list[Finding]:
        try:
            version, peers = ops.corosync_state(member)
        except PvestrapError as exc:
            return [fail("member-unreachable", f"{member.name}: {exc.message}", member.name)]
        try:
            parsed = parse_cfgtool_nodes(peers.strip() + "\n")
        except StatusUnparsable:
            parsed = None
        return [f for f in convergence_findings(member.name, conf, runtime_version(version),
                                                parsed) if f.code not in ignore]

    results = each(cluster.members, one)
    return [f for m in cluster.members for f in results[m.name]]


def wait_converged(system: System, cluster: Cluster, ops: MemberOps, conf: CorosyncConf,
                   ignore: Sequence[str] = ()) -> None:
    """Poll `converged` (on the system's clock) until it is empty, or raise at the timeout."""
    problems = unsettled(system, lambda: converged(cluster, ops, conf, ignore),
                         cluster.timeouts.verify, cluster.timeouts.poll,
                         f"members on config_version {conf.config_version}")
    if problems is not None:
        raise LinkVerifyFailed(f"the members did not all run config_version "
                               f"{conf.config_version} with every link up within "
                               f"{cluster.timeouts.verify:g} s", problems)


def run_locked(system: System, cluster: Cluster, make_steps: Callable[[ShellOps], Sequence],
               on_progress=None):
    """The steps MAKE_STEPS(ops) under every member's lock, after checking that no member's
    corosync.conf changed since it was read (link changes, node removal, the QDevice)."""
    from pvestrap.apply.engine import run_steps

    with locked(system, cluster) as control_path:
        ops = ShellOps(system, cluster, control_path)
        texts = each(cluster.members, ops.read)
        if cluster.shared:  # pmxcfs's copy, which pmxcfs would hand to every member
            texts[cluster.shared] = system.read_text(cluster.shared)
        changed = sorted(n for n, t in texts.items() if t != cluster.text)
        if changed:
            raise OperationFailed(f"corosync.conf changed on {', '.join(changed)} since it was "
                                  "read", code="conf-changed-meanwhile",
                                  remedy="run the command again to plan from the new file")
        return run_steps(make_steps(ops), system, on_progress)
