"""Forming a cluster with pvestrap, next to the floor: corosync alone forming the same cluster
from hand-written configs, measured in the same run.

    sudo .venv/bin/python benchmarks/apply_cluster.py [--nodes 3 8 16] [--links 2] [--runs 1]
        [--modes together firstboot serial pve] [--pve-release 9] [--log FILE]

For each size N, a fresh lab of N nodes and LINKS links per measurement:

- floor: the lab's hand-written corosync.conf (every node listed) and one authkey go into
  every node, then `corosync` is started in all nodes at once; from the first start until every
  node is quorate with N members.
- together: `pvestrap apply --yes` in node 1 (which creates the cluster) and, once it exits, in
  nodes 2..N at the same time with `--batch-wait 30` (all join in one configuration change:
  pvestrap.apply.batch). sshd runs on every node (not timed).
- serial: the same, nodes 2..N one after the other (one configuration change each); each
  join also next to the join floor (below).
- firstboot: the whole unattended first boot (`python -m pvestrap.firstboot`, 1 s of probe
  sampling) started in every node at once: peer wait, preflight, create, the batched join.
- pve: the pve backend on Proxmox VE's real cluster stack (`Lab.up(pve=...)`: real pmxcfs,
  Perl pvecm, corosync): `apply --yes` on node 1 (pvecm create), then on nodes 2..N one at a
  time (pvecm add --use_ssh 1), each join timed; next to two floors, each on a fresh lab:
  - pvecm by hand: what an admin gets on the same stack without pvestrap: `pvecm create` on
    node 1, then `pvecm add <node 1> --use_ssh 1 --link0 .. --link1 ..` on nodes 2..N one at
    a time, each from its start until nodes 1..K are quorate with K members (the next join
    starts once the previous pvecm add ended and node 1's pmxcfs says quorate, not timed).
  - join floor: corosync alone adding node K to a running K-1 node cluster (the K-node
    corosync.conf written into nodes 1..K, `corosync-cfgtool -R`, `corosync` started in node
    K) until all K are quorate.

What is timed: `total` from the first command's start until every node is quorate with all
members. `forming` leaves out each command's Python start-up and its preflight: the clock
starts when the preflight passed, as the command says it (apply's "preflight: N results, 0 FAIL"
line, first boot's "preflight passed"; benchmarks/timeline.py stamps lines as they arrive).
firstboot: forming = quorate - the last node's preflight passed (the creator waits for every
node's preflight anyway). together and serial: the sum, over the commands in the order they
ran, of (its end - its preflight passed), the last one ending when the cluster is quorate (the
create's own work counts; the joiners' start-up and preflight do not); serial per join K, the
same for its command alone (it ends quorate with K). pve: per join, quorate with K members -
the joiner's preflight passed. Every apply and first boot runs its real preflight: nothing is
skipped.

Targets (issue 14): forming within 1.5x of the floor (together, firstboot), the whole first
boot within 2.5x, joins one at a time within 2x per join: the pve backend against pvecm by
hand (Proxmox's `pvecm add` alone takes 3-4x corosync's join, so against the corosync join
floor the ratio would measure Proxmox, not pvestrap; that ratio is printed too), serial against
the corosync join floor. Prints a table and a JSON line; exit 0 when every target is met, 3
when one is missed, 1 with the reason when it cannot measure (benchmarks/guard.py), never a
traceback. Timeouts, stated: a whole apply, first boot or cluster formation 300 s, one
`corosync-quorumtool -s` 60 s (a slower answer counts as not quorate yet), starting corosync
30 s. All nodes of a lab share this machine's CPUs: N applies and N preflights starting at once
compete for them, which real machines would not. Labs are removed afterwards, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pvestrap.answers import dumps
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.firstboot import secret
from pvestrap.lab import files, teardown
from pvestrap.lab.hostcheck import new_prefix, unavailable
from pvestrap.lab.lab import Lab
from pvestrap.paths import COROSYNC_CONF, PVE_MEMBERS

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback
from timeline import APPLY_PASSED, FIRSTBOOT_PASSED, POLL_S, Timed, wait_quorate

APPLY = [sys.executable, "-m", "pvestrap", "apply"]
FIRSTBOOT = [sys.executable, "-m", "pvestrap.firstboot", "--duration", "1", "--quiet",
             "--state-dir", "/run/pvestrap/firstboot", "--peer-wait", "120", "--turn-wait",
             "180", "--apply-timeout", "180", "--quorum-timeout", "120", "--linger", "120"]
TIMEOUT = 300.0
LOG: list[str] = []


def deadline(seconds: float = TIMEOUT) -> float:
    return time.monotonic() + seconds


def start_corosync(lab: Lab, nodes: list[int]) -> None:
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        results = list(pool.map(lambda i: lab.exec(i, ["corosync"], timeout=30), nodes))
    bad = [r for r in results if r.returncode != 0]
    if bad:
        raise SystemExit(f"corosync did not start: {bad[0].stderr.strip()}")


def floor(count: int, links: int) -> float:
    lab = Lab.up(new_prefix("bf"), count, links)
    try:
        lab.write_corosync()
        started = time.monotonic()
        start_corosync(lab, list(range(1, count + 1)))
        return wait_quorate(lab, range(1, count + 1), deadline()) - started
    finally:
        teardown.down(lab.prefix)


def join_floor(count: int, links: int) -> list[float]:
    """Corosync alone growing a cluster one node at a time: the seconds of each join, from
    writing the K-node config until nodes 1..K are quorate with K members."""
    lab = Lab.up(new_prefix("bj"), count, links)
    try:
        running_alone(lab)
        return [added(lab, k, [k], links) for k in range(2, count + 1)]
    finally:
        teardown.down(lab.prefix)


def batch_floor(count: int, links: int) -> float:
    """Corosync alone doing what a batched join does: nodes 2..N added to node 1, running
    alone and quorate, in one reload, then started at once (a running ring waits out its
    token before the new membership forms; fresh daemons, the floor, do not)."""
    lab = Lab.up(new_prefix("bb"), count, links)
    try:
        running_alone(lab)
        return added(lab, count, list(range(2, count + 1)), links)
    finally:
        teardown.down(lab.prefix)


def running_alone(lab: Lab) -> None:
    lab.write_corosync([1])
    start_corosync(lab, [1])
    wait_quorate(lab, [1], deadline())


def added(lab: Lab, count: int, new: list[int], links: int) -> float:
    """Seconds from writing the config of nodes 1..COUNT (node 1's authkey to the NEW ones, a
    reload on node 1, NEW started at once) until nodes 1..COUNT are quorate together."""
    members = list(range(1, count + 1))
    started = time.monotonic()
    conf = files.corosync_conf(lab.state.layout, members, links,
                               config_version=count).replace("  two_node: 1\n", "")
    for index in members:
        lab.node(index).path(COROSYNC_CONF).write_text(conf)
    key = lab.node(1).path("/etc/corosync/authkey").read_bytes()
    for index in new:
        authkey = lab.node(index).path("/etc/corosync/authkey")
        authkey.unlink(missing_ok=True)
        fd = os.open(authkey, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
    reload = lab.exec(1, ["corosync-cfgtool", "-R"], timeout=60)
    if reload.returncode != 0:
        raise SystemExit(f"corosync-cfgtool -R failed: {reload.stderr.strip()}")
    start_corosync(lab, new)
    return wait_quorate(lab, members, deadline()) - started


def apply(lab: Lab, index: int, answers: Path, *extra: str) -> Timed:
    return Timed(lab.popen(index, [*APPLY, "--answers", str(answers), "--node",
                                   lab.node(index).name, "--yes", *extra],
                           stdout=-1, stderr=-2, text=True), f"apply on n{index}")


def changes(lab: Lab) -> int:
    """Configuration changes made since the create: node 1's config_version - 1."""
    text = lab.node(1).path(COROSYNC_CONF).read_text()
    return (CorosyncConf.parse(text).config_version or 1) - 1


def with_lab(count: int, links: int, tag: str, measure: Callable, pve: str | None = None
             ) -> dict:
    lab = Lab.up(new_prefix(tag), count, links, pve=pve)
    try:
        if pve is None:
            lab.start("sshd")
        with tempfile.TemporaryDirectory() as folder:
            answers = Path(folder) / "answers.toml"
            answers.write_text(dumps(lab.plan()))
            got = measure(lab, answers)
        return {**got, "changes": changes(lab)}
    finally:
        teardown.down(lab.prefix)


def logged(zero: float, runs: list[Timed], label: str, quorate: float) -> None:
    LOG.append(f"--- {label}")
    lines = [(t, n, line) for n, run in enumerate(runs) for t, line in run.log(zero)]
    LOG.extend(line for _, _, line in sorted(lines, key=lambda x: (x[0], x[1])))
    LOG.append(f"{quorate - zero:8.2f} quorate with all members")


def together(lab: Lab, answers: Path) -> dict:
    count = len(lab.nodes)
    started = time.monotonic()
    first = apply(lab, 1, answers)
    first.finish(TIMEOUT)
    joiners = [apply(lab, i, answers, "--batch-wait", "30") for i in range(2, count + 1)]
    quorate = wait_quorate(lab, range(1, count + 1), deadline(), joiners)
    for run in joiners:
        run.finish(TIMEOUT)
    logged(started, [first, *joiners], f"together, {count} nodes", quorate)
    passed = max(run.last(APPLY_PASSED) for run in joiners)
    return {"total": quorate - started, "passed": passed - started,
            "forming": (first.exited - first.last(APPLY_PASSED)) + (quorate - passed)}


def serial(lab: Lab, answers: Path) -> dict:
    """Nodes 1..N one after the other; per join K, forming = its end (quorate with K, the
    last one: the moment the benchmark saw it) - its preflight passed."""
    count = len(lab.nodes)
    started = time.monotonic()
    runs: list[Timed] = []
    ends = []
    for index in range(1, count + 1):
        runs.append(apply(lab, index, answers))
        if index < count:
            runs[-1].finish(TIMEOUT)
            ends.append(runs[-1].exited)
    quorate = wait_quorate(lab, range(1, count + 1), deadline(), runs[-1:])
    runs[-1].finish(TIMEOUT)
    ends.append(quorate)
    logged(started, runs, f"serial, {count} nodes", quorate)
    each = [end - run.last(APPLY_PASSED) for run, end in zip(runs, ends)]
    return {"total": quorate - started, "passed": runs[-1].last(APPLY_PASSED) - started,
            "forming": sum(each), "join_forming": each[1:],
            "join_total": [end - run.started for run, end in zip(runs[1:], ends[1:])]}


def firstboot(lab: Lab, answers: Path) -> dict:
    count = len(lab.nodes)
    secret.ensure(secret.path_for(answers))  # the cluster's first-boot secret, as iso makes it
    started = time.monotonic()
    runs = [Timed(lab.popen(i, [*FIRSTBOOT, "--answers", str(answers), "--node",
                                lab.node(i).name], stdout=-1, stderr=-2, text=True),
                  f"first boot of n{i}") for i in range(1, count + 1)]
    try:
        quorate = wait_quorate(lab, range(1, count + 1), deadline(), runs)
    finally:
        for run in runs:  # each lingers until all are members, then exits
            run.finish(TIMEOUT)
    logged(started, runs, f"firstboot, {count} nodes", quorate)
    passed = max(run.last(FIRSTBOOT_PASSED) for run in runs)
    return {"total": quorate - started, "passed": passed - started, "forming": quorate - passed}


def pve_joins(lab: Lab, answers: Path) -> dict:
    """pvecm create on node 1, then each joiner alone: per join, forming (quorate with K -
    its preflight passed) and total (quorate with K - its start)."""
    count = len(lab.nodes)
    started = time.monotonic()
    first = apply(lab, 1, answers)
    first.finish(TIMEOUT)
    runs, forming, total = [first], [], []
    for k in range(2, count + 1):
        run = apply(lab, k, answers)
        runs.append(run)
        quorate = wait_quorate(lab, range(1, k + 1), deadline(), [run])
        run.finish(TIMEOUT)
        forming.append(quorate - run.last(APPLY_PASSED))
        total.append(quorate - run.started)
    logged(started, runs, f"pve, {count} nodes", quorate)
    return {"create": first.exited - first.started, "join_forming": forming,
            "join_total": total}


def cfs_writable(lab: Lab, index: int, until: float) -> None:
    """Wait until the node's pmxcfs says quorate (/etc/pve takes writes again; right after a
    create or join it follows corosync's quorum by a few seconds): what an admin, or pvestrap's
    own quorum wait, waits for before the next join."""
    members = lab.node(index).path(PVE_MEMBERS)
    while time.monotonic() < until:
        try:
            if json.loads(members.read_text()).get("cluster", {}).get("quorate") == 1:
                return
        except (OSError, ValueError, AttributeError):
            pass
        time.sleep(POLL_S)
    raise SystemExit(f"n{index}'s pmxcfs did not say quorate in time ({PVE_MEMBERS})")


def pvecm_by_hand(lab: Lab, answers: Path) -> dict:
    """The admin's floor on the pve backend, without pvestrap: `pvecm create` on node 1, then
    `pvecm add <node 1> --use_ssh 1` (with each node's link addresses) on nodes 2..N one at a
    time. Per join: from pvecm add's start until nodes 1..K are quorate with K members (the
    stopping rule of pvestrap's rows); then, not timed, pvecm add's own end (certificates) and
    node 1's pmxcfs quorate again, as before pvestrap's next join."""
    count, name = len(lab.nodes), lab.plan().cluster_name

    def pvecm(index: int, *argv: str) -> Timed:
        node = lab.node(index)
        links = [x for k in sorted(node.addresses) for x in (f"--link{k}", node.address(k))]
        return Timed(lab.popen(index, ["pvecm", *argv, *links], stdout=-1, stderr=-2,
                               text=True), f"pvecm {argv[0]} on n{index}")

    started = time.monotonic()
    runs = [pvecm(1, "create", name)]
    runs[0].finish(TIMEOUT)
    create = runs[0].exited - runs[0].started
    seconds = []
    for k in range(2, count + 1):
        cfs_writable(lab, 1, deadline())
        runs.append(pvecm(k, "add", lab.node(1).name, "--use_ssh", "1"))
        quorate = wait_quorate(lab, range(1, k + 1), deadline(), runs[-1:])
        seconds.append(quorate - runs[-1].started)
        runs[-1].finish(TIMEOUT)
    logged(started, runs, f"pvecm by hand, {count} nodes", quorate)
    return {"create": create, "join_pvecm": seconds}


MODES = {"together": together, "serial": serial, "firstboot": firstboot, "pve": pve_joins}


def ratio(value: float, base: float) -> float:
    return round(value / base, 2) if base > 0 else float("inf")


def per_join(count: int, floors: list[float], got: dict, by_hand: list[float] | None
             ) -> list[dict]:
    """One entry per join K: the corosync join floor, the by-hand pvecm floor (pve), pvestrap's
    forming and total, each ratio against the floor the target is judged by (by hand where
    measured, else the corosync join floor) and forming against the corosync join floor."""
    out = []
    for n, k in enumerate(range(2, count + 1)):
        forming, total = got["join_forming"][n], got["join_total"][n]
        judge = by_hand[n] if by_hand else floors[n]
        row = {"k": k, "floor": round(floors[n], 2), "forming": round(forming, 2),
               "total": round(total, 2), "forming_x": ratio(forming, judge),
               "total_x": ratio(total, judge), "floor_x": ratio(forming, floors[n])}
        if by_hand:
            row.update(pvecm=round(by_hand[n], 2), pvecm_floor_x=ratio(by_hand[n], floors[n]))
        out.append(row)
    return out


def loaded(measure: Callable, *args) -> tuple:
    """MEASURE(*ARGS)'s result and the load average (1 min) when it started."""
    load = os.getloadavg()[0]
    return measure(*args), round(load, 1)


def measure_size(count: int, args) -> Iterator[dict]:
    """One row per mode for COUNT nodes (each on a fresh lab), the floors measured first;
    yielded as measured, so that a later mode that cannot measure does not lose them."""
    base = joins = batch = None
    plain = [m for m in args.modes if m != "pve"]
    if plain:
        base, load = loaded(floor, count, args.links)
        yield {"nodes": count, "mode": "floor", "load1": load, "total": round(base, 2)}
    batched = [m for m in plain if m in ("together", "firstboot")]
    if batched:
        batch, load = loaded(batch_floor, count, args.links)
        yield {"nodes": count, "mode": "batchfloor", "load1": load, "total": round(batch, 2)}
    if "serial" in args.modes or "pve" in args.modes:
        joins, load = loaded(join_floor, count, args.links)
        yield {"nodes": count, "mode": "joinfloor", "load1": load,
               "joins": [round(f, 2) for f in joins]}
    for mode in plain:
        got, load = loaded(with_lab, count, args.links, "b" + mode[0], MODES[mode])
        row = {"nodes": count, "mode": mode, "load1": load, "floor": round(base, 2),
               **{k: round(v, 2) for k, v in got.items() if not k.startswith("join_")},
               "forming_x": ratio(got["forming"], base), "total_x": ratio(got["total"], base)}
        if mode in batched:  # shown, not judged: the target is the cold floor
            row["forming_x_batch"] = ratio(got["forming"], batch)
        if mode == "serial":
            row["joins"] = per_join(count, joins, got, None)
        yield row
    if "pve" in args.modes:
        release = args.pve_release
        hand, load = loaded(with_lab, count, args.links, "bh", pvecm_by_hand, release)
        yield {"nodes": count, "mode": f"pvecm{release}", "load1": load,
               "create": round(hand["create"], 2), "joins": [round(f, 2) for f in
                                                             hand["join_pvecm"]]}
        got, load = loaded(with_lab, count, args.links, "bp", pve_joins, release)
        yield {"nodes": count, "mode": f"pve{release}", "load1": load,
               "create": round(got["create"], 2), "changes": got["changes"],
               "joins": per_join(count, joins, got, hand["join_pvecm"])}


def missed(row: dict) -> list[str]:
    """The targets this row misses, as words."""
    out = []
    mode = row["mode"]
    if mode in ("together", "firstboot") and row["forming_x"] > 1.5:
        out.append(f"{mode} forming x{row['forming_x']:.2f} > 1.5")
    if mode == "firstboot" and row["total_x"] > 2.5:
        out.append(f"firstboot total x{row['total_x']:.2f} > 2.5")
    if mode == "serial" or (mode.startswith("pve") and not mode.startswith("pvecm")):
        against = "the corosync join floor" if mode == "serial" else "pvecm by hand"
        out += [f"{mode} join {j['k']} x{j['forming_x']:.2f} of {against} > 2"
                for j in row["joins"] if j["forming_x"] > 2.0]
    return out


def show_joins(row: dict) -> None:
    pve = row["mode"].startswith("pve")
    judged = "pvecm by hand" if pve else "join floor"
    print(f"{'':>21} per join: corosync join floor{', pvecm by hand' if pve else ''}, "
          f"forming (x{' pvecm by hand, x' if pve else ''} join floor), total (x {judged})",
          flush=True)
    for j in row["joins"]:
        hand = f"{j['pvecm']:>6.2f} s (x{j['pvecm_floor_x']:.2f})  " if pve else ""
        judged = f"x{j['forming_x']:.2f} " if pve else ""
        print(f"{'':>21} join {j['k']:>2}: {j['floor']:>6.2f} s  {hand}{j['forming']:>6.2f} s "
              f"{judged}x{j['floor_x']:.2f}  {j['total']:>6.2f} s x{j['total_x']:.2f}",
              flush=True)


def show(row: dict) -> None:
    head = f"{row['nodes']:>5} {row['mode']:>9} {row['load1']:>5.1f}"
    if row["mode"] == "floor":
        print(f"{head} {row['total']:>8.2f}", flush=True)
    elif row["mode"] == "batchfloor":
        print(f"{head} corosync alone adding node 2..N to a running node 1 in one reload: "
              f"{row['total']:.2f} s", flush=True)
    elif row["mode"] == "joinfloor":
        print(f"{head} corosync alone adding node 2..N: "
              + ", ".join(f"{f:.2f}" for f in row["joins"]) + " s", flush=True)
    elif row["mode"].startswith("pvecm"):
        print(f"{head} by hand: pvecm create {row['create']:.2f} s, pvecm add until quorate: "
              + ", ".join(f"{f:.2f}" for f in row["joins"]) + " s", flush=True)
    elif row["mode"].startswith("pve"):
        print(f"{head} {'':>8} create {row['create']:.2f} s, then one join at a time:",
              flush=True)
        show_joins(row)
    else:
        print(f"{head} {row['floor']:>8.2f} {row['passed']:>10.2f} "
              f"{row['forming']:>8.2f} x{row['forming_x']:<5.2f} "
              f"{row['total']:>8.2f} x{row['total_x']:<5.2f} {row['changes']:>7}"
              + (f"  forming x{row['forming_x_batch']:.2f} of the batch floor"
                 if "forming_x_batch" in row else ""), flush=True)
        if "joins" in row:
            show_joins(row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 8, 16])
    parser.add_argument("--links", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=list(MODES),
                        default=["together", "firstboot", "pve"])
    parser.add_argument("--pve-release", choices=["8", "9"], default="9")
    parser.add_argument("--log", help="write every command's output lines, stamped, here")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    print(f"{'nodes':>5} {'mode':>9} {'load':>5} {'floor s':>8} {'pf passed':>10} "
          f"{'forming s':>8} {'(x)':<6} {'total s':>8} {'(x)':<6} {'changes':>7}")
    rows = []
    try:
        for count in args.nodes:
            for _ in range(args.runs):
                for row in measure_size(count, args):
                    show(row)
                    rows.append(row)
    finally:
        if args.log:
            Path(args.log).write_text("\n".join(LOG) + "\n")
    misses = [m for row in rows for m in missed(row)]
    print(json.dumps({"benchmark": "apply_cluster", "rows": rows, "missed": misses}))
    print("targets: " + ("all met" if not misses else "missed: " + "; ".join(misses)))
    return 3 if misses else 0


if __name__ == "__main__":
    guard.run(main)
