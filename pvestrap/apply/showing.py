"""Showing a plan and its progress: the unified diff of every file, every command and every
bounded wait, one line per step event. Shared by apply's flow and its network phase."""

from __future__ import annotations

import difflib
import time
from typing import Callable, Sequence

from pvestrap.apply.engine import Action, PlannedCommand, Progress, Step, StepEvent
from pvestrap.render import Change, unified_diff

Out = Callable[[str], None]


def diff_text(change: Change) -> str:
    if change.path.startswith("/"):
        return unified_diff(change)
    old = change.before.splitlines(keepends=True) if change.before is not None else []
    lines = difflib.unified_diff(old, change.after.splitlines(keepends=True),
                                 fromfile=change.path if change.before is not None
                                 else "/dev/null", tofile=change.path)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def show_plan(plans: Sequence[tuple[Step, Sequence[Action]]], out: Out) -> None:
    for step, actions in plans:
        if not actions:
            out(f"= {step.id}: {step.description} (already done)")
            continue
        out(f"+ {step.id}: {step.description}")
        for action in actions:
            if isinstance(action, Change):
                by = f", written by {action.writer}" if action.writer else ""
                out(f"  file {action.path} (mode {action.mode:04o}{by})")
                out(diff_text(action).rstrip("\n"))
            else:
                out(f"  {'run ' if isinstance(action, PlannedCommand) else ''}{action}")


def progress_printer(out: Out, extra: Progress | None) -> Progress:
    """One line per step event; a finished step says how long it took."""
    started: dict[str, float] = {}

    def emit(event: StepEvent) -> None:
        now = time.monotonic()
        if event.state in ("applying", "undoing"):
            started[event.step_id] = now
        if event.state in ("applying", "applied", "failed", "undoing", "undone", "undo-failed"):
            took = (f" ({now - started[event.step_id]:.1f} s)"
                    if event.state not in ("applying", "undoing") and event.step_id in started
                    else "")
            detail = f": {event.detail}" if event.detail else ""
            out(f"[{event.state}] {event.step_id}{took}{detail}")
        if extra is not None:
            extra(event)

    return emit
