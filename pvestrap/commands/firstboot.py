"""`pvestrap firstboot`: the first-boot flow, as the systemd unit and the ISO hook run it.

The flow's own entry point is `pvestrap.firstboot.entry.main` (argparse, so the hook needs no
typer); this command only turns typer's options back into that argv.
tests/test_firstboot.py keeps the two option lists in step.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

import typer


def command(
    answers: str = typer.Option(..., "--answers", metavar="FILE",
                                help="The cluster's answer file (the same file on every node)."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME",
                                       help="This node's name in the file (default: host name)."),
    peer_wait: Optional[float] = typer.Option(
        None, "--peer-wait", metavar="S", help="Wait this long, before probing, until every other "
        "node answers and ran its local checks (default 600)."),
    turn_wait: Optional[float] = typer.Option(
        None, "--turn-wait", metavar="S", help="Wait this long for this node's turn: the creator "
        "until every node passed its preflight, a joiner until the node before it is a member "
        "(default 900); then go ahead."),
    apply_timeout: Optional[float] = typer.Option(
        None, "--apply-timeout", metavar="S", help="Retry the apply this long while the cluster "
        "is busy or not ready (default 900)."),
    quorum_timeout: Optional[float] = typer.Option(
        None, "--quorum-timeout", metavar="S", help="Wait this long for quorum after create or "
        "join (default 300)."),
    linger: Optional[float] = typer.Option(
        None, "--linger", metavar="S", help="After finishing, answer probes until every node is "
        "a member, at most this long (default 1800)."),
    state_dir: Optional[str] = typer.Option(
        None, "--state-dir", metavar="DIR", help="Progress and done marker (default "
        "/var/lib/pvestrap)."),
    secret_file: Optional[str] = typer.Option(
        None, "--secret-file", metavar="FILE", help="The cluster's first-boot secret, mode 0600 "
        "(default: beside the answer file, NAME.firstboot-secret); required."),
    duration: Optional[float] = typer.Option(
        None, "--duration", metavar="S", help="Seconds of latency sampling per path."),
    ignore: Optional[List[str]] = typer.Option(
        None, "--ignore", metavar="CHECK", help="Check id whose FAILs become WARNs (repeatable)."),
    corosync_start: Optional[str] = typer.Option(
        None, "--corosync-start", metavar="CMD", help="Command that starts corosync where no "
        "service manager can (a lab node)."),
    quiet: bool = typer.Option(False, "--quiet", help="Progress lines only (the preflight "
                               "report is saved as JSON in the state folder)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> int:
    """Build the cluster of an answer file at first boot: answer probes, wait for the other
    nodes, preflight, then create or join in nodeid order.

    Idempotent: run it again after an interruption; a finished node does nothing.
    Exit 0 done, 1 failed (run again), 2 bad input.
    """
    options = dict(locals())  # first: the options as typer gave them, nothing else
    from pvestrap.firstboot.entry import main

    return main(entry_argv(options))


def entry_argv(options: Mapping[str, object]) -> list[str]:
    """The entry point's argv for the command's options: `--name value` for every option given
    (name with '-' for '_'), `--name` for a switch that is on, `--name value` per list item."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv += [flag, str(item)]
        else:
            argv += [flag, str(value)]
    return argv
