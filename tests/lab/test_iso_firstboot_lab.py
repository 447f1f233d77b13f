"""The appliance end to end in the lab: `pvestrap iso prepare` puts the first-boot hook into a
(small, bootable) ISO; the hook is taken back out of the ISO with xorriso and run in every lab
node with the system's plain python3 in an empty environment (no pvestrap, no jinja2 there),
the way Proxmox's proxmox-first-boot unit runs it. The nodes must end up one quorate cluster.

Lab nodes have no systemd, so the flow is told how to start corosync (`-- --corosync-start`,
options after `--` go to the flow) and to sample latency briefly; everything else is the
production path: the node finds itself by its host name, the answer file comes out of the hook.
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pvestrap.answers import dumps
from pvestrap.cli import main
from pvestrap.corosync.status import parse_quorum_status

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PYTHON = "/usr/bin/python3"
CLEAN_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


def xorriso(*args: str) -> None:
    done = subprocess.run(["xorriso", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def bootable_iso(folder: Path) -> Path:
    root = folder / "iso-root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "boot.img").write_bytes(hashlib.sha512(b"boot").digest() * 32)
    (root / ".cd-info").write_text("PRODUCT='pve'\nPRODUCTLONG='Proxmox VE'\nRELEASE='9.1'\n")
    (root / "auto-installer-capable").write_bytes(b"")
    iso = folder / "pve.iso"
    xorriso("-as", "mkisofs", "-o", str(iso), "-V", "PVE", "-R", "-b", "boot/boot.img",
            "-no-emul-boot", "-boot-load-size", "4", str(root))
    return iso


def installer_settings(folder: Path, gateway: str) -> Path:
    path = folder / "installer.toml"
    path.write_text(f"""[installer]
country = "at"
keyboard = "de"
timezone = "Europe/Vienna"
mailto = "ops@example.com"
domain = "lab.example.com"
gateway = "{gateway}"
dns = "{gateway}"
network_filter = {{ ID_NET_NAME = "eth0" }}
root_password_hashed = "$6$labsalt$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ./a"
[installer.disk]
filesystem = "ext4"
disk_list = ["sda"]
""")
    return path


def quorum(lab, index):
    result = lab.exec(index, ["corosync-quorumtool", "-s"])
    return parse_quorum_status(result.stdout) if result.returncode in (0, 2) else None


def test_the_hook_from_a_prepared_iso_clusters_the_lab_at_first_boot(lab, tmp_path):
    bare = subprocess.run([PYTHON, "-c", "import pvestrap"], capture_output=True, env={},
                          cwd=tmp_path)
    assert bare.returncode != 0, f"{PYTHON} has pvestrap: the test would prove nothing"
    three = lab(nodes=3, links=2)
    three.start("sshd")
    plan = three.plan()
    plan = replace(plan, nodes=tuple(replace(n, management=f"{n.addresses[0]}/24")
                                     for n in plan.nodes))
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(plan))
    first = plan.nodes[0]
    gateway = first.addresses[0].rsplit(".", 1)[0] + ".254"
    iso = tmp_path / f"{first.name}.iso"
    assert main(["iso", "prepare", "--iso", str(bootable_iso(tmp_path)), "--answers",
                 str(answers), "--node", first.name, "--installer",
                 str(installer_settings(tmp_path, gateway)), "--out", str(iso),
                 "--engine", "xorriso"]) == 0
    hook = tmp_path / "proxmox-first-boot"
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract", "/proxmox-first-boot", str(hook))
    hook.chmod(0o755)  # the installer may leave it readable by all (chmod +x)
    made = tmp_path / "answers.firstboot-secret"  # `iso prepare` made it beside the answers
    assert made.stat().st_mode & 0o777 == 0o600

    flow = ["--corosync-start", "corosync", "--peer-wait", "180", "--turn-wait", "300",
            "--apply-timeout", "300", "--duration", "1", "--linger", "60"]
    started = time.monotonic()
    procs = {i: three.popen(i, [*CLEAN_ENV, str(hook), "fully-up", "--state-dir",
                                str(tmp_path / f"state-n{i}"), "--", *flow],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=tmp_path)
             for i in (1, 2, 3)}
    outputs = {}
    for index, proc in procs.items():
        try:
            outputs[index], _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            proc.kill()
            outputs[index], _ = proc.communicate()
    elapsed = time.monotonic() - started
    print(f"first boot of 3 lab nodes from the ISO's hook: {elapsed:.1f} s")
    for index, text in outputs.items():
        print(f"--- n{index} ---\n" + "\n".join(text.splitlines()[-4:]))
    for index, proc in procs.items():
        assert proc.returncode == 0, f"n{index}:\n{outputs[index]}"
        assert "pvestrap first-boot hook (stage fully-up)" in outputs[index]
        assert (tmp_path / f"state-n{index}" / "answers.toml").read_bytes() == \
            answers.read_bytes()
        written = tmp_path / f"state-n{index}" / "answers.firstboot-secret"
        assert written.read_bytes() == made.read_bytes()  # one secret for the whole cluster
        assert written.stat().st_mode & 0o777 == 0o600
        assert made.read_text().strip() not in outputs[index].lower()
    assert hook.stat().st_mode & 0o777 == 0o700  # it carries the secret: root's alone now

    for index in (1, 2, 3):
        status = quorum(three, index)
        assert status is not None and status.quorate, f"n{index} not quorate"
        assert {m.nodeid for m in status.nodes_only} == {1, 2, 3}

    # The unit runs the hook again at every boot until it succeeds: after success, nothing.
    again = three.exec(2, [*CLEAN_ENV, str(hook), "fully-up", "--state-dir",
                           str(tmp_path / "state-n2"), "--", *flow], timeout=120,
                        cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
