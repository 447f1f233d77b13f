"""The fleet: an Ansible inventory's cluster groups as answer files, and what only the whole
fleet shows (pvestrap.fleet; the input is `ansible-inventory --list --export`)."""

from __future__ import annotations

import copy
import json

import pytest

from pvestrap import fleet, fleet_report
from pvestrap.answers import loads
from pvestrap.errors import UserError
from pvestrap.findings import Severity

LINKS = [{"number": 0, "network": "10.7.0.0/24"}, {"number": 1, "network": "10.8.0.0/24"}]


def export(clusters: dict[str, tuple[str, list[str]]], parent_vars=None) -> dict:
    """An `ansible-inventory --list --export` document: group -> (cluster name, hosts)."""
    doc = {"_meta": {"hostvars": {}}, "all": {"children": ["ungrouped", "pvestrap_clusters"]},
           "pvestrap_clusters": {"children": list(clusters),
                                 "vars": parent_vars or {"pvestrap_links": LINKS}}}
    for group, (name, hosts) in clusters.items():
        doc[group] = {"hosts": hosts, "vars": {"pvestrap_cluster": {"name": name}}}
        for host in hosts:
            k = int(host.rsplit("n", 1)[1])
            doc["_meta"]["hostvars"][host] = {"pvestrap_node": {
                "link0": f"10.7.0.{k}", "link1": f"10.8.0.{k}"}}
    return doc


def codes(groups) -> list[str]:
    return [f.code for f in fleet.fleet_findings(groups) if f.severity is Severity.FAIL]


def test_each_group_becomes_an_answer_file_that_loads_back():
    groups = fleet.cluster_groups(export({"ga": ("alpha", ["pve-n1", "pve-n2"]),
                                          "gb": ("beta", ["pve-n3", "pve-n4"])}))
    assert [g.group for g in groups] == ["ga", "gb"]
    a = groups[0]
    assert a.error is None and a.plan.cluster_name == "alpha"
    assert [n.name for n in a.plan.nodes] == ["pve-n1", "pve-n2"]
    assert loads(a.answers) == a.plan
    assert a.plan.link_numbers == (0, 1)
    assert a.plan.node(a.plan.nodes[0].name).addresses == {0: "10.7.0.1", 1: "10.8.0.1"}


def test_node_names_default_to_the_first_label_of_the_host():
    doc = export({"ga": ("alpha", ["pve-n1"])})
    doc["ga"]["hosts"] = ["pve1.example.org"]
    doc["_meta"]["hostvars"]["pve1.example.org"] = doc["_meta"]["hostvars"].pop("pve-n1")
    [group] = fleet.cluster_groups(doc)
    assert group.plan.nodes[0].name == "pve1"


def test_a_bad_group_is_reported_with_key_paths_and_lines():
    doc = export({"ga": ("alpha", ["h-n1", "h-n2"])})
    doc["_meta"]["hostvars"]["h-n2"]["pvestrap_node"]["link0"] = "10.7.0.1"
    doc["ga"]["vars"]["pvestrap_cluster"]["colour"] = "red"
    [group] = fleet.cluster_groups(doc)
    assert group.plan is None
    text = group.error.render()
    assert "inventory group ga (as an answer file):" in text
    assert "colour" in text and "10.7.0.1" in text
    [finding] = fleet.invalid_findings([group])
    assert finding.code == "fleet-group-invalid" and finding.subject == "ga"


def test_an_inventory_without_cluster_groups_is_refused():
    with pytest.raises(UserError) as caught:
        fleet.cluster_groups({"all": {"children": ["ungrouped"]}})
    assert caught.value.code == "fleet-parent-missing"


def test_the_same_cluster_name_in_two_groups_fails_naming_both():
    groups = fleet.cluster_groups(export({"rack1": ("prod", ["a-n1", "a-n2"]),
                                          "rack2": ("prod", ["b-n3", "b-n4"])}))
    [dup] = [f for f in fleet.fleet_findings(groups) if f.code == "fleet-cluster-name-duplicate"]
    assert dup.severity is Severity.FAIL and dup.payload["groups"] == ["rack1", "rack2"]
    assert "rack1" in dup.message and "rack2" in dup.message


def test_a_host_in_two_clusters_and_a_shared_address_fail():
    doc = export({"ga": ("alpha", ["a-n1", "a-n2"]), "gb": ("beta", ["b-n3", "a-n2"])})
    found = codes(fleet.cluster_groups(doc))
    assert "fleet-node-in-two-clusters" in found and "fleet-address-duplicate" in found


def test_overlapping_but_different_networks_fail_identical_ones_are_shared():
    doc = export({"ga": ("alpha", ["a-n1", "a-n2"]), "gb": ("beta", ["b-n3", "b-n4"])})
    assert codes(fleet.cluster_groups(doc)) == []
    shared = [f.code for f in fleet.fleet_findings(fleet.cluster_groups(doc))]
    assert shared.count("fleet-network-shared") == 2
    wider = copy.deepcopy(doc)
    wider["gb"]["vars"]["pvestrap_links"] = [{"number": 0, "network": "10.7.0.0/16"},
                                             {"number": 1, "network": "10.9.0.0/24"}]
    for host in ("b-n3", "b-n4"):
        wider["_meta"]["hostvars"][host]["pvestrap_node"]["link1"] = f"10.9.0.{host[-1]}"
    assert codes(fleet.cluster_groups(wider)) == ["fleet-network-overlap"]


def test_a_consistent_fleet_passes():
    groups = fleet.cluster_groups(export({"ga": ("alpha", ["a-n1"]), "gb": ("beta", ["b-n2"])}))
    [only] = [f for f in fleet.fleet_findings(groups) if f.severity is not Severity.INFO]
    assert only.code == "fleet-consistent" and only.severity is Severity.PASS


def test_reports_merge_each_cluster_and_summarise_the_fleet(tmp_path):
    groups = fleet.cluster_groups(export({"ga": ("alpha", ["a-n1", "a-n2"]),
                                          "gb": ("beta", ["b-n3", "b-n4"])}))
    good = {"sections": [{"name": "identity", "findings": [
        {"code": "hostname-ok", "severity": "pass", "message": "ok", "check": "hostname"}]}]}
    results = {"a-n1": {"report": good}, "a-n2": {"report": {"member": True}},
               "b-n3": {"report": good},
               "b-n4": {"report": None, "error": "preflight on b-n4: 1 FAIL"}}
    written = fleet_report.write_reports(str(tmp_path), groups, fleet.fleet_findings(groups),
                                         results)
    assert sorted(written) == ["fleet", "ga", "gb"]
    for name in written:
        assert (tmp_path / f"{name}.html").read_text().startswith("<!")
    summary = json.loads((tmp_path / "fleet.json").read_text())
    lines = {f["subject"]: f for s in summary["sections"] for f in s["findings"]
             if f["code"].startswith("fleet-cluster-")}
    assert lines["ga: alpha"]["code"] == "fleet-cluster-passed"
    assert lines["gb: beta"]["code"] == "fleet-cluster-failed"
    assert "b-n4: preflight on b-n4: 1 FAIL" in lines["gb: beta"]["message"]
    beta = json.loads((tmp_path / "gb.json").read_text())
    assert beta["summary"]["failures"] == 1 and set(beta["matrices"]) == {"link0", "link1"}


def test_links_without_a_network_are_compared_by_their_addresses_only():
    # pvestrap_links may leave out a link's network; the overlap check once fed None to
    # ipaddress.ip_network and crashed the whole fleet check.
    bare = [{"number": 0}, {"number": 1}]
    doc = export({"ga": ("alpha", ["a-n1"]), "gb": ("beta", ["b-n2"])},
                 parent_vars={"pvestrap_links": bare})
    groups = fleet.cluster_groups(doc)
    assert all(g.plan is not None and g.plan.links[0].network is None for g in groups)
    assert codes(groups) == []
    clash = export({"ga": ("alpha", ["a-n1"]), "gb": ("beta", ["b-n1"])},
                   parent_vars={"pvestrap_links": bare})
    assert codes(fleet.cluster_groups(clash)) == ["fleet-address-duplicate"] * 2
