"""`pvestrap iso`: installer answer files, the first-boot hook, prepared ISOs.

Only typer is imported here at module level; the library is imported inside each command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pvestrap.commands import group

app = group("Prepare installer ISOs that install and cluster nodes unattended.")

_ANSWERS = typer.Option(..., "--answers", metavar="FILE", dir_okay=False,
                        help="The cluster's answer file (TOML).")
_INSTALLER = typer.Option(None, "--installer", metavar="FILE", dir_okay=False,
                          help="Override of the cluster file's [installer] table: the same "
                               "keys (country, timezone, mailto, domain, gateway, dns, "
                               "network_filter, disk ...) plus a root password source; its "
                               "keys win key by key, [installer.nodes.NAME] last. Not needed "
                               "when the cluster file has everything.")
_PW_FILE = typer.Option(None, "--root-password-file", metavar="FILE",
                        help="File whose first line is root's password (not readable by "
                             "others); only its SHA-512 crypt hash is written.")
_SECRET = typer.Option(None, "--secret-file", metavar="FILE",
                       help="The cluster's first-boot secret (default: beside --answers, "
                            "NAME.firstboot-secret): made (32 random bytes, mode 0600) when "
                            "missing, else reused, so every node of the cluster gets the same "
                            "one. Keep it with the answer file; it is never printed.")
_PW_ENV = typer.Option(None, "--root-password-env", metavar="NAME",
                       help="Environment variable holding root's password; only its hash "
                            "is written.")


def _warn(findings) -> None:
    for f in findings:
        where = f"{f.subject}: " if f.subject else ""
        typer.echo(f"warning: {where}{f.message} [{f.code}]", err=True)


@app.command("answer")
def answer(
    answers: Path = _ANSWERS,
    node: str = typer.Option(..., "--node", metavar="NAME", help="The node to install."),
    installer: Optional[Path] = _INSTALLER,
    root_password_file: Optional[str] = _PW_FILE,
    root_password_env: Optional[str] = _PW_ENV,
    out: Optional[Path] = typer.Option(None, "--out", metavar="FILE", dir_okay=False,
                                       help="Write here (mode 0600) instead of printing."),
) -> None:
    """Render the Proxmox installer's answer.toml for one node.

    The settings come from the cluster file's [installer] table (and --installer FILE, which
    wins key by key). fqdn is NODE plus installer.domain; the network comes from the node's
    `management` address (from-answer) with installer.gateway, dns and network_filter (a udev
    glob such as { ID_NET_NAME = "eno1" }); [first-boot] takes the hook from the ISO. Root's
    password is never in a settings file the hook carries: give --root-password-file or
    --root-password-env. The result is checked by the same rules as `pvestrap iso
    validate-answer`.
    """
    from pvestrap.iso.installer_answer import render_for

    rendered = render_for(answers, node, installer, password_file=root_password_file,
                          password_env=root_password_env)
    _warn(rendered.warnings)
    if out is None:
        typer.echo(rendered.text, nl=False)
        return
    _write_private(out, rendered.text)
    typer.echo(f"wrote {out}", err=True)


def _hook_with_secret(answers: Path, secret_file: Optional[Path]):
    """The first-boot hook carrying the cluster's first-boot secret (pvestrap.firstboot.secret):
    made once, when missing, and written (0600) only once the hook is built. Says which file,
    never what is in it."""
    from pvestrap.firstboot import secret
    from pvestrap.iso import hook as hooks

    found = secret.load_or_new(secret_file or secret.path_for(answers))
    built = hooks.build(answers, secret=found.value)
    secret.keep(found)
    how = ("made now (mode 0600): prepare every node of this cluster with it"
           if found.created else "reused")
    typer.echo(f"first-boot secret: {found.path}, {how}", err=True)
    return built


def _write_private(path: Path, text: str) -> None:
    """Only root may read it: the answer file holds the root password hash."""
    from pvestrap.atomic import atomic_write
    from pvestrap.errors import UserError

    atomic_write(path, text, 0o600, backup=False, error=UserError)


@app.command("validate-answer")
def validate_answer(
    file: Path = typer.Argument(..., metavar="FILE", help="An installer answer.toml."),
) -> None:
    """Check an installer answer.toml by the installer's rules (exit 0 valid, 2 invalid)."""
    from pvestrap.iso.installer_answer import validate_file

    _warn(validate_file(file))
    typer.echo(f"{file}: valid")


@app.command("hook")
def hook(
    answers: Path = _ANSWERS,
    out: Path = typer.Option(..., "--out", metavar="FILE", dir_okay=False,
                             help="Where to write the hook executable (mode 0700)."),
    secret_file: Optional[Path] = _SECRET,
) -> None:
    """Build the first-boot hook: pvestrap's core, the cluster answer file and the cluster's
    first-boot secret in one executable (a Python zipapp, at most 1 MiB, root's alone) that
    runs the unattended first-boot flow."""
    from pvestrap.iso import hook as hooks

    built = _hook_with_secret(answers, secret_file)
    hooks.write(built, out)
    deps = ", ".join(f"{k} {v}" for k, v in built.dependencies.items())
    typer.echo(f"wrote {out}: {built.size} bytes (limit {hooks.MAX_BYTES}), "
               f"{len(built.modules)} pvestrap modules, {deps}")
    for importer, module in built.left_out:
        typer.echo(f"note: {importer} imports {module} lazily; the hook does not carry it",
                   err=True)


@app.command("prepare")
def prepare(
    answers: Path = _ANSWERS,
    node: Optional[str] = typer.Option(None, "--node", metavar="NAME",
                                       help="The node this ISO (or partition) installs."),
    iso: Optional[Path] = typer.Option(None, "--iso", metavar="PVE.iso", dir_okay=False,
                                       help="The Proxmox VE installer ISO (left untouched)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="NODE.iso", dir_okay=False,
                                       help="The prepared ISO to write."),
    installer: Optional[Path] = _INSTALLER,
    partition: Optional[Path] = typer.Option(
        None, "--partition", metavar="DIR", file_okay=False,
        help="Write answer.toml into DIR for a partition labelled PROXMOX-AIS instead; with "
             "--iso/--out also prepare a partition-mode ISO (hook, no answer) for every node."),
    root_password_file: Optional[str] = _PW_FILE,
    root_password_env: Optional[str] = _PW_ENV,
    engine: str = typer.Option("auto", "--engine", help="auto (Proxmox's "
                               "proxmox-auto-install-assistant when installed), xorriso or "
                               "assistant."),
    secret_file: Optional[Path] = _SECRET,
) -> None:
    """Embed answer.toml, the installer mode, the first-boot hook (with the cluster's
    first-boot secret) and the auto-install flag into a copy of the installer ISO (boot
    records, volume id and UUID kept; the copy is mode 0600)."""
    from pvestrap.errors import UserError
    from pvestrap.iso import prepare as prep
    from pvestrap.iso.installer_answer import render_for

    if (iso is None) != (out is None):
        raise UserError("--iso and --out go together", code="usage")
    if iso is None and partition is None:
        raise UserError("nothing to do: give --iso and --out, or --partition DIR",
                        code="usage")
    if node is None:
        raise UserError("--node NAME is required: the answer is per node", code="usage")
    if iso is not None:
        from pvestrap.iso.xorriso import check_is_iso

        check_is_iso(iso)
    rendered = render_for(answers, node, installer, password_file=root_password_file,
                          password_env=root_password_env)
    _warn(rendered.warnings)
    if partition is not None and partition.exists() and not partition.is_dir():
        raise UserError(f"--partition {partition}: exists and is not a folder",
                        code="partition-dir-invalid")
    if iso is not None:
        built = _hook_with_secret(answers, secret_file)
        done = prep.prepare_iso(iso, out, built,
                                None if partition is not None else rendered.text, engine)
        for line in done.warnings:
            typer.echo(f"warning: {line}", err=True)
        typer.echo(f"wrote {done.out} ({done.mode} mode, {done.engine}): "
                   + ", ".join(f"{p} {n} bytes" for p, n in sorted(done.files.items()))
                   + f"; volume id {done.volume_id}, UUID {done.uuid} kept")
    if partition is not None:
        for path in prep.write_partition(partition, rendered.text):
            typer.echo(f"wrote {path}")
        typer.echo(f"copy it to the root of a FAT partition labelled {prep.PARTITION_LABEL} "
                   f"(mkfs.vfat -n {prep.PARTITION_LABEL} /dev/sdX1) and boot a partition-mode "
                   "ISO with it plugged in")


@app.command("inspect")
def inspect(
    iso: Path = typer.Argument(..., metavar="NODE.iso", help="A prepared ISO."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what a prepared ISO carries: mode, answer.toml (secrets masked), the hook and the
    cluster answer file inside it."""
    import json

    from pvestrap.iso.inspect import inspect as look
    from pvestrap.iso.inspect import render_text

    result = look(iso)
    typer.echo(json.dumps(result.as_dict(), indent=2) if json_out else render_text(result),
               nl=json_out)
