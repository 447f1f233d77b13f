"""The lab's impairment flags, names and cluster plan: pure tests (no root, nothing created)."""

from __future__ import annotations

import pytest

from pvestrap.errors import UserError
from pvestrap.lab import files, impair, names
from pvestrap.lab.cluster import lab_plan
from pvestrap.lab.state import LabState


def parse(kind, text, nodes=3, links=2):
    return impair.parse(kind, text, "lab1", nodes, links)


@pytest.mark.parametrize("kind,text,expected", [
    ("delay", "n2:eth0=3ms", (2, "eth0", 3.0)),
    ("delay", "lab1-n3:eth1=250us", (3, "eth1", 0.25)),
    ("delay", "n1:eth0=0.5s", (1, "eth0", 500.0)),
    ("jitter", "n2:eth0=0.5ms", (2, "eth0", 0.5)),
    ("loss", "n2:eth1=5%", (2, "eth1", 5.0)),
    ("loss", "n2:eth0=0.25%", (2, "eth0", 0.25)),
    ("drop", "n2:udp/5405", (2, "udp/5405", "drop")),
    ("reject", "n3:tcp/22", (3, "tcp/22", "reject")),
    ("clock", "n2=+2s", (2, "", 2.0)),
    ("clock", "n2=-1.5s", (2, "", -1.5)),
    ("clock", "n1=500ms", (1, "", 0.5)),
    ("hosts", "n2=loopback", (2, "", "loopback")),
    ("hosts", "lab1-n2=missing", (2, "", "missing")),
    ("mtu", "n2:eth0=1200", (2, "eth0", 1200)),
    ("mtu", "n2:eth9=9000", (2, "eth9", 9000)),
    ("carrier", "n2:eth9=off", (2, "eth9", "off")),
    ("carrier", "n3:eth1=off", (3, "eth1", "off")),
])
def test_flags_parse_to_values(kind, text, expected):
    item = parse(kind, text)
    assert (item.node, item.target, item.value) == expected
    assert item.kind == kind


@pytest.mark.parametrize("kind,text,fragment", [
    ("delay", "n2:eth0=3", "unit"),
    ("delay", "n2=3ms", "NIC is missing"),
    ("delay", "n2:eth2=3ms", "not a lab NIC"),
    ("delay", "n2:eth9=3ms", "not a lab NIC"),
    ("delay", "n4:eth0=3ms", "not a node"),
    ("delay", "other-n2:eth0=3ms", "not a node"),
    ("delay", "n2:eth0=20s", "10 s"),
    ("loss", "n2:eth0=5", "percentage"),
    ("loss", "n2:eth0=101%", "percentage"),
    ("drop", "n2:5405", "udp/PORT"),
    ("drop", "n2:udp/70000", "udp/PORT"),
    ("reject", "n2:icmp/1", "udp/PORT"),
    ("clock", "n2=2", "offset"),
    ("clock", "n2:+2s", "NODE=VALUE"),
    ("hosts", "n2=localhost", "loopback"),
    ("mtu", "n2:eth0=40", "MTU"),
    ("mtu", "n2:eth0=big", "MTU"),
    ("carrier", "n2:eth9=down", "off (no carrier)"),
    ("carrier", "n2=off", "NIC is missing"),
])
def test_bad_flags_name_the_flag_and_show_the_syntax(kind, text, fragment):
    with pytest.raises(UserError) as info:
        parse(kind, text)
    err = info.value
    assert err.exit_code == 2
    assert err.code in ("lab-flag-invalid", "lab-node-unknown")
    assert f"--{kind}" in err.message
    assert fragment in err.message or fragment in (err.remedy or "")
    assert err.remedy


def test_later_flags_replace_earlier_ones_and_zero_removes():
    first = impair.parse_flags({"delay": ["n2:eth0=1ms", "n3:eth0=2ms"], "drop": "n2:udp/5405"},
                               "lab1", 3, 1)
    items = impair.merge((), first)
    items = impair.merge(items, impair.parse_flags(
        {"delay": "n2:eth0=0ms", "reject": "n2:udp/5405", "clock": "n3=+0s"}, "lab1", 3, 1))
    assert {(i.kind, i.node, i.target, i.value) for i in items} == {
        ("delay", 3, "eth0", 2.0), ("reject", 2, "udp/5405", "reject")}


def test_carrier_on_removes_carrier_off():
    items = impair.merge((), impair.parse_flags({"carrier": "n2:eth9=off"}, "lab1", 3, 1))
    assert [(i.kind, i.node, i.target) for i in items] == [("carrier", 2, "eth9")]
    assert impair.merge(items, impair.parse_flags({"carrier": "n2:eth9=on"}, "lab1", 3, 1)) == ()


def test_relayed_nics_combine_delay_and_jitter():
    items = impair.parse_flags({"delay": "n2:eth0=1ms", "jitter": ["n2:eth0=0.5ms",
                                                                   "n3:eth1=0.2ms"]},
                               "lab1", 3, 2)
    assert impair.relayed(items) == {(2, "eth0"): (1.0, 0.5), (3, "eth1"): (0.0, 0.2)}


def test_nft_rules_cover_loss_drop_and_reject_of_one_node_only():
    items = impair.parse_flags({"loss": "n2:eth0=20%", "drop": "n2:udp/5405",
                                "reject": ["n2:udp/5406", "n2:tcp/22"], "delay": "n3:eth0=1ms"},
                               "lab1", 3, 1)
    rules = impair.nft_ruleset(items, 2)
    assert 'oifname "eth0" numgen random mod 10000 < 2000 drop' in rules
    assert "udp dport 5405 drop" in rules
    assert "udp dport 5406 reject" in rules
    assert "tcp dport 22 reject with tcp reset" in rules
    assert "chain" not in impair.nft_ruleset(items, 3)
    assert impair.nft_ruleset(items, 3).count("delete table inet pvestrap_lab") == 1


def test_flag_text_round_trips_through_status():
    for kind, text in [("delay", "n2:eth0=3ms"), ("loss", "n2:eth0=5%"), ("clock", "n2=-1.5s"),
                       ("drop", "n2:udp/5405"), ("hosts", "n2=missing"), ("mtu", "n2:eth0=1200"),
                       ("carrier", "n2:eth9=off")]:
        item = parse(kind, text)
        flag, _, value = item.flag("lab1").partition(" ")
        assert flag == f"--{kind}"
        assert parse(kind, value) == item


@pytest.mark.parametrize("prefix", ["", "Lab", "1lab", "lab_1", "lab-", "abcdefghijk", "a--b"])
def test_bad_lab_names_are_refused(prefix):
    with pytest.raises(UserError) as info:
        names.check_prefix(prefix)
    assert info.value.code == "lab-name-invalid"


def test_names_fit_linux_and_corosync_limits():
    layout = names.Layout(names.check_prefix("abcdefghij"))
    assert len(layout.node_name(names.MAX_NODES)) <= 15
    assert len(layout.switch_ns) <= 15
    assert all(len(n) <= 15 for n in names.relay_names(names.MAX_NODES, names.MAX_LINKS - 1))
    assert layout.owns_netns("abcdefghij-n12") and layout.owns_netns("abcdefghij-sw")
    assert not names.Layout("lab").owns_netns("lab-x-n1")
    assert names.prefix_of_tag("pvestrap-lab:lab-x-n12 infinity") == "lab-x"
    assert not names.Layout("lab").owns_cmdline("pvestrap-lab:lab-x-n1 infinity")
    assert not names.Layout("lab").owns_cmdline("tail -f /run/pvestrap-lab/lab/n1/var/log/x")


def test_hosts_files_follow_the_hosts_mode():
    layout = names.Layout("lab1")

    def entries(mode):
        lines = files.hosts(layout, 3, 2, mode).splitlines()
        return {line.split()[1]: line.split()[0] for line in lines}

    assert entries("normal")["lab1-n2"] == "10.254.0.2"
    assert entries("normal")["lab1-n3"] == "10.254.0.3"
    assert entries("loopback")["lab1-n2"] == "127.0.1.1"
    assert "lab1-n2" not in entries("missing")
    assert entries("missing")["lab1-n1"] == "10.254.0.1"


def test_lab_plan_describes_nodes_links_and_addresses():
    plan = lab_plan(LabState(prefix="lab1", nodes=3, links=2, holders={1: 1, 2: 2, 3: 3}))
    assert plan.cluster_name == "lab1"
    assert plan.backend == "corosync"
    assert [(n.name, n.nodeid, dict(n.addresses)) for n in plan.nodes] == [
        (f"lab1-n{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"}) for i in (1, 2, 3)]
    assert [(link.number, link.network) for link in plan.links] == [
        (0, "10.254.0.0/24"), (1, "10.254.1.0/24")]


def test_lab_plan_round_trips_through_an_answer_file():
    from pvestrap.answers import dumps, loads

    plan = lab_plan(LabState(prefix="lab-b2", nodes=4, links=1))
    again = loads(dumps(plan))
    assert again.cluster_name == "lab-b2"
    assert [(n.name, dict(n.addresses)) for n in again.nodes] == [
        (n.name, dict(n.addresses)) for n in plan.nodes]


def test_without_root_labs_are_refused_and_lab_tests_skip_with_the_reason(monkeypatch):
    import os

    from pvestrap.lab import Lab
    from pvestrap.lab.hostcheck import unavailable

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "root" in unavailable()
    with pytest.raises(UserError) as info:
        Lab.up("nonroot1", nodes=2)
    assert info.value.code == "lab-needs-root"
    assert not names.Layout("nonroot1").state_dir.exists()
