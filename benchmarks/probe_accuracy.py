"""How close our probes' RTT is to iputils `ping` on the same lab path (target: within 5 % or
50 us), and how long one node takes to probe many peers at once.

    sudo .venv/bin/python benchmarks/probe_accuracy.py [--delays 0,0.5,1.5,3] [--count 100]
                                                        [--fanout 16]

Accuracy: a 2-node lab; for each delay D the lab's forwarder holds frames leaving and entering
node 2's eth0 for D ms (so the round trip gains 2 D). Node 1 then measures node 2 with our
prober (COUNT probes, 20 ms apart, through `pvestrap responder` on node 2) and with `ping`
(COUNT echoes, 20 ms apart), one right after the other, and the medians are printed side by
side. Fan-out: a lab of FANOUT + 1 nodes and 2 links; node 1 probes every other node on both
links and both ports (FANOUT x 4 targets) with a fixed probe count; prints the wall time.
Exits 1 if an accuracy row misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import statistics
import subprocess
import sys
import time

from pvestrap.checks import prober
from pvestrap.checks.probe import TOKEN_ENV, new_token
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import new_prefix, unavailable

import guard  # benchmarks/guard.py: why a benchmark could not measure, no traceback

CLI = [sys.executable, "-c", "import sys; from pvestrap.cli import main; sys.exit(main())"]
INTERVAL_S = 0.02


def start_responders(lab: Lab, nodes, token: str, ports=(5404, 5405, 5406)) -> list:
    procs = []
    for node in nodes:
        argv = CLI + ["responder", "--ttl", "600", "--rate", "1000"]
        for port in ports:
            argv += ["-p", str(port)]
        proc = lab.popen(node, argv, env={TOKEN_ENV: token}, stderr=subprocess.PIPE)
        procs.append(proc)
    for proc in procs:
        _wait_ready(proc, 2 * len(ports))
    return procs


def _wait_ready(proc, endpoints: int) -> None:
    text, fd, deadline = "", proc.stderr.fileno(), time.monotonic() + 60
    while text.count("listening") < endpoints:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536).decode() if ready else ""
        if not chunk:
            raise SystemExit(f"responder did not start: {text}")
        text += chunk


def run_prober(lab: Lab, node, request: prober.ProbeRequest, token: str) -> prober.Measurements:
    done = lab.exec(node, [sys.executable, "-m", "pvestrap.checks.prober"],
                    input=json.dumps(request.to_dict()), env={TOKEN_ENV: token})
    if done.returncode:
        raise SystemExit(f"prober failed: {done.stderr}")
    return prober.Measurements.from_dict(json.loads(done.stdout))


def ping_median(lab: Lab, node, address: str, count: int) -> float:
    out = lab.exec(node, ["ping", "-n", "-c", str(count), "-i", str(INTERVAL_S), address]).stdout
    times = [float(t) for t in re.findall(r"time=([\d.]+) ms", out)]
    if not times:
        raise SystemExit(f"ping got no answer: {out}")
    return statistics.median(times)


def accuracy(delays: list[float], count: int) -> bool:
    token = new_token().secret.decode()
    lab = Lab.up(new_prefix("bp"), nodes=2, links=1)
    procs = []
    ok = True
    try:
        procs = start_responders(lab, ["n2"], token, ports=(5405,))
        target = prober.Target(lab.node(2).name, 0, 5405, "10.254.0.2", "10.254.0.1")
        settings = prober.ProbeSettings(duration_s=count * INTERVAL_S, interval_s=INTERVAL_S,
                                        mtu=False, icmp=False)
        print(f"{'delay/dir':>9} {'RTT+':>6} {'ours ms':>9} {'ping ms':>9} {'diff us':>8} "
              f"{'ratio':>6}  verdict (within 5 % or 50 us)")
        for delay in delays:
            lab.impair(clear=True, **({"delay": f"n2:eth0={delay}ms"} if delay else {}))
            found = run_prober(lab, "n1", prober.ProbeRequest("n1", (target,), settings=settings),
                               token)
            ours = statistics.median(found.udp[0].rtts_ms)
            ping = ping_median(lab, "n1", "10.254.0.2", count)
            diff = (ours - ping) * 1000
            good = abs(diff) <= 50 or abs(ours / ping - 1) <= 0.05
            ok &= good
            print(f"{delay:>7.2f}ms {2 * delay:>4.1f}ms {ours:>9.3f} {ping:>9.3f} {diff:>+8.1f} "
                  f"{ours / ping:>6.3f}  {'ok' if good else 'MISSED'}")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        lab.down()
    return ok


def fanout(peers: int, count: int) -> None:
    token = new_token().secret.decode()
    lab = Lab.up(new_prefix("bf"), nodes=peers + 1, links=2)
    procs = []
    try:
        procs = start_responders(lab, [f"n{i}" for i in range(2, peers + 2)], token)
        settings = prober.ProbeSettings(duration_s=count * 0.05, interval_s=0.05, icmp=False)
        request = prober.request_from_plan(lab.plan(), lab.node(1).name, settings)
        start = time.perf_counter()
        found = run_prober(lab, "n1", request, token)
        wall = time.perf_counter() - start
        answered = sum(r.state == "open" for r in found.udp)
        print(f"fan-out: {len(found.udp)} targets ({peers} peers x 2 links x 2 ports), "
              f"{count} probes each, {len(found.mtu)} MTU searches: measure() took "
              f"{found.duration_s:.2f} s (process wall {wall:.2f} s); "
              f"{answered}/{len(found.udp)} open")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delays", default="0,0.5,1.5,3",
                        help="per-direction delays in ms, comma-separated")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--fanout", type=int, default=16,
                        help="peers for the fan-out run (0: skip)")
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    ok = accuracy([float(d) for d in args.delays.split(",")], args.count)
    if args.fanout:
        fanout(args.fanout, 20)
    return 0 if ok else 1


if __name__ == "__main__":
    guard.run(main)
