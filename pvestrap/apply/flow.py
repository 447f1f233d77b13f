"""`pvestrap apply` as a library call: gate, plan, show, confirm, apply, report.

1. Which backend: the plan's, or Proxmox VE when /usr/bin/pvecm or /etc/pve exist under the
   system's root, else plain corosync.
2. Where the node stands: a node already in the planned cluster skips the preflight (it is no
   longer a fresh machine; its join checks would all fail) and only makes sure it runs and is
   quorate. Otherwise the preflight runs first and a FAIL stops everything before the first
   change, unless its check id is ignored.
3. The network phase (pvestrap.apply.network_phase), when the plan gives this node interface
   stanzas: after the local preflight (which judges the planned address as planned) and the
   backend's own refusals, before the cluster steps (a joiner may reach the cluster only over
   the new network). It is shown, confirmed and applied on its own, and rolled back on its own.
   Once a link's address is configured (now, or by an earlier apply: a rerun after a FAIL
   probes again), a joiner runs the preflight's probes it left for later over it against the
   member (pvestrap.apply.recheck: with the admin's token, else with responders apply starts
   there over ssh), gated as above.
4. The steps for the node's role, planned before anything changes and shown: a unified diff of
   every file, every command, every bounded wait; secrets as <secret>.
5. Confirmation when a person is there to give it (the caller passes `confirm`), then the steps,
   with a progress line each. A join runs under the member's join lock and is planned again
   under it, so two joiners never edit the cluster's corosync.conf at the same time. A join the
   members list already (a resume) lets the lock go once its files are installed: its quorum
   wait may need other listed joiners that wait for the lock (pvestrap.apply.batch).

Everything the flow prints goes through `out`; it never prompts by itself.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from pvestrap import preflight
from pvestrap.apply import address_probe, batch, network_phase
from pvestrap.apply import corosync as cs
from pvestrap.apply import corosync_service as svc
from pvestrap.apply.engine import (Action, ApplyDeclined, ApplyOutcome, Progress, Step,
                                   StepFailed, plan_steps, run_steps)
from pvestrap.apply.lock import apply_lock
from pvestrap.apply.network_guard import refuse_cutting_branch
from pvestrap.apply.network_phase import NetworkTimeouts, Prober
from pvestrap.apply.recheck import PreflightFailed as PreflightFailed  # re-exported
from pvestrap.apply.recheck import Preflight, Starter, gate, recheck, recheck_links
from pvestrap.apply.recheck import probe_peers as probe_peers  # re-exported
from pvestrap.apply.recheck import probing_preflight as probing_preflight  # re-exported
from pvestrap.apply.remote import CONTROL_PATH, MemberUnreachable, Remote, member_lock
from pvestrap.apply.showing import progress_printer, show_plan
from pvestrap.checks.localsys import Machine, Resolver, read_machine, resolve as resolve_name
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.findings import Finding, Severity, fail
from pvestrap.nodefacts import backend_for, read_facts, resolve
from pvestrap.paths import INTERFACES
from pvestrap.plan import ClusterPlan
from pvestrap.recorded import DryRunSystem
from pvestrap.render import system_reader
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import System

Confirm = Callable[[str], bool]
Out = Callable[[str], None]
LockFactory = Callable[..., object]


@dataclass(frozen=True)
class ApplyResult:
    node: str
    backend: str
    role: str  # create | join | member
    plans: tuple[tuple[str, tuple[Action, ...]], ...]
    outcome: ApplyOutcome | None = None  # None: dry run, or nothing to do

    @property
    def planned(self) -> bool:
        return any(actions for _, actions in self.plans)

    @property
    def changed(self) -> bool:
        return bool(self.outcome and self.outcome.changed)


# -- choices ---------------------------------------------------------------------------------------

def choose_backend(plan: ClusterPlan, system: System) -> str:
    return backend_for(plan, system.exists)


def default_preflight(root: str = "/") -> Preflight:
    """The local preflight of this machine (pvestrap.preflight.run without probes) on ROOT."""

    def run(plan: ClusterPlan, node: str) -> Report:
        return preflight.run(plan, node, root=root)

    return run


def plan_only_preflight(plan: ClusterPlan, node: str) -> Report:
    """Plan validation as a report: the gate of tests that bring their own machine."""
    from pvestrap.plan import validate

    findings = validate(plan) or [Finding("plan-valid", Severity.PASS, "the plan is valid",
                                          check="plan")]
    note = Finding("preflight-plan-only", Severity.INFO, "only the plan was validated; no "
                   "checks of this machine ran", node, "plan")
    return Report("pvestrap apply preflight", (ReportSection("plan", "CLUSTER PLAN",
                                                             (*findings, note)),))


# -- the flow --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApplyContext:
    """What one apply needs besides the plan; the seams tests and the lab fill in."""

    system: System
    root: str = "/"
    dry_run: bool = False
    ignore: tuple[str, ...] = ()
    preflight: Preflight | None = None
    confirm: Confirm | None = None  # None: do not ask (--yes, or dry run)
    out: Out = print
    on_progress: Progress | None = None
    service: svc.Service | None = None
    timeouts: cs.CorosyncTimeouts = cs.CorosyncTimeouts()
    lock_timeout: float = 0.0
    machine: Machine | None = None  # None: read this node's interfaces and routes (`ip -j`)
    environ: Mapping[str, str] | None = None  # None: os.environ (SSH_CONNECTION)
    gather_s: float = 0.0  # an unattended join waits this long for the others (apply.batch)
    prober: Prober | None = None  # None: the ARP probe (pvestrap.apply.address_probe)
    network_timeouts: NetworkTimeouts = NetworkTimeouts()
    recheck: Preflight | None = None  # after the network phase, with the admin's token
    responders: Starter | None = None  # without one: responders apply starts (None: cannot)
    resolver: Resolver = resolve_name  # this node's name lookup: the join target, ssh to members


def apply_node(plan: ClusterPlan, node: str, ctx: ApplyContext) -> ApplyResult:
    """Bring NODE to the plan's state (see the module docstring); raises PvestrapError."""
    plan.check()
    if not plan.has_node(node):
        raise UserError(f"node {node!r} is not in the plan", code="node-unknown",
                        remedy=f"use one of {', '.join(n.name for n in plan.nodes)}")
    _refuse_cutting_branch(plan, node, ctx)
    backend = choose_backend(plan, ctx.system)
    ctx.out(f"{node}: backend {backend}, role {plan.role_of(node)} in cluster "
            f"{plan.cluster_name}")
    with ExitStack() as stack:
        if not ctx.dry_run:  # a dry run writes nothing, not even the lock file
            stack.enter_context(apply_lock(ctx.root, timeout=ctx.lock_timeout))
        return (_pve if backend == "pve" else _corosync)(plan, node, ctx)


def configure_network(plan: ClusterPlan, node: str, ctx: ApplyContext) -> ApplyOutcome | None:
    """The guard and the network phase alone, nothing of the cluster: first boot configures
    the cluster NIC with it before it waits for the peers. None: nothing to do."""
    _refuse_cutting_branch(plan, node, ctx)
    return _phase(plan, node, ctx)


def _phase(plan: ClusterPlan, node: str, ctx: ApplyContext) -> ApplyOutcome | None:
    system = DryRunSystem(ctx.system) if ctx.dry_run else ctx.system
    return network_phase.run(plan, node, system, root=ctx.root, out=ctx.out,
                             confirm=ctx.confirm, prober=ctx.prober or address_probe.probe,
                             timeouts=ctx.network_timeouts, on_progress=ctx.on_progress)


def _refuse_cutting_branch(plan: ClusterPlan, node: str, ctx: ApplyContext) -> None:
    """Before anything else: no planned stanza on the default route's or the SSH session's
    interface (pvestrap.apply.network_guard); exit 2, nothing changed."""
    me = plan.node(node)
    if not me.interfaces:
        return
    path = Path(ctx.root) / INTERFACES.lstrip("/")
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    machine = ctx.machine or read_machine(ctx.root)
    refuse_cutting_branch(me, machine, text, os.environ if ctx.environ is None else ctx.environ)


def _preflight(plan: ClusterPlan, node: str, ctx: ApplyContext) -> None:
    run = ctx.preflight or default_preflight(ctx.root)
    gate(run(plan, node), (*ctx.ignore, *plan.preflight.ignore_checks), ctx.out)


Cluster = Callable[[bool], ApplyResult]


def _network(plan: ClusterPlan, node: str, ctx: ApplyContext, cluster: Cluster,
             joining: bool = True, ssh: bool = True) -> ApplyResult:
    """The network phase (the module docstring's step 3), then CLUSTER(pending), the cluster
    steps; raises what the phase refuses or fails with. pending: a dry run left network changes
    pending (the cluster may be reachable only after them). JOINING: not a member yet, so the
    recheck runs (SSH: apply can reach the members over ssh). A no to the cluster steps after
    the phase changed the network says so: the NIC stays configured (it is as planned; undoing
    it would only make the next apply redo it), and apply again continues."""
    outcome = _phase(plan, node, ctx)
    if ctx.dry_run:
        return cluster(outcome is not None)
    done = network_phase.done_text(plan, node, now=outcome is not None and outcome.changed)
    if joining and recheck_links(plan, node):  # configured now or by an earlier apply
        recheck(plan, node, out=ctx.out, ignore=(*ctx.ignore, *plan.preflight.ignore_checks),
                done=done, with_token=ctx.recheck,
                starter=ctx.responders if ssh else None)
    if outcome is None or not outcome.changed:
        return cluster(False)
    try:
        return cluster(False)
    except ApplyDeclined as exc:
        raise ApplyDeclined(f"not confirmed: the cluster steps were not applied; {done}",
                            done=done, remedy="run `pvestrap apply` again to continue with the "
                            "cluster steps (the network phase then plans nothing)") from exc


def _pve(plan: ClusterPlan, node: str, ctx: ApplyContext) -> ApplyResult:
    from pvestrap.apply import pve

    system = DryRunSystem(ctx.system) if ctx.dry_run else ctx.system
    facts = read_facts(ctx.system, ctx.root)
    ctx.out(f"{node}: {facts.describe()}")
    plan = resolve(plan, facts, lambda line: ctx.out(f"note: {line}"))
    member = pve.cluster_membership(system, plan, node)
    if not member:
        _preflight(plan, node, ctx)
    role = "member" if member else plan.role_of(node)
    # an API join (the plan names the root password) logs in to no member over ssh
    return _network(plan, node, ctx, lambda _pending: _run(
        plan, node, "pve", role, pve.steps_for(plan, node, system, resolver=ctx.resolver), ctx),
        joining=not member, ssh=not plan.join.names_password)


def _corosync(plan: ClusterPlan, node: str, ctx: ApplyContext) -> ApplyResult:
    system = DryRunSystem(ctx.system) if ctx.dry_run else ctx.system
    service = ctx.service or svc.default_service(ctx.system)
    t = ctx.timeouts
    found = cs.membership(system, plan, node)
    if found.state == "member" and plan.role_of(node) == "join":
        _refuse_if_dropped(plan, node, ctx, system)
    if found.state == "member":
        ctx.out(f"{node} is already in cluster {plan.cluster_name} as planned: preflight "
                "skipped, checking that corosync runs and is quorate")
        return _network(plan, node, ctx, lambda _pending: _run(
            plan, node, "corosync", "member", cs.member_steps(service, t), ctx), joining=False)
    role = plan.role_of(node)
    _preflight(plan, node, ctx)
    # The backend's own refusals stand even when the preflight's checks were ignored.
    if role == "create":
        if found.state == "other":
            raise cs.JoinRefused(f"{node} is clustered already; refusing to create over it",
                                 found.findings, code="create-refused",
                                 remedy="use a node without /etc/corosync/authkey")
        return _network(plan, node, ctx, lambda _pending: _run(
            plan, node, "corosync", role,
            cs.create_steps(plan, node, service, system_reader(system), t), ctx))
    refusals = cs.join_refusals(system, plan, node, found)
    if refusals:
        raise cs.JoinRefused(f"{node} cannot join: it is not a fresh node", refusals,
                             remedy="join only nodes without an authkey and without a running "
                                    "corosync; pvestrap never forces a join")

    def join(pending: bool) -> ApplyResult:
        try:
            return _join(plan, node, ctx, system, service)
        except MemberUnreachable:
            if not pending:
                raise
            ctx.out(f"dry run: {plan.join_address(ctx.resolver)} cannot be reached before the "
                    "network phase has run; the join is planned after it")
            return ApplyResult(node, "corosync", "join", ())

    return _network(plan, node, ctx, join)


def _refuse_if_dropped(plan: ClusterPlan, node: str, ctx: ApplyContext, system: System) -> None:
    """This node's corosync.conf lists it, but the cluster's (on the join target) does not: it
    was removed while away and came back as it was (the admin guide: it must never come back
    "as it is"). Its corosync talks on the members' link ports; refuse instead of starting it."""
    t = ctx.timeouts
    target = plan.join_address(ctx.resolver)
    try:
        files = Remote(system, target, timeout=t.remote, connect_timeout=t.connect).read_files(
            [cs.COROSYNC_CONF], "read the cluster's corosync.conf")
        theirs = CorosyncConf.parse((files[cs.COROSYNC_CONF].data or b"").decode(),
                                    f"{target}:{cs.COROSYNC_CONF}")
    except PvestrapError:
        return  # the member path below still has to find a quorate cluster
    if any(n.name == node for n in theirs.nodes):
        return
    raise cs.JoinRefused(
        f"{node} was removed from cluster {plan.cluster_name}: its own corosync.conf still "
        f"lists it, {target}'s (config_version {theirs.config_version}) does not",
        [fail("removed-node-returned", f"{node} has the old corosync.conf of "
              f"{plan.cluster_name}; the members dropped it", node,
              payload={"target": target, "cluster_version": theirs.config_version})],
        code="join-removed-node",
        remedy="run `pvestrap node separate` on this node (stops corosync, keeps its old files "
               "aside), then `pvestrap apply` again to join cleanly")


def _remote_factory(t: cs.CorosyncTimeouts, target: str, control: str | None
                    ) -> Callable[[System, str], Remote]:
    def make(system: System, address: str) -> Remote:
        return Remote(system, address, timeout=t.remote, connect_timeout=t.connect,
                      control_path=control if address == target else None)

    return make


def _join(plan: ClusterPlan, node: str, ctx: ApplyContext, system: System,
          service: svc.Service) -> ApplyResult:
    """Shown and confirmed (or dry run): one join under the lock. Unattended: waits in the
    member's queue and joins in a batch with the others waiting there (apply.batch)."""
    t = ctx.timeouts
    target = plan.join_address(ctx.resolver)
    unattended = not ctx.dry_run and ctx.confirm is None

    def steps(control: str | None, release: Callable[[], None]) -> list[Step]:
        """The join's steps; a resume lets the lock go after its install (RELEASE)."""
        remote = _remote_factory(t, target, control)
        snapshot = cs.read_cluster(remote(system, target))
        if not unattended:
            found = cs.join_steps(plan, node, snapshot, service, remote, t, ctx.resolver)
        else:
            found, names = batch.holder_steps(system, plan, node, snapshot, service, remote, t,
                                              ctx.gather_s, ctx.resolver)
            if names:
                ctx.out(f"joining in one change with {', '.join(names)} (they waited too)")
        return batch.released_after_install(found, target, release)

    confirmed = None
    if not unattended:  # shown before the lock: nobody waits on a reader
        confirmed = _show(steps(None, lambda: None), system, ctx)
        if not _proceed(confirmed, node, ctx):
            return ApplyResult(node, "corosync", "join", _ids(confirmed))
    ctx.out(f"taking the join lock on {target} ...")
    waiter = batch.waiter_script(plan, node) if unattended else None
    with ExitStack() as held:
        control = held.enter_context(_lock(system, target, ctx, waiter))
        if control is not None:
            return _under_lock(node, ctx, system, steps(control, held.close), confirmed)
        snapshot, start_at = batch.read_batched(
            _remote_factory(t, target, CONTROL_PATH)(system, target))
    found = _batched(plan, node, ctx, system, service, snapshot, start_at)
    if found is not None:
        return found
    with ExitStack() as held:
        control = held.enter_context(_lock(system, target, ctx))
        return _under_lock(node, ctx, system, steps(control, held.close), None)


def _lock(system: System, target: str, ctx: ApplyContext,
          waiter: Callable[[float], str] | None = None):
    t = ctx.timeouts
    return member_lock(system, Remote(system, target, timeout=t.remote,
                                      connect_timeout=t.connect),
                       wait=t.lock_wait, retries=t.lock_retries, backoff=t.backoff,
                       notify=ctx.out, waiter=waiter)


def _under_lock(node: str, ctx: ApplyContext, system: System, locked: list[Step],
                confirmed) -> ApplyResult:
    """The join's steps as planned again under the lock (another join may have changed the
    cluster since the plan was shown), shown again when they differ, then applied (a resume's
    batch.ReleaseStep lets the lock go after its install)."""
    plans = plan_steps(locked, system)
    if confirmed is None or _ids(plans) != _ids(confirmed):
        if confirmed is not None:
            ctx.out("the cluster changed since the plan was shown; the plan now:")
        show_plan(plans, ctx.out)
        if not _proceed(plans, node, ctx):
            return ApplyResult(node, "corosync", "join", _ids(plans))
    return _execute(node, "corosync", "join", locked, system, ctx)


def _batched(plan: ClusterPlan, node: str, ctx: ApplyContext, system: System,
             service: svc.Service, snapshot: cs.ClusterSnapshot, start_at: float | None
             ) -> ApplyResult | None:
    """Another joiner took this node into its batch: finish here, without the lock; a failure
    undoes this node's steps, then it leaves the cluster again (under the lock). None when the
    cluster does not list this node as planned after all."""
    t, target = ctx.timeouts, plan.join_address(ctx.resolver)
    remote = _remote_factory(t, target, None)
    found = batch.batched_steps(plan, node, snapshot, service, t, start_at)
    if found is None:
        ctx.out(f"marked as batched, but {target}'s corosync.conf does not list {node} as "
                "planned: joining the normal way")
        return None
    ctx.out(f"{node} was added to the cluster with a batch of joiners: finishing here")
    show_plan(plan_steps(found, system), ctx.out)
    try:
        return _execute(node, "corosync", "join", found, system, ctx)
    except StepFailed as exc:
        ctx.out(f"{node} leaves the cluster again (the other members stay)")
        try:
            batch.leave_locked(system, remote, target, node, t, notify=ctx.out)
        except PvestrapError as left:
            raise OperationFailed(
                f"{exc.message}; and {node} could not leave the cluster again: {left.message}",
                code="batch-leave-failed",
                remedy=f"remove {node} from corosync.conf on every member by hand (or run "
                       f"`pvestrap node remove {node}` on a member) before joining it again"
            ) from exc
        raise


def _show(steps: list[Step], system: System, ctx: ApplyContext
          ) -> tuple[tuple[Step, tuple[Action, ...]], ...]:
    plans = plan_steps(steps, system)
    show_plan(plans, ctx.out)
    return plans


def _ids(plans) -> tuple[tuple[str, tuple[Action, ...]], ...]:
    return tuple((step.id, actions) for step, actions in plans)


def _proceed(plans, node: str, ctx: ApplyContext) -> bool:
    """False when there is nothing to do or this is a dry run; asks when a person is there."""
    if not any(actions for _, actions in plans):
        ctx.out(f"{node}: nothing to do, already as planned")
        return False
    if ctx.dry_run:
        ctx.out("dry run: nothing was changed")
        return False
    if ctx.confirm is not None and not ctx.confirm(f"Apply these changes on {node}?"):
        raise ApplyDeclined()
    return True


def _run(plan: ClusterPlan, node: str, backend: str, role: str, steps: list[Step],
         ctx: ApplyContext) -> ApplyResult:
    system = DryRunSystem(ctx.system) if ctx.dry_run else ctx.system
    plans = _show(steps, system, ctx)
    if not _proceed(plans, node, ctx):
        return ApplyResult(node, backend, role, _ids(plans))
    return _execute(node, backend, role, steps, ctx.system, ctx)


def _execute(node: str, backend: str, role: str, steps: list[Step], system: System,
             ctx: ApplyContext) -> ApplyResult:
    try:
        outcome = run_steps(steps, system, progress_printer(ctx.out, ctx.on_progress))
    except StepFailed as exc:
        ctx.out(f"apply failed at step {exc.step_id} [{exc.cause_code}]")
        raise
    ctx.out(f"{node}: applied {len(outcome.applied)} steps "
            f"({', '.join(outcome.applied) or 'none'}); already done: "
            f"{', '.join(outcome.skipped) or 'none'}")
    return ApplyResult(node, backend, role, outcome.plans, outcome)
