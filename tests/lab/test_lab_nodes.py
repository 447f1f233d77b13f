"""Lab nodes are separate machines to the programs in them: hostname, /etc, NICs, networks."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pvestrap.lab import neighbours

pytestmark = pytest.mark.lab


def _hosts_map(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        fields = line.split("#")[0].split()
        for name in fields[1:]:
            out.setdefault(name, fields[0])
    return out


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {link["ifname"] for link in json.loads(out.stdout)}


def test_every_node_has_its_own_name_hosts_and_nics(lab):
    before = _root_links()
    three = lab(nodes=3, links=2)
    n2 = three.node(2)
    assert three.exec("n2", ["hostname"]).stdout.strip() == n2.name
    assert three.exec(n2.name, ["cat", "/etc/hostname"]).stdout.strip() == n2.name
    hosts = three.exec("n2", ["cat", "/etc/hosts"]).stdout
    ours = {name: addr for name, addr in _hosts_map(hosts).items()
            if name.startswith(three.prefix)}
    assert ours == {three.node(i).name: f"10.254.0.{i}" for i in (1, 2, 3)}
    with open("/etc/hosts", encoding="utf-8") as fh:
        assert three.prefix not in fh.read()

    addrs = json.loads(three.exec("n2", ["ip", "-j", "addr"]).stdout)
    v4 = {a["ifname"]: [i["local"] for i in a["addr_info"] if i["family"] == "inet"]
          for a in addrs}
    assert v4 == {"lo": ["127.0.0.1"], "eth0": ["10.254.0.2"], "eth1": ["10.254.1.2"],
                  "eth9": []}
    assert sorted(three.exec("n2", ["ls", "/sys/class/net"]).stdout.split()) == \
        ["eth0", "eth1", "eth9", "lo"]
    # the root namespace got nothing: no new interface, no lab address
    assert not {name for name in _root_links() - before
                if name.startswith(("eth", "br", "n")) or three.prefix in name}
    root_addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    assert "10.254." not in root_addrs


def test_nodes_reach_each_other_by_name_on_separate_link_networks(lab):
    three = lab(nodes=3, links=2)
    assert three.exec("n1", ["ping", "-c1", "-W2", three.node(3).name]).returncode == 0
    assert three.exec("n1", ["ping", "-c1", "-W2", "10.254.1.3"]).returncode == 0
    # link 0 fails alone: n3's eth0 down leaves link 1 working
    three.exec("n3", ["ip", "link", "set", "eth0", "down"], check=True)
    assert three.exec("n1", ["ping", "-c1", "-W1", "10.254.0.3"]).returncode != 0
    assert three.exec("n1", ["ping", "-c1", "-W2", "10.254.1.3"]).returncode == 0


def test_etc_and_root_are_private_to_the_node(lab):
    two = lab(nodes=2)
    # Debian's example corosync.conf on this machine is not a node's: /etc/corosync starts empty
    assert two.exec("n1", ["ls", "-A", "/etc/corosync"]).stdout.split() == ["uidgid.d"]
    assert two.exec("n1", ["ls", "-A", "/var/lib/corosync"]).stdout.split() == []
    two.exec("n1", ["sh", "-c", "echo mine > /etc/pvestrap-lab-probe && "
                    "echo mine > /root/pvestrap-lab-probe && "
                    "mv /etc/pvestrap-lab-probe /etc/hostname.new"], check=True)
    assert two.exec("n1", ["cat", "/etc/hostname.new"]).stdout == "mine\n"
    assert two.exec("n2", ["ls", "/etc/hostname.new"]).returncode != 0
    assert two.exec("n2", ["ls", "/root/pvestrap-lab-probe"]).returncode != 0
    assert not os.path.exists("/etc/hostname.new")
    assert not os.path.exists("/root/pvestrap-lab-probe")
    # a file written from outside through the node's root is what the node reads
    (two.node(2).path("/etc/corosync/corosync.conf")).write_text("# from outside\n")
    assert two.exec("n2", ["cat", "/etc/corosync/corosync.conf"]).stdout == "# from outside\n"


def test_hosts_modes_change_only_that_nodes_own_name(lab):
    two = lab(nodes=2, hosts="n2=loopback")
    n2 = two.node(2).name
    assert two.exec("n2", ["getent", "hosts", n2]).stdout.split()[0] == "127.0.1.1"
    assert two.exec("n1", ["getent", "hosts", n2]).stdout.split()[0] == "10.254.0.2"
    two.impair(hosts="n2=missing")
    assert two.exec("n2", ["getent", "hosts", n2]).returncode == 2
    assert two.exec("n2", ["getent", "hosts", two.node(1).name]).stdout.split()[0] == "10.254.0.1"
    two.impair(clear=True)
    assert two.exec("n2", ["getent", "hosts", n2]).stdout.split()[0] == "10.254.0.2"


def test_clock_offset_shows_in_date_inside_that_node_only(lab):
    two = lab(nodes=2, clock="n2=+3s")
    before = time.time()
    ahead = int(two.exec("n2", ["date", "+%s"]).stdout)
    after = time.time()
    assert int(before) + 3 <= ahead <= int(after) + 3
    plain = int(two.exec("n1", ["date", "+%s"]).stdout)
    assert int(before) <= plain <= int(time.time())
    two.impair(clock="n2=-2s")
    behind = float(two.exec("n2", ["python3", "-c", "import time; print(time.time())"]).stdout)
    assert -2.5 < behind - time.time() < -1.5


def test_mtu_is_set_on_the_nodes_nic(lab):
    two = lab(nodes=2, mtu="n2:eth0=1200")
    assert two.node(2).path("/sys/class/net/eth0/mtu").read_text().strip() == "1200"
    big = two.exec("n2", ["ping", "-c1", "-W1", "-M", "do", "-s", "1300", "10.254.0.1"])
    assert big.returncode != 0
    assert two.exec("n2", ["ping", "-c1", "-W2", "-M", "do", "-s", "1100",
                           "10.254.0.1"]).returncode == 0
    two.impair(clear=True)
    assert two.node(2).path("/sys/class/net/eth0/mtu").read_text().strip() == "1500"
    assert two.exec("n2", ["ping", "-c1", "-W2", "-M", "do", "-s", "1300",
                           "10.254.0.1"]).returncode == 0


def test_a_lab_too_large_for_the_shared_arp_table_pins_every_neighbour(lab):
    # the smallest one-link lab whose nodes could fill more than half of the kernel's table
    half = neighbours.kernel_limit() // 2
    size = next((n for n in range(2, 100) if neighbours.needed(n, 1) > half), None)
    if size is None:
        pytest.skip("this kernel's ARP table holds even a 99-node lab")
    big = lab(nodes=size, links=1)
    assert big.status()["neighbours"] == size * (size - 1)
    macs = {f"10.254.0.{i}": big.node(i).path("/sys/class/net/eth0/address").read_text().strip()
            for i in range(1, size + 1)}
    pinned = json.loads(big.exec("n2", ["ip", "-j", "neigh", "show", "nud", "permanent"]).stdout)
    assert {e["dst"]: e["lladdr"] for e in pinned} == \
        {a: mac for a, mac in macs.items() if a != "10.254.0.2"}
    assert big.exec("n2", ["ping", "-c1", "-W2", f"10.254.0.{size}"]).returncode == 0
    # a small lab resolves its neighbours by ARP, as real nodes do
    small = lab(nodes=2)
    assert small.status()["neighbours"] == 0
    assert small.exec("n2", ["ip", "-j", "neigh", "show", "nud", "permanent"]).stdout.strip() \
        in ("", "[]")
