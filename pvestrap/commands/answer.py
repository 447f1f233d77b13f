"""`pvestrap answer`: create, validate and describe cluster answer files.

Only typer is imported here at module level; the library is imported inside each command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pvestrap.commands import group

app = group("Create, validate and describe cluster answer files.")


@app.command("init")
def init(
    file: Optional[Path] = typer.Argument(None, help="Where to write the example "
                                          "(default: print it)."),
    force: bool = typer.Option(False, "--force", help="Overwrite FILE if it exists."),
) -> None:
    """Write a commented example answer file (3 nodes, 2 links) to edit."""
    import os

    from pvestrap.answers import example
    from pvestrap.atomic import atomic_write
    from pvestrap.errors import UserError

    text = example()
    if file is None:
        typer.echo(text, nl=False)
        return
    if not force and os.path.lexists(file):
        raise UserError(f"{file} exists; nothing was written", code="file-exists",
                        remedy="pass --force to overwrite it, or choose another name")
    atomic_write(file, text, backup=False, error=UserError)
    typer.echo(f"wrote {file}; edit it, then run: pvestrap answer validate {file}")
    _say_secret(file, _ensure_secret(file, None))


def _ensure_secret(file: Path, secret_file: Optional[Path]):
    from pvestrap.firstboot import secret

    return secret.ensure(secret_file or secret.path_for(file))


def _say_secret(file: Path, found) -> None:
    """Which file and what to do with it; never what is in it."""
    how = "made (32 random bytes, mode 0600)" if found.created else "present, checked"
    typer.echo(f"first-boot secret of this cluster: {found.path}, {how}. For an unattended "
               f"first boot every node needs it with the answer file: install -m 600 "
               f"{found.path} /etc/pvestrap/answers.firstboot-secret (the ISO's hook carries it "
               "itself)")


@app.command("secret")
def secret(
    file: Path = typer.Argument(..., help="The cluster's answer file."),
    secret_file: Optional[Path] = typer.Option(
        None, "--secret-file", metavar="FILE", help="Where the secret is (default: beside FILE, "
        "NAME.firstboot-secret)."),
) -> None:
    """Make the cluster's first-boot secret once (or check the one there): the nodes' probe
    tokens come from it, never from the answer file. It is never printed."""
    from pvestrap.answers import load

    load(file)
    _say_secret(file, _ensure_secret(file, secret_file))


@app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="The answer file to check."),
    node: Optional[str] = typer.Option(None, "--node", help="Also check that NODE is in the "
                                       "file and show its role."),
) -> None:
    """Check an answer file; print every problem with its line (exit 2) or a summary."""
    from pvestrap.answers import load, select_node

    plan = load(file)
    me = select_node(plan, node) if node is not None else None
    typer.echo(f"{file}: valid, {len(plan.nodes)} nodes, {len(plan.links)} links")
    if me is not None:
        typer.echo(f"node {me.name}: nodeid {me.nodeid}, {plan.role_of(me.name)} "
                   f"(create node: {plan.creator.name})")


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of the answer file format (for editors)."""
    import json

    from pvestrap.answers import schema as answer_schema

    typer.echo(json.dumps(answer_schema(), indent=2))
