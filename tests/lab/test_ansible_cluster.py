"""The collection against lab nodes with the real ansible-playbook, over SSH through each node's
own sshd (`pvestrap lab inventory`): real corosync 3 (knet), real probes, real nftables."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from pvestrap.lab import names
from pvestrap.lab.inventory import inventory
from pvestrap.lab.lab import Lab
from pvestrap.corosync.status import parse_cfgtool_status, parse_quorum_status

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def write_inventory(lab: Lab, tmp_path: Path, clusters: int) -> Path:
    lab.start("sshd")
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps(inventory(lab.state, clusters)))
    return path


def etc_hash(lab: Lab, index: int) -> dict[str, tuple[int, str]]:
    """Every file of the node's own /etc (the upper layer of its overlay, where every write to
    /etc inside the node lands): name -> (mode, sha256)."""
    folder = names.Layout(lab.prefix).node_dir(index) / "etc"
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            data = path.read_bytes() if path.is_file() else os.readlink(path).encode()
            out[str(path.relative_to(folder))] = (stat.S_IMODE(path.lstat().st_mode),
                                                  hashlib.sha256(data).hexdigest())
    return out


def quorum(lab: Lab, index: int):
    result = lab.exec(index, ["corosync-quorumtool", "-s"])
    return parse_quorum_status(result.stdout) if result.returncode in (0, 2) else None


def assert_cluster(lab: Lab, indexes: list[int], links: int) -> None:
    """Quorate on every node with exactly INDEXES as members; every link up to every peer."""
    for index in indexes:
        status = quorum(lab, index)
        assert status is not None and status.quorate, f"n{index} not quorate"
        assert {m.nodeid for m in status.nodes_only} == set(indexes)
        cfg = parse_cfgtool_status(lab.exec(index, ["corosync-cfgtool", "-s"]).stdout)
        assert [link.link for link in cfg.links] == list(range(links))
        for link in cfg.links:
            assert {p.nodeid for p in link.peers if p.connected} == set(indexes), (index, link)


def fleet_lines(ansible_collection) -> dict[str, dict]:
    """The fleet summary the run wrote: its per-cluster lines by group."""
    summary = json.loads((ansible_collection["work"] / "build/reports/fleet.json").read_text())
    return {f["payload"]["group"]: f for s in summary["sections"] for f in s["findings"]
            if f["code"].startswith("fleet-cluster-")}


def all_ok(recap: dict, hosts: list[str], changed: int | None = None) -> None:
    for host in hosts:
        assert recap[host]["failed"] == 0 and recap[host]["unreachable"] == 0, (host, recap)
        if changed is not None:
            assert recap[host]["changed"] == changed, (host, recap)


def test_one_run_builds_two_clusters_and_a_second_run_changes_nothing(
        lab, tmp_path, ansible_collection):
    six = lab(nodes=6, links=2)
    path = write_inventory(six, tmp_path, clusters=2)
    hosts = [six.node(i).name for i in range(1, 7)]

    first = ansible_collection["play"](path)
    assert first.returncode == 0, first.stdout[-4000:]
    all_ok(ansible_collection["recap"](first.stdout), hosts + ["localhost"])
    assert_cluster(six, [1, 2, 3], 2)
    assert_cluster(six, [4, 5, 6], 2)
    group = six.prefix.replace("-", "_")
    lines = fleet_lines(ansible_collection)
    assert {lines[f"{group}_c{k}"]["code"] for k in (1, 2)} == {"fleet-cluster-passed"}
    report = json.loads((ansible_collection["work"] / f"build/reports/{group}_c1.json")
                        .read_text())
    assert report["matrices"]["link1"]["state"][0] == [None, "open", "open"]
    conf = six.node(1).path("/etc/corosync/corosync.conf").read_text()
    assert f"cluster_name: {six.prefix}-c1" in conf
    assert six.node(4).path("/etc/corosync/authkey").read_bytes() != \
        six.node(1).path("/etc/corosync/authkey").read_bytes()

    before = {i: etc_hash(six, i) for i in range(1, 7)}
    rings = {i: quorum(six, i).ring_id for i in range(1, 7)}
    second = ansible_collection["play"](path)
    assert second.returncode == 0, second.stdout[-4000:]
    all_ok(ansible_collection["recap"](second.stdout), hosts + ["localhost"], changed=0)
    assert {i: etc_hash(six, i) for i in range(1, 7)} == before
    assert {i: quorum(six, i).ring_id for i in range(1, 7)} == rings  # nobody restarted


def test_check_mode_on_a_fresh_lab_shows_every_diff_and_changes_nothing(
        lab, tmp_path, ansible_collection):
    four = lab(nodes=4, links=2)
    path = write_inventory(four, tmp_path, clusters=2)
    before = {i: etc_hash(four, i) for i in range(1, 5)}

    dry = ansible_collection["play"](path, "--check", "--diff")
    assert dry.returncode == 0, dry.stdout[-4000:]
    all_ok(ansible_collection["recap"](dry.stdout),
           [four.node(i).name for i in range(1, 5)] + ["localhost"])
    out = dry.stdout
    assert out.count("+++ after: /etc/corosync/corosync.conf") == 4
    assert out.count("+++ after: /etc/corosync/authkey") == 4
    assert out.count("+<secret>") == 4
    for k in (1, 2):
        assert f"+    cluster_name: {four.prefix}-c{k}" in out or \
            f"+  cluster_name: {four.prefix}-c{k}" in out
    assert {i: etc_hash(four, i) for i in range(1, 5)} == before
    assert all(quorum(four, i) is None for i in range(1, 5))


def test_a_blocked_port_in_cluster_b_stops_b_at_preflight_and_a_is_built(
        lab, tmp_path, ansible_collection):
    six = lab(nodes=6, links=2, drop=["n5:udp/5405"])
    path = write_inventory(six, tmp_path, clusters=2)
    before = {i: etc_hash(six, i) for i in (4, 5, 6)}

    run = ansible_collection["play"](path)
    assert run.returncode != 0
    recap = ansible_collection["recap"](run.stdout)
    all_ok(recap, [six.node(i).name for i in (1, 2, 3)] + ["localhost"])
    for i in (4, 5, 6):
        assert recap[six.node(i).name]["failed"] == 1, recap
    out = run.stdout
    assert "link-port-filtered" in out
    group = six.prefix.replace("-", "_")
    lines = fleet_lines(ansible_collection)
    assert lines[f"{group}_c1"]["code"] == "fleet-cluster-passed"
    assert lines[f"{group}_c2"]["code"] == "fleet-cluster-failed"
    assert "link-port-filtered" in lines[f"{group}_c2"]["message"]
    assert f"cluster {six.prefix}-c2 (group " in out and "is not built: preflight failed" in out
    assert_cluster(six, [1, 2, 3], 2)
    assert {i: etc_hash(six, i) for i in (4, 5, 6)} == before
    assert all(quorum(six, i) is None for i in (4, 5, 6))
