"""Time from `pvestrap apply` on the first node to a quorate cluster, next to the floor: corosync
alone forming the same cluster from hand-written configs, measured in the same run.

    sudo .venv/bin/python benchmarks/apply_cluster.py [--nodes 3 8] [--links 2] [--runs 1]

For each size N, two fresh labs of N nodes and LINKS links:

- floor: the lab's hand-written corosync.conf (every node listed) and one authkey go into
  every node, then `corosync` is started in all nodes at once; the clock runs from the first
  start until every node is quorate with N members.
- apply: sshd runs on every node (not timed); the clock runs from starting `pvestrap apply
  --yes` in node 1 (which creates the cluster) and, once it exits, in nodes 2..N at the same
  time (they join one after the other under the member's lock) until every node is quorate
  with N members. Every apply runs the real preflight first, like the first-boot hook does.

Prints one row per size and run (floor, apply, ratio, the create's share, the joins' summed waits
for quorum (corosync's own share: knet link-up and membership, paid once per join since joins are
serialized), their summed member updates over ssh, and when each join finished) and a JSON summary
line. Timeouts, stated: a whole apply or cluster formation 300 s, one `corosync-quorumtool -s` 60 s
(a slower answer counts as not quorate yet), starting corosync 30 s; a benchmark that cannot measure
says why and exits 1 (benchmarks/guard.py). All nodes of a lab share this machine's CPUs: N applies
and N preflights starting at once compete for them, which real machines would not. Labs are removed
afterwards, also on errors.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvestrap.answers import dumps
from pvestrap.corosync.status import StatusUnparsable, parse_quorum_status
from pvestrap.lab import teardown
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import new_prefix, unavailable

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

APPLY = [sys.executable, "-m", "pvestrap", "apply"]
TIMEOUT = 300.0
# One `corosync-quorumtool -s` under load (8+ nodes, N corosyncs and applies on 2 cores) took
# over 10 s; a call that takes longer than this counts as "not quorate yet" and is asked again.
QUORUMTOOL_TIMEOUT = 60.0
STEP_TIME = re.compile(r"^\[applied\] (\S+) \(([0-9.]+) s\)", re.MULTILINE)


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


def wait_formed(lab: Lab, count: int, started: float) -> float:
    """Seconds from STARTED until every node is quorate with COUNT members."""
    pending = set(range(1, count + 1))
    with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
        while pending:
            if time.monotonic() - started > TIMEOUT:
                raise SystemExit(f"no quorate {count}-node cluster after {TIMEOUT:g} s")
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


def run_apply(lab: Lab, index: int, answers: Path) -> subprocess.Popen:
    return lab.popen(index, [*APPLY, "--answers", str(answers), "--node", lab.node(index).name,
                             "--yes"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     text=True)


def finish(proc: subprocess.Popen, what: str) -> dict[str, float]:
    """Wait for an apply; return how long each of its steps took (its progress lines)."""
    out, _ = proc.communicate(timeout=TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{out}")
    return {m.group(1): float(m.group(2)) for m in STEP_TIME.finditer(out)}


def applied(count: int, links: int) -> dict:
    lab = Lab.up(new_prefix("ba"), count, links)
    try:
        lab.start("sshd")
        with tempfile.TemporaryDirectory() as folder:
            answers = Path(folder) / "answers.toml"
            answers.write_text(dumps(lab.plan()))
            started = time.monotonic()
            finish(run_apply(lab, 1, answers), "apply on n1")
            created = time.monotonic() - started
            joiners = {i: run_apply(lab, i, answers) for i in range(2, count + 1)}

            def done(index: int) -> tuple[float, dict[str, float]]:
                steps = finish(joiners[index], f"apply on n{index}")
                return round(time.monotonic() - started, 2), steps

            with ThreadPoolExecutor(max_workers=len(joiners) or 1) as pool:
                results = list(pool.map(done, joiners))
            total = wait_formed(lab, count, started)
        joined = sorted(at for at, _ in results)
        steps = [s for _, s in results]
        return {"apply_s": round(total, 2), "create_s": round(created, 2),
                "joins_done_s": joined,
                # corosync's own share: the joiners' waits for quorum (knet link-up, membership)
                "join_quorum_waits_s": round(sum(s.get("wait-quorum", 0) for s in steps), 2),
                "join_member_updates_s": round(sum(s.get("update-members", 0) for s in steps), 2)}
    finally:
        teardown.down(lab.prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 8])
    parser.add_argument("--links", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    rows = []
    print(f"{'nodes':>5} {'links':>5} {'floor s':>8} {'apply s':>8} {'ratio':>6} "
          f"{'create s':>8} {'waits s':>8} {'updates s':>9}  joins done at (s)")
    for count in args.nodes:
        for _ in range(args.runs):
            base = floor(count, args.links)
            got = applied(count, args.links)
            row = {"nodes": count, "links": args.links, "floor_s": round(base, 2), **got,
                   "ratio": round(got["apply_s"] / base, 2)}
            rows.append(row)
            print(f"{count:>5} {args.links:>5} {row['floor_s']:>8.2f} {row['apply_s']:>8.2f} "
                  f"{row['ratio']:>6.2f} {row['create_s']:>8.2f} "
                  f"{row['join_quorum_waits_s']:>8.2f} {row['join_member_updates_s']:>9.2f}  "
                  f"{row['joins_done_s']}",
                  flush=True)
    print(json.dumps({"benchmark": "apply_cluster", "rows": rows}))
    return 0


if __name__ == "__main__":
    guard.run(main)
