"""`pvestrap link add` and `link move` on a running 3-node lab cluster with real corosync and sshd.

The lab has three networks (10.254.L.0/24, L = 0..2); corosync starts on link0 only. The
commands run inside n1 as a user would run them, reaching n2 and n3 over SSH. A watcher asks n1's
corosync-quorumtool every 100 ms throughout and must never see the cluster lose quorum.
"""

from __future__ import annotations

import dataclasses
import re
import sys

import pytest

from pvestrap.corosync.facade import CorosyncConf
from labtesting import QuorumWatcher, etc_hashes, members, wait

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]


def start_cluster(lab):
    """3 nodes, 3 networks, corosync.conf with link0 only (what the facade writes), quorate."""
    three = lab(nodes=3, links=3)
    plan = three.plan()
    nodes = tuple(dataclasses.replace(n, addresses={0: n.addresses[0]}) for n in plan.nodes)
    conf = CorosyncConf.create(dataclasses.replace(plan, nodes=nodes, links=plan.links[:1]))
    three.write_corosync()  # the authkey
    for node in three.nodes:
        node.path("/etc/corosync/corosync.conf").write_text(conf.text())
    three.start("corosync")
    three.start("sshd")
    assert wait(lambda: members(three, 1) == 3, 30), "the cluster did not form"
    return three, conf


def addresses(lab, link: int) -> list[str]:
    return [x for n in lab.nodes for x in ("--address", f"{n.name}={n.address(link)}")]


def link(lab, *args, timeout: float = 180):
    return lab.exec("n1", [*PVESTRAP, "link", *args], timeout=timeout)


def knet_view(lab, node) -> dict[tuple[int, int], tuple[str, bool]]:
    """(peer nodeid, link) -> (remote address, connected) from corosync-cfgtool -n."""
    out, peer, view = lab.exec(node, ["corosync-cfgtool", "-n"]).stdout, None, {}
    for line in out.splitlines():
        if m := re.match(r"^nodeid:\s*(\d+) reachable", line.strip()):
            peer = int(m.group(1))
        elif m := re.match(r"^LINK: (\d+) \S+ \([^>]*->([^)]*)\)(.*) mtu", line.strip()):
            view[(peer, int(m.group(1)))] = (m.group(2), "connected" in m.group(3).split())
    return view


def assert_link_everywhere(lab, number: int, net: int) -> None:
    for node in lab.nodes:
        view = knet_view(lab, node.index)
        for peer in lab.nodes:
            if peer.index != node.index:
                assert view.get((peer.index, number)) == (peer.address(net), True), \
                    (node.name, view)


def runtime_version(lab, node) -> int:
    out = lab.exec(node, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
    return int(out.split("=")[1])


def test_link_add_then_move_keep_the_cluster_quorate_throughout(lab):
    three, conf = start_cluster(lab)
    before = etc_hashes(three)
    with QuorumWatcher(three, "n1", 3) as watcher:
        added = link(three, "add", "--number", "1", *addresses(three, 1), "--network",
                     "10.254.1.0/24", "--yes")
        assert added.returncode == 0, added.stdout + added.stderr
        assert_link_everywhere(three, 1, net=1)
        assert etc_hashes(three) != before  # the hashes do see a real change
        moved = link(three, "move", "--number", "1", *addresses(three, 2), "--yes")
        assert moved.returncode == 0, moved.stdout + moved.stderr
        assert_link_everywhere(three, 1, net=2)
    assert watcher.samples > 30
    assert watcher.bad == [], watcher.bad[0][1]

    added_conf = conf.add_link(1, {n.name: n.address(1) for n in three.nodes}).bump_version()
    final = added_conf.set_link_addresses(1, {n.name: n.address(2) for n in three.nodes})
    final = final.bump_version().bump_version()
    for node in three.nodes:
        assert node.path("/etc/corosync/corosync.conf").read_text() == final.text()
        assert runtime_version(three, node.index) == 4
        # the .bak is the file before the last phase: link1 dropped, config_version 3
        bak = CorosyncConf.parse(node.path("/etc/corosync/corosync.conf.bak").read_text())
        assert (bak.config_version, bak.link_numbers) == (3, (0,))
    assert "[applied] drop-link1 (" in moved.stderr and "[applied] add-link1 (" in moved.stderr
    again = link(three, "move", "--number", "1", *addresses(three, 2), "--yes")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_dry_run_changes_nothing_on_any_node(lab):
    three, conf = start_cluster(lab)
    before = etc_hashes(three)
    out = link(three, "add", "--number", "1", *addresses(three, 1), "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"+    ring1_addr: {three.node(1).address(1)}" in out.stdout
    assert "dry run: nothing was changed" in out.stdout
    assert etc_hashes(three) == before
    assert runtime_version(three, 1) == 1
    moved = link(three, "move", "--number", "0", *addresses(three, 2), "--dry-run")
    assert moved.returncode == 2 and "[link-last]" in moved.stderr  # the only link stays
    assert etc_hashes(three) == before


def test_a_new_network_that_does_not_answer_is_refused_before_any_change(lab):
    three, _ = start_cluster(lab)
    before = etc_hashes(three)
    args = addresses(three, 1)
    args[-1] = f"{three.node(3).name}=10.254.1.33"  # not on n3
    out = link(three, "add", "--number", "1", *args, "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    fails = re.findall(r"^FAIL: (\S+): .*\[([a-z0-9-]+)\]$", out.stdout, re.M)
    n1, n2, n3 = (n.name for n in three.nodes)
    assert sorted(fails) == sorted([
        (f"{n3}/link1", "link-address-not-on-node"),
        (f"{n1}->{n3}/link1", "link-peer-unreachable"),
        (f"{n2}->{n3}/link1", "link-peer-unreachable"),
        (f"{n3}->{n1}/link1", "link-peer-unreachable"),
        (f"{n3}->{n2}/link1", "link-peer-unreachable")])
    assert etc_hashes(three) == before


def test_a_link_that_never_comes_up_is_rolled_back_on_every_member(lab):
    three, _ = start_cluster(lab)
    three.impair(drop="n3:udp/5406")  # ICMP passes (the preflight), knet on link1 cannot
    before = etc_hashes(three)
    with QuorumWatcher(three, "n1", 3) as watcher:
        out = link(three, "add", "--number", "1", *addresses(three, 1), "--yes",
                   "--timeout", "8")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "step add-link1 failed" in out.stderr
    n3 = three.node(3).name
    assert f"does not reach {n3} on link1" in out.stderr
    assert etc_hashes(three) == before  # corosync.conf and .bak byte for byte, on every node
    assert all(runtime_version(three, n.index) == 1 for n in three.nodes)
    assert all((p, 1) not in knet_view(three, n.index) for n in three.nodes for p in (1, 2, 3))
    assert watcher.bad == [], watcher.bad[0][1]
