"""Parsers of corosync's and pvecm's status output: recorded samples, and a live lab corosync.

tests/data/status/ holds output of a real 2-node, 2-link corosync 3.1.7 lab (quorate, link 1
down, peer gone) and the samples of the Proxmox admin guide (pvecm status / nodes).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pvestrap.corosync.status import (Member, StatusUnparsable, parse_cfgtool_nodes,
                                   parse_cfgtool_status, parse_knet_stats, parse_members,
                                   parse_quorum_status)

DATA = Path(__file__).parent / "data" / "status"


def sample(name: str) -> str:
    return (DATA / name).read_text()


# -- quorum ----------------------------------------------------------------------------------------

def test_quorumtool_quorate_two_nodes():
    s = parse_quorum_status(sample("quorumtool-s-2node-quorate.txt"))
    assert s.quorate and not s.activity_blocked
    assert (s.expected_votes, s.highest_expected, s.total_votes, s.quorum) == (2, 2, 2, 2)
    assert s.flags == ("Quorate",)
    assert (s.nodes, s.node_id, s.ring_id, s.provider) == (2, 1, "1.9", "corosync_votequorum")
    assert s.members == (Member(1, 1, "pveA", local=True), Member(2, 1, "pveB"))
    assert s.local == Member(1, 1, "pveA", local=True)


def test_quorumtool_not_quorate_when_the_peer_is_gone():
    s = parse_quorum_status(sample("quorumtool-s-not-quorate.txt"))
    assert not s.quorate and s.activity_blocked
    assert (s.expected_votes, s.total_votes, s.quorum) == (2, 1, 2)
    assert s.flags == ()
    assert [m.nodeid for m in s.members] == [2]


def test_quorumtool_hex_ids_and_addresses():
    s = parse_quorum_status(sample("quorumtool-siH-2node.txt"))
    assert s.node_id == 2
    assert [(m.nodeid, m.name, m.local) for m in s.members] == [
        (1, "10.254.0.1", False), (2, "10.254.0.2", True)]


def test_pvecm_status_from_the_admin_guide():
    s = parse_quorum_status(sample("pvecm-status-4node.txt"))
    assert (s.cluster_name, s.config_version, s.transport, s.secure_auth) == (
        "prod-central", 3, "knet", "on")
    assert s.quorate and (s.expected_votes, s.total_votes, s.quorum) == (4, 4, 3)
    assert [m.nodeid for m in s.members] == [1, 2, 3, 4]
    assert s.local.name == "192.168.15.92"


def test_pvecm_status_with_a_qdevice():
    s = parse_quorum_status(sample("pvecm-status-qdevice.txt"))
    assert s.flags == ("Quorate", "Qdevice")
    assert [(m.nodeid, m.qdevice, m.is_qdevice) for m in s.members] == [
        (1, "A,V,NMW", False), (2, "A,V,NMW", False), (0, None, True)]
    assert [m.nodeid for m in s.nodes_only] == [1, 2]
    assert s.members[2].name == "Qdevice"


@pytest.mark.parametrize("name,local", [("pvecm-nodes-4node.txt", "hp2"),
                                        ("pvecm-nodes-local4.txt", "node4")])
def test_pvecm_nodes(name: str, local: str):
    members = parse_members(sample(name))
    assert [m.nodeid for m in members] == [1, 2, 3, 4]
    assert [m.name for m in members if m.local] == [local]
    assert {m.votes for m in members} == {1}


def test_garbage_is_refused_with_the_line():
    with pytest.raises(StatusUnparsable) as caught:
        parse_quorum_status("Cannot initialize CMAP service\n")
    assert caught.value.code == "status-unparsable"
    broken = sample("quorumtool-s-2node-quorate.txt").replace("Total votes:      2",
                                                              "Total votes:      two")
    with pytest.raises(StatusUnparsable) as caught:
        parse_quorum_status(broken)
    assert "line 14" in caught.value.message
    with pytest.raises(StatusUnparsable):
        parse_members("Membership information\n----------------------\n    Nodeid Votes Name\n"
                      "x 1 a\n")


# -- links -----------------------------------------------------------------------------------------

def test_cfgtool_s_all_connected():
    s = parse_cfgtool_status(sample("cfgtool-s-2node.txt"))
    assert (s.local_nodeid, s.transport) == (1, "knet")
    assert [(link.link, link.transport, link.address) for link in s.links] == [
        (0, "udp", "10.254.0.1"), (1, "udp", "10.254.1.1")]
    assert all(link.peer(2).state == "connected" for link in s.links)
    assert s.link(0).peer(1).state == "localhost"


def test_cfgtool_s_link_down_and_peer_gone():
    down = parse_cfgtool_status(sample("cfgtool-s-link1-down.txt"))
    assert down.link(0).peer(2).connected and not down.link(1).peer(2).connected
    gone = parse_cfgtool_status(sample("cfgtool-s-peer-gone.txt"))
    assert gone.local_nodeid == 2
    assert [link.peer(1).state for link in gone.links] == ["disconnected", "disconnected"]


def test_cfgtool_n_lists_reachable_peers_only():
    ok = parse_cfgtool_nodes(sample("cfgtool-n-2node.txt"))
    peer = ok.peer(2)
    assert [(x.link, x.local_address, x.remote_address, x.enabled, x.connected, x.mtu)
            for x in peer.links] == [(0, "10.254.0.1", "10.254.0.2", True, True, 1397),
                                     (1, "10.254.1.1", "10.254.1.2", True, True, 1397)]
    down = parse_cfgtool_nodes(sample("cfgtool-n-link1-down.txt"))
    assert down.peer(2).link(1).enabled and not down.peer(2).link(1).connected
    assert parse_cfgtool_nodes(sample("cfgtool-n-peer-gone.txt")).peers == ()


def test_knet_stats_latency_and_state():
    stats = {(s.nodeid, s.link): s for s in parse_knet_stats(sample("cmapctl-stats-2node.txt"))}
    assert set(stats) == {(1, 0), (2, 0), (2, 1)}
    own = stats[(1, 0)]
    assert own.latency_samples == 0 and own.latency_min_us is None and own.latency_ave_us is None
    link0 = stats[(2, 0)]
    assert (link0.latency_ave_us, link0.latency_min_us, link0.latency_max_us) == (279, 279, 599)
    assert (link0.latency_samples, link0.connected, link0.mtu) == (10, True, 1397)
    down = {(s.nodeid, s.link): s
            for s in parse_knet_stats(sample("cmapctl-stats-link1-down.txt"))}
    assert not down[(2, 1)].connected and down[(2, 1)].down_count == 2


def test_knet_stats_refuses_foreign_text():
    with pytest.raises(StatusUnparsable):
        parse_knet_stats("this is not cmapctl output\n")


# -- live: a real 2-node, 2-link corosync in network namespaces ------------------------------------

CONF = """totem {{
  version: 2
  cluster_name: parsetest
  config_version: 1
  secauth: on
  link_mode: passive
  interface {{
    linknumber: 0
  }}
  interface {{
    linknumber: 1
  }}
}}
nodelist {{
{nodes}
}}
quorum {{
  provider: corosync_votequorum
}}
logging {{
  to_stderr: yes
  to_syslog: no
}}
"""


def _sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def corosync_pair(tmp_path: Path):
    """Two namespaces joined by one veth pair per link, each running `corosync -f` with its
    own /etc/corosync, /var/lib/corosync and /run (a private mount namespace)."""
    if os.geteuid() != 0 or not shutil.which("corosync") or not shutil.which("ip"):
        pytest.skip("needs root, iproute2 and corosync")
    tag = secrets.token_hex(3)
    names = [f"pvsp{tag}a", f"pvsp{tag}b"]
    procs: list[subprocess.Popen] = []
    made: list[str] = []
    try:
        for ns in names:
            _sh("ip", "netns", "add", ns)
            made.append(ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for link in (0, 1):
            a, b = f"vp{tag}{link}a", f"vp{tag}{link}b"
            _sh("ip", "link", "add", a, "netns", names[0], "type", "veth", "peer", "name", b,
                "netns", names[1])
            for i, (ns, dev) in enumerate(zip(names, (a, b)), 1):
                _sh("ip", "-n", ns, "addr", "add", f"10.254.{100 + link}.{i}/24", "dev", dev)
                _sh("ip", "-n", ns, "link", "set", dev, "up")
        key = tmp_path / "authkey"
        _sh("corosync-keygen", "-l", "-k", str(key))
        nodes = "\n".join(
            f"  node {{\n    name: n{i}\n    nodeid: {i}\n    ring0_addr: 10.254.100.{i}\n"
            f"    ring1_addr: 10.254.101.{i}\n  }}" for i in (1, 2))
        for i, ns in enumerate(names, 1):
            d = tmp_path / f"n{i}"
            for sub in ("etc", "var"):
                (d / sub).mkdir(parents=True)
            (d / "etc/corosync.conf").write_text(CONF.format(nodes=nodes))
            shutil.copy(key, d / "etc/authkey")
            (d / "etc/authkey").chmod(0o400)
            script = (f"mount --make-rprivate / && mount --bind {d}/etc /etc/corosync && "
                      f"mount --bind {d}/var /var/lib/corosync && mount -t tmpfs tmpfs /run && "
                      "exec corosync -f")
            log = open(d / "log", "w")
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "-m", "sh",
                                           "-c", script], stdout=log, stderr=log))
            log.close()
        yield names, tag
    finally:
        for proc in procs:
            _stop(proc)
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)


def _until(probe, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.lab
def test_live_corosync_output_parses(corosync_pair):
    names, tag = corosync_pair
    ns = names[0]

    def quorate():
        out = _in(ns, "corosync-quorumtool", "-s")
        return out.returncode == 0 and parse_quorum_status(out.stdout)

    status = _until(quorate)
    assert status, "the lab corosync pair never became quorate"
    assert status.quorate and status.total_votes == 2 and status.node_id == 1
    assert [(m.nodeid, m.name, m.local) for m in status.members] == [(1, "n1", True),
                                                                     (2, "n2", False)]

    def all_connected():
        links = parse_cfgtool_status(_in(ns, "corosync-cfgtool", "-s").stdout)
        return all(link.peer(2) and link.peer(2).connected for link in links.links) and links
    links = _until(all_connected)
    assert links and [link.address for link in links.links] == ["10.254.100.1", "10.254.101.1"]
    peers = parse_cfgtool_nodes(_in(ns, "corosync-cfgtool", "-n").stdout)
    assert [(x.link, x.remote_address, x.connected) for x in peers.peer(2).links] == [
        (0, "10.254.100.2", True), (1, "10.254.101.2", True)]

    def sampled():
        stats = {(s.nodeid, s.link): s
                 for s in parse_knet_stats(_in(ns, "corosync-cmapctl", "-m", "stats").stdout)}
        pair = [stats.get((2, 0)), stats.get((2, 1))]
        return all(s and s.latency_samples > 0 for s in pair) and pair
    pair = _until(sampled)
    assert pair and all(s.connected and s.latency_ave_us is not None for s in pair)

    _sh("ip", "-n", ns, "link", "set", f"vp{tag}1a", "down")

    def link1_down():
        links = parse_cfgtool_status(_in(ns, "corosync-cfgtool", "-s").stdout)
        return links.link(1).peer(2).state == "disconnected" and links
    down = _until(link1_down)
    assert down and down.link(0).peer(2).connected
    assert parse_quorum_status(_in(ns, "corosync-quorumtool", "-s").stdout).quorate
