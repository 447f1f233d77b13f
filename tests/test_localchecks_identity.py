"""Identity checks against recorded machine facts and a table resolver (fakes at the seams)."""

from __future__ import annotations

from pvestrap.checks.base import Context
from pvestrap.checks.identity import (HostnameCheck, NameConsistencyCheck, NamesCheck,
                                      compare_resolutions)
from pvestrap.checks.localsys import IfAddress, Interface, Machine, Sources
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node

UP = ("BROADCAST", "MULTICAST", "UP", "LOWER_UP")
DOWN = ("BROADCAST", "MULTICAST", "UP")


def nic(name, *cidrs, flags=UP, kind="physical", master=None):
    addrs = tuple(IfAddress(c.split("/")[0], int(c.split("/")[1])) for c in cidrs)
    return Interface(name=name, kind=kind, flags=flags, operstate="UP" if "LOWER_UP" in flags
                     else "DOWN", addresses=addrs, master=master)


def machine(*ifaces, hostname="pve1"):
    lo = Interface("lo", "loopback", flags=("LOOPBACK", "UP", "LOWER_UP"),
                   addresses=(IfAddress("127.0.0.1", 8, "host"), IfAddress("::1", 128, "host")))
    return Machine(hostname, (lo, *ifaces), ("vmbr0",))


def table(entries):
    return lambda name: tuple(entries.get(name, ()))


def plan(addresses=None, cluster="lab"):
    addresses = addresses or {"pve1": {0: "10.254.0.1"}, "pve2": {0: "10.254.0.2"}}
    nodes = tuple(Node(n, i + 1, a) for i, (n, a) in enumerate(addresses.items()))
    links = tuple(Link(n) for n in sorted({k for a in addresses.values() for k in a}))
    return ClusterPlan(cluster, nodes, links)


def run(check, **ctx):
    return check.run(Context(**ctx))


def codes(findings):
    return [f.code for f in findings]


def test_hostname_resolving_to_one_up_interface_passes_with_payload():
    m = machine(nic("vmbr0", "192.168.7.11/24"))
    src = Sources(machine=m, resolver=table({"pve1": ["192.168.7.11"]}))
    [f] = run(HostnameCheck(src))
    assert (f.code, f.severity) == ("hostname-resolves", Severity.PASS)
    assert f.payload["interface"] == "vmbr0" and f.payload["address"] == "192.168.7.11"
    assert f.subject == "pve1"


def test_debian_style_127_0_1_1_is_a_loopback_failure():
    m = machine(nic("vmbr0", "192.168.7.11/24"))
    src = Sources(machine=m, resolver=table({"pve1": ["127.0.1.1"]}))
    [f] = run(HostnameCheck(src))
    assert (f.code, f.severity) == ("hostname-loopback", Severity.FAIL)
    assert f.payload["address"] == "127.0.1.1" and f.remedy


def test_ipv6_loopback_is_a_loopback_failure_too():
    src = Sources(machine=machine(), resolver=table({"pve1": ["::1"]}))
    assert codes(run(HostnameCheck(src))) == ["hostname-loopback"]


def test_ipv4_is_chosen_first_like_corosync_ipv4_6():
    # getaddrinfo gives IPv6 first; corosync (ip_version ipv4-6) takes the IPv4 address.
    m = machine(nic("vmbr0", "192.168.7.11/24", "fd12::11/64"))
    src = Sources(machine=m, resolver=table({"pve1": ["fd12::11", "192.168.7.11"]}))
    found = run(HostnameCheck(src))
    assert found[0].payload["address"] == "192.168.7.11"
    assert found[0].payload["addresses"] == ["fd12::11", "192.168.7.11"]


def test_ipv6_first_is_flagged_when_the_links_are_ipv4():
    m = machine(nic("vmbr0", "192.168.7.11/24", "fd12::11/64"), nic("eth1", "10.254.0.1/24"))
    src = Sources(machine=m, resolver=table({"pve1": ["fd12::11", "192.168.7.11"]}))
    found = run(HostnameCheck(src), plan=plan(), node="pve1")
    assert codes(found) == ["hostname-resolves", "hostname-ipv6-first"]
    assert found[1].severity is Severity.WARN and found[1].payload["first"] == "fd12::11"


def test_ipv6_first_is_not_flagged_without_links_to_compare():
    m = machine(nic("vmbr0", "192.168.7.11/24", "fd12::11/64"))
    src = Sources(machine=m, resolver=table({"pve1": ["fd12::11", "192.168.7.11"]}))
    assert codes(run(HostnameCheck(src))) == ["hostname-resolves"]


def test_unresolved_name_fails():
    src = Sources(machine=machine(), resolver=table({}))
    [f] = run(HostnameCheck(src))
    assert (f.code, f.severity, f.payload["name"]) == ("hostname-unresolved", Severity.FAIL, "pve1")


def test_address_not_on_this_machine_fails():
    src = Sources(machine=machine(nic("vmbr0", "192.168.7.11/24")),
                  resolver=table({"pve1": ["192.168.7.99"]}))
    [f] = run(HostnameCheck(src))
    assert f.code == "hostname-address-not-local" and f.payload["interfaces"] == []


def test_address_on_two_interfaces_is_ambiguous():
    m = machine(nic("vmbr0", "192.168.7.11/24"), nic("eth3", "192.168.7.11/32"))
    src = Sources(machine=m, resolver=table({"pve1": ["192.168.7.11"]}))
    [f] = run(HostnameCheck(src))
    assert (f.code, f.severity) == ("hostname-address-ambiguous", Severity.WARN)
    assert f.payload["interfaces"] == ["vmbr0", "eth3"]


def test_interface_without_carrier_is_down():
    m = machine(nic("vmbr0", "192.168.7.11/24", flags=DOWN))
    src = Sources(machine=m, resolver=table({"pve1": ["192.168.7.11"]}))
    [f] = run(HostnameCheck(src))
    assert (f.code, f.payload["interface"]) == ("hostname-interface-down", "vmbr0")


def test_the_plans_node_name_is_resolved_not_the_host_name():
    m = machine(nic("eth0", "10.254.0.4/24"), hostname="debian")
    src = Sources(machine=m, resolver=table({"pve4": ["10.254.0.4"], "debian": ["127.0.1.1"]}))
    [f] = run(HostnameCheck(src), node="pve4")
    assert f.code == "hostname-resolves" and f.payload["name"] == "pve4"


def test_fqdn_host_name_is_shortened():
    m = machine(nic("eth0", "10.254.0.4/24"), hostname="pve4.example.org")
    src = Sources(machine=m, resolver=table({"pve4": ["10.254.0.4"]}))
    [f] = run(HostnameCheck(src))
    assert f.payload["name"] == "pve4"


def test_names_follow_the_rules():
    src = Sources(machine=machine(hostname="pve1"))
    found = run(NamesCheck(src), plan=plan(), node="pve1")
    assert codes(found) == ["node-name-valid", "cluster-name-valid"]
    bad = run(NamesCheck(Sources(machine=machine(hostname="node_1"))))
    assert codes(bad) == ["node-name-invalid"] and bad[0].severity is Severity.FAIL
    long = run(NamesCheck(Sources(machine=machine(hostname="a" * 16))))
    assert long[0].payload["problem"].startswith("longer than 15")


def test_invalid_cluster_name_in_an_unvalidated_plan_fails():
    found = run(NamesCheck(Sources(machine=machine())), plan=plan(cluster="-bad"), node="pve1")
    assert "cluster-name-invalid" in codes(found)


def test_host_name_differing_from_the_plan_is_a_warning():
    found = run(NamesCheck(Sources(machine=machine(hostname="debian"))), plan=plan(),
                node="pve1")
    [w] = [f for f in found if f.code == "hostname-node-mismatch"]
    assert w.severity is Severity.WARN and w.payload == {"hostname": "debian", "node": "pve1"}


def test_compare_resolutions_finds_the_node_that_sees_another_address():
    views = {"pve1": {"pve1": "10.0.0.1", "pve2": "10.0.0.2"},
             "pve2": {"pve1": "10.0.0.1", "pve2": "10.0.0.2"},
             "pve3": {"pve1": "10.0.0.1", "pve2": "10.9.9.9"}}
    found = compare_resolutions(views)
    [bad] = [f for f in found if f.severity is Severity.FAIL]
    assert bad.code == "hostname-mismatch" and bad.subject == "pve2"
    assert bad.payload["seen"] == {"pve1": "10.0.0.2", "pve2": "10.0.0.2", "pve3": "10.9.9.9"}
    assert [f.code for f in found if f.subject == "pve1"] == ["hostname-consistent"]


def test_compare_resolutions_reports_observers_that_cannot_resolve():
    found = compare_resolutions({"a": {"b": "10.0.0.2"}, "c": {"b": None}})
    assert codes(found) == ["peer-name-unresolved"]
    assert found[0].payload["observers"] == ["c"]


def test_name_consistency_merges_the_runners_views_with_its_own():
    m = machine(nic("eth0", "10.254.0.1/24"))
    src = Sources(machine=m, resolver=table({"pve1": ["10.254.0.1"], "pve2": ["10.254.0.2"]}))
    others = {"pve2": {"pve1": "10.254.0.1", "pve2": "10.254.0.22"}}
    found = run(NameConsistencyCheck(src), plan=plan(), node="pve1",
                options={"resolutions": others})
    assert found[0].code == "names-resolved"
    assert found[0].payload == {"observer": "pve1",
                                "resolutions": {"pve1": "10.254.0.1", "pve2": "10.254.0.2"}}
    [mismatch] = [f for f in found if f.code == "hostname-mismatch"]
    assert mismatch.subject == "pve2"


def test_name_consistency_alone_says_it_could_not_compare():
    src = Sources(machine=machine(), resolver=table({"pve1": ["10.254.0.1"]}))
    found = run(NameConsistencyCheck(src), plan=plan(), node="pve1")
    assert codes(found) == ["names-resolved", "name-consistency-single", "peer-name-unresolved"]
    assert found[0].payload["resolutions"] == {"pve1": "10.254.0.1", "pve2": None}
