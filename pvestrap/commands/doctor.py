"""`pvestrap doctor`: a running cluster checked against the admin guide, read-only."""

from __future__ import annotations

import os
import shlex
import sys

import typer


def command(
    mesh: bool = typer.Option(False, "--mesh", help="Run on every node of the nodelist over "
                              "SSH (root key login) and merge one report."),
    window: float = typer.Option(5.0, "--window", min=1.0, max=600.0,
                                 help="Seconds of knet statistics sampling (latency, flaps)."),
    latency_ms: float = typer.Option(2.0, "--latency-ms", min=0.0,
                                     help="FAIL a link whose knet latency is above this "
                                     "(the guide: under 2 ms)."),
    root: str = typer.Option("/", "--root", help="Read the node's files under this folder "
                             "(etc/corosync, etc/pve); commands still ask the running corosync."),
    remote_command: str = typer.Option("pvestrap", "--remote-command",
                                       help="How to run pvestrap on the nodes in --mesh mode."),
    ignore: list[str] | None = typer.Option(None, "--ignore", help="CHECK_ID whose FAILs "
                                               "become WARNs (repeatable; the report says so)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    junit: str | None = typer.Option(None, "--junit", help="Also write JUnit XML to FILE."),
    html: str | None = typer.Option(None, "--html", help="Also write a self-contained HTML "
                                       "report (knet latency heatmaps) to FILE."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when there are warnings."),
    list_checks: bool = typer.Option(False, "--list-checks", help="List every check and exit."),
    agent: bool = typer.Option(False, "--agent", hidden=True),
) -> int:
    """Check a running cluster against everything the admin guide warns about.

    Configuration (links, networks, hostnames, priorities, token, config_version, authkey,
    cluster name), quorum and expected votes, knet links measured over --window, versions,
    leftovers of removed nodes, time. Changes nothing. Exit 0 no FAIL, 1 any FAIL, 3 only
    warnings with --strict, 2 bad input.
    """
    from pvestrap.errors import UserError

    if agent:
        from pvestrap.doctor.run import agent_main

        return agent_main()
    if list_checks:
        return _list_checks()
    if not os.path.isdir(root):
        raise UserError(f"--root {root!r} is not a folder", code="doctor-root-missing",
                        remedy="give the folder that holds etc/corosync (default /)")
    from pvestrap.checks.runner import check_ignore_ids
    from pvestrap.commands.status import emit
    from pvestrap.doctor import run

    check_ignore_ids(ignore or (), [check_id for check_id, _, _ in run.catalogue()])
    if mesh:
        say = (lambda m: print(f"  {m}", file=sys.stderr)) if sys.stderr.isatty() else None
        report = run.run_mesh(root, window, latency_ms, ignore or [],
                              shlex.split(remote_command), progress=say)
    else:
        report = run.run_local(root, window, latency_ms, ignore or [])
    emit(report, json_out, junit, html)
    return report.exit_code(strict)


def _list_checks() -> int:
    """--list-checks: every check doctor runs, one a line (id, family, title)."""
    from pvestrap.doctor.run import catalogue

    for check_id, family, title in catalogue():
        print(f"{check_id:18} {family:10} {title}")
    return 0
