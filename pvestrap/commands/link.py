"""`pvestrap link add|move`: change a running cluster's corosync links, checked and reversible."""

from __future__ import annotations

import sys
import time
from typing import List, Optional

import typer

from pvestrap.commands import change_options, group
from pvestrap.errors import UserError

app = group("Add or move corosync links on a running cluster.")

NUMBER = typer.Option(..., "--number", min=0, max=7, help="The link number (0..7).")
ADDRESS = typer.Option(..., "--address", help="NODE=ADDR: the node's address on the link "
                       "(repeat for every node).")
NETWORK = typer.Option(None, "--network", help="CIDR the new addresses must lie in.")
OPTION = change_options(shows="the change", settle="run the change with every link up")


@app.command("add")
def add(number: int = NUMBER, address: List[str] = ADDRESS,
        priority: Optional[int] = typer.Option(None, "--priority", min=0, max=255,
                                               help="knet_link_priority (higher is preferred)."),
        network: Optional[str] = NETWORK, dry_run: bool = OPTION.dry_run, yes: bool = OPTION.yes,
        timeout: float = OPTION.timeout) -> int:
    """Add a redundant link on every member (a new interface section and ringN_addr).

    Run on one member; it reaches the others over SSH as root. Exit 0 done (or nothing to do),
    1 refused by the preflight or rolled back, 2 bad input.
    """
    return _run("add", number, address, priority, network, dry_run, yes, timeout)


@app.command("move")
def move(number: int = NUMBER, address: List[str] = ADDRESS, network: Optional[str] = NETWORK,
         dry_run: bool = OPTION.dry_run, yes: bool = OPTION.yes,
         timeout: float = OPTION.timeout) -> int:
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
    """Gather the input and print; the change itself is pvestrap.apply.link_flow's."""
    from pvestrap.apply import link_plan, links
    from pvestrap.apply.link_flow import LinkContext, change_link
    from pvestrap.commands.status import emit
    from pvestrap.system import RealSystem

    if not (yes or dry_run) and not sys.stdin.isatty():
        raise UserError("not asking for confirmation without a terminal",
                        code="confirmation-impossible",
                        remedy="pass --yes to change the cluster unattended, or --dry-run")
    request = link_plan.LinkRequest(action, number, parse_addresses(address), priority, network)
    ctx = LinkContext(RealSystem(), dry_run=dry_run,
                      confirm=None if (yes or dry_run) else _ask, out=print, show=emit,
                      on_progress=step_progress(),
                      timeouts=links.LinkTimeouts(verify=timeout))
    return change_link(request, ctx).exit_code


def _ask(question: str) -> bool:
    return typer.confirm(question, default=False)


def confirm_or_abort(yes: bool, question: str) -> None:
    """Go on when --yes was given or the user says yes; refuse without a terminal to ask on.
    (Shared by the commands that change a running cluster: link, node, qdevice.)"""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError("not asking for confirmation without a terminal",
                        code="confirmation-impossible",
                        remedy="pass --yes to change the cluster unattended, or --dry-run")
    if not typer.confirm(question, default=False):
        raise typer.Abort()


def step_progress():
    """Print each step event with the seconds since the change began (its first event)."""
    started: list[float] = []

    def show(event) -> None:
        started[:] = started or [time.monotonic()]
        detail = f": {event.detail}" if event.detail else ""
        print(f"[{event.state}] {event.step_id}{detail} ({time.monotonic() - started[0]:.1f} s)",
              file=sys.stderr, flush=True)

    return show
