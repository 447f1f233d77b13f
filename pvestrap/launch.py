"""The `pvestrap` executable: the command line, or straight to the mesh agent.

`pvestrap preflight --agent` is what the mesh preflight starts on every node over SSH, all at
once: the CLI's imports before it (typer, click, every command group: ~35 ms of CPU) are paid
by every agent while they share the nodes' CPUs with each other's start-up in a lab, and they
add nothing: the agent reads its job from stdin and has no options. Every other command line,
`--debug` included, goes to pvestrap.cli.
"""

from __future__ import annotations

import sys

AGENT = ["preflight", "--agent"]


def entry() -> None:
    if sys.argv[1:] == AGENT:
        from pvestrap.mesh import agent_entry  # not at the top: the CLI must not pay for it

        sys.exit(agent_entry())
    from pvestrap.cli import entry as cli  # typer: imported only for the command line

    cli()
