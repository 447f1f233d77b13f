"""`pvestrap status`: the post-flight report of the running cluster, as corosync sees it."""

from __future__ import annotations

from typing import Optional

import typer


def command(
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    junit: Optional[str] = typer.Option(None, "--junit", help="Also write JUnit XML to FILE."),
    html: Optional[str] = typer.Option(None, "--html", help="Also write a self-contained HTML "
                                       "report (knet RTT heatmaps) to FILE."),
    expect_nodes: Optional[int] = typer.Option(None, "--expect-nodes", min=1,
                                               help="Warn when fewer nodes are members."),
    latency_ms: float = typer.Option(2.0, "--latency-ms", min=0.0,
                                     help="Warn when a link's average RTT (knet's own "
                                     "measurement) is above this."),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when there are warnings."),
    listen: float = typer.Option(2.0, "--listen", min=0.0,
                                 help="Seconds to listen (raw socket, root) for hosts outside "
                                 "the nodelist sending to the link ports, e.g. a removed node "
                                 "that came back; 0 skips it."),
) -> int:
    """Report quorum, votes, members, and every knet link's state and RTT on this node.

    Reads corosync-quorumtool, corosync-cfgtool and corosync-cmapctl (corosync's own
    statistics). Exit 0 healthy, 1 any FAIL, 3 only warnings with --strict.
    """
    from pvestrap.system import RealSystem
    from pvestrap.verify import status_report

    system = RealSystem()
    with strangers_in_background(system, listen) as heard:
        report = status_report(system, expect_nodes=expect_nodes, latency_warn_ms=latency_ms)
    report = with_section(report, "strangers", "LINK PORTS", heard())
    emit(report, json_out, junit, html)
    return report.exit_code(strict)


def strangers_in_background(system, seconds: float):
    """Listen for strangers on the link ports (checks.strangers) while the block runs; the
    context yields a function returning the findings (none when there is no corosync.conf
    or SECONDS is 0)."""
    from concurrent.futures import ThreadPoolExecutor
    from contextlib import contextmanager

    from pvestrap.corosync.facade import CorosyncConf
    from pvestrap.corosync.tree import ConfParseError
    from pvestrap.verify import COROSYNC_CONF

    @contextmanager
    def run():
        text = system.read_text(COROSYNC_CONF) if seconds > 0 else None
        try:
            conf = CorosyncConf.parse(text, COROSYNC_CONF) if text else None
        except ConfParseError:
            conf = None
        if conf is None:
            yield lambda: []
            return
        from pvestrap.checks.strangers import heard_findings

        with ThreadPoolExecutor(max_workers=1) as pool:
            future = pool.submit(heard_findings, conf, seconds)
            yield future.result

    return run()


def with_section(report, name: str, title: str, findings):
    import dataclasses

    from pvestrap.report.model import ReportSection

    if not findings:
        return report
    return dataclasses.replace(report, sections=(*report.sections,
                                                 ReportSection(name, title, tuple(findings))))


def emit(report, json_out: bool = False, junit: Optional[str] = None,
         html: Optional[str] = None) -> None:
    """Print a report (text, or JSON) and write the JUnit/HTML files asked for."""
    import sys

    from pvestrap.atomic import atomic_write

    if junit:
        from pvestrap.report.junit import render_junit

        atomic_write(junit, render_junit(report), backup=False)
    if html:
        from pvestrap.report.html import render_html

        atomic_write(html, render_html(report), backup=False)
    if json_out:
        from pvestrap.report.jsonout import render_json

        sys.stdout.write(render_json(report))
    else:
        from pvestrap.report.text import render_text, wants_color

        sys.stdout.write(render_text(report, color=wants_color(sys.stdout)))
