"""`pvestrap link add|move` as a library call, shaped like apply (pvestrap.apply.flow): read the
cluster, plan, preflight, show, confirm, apply with rollback, verify.

1. The cluster as this member sees it, and the phases that take its corosync.conf to the asked
   links (none: nothing to do).
2. The preflight (pvestrap.apply.link_plan.preflight): any FAIL refuses before the first change.
3. The plan shown: the whole corosync.conf diff and every phase's actions.
4. Confirmation when a person is there to give it (the caller passes `confirm`), then the
   phases under every member's lock; a phase that does not converge is undone on every
   member (link_plan.run_change).
5. The cluster's status afterwards.

Everything the flow prints goes through `out` (lines) and `show` (reports); it never prompts
by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pvestrap.apply import link_plan, links
from pvestrap.apply.engine import Progress
from pvestrap.apply.flow import ApplyDeclined
from pvestrap.errors import OperationFailed
from pvestrap.findings import Finding
from pvestrap.render import unified_diff
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import System
from pvestrap.verify import status_report

Confirm = Callable[[str], bool]
Out = Callable[[str], None]
Show = Callable[[Report], None]
NETWORK_CODES = ("link-address", "link-interface", "link-peer")


class LinkRefused(OperationFailed):
    code = "link-preflight-failed"


@dataclass(frozen=True)
class LinkContext:
    """What one link change needs besides the request; the seams tests and the CLI fill in."""

    system: System
    dry_run: bool = False
    confirm: Confirm | None = None  # None: do not ask (--yes, or dry run)
    out: Out = print
    show: Show = lambda _report: None
    on_progress: Progress | None = None
    timeouts: links.LinkTimeouts = links.LinkTimeouts()


@dataclass(frozen=True)
class LinkResult:
    plan: link_plan.ChangePlan
    preflight: Report | None = None  # None: nothing to do
    status: Report | None = None     # after the change; None: nothing was changed

    @property
    def exit_code(self) -> int:
        return self.status.exit_code() if self.status is not None else 0


def change_link(request: link_plan.LinkRequest, ctx: LinkContext) -> LinkResult:
    """Take the running cluster's link REQUEST.number where REQUEST asks (see the module
    docstring); raises PvestrapError (LinkRefused, ApplyDeclined, StepFailed after rollback)."""
    cluster = links.read_cluster(ctx.system, request.number, ctx.timeouts)
    plan = link_plan.plan_change(cluster.conf, cluster.text, request)
    if not plan.phases:
        ctx.out(f"link{request.number} is already as asked on every member: nothing to do")
        return LinkResult(plan)
    report = preflight_report(request.action, cluster,
                              link_plan.preflight(ctx.system, cluster, plan))
    ctx.show(report)
    if report.exit_code():
        raise LinkRefused("refused by the preflight: nothing was changed",
                          remedy="fix the FAILs above, then run the command again")
    show_plan(cluster, plan, ctx)
    if ctx.dry_run:
        ctx.out("\ndry run: nothing was changed")
        return LinkResult(plan, report)
    question = f"change link{request.number} on {len(cluster.members)} members?"
    if ctx.confirm is not None and not ctx.confirm(question):
        raise ApplyDeclined("not confirmed: nothing was changed")
    link_plan.run_change(ctx.system, cluster, plan, on_progress=ctx.on_progress)
    final = status_report(ctx.system, expect_nodes=len(cluster.members))
    ctx.show(final)
    ctx.out(f"done: every member runs config_version {plan.final.config_version} and reaches "
            f"every other on links {list(plan.final.link_numbers)}")
    return LinkResult(plan, report, final)


def preflight_report(action: str, cluster: links.Cluster, found: list[Finding]) -> Report:
    """The preflight's findings: the cluster as it runs, and the new network."""
    network = tuple(f for f in found if f.code.startswith(NETWORK_CODES))
    rest = tuple(f for f in found if f not in network)
    sections = tuple(s for s in (ReportSection("cluster", "CLUSTER", rest),
                                 ReportSection("network", "NEW NETWORK", network))
                     if s.findings)
    return Report(f"pvestrap link {action} (preflight)", sections,
                  {"cluster": cluster.conf.cluster_name, "node": cluster.local.name})


def show_plan(cluster: links.Cluster, plan: link_plan.ChangePlan, ctx: LinkContext) -> None:
    """The corosync.conf diff, then each phase and what it does."""
    ctx.out(unified_diff(plan.change(cluster)).rstrip("\n"))
    for step in link_plan.steps(cluster, plan, links.ShellOps(ctx.system, cluster)):
        ctx.out(f"\n{step.id}: {step.description}")
        for action in step.plan(ctx.system):
            ctx.out(f"  {getattr(action, 'path', None) or action}")
