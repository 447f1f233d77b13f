#!/usr/bin/env python3
"""Wall time of a full mesh preflight for 3, 8 and 16 nodes x 2 links, plus the single-node run.

Every node runs the real agent (responder + local checks + probes to every peer on every link,
5404 and 5405+N, MTU search, clock offsets) inside its lab namespaces; the orchestrator merges
the N x N report. Pairs grow as N^2, the wall time should grow no worse than linearly in N.

    sudo .venv/bin/python benchmarks/preflight_mesh.py [--sizes 3 8 16] [--duration 1.0]

Prints one line per size: seconds, pairs, seconds per node, and the ratio to the smallest size
(time ratio vs node ratio). Also times `pvestrap preflight` on one node with no peers, and
`pvestrap --help`, each against `python -c pass` as the floor.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time

from pvestrap import answers, mesh
from pvestrap.lab import Lab

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback


def mesh_once(nodes: int, duration: float) -> tuple[float, int]:
    lab = Lab.up("bm" + secrets.token_hex(3), nodes, 2)
    try:
        plan = lab.plan()
        text = answers.dumps(plan)

        def launcher(node, agent):
            return lab.command(node, [sys.executable, "-m", "pvestrap", *agent[1:]])

        started = time.monotonic()
        results = mesh.run_mesh(plan, text, duration_s=duration, launcher=launcher,
                                timeout_s=300)
        elapsed = time.monotonic() - started
        failed = [r.node for r in results if r.error]
        if failed:
            raise SystemExit(f"agents failed on {failed}")
        report = mesh.merge(plan, results)
        probed = sum(1 for f in report.findings if f.code.startswith("link-port-"))
        return elapsed, probed
    finally:
        lab.down()


def command_time(argv: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 8, 16])
    parser.add_argument("--duration", type=float, default=1.0,
                        help="latency sampling per path (fixed probe count: duration / 50 ms)")
    args = parser.parse_args()

    print(f"mesh preflight, 2 links, {args.duration:g} s sampling "
          f"({round(args.duration / 0.05)} probes per port):")
    base = None
    for n in args.sizes:
        elapsed, ports = mesh_once(n, args.duration)
        base = base or (elapsed, n)
        print(f"  {n:3d} nodes: {elapsed:6.2f} s  {n * (n - 1):4d} ordered pairs  "
              f"{ports:5d} port results  {elapsed / n:5.2f} s/node  "
              f"time x{elapsed / base[0]:.2f} for nodes x{n / base[1]:.2f}")

    floor = command_time([sys.executable, "-c", "pass"])
    single = command_time([sys.executable, "-m", "pvestrap", "preflight", "--json"], runs=3)
    helptime = command_time([sys.executable, "-m", "pvestrap", "--help"])
    print(f"python -c pass (floor):          {floor:6.3f} s")
    print(f"pvestrap --help:                 {helptime:6.3f} s  (x{helptime / floor:.1f} floor)")
    print(f"pvestrap preflight, no peers:    {single:6.3f} s  (x{single / floor:.1f} floor)")
    return 0


if __name__ == "__main__":
    guard.run(main)
