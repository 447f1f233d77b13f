"""`pvestrap firstboot`'s own command line (argparse, so the ISO hook needs no typer)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Sequence

from pvestrap.errors import OperationFailed, PvestrapError
from pvestrap.firstboot import applying
from pvestrap.firstboot.flow import Options, run, say_line
from pvestrap.firstboot.state import STATE_DIR


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pvestrap firstboot",
        description="Build the cluster of an answer file at a node's first boot: answer "
                    "probes, preflight (probing once the other nodes ran their local checks), "
                    "then create or join in nodeid order. Idempotent: rerun after an "
                    "interruption; a finished node does nothing. Exit 0 done, 1 failed (try "
                    "again), 2 bad input.")
    p.add_argument("--answers", required=True, metavar="FILE",
                   help="The cluster's answer file (the same file on every node).")
    p.add_argument("--node", metavar="NAME", help="This node's name in the answer file "
                   "(default: the host name).")
    p.add_argument("--peer-wait", type=_seconds, default=600.0, metavar="S",
                   help="How long to wait, before probing, until every other node answers "
                        "and ran its local checks (default 600).")
    p.add_argument("--turn-wait", type=_seconds, default=900.0, metavar="S",
                   help="How long to wait for this node's turn (default 900): the creating "
                        "node until every other node passed its preflight, a joiner until the "
                        "node before it is a member; then it goes ahead.")
    p.add_argument("--apply-timeout", type=_seconds, default=900.0, metavar="S",
                   help="How long to retry the apply while the cluster is busy or not ready "
                        "(default 900).")
    p.add_argument("--quorum-timeout", type=_seconds, default=300.0, metavar="S",
                   help="How long the apply waits for quorum after create or join (default 300).")
    p.add_argument("--linger", type=_seconds, default=1800.0, metavar="S",
                   help="After finishing, keep answering probes until every node is a member, "
                        "at most this long (default 1800).")
    p.add_argument("--state-dir", default=STATE_DIR, metavar="DIR",
                   help=f"Where progress and the done marker live (default {STATE_DIR}).")
    p.add_argument("--secret-file", metavar="FILE", help="The cluster's first-boot secret, "
                   "the same on every node, mode 0600 (default: beside the answer file, "
                   "NAME.firstboot-secret, where the ISO's hook writes it). First boot does "
                   "not run without it.")
    p.add_argument("--duration", type=_seconds, metavar="S",
                   help="Seconds of latency sampling per path in the preflight (default: the "
                        "answer file's, else 3).")
    p.add_argument("--ignore", action="append", default=[], metavar="CHECK",
                   help="Check id whose FAILs become WARNs (repeatable).")
    p.add_argument("--corosync-start", metavar="CMD", help="Command that starts corosync where "
                   "no service manager can (e.g. in a lab node).")
    p.add_argument("--quiet", action="store_true", help="Progress lines only: no report text "
                   "and no apply plan on stdout (the report is saved as JSON in --state-dir).")
    p.add_argument("--debug", action="store_true", help="Show tracebacks for errors.")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds > 0")
    return value


def options(args: argparse.Namespace) -> Options:
    return Options(answers=args.answers, node=args.node, state_dir=args.state_dir,
                   peer_wait_s=args.peer_wait, turn_wait_s=args.turn_wait,
                   apply_timeout_s=args.apply_timeout, quorum_timeout_s=args.quorum_timeout,
                   linger_s=args.linger, secret_file=args.secret_file, duration_s=args.duration,
                   ignore=tuple(args.ignore),
                   corosync_start=tuple(shlex.split(args.corosync_start))
                   if args.corosync_start else None, quiet=args.quiet)


def main(argv: Sequence[str] | None = None, apply: applying.ApplyFn | None = None) -> int:
    """`pvestrap firstboot` and the ISO hook's entry point; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser().parse_args(args_list)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
    started = time.monotonic()
    try:
        outcome = run(options(args), apply)
    except PvestrapError as exc:
        if args.debug:
            raise
        print(exc.render(), file=sys.stderr, flush=True)
        if isinstance(exc, OperationFailed):
            say_line(f"first boot failed after {time.monotonic() - started:.0f} s "
                     f"[{', '.join(applying.reasons(exc))}]; run it again to resume")
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the first boot again to finish", file=sys.stderr)
        return 130
    if not outcome.already_done:
        say_line(f"first boot finished in {time.monotonic() - started:.0f} s")
    return 0
