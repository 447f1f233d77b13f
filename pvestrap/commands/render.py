"""`pvestrap render`: show or stage the files a node needs, without touching the live system."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def command(
    answers: Path = typer.Option(..., "--answers", metavar="FILE", dir_okay=False,
                                 help="The cluster's answer file (TOML)."),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME",
                                       help="Render for this node (default: this host's name)."),
    root: Optional[Path] = typer.Option(
        None, "--root", metavar="DIR", file_okay=False,
        help="Render against the files under DIR (a copy or mount of the node's /) and write "
             "the results there for review; folders are created. Without it nothing is "
             "written."),
    diff: bool = typer.Option(False, "--diff",
                              help="Print unified diffs instead of whole files."),
) -> None:
    """Render corosync.conf, datacenter.cfg and /etc/network/interfaces for one node.

    The files are the ones this node's `pvestrap apply` writes (or pvecm writes for it), as
    they will be once its apply is done: the diffs `apply --dry-run` shows. A joiner's
    corosync.conf assumes the nodes before it in the answer file have joined. Without --root,
    print the files that would change on this machine (or, with --diff, their diffs against
    the current files under /). With --root DIR, write them under DIR.
    """
    from pvestrap import answers as answer_files
    from pvestrap.nodefacts import read_facts, resolve
    from pvestrap.render import render_node, unified_diff, write_changes
    from pvestrap.system import RealSystem

    plan = answer_files.load(answers)
    name = answer_files.select_node(plan, node).name
    base = root if root is not None else Path("/")
    plan = resolve(plan, read_facts(RealSystem(root=str(base)), str(base)),
                   lambda line: typer.echo(f"note: {line}", err=True))
    changes = render_node(plan, name, root=base)
    for change in changes:
        if diff:
            typer.echo(unified_diff(change), nl=False)
        elif root is None:
            typer.echo(f"==> {change.path} (mode {change.mode:04o}) <==")
            typer.echo(change.after, nl=False)
    if root is not None:
        for path in write_changes(changes, root):
            typer.echo(f"wrote {path}", err=True)
    if not changes:
        typer.echo(f"{name}: every file is already as planned; nothing to change", err=True)
