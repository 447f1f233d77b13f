"""Real daemons in lab nodes: a quorate corosync cluster, root SSH between nodes, an NTP server."""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

from pvestrap.lab import services

pytestmark = pytest.mark.lab

NTP_QUERY = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
for _ in range(20):
    s.sendto(b"\\x23" + b"\\0" * 47, (sys.argv[1], 123))
    try:
        data = s.recv(100)
        break
    except socket.timeout:
        continue
else:
    sys.exit("no answer")
sec, frac = struct.unpack("!II", data[40:48])
print(data[1], sec - 2208988800 + frac / 2**32, time.time())
"""


def _quorum(lab, node) -> tuple[bool, list[str]]:
    out = lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
    quorate = re.search(r"^Quorate:\s+Yes", out, re.M) is not None
    members = re.findall(r"^\s+\d+\s+\d+\s+(\S+)", out.split("Membership information")[-1], re.M)
    return quorate, members


def _wait_quorum(lab, node, count, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        quorate, members = _quorum(lab, node)
        if quorate and len(members) == count or time.monotonic() > deadline:
            return quorate, members
        time.sleep(0.3)


def test_three_nodes_run_real_corosync_and_are_quorate(lab):
    three = lab(nodes=3, links=2)
    conf = three.write_corosync()
    assert "ring1_addr: 10.254.1.3" in conf
    for node in three.nodes:
        assert node.path("/etc/corosync/corosync.conf").read_text() == conf
        assert node.path("/etc/corosync/authkey").stat().st_mode & 0o777 == 0o400
    # each node lints its own config as itself (corosync -t finds the local node by address)
    assert three.exec("n2", ["corosync", "-t"]).returncode == 0
    pids = three.start("corosync")
    assert sorted(pids) == sorted(n.name for n in three.nodes)
    quorate, members = _wait_quorum(three, "n1", 3)
    assert quorate
    assert sorted(m.removesuffix(" (local)") for m in members) \
        == sorted(n.name for n in three.nodes)
    # each corosync is its node's own: n3's tool talks to n3's daemon
    out = three.exec("n3", ["corosync-cmapctl", "-g", "runtime.votequorum.this_node_id"]).stdout
    assert out.strip().endswith("= 3")
    three.stop("corosync", ["n3"])
    assert "corosync" not in three.status()["nodes"][2]["services"]
    assert "corosync" in three.status()["nodes"][0]["services"]
    quorate, members = _wait_quorum(three, "n1", 2)
    assert quorate and len(members) == 2


def test_a_one_node_lab_runs_corosync_too(lab):
    """A one-node cluster has no link for knet to open a socket on: corosync is up once it
    answers, not once it listens."""
    one = lab(nodes=1, links=1)
    one.write_corosync()
    [pid] = one.start("corosync").values()
    quorate, members = _wait_quorum(one, "n1", 1)
    assert quorate and members == [one.node(1).name]
    assert one.status()["nodes"][0]["services"]["corosync"] == pid


def test_root_logs_in_by_key_from_every_other_node(lab):
    three = lab(nodes=3, links=2)
    three.start("sshd")
    for src, dst in (("n1", three.node(2).name), ("n3", "10.254.1.1"), ("n2", "10.254.0.3")):
        out = three.exec(src, ["ssh", "-o", "BatchMode=yes", f"root@{dst}", "hostname"])
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == three.node(int(dst[-1])).name
    # root's shell start-up files are Debian's, not this machine's (a developer's .bashrc, e.g.
    # pyenv's init, would run in every session): the session's PATH is the one sshd sets
    out = three.exec("n1", ["ssh", "-o", "BatchMode=yes", f"root@{three.node(2).name}",
                            "echo $PATH"])
    assert out.stdout.strip() == f"{os.path.dirname(sys.executable)}:{services.SYSTEM_PATH}"


def test_chronyd_serves_the_nodes_faked_time_and_never_the_machines(lab):
    two = lab(nodes=2, clock="n1=+2s")
    two.start("chrony", ["n1"])
    cmd = two.exec("n1", ["cat", f"/proc/{two.status()['nodes'][0]['services']['chrony']}/cmdline"])
    assert "\0-x\0" in cmd.stdout
    out = two.exec("n2", ["python3", "-c", NTP_QUERY, two.node(1).name])
    assert out.returncode == 0, out.stderr
    stratum, server, local = out.stdout.split()
    assert int(stratum) == 8
    assert 1.5 < float(server) - float(local) < 2.5
