"""`pvestrap preflight`: the checks on this node, against peers, or across a whole mesh."""

from __future__ import annotations

from typing import List, Optional, Sequence

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

    if list_checks:
        return list_catalogue()
    check_ignore_ids(ignore or (), CHECK_IDS.split(", "))
    return run_preflight(answers=answers, node=node, peers=peer or [], mesh=mesh,
                         remote=remote_command, token_file=token_file, duration=duration,
                         ignore=ignore or [], json_out=json_out, junit=junit, html=html,
                         strict=strict)


def list_catalogue() -> int:
    from pvestrap.preflight import check_catalogue

    for check_id, family, title in check_catalogue():
        print(f"{check_id:24} {family:10} {title}")
    return 0


def parse_peers(specs: Sequence[str]) -> dict[str, dict[int, str]]:
    """--peer NAME=ADDR[,ADDR...] -> {name: {link: address}}."""
    import ipaddress

    from pvestrap.errors import UserError

    peers: dict[str, dict[int, str]] = {}
    for spec in specs:
        name, sep, addrs = spec.partition("=")
        if not sep or not name or not addrs:
            raise UserError(f"--peer {spec!r} is not NAME=ADDR[,ADDR...]",
                            remedy="e.g. --peer pve2=10.10.10.2,10.10.20.2")
        links = {}
        for i, addr in enumerate(addrs.split(",")):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                raise UserError(f"--peer {spec!r}: {addr!r} is not an IP address",
                                remedy="give addresses, not host names") from None
            links[i] = addr
        peers[name] = links
    return peers


def run_preflight(*, answers, node, peers, mesh, remote, token_file, duration, ignore, json_out,
                  junit, html, strict) -> int:
    """Gather the input, run the preflight (here, or on every node with --mesh), print."""
    import sys

    from pvestrap import answers as answer_files
    from pvestrap import preflight
    from pvestrap.checks.probe import given_token
    from pvestrap.commands.status import emit
    from pvestrap.errors import UserError

    plan = answer_files.load(answers) if answers else None
    if duration is not None and duration <= 0:
        raise UserError("--duration must be greater than 0", remedy="e.g. --duration 10")
    interactive = sys.stderr.isatty() and not json_out
    if mesh:
        report = _mesh(plan, answers, remote, duration, ignore, interactive)
    else:
        me = answer_files.select_node(plan, node).name if plan else (node or _short_host())
        on_check, on_probe = _progress(interactive)
        probes = preflight.Probes(given_token(token_file), duration, peers=parse_peers(peers),
                                  progress=on_probe)
        report = preflight.run(plan, me, probes=probes, ignore=ignore, on_progress=on_check)
    if interactive:
        sys.stderr.write("\r\033[K")
    emit(report, json_out, junit, html)
    return report.exit_code(strict)


def _short_host() -> str:
    import socket

    return socket.gethostname().split(".")[0]


def _progress(enabled: bool):
    if not enabled:
        return None, None
    import sys

    def on_check(check) -> None:
        sys.stderr.write(f"\r\033[K  checking {check.id} ...")
        sys.stderr.flush()

    def on_probe(fraction: float) -> None:
        sys.stderr.write(f"\r\033[K  probing peers ... {fraction * 100:3.0f}%")
        sys.stderr.flush()

    return on_check, on_probe


def _mesh(plan, answers_path, remote, duration, ignore, interactive):
    import shlex
    import sys

    from pvestrap import mesh
    from pvestrap.errors import UserError

    if plan is None:
        raise UserError("--mesh needs --answers FILE naming every node",
                        remedy="pvestrap preflight --mesh --answers cluster.toml")
    mesh.require_nodes_reachable(plan)
    with open(answers_path, encoding="utf-8") as fh:
        text = fh.read()
    say = (lambda m: print(f"  {m}", file=sys.stderr)) if interactive else None
    results = mesh.run_mesh(plan, text, duration_s=duration or plan.preflight.thresholds.duration_s,
                            remote=shlex.split(remote), ignore=ignore, progress=say)
    return mesh.merge(plan, results, ignore)


def _check_id_lines(width: int = 72) -> str:
    lines, line = [], ""
    for cid in CHECK_IDS.split(", "):
        if line and len(line) + len(cid) + 2 > width:
            lines.append(line + ",")
            line = ""
        line = f"{line}, {cid}" if line else cid
    return "\n    ".join(lines + [line])


# "\b" keeps click from re-wrapping (and splitting ids at their hyphens).
command.__doc__ += ("\n\n    \b\n    Check ids (for --ignore; --list-checks describes them):\n    "
                    + _check_id_lines())
