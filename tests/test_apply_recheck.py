"""apply's recheck after the network phase (pvestrap.apply.recheck) and the responders it starts
on the members over ssh without a token (pvestrap.apply.remote_responders).

The flow runs on the in-memory node of tests/support/network_fakes.py with a starter at the
seam (it records when responders start and stop, and hands back the report its probes give);
the real conversation runs `pvestrap responder --agent` as a real process, in a network
namespace of its own (so its ports meet nobody's), through the starter's launcher seam instead
of ssh. The real thing over ssh: tests/lab/test_network_phase_lab.py.
"""

from __future__ import annotations

import os
import shlex
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from network_fakes import FAST, FILE, no_conflict, node, plan

from pvestrap import mesh
from pvestrap.apply import corosync as cs
from pvestrap.apply.flow import ApplyContext, PreflightFailed, apply_node, plan_only_preflight
from pvestrap.apply.recheck import Started, recheck
from pvestrap.apply.remote import MemberUnreachable
from pvestrap.apply.remote_responders import ssh_starter, why_not
from pvestrap.errors import PvestrapError
from pvestrap.findings import Finding, Severity
from pvestrap.paths import COROSYNC_CONF
from pvestrap.plan import Node
from pvestrap.report.model import Report, ReportSection
from pvestrap.system import RealSystem

NO_ROUTE = (255, "", "ssh: connect to host 10.254.77.9 port 22: No route to host")
FILTERED = Finding("port-filtered", Severity.FAIL, "n0 link0: no answer", "n1/link0", "ports")


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(FILE)
    return str(tmp_path)


def joiner():
    """n1 joins n0 (10.254.77.9); n1's link0 is planned on eth9 (the network phase's stanza)."""
    base = plan()
    me = replace(base.nodes[0], nodeid=2)
    return replace(base, nodes=(Node("n0", 1, {0: "10.254.77.9"}), me,
                                Node("n2", 3, {0: "10.254.77.2"})))


def report(*findings) -> Report:
    return Report("pvestrap preflight", (ReportSection("ports", "PORTS", findings),))


class Starter:
    """Responders at the seam: which members answer, why the others do not, what the probes
    find; every start and stop is recorded."""

    def __init__(self, found: Report, missing: dict[str, str] | None = None):
        self.found, self.missing, self.events = found, missing or {}, []

    @contextmanager
    def __call__(self, plan, node, members):
        self.events.append(("start", node, tuple(sorted(members))))
        answering = frozenset(members) - set(self.missing)
        try:
            yield Started(answering, lambda p, n: self.found, self.missing)
        finally:
            self.events.append(("stop",))


def context(system, root, lines, **kw) -> ApplyContext:
    return ApplyContext(system, root=root, out=lines.append, preflight=plan_only_preflight,
                        prober=no_conflict, network_timeouts=FAST,
                        timeouts=cs.CorosyncTimeouts(quorum=5, poll=0.5, service=5), **kw)


def test_without_a_token_a_fail_stops_the_join_and_a_rerun_probes_and_stops_again(root):
    """The first apply configures eth9, starts a responder on n0, probes: FAIL, stopped, the
    responder stopped too. The rerun's network phase plans nothing (eth9 is as planned), and it
    still probes again, and stops again: a FAIL is never passed over by applying twice."""
    system, net = node()
    starter = Starter(report(FILTERED))
    for attempt in (1, 2):
        lines: list[str] = []
        with pytest.raises(PreflightFailed) as failed:
            apply_node(joiner(), "n1", context(system, root, lines, responders=starter))
        assert "the cluster was not touched" in failed.value.message
        assert "10.254.77.1/24 on eth9" in failed.value.message
        # the rerun did not configure it: it says so
        assert ("the network phase configured" in failed.value.message) == (attempt == 1)
        assert ("stays configured as planned (by an earlier apply)" in failed.value.message) \
            == (attempt == 2)
        assert "network: probing link0 over the new address (n0; responder started over ssh)" \
            in lines
        assert ("[applied] network:wait-address" in "\n".join(lines)) == (attempt == 1)
        assert starter.events == [("start", "n1", ("n0",)), ("stop",)] * attempt
    assert net.addresses["eth9"] == {"10.254.77.1/24"}
    assert COROSYNC_CONF not in system.files and not any(c[0] == "ssh" for c in system.commands)


def test_a_member_without_pvestrap_is_named_and_the_join_goes_on(root):
    system, net = node()
    system.on(("ssh",), NO_ROUTE)
    why = "pvestrap not found on n0 (install it, or pass --token-file with the token of " \
          "responders you start there)"
    starter = Starter(report(FILTERED), {"n0": why})
    lines: list[str] = []
    with pytest.raises(MemberUnreachable):  # the join itself, tried after the recheck
        apply_node(joiner(), "n1", context(system, root, lines, responders=starter,
                                           confirm=lambda q: True))
    assert f"network: link0 not probed over the new address: {why}" in lines
    assert not any("probing link0" in line for line in lines)
    assert starter.events == [("start", "n1", ("n0",)), ("stop",)]


def test_a_token_of_the_admins_responders_wins_over_starting_any():
    starter = Starter(report(FILTERED))
    lines: list[str] = []
    recheck(joiner(), "n1", out=lines.append, ignore=(), done="kept",
            with_token=lambda p, n: report(), starter=starter)
    assert starter.events == [] and "network: probing link0 over the new address (n0)" in lines


def test_with_no_way_to_start_one_the_link_is_named_as_not_probed():
    """No starter: a Proxmox VE API join (root password, no ssh to the members)."""
    lines: list[str] = []
    recheck(joiner(), "n1", out=lines.append, ignore=(), done="kept")
    assert lines == ["network: link0 not probed over the new address (no probe token: pass "
                     "--token-file, the token of the members' responders)"]


def test_a_creator_and_a_node_without_a_planned_link_address_start_nothing():
    starter = Starter(report(FILTERED))
    lines: list[str] = []
    recheck(plan(), "n1", out=lines.append, ignore=(), done="kept", starter=starter)
    assert "no peer can answer probes over it yet (n1 creates the cluster)" in lines[0]
    bare = replace(joiner(), nodes=tuple(replace(n, interfaces=()) for n in joiner().nodes))
    recheck(bare, "n1", out=lines.append, ignore=(), done="kept", starter=starter)
    assert starter.events == [] and len(lines) == 1


def test_a_member_not_probed_is_always_said_with_its_cause():
    def said(code, error="x"):
        return why_not(mesh.NodeResult("n0", None, error, exit=code), "10.0.0.9")

    assert said(127).startswith("pvestrap not found on n0 (install it, or pass --token-file")
    assert said(255, "did not start its responder (exit 255: Permission denied)") == (
        "cannot log in to n0 over ssh (root@10.0.0.9: did not start its responder (exit 255: "
        "Permission denied); `ssh root@10.0.0.9 true` must work without a prompt, or pass "
        "--token-file with the token of responders you start there)")
    assert said(1, "sent no result").startswith("no responder on n0 (sent no result;")


# -- the real agent, in a network namespace of its own ---------------------------------------------

def in_namespace(pid_file: Path, command: str):
    """A launcher: the agent command in a new network namespace (loopback up) instead of over
    ssh; its pid written to PID_FILE."""

    def launch(member: str, agent: list[str]):
        script = f"ip link set lo up && echo $$ > {shlex.quote(str(pid_file))} && exec " \
                 + shlex.join([*shlex.split(command), *agent[1:]])
        return ["unshare", "-n", "sh", "-c", script], None

    return launch


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="unshare -n needs root")


@needs_root
def test_the_real_responder_agent_answers_for_the_block_and_is_gone_after(tmp_path):
    """`pvestrap responder --agent` speaks the mesh conversation: READY, GO, its RESULT; it
    keeps its responder up while the block runs and exits when it ends, an exception too."""
    on_loopback = replace(joiner(), nodes=tuple(replace(n, addresses={0: "127.0.0.1"})
                                                if n.name == "n0" else n
                                                for n in joiner().nodes))
    pid_file = tmp_path / "pid"
    start = ssh_starter(RealSystem(), launcher=in_namespace(
        pid_file, f"{sys.executable} -m pvestrap"), start_s=60)
    with pytest.raises(KeyboardInterrupt):
        with start(on_loopback, "n1", frozenset({"n0"})) as started:
            assert started.answering == frozenset({"n0"}) and started.missing == {}
            pid = int(pid_file.read_text())
            assert alive(pid)
            raise KeyboardInterrupt  # Ctrl-C during the probes
    assert not alive(pid)


@needs_root
def test_a_member_where_pvestrap_is_missing_is_named(tmp_path):
    start = ssh_starter(RealSystem(), launcher=in_namespace(
        tmp_path / "pid", "no-such-pvestrap-command"), start_s=30)
    with start(joiner(), "n1", frozenset({"n0"})) as started:
        assert started.answering == frozenset()
        assert started.missing["n0"].startswith("pvestrap not found on n0 (install it")


@needs_root
def test_an_agent_whose_session_never_hangs_up_exits_at_its_ttl():
    """The orchestrator keeps stdin open and says nothing more (a session that died without a
    FIN): the agent stops at its responder's TTL instead of waiting for the hang-up."""
    import json
    import subprocess

    agent = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", "ip link set lo up && exec " + shlex.join(
            [sys.executable, "-m", "pvestrap", "responder", "--agent"])],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert agent.stdin is not None and agent.stdout is not None
        agent.stdin.write(json.dumps({"token": "t" * 32, "links": [0], "ttl_s": 1,
                                      "addresses": ["127.0.0.1"]}) + "\n")
        agent.stdin.flush()
        assert agent.stdout.readline().strip() == mesh.READY
        agent.stdin.write(mesh.GO + "\n")
        agent.stdin.flush()
        assert agent.stdout.readline().startswith(mesh.RESULT)
        assert agent.wait(timeout=60) == 0  # stdin still open
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()


@pytest.mark.parametrize("password", [False, True])
def test_on_proxmox_ve_an_api_join_logs_in_nowhere_and_keeps_the_no_token_message(root,
                                                                                  password):
    """The pve backend: pvecm add --use_ssh (no root password in the plan) reaches the member
    over ssh, so apply starts its responder there; the API join (a password) logs in to no
    member: the link is named as not probed, as before. What the join does after is not this
    test's business (the fake node stops it)."""
    system, net = node({"/usr/bin/pvecm": ""})
    join = replace(joiner().join, password_file="/root/pw" if password else None)
    proxmox = replace(joiner(), backend="pve", join=join)
    starter = Starter(report())
    lines: list[str] = []
    with pytest.raises(PvestrapError):  # the fake runs no pvecm and has no password file
        apply_node(proxmox, "n1", context(system, root, lines, responders=starter))
    assert net.addresses["eth9"] == {"10.254.77.1/24"}
    if password:
        assert starter.events == []
        assert "network: link0 not probed over the new address (no probe token: pass " \
               "--token-file, the token of the members' responders)" in lines
    else:
        assert starter.events == [("start", "n1", ("n0",)), ("stop",)]
        assert "network: probing link0 over the new address (n0; responder started over ssh)" \
            in lines
