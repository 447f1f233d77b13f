#!/usr/bin/env python3
"""Run every benchmark in this folder, one after the other, with its default settings.

    sudo .venv/bin/python benchmarks/run_all.py [NAME ...]

Each benchmark prints its own side-by-side numbers and ratios; this prints a header per
benchmark and a closing line per exit code. NAMEs pick some (e.g. `probe_accuracy`).
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ORDER = ("answers_validate", "lab_updown", "probe_accuracy", "preflight_mesh", "apply_cluster",
         "ansible_fleet")


def main(names: list[str]) -> int:
    chosen = names or list(ORDER)
    unknown = [n for n in chosen if n not in ORDER]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}",
              file=sys.stderr)
        return 2
    worst = 0
    for name in chosen:
        print(f"\n=== {name} ===", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"--- {name}: exit {rc} after {time.monotonic() - t0:.1f} s", flush=True)
        worst = max(worst, rc)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
