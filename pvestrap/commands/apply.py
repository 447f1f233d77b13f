"""`pvestrap apply`: create or join the cluster as the answer file plans it, on this node."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List, Optional

import typer

MAX_LOCK_WAIT_S = 3600.0
TOKEN_HELP = ("The token of responders you started on the members (or $PVESTRAP_PROBE_TOKEN): "
              "after the network phase configured a link, a joiner probes the member over it "
              "before the cluster steps. Without it apply starts a responder there itself, over "
              "ssh (pvestrap must be installed on the member), for just the time of the probes.")
BATCH_HELP = ("With --yes on a joining node (plain corosync): once this node holds the member's "
              "join lock, wait up to this long for the answer file's other joiners to queue "
              "there, so that all of them join in one configuration change (default: only the "
              "ones waiting already).")


def command(
    answers: Path = typer.Option(..., "--answers", metavar="FILE", dir_okay=False,
                                 help="The cluster's answer file (TOML)."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME",
                                       help="This node's name in the answer file (default: "
                                            "this host's name)."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Show the plan (diffs, commands, waits) and change "
                                      "nothing."),
    yes: bool = typer.Option(False, "--yes", "-y",
                             help="Apply without asking (unattended runs, the first-boot "
                                  "hook)."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", metavar="CHECK",
                                               help="Accept the FAILs of this preflight check "
                                                    "(repeatable)."),
    root: Optional[Path] = typer.Option(None, "--root", metavar="DIR", file_okay=False,
                                        help="Act on the files under DIR instead of / "
                                             "(commands still run on this machine)."),
    lock_timeout: float = typer.Option(0.0, "--lock-timeout", metavar="SECONDS",
                                       help="Wait this long for another pvestrap apply on this "
                                            "node to finish (default: refuse at once)."),
    batch_wait: float = typer.Option(0.0, "--batch-wait", metavar="SECONDS", help=BATCH_HELP),
    token_file: Optional[str] = typer.Option(None, "--token-file", metavar="FILE",
                                             help=TOKEN_HELP),
) -> None:
    """Preflight, show the plan, confirm, then create or join the cluster on this node.

    A preflight FAIL stops before the first change (unless --ignore names its check). Every
    file change is shown as a diff and every command before anything runs; a failing step
    undoes the earlier ones. Applying again on a node that is already as planned changes
    nothing and exits 0. Exit codes: 0 done or nothing to do, 1 refused or failed (the failing
    step and its cause are printed), 2 bad input or no way to confirm.
    """
    from pvestrap import answers as answer_files
    from pvestrap.checks.runner import check_ignore_ids
    from pvestrap.checks.probe import given_token
    from pvestrap.commands.preflight import CHECK_IDS
    from pvestrap.apply.flow import ApplyContext, apply_node, probing_preflight
    from pvestrap.apply.remote_responders import ssh_starter
    from pvestrap.errors import UserError
    from pvestrap.system import RealSystem

    if not (yes or dry_run) and not sys.stdin.isatty():
        raise UserError("apply asks before changing anything, and there is no terminal to ask "
                        "on", code="confirmation-impossible",
                        remedy="pass --yes to apply unattended, or --dry-run to only see the "
                               "plan")
    check_ignore_ids(ignore or (), CHECK_IDS.split(", "))
    _check_seconds(("--lock-timeout", lock_timeout), ("--batch-wait", batch_wait))
    plan = answer_files.load(answers)
    name = answer_files.select_node(plan, node).name
    base = str(root) if root is not None else "/"
    token = given_token(token_file)
    ctx = ApplyContext(RealSystem(root=base), root=base, dry_run=dry_run,
                       ignore=tuple(ignore or ()), lock_timeout=lock_timeout, gather_s=batch_wait,
                       confirm=None if (yes or dry_run) else _confirm,
                       out=lambda line: typer.echo(line),
                       recheck=probing_preflight(token, base) if token is not None else None,
                       responders=ssh_starter(RealSystem(root=base)))
    apply_node(plan, name, ctx)


def _confirm(question: str) -> bool:
    return typer.confirm(question, default=False)


def _check_seconds(*flags: tuple[str, float]) -> None:
    from pvestrap.errors import UserError

    for flag, value in flags:
        if not (math.isfinite(value) and 0 <= value <= MAX_LOCK_WAIT_S):
            raise UserError(f"{flag} {value!r} is not a number of seconds from 0 to "
                            f"{MAX_LOCK_WAIT_S:g}", code=f"{flag[2:]}-invalid",
                            remedy=f"e.g. {flag} 60")
