"""The first-boot script and its systemd unit (iso/pvestrap-firstboot.sh, .service).

The script's three ways (done, answer file, wizard on a terminal) run for real with sh, with
stand-in commands that show what they were given; the wizard gets a real pseudo-terminal as its
controlling terminal. The unit is checked by systemd's own `systemd-analyze verify`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import pvestrap.iso

ISO = Path(pvestrap.iso.__file__).parent
SCRIPT = ISO / "pvestrap-firstboot.sh"
UNIT = ISO / "pvestrap-firstboot.service"
UNIT_SCRIPT = "/usr/local/lib/pvestrap/pvestrap-firstboot.sh"


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "PVESTRAP_STATE_DIR": str(tmp_path / "state"),
            "PVESTRAP_ANSWERS": str(tmp_path / "answers.toml")}
    return subprocess.run(["sh", str(SCRIPT)], env={**base, **env}, capture_output=True,
                          text=True, timeout=30)


def test_script_is_executable_and_valid_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0


def test_answer_file_runs_the_flow_with_it_and_the_state_folder(tmp_path):
    (tmp_path / "answers.toml").write_text("# the cluster\n")
    done = run_script(tmp_path, PVESTRAP_FIRSTBOOT=r"printf %s\n",
                      PVESTRAP_FIRSTBOOT_ARGS="--peer-wait 5 --quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == [
        "--answers", str(tmp_path / "answers.toml"), "--state-dir", str(tmp_path / "state"),
        "--peer-wait", "5", "--quiet"]


def test_the_flows_exit_code_is_the_scripts(tmp_path):
    (tmp_path / "answers.toml").write_text("")
    assert run_script(tmp_path, PVESTRAP_FIRSTBOOT="false").returncode == 1


def test_done_marker_means_nothing_runs(tmp_path):
    (tmp_path / "answers.toml").write_text("")
    (tmp_path / "state").mkdir()
    (tmp_path / "state/firstboot.done").write_text("{}\n")
    done = run_script(tmp_path, PVESTRAP_FIRSTBOOT="false", PVESTRAP_WIZARD="false")
    assert done.returncode == 0


def _pty():
    master, slave = os.openpty()
    return master, os.ttyname(slave), slave


def _read_all(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_without_answer_file_the_wizard_runs_on_the_terminal_and_success_is_remembered(
        tmp_path):
    master, name, slave = _pty()
    try:
        wizard = tmp_path / "wizard.sh"  # says which terminal controls it, into that terminal
        wizard.write_text('#!/bin/sh\necho "controlled by /dev/$(ps -o tty= -p $$)"\n')
        done = run_script(tmp_path, PVESTRAP_WIZARD=f"sh {wizard}", PVESTRAP_TTY=name)
        assert done.returncode == 0, done.stderr
        assert f"controlled by {name}" in _read_all(master)
    finally:
        os.close(slave)
        os.close(master)
    marker = json.loads((tmp_path / "state/firstboot.done").read_text())
    assert marker["via"] == "wizard"


def test_a_wizard_that_fails_opens_again_next_time(tmp_path):
    master, name, slave = _pty()
    try:
        done = run_script(tmp_path, PVESTRAP_WIZARD="false", PVESTRAP_TTY=name)
    finally:
        os.close(slave)
        os.close(master)
    assert done.returncode == 1
    assert not (tmp_path / "state/firstboot.done").exists()


def _verify_root(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess:
    """`systemd-analyze verify` of the unit in a root holding systemd's own units, the unit
    and its script where the unit says."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/pvestrap-firstboot.service").write_text(unit_text)
    script = root / UNIT_SCRIPT.lstrip("/")
    script.parent.mkdir(parents=True)
    shutil.copy2(SCRIPT, script)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}",
                           "pvestrap-firstboot.service"], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None or
                    not Path("/usr/lib/systemd/system").is_dir(),
                    reason="needs systemd-analyze and systemd's units (Debian package systemd)")
def test_systemd_accepts_the_unit(tmp_path):
    text = UNIT.read_text()
    assert f"ExecStart={UNIT_SCRIPT}\n" in text
    done = _verify_root(tmp_path, text)
    ours = [line for line in done.stderr.splitlines() if "pvestrap" in line]
    assert done.returncode == 0 and ours == [], done.stderr
    broken = _verify_root(tmp_path / "broken", text.replace("Type=oneshot", "Typ=oneshot"))
    assert any("Unknown key" in line and "Typ" in line for line in broken.stderr.splitlines())
