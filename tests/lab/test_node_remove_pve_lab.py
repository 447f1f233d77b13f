"""`pvestrap node remove` against Proxmox VE's REAL cluster stack (`lab up --pve`: real pmxcfs,
real Perl `pvecm create`, `pvecm add --use_ssh 1` and `pvecm delnode`, real corosync). Skipped,
with the reason, where Proxmox's sources are absent."""

from __future__ import annotations

import re
import sys

import pytest

from pvestrap.corosync.status import parse_quorum_status
from labtesting import wait

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]


def pve_status(lab, index: int):
    result = lab.exec(index, ["pvecm", "status"])
    return parse_quorum_status(result.stdout, "pvecm status") if result.returncode in (0, 2) \
        else None


def cfs_writable(lab, index: int) -> bool:
    """n1's pmxcfs takes writes (it follows corosync's quorum a moment later)."""
    mode = lab.exec(index, ["stat", "-c", "%a", "/etc/pve/local"]).stdout.strip()
    return mode.isdigit() and bool(int(mode, 8) & 0o200)


def form(lab, nodes: int, release: str):
    """pvecm create on n1, then pvecm add --use_ssh 1 on the others, one at a time, each once
    n1's cluster filesystem is quorate (right after create it restarts)."""
    made = lab(nodes=nodes, pve=release)
    first = made.node(1).address(0)
    created = made.exec(1, ["pvecm", "create", "lab", "--link0", first], timeout=120)
    assert created.returncode == 0, created.stderr
    for index in range(2, nodes + 1):
        def joined(index: int = index) -> bool:
            status = pve_status(made, 1)
            return bool(status and status.quorate and len(status.nodes_only) == index)

        for _ in range(5):  # pmxcfs may refuse the key copy while it settles
            assert wait(lambda: cfs_writable(made, 1), 60)
            made.exec(index, ["pvecm", "add", first, "--use_ssh", "1", "--link0",
                              made.node(index).address(0)], timeout=180)
            if wait(joined, 30):
                break
        assert joined(), f"n{index} did not join"
    return made


def power_off(lab, index: int) -> None:
    """pve-cluster and corosync stopped, the NIC down; back once n1's knet dropped the link."""
    for service in ("pve-cluster", "corosync"):
        lab.exec(index, ["systemctl", "stop", service])
    lab.exec(index, ["ip", "link", "set", "eth0", "down"], check=True)

    def gone() -> bool:
        out = lab.exec(1, ["corosync-cfgtool", "-s"]).stdout
        return not re.search(rf"nodeid:\s+{index}:\s+connected", out)

    assert wait(gone, 60)


@pytest.mark.parametrize("release", ["8", "9"])
def test_remove_a_powered_off_node_with_real_pvecm(lab, release):
    three = form(lab, 3, release)
    n3 = three.node(3)
    assert three.exec(1, ["test", "-d", f"/etc/pve/nodes/{n3.name}"]).returncode == 0
    power_off(three, 3)

    out = three.exec(1, [*PVESTRAP, "node", "remove", n3.name, "--yes"], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[applied] delnode" in out.stderr and "[applied] nodes-dir-aside" in out.stderr
    aside = out.stdout.split(f"/etc/pve/nodes/{n3.name} is now ")[1].split()[0]
    assert three.exec(1, ["test", "-d", aside]).returncode == 0
    for index in (1, 2):
        status = pve_status(three, index)
        assert status.quorate and status.expected_votes == 2
        assert {m.nodeid for m in status.nodes_only} == {1, 2}
        conf = three.node(index).path("/etc/corosync/corosync.conf").read_text()
        assert n3.name not in conf and "config_version: 4" in conf
        assert three.exec(index, ["test", "-e", f"/etc/pve/nodes/{n3.name}"]).returncode == 1


def test_lost_quorum_with_real_pvecm_needs_expected_votes(lab):
    two = form(lab, 2, "9")
    n2 = two.node(2)
    power_off(two, 2)
    assert wait(lambda: pve_status(two, 1).quorate is False, 60)
    refused = two.exec(1, [*PVESTRAP, "node", "remove", n2.name, "--yes"], timeout=300)
    assert refused.returncode == 1 and "[cluster-not-quorate]" in refused.stdout
    done = two.exec(1, [*PVESTRAP, "node", "remove", n2.name, "--yes", "--expected-votes",
                        "1"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[applied] expected-votes" in done.stderr and "[applied] delnode" in done.stderr
    status = pve_status(two, 1)
    assert status.quorate and status.expected_votes == 1
    assert n2.name not in two.node(1).path("/etc/pve/corosync.conf").read_text()
