"""`pvestrap node remove NAME`: the admin guide's "Remove a Cluster Node", checked and reversible.

Run on a remaining member. Before any change: NAME is in corosync.conf and is not this node; it
is powered off (not in corosync's membership, no knet link connected to it, no ICMP answer on
any of its addresses); the remaining nodes are quorate now and after (or `--expected-votes N`,
the guide's `pvecm expected 1` workaround, within what is online); every remaining node is a
member with the same corosync.conf and answers over SSH; on Proxmox, NAME owns no guests and no
HA rule needs it. Then:

- plain corosync: NAME leaves the nodelist, config_version goes up once, the file is written on
  every remaining member and corosync reloads (the machinery of `link add`: every member's files
  come back byte for byte when a write, the reload or the convergence fails);
- Proxmox VE: `pvecm delnode NAME` (pve-cluster's API2/ClusterConfig.pm delnode: refuses this
  node itself and a cluster without quorum, edits /etc/pve/corosync.conf, which pmxcfs hands to
  every member's corosync); /etc/pve/nodes/NAME is moved aside first, never deleted;
- NAME's entries leave root's known_hosts on every member (the admin guide's note on SSH errors
  after a node with the same name or address comes back);
- verified on every member: NAME not a member, expected votes as planned, quorate.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Sequence

from pvestrap.apply import links
from pvestrap.apply.engine import Action, PlannedCommand, PlannedWait, unsettled
from pvestrap.apply.links import Cluster, LinkTimeouts, MemberHost, MemberOps, Phase, PhaseStep
from pvestrap.apply.remote import Remote, parse_show, put_script, show_script
from pvestrap.checks import removal as checks
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import QUORUMTOOL, QuorumStatus, StatusUnparsable, parse_quorum_status
from pvestrap.corosync.tree import ConfNode
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.findings import Finding, fail, passed
from pvestrap.paths import COROSYNC_CONF, PVE_COROSYNC_CONF, PVE_KNOWN_HOSTS, PVE_NODES
from pvestrap.render import Change
from pvestrap.system import System

KNOWN_HOSTS = "/root/.ssh/known_hosts"
PVE_LOCAL = "/etc/pve/local"  # pmxcfs makes it writable only with quorum
CFS_QUORUM_WAIT_S = 30.0  # lowering expected votes until pmxcfs sees quorum
ASIDE = "/var/lib/pvestrap/removed"
_PING_LOSS = re.compile(r"(\d+(?:\.\d+)?)% packet loss")


@dataclass(frozen=True)
class Removal:
    """What removing NAME means here: the remaining members (this node among them), NAME's
    entry, corosync.conf before and after, the votes, and the backend that does it."""

    name: str
    cluster: Cluster            # remaining members only
    target: ConfNode
    after: CorosyncConf
    votes: checks.VotePlan
    backend: str                # "pve" | "corosync"
    expected_votes: int | None = None
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))

    @property
    def nodeid(self) -> int:
        return int(self.target.nodeid)  # type: ignore[arg-type]

    @property
    def hosts(self) -> tuple[str, ...]:
        """What known_hosts may name NAME by: its name and its addresses."""
        return (self.name, *sorted(set(self.target.addresses.values())))

    @property
    def aside(self) -> str:
        return f"{ASIDE}/{self.name}-{self.stamp}"

    def change(self) -> Change:
        return Change(COROSYNC_CONF, self.cluster.text, self.after.text(), 0o644)


def read_removal(system: System, name: str, expected_votes: int | None = None,
                 timeouts: LinkTimeouts = LinkTimeouts(), backend: str | None = None
                 ) -> tuple[Removal | None, list[Finding]]:
    """The removal, or None with the findings that stop it before a plan exists (NAME unknown,
    NAME is this node). Raises UserError for input that is wrong in itself."""
    from pvestrap.apply.pve import is_pve

    if expected_votes is not None and expected_votes < 1:
        raise UserError(f"--expected-votes {expected_votes} is below 1", code="bad-expected-votes",
                        remedy="give the number of votes online (1 for a lone survivor)")
    cluster = links.read_cluster(system, None, timeouts)
    found = checks.member_findings(cluster.conf, name, cluster.local.name)
    if any(f.severity.value == "fail" for f in found):
        return None, found
    target = next(n for n in cluster.conf.nodes if n.name == name)
    remaining = tuple(m for m in cluster.members if m.name != name)
    after = cluster.conf.remove_node(name).bump_version()
    votes = checks.vote_plan(cluster.conf, name, cluster.observed.quorum)
    refuse_expected_votes(votes, expected_votes, meaning="the votes online",
                          otherwise=", or bring the other nodes back")
    kind = backend or ("pve" if is_pve(system) else "corosync")
    removal = Removal(name, dataclasses.replace(cluster, members=remaining), target, after,
                      votes, kind, expected_votes)
    return removal, found


def refuse_expected_votes(votes: checks.VotePlan, expected_votes: int | None, *, meaning: str,
                          otherwise: str = "") -> None:
    """UserError (bad-expected-votes) when --expected-votes is out of bounds for VOTES; the remedy
    names the votes present (MEANING says what they are), then OTHERWISE."""
    if expected_votes is None:
        return
    problem = checks.expected_votes_problem(votes, expected_votes)
    if problem:
        hint = f"pass --expected-votes {max(votes.present, 1)} ({meaning}){otherwise}"
        raise UserError(problem, code="bad-expected-votes", remedy=hint)


# -- preflight -------------------------------------------------------------------------------------

def answering(system: System, addresses: Sequence[str], count: int = 2) -> list[str]:
    """The addresses that answer ICMP from this node."""
    out = []
    for address in addresses:
        try:
            result = system.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "1",
                                 address], check=False, mutates=False, timeout=10)
        except PvestrapError:
            continue
        loss = _PING_LOSS.search(result.stdout or "")
        if loss and float(loss.group(1)) < 100.0:
            out.append(address)
    return out


def preflight(system: System, removal: Removal) -> list[Finding]:
    obs = removal.cluster.observed
    addresses = sorted(set(removal.target.addresses.values()))
    out = checks.offline_findings(removal.name, removal.nodeid, obs.quorum, obs.links,
                                  answering(system, addresses))
    quorate = bool(obs.quorum and obs.quorum.quorate)
    out += checks.vote_findings(removal.votes, quorate, removal.expected_votes, removal.name)
    out += member_findings(system, removal)
    if removal.backend == "pve":
        out += checks.guest_findings(removal.name, guests(system, removal.name),
                                     ha_rules(system, removal.name))
    return out


def member_findings(system: System, removal: Removal) -> list[Finding]:
    """Every remaining node: in the membership, reachable over SSH, with this node's file."""
    cluster, obs = removal.cluster, removal.cluster.observed
    present = {m.nodeid for m in (obs.quorum.nodes_only if obs.quorum else ())}
    out = [fail("member-missing", f"{m.name} is not a member now; it would miss the change",
                m.name, check=checks.CHECK_MEMBERS, payload={"nodeid": m.nodeid},
                remedy="bring it back into the cluster first (or remove it too, powered off)")
           for m in cluster.members if m.nodeid not in present]

    def one(member: MemberHost) -> Finding:
        try:
            text = links.ShellOps(system, cluster).read(member)
        except PvestrapError as exc:
            return fail("member-unreachable", f"{member.name}: {exc.message}", member.name,
                        check=checks.CHECK_MEMBERS, payload={"address": member.address},
                        remedy=exc.remedy)
        if text != cluster.text:
            return fail("conf-differs", f"{member.name}'s {COROSYNC_CONF} differs from this "
                        "node's", member.name, check=checks.CHECK_MEMBERS,
                        remedy="make every member's corosync.conf the same first")
        return passed("member-ready", f"{member.name} answers and has the same "
                      f"{COROSYNC_CONF}", member.name, checks.CHECK_MEMBERS)

    results = links.each([m for m in cluster.members if m.nodeid in present], one)
    return out + list(results.values())


def guests(system: System, name: str) -> dict[str, list[str]]:
    root = system.root
    out = {}
    for kind in ("qemu-server", "lxc"):
        folder = os.path.join(root, PVE_NODES.lstrip("/"), name, kind)
        try:
            out[kind] = [f[:-5] for f in os.listdir(folder) if f.endswith(".conf")]
        except OSError:
            out[kind] = []
    return out


def ha_rules(system: System, name: str) -> list[tuple[str, str, list[str]]]:
    """HA groups (groups.cfg) and node-affinity rules (rules.cfg, PVE 9) that name NAME:
    section-config files, `TYPE: ID` then indented `nodes n1[:prio],n2`."""
    out = []
    for path in ("/etc/pve/ha/groups.cfg", "/etc/pve/ha/rules.cfg"):
        section = None
        for line in (system.read_text(path) or "").splitlines():
            if line and not line[0].isspace() and ":" in line:
                section = line.strip()
            elif section and line.split(None, 1)[:1] == ["nodes"]:
                nodes = [n.split(":")[0].strip() for n in line.split(None, 1)[1].split(",")]
                if name in nodes:
                    out.append((path, section, nodes))
    return out


# -- steps -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpectedVotesStep:
    """Lower expected votes (votequorum tells every member) so the survivors are quorate."""

    argv: tuple[str, ...]
    before: int | None
    undo_argv: tuple[str, ...] | None
    member: MemberHost | None = None   # run there over SSH (None: here)
    cluster: Cluster | None = field(default=None, compare=False)
    writable: str | None = None    # wait until this is writable (pmxcfs's own quorum view)
    id: str = "expected-votes"

    @property
    def description(self) -> str:
        return f"lower expected votes to {self.argv[-1]} for the removal (the survivors are " \
               "not quorate)"

    def plan(self, system: System) -> list[Action]:
        where = f"{self.member.name}'s " if self.member else ""
        waits = [PlannedWait(f"{where}{self.writable} writable (pmxcfs quorate)",
                             CFS_QUORUM_WAIT_S)] if self.writable else []
        if self.member is not None:
            ssh = ("ssh", f"root@{self.member.name}", shlex.join(self.argv))
            return [PlannedCommand(ssh), *waits]
        return [PlannedCommand(self.argv, undo_argv=self.undo_argv), *waits]

    def apply(self, system: System) -> None:
        remote = None
        if self.member is not None and self.cluster is not None:
            remote = self.cluster.access(system, self.member)
            remote.run(shlex.join(self.argv), "lower expected votes")
        else:
            system.run(list(self.argv), timeout=30)
        if (path := self.writable) and not system.wait_until(  # cfs_writable: why
                lambda: cfs_writable(system, path, remote), CFS_QUORUM_WAIT_S, 0.2, path):
            raise OperationFailed(f"{path} stayed read-only {CFS_QUORUM_WAIT_S:g} s after "
                                  "lowering the expected votes: pmxcfs does not see quorum",
                                  code="cfs-not-quorate")

    def undo(self, system: System, memo: None) -> None:
        if self.undo_argv and self.member is None:  # a reload resets it from the nodelist
            system.run(list(self.undo_argv), check=False, timeout=30)


@dataclass(frozen=True)
class KnownHostsStep:
    """NAME's keys out of every member's known_hosts (ssh-keygen -R by name and by address;
    on Proxmox also the cluster-wide one, once); undo puts each file back byte for byte."""

    removal: Removal
    id: str = "known-hosts"

    @property
    def description(self) -> str:
        return f"forget {self.removal.name}'s SSH host keys ({', '.join(self.removal.hosts)})"

    def files(self, member: MemberHost) -> tuple[str, ...]:
        shared = self.removal.backend == "pve" and member == self.removal.cluster.writer
        return (KNOWN_HOSTS, PVE_KNOWN_HOSTS) if shared else (KNOWN_HOSTS,)

    def script(self, member: MemberHost) -> str:
        return "; ".join(f"if [ -f {shlex.quote(p)} ]; then ssh-keygen -R {shlex.quote(h)} -f "
                         f"{shlex.quote(p)} >/dev/null 2>&1; rm -f -- {shlex.quote(p + '.old')}; fi"
                         for p in self.files(member) for h in self.removal.hosts)

    def plan(self, system: System) -> list[Action]:
        return [PlannedCommand(("ssh", f"root@{m.name}", self.script(m)))
                for m in self.removal.cluster.members]

    def apply(self, system: System) -> dict[str, list]:
        cluster, memo = self.removal.cluster, {}

        def one(member: MemberHost):
            access = cluster.access(system, member)
            before = parse_show(access.run(show_script(self.files(member)), "read known_hosts",
                                           mutates=False).stdout)
            access.run(self.script(member), "forget the removed node's host keys")
            return [before[p] for p in self.files(member) if p in before]

        errors = []
        for name, result in links.each_safely(cluster.members, one).items():
            if isinstance(result, PvestrapError):
                errors.append(f"{name}: {result.message}")
            else:
                memo[name] = result
        if errors:
            self.undo(system, memo)
            raise OperationFailed("known_hosts could not be cleaned on: " + "; ".join(errors),
                                  code="known-hosts-failed")
        return memo

    def undo(self, system: System, memo: dict[str, list]) -> None:
        cluster = self.removal.cluster
        for member in cluster.members:
            if memo.get(member.name):
                script, stdin = put_script(memo[member.name])
                cluster.access(system, member).run(script, "put known_hosts back", input=stdin)


@dataclass(frozen=True)
class VerifyStep:
    """Every remaining member: quorate, NAME not a member, expected votes as planned."""

    removal: Removal
    id: str = "verify"

    @property
    def description(self) -> str:
        return (f"every member quorate with {self.removal.votes.expected_after} expected "
                f"votes and without {self.removal.name}")

    def plan(self, system: System) -> list[Action]:
        return [PlannedWait(self.description, self.removal.cluster.timeouts.verify)]

    def problems(self, system: System) -> list[str]:
        r, out = self.removal, []
        for member in r.cluster.members:
            status = member_quorum(system, r.cluster, member)
            if status is None:
                out.append(f"{member.name}: no quorum status")
            elif not status.quorate:
                out.append(f"{member.name}: not quorate")
            elif r.nodeid in {m.nodeid for m in status.nodes_only}:
                out.append(f"{member.name}: {r.name} is still a member")
            elif status.expected_votes != r.votes.expected_after:
                out.append(f"{member.name}: expected votes {status.expected_votes}, not "
                           f"{r.votes.expected_after}")
        return out

    def apply(self, system: System) -> None:
        timeouts = self.removal.cluster.timeouts
        seen = unsettled(system, lambda: self.problems(system), timeouts.verify, timeouts.poll,
                         "the members")
        if seen is not None:
            raise OperationFailed("the members did not settle as planned: " + "; ".join(seen),
                                  code="removal-verify-failed")

    def undo(self, system: System, memo: None) -> None:
        return None


def cfs_writable(system: System, path: str, remote: Remote | None = None) -> bool:
    """pmxcfs's quorum as pve-cluster's check_cfs_quorum reads it: the owner-write bit of
    /etc/pve/local's own mode (lstat; `-w` is always true for root), here or on REMOTE.
    corosync's quorum comes first, pmxcfs follows a moment later: a `pvecm delnode` right after
    `pvecm expected` dies with "cluster not ready - no quorum?" (pve-cluster, PVE/Cluster.pm)."""
    argv = ["stat", "-c", "%a", path]
    try:
        mode = (system.run(argv, check=False, mutates=False, timeout=10) if remote is None else
                remote.run(shlex.join(argv), f"read {path}'s mode", mutates=False, timeout=10))
        return bool(int(mode.stdout.strip(), 8) & 0o200)
    except (PvestrapError, ValueError):
        return False


def member_quorum(system: System, cluster: Cluster, member: MemberHost) -> QuorumStatus | None:
    try:
        out = cluster.access(system, member).run(" ".join(QUORUMTOOL) + " || true",
                                                 "read quorum", mutates=False).stdout
        return parse_quorum_status(out)
    except (PvestrapError, StatusUnparsable):
        return None


# -- Proxmox VE ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodesDirAsideStep:
    """/etc/pve/nodes/NAME moved out of the cluster filesystem (never deleted) on the member
    that does the cluster side: the admin guide says to remove it; this keeps it where the
    report says (MEMBER:ASIDE/NAME-STAMP). Since pve-cluster 8.1 NAME's SSH host key lives
    there too (ssh_known_hosts, PVE/Cluster/Setup.pm ssh_create_node_known_hosts)."""

    removal: Removal
    control_path: str | None = None
    id: str = "nodes-dir-aside"

    @property
    def member(self) -> MemberHost:
        return self.removal.cluster.writer

    @property
    def source(self) -> str:
        return f"{PVE_NODES}/{self.removal.name}"

    @property
    def description(self) -> str:
        return f"move {self.source} aside to {self.member.name}:{self.removal.aside}"

    def script(self) -> str:
        src, dst = shlex.quote(self.source), shlex.quote(self.removal.aside)
        return (f"if [ -d {src} ]; then mkdir -p {shlex.quote(ASIDE)} && mv -T {src} {dst} "
                "&& echo moved; fi")

    def plan(self, system: System) -> list[Action]:
        if not self.member.local:
            return [PlannedCommand(("ssh", f"root@{self.member.name}", self.script()),
                                   undo_argv=("ssh", f"root@{self.member.name}",
                                              shlex.join(("mv", "-T", self.removal.aside,
                                                          self.source))))]
        if not system.exists(self.source):
            return []
        return [PlannedCommand(("mkdir", "-p", ASIDE)),
                PlannedCommand(("mv", "-T", self.source, self.removal.aside),
                               undo_argv=("mv", "-T", self.removal.aside, self.source))]

    def apply(self, system: System) -> bool:
        shell = self.removal.cluster.access(system, self.member, self.control_path)
        out = shell.run(self.script(), f"move {self.source} aside", timeout=60).stdout
        return out.split()[-1:] == ["moved"]

    def undo(self, system: System, memo: bool) -> None:
        if memo:
            shell = self.removal.cluster.access(system, self.member, self.control_path)
            shell.run(shlex.join(("mv", "-T", self.removal.aside, self.source)),
                      f"put {self.source} back", timeout=60)


def undo_delnode(system: System, removal: Removal, ops: MemberOps, current: str | None) -> str:
    """NAME back in the nodelist after `pvecm delnode NAME` (CURRENT: the file delnode left), at a
    config_version above delnode's: pmxcfs never hands on a lower one (pve-cluster
    src/pmxcfs/dcdb.c, dcdb_sync_corosync_conf). Written as a link change writes it (members'
    files, then pmxcfs's copy, one reload); NAME's links stay down. Returns the file."""
    try:
        now = CorosyncConf.parse(current).config_version if current else None
    except PvestrapError:
        now = None  # delnode's own then
    version = max(now or 0, removal.after.config_version or 0) + 1
    back = CorosyncConf.parse(removal.cluster.text).at_version(version)
    phase = Phase(f"re-add-{removal.name}", f"put {removal.name} back (config_version {version})",
                  back)
    links.PhaseStep(phase, removal.cluster, current or removal.after.text(), ops,
                    ignore=("knet-link-down",)).apply(system)
    return back.text()


@dataclass(frozen=True)
class DelnodeStep:
    """`pvecm delnode NAME` (pmxcfs hands its file to every member); undone by undo_delnode."""

    removal: Removal
    ops: MemberOps | None = field(default=None, compare=False)
    id: str = "delnode"

    @property
    def description(self) -> str:
        return f"pvecm delnode {self.removal.name}"

    def plan(self, system: System) -> list[Action]:
        return [Change(PVE_COROSYNC_CONF, self.removal.cluster.text, self.removal.after.text(),
                       0o640), PlannedCommand(("pvecm", "delnode", self.removal.name))]

    def apply(self, system: System) -> bool:
        system.run(["pvecm", "delnode", self.removal.name], timeout=120)
        return True

    def undo(self, system: System, memo: bool) -> None:
        if memo:
            undo_delnode(system, self.removal,
                         self.ops or links.ShellOps(system, self.removal.cluster),
                         system.read_text(PVE_COROSYNC_CONF))


# -- the whole removal -----------------------------------------------------------------------------

def steps(system: System, removal: Removal, ops: MemberOps | None = None) -> list:
    out: list = []
    if removal.expected_votes is not None and not (removal.cluster.observed.quorum and
                                                   removal.cluster.observed.quorum.quorate):
        before = removal.votes.expected_now
        tool = ("pvecm", "expected") if removal.backend == "pve" else \
            ("corosync-quorumtool", "-e")
        out.append(ExpectedVotesStep((*tool, str(removal.expected_votes)), before,
                                     (*tool, str(before)) if before else None,
                                     writable=PVE_LOCAL if removal.backend == "pve" else None))
    if removal.backend == "pve":
        out += [NodesDirAsideStep(removal), KnownHostsStep(removal), DelnodeStep(removal, ops)]
    else:
        phase = Phase(f"remove-{removal.name}", f"remove {removal.name} from the nodelist on "
                      "every member and reload corosync", removal.after)
        out += [PhaseStep(phase, removal.cluster, removal.cluster.text,
                          ops or links.ShellOps(system, removal.cluster)),
                KnownHostsStep(removal)]
    return out + [VerifyStep(removal)]


def run_removal(system: System, removal: Removal, on_progress=None):
    """Apply the removal under every member's lock, after checking no member's corosync.conf
    changed since it was read; StepFailed (after the rollback) when a step fails."""
    return links.run_locked(system, removal.cluster,
                            lambda ops: steps(system, removal, ops), on_progress)
