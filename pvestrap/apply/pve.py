"""The Proxmox VE backend: create and join with pvecm (or pvesh), as steps for the engine.

Facts this follows (pve-facts.md; pve-cluster's CLI/pvecm.pm, API2/ClusterConfig.pm,
Cluster/Setup.pm, Cluster.pm; pve-common's PTY.pm and Tools.pm):

- `pvecm create NAME --linkN ADDR[,priority=P] [--nodeid N] [--votes N]
  [--token-coefficient N]` refuses only when /etc/pve/corosync.conf exists.
- `pvecm add HOST --fingerprint FP --linkN ADDR [--nodeid N] [--votes N]` reads the root
  password as ONE line from stdin when stdin is not a terminal; priority is ignored on add.
  It then waits for quorum with NO timeout, so it runs here under a timeout.
- `pvesh create /cluster/config/join ... --password PW` needs the password on the command line
  (visible in the process list): offered, not the default.
- A join fails with "cfs-lock 'file-corosync_conf' error: got lock request timeout" when the
  cluster is busy with another join, and with "can't lock file '/var/lock/pvecm.lock' - got
  timeout" when this node is; both are retried with exponential backoff.
- `--force` overrides every joinability refusal at once: never passed.
- datacenter.cfg is cluster-wide and a joiner's copy is discarded: written only on the creating
  node, after quorum.
- `pvecm status` prints a "Cluster information" block and then execs `corosync-quorumtool
  -siH`, so it exits 2 while not quorate.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

from pvestrap.apply.engine import PlannedCommand, PlannedWait, Step
from pvestrap.apply.pve_datacenter import PveDatacenterStep
from pvestrap.apply.pve_join_method import (JoinMethod, choose_join_method, pveproxy_answers,
                                            ssh_argv)
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import PVECM_STATUS, QuorumStatus, read_quorum
from pvestrap.errors import OperationFailed, UserError
from pvestrap.fingerprint import fetch_fingerprint
from pvestrap.nodefacts import runs_pve
from pvestrap.password import resolve_password
from pvestrap.paths import (AUTHKEY, COROSYNC_CONF, DATACENTER_CFG, PVE_COROSYNC_CONF,
                            PVE_MEMBERS)
from pvestrap.plan import ClusterPlan, Datacenter
from pvestrap.render import Change, node_change, node_changes, system_reader
from pvestrap.system import CommandFailed, CommandTimeout, Secret, System


_LOCKED = re.compile(r"got lock request timeout|can't lock file '[^']*' - got timeout|"
                     r"unable to (?:get|acquire) lock", re.IGNORECASE)
# (pattern in pvecm's output, error code) for a failed join; the first match wins.
_JOIN_ERRORS = (
    (re.compile(r"fingerprint '([0-9A-Fa-f:]+)' not verified"), "join-fingerprint-mismatch"),
    (re.compile(r"Fingerprint not verified"), "join-fingerprint-unverified"),
    (re.compile(r"^401 |authentication failure", re.MULTILINE), "join-auth-failed"),
    (re.compile(r"Check if node may join a cluster failed|detected the following error"),
     "join-refused"),
    (re.compile(r"unable to add node"), "join-add-failed"),
    (re.compile(r"cluster not ready - no quorum"), "join-cluster-not-quorate"),
    (re.compile(r"corosync: link \d+ (?:exists in cluster config|specified for new node)"),
     "join-links-mismatch"),
    (re.compile(r"already used on link"), "join-address-in-use"),
    (re.compile(r"can't add existing node"), "join-node-exists"),
    (re.compile(r"Parameter verification failed"), "join-bad-arguments"),
    (_LOCKED, "join-cluster-locked"),
)


# What pvecm add prints when it did not join although it exits 0 (pve-cluster's CLI/pvecm.pm
# runs the checks and the add in a forked worker and ignores its result).
_REFUSED_ANYWAY = re.compile(r"Check if node may join a cluster failed|"
                             r"detected the following error|unable to add node|"
                             r"Cluster join aborted")


@dataclass(frozen=True)
class PveTimeouts:
    create: float = 120.0
    join: float = 600.0      # pvecm add includes its own endless wait for quorum
    quorum: float = 120.0
    poll: float = 0.25       # cheap: pvecm status runs only once pmxcfs says quorate (_quorate)
    lock_retries: int = 6
    backoff: float = 2.0     # first retry after ~2 s, then 4, 8, ... (plus up to 50 % jitter)


class JoinFailed(OperationFailed):
    """pvecm refused or failed to join; `code` says why, `details` carries what it printed."""

    def __init__(self, message: str, code: str, details: Mapping[str, object],
                 remedy: str | None = None):
        super().__init__(message, code=code, remedy=remedy)
        self.details = dict(details)


def is_pve(system: System) -> bool:
    """Proxmox VE is installed: pvecm exists or the cluster filesystem folder does."""
    return runs_pve(system.exists)


# -- command lines ---------------------------------------------------------------------------------

def link_args(plan: ClusterPlan, node_name: str, with_priority: bool) -> list[str]:
    node = plan.node(node_name)
    out = []
    for link in sorted(plan.links, key=lambda link: link.number):
        value = node.address(link.number)
        if with_priority and link.priority:
            value += f",priority={link.priority}"
        out += [f"--link{link.number}", value]
    return out


def create_argv(plan: ClusterPlan, node_name: str) -> tuple[str, ...]:
    node = plan.node(node_name)
    if node.votes < 1:
        raise UserError(f"node {node_name} creates the cluster and needs at least 1 vote",
                        code="creator-votes", remedy="give the creating node votes = 1")
    argv = ["pvecm", "create", plan.cluster_name, *link_args(plan, node_name, True),
            "--nodeid", str(node.nodeid)]
    if node.votes != 1:
        argv += ["--votes", str(node.votes)]
    if plan.token_coefficient is not None:
        argv += ["--token-coefficient", str(plan.token_coefficient)]
    return tuple(argv)


def join_argv(plan: ClusterPlan, node_name: str, host: str, fingerprint: str
              ) -> tuple[str, ...]:
    """pvecm add; the password goes to stdin, never onto this line; never --force."""
    node = plan.node(node_name)
    argv = ["pvecm", "add", host, "--fingerprint", fingerprint,
            *link_args(plan, node_name, False), "--nodeid", str(node.nodeid)]
    if node.votes != 1:
        argv += ["--votes", str(node.votes)]
    return tuple(argv)


def ssh_join_argv(plan: ClusterPlan, node_name: str, host: str) -> tuple[str, ...]:
    """pvecm add --use_ssh: pvecm logs in to HOST as root with this node's key and runs
    `pvecm addnode` there (no password, no fingerprint; pve-cluster's CLI/pvecm.pm)."""
    node = plan.node(node_name)
    argv = ["pvecm", "add", host, "--use_ssh", "1", *link_args(plan, node_name, False),
            "--nodeid", str(node.nodeid)]
    if node.votes != 1:
        argv += ["--votes", str(node.votes)]
    return tuple(argv)


def pvesh_join_argv(plan: ClusterPlan, node_name: str, host: str, fingerprint: str,
                    password: Secret) -> tuple[str | Secret, ...]:
    node = plan.node(node_name)
    argv: list[str | Secret] = ["pvesh", "create", "/cluster/config/join", "--hostname", host,
                                "--fingerprint", fingerprint, "--password", password,
                                *link_args(plan, node_name, False),
                                "--nodeid", str(node.nodeid)]
    if node.votes != 1:
        argv += ["--votes", str(node.votes)]
    return tuple(argv)


# -- reading the node ------------------------------------------------------------------------------

def cluster_membership(system: System, plan: ClusterPlan, node_name: str) -> bool:
    """True when this node is already in the planned cluster; raises when it is in another."""
    text = system.read_text(PVE_COROSYNC_CONF)
    if text is None:
        return False
    conf = CorosyncConf.parse(text, PVE_COROSYNC_CONF)
    if conf.cluster_name != plan.cluster_name:
        raise OperationFailed(f"this node is already in cluster {conf.cluster_name!r}, not "
                              f"{plan.cluster_name!r}", code="already-clustered",
                              remedy="use a freshly installed node, or separate this one first "
                                     "(admin guide: Separate a Node Without Reinstalling)")
    return any(n.name == node_name for n in conf.nodes)


def quorum_status(system: System) -> QuorumStatus | None:
    """`pvecm status` parsed, or None when it cannot tell (not clustered, corosync down)."""
    return read_quorum(system.query, PVECM_STATUS)


def _quorate(system: System) -> bool:
    """corosync is quorate AND pmxcfs knows it: /etc/pve refuses writes (EACCES) until its
    /etc/pve/.members says "quorate": 1, seen ~3 s after corosync's quorum on a fresh cluster.
    The file is read first: reading it is cheap, `pvecm status` starts Perl (~0.5 s of CPU),
    so a wait polls often and runs pvecm only once pmxcfs says quorate."""
    if not pmxcfs_quorate(system):
        return False
    status = quorum_status(system)
    return bool(status and status.quorate and status.local is not None)


def pmxcfs_quorate(system: System) -> bool:
    """pmxcfs's view (its .members file); True where there is no pmxcfs to ask."""
    text = system.read_text(PVE_MEMBERS)
    if text is None:
        return True
    try:
        cluster = json.loads(text).get("cluster") or {}
    except (ValueError, AttributeError):
        return False
    return cluster.get("quorate") == 1


# -- reading the cluster before a join -------------------------------------------------------------

def cluster_conf_over_ssh(system: System, host: str) -> CorosyncConf | None:
    """The cluster's corosync.conf as the cluster node has it (read over root key login)."""
    try:
        result = system.run(ssh_argv(host, "cat", PVE_COROSYNC_CONF), timeout=60, check=False,
                            mutates=False)
    except CommandFailed:
        return None
    if result.returncode != 0 or not result.stdout.strip():
        return None
    return CorosyncConf.parse(result.stdout, f"{host}:{PVE_COROSYNC_CONF}")


def nodeid_refusal(conf: CorosyncConf, plan: ClusterPlan, node_name: str) -> JoinFailed | None:
    """pvecm never checks an explicit --nodeid against the cluster (ClusterConfig.pm addnode
    only checks names and addresses): a taken id would give two nodes one id."""
    mine = plan.node(node_name).nodeid
    taken = {n.nodeid: n.name for n in conf.nodes if n.name != node_name}
    if mine not in taken:
        return None
    free = conf.next_free_nodeid
    return JoinFailed(f"node id {mine} is already {taken[mine]}'s in cluster "
                      f"{conf.cluster_name}", "join-nodeid-taken",
                      {"nodeid": mine, "member": taken[mine], "next_free": free},
                      remedy=f"give {node_name} nodeid = {free} (the next free id) in the "
                             "answer file")


def pvecm_writes(plan: ClusterPlan, node_name: str, system: System, writer: str,
                 cluster: str | None = None) -> list[Change]:
    """The corosync.conf pvecm writes on this node, as render has it (CLUSTER: the cluster's
    file when it was read; else render predicts it from the plan), shown in the plan."""
    change = node_change(node_changes(plan, node_name, system_reader(system), "pve", cluster),
                         COROSYNC_CONF)
    return [] if change is None else [replace(change, writer=writer)]


# -- steps -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PveCreateStep:
    cluster: ClusterPlan
    node_name: str
    timeout: float = 120.0
    id: str = "pve-create"

    @property
    def description(self) -> str:
        return f"create cluster {self.cluster.cluster_name} on {self.node_name} with pvecm"

    def plan(self, system: System) -> list:
        if cluster_membership(system, self.cluster, self.node_name):
            return []
        return [PlannedCommand(create_argv(self.cluster, self.node_name)),
                *pvecm_writes(self.cluster, self.node_name, system, "pvecm create")]

    def apply(self, system: System) -> None:
        system.run(create_argv(self.cluster, self.node_name), timeout=self.timeout)

    def undo(self, system: System, memo: None) -> None:
        """The admin guide's "Separate a Node Without Reinstalling", for a one-node cluster."""
        system.run(["systemctl", "stop", "pve-cluster"], timeout=60)
        system.run(["systemctl", "stop", "corosync"], timeout=60)
        system.run(["pmxcfs", "-l"], timeout=60)
        system.remove(PVE_COROSYNC_CONF)
        system.remove(AUTHKEY)
        system.remove(COROSYNC_CONF)
        system.run(["killall", "pmxcfs"], timeout=60)
        system.run(["systemctl", "start", "pve-cluster"], timeout=60)


@dataclass(frozen=True)
class PveWaitQuorumStep:
    timeout: float = 120.0
    interval: float = 0.25
    id: str = "pve-wait-quorum"
    description: str = "wait until pvecm status reports this node quorate"

    def plan(self, system: System) -> list:
        return [] if _quorate(system) else [PlannedWait("quorum (pvecm status)", self.timeout)]

    def apply(self, system: System) -> None:
        if not system.wait_until(lambda: _quorate(system), self.timeout, self.interval,
                                 "quorum (pvecm status)"):
            status = quorum_status(system)
            seen = (f"{status.total_votes} of {status.expected_votes} votes"
                    if status else "no status from pvecm")
            raise OperationFailed(f"not quorate after {self.timeout:g} s ({seen})",
                                  code="quorum-timeout",
                                  remedy="check corosync on every node: `pvestrap status`, "
                                         "`journalctl -u corosync`")

    def undo(self, system: System, memo: None) -> None:
        return None


@dataclass(frozen=True)
class PveJoinStep:
    cluster: ClusterPlan
    node_name: str
    password: Secret | None = field(repr=False)
    use_pvesh: bool = False
    timeouts: PveTimeouts = PveTimeouts()
    fetch: Callable[[str], str] | None = field(default=fetch_fingerprint, compare=False)
    method: JoinMethod | None = None  # None: the API join (pvesh when use_pvesh)
    resolver: Resolver = field(default=resolve, compare=False)  # this node's: the join target
    id: str = "pve-join"

    @property
    def kind(self) -> str:
        return self.method.kind if self.method else ("pvesh" if self.use_pvesh else "api")

    @property
    def host(self) -> str:
        return self.cluster.join_address(self.resolver)

    @property
    def description(self) -> str:
        how = f" with {self.method.describe()}" if self.method else ""
        return f"join {self.node_name} to {self.cluster.cluster_name} via {self.host}{how}"

    def _fingerprint(self) -> str:
        fp = self.cluster.join.fingerprint
        if not fp:
            raise UserError("join.fingerprint is required to join unattended",
                            code="fingerprint-missing",
                            remedy="copy it from the cluster node's Join Information, or "
                                   "`pvenode cert info` there (SHA-256)")
        return fp.upper()

    def _secret(self) -> Secret:
        if self.password is None:
            raise UserError("the API join needs the cluster's root password",
                            code="password-missing",
                            remedy="set join.password_file or join.password_env")
        return self.password

    def argv(self) -> tuple:
        if self.kind == "ssh":
            return ssh_join_argv(self.cluster, self.node_name, self.host)
        fp = self._fingerprint()
        if self.kind == "pvesh":
            return pvesh_join_argv(self.cluster, self.node_name, self.host, fp, self._secret())
        return join_argv(self.cluster, self.node_name, self.host, fp)

    def _stdin(self) -> Secret | None:
        return Secret(self._secret().value + "\n") if self.kind == "api" else None

    def plan(self, system: System) -> list:
        if cluster_membership(system, self.cluster, self.node_name):
            return []
        refusals = [f"{path} already exists" for path in (AUTHKEY, PVE_COROSYNC_CONF)
                    if system.exists(path)]
        if refusals:
            raise JoinFailed(f"{self.node_name} cannot join: " + "; ".join(refusals),
                             "join-refused", {"reasons": refusals},
                             remedy="join only freshly installed nodes; pvestrap never "
                                    "passes --force")
        if self.kind == "ssh":
            conf = cluster_conf_over_ssh(system, self.host)
            refusal = conf and nodeid_refusal(conf, self.cluster, self.node_name)
            if refusal:
                raise refusal
            return [PlannedCommand(self.argv()), *pvecm_writes(
                self.cluster, self.node_name, system, "pvecm add", conf.text() if conf else None)]
        fp = self._fingerprint()
        if self.fetch is not None:
            seen = self.fetch(self.host)
            if seen.upper() != fp:
                raise JoinFailed(f"{self.host}:8006 presents fingerprint {seen}, the plan "
                                 f"expects {fp}", "join-fingerprint-mismatch",
                                 {"expected": fp, "seen": seen},
                                 remedy="check that join.address is the cluster node and "
                                        "copy its fingerprint again")
        return [PlannedCommand(self.argv(), self._stdin()),
                *pvecm_writes(self.cluster, self.node_name, system, "pvecm add")]

    def apply(self, system: System) -> None:
        t = self.timeouts
        for attempt in range(t.lock_retries + 1):
            try:
                result = system.run(self.argv(), input=self._stdin(), timeout=t.join)
            except CommandTimeout as exc:
                raise self._timed_out(exc) from None
            except CommandFailed as exc:
                output = exc.stdout + "\n" + exc.stderr
                if _LOCKED.search(output) and attempt < t.lock_retries:
                    delay = t.backoff * 2 ** attempt
                    system.sleep(delay + random.uniform(0, delay / 2))
                    continue
                raise _classify(exc, attempt) from None
            output = (result.stdout or "") + "\n" + (result.stderr or "")
            if _LOCKED.search(output) and attempt < t.lock_retries:  # exit 0, join not done
                delay = t.backoff * 2 ** attempt
                system.sleep(delay + random.uniform(0, delay / 2))
                continue
            self._confirm(system, result, attempt)
            return

    def _confirm(self, system: System, result, attempt: int) -> None:
        """pvecm add exits 0 even when its checks refused the join (they run in a forked task
        whose result it ignores): success is this node listed in /etc/pve/corosync.conf."""
        output = (result.stdout or "") + "\n" + (result.stderr or "")
        if _REFUSED_ANYWAY.search(output) or not cluster_membership(system, self.cluster,
                                                                     self.node_name):
            failed = CommandFailed(result.args, result.returncode, result.stdout or "",
                                   result.stderr or "")
            raise _classify(failed, attempt, default="join-not-confirmed")

    def _timed_out(self, exc: CommandTimeout) -> JoinFailed:
        return JoinFailed(
            f"{exc.argv[0]} did not finish within {exc.timeout:g} s (it waits for quorum "
            "without a timeout); the cluster may already list this node",
            "join-timeout", {"stdout": exc.stdout[-2000:], "stderr": exc.stderr[-2000:]},
            remedy=f"on {self.host} check `pvecm status`; if {self.node_name} is listed but "
                   f"never became quorate, run `pvecm delnode {self.node_name}` there and "
                   "separate this node before joining again")

    def undo(self, system: System, memo: None) -> None:
        raise OperationFailed(
            f"a join cannot be undone from the joiner: remove {self.node_name} on a member "
            f"with `pvecm delnode {self.node_name}` and separate this node (admin guide)",
            code="join-not-undoable")


def _classify(exc: CommandFailed, attempt: int, default: str = "join-failed") -> JoinFailed:
    output = exc.stdout + "\n" + exc.stderr
    code = default
    details: dict[str, object] = {"returncode": exc.returncode, "attempts": attempt + 1}
    for pattern, candidate in _JOIN_ERRORS:
        m = pattern.search(output)
        if m:
            code = candidate
            if candidate == "join-fingerprint-mismatch":
                details["seen"] = m.group(1)
            break
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    details["output"] = lines[-10:]
    reason = next((line for line in reversed(lines) if not line.startswith("Cluster join")),
                  f"exit {exc.returncode}")
    return JoinFailed(f"{exc.argv[0]} {exc.argv[1]} failed: {reason}", code, details)


# -- the step lists --------------------------------------------------------------------------------

def create_steps(plan: ClusterPlan, node_name: str, system: System,
                 timeouts: PveTimeouts = PveTimeouts()) -> list[Step]:
    """pvecm create, wait for quorum, then datacenter.cfg (only here, only after quorum)."""
    plan.check()
    steps: list[Step] = [PveCreateStep(plan, node_name, timeouts.create),
                         PveWaitQuorumStep(timeouts.quorum, timeouts.poll)]
    if system.exists(DATACENTER_CFG) or plan.datacenter != Datacenter():
        steps.append(PveDatacenterStep(plan, node_name))
    return steps


def join_steps(plan: ClusterPlan, node_name: str, password: Secret | None,
               timeouts: PveTimeouts = PveTimeouts(), use_pvesh: bool = False,
               fetch: Callable[[str], str] | None = fetch_fingerprint,
               method: JoinMethod | None = None, resolver: Resolver = resolve) -> list[Step]:
    """pvecm add (retried while the cluster is locked), then a bounded wait for quorum.
    RESOLVER: this node's name lookup, which picks the join target (plan.join_address)."""
    plan.check()
    return [PveJoinStep(plan, node_name, password, use_pvesh, timeouts, fetch, method, resolver),
            PveWaitQuorumStep(timeouts.quorum, timeouts.poll)]


def steps_for(plan: ClusterPlan, node_name: str, system: System,
              password: Secret | None = None, **kw) -> list[Step]:
    if plan.role_of(node_name) == "create":
        return create_steps(plan, node_name, system, kw.get("timeouts", PveTimeouts()))
    if cluster_membership(system, plan, node_name):
        return join_steps(plan, node_name, password, **kw)
    method = kw.pop("method", None) or choose_join_method(
        system, plan, kw.pop("has_pveproxy", pveproxy_answers), kw.get("resolver", resolve))
    if method.kind != "ssh" and password is None:
        password = resolve_password(plan.join, system=system)
        if password is None:
            raise UserError("joining needs the cluster's root password", code="password-missing",
                            remedy="set join.password_file or join.password_env")
    return join_steps(plan, node_name, password, method=method, **kw)
