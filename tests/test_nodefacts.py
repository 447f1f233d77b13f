"""Node facts (dpkg-query) and pvecm's version table decide the plan, the preview and the argv;
previews count config_version, votes and node ids as pvecm and corosync do."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pvestrap import pvecm_versions
from pvestrap.apply.pve import (JoinFailed, PveJoinStep, create_argv, nodeid_refusal,
                                ssh_join_argv)
from pvestrap.apply.pve_join_method import JoinMethod, choose_join_method
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import UserError
from pvestrap.nodefacts import NodeFacts, parse_dpkg_query, read_facts, resolve
from pvestrap.plan import ClusterPlan, JoinTarget, Link, Node
from pvestrap.recorded import RecordingSystem
from pvestrap.render import corosync_conf_for, render_corosync_conf

DPKG = ("corosync\t3.1.7-1+deb12u2\tii \n"
        "pve-cluster\t8.1.3\tii \n"
        "pve-manager\t8.4.1\tii \n")


def plan(**kw) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}"}) for i in (1, 2, 3))
    base = dict(cluster_name="lab", nodes=nodes, links=(Link(0, "10.254.0.0/24"),),
                backend="pve")
    base.update(kw)
    return ClusterPlan(**base).check()


def facts(cluster: str | None) -> NodeFacts:
    return NodeFacts((("pve-cluster", cluster),) if cluster else ())


def test_dpkg_query_lists_only_installed_packages():
    text = DPKG + "pve-manager-old\t1.0\trc \n" + "garbage line\n"
    assert parse_dpkg_query(text) == (("corosync", "3.1.7-1+deb12u2"), ("pve-cluster", "8.1.3"),
                                      ("pve-manager", "8.4.1"))
    system = RecordingSystem().on(["dpkg-query"], (1, DPKG, "no packages found matching x"))
    system.on(["uname", "-r"], (0, "6.8.12-4-pve\n", ""))
    found = read_facts(system)
    assert (found.pve_cluster, found.pve_release, found.kernel) == ("8.1.3", "8.4", "6.8.12-4-pve")
    assert ("dpkg-query", "-W", "-f") == system.commands[0][:3]


def test_a_root_is_read_through_its_own_dpkg_database():
    system = RecordingSystem().on(["dpkg-query"], (0, DPKG, ""))
    found = read_facts(system, "/mnt/node")
    assert "--admindir=/mnt/node/var/lib/dpkg" in system.commands[0]
    assert found.kernel is None and ("uname", "-r") not in system.commands


def test_the_table_cites_the_commit_and_the_boundary_is_pve_cluster_9_1_0():
    row = pvecm_versions.behaviour(pvecm_versions.TOKEN_COEFFICIENT)
    assert (row.since, row.commit) == ("9.1.0", "a7b1c765")
    assert not pvecm_versions.has("9.0.9", row.key) and pvecm_versions.has("9.1.0", row.key)
    assert pvecm_versions.has("9.1.6-1", row.key) and not pvecm_versions.has("8.1.3", row.key)
    assert [pvecm_versions.pve_cluster_for_release(v) for v in ("8.4", "9.1", "9.2", "10.0")] \
        == ["0", "0", "9.1.0", "9.1.0"]


@pytest.mark.parametrize("installed, token", [("8.1.3", None), ("9.0.5", None),
                                              ("9.1.0", 125), ("9.1.6", 125)])
def test_the_node_decides_over_the_answer_files_release(installed: str, token):
    notes: list[str] = []
    resolved = resolve(plan(pve_version="9.2"), facts(installed), notes.append)
    assert resolved.token_coefficient == token
    argv = create_argv(resolved, "pve1")
    assert ("--token-coefficient" in argv) == (token is not None)
    assert ("token_coefficient: 125" in render_corosync_conf(resolved)) == (token is not None)
    assert len(notes) == (token is None)  # said once when the file planned for another release
    assert not notes or installed in notes[0]


def test_a_node_not_installed_yet_plans_ahead_from_the_answer_file():
    assert resolve(plan(pve_version="9.2"), facts(None)).token_coefficient == 125
    assert resolve(plan(pve_version="9.1"), facts(None)).token_coefficient is None
    assert resolve(plan(), facts("9.1.6")).token_coefficient == 125  # no pve_version at all


def test_config_version_is_what_pvecm_writes_and_a_member_keeps_its_own():
    p = plan()
    fresh = render_corosync_conf(p)
    assert "config_version: 3\n" in fresh  # create 1, two joins
    assert "config_version: 1\n" in render_corosync_conf(replace(p, nodes=p.nodes[:1]))
    edited_later = fresh.replace("config_version: 3", "config_version: 7")
    assert corosync_conf_for(p, "pve1", edited_later) == edited_later  # a member: no diff
    assert corosync_conf_for(p, "pve1", None) == render_corosync_conf(replace(p, nodes=p.nodes[:1]))
    cluster = render_corosync_conf(replace(p, nodes=p.nodes[:2]), 7)
    assert corosync_conf_for(p, "pve3", None, cluster) == render_corosync_conf(p, 8)  # join: +1
    assert corosync_conf_for(p, "pve3", None) == fresh  # the last joiner, predicted


def test_zero_votes_are_left_out_and_counted_as_one():
    nodes = (Node("a", 1, {0: "10.0.0.1"}), Node("b", 2, {0: "10.0.0.2"}, votes=0))
    p = plan(nodes=nodes, links=(Link(0, "10.0.0.0/24"),))
    text = render_corosync_conf(p)
    assert "name: b\n    nodeid: 2\n    ring0_addr: 10.0.0.2\n" in text
    assert [n.counted_votes for n in p.nodes] == [1, 1]
    assert [n.votes for n in CorosyncConf.parse(text).nodes] == [1, 1]


def test_a_taken_node_id_is_refused_with_the_next_free_one():
    cluster = CorosyncConf.parse(render_corosync_conf(plan(nodes=(
        Node("pve1", 1, {0: "10.254.0.1"}), Node("pve2", 2, {0: "10.254.0.2"}),
        Node("pve4", 4, {0: "10.254.0.4"})))))
    joiner = plan(nodes=(Node("pve1", 1, {0: "10.254.0.1"}), Node("new", 2, {0: "10.254.0.9"})))
    refusal = nodeid_refusal(cluster, joiner, "new")
    assert refusal is not None and refusal.code == "join-nodeid-taken"
    assert refusal.details == {"nodeid": 2, "member": "pve2", "next_free": 3}
    assert "nodeid = 3" in (refusal.remedy or "")
    assert nodeid_refusal(cluster, plan(), "pve3") is None


def test_the_join_method_follows_what_the_node_has():
    keyed = RecordingSystem().on(["ssh"], (0, "", ""))
    denied = RecordingSystem().on(["ssh"], (255, "", "Permission denied (publickey)."))
    with_pw = plan(join=JoinTarget(fingerprint="AA:" * 31 + "AA", password_env="PW"))
    assert choose_join_method(keyed, plan(), lambda host: True).kind == "ssh"
    assert choose_join_method(keyed, with_pw, lambda host: True).kind == "api"
    assert choose_join_method(keyed, with_pw, lambda host: False).kind == "ssh"
    assert choose_join_method(denied, with_pw, lambda host: True).kind == "api"
    with pytest.raises(UserError) as none:
        choose_join_method(denied, plan(), lambda host: True)
    assert none.value.code == "join-no-method"
    assert ssh_join_argv(plan(), "pve2", "10.254.0.1") == (
        "pvecm", "add", "10.254.0.1", "--use_ssh", "1", "--link0", "10.254.0.2", "--nodeid", "2")


def test_pvecm_add_exiting_0_after_refusing_is_not_success():
    refused = ("detected the following error(s):\n"
               "* authentication key '/etc/corosync/authkey' already exists\n")
    system = RecordingSystem().on(["pvecm", "add"], (0, refused,
                                                      "Check if node may join a cluster failed!\n"))
    step = PveJoinStep(plan(), "pve2", None, method=JoinMethod("ssh", "test"))
    with pytest.raises(JoinFailed) as caught:
        step.apply(system)
    assert caught.value.code == "join-refused"
    silent = RecordingSystem().on(["pvecm", "add"], (0, "", ""))
    with pytest.raises(JoinFailed) as unconfirmed:
        step.apply(silent)  # exit 0 but this node is not in /etc/pve/corosync.conf
    assert unconfirmed.value.code == "join-not-confirmed"
