"""The default join target (an answer file without join.address): the creator's node name when
that name resolves on the joiner to non-loopback addresses only, else the creator's link0 address
(pvestrap.reach, the rule members are reached by too); an explicit join.address always wins.
Every user of the target agrees: apply's corosync join (its ssh), the PVE join (`pvecm add`
and its method choice), the preflight's TCP probes and fingerprint fetch, the wizard's
unattended answers. The name lookups are tables passed in (the resolver seam)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pvestrap.apply import pve
from pvestrap.apply.flow import ApplyContext, apply_node, plan_only_preflight
from pvestrap.apply.remote import MemberUnreachable, reach_address
from pvestrap.checks import tcp
from pvestrap.checks.base import Context
from pvestrap.checks.joinable import FingerprintCheck
from pvestrap.checks.localsys import Sources
from pvestrap.checks.timesync import SyncState
from pvestrap.checks.prober import request_from_plan
from pvestrap.plan import ClusterPlan, JoinTarget, Link, Node
from pvestrap.reach import by_name
from pvestrap.recorded import RecordingSystem
from pvestrap.wizard.detect import Detected
from pvestrap.wizard.unattended import answers_from_plan

FP = ":".join(["AB"] * 32)


def make_plan(address: str | None = None, backend: str = "corosync") -> ClusterPlan:
    """pve1 creates; link0 is a dedicated cluster network (10.77.0.0/24)."""
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.77.0.{i}"}) for i in (1, 2, 3))
    return ClusterPlan("lab", nodes, (Link(0, "10.77.0.0/24"),), backend=backend,
                       join=JoinTarget(address=address, fingerprint=FP))


def table(**names: tuple[str, ...]):
    return lambda name: names.get(name, ())


RESOLVES = table(pve1=("192.168.7.1",))  # /etc/hosts or DNS: the management address
BOTH = table(pve1=("192.168.7.1", "fd12::1"))
LOOPBACK = table(pve1=("127.0.1.1",))  # Debian's line for the host's own name
PART_LOOPBACK = table(pve1=("192.168.7.1", "127.0.1.1"))
NOWHERE = table()


@pytest.mark.parametrize("resolver,target", [
    (RESOLVES, "pve1"), (BOTH, "pve1"), (LOOPBACK, "10.77.0.1"), (PART_LOOPBACK, "10.77.0.1"),
    (NOWHERE, "10.77.0.1"),
])
def test_the_default_target_is_the_creators_name_where_it_resolves_else_its_link0(resolver,
                                                                                   target):
    plan = make_plan()
    assert plan.join_address(resolver) == target
    # the members' rule is the same one: a member that is not the target is reached alike
    assert reach_address("pve1", "10.77.0.1", "10.77.0.9", resolver) == target
    assert by_name("pve1", "10.77.0.1", resolver("pve1")) == target


@pytest.mark.parametrize("resolver", [RESOLVES, LOOPBACK, NOWHERE])
@pytest.mark.parametrize("explicit", ["10.77.0.1", "192.168.7.1", "pve3", "cluster.example"])
def test_an_explicit_join_address_always_wins(resolver, explicit):
    assert make_plan(explicit).join_address(resolver) == explicit


def test_the_creator_is_reached_at_the_join_target_so_its_ssh_connection_is_shared():
    assert reach_address("pve1", "10.77.0.1", make_plan().join_address(RESOLVES),
                         RESOLVES) == "pve1"


def test_the_create_node_option_picks_whose_name_is_looked_up():
    plan = replace(make_plan(), create_node="pve2")
    assert plan.join_address(table(pve2=("192.168.7.2",))) == "pve2"
    assert plan.join_address(RESOLVES) == "10.77.0.2"


# -- apply ---------------------------------------------------------------------------------------

def corosync_joiner() -> RecordingSystem:
    system = RecordingSystem({"/run/systemd/system/.keep": ""})
    system.on(("corosync-quorumtool", "-s"), (1, "", "Cannot initialize QUORUM service"))
    system.on(("ssh",), (255, "", "ssh: connect to host port 22: Connection refused"))
    return system


@pytest.mark.parametrize("resolver,target", [(RESOLVES, "pve1"), (LOOPBACK, "10.77.0.1"),
                                             (NOWHERE, "10.77.0.1")])
def test_the_corosync_join_logs_in_at_the_default_target(resolver, target, tmp_path):
    system = corosync_joiner()
    ctx = ApplyContext(system, root=str(tmp_path), preflight=plan_only_preflight,
                       confirm=lambda question: True, resolver=resolver)
    with pytest.raises(MemberUnreachable) as failed:
        apply_node(make_plan(), "pve2", ctx)
    logins = {argv[argv.index("--") - 1] for argv in system.commands if argv[0] == "ssh"}
    assert logins == {f"root@{target}"}
    assert f"root@{target}" in failed.value.message


def test_the_corosync_join_keeps_an_explicit_join_address(tmp_path):
    system = corosync_joiner()
    ctx = ApplyContext(system, root=str(tmp_path), preflight=plan_only_preflight,
                       confirm=lambda question: True, resolver=RESOLVES)
    with pytest.raises(MemberUnreachable):
        apply_node(make_plan("10.77.0.3"), "pve2", ctx)
    assert {argv[argv.index("--") - 1] for argv in system.commands if argv[0] == "ssh"} \
        == {"root@10.77.0.3"}


@pytest.mark.parametrize("resolver,target", [(RESOLVES, "pve1"), (LOOPBACK, "10.77.0.1")])
def test_pvecm_add_gets_the_default_target_for_its_method_check_and_its_hostname(resolver,
                                                                                  target):
    """pvecm add's first argument is "Hostname (or IP) of an existing cluster member"
    (pve-cluster, src/PVE/CLI/pvecm.pm); --use_ssh logs in there (ssh, rsync)."""
    system = RecordingSystem()
    system.on(("ssh",), (0, "", ""))  # root key login works
    asked: list[str] = []
    steps = pve.steps_for(make_plan(backend="pve"), "pve2", system, resolver=resolver,
                          has_pveproxy=lambda host: asked.append(host) or False)
    join = steps[0]
    assert isinstance(join, pve.PveJoinStep) and join.kind == "ssh"
    assert join.argv()[:3] == ("pvecm", "add", target)
    assert f"via {target} with" in join.description
    login = next(argv for argv in system.commands if argv[0] == "ssh")
    assert f"root@{target}" in login and asked == []  # no password planned: no API probe


def test_the_api_join_asks_the_default_target_for_its_api():
    system = RecordingSystem()
    asked: list[str] = []
    plan = replace(make_plan(backend="pve"),
                   join=JoinTarget(fingerprint=FP, password_env="PVE_ROOT_PASSWORD"))
    method = pve.choose_join_method(system, plan, lambda host: asked.append(host) or True,
                                    RESOLVES)
    assert method.kind == "api" and asked == ["pve1"] and "pve1:8006 answers" in method.why


# -- the preflight --------------------------------------------------------------------------------

@pytest.mark.parametrize("resolver,target", [(RESOLVES, "pve1"), (NOWHERE, "10.77.0.1")])
def test_the_join_probes_go_to_the_default_target(resolver, target):
    plan = replace(make_plan(backend="pve"),
                   join=JoinTarget(fingerprint=FP, password_env="PVE_ROOT_PASSWORD"))
    found = tcp.targets_for(plan, "pve2", resolver)
    assert [(t.name, t.address, t.purpose) for t in found] == [
        ("pve1", target, "join-api"), ("pve1", target, "join-ssh")]
    assert request_from_plan(plan, "pve2", resolver=resolver).tcp == found
    assert tcp.targets_for(plan, "pve1", resolver) == ()  # the creator joins no one


@pytest.mark.parametrize("resolver,target", [(RESOLVES, "pve1"), (LOOPBACK, "10.77.0.1")])
def test_the_fingerprint_is_fetched_from_the_default_target(resolver, target):
    fetched: list[str] = []

    def fetch(host: str, port: int, timeout: float) -> str:
        fetched.append(host)
        return FP

    check = FingerprintCheck(fetch=fetch, sources=Sources(resolver=resolver))
    found = check.run(Context(plan=make_plan(), node="pve2"))
    assert fetched == [target]
    assert [(f.code, f.payload["target"]) for f in found] == [("fingerprint-ok", target)]


# -- the wizard -----------------------------------------------------------------------------------

@pytest.mark.parametrize("resolver,target", [(RESOLVES, "pve1"), (NOWHERE, "10.77.0.1")])
def test_the_unattended_wizard_joins_the_default_target(resolver, target):
    detected = Detected(hostname="pve2", host_addresses=("192.168.7.2",), is_pve=False,
                        cluster=None, addresses=(), free_nics=(), ntp=SyncState(None))
    answers = answers_from_plan(make_plan(), detected, resolver)
    assert (answers["role"], answers["join.address"]) == ("join", target)
    explicit = answers_from_plan(make_plan("10.77.0.1"), detected, RESOLVES)
    assert explicit["join.address"] == "10.77.0.1"
