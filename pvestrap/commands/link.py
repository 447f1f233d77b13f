"""`pvestrap link add|move`: change a running cluster's corosync links, checked and reversible."""

from __future__ import annotations

from typing import List, Optional

import typer

from pvestrap.commands import group

app = group("Add or move corosync links on a running cluster.")

NUMBER = typer.Option(..., "--number", min=0, max=7, help="The link number (0..7).")
ADDRESS = typer.Option(..., "--address", help="NODE=ADDR: the node's address on the link "
                       "(repeat for every node).")
NETWORK = typer.Option(None, "--network", help="CIDR the new addresses must lie in.")
DRY_RUN = typer.Option(False, "--dry-run", help="Check and show the change; change nothing.")
YES = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (unattended).")
TIMEOUT = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for every member to "
                       "run the change with every link up, before rolling back.")


@app.command("add")
def add(number: int = NUMBER, address: List[str] = ADDRESS,
        priority: Optional[int] = typer.Option(None, "--priority", min=0, max=255,
                                               help="knet_link_priority (higher is preferred)."),
        network: Optional[str] = NETWORK, dry_run: bool = DRY_RUN, yes: bool = YES,
        timeout: float = TIMEOUT) -> int:
    """Add a redundant link on every member (a new interface section and ringN_addr).

    Run on one member; it reaches the others over SSH as root. Exit 0 done (or nothing to do),
    1 refused by the preflight or rolled back, 2 bad input.
    """
    return _run("add", number, address, priority, network, dry_run, yes, timeout)


@app.command("move")
def move(number: int = NUMBER, address: List[str] = ADDRESS, network: Optional[str] = NETWORK,
         dry_run: bool = DRY_RUN, yes: bool = YES, timeout: float = TIMEOUT) -> int:
    """Move a link to new addresses (another network).

    corosync cannot change a link's address on reload, so the link is dropped and added again
    (two reloads); the other links carry the cluster meanwhile. Exit codes as for add.
    """
    return _run("move", number, address, None, network, dry_run, yes, timeout)


def parse_addresses(specs: List[str]) -> dict[str, str]:
    """--address NODE=ADDR (repeatable) -> {node: address}."""
    from pvestrap.errors import UserError

    out: dict[str, str] = {}
    for spec in specs:
        name, sep, addr = (part.strip() for part in spec.partition("="))
        if not sep or not name or not addr:
            raise UserError(f"--address {spec!r} is not NODE=ADDR",
                            remedy="e.g. --address pve1=10.10.20.1 (one per node)")
        if name in out:
            raise UserError(f"--address names {name} twice", remedy="give one address per node")
        out[name] = addr
    return out


def _run(action: str, number: int, address: List[str], priority: Optional[int],
         network: Optional[str], dry_run: bool, yes: bool, timeout: float) -> int:
    import sys
    import time

    from pvestrap.apply import links
    from pvestrap.render import unified_diff
    from pvestrap.system import RealSystem

    system = RealSystem()
    request = links.LinkRequest(action, number, parse_addresses(address), priority, network)
    cluster = links.read_cluster(system, request, links.LinkTimeouts(verify=timeout))
    plan = links.plan_change(cluster.conf, cluster.text, request)
    if not plan.phases:
        print(f"link{number} is already as asked on every member: nothing to do")
        return 0
    report = _preflight_report(action, cluster, links.preflight(system, cluster, plan))
    from pvestrap.commands.status import emit

    emit(report)
    if report.exit_code():
        print("refused by the preflight: nothing was changed", file=sys.stderr)
        return 1
    print(unified_diff(plan.change()), end="")
    for step in links.steps(cluster, plan, links.ShellOps(system, cluster)):
        print(f"\n{step.id}: {step.description}")
        for action_ in step.plan(system):
            print(f"  {getattr(action_, 'path', None) or action_}")
    if dry_run:
        print("\ndry run: nothing was changed")
        return 0
    _confirm(yes, f"change link{number} on {len(cluster.members)} members?")
    links.run_change(system, cluster, plan, on_progress=_progress(time.monotonic()))
    from pvestrap.verify import status_report

    final = status_report(system, expect_nodes=len(cluster.members))
    emit(final)
    print(f"done: every member runs config_version {plan.final.config_version} and reaches "
          f"every other on links {list(plan.final.link_numbers)}")
    return final.exit_code()


def _preflight_report(action: str, cluster, found):
    from pvestrap.report.model import Report, ReportSection

    network = tuple(f for f in found if f.code.startswith(("link-address", "link-interface",
                                                           "link-peer")))
    rest = tuple(f for f in found if f not in network)
    sections = tuple(s for s in (ReportSection("cluster", "CLUSTER", rest),
                                 ReportSection("network", "NEW NETWORK", network)) if s.findings)
    return Report(f"pvestrap link {action} (preflight)", sections,
                  {"cluster": cluster.conf.cluster_name, "node": cluster.local.name})


def _confirm(yes: bool, question: str) -> None:
    import sys

    from pvestrap.errors import UserError

    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError("not asking for confirmation without a terminal",
                        remedy="pass --yes to change the cluster unattended, or --dry-run")
    if not typer.confirm(question, default=False):
        raise typer.Abort()


def _progress(started: float):
    """Print each step event with the seconds since the change began."""
    import sys
    import time

    def show(event) -> None:
        detail = f": {event.detail}" if event.detail else ""
        print(f"[{event.state}] {event.step_id}{detail} ({time.monotonic() - started:.1f} s)",
              file=sys.stderr, flush=True)

    return show
