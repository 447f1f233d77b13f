"""`pvestrap firstboot`: the first-boot flow, as the systemd unit and the ISO hook run it.

The flow's own entry point is `pvestrap.firstboot.entry.main` (argparse, so the hook needs no
typer); this command only turns typer's options back into that argv.
tests/test_firstboot.py keeps the two option lists in step.
"""

from __future__ import annotations

from typing import List, Optional

import typer


def command(
    answers: str = typer.Option(..., "--answers", metavar="FILE",
                                help="The cluster's answer file (the same file on every node)."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME",
                                       help="This node's name in the file (default: host name)."),
    peer_wait: Optional[float] = typer.Option(
        None, "--peer-wait", metavar="S", help="Wait this long for every other node to answer "
        "(default 600)."),
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
    token_file: Optional[str] = typer.Option(
        None, "--token-file", metavar="FILE", help="Probe secret shared by the nodes (default: "
        "derived from the answer file)."),
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
    from pvestrap.firstboot.entry import main

    argv = ["--answers", answers]
    for flag, value in (("--node", node), ("--peer-wait", peer_wait),
                        ("--turn-wait", turn_wait), ("--apply-timeout", apply_timeout),
                        ("--quorum-timeout", quorum_timeout), ("--linger", linger),
                        ("--state-dir", state_dir), ("--token-file", token_file),
                        ("--duration", duration), ("--corosync-start", corosync_start)):
        if value is not None:
            argv += [flag, str(value)]
    for check in ignore or ():
        argv += ["--ignore", check]
    if quiet:
        argv.append("--quiet")
    if debug:
        argv.append("--debug")
    return main(argv)
