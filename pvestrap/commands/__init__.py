"""Command groups of the CLI. Each module exposes `app` (a typer.Typer) or `command` (a function).

Modules here import only typer at import time; everything heavy is imported inside commands.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

# (command name, module in pvestrap.commands, one-line help).
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("answer", "answer", "Create, validate and describe cluster answer files."),
    ("conf", "conf", "Lint and format corosync.conf files."),
    ("render", "render", "Render corosync.conf, datacenter.cfg and interfaces for a node."),
    ("preflight", "preflight", "Check that the nodes can form a healthy cluster."),
    ("responder", "responder", "Answer preflight probes from peers (UDP 5404, 5405+N)."),
    ("apply", "apply", "Create or join the cluster as planned."),
    ("status", "status", "Report the cluster's quorum and knet link state."),
    ("doctor", "doctor", "Check a running cluster against what the admin guide warns about."),
    ("link", "link", "Add or move corosync links on a running cluster."),
    ("node", "node", "Remove a node from the cluster, or separate this node from it."),
    ("qdevice", "qdevice", "Set up, remove or show a QDevice (an external tie-breaking vote)."),
    ("wizard", "wizard", "Guided create/join in the terminal."),
    ("firstboot", "firstboot",
     "Run the first-boot flow (unattended apply, or the wizard on tty1)."),
    ("demo", "demo", "Build a 3-node lab, cluster it unattended and report."),
    ("lab", "lab", "Cluster nodes on this machine in network namespaces."),
    ("iso", "iso", "Prepare installer ISOs that install and cluster nodes unattended."),
)


def load_group(module: str):
    """The module's `app` or `command`. A module that fails to import fails the CLI loudly: a
    command must never just vanish from `pvestrap --help`."""
    mod = importlib.import_module(f"pvestrap.commands.{module}")
    found = getattr(mod, "app", None) or getattr(mod, "command", None)
    if found is None:
        raise TypeError(f"pvestrap.commands.{module} has neither `app` nor `command`")
    return found


def group(help_text: str):
    """A Typer sub-app configured like the root (plain help: rich help rendering is slow)."""
    import typer

    return typer.Typer(help=help_text, no_args_is_help=True, add_completion=False,
                       rich_markup_mode=None, pretty_exceptions_enable=False)


@dataclass(frozen=True)
class ChangeOptions:
    """The options of the commands that change a running cluster (link, node, qdevice): typer's
    option defaults for their signatures, so that each flag is spelled and explained once."""

    dry_run: Any
    yes: Any
    json: Any
    ignore: Any
    timeout: Any


def change_options(*, shows: str = "the plan", settle: str = "settle on the change"
                   ) -> ChangeOptions:
    """--dry-run (check and show SHOWS), --yes, --json, --ignore and --timeout (for every member
    to SETTLE, before rolling back)."""
    import typer

    return ChangeOptions(
        dry_run=typer.Option(False, "--dry-run", help=f"Check and show {shows}; change nothing."),
        yes=typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (unattended)."),
        json=typer.Option(False, "--json",
                          help="Print one JSON document (preflight, plan, result)."),
        ignore=typer.Option([], "--ignore", help="Turn this check's FAILs into WARNs (repeatable; "
                            "the report says so)."),
        timeout=typer.Option(60.0, "--timeout", min=1.0, help=f"Seconds to wait for every member "
                             f"to {settle}, before rolling back."))
