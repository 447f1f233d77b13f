"""`pvestrap conf lint|fmt FILE`: check and reformat an existing corosync.conf.

Exit codes: 0 fine (warnings allowed), 1 lint found a FAIL, 2 the file is unreadable or does not
parse (nothing written).
"""

from __future__ import annotations

import typer

from pvestrap.commands import group

app = group("Lint and format corosync.conf files.")


@app.command("lint")
def lint_command(
    file: str = typer.Argument(..., metavar="FILE", help="The corosync.conf to check."),
    json_output: bool = typer.Option(False, "--json", help="Print the findings as JSON."),
) -> None:
    """Check a corosync.conf against the plan rules and corosync's own (exit 1 on FAIL)."""
    import json

    from pvestrap.corosync.lint import lint
    from pvestrap.errors import UserError
    from pvestrap.findings import failures

    findings = lint(_read(file), source=file)
    broken = [f for f in findings if f.code == "conf-parse-error"]
    if json_output:
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    if broken:
        raise UserError(f"{file}:{broken[0].payload['line']}: {broken[0].message}",
                        code="conf-parse-error", remedy=broken[0].remedy)
    if not json_output:
        print(_report(file, findings))
    raise SystemExit(1 if failures(findings) else 0)


@app.command("fmt")
def fmt_command(
    file: str = typer.Argument(..., metavar="FILE", help="The corosync.conf to format."),
    in_place: bool = typer.Option(False, "--in-place", "-i",
                                  help="Rewrite FILE (keeping FILE.bak) instead of printing."),
) -> None:
    """Print FILE in pvecm's canonical order, or rewrite it in place with a backup."""
    import sys

    from pvestrap.corosync.tree import canonical, parse

    text = _read(file)
    formatted = canonical(parse(text, file))
    if not in_place:
        sys.stdout.write(formatted)
    elif formatted == text:
        print(f"{file}: already in pvecm's order; nothing written", file=sys.stderr)
    else:
        _replace(file, formatted)
        print(f"{file}: rewritten in pvecm's order; the previous version is {file}.bak",
              file=sys.stderr)


def _read(file: str) -> str:
    """The file's text, or a UserError saying why not (exit 2, nothing changed)."""
    from pvestrap.errors import UserError
    from pvestrap.inputs import read_input

    data = read_input(file, "corosync.conf", code="file-unreadable")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{file}:{line}: not UTF-8 text", code="file-not-text",
                        remedy="is this a corosync.conf? it holds bytes that are not text") \
            from None


def _report(file: str, findings) -> str:
    if not findings:
        return f"{file}: no problems found"
    lines = []
    for f in findings:
        line = f.payload.get("line")
        where = f" (line {line})" if line else ""
        lines.append(f"{f.severity.label}: {f.subject}{where}: {f.message} [{f.code}]")
        if f.remedy:
            lines.append(f"  fix: {f.remedy}")
    counts = {}
    for f in findings:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    summary = ", ".join(f"{n} {sev}" for sev, n in sorted(counts.items()))
    lines.append(f"{file}: {len(findings)} finding{'s' * (len(findings) != 1)} ({summary})")
    return "\n".join(lines)


def _replace(file: str, text: str) -> None:
    """Rewrite FILE with the project's atomic write (FILE.bak kept, mode and owner kept). A
    symlink named on the command line is resolved here, on purpose: the file it points to is
    the one rewritten (the atomic write itself never follows one)."""
    import os

    from pvestrap.atomic import atomic_write

    atomic_write(os.path.realpath(file), text)
