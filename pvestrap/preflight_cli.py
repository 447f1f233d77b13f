"""What `pvestrap preflight` does with its flags: gather input, run, render, pick the exit code."""

from __future__ import annotations

import os
import socket
import sys
from typing import Sequence

from pvestrap.errors import UserError


def list_catalogue() -> int:
    from pvestrap.preflight import check_catalogue

    for check_id, family, title in check_catalogue():
        print(f"{check_id:24} {family:10} {title}")
    return 0


def parse_peers(specs: Sequence[str]) -> dict[str, dict[int, str]]:
    """--peer NAME=ADDR[,ADDR...] -> {name: {link: address}}."""
    import ipaddress

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


def _progress(enabled: bool):
    if not enabled:
        return None, None

    def on_check(check) -> None:
        sys.stderr.write(f"\r\033[K  checking {check.id} ...")
        sys.stderr.flush()

    def on_probe(fraction: float) -> None:
        sys.stderr.write(f"\r\033[K  probing peers ... {fraction * 100:3.0f}%")
        sys.stderr.flush()

    return on_check, on_probe


def run_preflight(*, answers, node, peers, mesh, remote, token_file, duration, ignore, json_out,
                  junit, html, strict) -> int:
    from pvestrap import answers as answer_files
    from pvestrap import preflight

    plan = answer_files.load(answers) if answers else None
    if duration is not None and duration <= 0:
        raise UserError("--duration must be greater than 0", remedy="e.g. --duration 10")
    interactive = sys.stderr.isatty() and not json_out
    on_check, on_probe = _progress(interactive)
    if mesh:
        report = _mesh(plan, answers, remote, duration, ignore, interactive)
    else:
        me = answer_files.select_node(plan, node).name if plan else (node or _short_host())
        probes = _probe(plan, me, parse_peers(peers), token_file, duration, on_probe)
        report = preflight.run_with_probes(plan, me, probes, ignore=ignore,
                                           on_progress=on_check, matrices=_matrices(plan, me, probes))
    if interactive:
        sys.stderr.write("\r\033[K")
    _emit(report, json_out, junit, html)
    return report.exit_code(strict)


def _short_host() -> str:
    return socket.gethostname().split(".")[0]


def _probe(plan, me, peers, token_file, duration, on_probe) -> dict:
    """Measure the peers when there are any (and a token to talk to their responders)."""
    from pvestrap.checks import prober
    from pvestrap.checks.probe import load_token

    settings = prober.ProbeSettings(duration_s=duration or (
        plan.preflight.thresholds.duration_s if plan else 3.0))
    if plan is not None and len(plan.nodes) > 1 and plan.has_node(me):
        request = prober.request_from_plan(plan, me, settings)
    elif peers:
        request = prober.ProbeRequest(me, prober.udp_targets(peers), settings=settings)
    else:
        return {}
    if not (token_file or os.environ.get("PVESTRAP_PROBE_TOKEN")):
        raise UserError("probing peers needs the token their responders were started with",
                        remedy="pass --token-file FILE (or set PVESTRAP_PROBE_TOKEN); or use "
                               "--mesh to let pvestrap start the responders itself")
    token = load_token(None, token_file)
    return {prober.PROBES_KEY: prober.measure(request, token, progress=on_probe)}


def _matrices(plan, me, probes) -> dict:
    """A one-row matrix per link from this node's own measurements."""
    from pvestrap.checks import prober
    from pvestrap.mesh import NodeResult, matrices

    measured = probes.get(prober.PROBES_KEY)
    if plan is None or measured is None:
        return {}
    return matrices(plan, [NodeResult(me, None, measured.to_dict())])


def _mesh(plan, answers_path, remote, duration, ignore, interactive):
    import shlex

    from pvestrap import mesh

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


def _emit(report, json_out: bool, junit: str | None, html: str | None) -> None:
    from pvestrap.atomic import atomic_write

    if junit:
        from pvestrap.report.junit import render_junit

        atomic_write(junit, render_junit(report), backup=False)
    if html:
        from pvestrap.report.html import render_html

        atomic_write(html, render_html(report), backup=False)
    if json_out:
        from pvestrap.report.jsonout import render_json

        print(render_json(report))
    else:
        from pvestrap.report.text import render_text, wants_color

        print(render_text(report, color=wants_color(sys.stdout)))
