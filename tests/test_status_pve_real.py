"""Status outputs captured from Proxmox VE's REAL cluster stack (`lab up --pve`, see
tests/data/status/pve-real/README.md) parse into what the cluster was: 3 nodes, 3 votes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import (parse_cfgtool_nodes, parse_cfgtool_status, parse_members,
                                      parse_quorum_status)

DATA = Path(__file__).parent / "data/status/pve-real"
LOCAL = {"pve8": 2, "pve9": 3}


def read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("release", ["pve8", "pve9"])
@pytest.mark.parametrize("tool", ["pvecm-status", "quorumtool-s"])
def test_quorum_status_of_a_quorate_three_node_cluster(release: str, tool: str):
    node = f"n{LOCAL[release]}"
    status = parse_quorum_status(read(f"{release}-{tool}-3node-{node}.txt"), tool)
    assert status.quorate and (status.total_votes, status.expected_votes, status.quorum) == \
        (3, 3, 2)
    assert [m.nodeid for m in status.members] == [1, 2, 3]
    assert status.local is not None and status.local.nodeid == LOCAL[release]
    if tool == "pvecm-status":  # the Cluster information block pvecm adds
        assert (status.config_version, status.transport, status.secure_auth) == (3, "knet", "on")


@pytest.mark.parametrize("release", ["pve8", "pve9"])
def test_member_lists_and_links(release: str):
    node = f"n{LOCAL[release]}"
    for tool in ("pvecm-nodes", "quorumtool-l"):
        members = parse_members(read(f"{release}-{tool}-3node-{node}.txt"), tool)
        assert [(m.nodeid, m.votes) for m in members] == [(1, 1), (2, 1), (3, 1)]
    links = parse_cfgtool_status(read(f"{release}-cfgtool-s-3node-{node}.txt"))
    assert links.local_nodeid == LOCAL[release] and links.transport == "knet"
    assert all(p.connected for p in links.links[0].peers)
    peers = parse_cfgtool_nodes(read(f"{release}-cfgtool-n-3node-{node}.txt"))
    assert sorted(p.nodeid for p in peers.peers) == sorted({1, 2, 3} - {LOCAL[release]})


def test_one_node_down_and_corosync_stopped():
    down = parse_quorum_status(read("pve9-quorumtool-s-3node-one-down-n1.txt"))
    assert down.quorate and (down.total_votes, down.expected_votes) == (2, 3)
    assert [m.nodeid for m in down.members] == [1, 2]
    text = read("pve9-pvecm-status-corosync-stopped-n3.txt")
    assert text.startswith("Cluster information") and "Quorum information" not in text


def test_the_corosync_conf_pvecm_9_wrote():
    conf = CorosyncConf.parse(read("pve9-corosync-conf-3node.txt"))
    assert (conf.config_version, [n.nodeid for n in conf.nodes]) == (3, [1, 2, 3])
    assert "  token_coefficient: 125\n" in conf.text()
