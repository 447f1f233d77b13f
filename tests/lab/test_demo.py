"""`pvestrap demo` end to end, as a newcomer runs it: the real command, a real lab, real corosync.

It must end with a quorate cluster reported (in the HTML too) and leave nothing behind; with
--keep the cluster stays up; Ctrl-C in the middle still removes everything.
"""

from __future__ import annotations

import html
import re
import signal
import subprocess
import sys
import time

import pytest

from pvestrap.corosync.status import parse_quorum_status
from pvestrap.demo import STATE_DIR, DemoOptions, run_demo
from pvestrap.errors import PvestrapError
from pvestrap.lab import names, teardown
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import leftovers, new_prefix

pytestmark = [pytest.mark.lab, pytest.mark.slow]

DEMO = [sys.executable, "-m", "pvestrap", "demo"]


@pytest.fixture
def prefix():
    """A demo lab name nobody else uses; whatever is left of it is removed at the end."""
    name = new_prefix("dt")
    yield name
    teardown.down(name)


def nothing_left(name: str) -> dict:
    return {k: v for k, v in leftovers(name).items() if v}


def codes_in(page: str) -> set[str]:
    return set(re.findall(r"<code>([a-z0-9-]+)</code>", page))


def first_boot_running(name: str) -> bool:
    """Node 1 of the demo's lab has started its first boot (its progress file exists)."""
    if not names.Layout(name).state_dir.exists():
        return False
    try:
        return Lab.get(name).node(1).path(f"{STATE_DIR}/firstboot.json").exists()
    except (PvestrapError, OSError, KeyError):  # the lab is still being built
        return False


def test_demo_clusters_reports_and_cleans_up(lab, prefix, tmp_path):
    page = tmp_path / "report.html"
    done = subprocess.run([*DEMO, "--name", prefix, "--html", str(page)], capture_output=True,
                          text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    text = page.read_text()
    found = codes_in(text)
    assert {"cluster-quorate", "members-complete", "knet-link-connected",
            "link-port-open"} <= found, sorted(found)
    assert "link-port-filtered" not in found and "cluster-not-quorate" not in found
    for heading in ("preflight link0", "preflight link1", "knet link0", "knet link1"):
        assert html.escape(heading) in text
    assert nothing_left(prefix) == {}


def test_demo_keep_leaves_the_quorate_lab(lab, prefix, tmp_path):
    result = run_demo(DemoOptions(nodes=3, links=1, keep=True, prefix=prefix),
                      out=lambda _line: None)
    assert result.ok and result.kept
    assert result.exit_codes == {f"{prefix}-n{i}": 0 for i in (1, 2, 3)}
    kept = Lab.get(prefix)
    status = parse_quorum_status(kept.exec(3, ["corosync-quorumtool", "-s"]).stdout)
    assert status.quorate and {m.nodeid for m in status.nodes_only} == {1, 2, 3}
    assert result.status.exit_code() == 0 and result.preflight.exit_code() == 0


def test_ctrl_c_removes_the_lab(lab, prefix, tmp_path):
    # Ctrl-C as a terminal sends it, whatever this run inherited: a test run started in the
    # background of a shell without job control (`nohup pytest &`) has SIGINT ignored, and an
    # ignored signal stays ignored in the children, so the demo would never hear it
    proc = subprocess.Popen([*DEMO, "--name", prefix, "--html", str(tmp_path / "r.html")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not first_boot_running(prefix) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first_boot_running(prefix), proc.poll()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, rest
    assert nothing_left(prefix) == {}
    assert not (tmp_path / "r.html").exists()
