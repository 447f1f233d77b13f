"""The `pvestrap` command line: a thin front-end over the library.

Each command group lives in pvestrap/commands/<group>.py and imports its heavy dependencies
inside the command functions, so `pvestrap --help` stays fast.
"""

from __future__ import annotations

import functools
import sys
import traceback
from typing import Any

import typer
import typer.main

from pvestrap.commands import GROUPS, load_group

app = typer.Typer(
    name="pvestrap",
    help="Preflight, render and apply Proxmox VE / corosync clusters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rendering help through rich costs ~0.2 s, and --help must stay fast.
    rich_markup_mode=None,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    """Build Proxmox VE clusters that work the first time: preflight, plan, apply, verify."""


for _name, _module, _help in GROUPS:
    _group = load_group(_module)
    if isinstance(_group, typer.Typer):
        app.add_typer(_group, name=_name, help=_help)
    else:
        app.command(_name, help=None if _group.__doc__ else _help)(_group)


@functools.cache
def _command() -> Any:  # a click Command (typer bundles its own click)
    """The click command typer builds from `app`, built once: building it costs ~20 ms of CPU
    (every command's signature read again), once per process for the CLI, but tests and the
    wizard call main() hundreds of times."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI, mapping pvestrap's errors to exit codes (2 bad input, 1 failure)."""
    from pvestrap.errors import PvestrapError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if any("\x00" in arg for arg in args):  # no path, name or value can hold one
        print("error: an argument contains a NUL byte\n  fix: check how the command line was "
              "built", file=sys.stderr)
        return 2
    try:
        result = _command().main(args=args, prog_name="pvestrap", standalone_mode=False)
    except PvestrapError as exc:
        if debug:
            traceback.print_exc()  # --debug adds the traceback; the exit code stays the error's
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("\ninterrupted: nothing more was changed", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        # click's usage errors (bundled inside typer in some releases): duck-typed on purpose.
        exit_code = getattr(exc, "exit_code", None)
        if callable(getattr(exc, "show", None)) and isinstance(exit_code, int):
            exc.show()
            return exc.exit_code
        if debug:
            traceback.print_exc()
        print(f"internal error (a bug in pvestrap): {type(exc).__name__}: {exc}\n"
              "  run again with --debug for the traceback", file=sys.stderr)
        return 70
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
