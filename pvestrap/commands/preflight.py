"""`pvestrap preflight`: the checks on this node, against peers, or across a whole mesh."""

from __future__ import annotations

from typing import List, Optional

import typer

# Kept literal so `--help` needs no check imports; tests/test_preflight_cli.py keeps it in step
# with pvestrap.preflight.check_catalogue().
CHECK_IDS = (
    "hostname, names, name-consistency, time-sync, ntp-offset, nic-inventory, link-address, "
    "link-layout, join-authkey, join-corosync-conf, join-corosync-running, join-guests, "
    "join-cluster, join-fingerprint, versions, quorum, token-timing, link-ports, latency, mtu, "
    "clock-offset, tcp-services, address-conflicts"
)


def command(
    answers: Optional[str] = typer.Option(None, "--answers", help="Cluster answer file."),
    node: Optional[str] = typer.Option(None, "--node", help="This node's name in the answer file "
                                       "(default: the host name)."),
    peer: Optional[List[str]] = typer.Option(
        None, "--peer", help="NAME=ADDR[,ADDR...]: a peer to probe without an answer file; the "
        "Nth address is link N (repeatable). Peers run `pvestrap responder` with the same token."),
    mesh: bool = typer.Option(False, "--mesh", help="From this machine, run the preflight on "
                              "every node of --answers over SSH and merge one N x N report."),
    remote_command: str = typer.Option("pvestrap", "--remote-command",
                                       help="How to run pvestrap on the nodes in --mesh mode."),
    token_file: Optional[str] = typer.Option(None, "--token-file",
                                             help="Probe token file (as given to the responders)."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Seconds of latency "
                                             "sampling per path (default 3; longer for a soak)."),
    ignore: Optional[List[str]] = typer.Option(None, "--ignore", help="CHECK_ID whose FAILs "
                                               "become WARNs (repeatable; the report says so)."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    junit: Optional[str] = typer.Option(None, "--junit", help="Also write JUnit XML to FILE."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write a self-contained HTML "
                                       "report (with latency heatmaps) to FILE."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when there are warnings."),
    list_checks: bool = typer.Option(False, "--list-checks", help="List every check and exit."),
    agent: bool = typer.Option(False, "--agent", hidden=True),
) -> int:
    """Check that the nodes can form a healthy cluster, before anything changes.

    Exit 0 all pass, 1 any FAIL, 3 only warnings with --strict, 2 bad input.
    """
    if agent:
        from pvestrap.mesh import agent_main

        return agent_main()
    from pvestrap.checks.runner import check_ignore_ids
    from pvestrap.preflight_cli import list_catalogue, run_preflight

    if list_checks:
        return list_catalogue()
    check_ignore_ids(ignore or (), CHECK_IDS.split(", "))
    return run_preflight(answers=answers, node=node, peers=peer or [], mesh=mesh,
                         remote=remote_command, token_file=token_file, duration=duration,
                         ignore=ignore or [], json_out=json_out, junit=junit, html=html,
                         strict=strict)


def _check_id_lines(width: int = 72) -> str:
    lines, line = [], ""
    for cid in CHECK_IDS.split(", "):
        if line and len(line) + len(cid) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {cid}" if line else cid
    return "\n    ".join(lines + [line])


# "\b" keeps click from re-wrapping (and splitting ids at their hyphens).
command.__doc__ += f"\n\n    \b\n    Check ids (for --ignore; --list-checks describes them):\n    {_check_id_lines()}"
