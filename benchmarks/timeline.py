"""When things happened in a lab: output lines stamped as they arrive, and the moment a set of
nodes is quorate with all its members (benchmarks/apply_cluster.py).

Times are time.monotonic() of this process. A line is stamped when this process reads it from
the pipe: pvestrap flushes every progress line as it prints it (click.echo; first boot's
say_line), so the stamp is when the line was printed, plus the pipe's latency.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterable

from pvestrap.corosync.status import StatusUnparsable, parse_quorum_status
from pvestrap.lab.lab import Lab

# One `corosync-quorumtool -s` under load (8+ nodes, N corosyncs and applies on 2 cores) took
# over 10 s; a call that takes longer than this counts as "not quorate yet" and is asked again.
QUORUMTOOL_TIMEOUT = 60.0
POLL_S = 0.05

# The moment a node's preflight passed, as the command itself says it: `pvestrap apply` prints
# "preflight: N results, 0 FAIL, M WARN" once its gate passed (apply.flow.gate; a FAIL raises
# right after the line), first boot prints "preflight passed" (firstboot.flow._preflight).
APPLY_PASSED = re.compile(r"^preflight: \d+ results, 0 FAIL, \d+ WARN$")
FIRSTBOOT_PASSED = re.compile(r"^preflight passed$")


class Timed:
    """A started process whose stdout lines are stamped as they arrive (read by a thread)."""

    def __init__(self, proc: subprocess.Popen, name: str):
        self.proc, self.name = proc, name
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.ended: float | None = None  # its stdout closed
        self.exited: float | None = None  # finish() saw it exit
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self.ended = time.monotonic()

    def finish(self, timeout: float) -> None:
        """Wait for the process; SystemExit naming it and its output's tail when it failed."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._reader.join(5)
            raise SystemExit(f"{self.name} did not finish within {timeout:g} s:\n"
                             f"{self.tail()}") from None
        self.exited = time.monotonic()
        self._reader.join(30)
        self.check()

    def check(self) -> None:
        """SystemExit naming it and its output's tail when it exited with an error."""
        code = self.proc.poll()
        if code:
            self._reader.join(5)
            raise SystemExit(f"{self.name} failed (exit {code}):\n{self.tail()}")

    def tail(self, count: int = 40) -> str:
        return "\n".join(line for _, line in self.lines[-count:])

    def last(self, pattern: re.Pattern[str]) -> float:
        """When the last line matching PATTERN arrived; SystemExit when none did."""
        found = [t for t, line in self.lines if pattern.search(line)]
        if not found:
            raise SystemExit(f"{self.name}: no line matching {pattern.pattern!r} in its "
                             f"output, so the benchmark cannot tell when its preflight passed:"
                             f"\n{self.tail()}")
        return found[-1]

    def log(self, zero: float) -> list[tuple[float, str]]:
        """Its lines with seconds since ZERO (for --log), diffs left out."""
        return [(t, f"{t - zero:8.2f} {self.name}: {line}") for t, line in self.lines
                if not line.startswith(("+", "-", "@@", " "))]


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


def wait_quorate(lab: Lab, nodes: Iterable[int], deadline: float,
                 watch: Iterable[Timed] = ()) -> float:
    """The moment every node of NODES is quorate with all of them as members. One node is asked
    until it says so (N pollers at once would take the CPU the cluster forms with); then each
    other node once, and again until it says so too (a node that did only then moves the
    moment later). The moment is when the answer arrived. SystemExit after DEADLINE
    (monotonic), or at once when a process of WATCH failed."""
    watched = list(watch)
    wanted = list(nodes)
    seen = 0.0
    for index in wanted:
        first = True
        while members(lab, index) < len(wanted):
            first = False
            for proc in watched:
                proc.check()
            if time.monotonic() > deadline:
                raise SystemExit(f"no quorate {len(wanted)}-node cluster in time (n{index} "
                                 "does not say so)")
            time.sleep(POLL_S)
        if not first or not seen:
            seen = time.monotonic()
    return seen
