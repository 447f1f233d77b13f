"""How every benchmark ends: its numbers, or one line saying why it could not measure.

    if __name__ == "__main__":
        guard.run(main)

A benchmark that cannot measure (a tool missing, a command that timed out, a lab that did not
come up) prints `NAME: cannot measure: WHY` and exits 1, never a traceback; `--debug` in
the arguments shows the traceback as well. A benchmark's own SystemExit("why") passes through
(Python prints the message and exits 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable


def why(exc: BaseException) -> str:
    if isinstance(exc, subprocess.TimeoutExpired):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
        return f"`{cmd}` did not finish within {exc.timeout:g} s"
    if isinstance(exc, subprocess.CalledProcessError):
        cmd = exc.cmd if isinstance(exc.cmd, str) else " ".join(map(str, exc.cmd))
        tail = (exc.stderr or exc.output or "").strip()[-500:] if isinstance(
            exc.stderr or exc.output, str) else ""
        return f"`{cmd}` exited {exc.returncode}" + (f": {tail}" if tail else "")
    return f"{type(exc).__name__}: {exc}"


def run(main: Callable[[], int]) -> None:
    name = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place that turns any failure into a line
        if "--debug" in sys.argv:
            traceback.print_exc()
        print(f"{name}: cannot measure: {why(exc)}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code)
