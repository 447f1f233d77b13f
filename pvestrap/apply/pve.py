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

import hashlib
import os
import random
import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Callable, Mapping

from pvestrap.apply.engine import PlannedCommand, PlannedWait, Step, WriteFileStep
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import QuorumStatus, StatusUnparsable, parse_quorum_status
from pvestrap.errors import OperationFailed, UserError
from pvestrap.plan import ClusterPlan, Datacenter, JoinTarget
from pvestrap.render import DATACENTER_CFG, MODES, render_datacenter_cfg
from pvestrap.system import CommandFailed, CommandTimeout, Secret, System

PVE_COROSYNC_CONF = "/etc/pve/corosync.conf"
AUTHKEY = "/etc/corosync/authkey"
LOCAL_COROSYNC_CONF = "/etc/corosync/corosync.conf"

_LOCKED = re.compile(r"got lock request timeout|can't lock file '[^']*' - got timeout|"
                     r"unable to (?:get|acquire) lock", re.IGNORECASE)
# (pattern in pvecm's output, error code) for a failed join; the first match wins.
_JOIN_ERRORS = (
    (re.compile(r"fingerprint '([0-9A-Fa-f:]+)' not verified"), "join-fingerprint-mismatch"),
    (re.compile(r"Fingerprint not verified"), "join-fingerprint-unverified"),
    (re.compile(r"^401 |authentication failure", re.MULTILINE), "join-auth-failed"),
    (re.compile(r"Check if node may join a cluster failed"), "join-refused"),
    (re.compile(r"cluster not ready - no quorum"), "join-cluster-not-quorate"),
    (re.compile(r"corosync: link \d+ (?:exists in cluster config|specified for new node)"),
     "join-links-mismatch"),
    (re.compile(r"already used on link"), "join-address-in-use"),
    (re.compile(r"can't add existing node"), "join-node-exists"),
    (re.compile(r"Parameter verification failed"), "join-bad-arguments"),
    (_LOCKED, "join-cluster-locked"),
)


@dataclass(frozen=True)
class PveTimeouts:
    create: float = 120.0
    join: float = 600.0      # pvecm add includes its own endless wait for quorum
    quorum: float = 120.0
    poll: float = 1.0
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
    return system.exists("/usr/bin/pvecm") or system.exists("/etc/pve")


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
    try:
        result = system.run(["pvecm", "status"], timeout=30, check=False, mutates=False)
    except CommandFailed:
        return None
    if result.returncode not in (0, 2):
        return None
    try:
        return parse_quorum_status(result.stdout, "pvecm status")
    except StatusUnparsable:
        return None


def _quorate(system: System) -> bool:
    status = quorum_status(system)
    return bool(status and status.quorate and status.local is not None)


def fetch_fingerprint(host: str, port: int = 8006, timeout: float = 10.0) -> str:
    """SHA-256 of the certificate HOST:PORT presents, as pvecm writes fingerprints.

    No CA check on purpose: the fingerprint IS the check, compared with the plan's."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise OperationFailed(f"cannot fetch the certificate of {host}:{port}: {exc}",
                              code="fingerprint-unreachable",
                              remedy="check that the cluster node is up and TCP 8006 is open "
                                     "from here") from exc
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


def join_password(join: JoinTarget, system: System,
                  environ: Mapping[str, str] | None = None) -> Secret:
    """The root password from the plan's reference (file on the node, or environment)."""
    env = os.environ if environ is None else environ
    if join.password_env:
        value = env.get(join.password_env)
        if not value:
            raise UserError(f"join.password_env: ${join.password_env} is not set or empty",
                            code="password-missing", remedy=f"export {join.password_env}=...")
        return Secret(value)
    if join.password_file:
        text = system.read_text(join.password_file)
        if not text or not text.strip("\r\n"):
            raise UserError(f"join.password_file: {join.password_file} is missing or empty",
                            code="password-missing", remedy="write the root password of the "
                            "cluster node into that file (mode 0600)")
        return Secret(text.splitlines()[0])
    raise UserError("joining needs the cluster's root password", code="password-missing",
                    remedy="set join.password_file or join.password_env")


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
        return [PlannedCommand(create_argv(self.cluster, self.node_name))]

    def apply(self, system: System) -> None:
        system.run(create_argv(self.cluster, self.node_name), timeout=self.timeout)

    def undo(self, system: System, memo: None) -> None:
        """The admin guide's "Separate a Node Without Reinstalling", for a one-node cluster."""
        system.run(["systemctl", "stop", "pve-cluster"], timeout=60)
        system.run(["systemctl", "stop", "corosync"], timeout=60)
        system.run(["pmxcfs", "-l"], timeout=60)
        system.remove(PVE_COROSYNC_CONF)
        system.remove(AUTHKEY)
        system.remove(LOCAL_COROSYNC_CONF)
        system.run(["killall", "pmxcfs"], timeout=60)
        system.run(["systemctl", "start", "pve-cluster"], timeout=60)


@dataclass(frozen=True)
class PveWaitQuorumStep:
    timeout: float = 120.0
    interval: float = 1.0
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
    password: Secret = field(repr=False)
    use_pvesh: bool = False
    timeouts: PveTimeouts = PveTimeouts()
    fetch: Callable[[str], str] | None = field(default=fetch_fingerprint, compare=False)
    id: str = "pve-join"

    @property
    def host(self) -> str:
        return self.cluster.join_address()

    @property
    def description(self) -> str:
        return f"join {self.node_name} to {self.cluster.cluster_name} via {self.host}"

    def _fingerprint(self) -> str:
        fp = self.cluster.join.fingerprint
        if not fp:
            raise UserError("join.fingerprint is required to join unattended",
                            code="fingerprint-missing",
                            remedy="copy it from the cluster node's Join Information, or "
                                   "`pvenode cert info` there (SHA-256)")
        return fp.upper()

    def argv(self) -> tuple:
        fp = self._fingerprint()
        if self.use_pvesh:
            return pvesh_join_argv(self.cluster, self.node_name, self.host, fp, self.password)
        return join_argv(self.cluster, self.node_name, self.host, fp)

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
        fp = self._fingerprint()
        if self.fetch is not None:
            seen = self.fetch(self.host)
            if seen.upper() != fp:
                raise JoinFailed(f"{self.host}:8006 presents fingerprint {seen}, the plan "
                                 f"expects {fp}", "join-fingerprint-mismatch",
                                 {"expected": fp, "seen": seen},
                                 remedy="check that join.address is the cluster node and "
                                        "copy its fingerprint again")
        stdin = None if self.use_pvesh else Secret(self.password.value + "\n")
        return [PlannedCommand(self.argv(), stdin)]

    def apply(self, system: System) -> None:
        stdin = None if self.use_pvesh else Secret(self.password.value + "\n")
        t = self.timeouts
        for attempt in range(t.lock_retries + 1):
            try:
                system.run(self.argv(), input=stdin, timeout=t.join)
                return
            except CommandTimeout as exc:
                raise self._timed_out(exc) from None
            except CommandFailed as exc:
                output = exc.stdout + "\n" + exc.stderr
                if _LOCKED.search(output) and attempt < t.lock_retries:
                    delay = t.backoff * 2 ** attempt
                    system.sleep(delay + random.uniform(0, delay / 2))
                    continue
                raise _classify(exc, attempt) from None

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


def _classify(exc: CommandFailed, attempt: int) -> JoinFailed:
    output = exc.stdout + "\n" + exc.stderr
    code, details = "join-failed", {"returncode": exc.returncode, "attempts": attempt + 1}
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
    existing = system.read_text(DATACENTER_CFG)
    if existing is not None or plan.datacenter != Datacenter():
        text = render_datacenter_cfg(plan, existing)
        steps.append(WriteFileStep(DATACENTER_CFG, text, MODES[DATACENTER_CFG],
                                   id="pve-datacenter-cfg",
                                   description=f"write {DATACENTER_CFG} (cluster-wide options)"))
    return steps


def join_steps(plan: ClusterPlan, node_name: str, password: Secret,
               timeouts: PveTimeouts = PveTimeouts(), use_pvesh: bool = False,
               fetch: Callable[[str], str] | None = fetch_fingerprint) -> list[Step]:
    """pvecm add (retried while the cluster is locked), then a bounded wait for quorum."""
    plan.check()
    return [PveJoinStep(plan, node_name, password, use_pvesh, timeouts, fetch),
            PveWaitQuorumStep(timeouts.quorum, timeouts.poll)]


def steps_for(plan: ClusterPlan, node_name: str, system: System,
              password: Secret | None = None, **kw) -> list[Step]:
    if plan.role_of(node_name) == "create":
        return create_steps(plan, node_name, system, kw.get("timeouts", PveTimeouts()))
    if password is None:
        password = join_password(plan.join, system)
    return join_steps(plan, node_name, password, **kw)

