"""`pvestrap demo`: a 3-node lab clustered unattended, reported, and removed again."""

from __future__ import annotations

from typing import Optional

import typer


def command(
    nodes: int = typer.Option(3, "--nodes", "-n", min=2, max=16, help="How many nodes."),
    links: int = typer.Option(2, "--links", "-l", min=1, max=8,
                              help="How many corosync link networks."),
    keep: bool = typer.Option(False, "--keep", help="Keep the lab afterwards (remove it with "
                              "`pvestrap lab down --name NAME`)."),
    html: Optional[str] = typer.Option("pvestrap-demo.html", "--html", metavar="FILE",
                                       help="Where to write the HTML report."),
    timeout: float = typer.Option(300.0, "--timeout", min=30.0, metavar="S",
                                  help="Give up on the first boots after this long."),
    name: Optional[str] = typer.Option(None, "--name", help="The lab's name (default: demo and "
                                       "four random characters)."),
) -> int:
    """Build a lab of nodes on this machine (needs root), run the unattended first boot on all
    of them at once, print the preflight and the cluster's status (quorum, links, latencies),
    write the HTML report and remove the lab again. Ctrl-C removes it too.

    Exit 0 when every node joined a quorate cluster, 1 otherwise.
    """
    from pathlib import Path

    from pvestrap.atomic import atomic_write
    from pvestrap.demo import DemoOptions, one_page, run_demo
    from pvestrap.errors import UserError
    from pvestrap.report.html import render_html
    from pvestrap.report.text import render_text

    page = Path(html).resolve() if html else None
    if page is not None and not page.parent.is_dir():
        raise UserError(f"--html {html}: its folder does not exist", code="demo-html-path",
                        remedy="give a file in an existing folder")
    result = run_demo(DemoOptions(nodes=nodes, links=links, keep=keep, timeout_s=timeout,
                                  prefix=name), out=lambda line: print(line, flush=True))
    for report in (result.preflight, result.status):
        print("\n" + render_text(report).rstrip("\n"), flush=True)
    if page is not None:
        atomic_write(page, render_html(one_page(result)), backup=False, error=UserError)
        print(f"demo: HTML report written to {page}")
    return 0 if result.ok else 1
