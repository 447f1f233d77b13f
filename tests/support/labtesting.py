"""The `lab` pytest fixture: a factory of labs with unique names, always torn down, and helpers
for watching a lab cluster in lab tests.

    @pytest.mark.lab
    def test_something(lab):
        two = lab(nodes=2, links=1, delay="n2:eth0=1ms")
        two.exec("n1", ["ping", "-c1", two.node(2).name])

Each lab gets a fresh random prefix, so parallel runs and leftovers of killed runs never collide.
Everything the test built is removed when it ends, passed or failed; a failed test's report
shows its labs' status and log tails first. Without root or without namespaces the test is
skipped with the reason; as root (CI) lab tests run. tests/conftest.py registers the fixture and
its report hook; pytest finds this module through `pythonpath` in pyproject.toml.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import PvestrapError
from pvestrap.lab import teardown
from pvestrap.lab.hostcheck import diagnose, new_prefix, pve_unavailable, unavailable
from pvestrap.lab.lab import Lab
from pvestrap.paths import COROSYNC_CONF

@pytest.fixture
def lab(request):
    """Factory: lab(nodes=3, links=1, **impairment flags) -> Lab; all removed afterwards."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    made: list[str] = []
    request.node.lab_prefixes = made

    def factory(nodes: int = 3, links: int = 1, prefix: str | None = None,
                qnetd: bool = False, **flags) -> Lab:
        why = pve_unavailable(flags["pve"]) if flags.get("pve") else None
        if why:
            pytest.skip(why)
        name = prefix or new_prefix()
        made.append(name)
        return Lab.up(name, nodes, links, qnetd=qnetd, **flags)

    yield factory
    for name in reversed(made):
        teardown.down(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report gets its labs' status and log tails, taken before the fixture
    removes them (register this hook next to the fixture in a conftest)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in getattr(item, "lab_prefixes", ()):
            report.sections.append((f"lab {name}", diagnose(name)))


def ping_times(lab: Lab, src, dst: str, count: int, interval: float = 0.02,
               quiet: bool = False) -> tuple[list[float], float]:
    """(round-trip times in ms, loss in percent) of `ping` from node SRC to DST."""
    argv = ["ping", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "1", dst]
    out = lab.exec(src, argv, timeout=count * interval + 30).stdout
    times = [float(m) for m in re.findall(r"time=([0-9.]+) ms", out)]
    loss = re.search(r"([0-9.]+)% packet loss", out)
    if loss is None:
        raise AssertionError(f"ping printed no summary:\n{out}")
    return times, float(loss.group(1))


# -- watching a lab cluster while it changes ------------------------------------------------------

def members(lab, node) -> int:
    out = lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
    if not re.search(r"^Quorate:\s+Yes", out, re.M):
        return 0
    return int(re.search(r"^Nodes:\s+(\d+)", out, re.M).group(1))


def wait(check, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


class QuorumWatcher:
    """corosync-quorumtool -s inside a node every 100 ms; keeps every sample that was not
    quorate with all NODES nodes (NODES None: not quorate)."""

    def __init__(self, lab, node, nodes: int | None):
        self.lab, self.node, self.nodes = lab, node, nodes
        self.samples, self.bad = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.lab.exec(self.node, ["corosync-quorumtool", "-s"]).stdout
            self.samples += 1
            quorate = re.search(r"^Quorate:\s+Yes", out, re.M)
            nodes = re.search(r"^Nodes:\s+(\d+)", out, re.M)
            if not quorate or self.nodes is not None and \
                    (not nodes or int(nodes.group(1)) != self.nodes):
                self.bad.append((time.monotonic(), out))
            self._stop.wait(0.1)

    def __enter__(self) -> "QuorumWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class VersionWatcher:
    """Every config_version a node's corosync.conf has, in order, read every 20 ms."""

    def __init__(self, lab, node: int = 1):
        self.path = lab.node(node).path(COROSYNC_CONF)
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                version = CorosyncConf.parse(self.path.read_text()).config_version
            except (OSError, PvestrapError):
                version = None  # between the .new and the rename
            if version is not None and (not self.seen or self.seen[-1] != version):
                self.seen.append(version)
            self._stop.wait(0.02)

    def __enter__(self) -> "VersionWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def etc_hashes(lab, clustered: bool = True) -> dict[str, str]:
    """Every file a node has written under its /etc (the upper layer of its /etc overlay, so
    any write anywhere in the node's /etc shows), with its mode. CLUSTERED: some node has a
    corosync.conf (a check that the hashes see the files that matter)."""
    out = {}
    for node in lab.nodes:
        upper = lab.state.root(node.index) / "etc"
        for path in sorted(upper.rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes() + oct(path.stat().st_mode).encode()
                out[f"{node.name}:{path.relative_to(upper)}"] = hashlib.sha256(data).hexdigest()
    assert out and (not clustered or any(k.endswith(":corosync/corosync.conf") for k in out))
    return out


def addresses(lab, node, dev: str) -> list[str]:
    """NODE's global addresses on DEV as CIDR, sorted (`ip -j addr` inside the node)."""
    shown = json.loads(lab.exec(node, ["ip", "-j", "addr", "show", "dev", dev]).stdout)
    return sorted(f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"]
                  if a["scope"] == "global")
