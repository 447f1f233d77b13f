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
size (time ratio vs node ratio), the growth exponent from the size before (log time ratio / log
node ratio: 1 is linear in N, 2 grows with the pairs) and ssh/in-process; the load average
before each size (the machine is shared); in ssh mode also the run's CPU seconds, the
orchestrator with its ssh clients and every node's sshd sessions with the agents they ran (all
of it on this machine's cores, which is why the lab's 32 nodes are CPU-bound on 2). A time only
counts when the run found what a clean lab is: no FAIL (a mesh that times out its probes is
fast and wrong); FAILs are listed and the benchmark exits 1. Also times `pvestrap preflight`
on one node with no peers, and `pvestrap --help`, each against `python -c pass` as the floor.
Timeouts: 300 s per mesh run.

Every lab node is a network namespace of this one kernel, and the kernel's ARP table is shared
by all of them: N nodes x L links need N(N-1)L entries (32 x 2: 1984), above the default
net.ipv4.neigh.default.gc_thresh3 of 1024. Past it the kernel drops the probes (`neighbor table
overflow` in dmesg; UDP counts them as SndbufErrors, the sender sees no error) and the run
reports half the pairs filtered; on real nodes each has its own table of 2(N-1) entries. A lab
that large pins its neighbours (pvestrap.lab.neighbours: permanent entries, which the kernel
does not count against the limit); the benchmark checks that the smaller labs fit, and a run
during which the kernel's table was full anyway (table_fulls grew) is not valid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pvestrap import answers, mesh
from pvestrap.lab import Lab, neighbours

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

PVESTRAP = [sys.executable, "-m", "pvestrap"]
TIMEOUT = 300
LINKS = 2


READY_AT: dict[int, float] = {}  # nodes -> seconds until every in-process agent was READY


NEIGH_LIMIT = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"
ARP_STATS = "/proc/net/stat/arp_cache"


def arp_table() -> tuple[int, int, int]:
    """(entries now, the kernel's limit, table-full events so far), for every namespace."""
    rows = [line.split() for line in Path(ARP_STATS).read_text().splitlines()]
    col = {name: i for i, name in enumerate(rows[0])}
    entries = int(rows[1][col["entries"]], 16)  # the same on every CPU's line
    fulls = sum(int(r[col["table_fulls"]], 16) for r in rows[1:]) if "table_fulls" in col else 0
    return entries, int(Path(NEIGH_LIMIT).read_text()), fulls


def check_arp_room(sizes: list[int], links: int) -> None:
    """The largest lab that resolves its neighbours by ARP (a larger one pins them) fits."""
    entries, limit, _ = arp_table()
    dynamic = [n for n in sizes if neighbours.needed(n, links) <= limit // 2]
    if not dynamic:
        return
    need = neighbours.needed(max(dynamic), links)
    if entries + need > limit:
        raise SystemExit(
            f"cannot measure {max(dynamic)} nodes x {links} links: its lab needs {need} ARP "
            f"entries and {entries} are in use, but the kernel holds at most {limit} for all "
            f"namespaces together (past it, probes are dropped and pairs read as filtered); "
            f"raise it: sysctl -w net.ipv4.neigh.default.gc_thresh3={2 * (entries + need)} "
            f"net.ipv4.neigh.default.gc_thresh2={entries + need}")


def fails_of(findings) -> list[str]:
    """'code subject' of every FAIL: a clean lab has none."""
    return [f"{f['code']} {f['subject']}" for f in findings if f["severity"] == "FAIL"]


def inproc(lab: Lab, duration: float) -> tuple[float, int, list[str]]:
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
    fails = [f"{f.code} {f.subject}" for f in report.findings if f.severity.name == "FAIL"]
    return elapsed, sum(1 for f in report.findings if f.code.startswith("link-port-")), fails


CPU_AT: dict[int, tuple[float, float]] = {}  # nodes -> CPU s (orchestrator + ssh, sshd + agents)


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children (the orchestrator and its ssh)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def sshd_cpu(lab: Lab) -> float:
    """CPU seconds of every node's finished sshd sessions and what they ran (the agents): each
    node's sshd reaps its sessions, so they add to its children's time (/proc/PID/stat)."""
    total = 0
    for services in lab.state.services.values():
        pid = services.get("sshd")
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16, 17)
    return total / os.sysconf("SC_CLK_TCK")


def over_ssh(lab: Lab, duration: float, folder: Path) -> tuple[float, int, list[str]]:
    path = folder / f"{lab.prefix}.toml"
    path.write_text(answers.dumps(lab.plan()))
    nodes_before, mine_before = sshd_cpu(lab), children_cpu()
    started = time.monotonic()
    out = lab.exec("n1", [*PVESTRAP, "preflight", "--mesh", "--json", "--answers", str(path),
                          "--duration", f"{duration:g}"], timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # each node's sshd reaps its session once the session has closed
    CPU_AT[len(lab.plan().nodes)] = (children_cpu() - mine_before, sshd_cpu(lab) - nodes_before)
    if not out.stdout.startswith("{"):
        raise SystemExit(f"preflight --mesh over ssh gave no report (exit {out.returncode}): "
                         f"{out.stderr.strip()[-1500:]}")
    found = [f for s in json.loads(out.stdout)["sections"] for f in s["findings"]]
    down = [f["subject"] for f in found if f["code"] == "node-unreachable"]
    if down:
        raise SystemExit(f"preflight --mesh over ssh did not reach {down}")
    return elapsed, sum(1 for f in found if f["code"].startswith("link-port-")), fails_of(found)


def one_size(n: int, duration: float, modes: list[str], folder: Path) -> dict[str, tuple]:
    lab = Lab.up("bm" + secrets.token_hex(3), n, LINKS)
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

    check_arp_room(args.sizes, LINKS)
    print(f"mesh preflight, {LINKS} links, {args.duration:g} s sampling "
          f"({round(args.duration / 0.05)} probes per port):")
    rows, invalid = [], []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            load, fulls = os.getloadavg()[0], arp_table()[2]
            got = one_size(n, args.duration, args.modes, Path(folder))
            overflowed = arp_table()[2] - fulls
            for mode, (elapsed, ports, fails) in got.items():
                row = {"nodes": n, "mode": mode, "s": round(elapsed, 2), "ports": ports,
                       "fails": len(fails), "load1": round(load, 1),
                       **({"ready_s": round(READY_AT[n], 2)}
                          if mode == "inproc" and n in READY_AT else {}),
                       **({"cpu_orchestrator_s": round(CPU_AT[n][0], 2),
                           "cpu_nodes_s": round(CPU_AT[n][1], 2)}
                          if mode == "ssh" and n in CPU_AT else {})}
                print(_line(row, [r for r in rows if r["mode"] == mode],
                            got["inproc"][0] if "inproc" in got else None), flush=True)
                rows.append(row)
                if fails or overflowed:
                    invalid.append(f"{n} nodes {mode}: {len(fails)} FAIL in a clean lab"
                                   + (f", ARP table full {overflowed} times" if overflowed
                                      else "") + f" ({'; '.join(fails[:3])})")
    print(json.dumps({"benchmark": "preflight_mesh", "duration_s": args.duration, "rows": rows}))

    floor = command_time([sys.executable, "-c", "pass"])
    single = command_time([sys.executable, "-m", "pvestrap", "preflight", "--json"], runs=3)
    helptime = command_time([sys.executable, "-m", "pvestrap", "--help"])
    print(f"python -c pass (floor):          {floor:6.3f} s")
    print(f"pvestrap --help:                 {helptime:6.3f} s  (x{helptime / floor:.1f} floor)")
    print(f"pvestrap preflight, no peers:    {single:6.3f} s  (x{single / floor:.1f} floor)")
    for line in invalid:
        print(f"NOT VALID: {line}")
    return 1 if invalid else 0


def _line(row: dict, before: list[dict], inproc_s: float | None) -> str:
    """One size and mode: time, pairs, per node, against the first size and the one before."""
    n, elapsed = row["nodes"], row["s"]
    first = before[0] if before else row
    prev = before[-1] if before else None
    growth = (f"  growth N^{math.log(elapsed / prev['s']) / math.log(n / prev['nodes']):.2f}"
              if prev and prev["nodes"] != n and prev["s"] > 0 else "")
    side = (f"  ssh/inproc x{elapsed / inproc_s:.2f}" if row["mode"] == "ssh" and inproc_s
            else f"  all READY at {row['ready_s']:.2f} s" if "ready_s" in row else "")
    if "cpu_nodes_s" in row:
        side += (f"  CPU {row['cpu_orchestrator_s'] + row['cpu_nodes_s']:.2f} s (orchestrator + "
                 f"ssh {row['cpu_orchestrator_s']:.2f}, sshd + agents {row['cpu_nodes_s']:.2f})")
    return (f"  {n:3d} nodes {row['mode']:>6}: {elapsed:6.2f} s  {n * (n - 1):4d} ordered pairs  "
            f"{row['ports']:5d} port results  {row['fails']} FAIL  {elapsed / n:5.2f} s/node  "
            f"time x{elapsed / first['s']:.2f} for nodes x{n / first['nodes']:.2f}{growth}{side}"
            f"  (load {row['load1']:.1f})")


if __name__ == "__main__":
    guard.run(main)
