"""What every changing command shares at the terminal: asking before a change, and printing
each step's progress."""

from __future__ import annotations

import sys
import time

import typer

from pvestrap.errors import UserError


def confirm_or_abort(yes: bool, question: str) -> None:
    """Go on when --yes was given or the user says yes; refuse without a terminal to ask on."""
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
