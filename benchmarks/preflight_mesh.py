#!/usr/bin/env python3
"""Wall time of a full mesh preflight for 3, 8, 16 and 32 nodes x 2 links, in process and over
SSH side by side, plus the single-node run.

Every node runs the real agent (responder + local checks + probes to every peer on every link,
5404 and 5405+N, MTU search, clock offsets) inside its lab namespaces; the orchestrator merges
the N x N report. Pairs grow as N^2, the wall time should grow no worse than linearly in N.
For each size one lab is built (not timed), its sshd started on every node, then:

- in-process: this process runs the orchestrator, agents start with nsenter (the lab launcher);
- ssh: what a user runs, `pvestrap preflight --mesh --json` started in node 1, reaching every
  node (itself too) over the lab's real sshd with the default remote command `pvestrap`; the
  clock includes that orchestrator's own start.

    sudo .venv/bin/python benchmarks/preflight_mesh.py [--sizes 3 8 16 32] [--duration 1.0]
        [--modes inproc ssh]

Prints one line per size and mode: seconds, pairs, seconds per node, the ratio to the smallest
size (time ratio vs node ratio) and ssh/in-process; the load average before each size (the
machine is shared). Also times `pvestrap preflight` on one node with no peers, and
`pvestrap --help`, each against `python -c pass` as the floor. Timeouts: 300 s per mesh run.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pvestrap import answers, mesh
from pvestrap.lab import Lab

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

PVESTRAP = [sys.executable, "-m", "pvestrap"]
TIMEOUT = 300


READY_AT: dict[int, float] = {}  # nodes -> seconds until every in-process agent was READY


def inproc(lab: Lab, duration: float) -> tuple[float, int]:
    plan = lab.plan()

    def launcher(node, agent):
        return lab.command(node, [*PVESTRAP, *agent[1:]])

    def progress(line: str) -> None:
        if line.startswith("responders up"):  # every agent READY: GO to all, probes start
            READY_AT[len(plan.nodes)] = time.monotonic() - started

    started = time.monotonic()
    results = mesh.run_mesh(plan, answers.dumps(plan), duration_s=duration, launcher=launcher,
                            timeout_s=TIMEOUT, progress=progress)
    elapsed = time.monotonic() - started
    failed = [r.node for r in results if r.error]
    if failed:
        raise SystemExit(f"agents failed on {failed}: {results[0].error}")
    report = mesh.merge(plan, results)
    return elapsed, sum(1 for f in report.findings if f.code.startswith("link-port-"))


def over_ssh(lab: Lab, duration: float, folder: Path) -> tuple[float, int]:
    path = folder / f"{lab.prefix}.toml"
    path.write_text(answers.dumps(lab.plan()))
    started = time.monotonic()
    out = lab.exec("n1", [*PVESTRAP, "preflight", "--mesh", "--json", "--answers", str(path),
                          "--duration", f"{duration:g}"], timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    if not out.stdout.startswith("{"):
        raise SystemExit(f"preflight --mesh over ssh gave no report (exit {out.returncode}): "
                         f"{out.stderr.strip()[-1500:]}")
    found = [f for s in json.loads(out.stdout)["sections"] for f in s["findings"]]
    down = [f["subject"] for f in found if f["code"] == "node-unreachable"]
    if down:
        raise SystemExit(f"preflight --mesh over ssh did not reach {down}")
    return elapsed, sum(1 for f in found if f["code"].startswith("link-port-"))


def one_size(n: int, duration: float, modes: list[str], folder: Path) -> dict[str, tuple]:
    lab = Lab.up("bm" + secrets.token_hex(3), n, 2)
    try:
        lab.start("sshd")
        out = {}
        for mode in modes:
            out[mode] = inproc(lab, duration) if mode == "inproc" else \
                over_ssh(lab, duration, folder)
        return out
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[3, 8, 16, 32])
    parser.add_argument("--duration", type=float, default=1.0,
                        help="latency sampling per path (fixed probe count: duration / 50 ms)")
    parser.add_argument("--modes", nargs="+", choices=["inproc", "ssh"],
                        default=["inproc", "ssh"])
    args = parser.parse_args()

    print(f"mesh preflight, 2 links, {args.duration:g} s sampling "
          f"({round(args.duration / 0.05)} probes per port):")
    base: dict[str, tuple[float, int]] = {}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            load = os.getloadavg()[0]
            got = one_size(n, args.duration, args.modes, Path(folder))
            for mode, (elapsed, ports) in got.items():
                first = base.setdefault(mode, (elapsed, n))
                side = (f"  ssh/inproc x{elapsed / got['inproc'][0]:.2f}"
                        if mode == "ssh" and "inproc" in got else "")
                if mode == "inproc" and n in READY_AT:
                    side = f"  all READY at {READY_AT[n]:.2f} s"
                print(f"  {n:3d} nodes {mode:>6}: {elapsed:6.2f} s  {n * (n - 1):4d} ordered "
                      f"pairs  {ports:5d} port results  {elapsed / n:5.2f} s/node  time "
                      f"x{elapsed / first[0]:.2f} for nodes x{n / first[1]:.2f}{side}  "
                      f"(load {load:.1f})", flush=True)
                rows.append({"nodes": n, "mode": mode, "s": round(elapsed, 2),
                             "ports": ports, "load1": round(load, 1),
                             **({"ready_s": round(READY_AT[n], 2)}
                                if mode == "inproc" and n in READY_AT else {})})
    print(json.dumps({"benchmark": "preflight_mesh", "duration_s": args.duration, "rows": rows}))

    floor = command_time([sys.executable, "-c", "pass"])
    single = command_time([sys.executable, "-m", "pvestrap", "preflight", "--json"], runs=3)
    helptime = command_time([sys.executable, "-m", "pvestrap", "--help"])
    print(f"python -c pass (floor):          {floor:6.3f} s")
    print(f"pvestrap --help:                 {helptime:6.3f} s  (x{helptime / floor:.1f} floor)")
    print(f"pvestrap preflight, no peers:    {single:6.3f} s  (x{single / floor:.1f} floor)")
    return 0


if __name__ == "__main__":
    guard.run(main)
