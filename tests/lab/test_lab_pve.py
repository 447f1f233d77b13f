"""`lab up --pve`: Proxmox VE's real cluster stack (pmxcfs, Perl pvecm) in every lab node,
built once from Proxmox's source (skipped, with the reason, where the sources are absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pvestrap.lab import pvestack
from pvestrap.lab.hostcheck import leftovers

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("release", ["8", "9"])
def test_a_pve_node_runs_pmxcfs_with_a_real_etc_pve(lab, release: str):
    machine_systemctl = Path(shutil.which("systemctl") or "/usr/bin/systemctl")
    before = machine_systemctl.read_bytes() if machine_systemctl.exists() else None
    two = lab(nodes=2, pve=release)
    assert two.status()["pve"] == release
    for index in (1, 2):
        facts = two.exec(index, ["dpkg-query", "-W", "-f", "${Version}", "pve-cluster"])
        assert facts.stdout.split(".")[0] == release
        mounts = two.exec(index, ["cat", "/proc/self/mounts"]).stdout
        assert any(line.split()[1] == "/etc/pve" and "fuse" in line.split()[2]
                   for line in mounts.splitlines())
        status = two.exec(index, ["pvecm", "status"])
        assert status.returncode == 2 and "does not exist" in status.stderr
    # /etc/pve is each node's own pmxcfs: a file written on n1 is not on n2 (no cluster yet)
    assert two.exec(1, ["sh", "-c", "echo x > /etc/pve/pvestrap-probe"]).returncode == 0
    assert two.exec(1, ["test", "-e", "/etc/pve/pvestrap-probe"]).returncode == 0
    assert two.exec(2, ["test", "-e", "/etc/pve/pvestrap-probe"]).returncode == 1
    assert two.exec(1, ["test", "-e", "/etc/pve/local/pve-ssl.pem"]).returncode == 0
    # the systemctl stand-in is inside the nodes only
    after = machine_systemctl.read_bytes() if machine_systemctl.exists() else None
    assert before == after
    assert "LAB STAND-IN" in two.exec(1, ["head", "-c", "300", "/usr/bin/systemctl"]).stdout
    inodes = set(two.state.netns.values())
    removed = two.down()
    assert removed.survivors == ()
    assert leftovers(two.prefix, inodes) == {"netns": [], "links": [], "processes": [],
                                             "state": []}
    cache = pvestack.cache_root()
    assert any(p.name.startswith(f"pve-{release}.") for p in cache.iterdir())
