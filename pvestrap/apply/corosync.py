"""The plain-corosync backend (Debian without Proxmox VE): create and join as engine steps.

Create: an authkey (random bytes, mode 0400), corosync.conf for this node alone (what `pvecm
create` writes: the cluster starts with its creator), start corosync, wait for quorum.

Join, the way `pvecm add --use_ssh` does it but with every wait bounded and every change undone
on failure: under the member's join lock (remote.member_lock) read the cluster's corosync.conf
and authkey over SSH, check that the plan fits the cluster (name, link set, addresses, nodeid,
quorate), add this node and bump config_version, write the new file on EVERY member and run
`corosync-cfgtool -R` once (it tells every corosync of the cluster to reload, corosync-cfgtool(8)),
then install conf and authkey here, start corosync and wait until this node is quorate with the
new member count. A failure puts every member's files back byte for byte and reloads them, stops
corosync here and removes what was written here.

The joiner is checked before anything is touched, as pve-cluster's assert_joinable does: an
existing /etc/corosync/authkey or a running corosync refuse the join (no --force). A node whose
authkey and corosync.conf already place it in the planned cluster is a member: its steps only
make sure corosync runs and is quorate, so applying again plans nothing.

How corosync is started and stopped is a parameter (`Service`, apply.corosync_service).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from pvestrap.apply.corosync_service import Service, quorate_with, quorum_status, wait_stopped
from pvestrap.apply.engine import Action, PlannedWait, Step, WriteFileStep
from pvestrap.apply.remote import (MembersStep, Remote, RemoteFile, members_of, parse_show,
                                   show_script)
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.planned import is_listed_as_planned, node_differences
from pvestrap.corosync.status import QuorumStatus, StatusUnparsable, parse_quorum_status
from pvestrap.corosync.tree import ConfParseError
from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.findings import Finding, fail
from pvestrap.paths import AUTHKEY, COROSYNC_CONF
from pvestrap.plan import ClusterPlan
from pvestrap.render import Change, Reader, corosync_conf_for, node_change, node_changes
from pvestrap.system import SECRET_MARK, Secret, System

AUTHKEY_BYTES = 256  # corosync-keygen's default of 2048 bits
SECRET_TEXT = SECRET_MARK + "\n"


@dataclass(frozen=True)
class CorosyncTimeouts:
    quorum: float = 60.0       # until quorate after starting corosync
    poll: float = 0.2
    remote: float = 30.0       # one command on a member
    connect: float = 5.0       # ssh ConnectTimeout
    lock_wait: float = 60.0    # flock -w on the member, per attempt
    lock_retries: int = 3
    backoff: float = 1.0
    service: float = 60.0      # starting or stopping corosync


class JoinRefused(OperationFailed):
    """The join was refused before any change; `findings` say why (codes in `reasons`)."""

    code = "join-refused"

    def __init__(self, message: str, findings: Sequence[Finding], code: str | None = None,
                 remedy: str | None = None):
        super().__init__(message, code=code, remedy=remedy)
        self.findings = tuple(findings)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f.code for f in self.findings)

    def render(self) -> str:
        lines = [super().render()]
        lines += [f"  - {f.message} [{f.code}]" for f in self.findings]
        return "\n".join(lines)


# -- reading the node ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Membership:
    """Where the node stands: "none" (not clustered: no authkey), "member" (in the planned
    cluster as planned) or "other" (clustered some other way; `findings` say how)."""

    state: str
    findings: tuple[Finding, ...] = ()


def membership(system: System, plan: ClusterPlan, node_name: str) -> Membership:
    """The authkey decides whether a node is clustered (Debian ships an example corosync.conf
    on every machine); corosync.conf then says in which cluster and as what."""
    if not system.exists(AUTHKEY):
        return Membership("none")
    found = [fail("authkey-exists", f"{AUTHKEY} exists already", AUTHKEY)]
    text = system.read_text(COROSYNC_CONF)
    if text is None:
        return Membership("other", tuple(found))
    try:
        conf = CorosyncConf.parse(text, COROSYNC_CONF)
    except ConfParseError as exc:
        return Membership("other", (*found, fail("conf-unreadable", exc.message, COROSYNC_CONF)))
    if conf.cluster_name != plan.cluster_name:
        return Membership("other", (*found, fail(
            "already-clustered", f"corosync.conf is for cluster {conf.cluster_name!r}, not "
            f"{plan.cluster_name!r}", COROSYNC_CONF,
            payload={"cluster": conf.cluster_name, "planned": plan.cluster_name})))
    differences = node_differences(plan, node_name, conf)
    return Membership("other", tuple(found + differences)) if differences else \
        Membership("member")


# -- file states (what undo puts back) -------------------------------------------------------------

def _state(system: System, path: str) -> RemoteFile:
    return RemoteFile(path, system.read_bytes(path), system.file_mode(path))


def _restore(system: System, state: RemoteFile) -> None:
    if state.data is None:
        system.remove(state.path)
    elif system.read_bytes(state.path) != state.data or \
            system.file_mode(state.path) != state.mode:
        system.write_bytes(state.path, state.data, state.mode, backup=False)


def _restore_all(system: System, states: Sequence[RemoteFile]) -> None:
    """Put every file back, even when one of them fails; then report the first failure."""
    errors = []
    for state in states:
        try:
            _restore(system, state)
        except (PvestrapError, OSError) as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _secret_change(path: str, exists: bool, mode: int = 0o400) -> Change:
    return Change(path, SECRET_TEXT if exists else None, SECRET_TEXT, mode)


# -- steps: create ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthkeyStep:
    """A new authkey from the kernel's random source; its bytes are never shown or logged."""

    size: int = AUTHKEY_BYTES
    id: str = "authkey"
    description: str = f"generate {AUTHKEY} (random, mode 0400)"

    def plan(self, system: System) -> list[Action]:
        return [] if system.exists(AUTHKEY) else [_secret_change(AUTHKEY, False)]

    def apply(self, system: System) -> RemoteFile:
        memo = _state(system, AUTHKEY)
        system.write_bytes(AUTHKEY, os.urandom(self.size), 0o400, backup=False)
        return memo

    def undo(self, system: System, memo: RemoteFile) -> None:
        _restore(system, memo)


@dataclass(frozen=True)
class StartStep:
    """Start corosync; with `restart`, a corosync already running (Debian's example config)
    is restarted on the new files, as `pvecm create` does. Undo stops it (and starts the one
    that ran before again)."""

    service: Service
    restart: bool = False
    timeout: float = 30.0
    id: str = "start"
    description: str = "start corosync"

    def plan(self, system: System) -> list[Action]:
        running = quorum_status(system) is not None
        if running and not self.restart:
            return []
        return [self.service.stop_action(), self.service.start_action()] if running \
            else [self.service.start_action()]

    def apply(self, system: System) -> bool:
        return self.start_known(system, quorum_status(system) is not None)

    def start_known(self, system: System, running: bool) -> bool:
        """The start, with whether corosync RUNNING already asked (a restart when it does)."""
        if running:
            self._stop(system)
        self.service.start(system)
        return running

    def undo(self, system: System, memo: bool) -> None:
        self._stop(system)
        if memo:
            self.service.start(system)

    def _stop(self, system: System) -> None:
        self.service.stop(system)
        wait_stopped(system, self.timeout)


@dataclass(frozen=True)
class WaitQuorumStep:
    """A bounded wait (pvecm waits forever) until this node is quorate with enough members."""

    members: int | None = None
    timeout: float = 60.0
    interval: float = 0.2
    # Create restarts whatever corosync runs (Debian's example one-node cluster is quorate):
    # what answers while planning is not the corosync this waits for, so it is always planned.
    after_restart: bool = False
    id: str = "wait-quorum"

    @property
    def description(self) -> str:
        return f"wait until corosync is quorate{self._count}"

    @property
    def _count(self) -> str:
        if not self.members:
            return ""
        return f" with {self.members} member{'s' if self.members != 1 else ''}"

    @property
    def what(self) -> str:
        return "quorum" + self._count

    def plan(self, system: System) -> list[Action]:
        if not self.after_restart and quorate_with(quorum_status(system), self.members):
            return []
        return [PlannedWait(self.what + " (corosync-quorumtool -s)", self.timeout)]

    def apply(self, system: System) -> None:
        if system.wait_until(lambda: quorate_with(quorum_status(system), self.members),
                             self.timeout, self.interval, self.what):
            return
        status = quorum_status(system)
        seen = ("corosync does not answer" if status is None else
                f"quorate: {'yes' if status.quorate else 'no'}, {len(status.nodes_only)} "
                f"members, {status.total_votes} of {status.expected_votes} votes")
        raise OperationFailed(f"not {self.what} after {self.timeout:g} s ({seen})",
                              code="quorum-timeout",
                              remedy="check that every node reaches every other on every link "
                                     "(`pvestrap status`, `corosync-cfgtool -n`) and the "
                                     "corosync log")

    def undo(self, system: System, memo: None) -> None:
        return None


def create_steps(plan: ClusterPlan, node_name: str, service: Service, read: Reader,
                 timeouts: CorosyncTimeouts = CorosyncTimeouts()) -> list[Step]:
    """authkey, then corosync.conf as render has it for the creator (READ: the node's files)."""
    conf = node_change(node_changes(plan, node_name, read, "corosync"), COROSYNC_CONF)
    write = [] if conf is None else [
        WriteFileStep(COROSYNC_CONF, conf.after, conf.mode, id="conf",
                      description=f"write {COROSYNC_CONF} (cluster {plan.cluster_name}, "
                                  f"{node_name} alone)")]
    return [AuthkeyStep(), *write, StartStep(service, restart=True, timeout=timeouts.service),
            WaitQuorumStep(1, timeouts.quorum, timeouts.poll, after_restart=True)]


def member_steps(service: Service, timeouts: CorosyncTimeouts = CorosyncTimeouts()
                 ) -> list[Step]:
    """Already in the cluster as planned: corosync must run and be quorate, nothing else."""
    return [StartStep(service, restart=False, timeout=timeouts.service),
            WaitQuorumStep(None, timeouts.quorum, timeouts.poll)]


# -- the cluster seen from a member ----------------------------------------------------------------

@dataclass(frozen=True)
class ClusterSnapshot:
    """What the joiner read from the member it contacted."""

    address: str
    conf_text: str
    authkey: Secret = field(repr=False)  # base64 of the key
    quorum: QuorumStatus | None
    also: Mapping[str, RemoteFile] = field(default_factory=dict)  # read_cluster's ALSO


def read_cluster(remote: Remote, quorum: bool = True, also: Sequence[str] = ()
                 ) -> ClusterSnapshot:
    """One ssh call: the member's corosync.conf, authkey, the files ALSO and (QUORUM)
    `corosync-quorumtool -s`. Without QUORUM the snapshot's quorum is None: a batched joiner
    needs only the files (and reads them while the ring takes in the batch, when corosync's IPC
    may answer late)."""
    script = show_script([COROSYNC_CONF, AUTHKEY, *also]) + (
        '; out=$(corosync-quorumtool -s 2>&1); rc=$?; printf "quorum %s\\n" "$rc"; '
        'printf "%s\\n" "$out"' if quorum else "")
    result = remote.run(script, "read the cluster's corosync.conf and authkey", mutates=False)
    files = parse_show(result.stdout)
    conf, key = files.get(COROSYNC_CONF), files.get(AUTHKEY)
    if conf is None or key is None or conf.data is None or key.data is None:
        missing = [p for p, f in ((COROSYNC_CONF, conf), (AUTHKEY, key))
                   if f is None or f.data is None]
        raise JoinRefused(f"{remote.address} is not a cluster member", [
            fail("member-not-clustered", f"{remote.address} has no {p}", p) for p in missing],
            remedy="join.address must be a node of the running cluster")
    _, _, tail = result.stdout.partition("\nquorum ")
    rc, _, output = tail.partition("\n")
    status = None
    if rc.strip() in ("0", "2"):
        try:
            status = parse_quorum_status(output, f"corosync-quorumtool -s on {remote.address}")
        except StatusUnparsable:
            status = None
    return ClusterSnapshot(remote.address, conf.data.decode("utf-8", errors="replace"),
                           Secret(base64.b64encode(key.data).decode()), status,
                           {p: files[p] for p in also if p in files})


def check_join(plan: ClusterPlan, node_name: str, conf: CorosyncConf,
               snapshot: ClusterSnapshot, resuming: bool = False) -> list[Finding]:
    """What the cluster side would refuse, plus every way the cluster disagrees with the plan.

    resuming: the members list this node exactly as planned already (a join killed after it
    updated them): the node's own entry is expected, and the cluster may be inquorate because
    it waits for this very node."""
    out: list[Finding] = []
    if conf.cluster_name != plan.cluster_name:
        out.append(fail("join-cluster-mismatch", f"{snapshot.address} is in cluster "
                        f"{conf.cluster_name!r}, the plan says {plan.cluster_name!r}",
                        "cluster.name", payload={"cluster": conf.cluster_name,
                                                 "planned": plan.cluster_name}))
    if tuple(conf.link_numbers) != plan.link_numbers:
        out.append(fail("join-links-mismatch", f"the cluster has links "
                        f"{list(conf.link_numbers)}, the plan {list(plan.link_numbers)}",
                        "links", payload={"cluster": list(conf.link_numbers),
                                          "planned": list(plan.link_numbers)}))
    if not resuming and not quorate_with(snapshot.quorum, None):
        out.append(fail("join-cluster-not-quorate", f"{snapshot.address} is not quorate",
                        snapshot.address, remedy="bring the cluster back to quorum first"))
    me = plan.node(node_name)
    for entry in conf.nodes:
        if entry.name == node_name:
            if resuming:
                continue
            out.append(fail("join-node-exists", f"the cluster lists {node_name} already "
                            f"(nodeid {entry.nodeid})", node_name,
                            remedy="remove it there first (corosync.conf of every member), "
                                   "then apply again"))
            continue
        if entry.nodeid == me.nodeid:
            free = conf.next_free_nodeid
            out.append(fail("join-nodeid-taken", f"nodeid {me.nodeid} is {entry.name}'s",
                            f"{node_name}.nodeid", payload={"nodeid": me.nodeid,
                                                            "holder": entry.name,
                                                            "next_free": free},
                            remedy=f"give {node_name} nodeid = {free} (the next free id)"))
        used = set(entry.addresses.values()) & set(me.addresses.values())
        if used:
            out.append(fail("join-address-in-use", f"{', '.join(sorted(used))} is used by "
                            f"{entry.name}", node_name, payload={"addresses": sorted(used)}))
        if plan.has_node(str(entry.name)):
            planned = plan.node(str(entry.name))
            if entry.nodeid != planned.nodeid or dict(entry.addresses) != dict(planned.addresses):
                out.append(fail("join-plan-mismatch", f"{entry.name} is nodeid {entry.nodeid} "
                                f"at {entry.addresses} in the cluster, the plan says nodeid "
                                f"{planned.nodeid} at {dict(planned.addresses)}",
                                str(entry.name)))
    return out


# -- steps: join -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InstallStep:
    """corosync.conf and the cluster's authkey on this node; undo restores both byte for byte."""

    conf_text: str
    authkey: Secret = field(repr=False)  # base64
    id: str = "install"
    description: str = f"install {COROSYNC_CONF} and {AUTHKEY} from the cluster"

    def plan(self, system: System) -> list[Action]:
        out: list[Action] = []
        current = system.read_text(COROSYNC_CONF)
        if current != self.conf_text:
            out.append(Change(COROSYNC_CONF, current, self.conf_text,
                              system.file_mode(COROSYNC_CONF) or 0o644))
        if system.read_bytes(AUTHKEY) != self._key():
            out.append(_secret_change(AUTHKEY, system.exists(AUTHKEY)))
        return out

    def _key(self) -> bytes:
        return base64.b64decode(self.authkey.value)

    def apply(self, system: System) -> tuple[RemoteFile, ...]:
        memo = tuple(_state(system, p) for p in (COROSYNC_CONF, COROSYNC_CONF + ".bak", AUTHKEY))
        try:
            system.write_text(COROSYNC_CONF, self.conf_text, 0o644, backup=True)
            system.write_bytes(AUTHKEY, self._key(), 0o400, backup=False)
        except BaseException:
            _restore_all(system, memo)
            raise
        return memo

    def undo(self, system: System, memo: tuple[RemoteFile, ...]) -> None:
        _restore_all(system, memo)


def join_steps(plan: ClusterPlan, node_name: str, snapshot: ClusterSnapshot, service: Service,
               remote: Callable[[System, str], Remote], timeouts: CorosyncTimeouts =
               CorosyncTimeouts(), resolver: Resolver = resolve) -> list[Step]:
    """The join as steps, from what the member said; refuses (JoinRefused) before any change
    when the cluster and the plan disagree. The new corosync.conf, on the members and here, is
    render's for this node over the cluster's file (render.corosync_conf_for). RESOLVER: this
    node's name lookup, how the members are reached (remote.reach_address)."""
    conf = CorosyncConf.parse(snapshot.conf_text, f"{snapshot.address}:{COROSYNC_CONF}")
    resuming = is_listed_as_planned(plan, node_name, conf)
    problems = check_join(plan, node_name, conf, snapshot, resuming)
    if problems:
        raise JoinRefused(f"{snapshot.address}'s cluster refuses {node_name}", problems)
    text = corosync_conf_for(plan, node_name, None, cluster=snapshot.conf_text)
    finish: list[Step] = [InstallStep(text, snapshot.authkey),
                          StartStep(service, restart=False, timeout=timeouts.service),
                          WaitQuorumStep(len(CorosyncConf.parse(text).nodes), timeouts.quorum,
                                         timeouts.poll)]
    if resuming:  # the members have us already: finish the join on this node only
        return finish
    members = members_of(conf, snapshot.address, resolver)
    return [MembersStep(members, snapshot.address, snapshot.conf_text, text, remote), *finish]


def join_refusals(system: System, plan: ClusterPlan, node_name: str,
                  found: Membership) -> list[Finding]:
    """What pve-cluster's assert_joinable would refuse on this node (never overridden)."""
    out = list(found.findings)
    if quorum_status(system) is not None:
        out.append(fail("corosync-running", "corosync is running on this node", node_name,
                        remedy="a joining node must not run corosync yet: stop it"))
    return out
