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
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from labtesting import addresses

from pvestrap.answers import dumps
from pvestrap.cli import main
from pvestrap.corosync.status import parse_cfgtool_status, parse_quorum_status
from pvestrap.plan import InterfaceStanza, Link

pytestmark = [pytest.mark.lab, pytest.mark.slow]

PYTHON = "/usr/bin/python3"
CLEAN_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
FLOW = ["--corosync-start", "corosync", "--peer-wait", "180", "--turn-wait", "300",
        "--apply-timeout", "300", "--duration", "1", "--linger", "60"]


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


def hook_of(plan, answers: Path, folder: Path) -> Path:
    """The first-boot hook `pvestrap iso prepare` puts into the ISO, taken back out."""
    first = plan.nodes[0]
    gateway = (first.management or f"{first.addresses[0]}/24").split("/")[0]
    gateway = gateway.rsplit(".", 1)[0] + ".254"
    iso = folder / f"{first.name}.iso"
    assert main(["iso", "prepare", "--iso", str(bootable_iso(folder)), "--answers",
                 str(answers), "--node", first.name, "--installer",
                 str(installer_settings(folder, gateway)), "--out", str(iso),
                 "--engine", "xorriso"]) == 0
    hook = folder / "proxmox-first-boot"
    xorriso("-osirrox", "on", "-indev", str(iso), "-extract", "/proxmox-first-boot", str(hook))
    hook.chmod(0o755)  # the installer may leave it readable by all (chmod +x)
    made = folder / "answers.firstboot-secret"  # `iso prepare` made it beside the answers
    assert made.stat().st_mode & 0o777 == 0o600
    return hook


def run_hooks(lab, hook: Path, folder: Path) -> dict[int, str]:
    """The hook in every node at once, as the unit runs it; each node's output (exit 0 each)."""
    started = time.monotonic()
    procs = {i: lab.popen(i, [*CLEAN_ENV, str(hook), "fully-up", "--state-dir",
                              str(folder / f"state-n{i}"), "--", *FLOW],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          cwd=folder)
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
    return outputs


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
    hook = hook_of(plan, answers, tmp_path)
    made = tmp_path / "answers.firstboot-secret"
    outputs = run_hooks(three, hook, tmp_path)
    for index in (1, 2, 3):
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
                           str(tmp_path / "state-n2"), "--", *FLOW], timeout=120,
                        cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


NEW_NET = "10.254.91"


def test_the_hook_configures_the_spare_nic_first_and_the_cluster_forms_on_it(lab, tmp_path):
    """The ISO path with a cluster NIC of its own (issue 11, item 5): the installer configured
    only the management NIC (eth0); the answer file puts link0 on every node's spare eth9
    (cabled to one switch, no address anywhere) on a network that exists nowhere yet. The
    hook's first boot configures eth9 from the answer file (apply's network phase: stanza
    written, ifreload, carrier and address waits) before it waits for the peers, so the peer
    wait, the preflight's probes over link0 and corosync all run on the new network: a quorate
    3-node cluster whose link0 addresses are the new ones on eth9, eth0 untouched."""
    three = lab(nodes=3, links=1)
    three.start("sshd")
    plan = three.plan()
    plan = replace(
        plan, links=(Link(0, f"{NEW_NET}.0/24"),),
        nodes=tuple(replace(n, addresses={0: f"{NEW_NET}.{n.nodeid}"},
                            management=f"{n.addresses[0]}/24",
                            interfaces=(InterfaceStanza("eth9", f"{NEW_NET}.{n.nodeid}/24"),))
                    for n in plan.nodes))
    eth0 = {i: addresses(three, i, "eth0") for i in (1, 2, 3)}
    assert all(addresses(three, i, "eth9") == [] for i in (1, 2, 3))
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(plan))
    outputs = run_hooks(three, hook_of(plan, answers, tmp_path), tmp_path)
    for index, text in outputs.items():
        assert f"network: configured {NEW_NET}.{index}/24 on eth9" in text, text[-3000:]
        # apply's recheck is first boot's own probes over link0, never "not probed"
        assert "not probed over the new address" not in text, text[-3000:]
        if index != 1:
            assert f"network: probing link0 over the new address ({plan.nodes[0].name})" \
                in text, text[-3000:]
    for index in (1, 2, 3):
        status = quorum(three, index)
        assert status is not None and status.quorate, f"n{index} not quorate"
        assert {m.nodeid for m in status.nodes_only} == {1, 2, 3}
        shown = three.exec(index, ["corosync-cfgtool", "-s"]).stdout
        link0 = parse_cfgtool_status(shown).link(0)
        assert link0 is not None and link0.address == f"{NEW_NET}.{index}", shown
        assert all(p.connected for p in link0.peers) and len(link0.peers) == 3, shown
        assert addresses(three, index, "eth9") == [f"{NEW_NET}.{index}/24"]
        assert addresses(three, index, "eth0") == eth0[index]
        # its preflight ran after the network phase: every peer answered over link0
        saved = json.loads((tmp_path / f"state-n{index}" / "firstboot-preflight.json")
                           .read_text())
        assert saved["report"]["summary"]["failures"] == 0
        assert "pending_links" not in saved["report"]["meta"]
        reached = {r["peer"] for r in saved["measurements"]["udp"]
                   if r["state"] == "open" and r["link"] == 0 and not r["legacy"]}
        assert reached == {n.name for n in plan.nodes if n.nodeid != index}
