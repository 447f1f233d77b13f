"""Changes to a running cluster's links: `pvestrap link add` and `pvestrap link move`.

The admin guide's manual procedure (edit a `.new` copy, bump config_version, keep a `.bak`, move
it into place, let corosync reload) done for every member over SSH, checked before and after.
Before any change: quorate, every node of corosync.conf a member, the links that stay connected,
the same corosync.conf everywhere, and on the new network every member holds its new address on
an interface that is up and reaches every other member's new address by ICMP from it. Each
phase writes the file on every member, runs `corosync-cfgtool -R` once (every corosync of the
cluster reloads its own file) and waits until every member runs the new config_version and sees
every other on every link at the configured addresses; else every member gets its files back
byte for byte and corosync reloads again.

corosync 3.1.7 refuses a reload that changes a link's address ("To reconfigure an interface it
must be deleted and recreated. A working interface needs to be available to corosync at all
times", exec/totemconfig.c; seen in the lab) but takes new and removed links. So a move is two
phases, drop the link and add it again at the new addresses, while the other links carry the
cluster; the only link cannot move this way (`link-last`). Every rollback is again a removal or
an addition.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait
from pvestrap.apply.remote import (JOIN_LOCK, Remote, RemoteCommandFailed, RemoteFile,
                                   member_lock, parse_show, replace_script, show_script)
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import StatusUnparsable, parse_cfgtool_nodes
from pvestrap.errors import OperationFailed, PvestrapError, UserError, ValidationFailed
from pvestrap.findings import Finding, Severity, fail, warn
from pvestrap.paths import COROSYNC_CONF
from pvestrap.render import Change
from pvestrap.system import System
from pvestrap.verify import Observed, convergence_findings, runtime_version

RELOAD = ("corosync-cfgtool", "-R")
_SPLIT = "@@pvestrap@@"


@dataclass(frozen=True)
class LinkTimeouts:
    verify: float = 60.0   # until every member runs the change and sees every link up
    poll: float = 0.5
    remote: float = 30.0   # one command on a member
    connect: float = 5.0   # ssh ConnectTimeout
    lock_wait: float = 30.0
    pings: int = 3


@dataclass(frozen=True)
class LinkRequest:
    action: str                   # add | move
    number: int
    addresses: Mapping[str, str]  # node name -> new address on link `number`
    priority: int | None = None
    network: str | None = None


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


@dataclass(frozen=True)
class ChangePlan:
    request: LinkRequest
    before: CorosyncConf
    before_text: str
    phases: tuple[Phase, ...]

    @property
    def final(self) -> CorosyncConf:
        return self.phases[-1].conf if self.phases else self.before

    def change(self) -> Change:
        """The whole edit as one file change (what the user reviews)."""
        return Change(COROSYNC_CONF, self.before_text, self.final.text(), 0o644)


# -- the edit --------------------------------------------------------------------------------------

def plan_change(conf: CorosyncConf, text: str, request: LinkRequest) -> ChangePlan:
    """The phases that take CONF to the requested links (none when it is there already).
    Bad input raises ValidationFailed (every problem at once) before anything happens."""
    number, wanted, net = request.number, dict(request.addresses), request.network
    current = {n.name: n.addresses.get(number) for n in conf.nodes}
    if request.action == "add":
        if number in conf.link_numbers:
            if wanted == current and request.priority in (None, conf.priorities.get(number)):
                return ChangePlan(request, conf, text, ())
            raise ValidationFailed([fail(
                "link-exists", f"link {number} exists already", "number",
                payload={"number": number, "addresses": current},
                remedy=f"move it with `pvestrap link move --number {number}`, or pick a free "
                       "link number")], source="link add")
        added = conf.add_link(number, wanted, request.priority or 0, net).bump_version()
        return ChangePlan(request, conf, text, (
            Phase(f"add-link{number}", f"add link{number} on every member", added),))
    if request.action != "move":
        raise UserError(f"unknown link action {request.action!r}")
    moved = conf.set_link_addresses(number, wanted, net)  # checks the addresses and names
    if all(current.get(n) == a for n, a in wanted.items()):
        return ChangePlan(request, conf, text, ())
    dropped = conf.remove_link(number).bump_version()
    return ChangePlan(request, conf, text, (
        Phase(f"drop-link{number}", f"drop link{number} (corosync cannot change a link's "
              "address in place)", dropped),
        Phase(f"add-link{number}", f"add link{number} again at the new addresses",
              moved.bump_version().bump_version())))


# -- reaching the members --------------------------------------------------------------------------

@dataclass(frozen=True)
class LocalShell(Remote):
    """This node: the same scripts as on a member, run by sh instead of ssh."""

    address: str = "this node"

    def argv(self, script: str) -> tuple[str, ...]:
        return ("sh", "-c", script)


@dataclass(frozen=True)
class Cluster:
    """The cluster as this node sees it, and how each member is reached."""

    conf: CorosyncConf
    text: str
    observed: Observed
    members: tuple[MemberHost, ...]
    timeouts: LinkTimeouts = field(default_factory=LinkTimeouts)

    def access(self, system: System, member: MemberHost,
               control_path: str | None = None) -> Remote | LocalShell:
        if member.local:
            return LocalShell(system, timeout=self.timeouts.remote)
        return Remote(system, member.address, timeout=self.timeouts.remote,
                      connect_timeout=self.timeouts.connect, control_path=control_path)

    @property
    def local(self) -> MemberHost:
        return next(m for m in self.members if m.local)


def read_cluster(system: System, request: LinkRequest | None,
                 timeouts: LinkTimeouts = LinkTimeouts()) -> Cluster:
    """corosync.conf and corosync's state here; members reached on their first link that is
    not the one being changed (REQUEST's; None: their first link)."""
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
    changing = request.number if request else None
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
    return Cluster(obs.conf, system.read_text(COROSYNC_CONF) or "", obs, tuple(members),
                   timeouts)


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


# -- preflight -------------------------------------------------------------------------------------

def preflight(system: System, cluster: Cluster, plan: ChangePlan) -> list[Finding]:
    """Everything that must hold before the first write, as findings (FAIL stops the change)."""
    from pvestrap.verify import link_findings, quorum_findings

    number = plan.request.number
    out = [f for f in quorum_findings(cluster.observed) if f.severity is not Severity.WARN]
    present = {m.nodeid for m in (cluster.observed.quorum.nodes_only
                                  if cluster.observed.quorum else ())}
    for m in cluster.members:
        if m.nodeid not in present:
            out.append(fail("member-missing", f"{m.name} is not a member now; it would miss "
                            "the change", m.name, payload={"nodeid": m.nodeid},
                            remedy="bring it back into the cluster first"))
    for f in link_findings(cluster.observed):
        if f.code == "knet-link-down" and f.payload.get("link") == number:
            f = warn(f.code, f.message + " (this is the link being changed)", f.subject,
                     payload=f.payload)
        out.append(f)
    results = each(cluster.members, lambda m: _member_checks(system, cluster, plan, m))
    return out + [f for m in cluster.members for f in results[m.name]]


def ping_command(count: int, source: str, target: str) -> str:
    """`ping` from SOURCE to TARGET as a shell word list: every value quoted (an address may
    carry a scope id, which is user input)."""
    return shlex.join(["ping", "-n", "-q", "-c", str(int(count)), "-i", "0.2", "-W", "1",
                       "-I", source, target])


def _member_checks(system: System, cluster: Cluster, plan: ChangePlan,
                   member: MemberHost) -> list[Finding]:
    from pvestrap.verify import address_findings, ping_findings

    access = cluster.access(system, member)
    number, final = plan.request.number, plan.final
    mine = next(n for n in final.nodes if n.name == member.name).addresses[number]
    peers = [(n.name, n.addresses[number]) for n in final.nodes if n.name != member.name]
    script = "; ".join(
        [show_script([COROSYNC_CONF]), f"echo {_SPLIT}", "ip -j addr show"] +
        [f"echo {_SPLIT}; {ping_command(cluster.timeouts.pings, mine, addr)} 2>&1 || true"
         for _, addr in peers])
    try:
        parts = access.run(script, "check the new network", mutates=False).stdout.split(_SPLIT)
    except PvestrapError as exc:
        return [fail("member-unreachable", f"{member.name}: {exc.message}", member.name,
                     payload={"address": member.address}, remedy=exc.remedy)]
    theirs = parse_show(parts[0]).get(COROSYNC_CONF)
    out = []
    if theirs is None or theirs.data != cluster.text.encode():
        out.append(fail("conf-differs", f"{member.name}'s {COROSYNC_CONF} differs from this "
                        "node's", member.name, payload={"node": member.name},
                        remedy="make every member's corosync.conf the same first"))
    out += address_findings(member.name, number, mine, parts[1] if len(parts) > 1 else "")
    for (peer, addr), text in zip(peers, parts[2:] + [""] * (len(peers) - len(parts[2:]))):
        out += ping_findings(member.name, peer, number, mine, addr, text)
    return out


# -- one phase: write everywhere, reload once, wait until every member runs it ---------------------

States = tuple[RemoteFile, RemoteFile]  # corosync.conf and its .bak, as they were


class MemberOps(Protocol):
    """What a phase does to the members; `ShellOps` does it over SSH, tests with a model."""

    def replace(self, member: MemberHost, text: str) -> tuple[States | None, str | None]: ...
    def restore(self, member: MemberHost, states: States) -> str | None: ...
    def reload(self) -> None: ...
    def corosync_state(self, member: MemberHost) -> tuple[str, str]: ...
    def read(self, member: MemberHost) -> str | None: ...


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
        stdin = base64.b64encode(text.encode()).decode() + "\n"
        try:
            out, error = self._run(member, replace_script(COROSYNC_CONF), "write corosync.conf",
                                   input=stdin).stdout, None
        except RemoteCommandFailed as exc:
            out, error = exc.stdout, exc.message
        except PvestrapError as exc:
            return None, exc.message
        files = parse_show(out)
        states = (files.get(COROSYNC_CONF), files.get(COROSYNC_CONF + ".bak"))
        return (None if None in states else states), error  # type: ignore[return-value]

    def restore(self, member: MemberHost, states: States) -> str | None:
        from pvestrap.apply.remote import put_script

        script, stdin = put_script(states)
        try:
            self._run(member, script, "put corosync.conf back", input=stdin)
        except PvestrapError as exc:
            return exc.message
        return None

    def reload(self) -> None:
        self._run(self.cluster.local, " ".join(RELOAD), "reload corosync")

    def corosync_state(self, member: MemberHost) -> tuple[str, str]:
        from pvestrap.verify import CFGTOOL_PEERS, RUNTIME_VERSION

        script = f"{' '.join(RUNTIME_VERSION)}; echo {_SPLIT}; {' '.join(CFGTOOL_PEERS)}"
        try:
            out = self._run(member, script, "read corosync's state", mutates=False).stdout
        except RemoteCommandFailed as exc:
            out = exc.stdout  # cfgtool exits 1 while a link is down; what it printed counts
        version, _, peers = out.partition(_SPLIT)
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
    """An engine step: the phase's corosync.conf on every member, one reload, verified; undo
    puts every member's files back byte for byte, reloads and verifies the old state."""

    phase: Phase
    cluster: Cluster
    before: str
    ops: MemberOps = field(compare=False)

    @property
    def id(self) -> str:
        return self.phase.id

    @property
    def description(self) -> str:
        return self.phase.description

    def plan(self, system: System) -> list[Action]:
        conf = self.phase.conf
        return [*(Change(f"{m.name}:{COROSYNC_CONF}", self.before, conf.text(), 0o644)
                  for m in self.cluster.members),
                PlannedCommand(RELOAD),
                PlannedWait(f"every member to run config_version {conf.config_version} and "
                            f"reach every other on links {list(conf.link_numbers)}",
                            self.cluster.timeouts.verify)]

    def apply(self, system: System) -> dict[str, States]:
        text, memo, reloading = self.phase.conf.text(), {}, False
        try:
            results = each(self.cluster.members, lambda m: self.ops.replace(m, text))
            memo = {n: states for n, (states, _) in results.items() if states}
            errors = [f"{n}: {e}" for n, (_, e) in results.items() if e]
            if errors:
                raise OperationFailed("corosync.conf could not be written on every member: "
                                      + "; ".join(errors), code="members-update-failed")
            reloading = True
            self.ops.reload()
            wait_converged(system, self.cluster, self.ops, self.phase.conf)
        except PvestrapError as exc:
            try:
                self.undo(system, memo, reload=reloading)
            except PvestrapError as again:
                raise OperationFailed(f"{exc.message}; putting it back failed too: "
                                      f"{again.message}", code="link-rollback-failed",
                                      remedy=again.remedy) from exc
            raise
        return memo

    def undo(self, system: System, memo: dict[str, States], reload: bool = True) -> None:
        by_name = {m.name: m for m in self.cluster.members}
        results = each([by_name[n] for n in memo], lambda m: self.ops.restore(m, memo[m.name]))
        errors = [f"{n}: {e}" for n, e in results.items() if e]
        if errors:
            raise OperationFailed("could not put corosync.conf back on: " + "; ".join(errors),
                                  code="members-restore-failed",
                                  remedy=f"restore {COROSYNC_CONF} from its .bak there and run "
                                         "`corosync-cfgtool -R`")
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
    problems: list[Finding] = []

    def check() -> bool:
        problems[:] = converged(cluster, ops, conf, ignore)
        return not problems

    if not system.wait_until(check, cluster.timeouts.verify, cluster.timeouts.poll,
                             what=f"members on config_version {conf.config_version}"):
        raise LinkVerifyFailed(f"the members did not all run config_version "
                               f"{conf.config_version} with every link up within "
                               f"{cluster.timeouts.verify:g} s", problems)


def steps(cluster: Cluster, plan: ChangePlan, ops: MemberOps) -> list[PhaseStep]:
    befores = [plan.before_text] + [p.conf.text() for p in plan.phases[:-1]]
    return [PhaseStep(phase, cluster, before, ops)
            for phase, before in zip(plan.phases, befores)]


def run_change(system: System, cluster: Cluster, plan: ChangePlan, on_progress=None):
    """Apply PLAN (see run_locked); StepFailed (after the rollback) when a phase fails."""
    return run_locked(system, cluster, lambda ops: steps(cluster, plan, ops), on_progress)


def run_locked(system: System, cluster: Cluster, make_steps: Callable[[ShellOps], Sequence],
               on_progress=None):
    """The steps MAKE_STEPS(ops) under every member's lock, after checking that no member's
    corosync.conf changed since it was read (link changes, node removal, the QDevice)."""
    from pvestrap.apply.engine import run_steps

    with locked(system, cluster) as control_path:
        ops = ShellOps(system, cluster, control_path)
        texts = each(cluster.members, ops.read)
        changed = sorted(n for n, t in texts.items() if t != cluster.text)
        if changed:
            raise OperationFailed(f"corosync.conf changed on {', '.join(changed)} since it was "
                                  "read", code="conf-changed-meanwhile",
                                  remedy="run the command again to plan from the new file")
        return run_steps(make_steps(ops), system, on_progress)
