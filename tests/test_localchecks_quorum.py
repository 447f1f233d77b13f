"""Quorum and token arithmetic: worked examples from the admin guide, and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pvestrap.checks.base import Context
from pvestrap.checks.quorum import (QuorumCheck, TokenTimingCheck, qdevice_votes, quorum_math,
                                    token_timing)
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.qdevice import QDevice

votes_lists = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=40)


def plan(n, qdevice=None, pve_version=None, votes=None):
    nodes = tuple(Node(f"n{i}", i, {0: f"10.254.0.{i}"}, votes=(votes or {}).get(i, 1))
                  for i in range(1, n + 1))
    return ClusterPlan("lab", nodes, (Link(0),), qdevice=QDevice(qdevice) if qdevice else None,
                       pve_version=pve_version)


def test_worked_examples():
    assert quorum_math([1, 1, 1]).quorum == 2 and quorum_math([1, 1, 1]).tolerance == 1
    assert quorum_math([1, 1]).tolerance == 0
    four_qd = quorum_math([1] * 4, qdevice=True)
    assert (four_qd.total, four_qd.quorum, four_qd.tolerance,
            four_qd.tolerance_without_qdevice) == (5, 3, 2, 1)
    # The admin guide's 15-node example: a QDevice would carry 14 votes.
    assert qdevice_votes(15) == 14 and qdevice_votes(4) == 1


def test_token_timing_defaults_and_coefficient():
    assert token_timing(2).runtime_token_ms == 3000
    t = token_timing(5)
    assert (t.runtime_token_ms, t.consensus_ms) == (3000 + 3 * 650, int(1.2 * 4950))
    assert token_timing(16, coefficient_ms=125).runtime_token_ms == 3000 + 14 * 125


@given(votes_lists, st.booleans())
def test_quorum_is_a_strict_majority_so_two_halves_cannot_both_be_quorate(votes, qdevice):
    m = quorum_math(votes, qdevice)
    assert m.quorum == m.total // 2 + 1
    assert 2 * m.quorum > m.total


@given(votes_lists, st.booleans())
def test_tolerance_is_exact_for_the_worst_case(votes, qdevice):
    m = quorum_math(votes, qdevice)
    biggest_first = sorted(votes, reverse=True)
    left = m.total - sum(biggest_first[:m.tolerance])
    if m.total:
        assert left >= m.quorum
    if m.tolerance < len(votes):
        assert left - biggest_first[m.tolerance] < m.quorum
    assert m.tolerance_without_qdevice <= m.tolerance


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=1, max_value=1000))
def test_token_grows_with_nodes_and_consensus_is_1_2_token(nodes, coefficient):
    a, b = token_timing(nodes, 3000, coefficient), token_timing(nodes + 1, 3000, coefficient)
    assert b.runtime_token_ms >= a.runtime_token_ms
    assert a.consensus_ms == int(a.runtime_token_ms * 1.2)
    assert a.runtime_token_ms >= 3000


def codes(found):
    return [f.code for f in found]


def test_quorum_check_payload_and_two_node_warning():
    found = QuorumCheck().run(Context(plan=plan(2)))
    assert codes(found) == ["quorum-tolerance", "two-node-no-qdevice"]
    assert found[0].payload["quorum"] == 2 and found[0].payload["tolerance"] == 0
    assert found[1].severity is Severity.WARN
    assert codes(QuorumCheck().run(Context(plan=plan(2, qdevice="10.254.0.99")))) == [
        "quorum-tolerance"]


def test_qdevice_with_odd_nodes_warns():
    found = QuorumCheck().run(Context(plan=plan(3, qdevice="10.254.0.99")))
    assert codes(found) == ["quorum-tolerance", "qdevice-odd-nodes"]
    assert found[1].payload["qdevice_votes"] == 2


def test_existing_members_count_after_the_change():
    cluster = {"nodes": [{"name": "n1"}, {"name": "old1"}, {"name": "old2"}]}
    [f] = QuorumCheck().run(Context(plan=plan(2), options={"cluster": cluster}))
    assert f.payload["nodes"] == 4 and f.payload["votes"] == {"n1": 1, "n2": 1, "old1": 1,
                                                              "old2": 1}


def test_weighted_votes_shift_the_tolerance():
    [f] = QuorumCheck().run(Context(plan=plan(3, votes={1: 3})))
    assert (f.payload["total_votes"], f.payload["quorum"], f.payload["tolerance"]) == (5, 3, 0)


def test_token_timing_check_for_a_big_cluster():
    [long] = TokenTimingCheck().run(Context(plan=plan(33)))
    assert (long.code, long.severity) == ("token-timeout-long", Severity.WARN)
    assert long.payload["total_ms"] == 23150 + 27780
    # PVE >= 9.2 writes token_coefficient: 125, which keeps 33 nodes far below the window.
    [ok] = TokenTimingCheck().run(Context(plan=plan(33, pve_version="9.2")))
    assert ok.code == "token-timeout-ok" and ok.payload["token_coefficient_ms"] == 125
    [small] = TokenTimingCheck().run(Context(plan=plan(32)))
    assert small.code == "token-timeout-ok"


def test_without_a_plan_both_skip():
    assert [f.severity for f in QuorumCheck().run(Context())] == [Severity.SKIP]
    assert [f.severity for f in TokenTimingCheck().run(Context())] == [Severity.SKIP]
