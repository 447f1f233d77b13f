"""How long `pvestrap lab up` and `down` take for a 16-node lab (target: up < 15 s, down < 5 s).

    sudo .venv/bin/python benchmarks/lab_updown.py [--nodes 16] [--links 2] [--runs 3]

Each run builds a lab of its own random name through the library (what `pvestrap lab up` runs,
without the CLI's start-up), checks that the last node answers a ping on every link, and removes
it. Prints one line per run and the medians; exits 1 if a median misses its target.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import leftovers, new_prefix, unavailable

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

UP_TARGET_S = 15.0
DOWN_TARGET_S = 5.0


def one_run(nodes: int, links: int) -> tuple[float, float]:
    prefix = new_prefix("bm")
    start = time.perf_counter()
    lab = Lab.up(prefix, nodes=nodes, links=links)
    up = time.perf_counter() - start
    try:
        inodes = set(lab.state.netns.values())
        for link in range(links):
            lab.exec("n1", ["ping", "-c1", "-W2", f"10.254.{link}.{nodes}"], check=True)
    finally:
        start = time.perf_counter()
        lab.down()
        down = time.perf_counter() - start
    left = leftovers(prefix, inodes)
    if any(left.values()):
        raise SystemExit(f"lab {prefix} left {left}")
    return up, down


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--links", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    ups, downs = [], []
    for run in range(1, args.runs + 1):
        up, down = one_run(args.nodes, args.links)
        ups.append(up)
        downs.append(down)
        print(f"run {run}: {args.nodes} nodes x {args.links} links: up {up:.2f} s, "
              f"down {down:.2f} s")
    up, down = statistics.median(ups), statistics.median(downs)
    print(f"median: up {up:.2f} s (target < {UP_TARGET_S:g} s), "
          f"down {down:.2f} s (target < {DOWN_TARGET_S:g} s)")
    return 0 if up < UP_TARGET_S and down < DOWN_TARGET_S else 1


if __name__ == "__main__":
    guard.run(main)
