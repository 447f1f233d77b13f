"""`pvestrap lab` from the command line, and nothing left behind: after `down`, after a test
that fails inside the fixture, and after an `up` killed half way."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pvestrap.answers import loads
from pvestrap.lab import names
from pvestrap.lab.lab import Lab
from pvestrap.lab.hostcheck import leftovers, new_prefix, unavailable

SUPPORT = Path(__file__).resolve().parent.parent / "support"  # labtesting.py

pytestmark = pytest.mark.lab
PVESTRAP = [sys.executable, "-m", "pvestrap.cli"]
NOTHING = {"netns": [], "links": [], "processes": [], "state": []}


def cli(*args, check=False, timeout=120):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = "import sys; from pvestrap.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def prefix():
    """A lab name for tests that drive `up`/`down` themselves; removed whatever happens."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    name = new_prefix("lc")
    yield name
    from pvestrap.lab import teardown

    teardown.down(name)


def test_cli_up_status_exec_impair_answers_down_leave_nothing(prefix):
    up = cli("lab", "up", "--nodes", "3", "--links", "2", "--name", prefix,
             "--delay", "n2:eth0=1ms", "--drop", f"{prefix}-n3:udp/5405", check=True)
    assert f"{prefix}-n3" in up.stdout
    status = json.loads(cli("lab", "status", "--name", prefix, "--json", check=True).stdout)
    [lab] = status
    assert [n["addresses"] for n in lab["nodes"]][1] == {"link0": "10.254.0.2",
                                                        "link1": "10.254.1.2"}
    assert lab["impairments"] == [f"--delay {prefix}-n2:eth0=1ms",
                                  f"--drop {prefix}-n3:udp/5405"]
    assert lab["forwarder"]
    assert cli("lab", "exec", "--name", prefix, "n2", "--", "hostname",
               check=True).stdout.strip() == f"{prefix}-n2"
    changed = cli("lab", "impair", "--name", prefix, "--clear", "--loss", "n1:eth1=5%",
                  check=True)
    assert changed.stdout.strip() == f"impaired: --loss {prefix}-n1:eth1=5%"
    plan = loads(cli("lab", "answers", "--name", prefix, check=True).stdout)
    assert plan.cluster_name == prefix
    assert [dict(n.addresses) for n in plan.nodes][2] == {0: "10.254.0.3", 1: "10.254.1.3"}

    st = Lab(prefix).state
    Lab(prefix).start("sshd", ["n1"])
    inodes = set(st.netns.values())
    assert leftovers(prefix, inodes)["processes"]
    down = cli("lab", "down", "--name", prefix, check=True)
    assert "removed 4 namespaces" in down.stdout
    assert leftovers(prefix, inodes) == NOTHING


@pytest.mark.parametrize("flag,value,fragment", [
    ("--delay", "n2:eth0=3", "--delay"),
    ("--loss", "n9:eth0=5%", "--loss"),
    ("--drop", "n2:udp5405", "--drop"),
    ("--clock", "n2=soon", "--clock"),
])
def test_bad_flags_exit_2_and_create_nothing(prefix, flag, value, fragment):
    result = cli("lab", "up", "--nodes", "2", "--name", prefix, flag, value)
    assert result.returncode == 2
    assert fragment in result.stderr and "fix:" in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(prefix) == NOTHING


def test_bad_names_and_unknown_labs_exit_2(prefix):
    assert cli("lab", "up", "--name", "Bad_Name").returncode == 2
    assert cli("lab", "up", "--name", prefix, "--nodes", "0").returncode == 2
    missing = cli("lab", "exec", "--name", prefix, "n1", "--", "true")
    assert missing.returncode == 2 and "no lab" in missing.stderr
    cli("lab", "up", "--nodes", "1", "--name", prefix, check=True)
    again = cli("lab", "up", "--nodes", "1", "--name", prefix)
    assert again.returncode == 2 and "exists" in again.stderr
    assert cli("lab", "corosync", "start", "--name", prefix).returncode == 2  # no config yet


def test_a_test_failing_inside_the_fixture_leaves_nothing(tmp_path):
    if unavailable():
        pytest.skip(unavailable())
    record = tmp_path / "lab.json"
    (tmp_path / "test_fails.py").write_text(textwrap.dedent(f"""
        import json
        from labtesting import lab  # noqa: F401

        def test_fails_on_purpose(lab):
            one = lab(nodes=2, links=2, delay="n2:eth1=1ms", loss="n1:eth0=1%")
            one.start("sshd")
            st = one.state
            with open({str(record)!r}, "w") as fh:
                json.dump({{"prefix": one.prefix, "inodes": list(st.netns.values())}}, fh)
            assert False, "failing on purpose, inside the fixture"
    """))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "--rootdir", str(tmp_path), str(tmp_path / "test_fails.py")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(SUPPORT)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failing on purpose" in result.stdout
    made = json.loads(record.read_text())
    assert len(made["inodes"]) == 3
    # killed processes vanish once reaped: give a loaded machine a moment before judging
    deadline = time.monotonic() + 10
    while leftovers(made["prefix"], made["inodes"]) != NOTHING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers(made["prefix"], made["inodes"]) == NOTHING


def test_down_removes_what_a_killed_up_left(prefix):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    code = "import sys; from pvestrap.cli import main; sys.exit(main(sys.argv[1:]))"
    up = subprocess.Popen([sys.executable, "-c", code, "lab", "up", "--nodes", "12", "--name",
                           prefix], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    layout = names.Layout(prefix)
    deadline = time.monotonic() + 30
    while not os.path.exists(f"/run/netns/{layout.switch_ns}"):
        assert up.poll() is None and time.monotonic() < deadline, "up ended before the kill"
        time.sleep(0.002)
    up.send_signal(signal.SIGKILL)
    up.wait()
    time.sleep(0.5)  # let a holder start-up that outlived its parent finish forking
    found = leftovers(prefix)
    assert found["netns"] and found["state"]
    inodes = {os.stat(f"/run/netns/{n}").st_ino for n in found["netns"]}
    # the crash may have come before the state file knew anything: remove it, too
    layout.state_file.unlink(missing_ok=True)
    result = cli("lab", "down", "--name", prefix, check=True)
    assert "removed" in result.stdout
    assert leftovers(prefix, inodes) == NOTHING


def test_down_without_state_finds_the_lab_by_its_names(prefix):
    from pvestrap.lab import teardown

    lab = Lab.up(prefix, nodes=2)
    lab.start("sshd")
    inodes = set(lab.state.netns.values())
    shutil.rmtree(names.Layout(prefix).state_dir)
    # `down` without --name would find it by its holders' tags (not run here: it would
    # remove every lab on this machine, other people's too)
    assert prefix in teardown.all_prefixes()
    assert "removed 3 namespaces and" in cli("lab", "down", "--name", prefix, check=True).stdout
    assert leftovers(prefix, inodes) == NOTHING


def _ps() -> list[str]:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
