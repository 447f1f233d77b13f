"""The first boot's phases in order (the package docstring tells the story): preflight
(local checks, the wait until every peer's ran, probes), this node's turn, apply, linger.
`entry` is its command line."""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager

from pvestrap import answers, preflight
from pvestrap.checks.localsys import resolve
from pvestrap.checks.prober import Measurements
from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Severity
from pvestrap.firstboot import applying, membership, network, qdevice, waiting
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.firstboot.presence import Presence
from pvestrap.firstboot.state import STATE_DIR, StateDir
from pvestrap.firstboot.tokens import Tokens, derive_tokens
from pvestrap.plan import ClusterPlan, Node
from pvestrap.report.jsonout import report_dict
from pvestrap.report.model import Report
from pvestrap.report.text import finding_line, render_text

Say = Callable[[str], None]
PREFLIGHT_FILE = "firstboot-preflight.json"
PREFLIGHT_ATTEMPTS = 3
PREFLIGHT_PAUSE_S = 3.0


@dataclass(frozen=True)
class Options:
    answers: str
    node: str | None = None
    state_dir: str = STATE_DIR
    peer_wait_s: float = 600.0
    turn_wait_s: float = 900.0
    apply_timeout_s: float = 900.0
    quorum_timeout_s: float = 300.0
    linger_s: float = 1800.0
    secret_file: str | None = None  # default: beside the answer file (secret.path_for)
    duration_s: float | None = None
    ignore: tuple[str, ...] = ()
    corosync_start: tuple[str, ...] | None = None
    quiet: bool = False  # progress lines only: no report text, no apply plan on stdout

    @property
    def responder_ttl_s(self) -> float:
        """Long enough for every bounded phase; the responder dies with the process anyway."""
        return (self.peer_wait_s + self.turn_wait_s + self.apply_timeout_s
                + self.quorum_timeout_s + self.linger_s + 600.0)


@dataclass(frozen=True)
class Outcome:
    node: str
    role: str
    already_done: bool = False
    attempts: int = 0
    all_members: bool | None = None
    resumed_from: str | None = None
    phases: tuple[str, ...] = field(default=())


def say_line(message: str) -> None:
    """One progress line, flushed at once: stdout is the journal, read while it happens."""
    print(message, flush=True)


# -- the flow --------------------------------------------------------------------------------------

def run(opts: Options, apply: applying.ApplyFn | None = None, say: Say = say_line,
        seams: Seams | None = None) -> Outcome:
    """The first boot of this node (see the module docstring); raises PvestrapError. SEAMS:
    where the flow meets the network and this machine (tests give fakes)."""
    state = StateDir(opts.state_dir)
    done = state.done()
    if done is not None:
        say(f"first boot finished already ({_describe_done(done)}): nothing to do")
        return Outcome(done.get("node") or "?", "?", already_done=True)
    data = _read(opts.answers)
    plan = answers.load(opts.answers)
    me = answers.select_node(plan, opts.node)
    role = plan.role_of(me.name)
    digest = hashlib.sha256(data).hexdigest()
    secret = _secret(opts)
    detail = (lambda _m: None) if opts.quiet else say
    with state.lock():
        return _run_locked(opts, state, plan, me, role, digest, secret,
                           apply or applying.default_apply, say, detail, seams or Seams())


def _run_locked(opts, state, plan, me, role, digest, secret, apply, say, detail,
                seams: Seams) -> Outcome:
    phase = state.phase(digest, me.name)
    say(f"first boot of {me.name}: {'create' if role == 'create' else 'join'} cluster "
        f"{plan.cluster_name} ({len(plan.nodes)} nodes)"
        + (f"; resuming, an earlier run got to: {phase}" if phase else ""))
    if phase is None:
        state.record(digest, me.name, "started")
    seams.network(plan, me.name, say, detail)  # the cluster NIC before anything else
    member = seams.member(plan, me)
    tokens = derive_tokens(secret)
    done_phases = []
    report = None  # the apply runs its own (local) gate when this run made no preflight
    batched = seams.batches(plan)
    with ExitStack() as joins:
        if batched and role == "create":
            # before this node answers any probe: a joiner that had its answers (every
            # joiner's preflight needs them) finds the lock held and queues for it
            joins.enter_context(seams.hold(say))
        with seams.presence(plan, me, tokens, opts.responder_ttl_s, say) as presence:
            if member or phase in ("preflight-passed", "applied"):
                why = "this node is in the cluster's corosync.conf" if member else \
                    "its preflight passed in an earlier run"
                say(f"skipping the preflight: {why}")
                presence.announce("checked")  # the peers' preflights wait for it, not for us
            else:
                report = seams.preflight(opts, state, plan, me, tokens, say, detail,
                                         presence.announce)
                state.record(digest, me.name, "preflight-passed")
                done_phases.append("preflight-passed")
            presence.announce("ready")
            if not member:
                seams.turn(opts, plan, me, tokens, say, batched, report is not None)
            attempts, everyone = _apply_and_stay(opts, state, plan, me, digest, presence,
                                                 apply, report, say, detail, joins.close,
                                                 seams.members)
    return Outcome(me.name, role, attempts=attempts, all_members=everyone, resumed_from=phase,
                   phases=tuple(done_phases + ["applied"]))


def _apply_and_stay(opts, state, plan, me, digest, presence, apply, report, say, detail,
                    applied: Callable[[], None], members: Callable[..., bool]
                    ) -> tuple[int, bool]:
    """Create or join (gated by this run's preflight REPORT, not a second one); then APPLIED
    (the creating node lets its join lock go), tell the others, mark done, and keep answering
    probes until every node is a member (bounded). Returns (apply attempts, whether every node
    is a member)."""
    presence.release_corosync_ports()
    request = applying.ApplyRequest(plan, me.name, opts.answers, opts.ignore,
                                   opts.quorum_timeout_s, opts.corosync_start, report, detail)
    say("applying: " + ("create the cluster" if plan.role_of(me.name) == "create"
                        else f"join via {plan.join_address(resolve)}"))
    attempts = applying.apply_with_retries(apply, request, opts.apply_timeout_s, say)
    applied()
    state.record(digest, me.name, "applied")
    presence.announce("member")
    if qdevice.mine(plan, me):  # the last node to join; a failure: next boot again
        qdevice.setup(plan, me, opts.linger_s, opts.ignore, say)
    state.mark_done(digest, me.name, plan.cluster_name)
    say(f"done: {me.name} is a member of {plan.cluster_name}")
    everyone = members(plan, opts.linger_s, say)
    if not everyone:
        say(f"stopped answering probes after {opts.linger_s:g} s; nodes that are not "
            "members yet must be started again by hand")
    return attempts, everyone


def _wait_turn(opts: Options, plan, me, tokens: Tokens, say: Say, batched: bool,
               measured: bool) -> None:
    """This node's turn to create or join (waiting.turn says what it waits for; MEASURED: its
    preflight passed in this run). Bounded: then it goes ahead, since a node that failed must
    not hold up the others for ever."""
    waits = waiting.turn(plan, me, batched, measured)
    if not waits:
        say(f"queueing for {plan.creator.name}'s join lock now: it holds it from before it "
            "answered any probe until its create is done")
        return
    started = time.monotonic()
    arrived: set[str] = set()
    for wait in waits:
        left = max(0.0, opts.turn_wait_s - (time.monotonic() - started))
        arrived = waiting.wait_for_stage(plan, me, list(wait.peers), wait.stage,
                                         tokens.stage(wait.stage), left, say,
                                         poll_s=wait.poll_s, settings=wait.settings)
    late = sorted(set(waits[-1].peers) - arrived)
    if late:
        say(f"warning: {', '.join(late)} not {waits[-1].stage} after {opts.turn_wait_s:g} s; "
            "going ahead (the cluster serializes joins itself)")


def _preflights(opts: Options, state: StateDir, plan, me, tokens: Tokens, say: Say,
                detail: Say, announce: Callable[[str], None]) -> Report:
    """The preflight, measured again when every FAIL is a network one: a peer may just have
    restarted in the middle of the measurement (a node that reboots runs its first boot
    again), a few times at most. A local FAIL (a hostname, a running corosync) does not go
    away by waiting: it stops at once."""
    network = {check.id for check in preflight.network_checks()}
    for attempt in range(1, PREFLIGHT_ATTEMPTS):
        try:
            return _preflight(opts, state, plan, me, tokens, say, detail, announce)
        except FirstBootPreflightFailed as exc:
            if not exc.checks <= network:
                raise
            say(f"the preflight failed on the network only ({', '.join(exc.codes)}): a peer "
                f"may be restarting; measuring again (attempt {attempt + 1} of "
                f"{PREFLIGHT_ATTEMPTS})")
            time.sleep(PREFLIGHT_PAUSE_S)
    return _preflight(opts, state, plan, me, tokens, say, detail, announce)


def _preflight(opts: Options, state: StateDir, plan, me, tokens: Tokens, say: Say,
               detail: Say, announce: Callable[[str], None]) -> Report:
    """The local checks; then this node is "checked" and waits until every peer is too
    (waiting.wait_for_checked: PeersMissing when one is not, in time); then the probes."""
    duration = opts.duration_s or plan.preflight.thresholds.duration_s
    say(f"preflight: local checks, then {duration:g} s of probes to every peer and link once "
        "every peer's local checks ran too")
    measured: list[Measurements] = []

    def checked() -> None:
        announce("checked")
        waiting.wait_for_checked(plan, me, tokens.checked, opts.peer_wait_s, say)

    report = preflight.run(plan, me.name, ignore=opts.ignore, probes=preflight.AfterLocalChecks(
        preflight.Probes(tokens.probe, duration, keep=measured.append), checked))
    state.write_json(PREFLIGHT_FILE, {"report": report_dict(report),
                                      "measurements": measured[0].to_dict()})
    detail(render_text(report).rstrip("\n"))
    if report.exit_code():
        failures = [f for f in report.findings if f.severity is Severity.FAIL]
        if opts.quiet:
            for f in failures:
                for line in finding_line(f):
                    say(line)
        raise FirstBootPreflightFailed(len(failures), sorted({f.code for f in failures}),
                              {f.check or f.code for f in failures})
    say("preflight passed")
    return report


class FirstBootPreflightFailed(OperationFailed):
    code = "firstboot-preflight-failed"

    def __init__(self, count: int, codes: list[str], checks: set[str]):
        self.codes, self.checks = codes, checks
        super().__init__(f"the preflight found {count} failure{'s' * (count != 1)} "
                         f"({', '.join(codes)}): nothing was changed",
                         remedy="fix what the FAIL lines above say (or name the check in the "
                                "answer file's [preflight] ignore_checks), then run the first "
                                "boot again")


@dataclass(frozen=True)
class Seams:
    """Where the flow meets the network and this machine; tests give fakes. network: the
    cluster NIC (network.configure); member: whether this node's corosync.conf lists it;
    batches: whether joins go in batches (the plain corosync backend); hold: the creating
    node's hold on its own join lock (applying.holding_joins); presence: this node's responders
    (presence.Presence); preflight: the preflight (its local checks, the wait until every
    peer's ran, its probes); turn: the wait for this node's turn; members: the linger until
    every node is a member."""

    network: Callable[[ClusterPlan, str, Say, Say], object] = network.configure
    member: Callable[[ClusterPlan, Node], bool] = membership.configured_member
    batches: Callable[[ClusterPlan], bool] = applying.batches
    hold: Callable[[Say], ContextManager[object]] = applying.holding_joins
    presence: Callable[[ClusterPlan, Node, Tokens, float, Say], Any] = Presence
    preflight: Callable[..., Report] = _preflights
    turn: Callable[..., None] = _wait_turn
    members: Callable[[ClusterPlan, float, Say], bool] = membership.wait_for_all_members


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise UserError(f"cannot read the answer file {path}: {exc.strerror or exc}",
                        code="answer-file-unreadable",
                        remedy="without an answer file, run `pvestrap wizard` on the console"
                        ) from None


def _secret(opts: Options) -> bytes:
    """The cluster's first-boot secret (--secret-file, else beside the answer file); never the
    answer file itself, which anyone may read: without the secret, exit 2 (secret.py)."""
    return firstboot_secret.read(opts.secret_file or firstboot_secret.path_for(opts.answers))


def _describe_done(done: dict) -> str:
    parts = [f"{k} {done[k]}" for k in ("node", "cluster", "time") if done.get(k)]
    return ", ".join(parts) or "marker present"
