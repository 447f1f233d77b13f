"""The `pvestrap` executable: the command line, or straight to the mesh agent.

`pvestrap preflight --agent` is what the mesh preflight starts on every node over SSH, all at
once: the CLI's imports before it (typer, click, every command group: ~35 ms of CPU) are paid
by every agent while they share the nodes' CPUs with each other's start-up in a lab, and they
add nothing: the agent reads its job from stdin and has no options. Every other command line,
`--debug` included, goes to pvestrap.cli. The agent also ends without the interpreter's
teardown (finish).
"""

from __future__ import annotations

import gc
import os
import sys
from typing import NoReturn

AGENT = ["preflight", "--agent"]


def entry() -> None:
    if sys.argv[1:] == AGENT:
        gc.disable()  # see imported()
        from pvestrap.mesh import agent_entry  # not at the top: the CLI must not pay for it

        imported()
        finish(agent_entry())
    from pvestrap.cli import entry as cli  # typer: imported only for the command line

    cli()


def imported() -> None:
    """The agent's modules are loaded: keep them out of the cyclic garbage collector's sight.

    Importing them makes ~20,000 objects the collector tracks, all living until the process
    ends; it ran ~50 times over the growing heap while they loaded (python + the agent's
    imports: 115-120 ms of CPU with it, 97-109 ms without, 30 starts each), and its older
    generations would walk them all again while the agent probes. Frozen, they are never
    walked again; the collector stays on for what the agent makes after.
    """
    gc.freeze()
    gc.enable()


def finish(code: int) -> NoReturn:
    """End the agent without the interpreter's teardown (os._exit once its output is flushed).

    Every node's agent ends at the same moment, when the orchestrator hangs up, and the
    orchestrator merges the report only once the last session closed: the teardown of the
    modules the agent imported is ~10 ms of CPU each, and 16 of them on a busy 2-core machine
    held the last session 0.3 s (0.05 s without). The agent has nothing left to clean up: its
    responder's sockets are closed, it writes no file, and its RESULT line is flushed here.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the orchestrator is gone: nobody reads it
    os._exit(code)
