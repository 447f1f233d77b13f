"""Batched membership (plain corosync): the joiners that wait together join in one change.

Every joiner of an unattended join (`apply --yes`, first boot) waits for the member's join lock
through a queue on that member: while it waits, an entry /run/pvestrap/join-queue/NAME, which it
holds with a shared flock (the kernel lets go when its session ends, so a dead joiner is never
taken for a waiting one), says which node it is. The joiner that gets the lock (the holder) adds
itself and every joiner waiting in the queue to the cluster's corosync.conf in ONE change: one
config_version bump, one write per member, one reload (remote.MembersStep, the same edit a single
join makes). Then it marks those joiners `NAME.batched`; each of them stops waiting, finds itself
in the cluster's corosync.conf as planned and finishes on its own node without the lock (install
conf and authkey, start corosync, wait for quorum), all of them at the same time. A joiner that
arrives later waits for the lock and joins the normal way (corosync.join_steps).

The batch's nodes start corosync at one moment the holder sets when it tells the others
(start_lead() ahead, on the wall clock NTP keeps the same on every node; written to the member
before the marks, read by each batched joiner with the cluster's files): nodes that start within
a few milliseconds of each other join the ring in one membership change, while a start only
0.1 s later costs another one (measured with corosync alone, 3 nodes x 2 links: two joiners
started together 2.70 s until all quorate, 0.1 s apart 3.69 s). A node never waits more than
START_WAIT_MAX_S for it (a clock that is off only makes its start sooner or later).

Only joiners that are in the holder's plan with the same nodeid and addresses, and that the
cluster would accept one after the other (corosync.check_join), are batched. With a gather time
(first boot, where every node is known to be on its way) the holder waits, bounded, until every
planned node that is not in the cluster yet has queued.

Rollback is per joiner: one that fails (its quorum wait, say) undoes its own steps on its own
node and then leaves the cluster again: under the join lock it removes itself from the cluster's
corosync.conf (one more bump, one write per member, one reload). The others stay members; the
holder does the same when it fails, under the lock it still holds. A batched joiner waits until
it is quorate (a majority of the batch's votes is there), not until every batched node is.

A holder that dies after its update-members and before it marked the others (SIGKILL, power)
leaves several joiners listed in the cluster's corosync.conf, none of them told. Each of them,
the holder's next run too, then finds itself listed when it gets the lock and resumes (install,
start, wait for all the listed members): it lets the lock go once its files are installed
(`released_after_install`), since its quorum wait needs the other listed joiners, who queue for
that lock. Held through that wait, the lock let one of them in at a time, each alone with the
creator (2 of 4 votes) until its quorum wait timed out, and again on every retry.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Callable, Sequence

from pvestrap.apply import corosync as cs
from pvestrap.apply import corosync_service as svc
from pvestrap.apply.engine import Action, PlannedWait, Step
from pvestrap.apply.remote import (JOIN_LOCK, LOCK_LEASE_S, MembersStep, Remote, RemoteFile,
                                   member_lock, members_of)
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.planned import is_listed_as_planned
from pvestrap.paths import COROSYNC_CONF
from pvestrap.plan import ClusterPlan
from pvestrap.render import joined_conf
from pvestrap.system import System

QUEUE_DIR = "/run/pvestrap/join-queue"
START_NAME = "batch.start"  # in the queue: the batch's start moment, wall-clock seconds
START = f"{QUEUE_DIR}/{START_NAME}"
# The holder's look at the queue while it gathers (one short command over its open session, the
# holder alone asks): the last joiner's entry is seen within 0.05 s (and one command, ~15 ms).
GATHER_POLL_S = 0.05
# The holder's lead for the common start, counted after the members' reload: what the batched
# joiners need to hear of their marks (the waiter looks every 0.02 s), read the cluster's files
# over their open sessions (the member serves every one of them), plan and install them, with
# ~0.1 s to spare. From `--log` (lab, 2 cores), installed after the marks: 0.04-0.06 s with 2
# joiners, 0.10-0.13 s with 7, 0.17-0.24 s with 15; the lead: 0.15 / 0.225 / 0.345 s. corosync
# needs no more: with corosync alone (3 nodes x 2 links, two joiners started into a running
# one-node ring 0-0.3 s after `corosync-cfgtool -R`), quorate 2.65-2.73 s after their start in 95
# of 96 runs (one 6.3 s, corosync's slow outcome, which fresh daemons have too); started 0.4 s
# after the reload, 2.57-2.64 s, so 0.16 s later counted from the reload. (The 0.4 s lead it
# replaces came from a day whose 10 runs at 0.25 s had 3 slow ones.)
START_LEAD_S = 0.12
START_LEAD_PER_JOINER_S = 0.015
START_LEAD_MAX_S = 0.6  # 32 joiners; well under START_WAIT_MAX_S, the most anyone waits
START_WAIT_MAX_S = 1.0
# The waiting joiner on the member (perl-base is Essential on Debian and Proxmox VE). Arguments:
# lock file, queue entry, the entry's line, seconds to wait, lease seconds. Prints "locked" (and
# then holds the lock as remote.LEASE_HOLDER does, while heartbeats arrive) or "batched" (and
# then keeps the session, without the lock, so the joiner reads the cluster over it instead of
# paying for a new ssh handshake); exits 1 when the wait is over, at once when the joiner's
# session ends (stdin closes).
WAITER = r"""use Fcntl qw(:flock); $| = 1;
my ($lock, $entry, $line, $wait, $lease) = @ARGV;
open(my $q, '>', $entry) or die "$entry: $!\n"; flock($q, LOCK_SH) or die "$entry: $!\n";
syswrite($q, "$line\n");
open(my $l, '>>', $lock) or die "$lock: $!\n";
my $end = time + $wait; my $in = ''; vec($in, fileno(STDIN), 1) = 1;
while (1) {
  if (flock($l, LOCK_EX | LOCK_NB)) { unlink($entry); close($q); print "locked\n"; last; }
  if (-e "$entry.batched") {
    unlink("$entry.batched", $entry); close($q); print "batched\n"; last; }
  exit 1 if time >= $end;
  my $r = $in; if (select($r, undef, undef, 0.02) > 0) { sysread(STDIN, my $b, 64) or exit 0; }
}
$SIG{ALRM} = sub { exit 0 };
while (1) { alarm($lease); sysread(STDIN, my $b, 64) or exit 0; }
"""


def start_lead(joiners: int) -> float:
    """Seconds from the members' reload to the batch's common start for JOINERS (the holder
    included): 0.15 s for 2, 0.345 s for 15, at most START_LEAD_MAX_S."""
    return min(START_LEAD_S + START_LEAD_PER_JOINER_S * joiners, START_LEAD_MAX_S)


def entry_line(plan: ClusterPlan, name: str) -> str:
    """What a queue entry says: the cluster and the node as the joiner's plan has it."""
    node = plan.node(name)
    addresses = " ".join(f"{n}={a}" for n, a in sorted(node.addresses.items()))
    return f"{plan.cluster_name} {name} {node.nodeid} {addresses}"


def waiter_script(plan: ClusterPlan, name: str, queue: str = QUEUE_DIR, lock: str = JOIN_LOCK
                  ) -> Callable[[float], str]:
    """The remote program remote.member_lock runs to wait in the queue for WAIT seconds."""
    def script(wait: float) -> str:
        return (f"mkdir -p {shlex.quote(queue)} && exec " + shlex.join(
            ["perl", "-e", WAITER, lock, f"{queue}/{name}", entry_line(plan, name),
             str(max(1, round(wait))), str(LOCK_LEASE_S)]))

    return script


def waiting_script(queue: str = QUEUE_DIR) -> str:
    """Print 'waiting NAME LINE' for every entry whose joiner still holds it."""
    q = shlex.quote(queue)
    return (f"cd {q} 2>/dev/null || exit 0; for f in *; do case \"$f\" in '*'|*.batched) "
            "continue;; esac; if ! flock -n -x \"$f\" true 2>/dev/null; then "
            "printf 'waiting %s %s\\n' \"$f\" \"$(head -n1 -- \"$f\" | head -c 512)\"; fi; done")


def parse_waiting(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        word, _, rest = line.partition(" ")
        name, _, entry = rest.partition(" ")
        if word == "waiting" and name:
            out[name] = entry.strip()
    return out


def mark_script(names: Sequence[str], start_at: float, queue: str = QUEUE_DIR) -> str:
    """The batch's start moment (replaced whole), then a mark for each batched joiner."""
    start, new = shlex.quote(f"{queue}/{START_NAME}"), shlex.quote(f"{queue}/{START_NAME}.new")
    return "; ".join(["set -e", f"printf '%s\\n' {start_at:.3f} > {new}", f"mv -f {new} {start}",
                      *(f": > {shlex.quote(f'{queue}/{n}.batched')}" for n in names)])


def start_moment(found: RemoteFile | None) -> float | None:
    """The start moment a START file says; None when it is absent or says no number."""
    if found is None or found.data is None:
        return None
    try:
        value = float(found.data[:64].decode("ascii", errors="replace").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_batched(remote: Remote) -> tuple[cs.ClusterSnapshot, float | None]:
    """A batched joiner's one read (over its queue session): the cluster's files, without
    corosync-quorumtool (the ring is busy taking in the batch), and the batch's start moment."""
    snapshot = cs.read_cluster(remote, quorum=False, also=[START])
    return snapshot, start_moment(snapshot.also.get(START))


def waiting(remote: Remote) -> dict[str, str]:
    """The joiners queued on REMOTE right now: name -> their entry line."""
    return parse_waiting(remote.run(waiting_script(), "list the joiners waiting in the queue",
                                    mutates=False).stdout)


def choose(plan: ClusterPlan, me: str, conf: CorosyncConf, snapshot: cs.ClusterSnapshot,
           queued: dict[str, str]) -> tuple[CorosyncConf, tuple[str, ...]]:
    """CONF with ME and every queued joiner the cluster accepts added (nodeid order), and
    their names; entries that differ from this plan are left for the normal path."""
    node = plan.node(me)
    out = conf.add_node(me, dict(node.addresses), node.votes, node.nodeid)
    names = []
    for name in sorted((n for n in queued if n != me and plan.has_node(n)),
                       key=lambda n: plan.node(n).nodeid):
        if queued[name] != entry_line(plan, name) or cs.check_join(plan, name, out, snapshot):
            continue
        other = plan.node(name)
        out = out.add_node(name, dict(other.addresses), other.votes, other.nodeid)
        names.append(name)
    return out, tuple(names)


def gather(system: System, remote: Remote, plan: ClusterPlan, me: str, conf: CorosyncConf,
           seconds: float) -> dict[str, str]:
    """The queue; with SECONDS, polled until every planned node that is not in the cluster
    yet waits in it, or SECONDS are over."""
    listed = {str(n.name) for n in conf.nodes}
    missing = {n.name for n in plan.nodes} - listed - {me}
    found = waiting(remote)
    if seconds <= 0 or missing <= set(found):
        return found

    def everyone() -> bool:
        found.update(waiting(remote))
        return missing <= set(found)

    system.wait_until(everyone, seconds, GATHER_POLL_S, "the other joiners to queue")
    return found


def leave(system: System, remote: Callable[[System, str], Remote], target: str,
          node: str, resolver: Resolver = resolve) -> None:
    """NODE out of the cluster's corosync.conf again: one bump, every other member, one reload.
    Call it holding the join lock."""
    files = remote(system, target).read_files([COROSYNC_CONF], "read the cluster's corosync.conf")
    text = (files[COROSYNC_CONF].data or b"").decode("utf-8", errors="replace")
    conf = CorosyncConf.parse(text, f"{target}:{COROSYNC_CONF}")
    if not any(n.name == node for n in conf.nodes):
        return
    after = conf.remove_node(node).bump_version().canonical()
    members = members_of(conf, target, resolver, leaving=node)
    MembersStep(members, target, text, after, remote).apply(system)


@dataclass
class StartAt:
    """When the batch's nodes start corosync (wall clock, System.wall); None while unknown."""

    at: float | None = None


@dataclass(frozen=True)
class StartTogether:
    """corosync's start (cs.StartStep) at the batch's moment, waiting at most START_WAIT_MAX_S
    for it; at once when the moment is unknown or past."""

    start: cs.StartStep
    when: StartAt = field(compare=False)
    id: str = "start"

    @property
    def description(self) -> str:
        return f"{self.start.description} at the same moment as the rest of the batch"

    def plan(self, system: System) -> list[Action]:
        found = self.start.plan(system)
        return [PlannedWait("the batch's common start moment", START_WAIT_MAX_S), *found] \
            if found else []

    def apply(self, system: System) -> bool:
        """Whether corosync runs is asked before the wait, so that at the moment only the start
        itself runs (not a `corosync-quorumtool -s` first, whose time varies with the load)."""
        running = svc.quorum_status(system) is not None
        if self.when.at is not None:
            system.sleep(min(self.when.at - system.wall(), START_WAIT_MAX_S))
        return self.start.start_known(system, running)

    def undo(self, system: System, memo: bool) -> None:
        self.start.undo(system, memo)


def _start_together(service: svc.Service, t: cs.CorosyncTimeouts, when: StartAt
                    ) -> StartTogether:
    """A batch node's start of corosync (not a restart) at the batch's moment WHEN."""
    return StartTogether(cs.StartStep(service, restart=False, timeout=t.service), when)


@dataclass(frozen=True)
class BatchStep:
    """The batch's one change of every member (MembersStep), then the batched joiners are told,
    with the moment all of them start corosync (WHEN, set here for the holder's own start).
    Undo takes only this node out again: the others may be members already."""

    members: MembersStep
    batched: tuple[str, ...]
    node: str
    when: StartAt = field(default_factory=StartAt, compare=False)
    id: str = "update-members"

    @property
    def description(self) -> str:
        return (f"{self.members.description}, adding {self.node} and "
                f"{', '.join(self.batched)} at once")

    def plan(self, system: System) -> list[Action]:
        return self.members.plan(system)

    def apply(self, system: System) -> object:
        memo = self.members.apply(system)
        at = system.wall() + start_lead(len(self.batched) + 1)
        try:
            self.members.remote(system, self.members.reload_at).run(
                mark_script(self.batched, at), "tell the batched joiners")
        except BaseException:
            self.members.undo(system, memo)
            raise
        self.when.at = at
        return memo

    def undo(self, system: System, memo: object) -> None:
        leave(system, self.members.remote, self.members.reload_at, self.node)


def holder_steps(system: System, plan: ClusterPlan, node: str, snapshot: cs.ClusterSnapshot,
                 service: svc.Service, remote: Callable[[System, str], Remote],
                 timeouts: cs.CorosyncTimeouts, gather_s: float = 0.0,
                 resolver: Resolver = resolve) -> tuple[list[Step], tuple[str, ...]]:
    """The join of the lock's holder: corosync.join_steps when nobody else waits (or when it
    resumes), else the batch's steps; and the batched joiners' names."""
    single = cs.join_steps(plan, node, snapshot, service, remote, timeouts,  # refuses first
                           resolver)
    if not isinstance(single[0], MembersStep):
        return single, ()
    conf = CorosyncConf.parse(snapshot.conf_text, f"{snapshot.address}:{COROSYNC_CONF}")
    queued = gather(system, remote(system, snapshot.address), plan, node, conf, gather_s)
    _, names = choose(plan, node, conf, snapshot, queued)
    if not names:
        return single, ()
    text = joined_conf(plan, (node, *names), snapshot.conf_text)  # render's, as for one joiner
    members = MembersStep(members_of(conf, snapshot.address, resolver), snapshot.address,
                          snapshot.conf_text, text, remote)
    t, when = timeouts, StartAt()
    return [BatchStep(members, names, node, when), cs.InstallStep(text, snapshot.authkey),
            _start_together(service, t, when),
            cs.WaitQuorumStep(None, t.quorum, t.poll)], names


@dataclass(frozen=True)
class ReleaseStep:
    """A resumed join lets the member's join lock go once this node's files are installed (read
    and written under the lock, so no other join's edit of this node's file is lost): nothing
    on the members is left to do, and the quorum wait that follows may need other listed
    joiners, who wait for this lock (the module docstring). RELEASE ends the lock's session."""

    target: str
    release: Callable[[], None] = field(compare=False)
    grace: float = 10.0  # remote._stop's wait for the session to end
    id: str = "release-lock"

    @property
    def description(self) -> str:
        return (f"let the next joiner take the join lock on {self.target} (the members list "
                "this node already)")

    def plan(self, system: System) -> list[Action]:
        return [PlannedWait(f"the session holding {JOIN_LOCK} on {self.target} to end",
                            self.grace)]

    def apply(self, system: System) -> None:
        self.release()

    def undo(self, system: System, memo: None) -> None:
        return None  # the lock is not taken again: what is left to undo is this node's own


def released_after_install(steps: list[Step], target: str, release: Callable[[], None]
                           ) -> list[Step]:
    """STEPS with a ReleaseStep after the install when they are a resume (the members list
    this node already: its first step installs its files); else STEPS as they are."""
    if not steps or not isinstance(steps[0], cs.InstallStep):
        return steps
    return [steps[0], ReleaseStep(target, release), *steps[1:]]


def batched_steps(plan: ClusterPlan, node: str, snapshot: cs.ClusterSnapshot,
                  service: svc.Service, timeouts: cs.CorosyncTimeouts,
                  start_at: float | None = None) -> list[Step] | None:
    """A batched joiner's own part, starting corosync at the batch's moment START_AT; None when
    the cluster does not list it as planned (a stale mark): then it joins the normal way."""
    conf = CorosyncConf.parse(snapshot.conf_text, f"{snapshot.address}:{COROSYNC_CONF}")
    if not is_listed_as_planned(plan, node, conf):
        return None
    t = timeouts
    return [cs.InstallStep(snapshot.conf_text, snapshot.authkey),
            _start_together(service, t, StartAt(start_at)),
            cs.WaitQuorumStep(None, t.quorum, t.poll)]


def leave_locked(system: System, remote: Callable[[System, str], Remote], target: str,
                 node: str, timeouts: cs.CorosyncTimeouts,
                 notify: Callable[[str], None] | None = None) -> None:
    """A batched joiner that failed: under the join lock, out of the cluster again."""
    lock = member_lock(system, remote(system, target), wait=timeouts.lock_wait,
                       retries=timeouts.lock_retries, backoff=timeouts.backoff, notify=notify)
    with lock:
        leave(system, remote, target, node)

