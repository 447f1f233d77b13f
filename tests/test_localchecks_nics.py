"""NIC inventory, free NICs and link layout from recorded `ip -j -d addr` output.

The veth/bridge entries below were recorded from a real network namespace on the project's
machine. Its kernel has no bonding and no 802.1Q, so the physical NIC, bond and VLAN entries
are written in iproute2's JSON format by hand (same keys as on a PVE host).
"""

from __future__ import annotations

import json

import pytest

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import IfAddress, Interface, Machine, read_machine
from pvestrap.checks.nics import (InventoryCheck, LinkAddressCheck, LinkLayoutCheck, free_nics,
                                  nic_kinds)
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.system import CommandResult

RECORDED_NETNS = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536,
     "operstate": "UNKNOWN", "link_type": "loopback", "address": "00:00:00:00:00:00",
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"},
                   {"family": "inet6", "local": "::1", "prefixlen": 128, "scope": "host"}]},
    {"ifindex": 2, "link": "eno1", "ifname": "eno2", "flags": ["BROADCAST", "MULTICAST"],
     "mtu": 1500, "operstate": "DOWN", "link_type": "ether", "address": "6a:21:2b:81:e5:fd",
     "linkinfo": {"info_kind": "veth"}, "addr_info": []},
    {"ifindex": 3, "link": "eno2", "ifname": "eno1",
     "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP", "M-DOWN"], "mtu": 1500,
     "master": "vmbr0", "operstate": "LOWERLAYERDOWN", "link_type": "ether",
     "address": "9e:2d:61:30:c7:0e", "linkinfo": {"info_kind": "veth", "info_slave_kind": "bridge"},
     "addr_info": []},
    {"ifindex": 4, "ifname": "vmbr0", "flags": ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"],
     "mtu": 1500, "operstate": "DOWN", "link_type": "ether", "address": "9e:2d:61:30:c7:0e",
     "linkinfo": {"info_kind": "bridge"},
     "addr_info": [{"family": "inet", "local": "192.168.7.11", "prefixlen": 24,
                    "scope": "global"}]},
]
UP = ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"]
HANDMADE_HOST = [
    RECORDED_NETNS[0],
    {"ifindex": 2, "ifname": "enp1s0", "flags": UP, "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:01", "parentbus": "pci", "master": "vmbr0",
     "linkinfo": {"info_slave_kind": "bridge"}, "addr_info": []},
    {"ifindex": 3, "ifname": "enp2s0", "flags": UP, "mtu": 9000, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:02", "parentbus": "pci", "addr_info": [
         {"family": "inet6", "local": "fe80::5054:ff:fe00:2", "prefixlen": 64, "scope": "link"}]},
    {"ifindex": 4, "ifname": "enp3s0", "flags": UP, "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:03", "parentbus": "pci", "master": "bond0",
     "linkinfo": {"info_slave_kind": "bond"}, "addr_info": []},
    {"ifindex": 5, "ifname": "enp4s0", "flags": UP, "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:04", "parentbus": "pci", "master": "bond0",
     "linkinfo": {"info_slave_kind": "bond"}, "addr_info": []},
    {"ifindex": 6, "ifname": "bond0", "flags": UP + ["MASTER"], "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:03", "linkinfo": {"info_kind": "bond"},
     "addr_info": [{"family": "inet", "local": "10.254.0.1", "prefixlen": 24, "scope": "global"}]},
    {"ifindex": 7, "ifname": "vmbr0", "flags": UP, "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "52:54:00:00:00:01", "linkinfo": {"info_kind": "bridge"},
     "addr_info": [{"family": "inet", "local": "192.168.7.11", "prefixlen": 24,
                    "scope": "global"}]},
    {"ifindex": 8, "link": "vmbr0", "ifname": "vmbr0.20", "flags": UP, "mtu": 1500,
     "operstate": "UP", "link_type": "ether", "address": "52:54:00:00:00:01",
     "linkinfo": {"info_kind": "vlan"},
     "addr_info": [{"family": "inet", "local": "10.254.1.1", "prefixlen": 24, "scope": "global"}]},
    {"ifindex": 9, "ifname": "tap100i0", "flags": UP, "mtu": 1500, "operstate": "UNKNOWN",
     "link_type": "ether", "address": "fe:00:00:00:01:00", "master": "vmbr0",
     "linkinfo": {"info_kind": "tun", "info_slave_kind": "bridge"}, "addr_info": []},
    {"ifindex": 10, "ifname": "veth101i0", "flags": UP, "mtu": 1500, "operstate": "UP",
     "link_type": "ether", "address": "fe:00:00:00:02:00", "linkinfo": {"info_kind": "veth"},
     "addr_info": []},
]


def replay(addr_json, default_dev="vmbr0"):
    """A Runner answering the two commands read_machine runs, as recorded."""
    def runner(argv):
        if list(argv[:4]) == ["ip", "-j", "-d", "addr"]:
            return CommandResult(tuple(argv), 0, json.dumps(addr_json))
        if "route" in argv:
            routes = [{"dst": "default", "dev": default_dev}] if "-4" in argv else []
            return CommandResult(tuple(argv), 0, json.dumps(routes))
        raise AssertionError(f"unexpected command {argv}")
    return runner


@pytest.fixture
def host(tmp_path):
    bond = tmp_path / "sys/class/net/bond0/bonding"
    bond.mkdir(parents=True)
    (bond / "mode").write_text("802.3ad 4\n")
    (bond / "lacp_rate").write_text("slow 0\n")
    (tmp_path / "sys/class/net/enp2s0").mkdir(parents=True)
    (tmp_path / "sys/class/net/enp2s0/speed").write_text("10000\n")
    (tmp_path / "sys/class/net/enp2s0/carrier").write_text("1\n")
    return read_machine(str(tmp_path), replay(HANDMADE_HOST))


def plan(addresses, links=None):
    nodes = tuple(Node(n, i + 1, a) for i, (n, a) in enumerate(addresses.items()))
    numbers = links or sorted({k for a in addresses.values() for k in a})
    return ClusterPlan("lab", nodes, tuple(Link(n) for n in numbers))


def ctx(machine, addresses=None, **kw):
    p = plan(addresses) if addresses else None
    return Context(plan=p, node="pve1" if p else None, options={"machine": machine}, **kw)


def test_read_machine_classifies_every_kind(host):
    kinds = {i.name: i.kind for i in host.interfaces}
    assert kinds == {"lo": "loopback", "enp1s0": "physical", "enp2s0": "physical",
                     "enp3s0": "physical", "enp4s0": "physical", "bond0": "bond",
                     "vmbr0": "bridge", "vmbr0.20": "vlan", "tap100i0": "virtual",
                     "veth101i0": "veth"}
    bond = host.interface("bond0")
    assert (bond.bond_mode, bond.lacp_rate) == ("802.3ad", "slow")
    assert host.interface("enp2s0").speed_mbps == 10000
    assert host.interface("enp2s0").carrier is True
    assert host.interface("vmbr0.20").parent == "vmbr0"
    assert host.default_route == ("vmbr0",)
    assert Machine.from_dict(json.loads(json.dumps(host.to_dict()))) == host


def test_recorded_namespace_veths_and_bridge(tmp_path):
    m = read_machine(str(tmp_path), replay(RECORDED_NETNS))
    assert [(i.name, i.kind, i.master) for i in m.interfaces] == [
        ("lo", "loopback", None), ("eno2", "veth", None), ("eno1", "veth", "vmbr0"),
        ("vmbr0", "bridge", None)]
    assert not m.interface("vmbr0").up  # UP but NO-CARRIER: corosync could not send
    assert m.interface("eno2").parent is None  # a veth's "link" is its peer, not a parent


def test_free_nics_on_a_host_are_physical_unenslaved_and_addressless(host):
    # enp2s0 has only a link-local fe80:: address: still free. The guest veth is never offered
    # on a machine that has physical NICs.
    assert [i.name for i in free_nics(host)] == ["enp2s0"]
    assert nic_kinds(host) == {"physical"}
    found = InventoryCheck().run(ctx(host))
    assert [f.code for f in found] == ["nic-inventory", "nic-free"]
    free = found[1]
    assert free.severity is Severity.INFO and free.payload["name"] == "enp2s0"
    assert free.payload["offer_for_links"] is True and free.payload["speed_mbps"] == 10000
    rows = {r["name"]: r for r in found[0].payload["interfaces"]}
    assert rows["enp3s0"]["master"] == "bond0" and rows["bond0"]["addresses"] == ["10.254.0.1/24"]


def test_in_a_namespace_without_physical_nics_spare_veths_are_free(tmp_path):
    m = read_machine(str(tmp_path), replay(RECORDED_NETNS))
    assert nic_kinds(m) == {"veth"}
    assert [i.name for i in free_nics(m)] == ["eno2"]  # eno1 is a bridge port


def test_link_address_on_an_up_interface_passes_else_fails(host):
    found = LinkAddressCheck().run(ctx(host, {"pve1": {0: "10.254.0.1", 1: "10.254.9.1"},
                                              "pve2": {0: "10.254.0.2", 1: "10.254.9.2"}}))
    assert [(f.code, f.subject) for f in found] == [("link-address-local", "pve1/link0"),
                                                   ("link-address-missing", "pve1/link1")]
    assert found[0].payload["interface"] == "bond0"
    assert found[1].severity is Severity.FAIL and found[1].payload["interface"] is None


def test_link_address_on_a_down_interface_is_missing():
    down = Interface("eth1", "physical", flags=("UP",), operstate="DOWN",
                     addresses=(IfAddress("10.254.0.1", 24),))
    m = Machine("pve1", (down,))
    [f] = LinkAddressCheck().run(ctx(m, {"pve1": {0: "10.254.0.1"}}))
    assert f.code == "link-address-missing" and f.payload["operstate"] == "DOWN"


def test_link_address_without_plan_is_skipped(host):
    [f] = LinkAddressCheck().run(ctx(host))
    assert f.severity is Severity.SKIP


def test_link0_on_a_vlan_of_the_management_bridge_shares_it(host):
    found = LinkLayoutCheck().run(ctx(host, {"pve1": {0: "10.254.1.1", 1: "10.254.0.1"}}))
    [share] = [f for f in found if f.code == "link0-shares-management"]
    assert share.payload == {"link": 0, "interface": "vmbr0.20", "management": "vmbr0",
                             "shared": ["enp1s0"]}


def test_link0_on_its_own_bond_with_slow_lacp(host):
    found = LinkLayoutCheck().run(ctx(host, {"pve1": {0: "10.254.0.1", 1: "10.254.1.1"}}))
    assert sorted(f.code for f in found) == ["bond-lacp-slow"]
    assert found[0].payload == {"link": 0, "bond": "bond0", "mode": "802.3ad",
                                "lacp_rate": "slow"}


@pytest.mark.parametrize("mode", ["balance-rr", "balance-xor", "balance-tlb", "balance-alb"])
def test_load_balancing_bond_modes_are_unsuitable(mode):
    slaves = tuple(Interface(f"eth{i}", "physical", flags=tuple(["UP", "LOWER_UP"]),
                             master="bond1") for i in (1, 2))
    bond = Interface("bond1", "bond", flags=("UP", "LOWER_UP"), bond_mode=mode,
                     addresses=(IfAddress("10.254.0.1", 24),))
    bridge = Interface("vmbr1", "bridge", flags=("UP", "LOWER_UP"),
                       addresses=(IfAddress("10.254.1.1", 24),))
    m = Machine("pve1", (*slaves, bond, bridge), ("eth0",))
    found = LinkLayoutCheck().run(ctx(m, {"pve1": {0: "10.254.0.1", 1: "10.254.1.1"}}))
    assert [f.code for f in found] == ["bond-mode-unsuitable"]
    assert found[0].payload["mode"] == mode


def test_802_3ad_with_fast_lacp_and_active_backup_are_fine():
    for mode, rate in (("802.3ad", "fast"), ("active-backup", None)):
        bond = Interface("bond1", "bond", flags=("UP", "LOWER_UP"), bond_mode=mode,
                         lacp_rate=rate, addresses=(IfAddress("10.254.0.1", 24),))
        other = Interface("eth5", "physical", flags=("UP", "LOWER_UP"),
                          addresses=(IfAddress("10.254.1.1", 24),))
        found = LinkLayoutCheck().run(ctx(Machine("pve1", (bond, other)),
                                          {"pve1": {0: "10.254.0.1", 1: "10.254.1.1"}}))
        assert [f.code for f in found] == ["link-layout-ok"], mode


def test_single_link_has_no_redundancy(host):
    found = LinkLayoutCheck().run(ctx(host, {"pve1": {0: "10.254.0.1"}}))
    assert "link-no-redundancy" in [f.code for f in found]
    assert "link-layout-ok" not in [f.code for f in found]


def test_two_links_over_the_same_nic_are_flagged():
    a = Interface("eth1", "physical", flags=("UP", "LOWER_UP"),
                  addresses=(IfAddress("10.254.0.1", 24), IfAddress("10.254.1.1", 24)))
    found = LinkLayoutCheck().run(ctx(Machine("pve1", (a,)),
                                      {"pve1": {0: "10.254.0.1", 1: "10.254.1.1"}}))
    assert [f.code for f in found] == ["links-share-nic"]
    assert found[0].payload == {"links": [0, 1], "shared": ["eth1"]}


def test_link0_directly_on_the_default_route_device():
    eth0 = Interface("eth0", "physical", flags=("UP", "LOWER_UP"),
                     addresses=(IfAddress("192.168.7.11", 24),))
    eth1 = Interface("eth1", "physical", flags=("UP", "LOWER_UP"),
                     addresses=(IfAddress("10.254.1.1", 24),))
    m = Machine("pve1", (eth0, eth1), ("eth0",))
    found = LinkLayoutCheck().run(ctx(m, {"pve1": {0: "192.168.7.11", 1: "10.254.1.1"}}))
    assert [f.code for f in found] == ["link0-shares-management"]
    assert found[0].payload["shared"] == ["eth0"]


def test_a_link_address_planned_on_a_free_nic_is_reported_as_planned_not_missing(host):
    """Standalone preflight before apply's network phase: the address is in the plan's stanza
    for the free NIC enp2s0 (preflight.planned_machine puts it there, marked planned), so it is
    `planned` (INFO, apply configures it), not a FAIL. A stanza for a NIC the node does not have
    still fails."""
    from dataclasses import replace

    from pvestrap.plan import InterfaceStanza
    from pvestrap.preflight import planned_machine

    def with_stanza(name):
        p = plan({"pve1": {0: "10.254.0.1", 1: "10.77.0.1"}, "pve2": {0: "10.254.0.2",
                                                                      1: "10.77.0.2"}})
        me = replace(p.nodes[0], interfaces=(InterfaceStanza(name, "10.77.0.1/24"),))
        p = replace(p, nodes=(me, p.nodes[1]))
        return Context(plan=p, node="pve1", options={"machine": planned_machine(host, p, "pve1")})

    found = LinkAddressCheck().run(with_stanza("enp2s0"))
    assert [(f.code, f.severity) for f in found] == [("link-address-local", Severity.PASS),
                                                    ("link-address-planned", Severity.INFO)]
    assert found[1].payload["planned_on"] == "enp2s0" and "apply" in found[1].message
    codes = [f.code for f in LinkAddressCheck().run(with_stanza("eth9"))]
    assert codes == ["link-address-local", "link-address-missing"]  # no such NIC
