"""`pvestrap status` findings from recorded corosync 3.1.7 output (tests/data/status/).

The samples come from a real 2-node, 2-link lab cluster (nodes pveA/pveB, 10.254.L.N): all
connected, link 1 down, and node B alone after A went away. Commands are answered by a
RecordingSystem, so these tests read exactly what corosync printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.recorded import RecordingSystem
from pvestrap.report.html import render_html
from pvestrap.report.jsonout import render_json
from pvestrap.report.junit import render_junit
from pvestrap.verify import build_report, observe, runtime_version, status_report

DATA = Path(__file__).parent / "data" / "status"
CONF = "/etc/corosync/corosync.conf"


def sample(name: str) -> str:
    return (DATA / name).read_text()


def conf_text(links: int = 2, version: int = 1) -> str:
    plan = ClusterPlan(
        cluster_name="lab",
        nodes=tuple(Node(name, i, {n: f"10.254.{n}.{i}" for n in range(links)})
                    for i, name in ((1, "pveA"), (2, "pveB"))),
        links=tuple(Link(n, f"10.254.{n}.0/24") for n in range(links)))
    conf = CorosyncConf.create(plan)
    for _ in range(version - 1):
        conf = conf.bump_version()
    return conf.text()


def node(quorum="quorumtool-s-2node-quorate.txt", links="cfgtool-s-2node.txt",
         peers="cfgtool-n-2node.txt", stats="cmapctl-stats-2node.txt", running=1,
         conf: str | None = None) -> RecordingSystem:
    system = RecordingSystem({CONF: conf if conf is not None else conf_text()})
    system.on(["corosync-quorumtool", "-s"], (0, sample(quorum), ""))
    system.on(["corosync-cfgtool", "-s"], (0, sample(links), ""))
    system.on(["corosync-cfgtool", "-n"], (0, sample(peers), ""))
    system.on(["corosync-cmapctl", "-m", "stats"], (0, sample(stats), ""))
    system.on(["corosync-cmapctl", "-g", "totem.config_version"],
              (0, f"totem.config_version (u64) = {running}\n", ""))
    return system


def codes(report, severity: Severity | None = None) -> list[tuple[str, str | None]]:
    return [(f.code, f.subject) for f in report.findings
            if severity is None or f.severity is severity]


def test_healthy_two_node_cluster_passes_with_knet_latency():
    report = status_report(node())
    assert report.exit_code(strict=True) == 0
    assert codes(report) == [
        ("cluster-quorate", "cluster"), ("members-complete", "cluster"),
        ("knet-link-connected", "pveB/link0"), ("knet-link-connected", "pveB/link1"),
        ("conf-loaded", CONF)]
    quorate = report.findings[0]
    assert (quorate.payload["expected_votes"], quorate.payload["total_votes"],
            quorate.payload["quorum"]) == (2, 2, 2)
    assert report.findings[1].payload["members"] == ["pveA", "pveB"]
    link0, link1 = report.findings[2], report.findings[3]
    # stats.knet.node2.link0.latency_ave = 279 us, latency_max = 599 us (the recorded sample)
    assert (link0.payload["latency_ave_ms"], link0.payload["latency_max_ms"]) == (0.279, 0.599)
    assert link1.payload["latency_ave_ms"] == 0.171
    assert (link1.payload["local_address"], link1.payload["remote_address"],
            link1.payload["mtu"]) == ("10.254.1.1", "10.254.1.2", 1397)
    assert all(f.check == "status" for f in report.findings)
    assert report.meta["node"] == "pveA" and report.meta["cluster"] == "lab"


def test_status_only_queries():
    system = node()
    status_report(system)
    assert all(not r.mutates for r in system.records)
    assert system.commands == [
        ("corosync-quorumtool", "-s"), ("corosync-cfgtool", "-s"), ("corosync-cfgtool", "-n"),
        ("corosync-cmapctl", "-m", "stats", "stats.knet."),
        ("corosync-cmapctl", "-g", "totem.config_version")]


def test_matrices_carry_knet_rtt_and_state_for_the_heatmap():
    report = status_report(node(links="cfgtool-s-link1-down.txt",
                                peers="cfgtool-n-link1-down.txt",
                                stats="cmapctl-stats-link1-down.txt"))
    link0, link1 = report.matrices["link0"], report.matrices["link1"]
    assert link0["nodes"] == ["pveA", "pveB"]
    assert link0["rtt_ms"][0][1] == pytest.approx(0.257)
    assert link0["state"][0][1] == "connected"
    assert (link1["rtt_ms"][0][1], link1["state"][0][1]) == (None, "disconnected")
    assert link0["rtt_ms"][1] == [None, None]  # only this node's row is known here
    html = render_html(report)
    assert 'data-link="link0"' in html and "0.26 ms" in html
    data = json.loads(render_json(report))
    assert data["matrices"]["link1"]["state"][0][1] == "disconnected"
    assert 'failures="1"' in render_junit(report)


def test_a_disconnected_link_fails_for_exactly_that_link_and_peer():
    report = status_report(node(links="cfgtool-s-link1-down.txt",
                                peers="cfgtool-n-link1-down.txt",
                                stats="cmapctl-stats-link1-down.txt"))
    assert report.exit_code() == 1
    assert codes(report, Severity.FAIL) == [("knet-link-down", "pveB/link1")]
    down = [f for f in report.findings if f.code == "knet-link-down"][0]
    assert (down.payload["link"], down.payload["nodeid"], down.payload["state"]) == \
        (1, 2, "disconnected")
    assert ("knet-link-connected", "pveB/link0") in codes(report)


def test_a_node_left_alone_is_not_quorate_and_misses_its_peer():
    report = status_report(node(quorum="quorumtool-s-not-quorate.txt",
                                links="cfgtool-s-peer-gone.txt", peers="cfgtool-n-peer-gone.txt",
                                stats="cmapctl-stats-link1-down.txt"))
    assert report.meta["node"] == "pveB"
    assert codes(report, Severity.FAIL) == [
        ("cluster-not-quorate", "cluster"), ("knet-link-down", "pveA/link0"),
        ("knet-link-down", "pveA/link1")]
    assert codes(report, Severity.WARN) == [("cluster-votes-missing", "cluster"),
                                            ("member-missing", "pveA")]
    missing = [f for f in report.findings if f.code == "member-missing"][0]
    assert missing.payload == {"nodeid": 1, "name": "pveA"}
    votes = [f for f in report.findings if f.code == "cluster-not-quorate"][0].payload
    assert (votes["total_votes"], votes["expected_votes"], votes["quorum"]) == (1, 2, 2)


def test_expect_nodes_warns_when_fewer_are_members():
    report = status_report(node(), expect_nodes=3)
    found = [f for f in report.findings if f.code == "members-below-expected"]
    assert [f.payload["expected"] for f in found] == [3]
    assert found[0].payload["members"] == ["pveA", "pveB"]
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 3


def test_latency_above_the_threshold_warns_per_link():
    report = status_report(node(), latency_warn_ms=0.2)
    high = [f for f in report.findings if f.code == "knet-latency-high"]
    assert [(f.subject, f.payload["latency_ave_ms"], f.payload["threshold_ms"])
            for f in high] == [("pveB/link0", 0.279, 0.2)]


def test_an_edit_that_was_not_reloaded_is_reported():
    report = status_report(node(conf=conf_text(version=3), running=2))
    found = [f for f in report.findings if f.code == "conf-not-loaded"]
    assert [f.payload for f in found] == [{"file": 3, "running": 2}]


def test_a_link_in_the_file_that_corosync_does_not_run_fails():
    report = status_report(node(conf=conf_text(links=3)))
    assert codes(report, Severity.FAIL) == [("knet-link-not-running", "link2")]


def test_corosync_not_running_is_one_clear_failure():
    system = RecordingSystem({CONF: conf_text()})
    for argv in (["corosync-quorumtool"], ["corosync-cfgtool"], ["corosync-cmapctl"]):
        system.on(argv, (1, "", "Cannot initialize CMAP service\n"))
    report = status_report(system)
    assert codes(report) == [("corosync-not-running", "corosync")]
    assert report.findings[0].payload["error"] == "Cannot initialize CMAP service"
    assert report.exit_code() == 1


def test_output_in_an_unknown_format_is_reported_not_read_as_empty():
    system = node()
    system.on(["corosync-cfgtool", "-s"], (0, "Local node ID 1, transport knet\nsurprise\n", ""))
    obs = observe(system)
    assert obs.links is None and "unexpected line 'surprise'" in obs.errors["corosync-cfgtool -s"]
    report = build_report(obs)
    assert ("knet-status-unavailable", "links") in codes(report, Severity.FAIL)


def test_without_corosync_conf_names_come_from_the_members():
    report = status_report(node(conf=""))  # an empty file parses to an empty tree
    assert ("knet-link-connected", "pveB/link0") in codes(report)
    system = node()
    system.files.pop(CONF)
    report = status_report(system)
    assert ("conf-unreadable", CONF) in codes(report, Severity.WARN)
    assert ("knet-link-connected", "pveB/link1") in codes(report)


def test_runtime_version_reads_cmapctl_output():
    assert runtime_version("totem.config_version (u64) = 42\n") == 42
    assert runtime_version("Can't get key totem.config_version. Error CS_ERR_NOT_EXIST\n") is None
    assert runtime_version(None) is None
