"""Forming a cluster with pvestrap, next to the floor: corosync alone forming the same cluster
from hand-written configs, measured in the same run.

    sudo .venv/bin/python benchmarks/apply_cluster.py [--nodes 3 8 16] [--links 2] [--runs 1]
        [--modes together serial firstboot]

For each size N, a fresh lab of N nodes and LINKS links per measurement:

- floor: the lab's hand-written corosync.conf (every node listed) and one authkey go into
  every node, then `corosync` is started in all nodes at once; the clock runs from the first
  start until every node is quorate with N members.
- together: sshd runs on every node (not timed); the clock runs from starting `pvestrap apply
  --yes` in node 1 (which creates the cluster) and, once it exits, in nodes 2..N at the same
  time with `--batch-wait 30` (the joiner that takes the member's join lock waits for the others
  to queue, and all join in one configuration change: pvestrap.apply.batch) until every node is
  quorate with N members. Every apply runs the real local preflight first.
- serial: the same, but nodes 2..N apply one after the other (one configuration change each:
  what joining one node at a time costs).
- firstboot: the whole unattended first boot (`python -m pvestrap.firstboot`) started in every
  node at once: peer wait, the preflight with 1 s of probe sampling, create, the batched join;
  until every node is quorate with N members.

Prints one row per size and run (each mode's seconds and ratio to the floor, and how many
configuration changes the joins made: the final config_version - 1) and a JSON summary line.
Timeouts, stated: a whole apply, first boot or cluster formation 300 s (600 s for serial), one
`corosync-quorumtool -s` 60 s (a slower answer counts as not quorate yet), starting corosync
30 s; a benchmark that cannot measure says why and exits 1 (benchmarks/guard.py). All nodes of a
lab share this machine's CPUs: N applies and N preflights starting at once compete for them,
which real machines would not. Labs are removed afterwards, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvestrap.answers import dumps
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import StatusUnparsable, parse_quorum_status
from pvestrap.firstboot import secret
from pvestrap.lab import teardown
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import new_prefix, unavailable
from pvestrap.paths import COROSYNC_CONF

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

APPLY = [sys.executable, "-m", "pvestrap", "apply"]
FIRSTBOOT = [sys.executable, "-m", "pvestrap.firstboot", "--duration", "1", "--quiet",
             "--state-dir", "/run/pvestrap/firstboot", "--peer-wait", "120", "--turn-wait",
             "180", "--apply-timeout", "180", "--quorum-timeout", "120", "--linger", "120"]
TIMEOUT = 300.0
# One `corosync-quorumtool -s` under load (8+ nodes, N corosyncs and applies on 2 cores) took
# over 10 s; a call that takes longer than this counts as "not quorate yet" and is asked again.
QUORUMTOOL_TIMEOUT = 60.0


def members(lab: Lab, index: int) -> int:
    """How many nodes this node's quorate membership has (0 when not quorate)."""
    try:
        result = lab.exec(index, ["corosync-quorumtool", "-s"], timeout=QUORUMTOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return 0
    if result.returncode != 0:
        return 0
    try:
        status = parse_quorum_status(result.stdout)
    except StatusUnparsable:
        return 0
    return len(status.nodes_only) if status.quorate else 0


def wait_formed(lab: Lab, count: int, started: float, timeout: float = TIMEOUT) -> float:
    """Seconds from STARTED until every node is quorate with COUNT members."""
    pending = set(range(1, count + 1))
    with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
        while pending:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"no quorate {count}-node cluster after {timeout:g} s")
            seen = dict(zip(pending, pool.map(lambda i: members(lab, i), pending)))
            pending = {i for i, n in seen.items() if n < count}
            if pending:
                time.sleep(0.05)
    return time.monotonic() - started


def floor(count: int, links: int) -> float:
    lab = Lab.up(new_prefix("bf"), count, links)
    try:
        lab.write_corosync()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(lambda i: lab.exec(i, ["corosync"], timeout=30),
                                    range(1, count + 1)))
        bad = [r for r in results if r.returncode != 0]
        if bad:
            raise SystemExit(f"corosync did not start: {bad[0].stderr.strip()}")
        return wait_formed(lab, count, started)
    finally:
        teardown.down(lab.prefix)


def run_apply(lab: Lab, index: int, answers: Path, *extra: str) -> subprocess.Popen:
    return lab.popen(index, [*APPLY, "--answers", str(answers), "--node", lab.node(index).name,
                             "--yes", *extra], stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, what: str, timeout: float = TIMEOUT) -> None:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{out[-3000:]}")


def changes(lab: Lab) -> int:
    """Configuration changes made since the create: node 1's config_version - 1."""
    text = lab.node(1).path(COROSYNC_CONF).read_text()
    return (CorosyncConf.parse(text).config_version or 1) - 1


def with_lab(count: int, links: int, tag: str, measure) -> dict:
    lab = Lab.up(new_prefix(tag), count, links)
    try:
        lab.start("sshd")
        with tempfile.TemporaryDirectory() as folder:
            answers = Path(folder) / "answers.toml"
            answers.write_text(dumps(lab.plan()))
            seconds = measure(lab, answers)
        return {"s": round(seconds, 2), "changes": changes(lab)}
    finally:
        teardown.down(lab.prefix)


def together(lab: Lab, answers: Path) -> float:
    count = len(lab.nodes)
    started = time.monotonic()
    finish(run_apply(lab, 1, answers), "apply on n1")
    joiners = {i: run_apply(lab, i, answers, "--batch-wait", "30") for i in range(2, count + 1)}
    with ThreadPoolExecutor(max_workers=len(joiners) or 1) as pool:
        list(pool.map(lambda i: finish(joiners[i], f"apply on n{i}"), joiners))
    return wait_formed(lab, count, started)


def serial(lab: Lab, answers: Path) -> float:
    count = len(lab.nodes)
    started = time.monotonic()
    for index in range(1, count + 1):
        finish(run_apply(lab, index, answers), f"apply on n{index}")
    return wait_formed(lab, count, started, timeout=2 * TIMEOUT)


def firstboot(lab: Lab, answers: Path) -> float:
    count = len(lab.nodes)
    secret.ensure(secret.path_for(answers))  # the cluster's first-boot secret, as iso makes it
    started = time.monotonic()
    procs = {i: lab.popen(i, [*FIRSTBOOT, "--answers", str(answers), "--node",
                              lab.node(i).name], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) for i in range(1, count + 1)}
    try:
        seconds = wait_formed(lab, count, started)
    finally:
        for index, proc in procs.items():  # each lingers until all are members, then exits
            finish(proc, f"first boot of n{index}")
    return seconds


MODES = {"together": together, "serial": serial, "firstboot": firstboot}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 8, 16])
    parser.add_argument("--links", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'nodes':>5} {'links':>5} {'load':>5} {'floor s':>8}  "
          + "  ".join(f"{m + ' s (x, changes)':>28}" for m in args.modes))
    for count in args.nodes:
        for _ in range(args.runs):
            load = os.getloadavg()[0]
            base = floor(count, args.links)
            row = {"nodes": count, "links": args.links, "load1": round(load, 1),
                   "floor_s": round(base, 2)}
            for mode in args.modes:
                got = with_lab(count, args.links, "b" + mode[0], MODES[mode])
                row[mode] = {**got, "ratio": round(got["s"] / base, 2)}
            rows.append(row)
            print(f"{count:>5} {args.links:>5} {load:>5.1f} {base:>8.2f}  " + "  ".join(
                f"{row[m]['s']:>12.2f} (x{row[m]['ratio']:.2f}, {row[m]['changes']:>2})"
                .rjust(28) for m in args.modes), flush=True)
    print(json.dumps({"benchmark": "apply_cluster", "rows": rows}))
    return 0


if __name__ == "__main__":
    guard.run(main)
