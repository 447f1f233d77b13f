"""The network phase inside `apply` (pvestrap.apply.flow): after the local preflight and the
backend's own refusals, before the cluster steps; its failure leaves the cluster untouched.
The node is the in-memory one of tests/support/network_fakes.py (NICs that follow the file as
ifupdown2 does) with a corosync that starts and is quorate; the real thing is
tests/lab/test_network_phase_lab.py.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from network_fakes import FAST, FILE, INTERFACES, no_conflict, node, plan

from pvestrap.apply import corosync as cs
from pvestrap.apply.engine import ApplyDeclined, StepFailed
from pvestrap.apply.flow import ApplyContext, PreflightFailed, apply_node, plan_only_preflight
from pvestrap.apply.remote import MemberUnreachable
from pvestrap.findings import Finding, Severity
from pvestrap.paths import AUTHKEY, COROSYNC_CONF
from pvestrap.plan import Node
from pvestrap.recorded import RecordedWrite
from pvestrap.report.model import Report, ReportSection

QUORATE = (Path(__file__).parent / "data/status/quorumtool-s-2node-quorate.txt").read_text()


def corosync_node():
    system, net = node({"/run/systemd/system/.keep": ""})
    running = {"on": False}
    system.on(("systemctl", "start", "corosync"), lambda s, a, i: running.update(on=True)
              or (0, "", ""))
    system.on(("corosync-quorumtool", "-s"), lambda s, a, i: (0, QUORATE, "") if running["on"]
              else (1, "", "Cannot initialize QUORUM service"))
    return system, net


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(FILE)
    return str(tmp_path)


def context(system, root, lines=None, **kw) -> ApplyContext:
    return ApplyContext(system, root=root, out=lines.append if lines is not None else
                        (lambda line: None), preflight=plan_only_preflight, prober=no_conflict,
                        network_timeouts=FAST, timeouts=cs.CorosyncTimeouts(quorum=5, poll=0.5,
                                                                            service=5), **kw)


def written(system) -> list[str]:
    return [r.path for r in system.records if isinstance(r, RecordedWrite)]


def test_create_brings_the_network_up_before_the_cluster_steps(root):
    system, net = corosync_node()
    lines: list[str] = []
    result = apply_node(plan(), "n1", context(system, root, lines))
    assert result.role == "create" and result.changed
    paths = written(system)
    assert paths[0] == INTERFACES and COROSYNC_CONF in paths
    commands = system.commands
    assert commands.index(("ifreload", "-a")) < commands.index(("systemctl", "start",
                                                                  "corosync"))
    assert net.addresses["eth9"] == {"10.254.77.1/24"}
    shown = "\n".join(lines)
    assert shown.index("[applied] network:wait-address") < shown.index("+ conf: write")


def test_a_failing_network_phase_touches_nothing_of_the_cluster(root):
    system, net = corosync_node()
    net.carrier["eth9"] = False
    with pytest.raises(StepFailed) as failed:
        apply_node(plan(), "n1", context(system, root))
    assert failed.value.step_id == "network:wait-carrier"
    assert COROSYNC_CONF not in system.files and AUTHKEY not in system.files
    assert system.read_text(INTERFACES) == FILE
    assert ("systemctl", "start", "corosync") not in system.commands


def test_a_dry_run_shows_the_network_and_the_cluster_and_changes_nothing(root):
    system, net = corosync_node()
    lines: list[str] = []
    apply_node(plan(), "n1", context(system, root, lines, dry_run=True))
    shown = "\n".join(lines)
    assert "+iface eth9 inet static" in shown
    assert "+ conf: write /etc/corosync/corosync.conf" in shown
    assert written(system) == [] and system.read_text(INTERFACES) == FILE
    assert net.addresses["eth9"] == set()


def test_a_refused_create_refuses_before_the_network_phase(root):
    system, net = corosync_node()
    system.files[AUTHKEY] = (b"k" * 256, 0o400)
    with pytest.raises(cs.JoinRefused):
        apply_node(plan(), "n1", context(system, root))
    assert system.read_text(INTERFACES) == FILE and ("ifreload", "-a") not in system.commands


def test_a_dry_run_join_over_the_new_network_plans_the_join_after_it(root):
    """The creator's link0 address (the join target) is on the new network: unreachable until
    the network phase has run, so a dry run shows the phase and says so."""
    system, net = corosync_node()
    system.on(("ssh",), (255, "", "ssh: connect to host 10.254.77.9 port 22: No route to host"))
    base = plan()
    me = replace(base.nodes[0], nodeid=2)
    creator = Node("n0", 1, {0: "10.254.77.9"})
    joiner = replace(base, nodes=(creator, me, Node("n2", 3, {0: "10.254.77.2"})))
    lines: list[str] = []
    result = apply_node(joiner, "n1", context(system, root, lines, dry_run=True))
    assert result.role == "join" and result.plans == ()
    shown = "\n".join(lines)
    assert "+iface eth9 inet static" in shown
    assert "10.254.77.9 cannot be reached before the network phase has run" in shown
    assert written(system) == [] and net.addresses["eth9"] == set()


def test_yes_to_the_network_phase_then_no_to_the_cluster_says_what_was_done(root):
    """Asked twice: the network phase (yes), then the cluster steps (no). The NIC stays as
    configured (it is as planned), and the message says so instead of "nothing was changed";
    a second apply plans nothing of the network and asks only for the cluster steps."""
    system, net = corosync_node()
    asked: list[str] = []

    def network_only(question: str) -> bool:
        asked.append(question)
        return "network" in question

    with pytest.raises(ApplyDeclined) as declined:
        apply_node(plan(), "n1", context(system, root, confirm=network_only))
    assert asked == ["Apply the network changes on n1?", "Apply these changes on n1?"]
    message = declined.value.message
    assert "nothing was changed" not in message
    assert "cluster steps were not applied" in message
    assert "10.254.77.1/24 on eth9" in message and INTERFACES in message
    assert declined.value.done is not None and "pvestrap apply` again" in declined.value.remedy
    assert net.addresses["eth9"] == {"10.254.77.1/24"} and COROSYNC_CONF not in system.files
    asked.clear()
    apply_node(plan(), "n1", context(system, root, confirm=lambda q: asked.append(q) or True))
    assert asked == ["Apply these changes on n1?"] and COROSYNC_CONF in system.files


def test_no_to_the_network_phase_changes_nothing(root):
    system, net = corosync_node()
    with pytest.raises(ApplyDeclined) as declined:
        apply_node(plan(), "n1", context(system, root, confirm=lambda q: False))
    assert declined.value.done is None and "nothing was changed" in declined.value.message
    assert written(system) == [] and net.addresses["eth9"] == set()


def joiner_plan():
    base = plan()
    me = replace(base.nodes[0], nodeid=2)
    return replace(base, nodes=(Node("n0", 1, {0: "10.254.77.9"}), me,
                                Node("n2", 3, {0: "10.254.77.2"})))


def recheck_report(*findings):
    return Report("pvestrap preflight", (ReportSection("ports", "PORTS", findings),))


def test_after_the_network_phase_a_joiner_probes_the_member_over_the_new_address(root):
    """The preflight left link0's probes for later (the address was only planned); after the
    phase configured it, the recheck runs with the address up, before any cluster step, and a
    FAIL stops there: the cluster untouched, the NIC kept, the message says both."""
    system, net = corosync_node()
    seen: list = []

    def recheck(p, node):
        seen.append((node, set(net.addresses["eth9"])))
        return recheck_report(Finding("port-filtered", Severity.FAIL, "n0 link0: no answer",
                                      "n1/link0", "ports"))

    lines: list[str] = []
    with pytest.raises(PreflightFailed) as failed:
        apply_node(joiner_plan(), "n1", context(system, root, lines, recheck=recheck))
    assert seen == [("n1", {"10.254.77.1/24"})]
    message = failed.value.message
    assert "the cluster was not touched" in message and "10.254.77.1/24 on eth9" in message
    assert "nothing was changed" not in message
    assert "network: probing link0 over the new address (n0)" in lines
    assert not any(c[0] == "ssh" for c in system.commands) and COROSYNC_CONF not in system.files
    assert net.addresses["eth9"] == {"10.254.77.1/24"}


def test_an_ignored_recheck_fail_goes_on_to_the_join(root):
    system, net = corosync_node()
    system.on(("ssh",), (255, "", "ssh: connect to host 10.254.77.9 port 22: No route to host"))
    report = recheck_report(Finding("port-filtered", Severity.FAIL, "no answer", "n1/link0",
                                    "ports"))
    with pytest.raises(MemberUnreachable):
        apply_node(joiner_plan(), "n1", context(system, root, recheck=lambda p, n: report,
                                                ignore=("ports",), confirm=lambda q: True))
    assert any(c[0] == "ssh" for c in system.commands)  # the join was tried after the recheck


def test_a_creator_has_no_peer_to_probe_and_says_so(root):
    system, net = corosync_node()
    called: list = []
    lines: list[str] = []
    apply_node(plan(), "n1", context(system, root, lines,
                                     recheck=lambda p, n: called.append(n) or recheck_report()))
    assert called == [] and COROSYNC_CONF in system.files
    assert any("no peer can answer probes over it yet (n1 creates the cluster)" in line
               for line in lines)


def test_a_joiner_without_a_probe_source_says_the_link_was_not_probed(root):
    system, net = corosync_node()
    system.on(("ssh",), (255, "", "ssh: connect to host 10.254.77.9 port 22: No route to host"))
    lines: list[str] = []
    with pytest.raises(MemberUnreachable):
        apply_node(joiner_plan(), "n1", context(system, root, lines, confirm=lambda q: True))
    assert any("link0 not probed over the new address (no probe token: pass --token-file"
               in line for line in lines)
