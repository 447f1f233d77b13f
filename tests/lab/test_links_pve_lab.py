"""`pvestrap link add` and `link move` against Proxmox VE's REAL cluster stack (`lab up --pve`:
real pmxcfs, real Perl pvecm, real corosync), for PVE 8 (pve-cluster 8.1.3) and PVE 9 (9.1.6).
Skipped, with the reason, where Proxmox's sources are absent.

The cluster is formed by pvecm itself (create, then add --use_ssh 1: config_version 3) on link0.
Then, inside n1 as a user runs it: add link1 on the second network, then move link0 to the third
one; /etc/pve/corosync.conf must be what the dry run previewed, byte for byte, on every node, and
every node's /etc/corosync/corosync.conf the same file, corosync running it. A link that never
comes up is rolled back: both files as they were on every node, the old config_version running.
"""

from __future__ import annotations

import re
import sys

import pytest

from pvestrap.apply.link_plan import LinkRequest, plan_change
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.render import Change, unified_diff
from labtesting import QuorumWatcher, etc_hashes
from pvelab import form, pve_status

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
PVE_CONF = "/etc/pve/corosync.conf"


def etc_files(lab) -> dict[str, str]:
    """etc_hashes without /etc/pve: pmxcfs's own files there (.members, .version, ...) change
    by themselves; its corosync.conf is compared as text."""
    return {k: v for k, v in etc_hashes(lab).items() if ":pve/" not in k}


def addresses(lab, net: int) -> list[str]:
    return [x for n in lab.nodes for x in ("--address", f"{n.name}={n.address(net)}")]


def link(lab, *args):
    return lab.exec(1, [*PVESTRAP, "link", *args], timeout=300)


def cfgtool_links(lab, index: int) -> dict[int, tuple[str, list[tuple[int, str]]]]:
    """`corosync-cfgtool -s`: link number -> (local address, [(nodeid, state)])."""
    out = lab.exec(index, ["corosync-cfgtool", "-s"]).stdout
    links: dict[int, tuple[str, list[tuple[int, str]]]] = {}
    for block in re.split(r"^LINK ID ", out, flags=re.M)[1:]:
        number = int(block.split()[0])
        addr = re.search(r"^\s*addr\s*=\s*(\S+)", block, re.M).group(1)
        peers = [(int(i), s.strip()) for i, s in
                 re.findall(r"^\s*nodeid:\s*(\d+):\s*(.+)$", block, re.M)]
        links[number] = (addr, peers)
    return links


def runtime_version(lab, index: int) -> int:
    out = lab.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
    return int(out.split("=")[1])


def assert_cluster_runs(lab, text: str, nets: dict[int, int]) -> None:
    """Every node: /etc/pve and /etc/corosync hold TEXT, corosync runs its config_version, pvecm
    status is quorate with 3 votes, and cfgtool -s shows link L at network NETS[L], connected."""
    version = CorosyncConf.parse(text).config_version
    for node in lab.nodes:
        assert node.path(PVE_CONF).read_text() == text, node.name
        assert node.path("/etc/corosync/corosync.conf").read_text() == text, node.name
        assert runtime_version(lab, node.index) == version
        status = pve_status(lab, node.index)
        assert status.quorate and (status.total_votes, status.expected_votes) == (3, 3)
        shown = cfgtool_links(lab, node.index)
        assert sorted(shown) == sorted(nets), (node.name, shown)
        for number, net in nets.items():
            addr, peers = shown[number]
            assert addr == node.address(net)
            assert sorted(peers) == [(i, "localhost" if i == node.index else "connected")
                                     for i in (1, 2, 3)], (node.name, number, peers)
    assert not lab.exec(1, ["test", "-e", PVE_CONF + ".new"]).returncode == 0


def preview(lab, *args: str) -> str:
    """The dry run's corosync.conf diff (nothing changed)."""
    dry = link(lab, *args, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: nothing was changed" in dry.stdout
    return dry.stdout


@pytest.mark.parametrize("release", ["8", "9"])
def test_link_add_then_move_link0_on_a_real_proxmox_cluster(lab, release):
    three = form(lab, 3, release, links=3)
    start = three.node(1).path(PVE_CONF).read_text()
    conf = CorosyncConf.parse(start)
    assert conf.config_version == 3  # create 1, each join +1: pvecm's count
    assert_cluster_runs(three, start, {0: 0})

    add = LinkRequest("add", 1, {n.name: n.address(1) for n in three.nodes})
    added = plan_change(conf, start, add).final.text()
    assert CorosyncConf.parse(added).config_version == 4
    shown = preview(three, "add", "--number", "1", *addresses(three, 1))
    assert unified_diff(Change(PVE_CONF, start, added, 0o644)) in shown
    with QuorumWatcher(three, "n1", 3) as watcher:
        out = link(three, "add", "--number", "1", *addresses(three, 1), "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert_cluster_runs(three, added, {0: 0, 1: 1})

        move = LinkRequest("move", 0, {n.name: n.address(2) for n in three.nodes})
        moved = plan_change(CorosyncConf.parse(added), added, move).final.text()
        assert CorosyncConf.parse(moved).config_version == 6  # two writes: drop, add again
        shown = preview(three, "move", "--number", "0", *addresses(three, 2))
        assert unified_diff(Change(PVE_CONF, added, moved, 0o644)) in shown
        out = link(three, "move", "--number", "0", *addresses(three, 2), "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "[applied] drop-link0 (" in out.stderr and "[applied] add-link0 (" in out.stderr
        assert_cluster_runs(three, moved, {0: 2, 1: 1})
    assert watcher.samples > 30
    assert watcher.bad == [], watcher.bad[0][1]
    again = link(three, "move", "--number", "0", *addresses(three, 2), "--yes")
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize("release", ["8", "9"])
def test_a_link_that_never_comes_up_is_rolled_back_on_a_real_proxmox_cluster(lab, release):
    three = form(lab, 3, release, links=2)
    start = three.node(1).path(PVE_CONF).read_text()
    three.impair(drop="n3:udp/5406")  # ICMP passes (the preflight), knet on link1 cannot
    before = etc_files(three)
    with QuorumWatcher(three, "n1", 3) as watcher:
        out = link(three, "add", "--number", "1", *addresses(three, 1), "--yes",
                   "--timeout", "8")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "step add-link1 failed" in out.stderr
    assert f"does not reach {three.node(3).name} on link1" in out.stderr
    assert etc_files(three) == before  # corosync.conf and .bak byte for byte, every node
    assert_cluster_runs(three, start, {0: 0})  # /etc/pve too; config_version 3 runs again
    assert watcher.bad == [], watcher.bad[0][1]
