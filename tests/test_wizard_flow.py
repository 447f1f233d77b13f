"""The create/join conversation, driven by a scripted asker (no terminal, no questionary).

Each test states the exact conversation: the questions in order with their answers. The
services are fakes at the flow's seam (preflight findings, fingerprint, apply, save).
"""

from __future__ import annotations

import dataclasses

import pytest
import wizard_support as S

from pvestrap.answers import dumps, loads
from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.checks.ports import PortsCheck
from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Finding, Severity, fail
from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, JoinTarget, Link, Node
from pvestrap.system import CommandResult
from pvestrap.wizard import flow, goback, unattended
from pvestrap.wizard import questions as Q
from pvestrap.wizard.detect import ExistingCluster, detect


FP = S.FINGERPRINT


@pytest.fixture
def det():
    return detect("/nonexistent", machine=S.machine(), resolver=lambda n: ("10.1.0.1",),
                  runner=lambda argv: CommandResult(tuple(argv), 127))


@pytest.fixture
def det_pve(det):
    return dataclasses.replace(det, is_pve=True)


CREATE = [("role", "create"), ("cluster.name", "prod"), ("link0.address", ...),
          ("links.add1", True), ("link1.address", "nic:eth2"), ("link1.static", "10.3.0.1/24"),
          ("links.add2", False), ("links.preferred", 1), ("peer1.name", "pve2"),
          ("peer1.link0", "10.1.0.2"), ("peer1.link1", "10.3.0.2"), ("peer1.nic1", ...),
          ("peer2.name", "pve3"), ("peer2.link0", "10.1.0.3"), ("peer2.link1", "10.3.0.3"),
          ("peer2.nic1", "enp3s0"), ("peer3.name", ""),
          ("migration.network", "10.3.0.0/24"), ("migration.type", ...), ("keyboard", "de")]

EXPECTED_CREATE = ClusterPlan(
    cluster_name="prod",
    nodes=(Node("pve1", 1, {0: "10.1.0.1", 1: "10.3.0.1"},
                interfaces=(InterfaceStanza("eth2", "10.3.0.1/24"),)),
           Node("pve2", 2, {0: "10.1.0.2", 1: "10.3.0.2"},
                interfaces=(InterfaceStanza("eth2", "10.3.0.2/24"),)),
           Node("pve3", 3, {0: "10.1.0.3", 1: "10.3.0.3"},
                interfaces=(InterfaceStanza("enp3s0", "10.3.0.3/24"),))),
    links=(Link(0, "10.1.0.0/24", 10), Link(1, "10.3.0.0/24", 20)),
    create_node="pve1", backend="corosync",
    datacenter=Datacenter(keyboard="de", migration_type="secure",
                          migration_network="10.3.0.0/24"))


def test_create_conversation_builds_the_intended_plan(det):
    asker = S.ScriptedAsker(CREATE)
    talk = flow.gather(det, asker, S.FakeServices())
    asker.done()
    # link0's default is the address the host name resolves to; migration defaults to secure
    assert asker.defaults["link0.address"] == "10.1.0.1"
    assert asker.defaults["migration.type"] == "secure"
    plan = flow.to_plan(talk.state())
    assert plan == EXPECTED_CREATE
    assert loads(dumps(plan)) == plan


def test_a_rejected_answer_shows_the_rule_and_is_asked_again(det):
    script = [("role", "create"), ("cluster.name", "bad_name!"), ("cluster.name", "x" * 16),
              ("cluster.name", "prod"), *CREATE[2:]]
    asker = S.ScriptedAsker(script)
    flow.gather(det, asker, S.FakeServices())
    asker.done()
    rejections = [s for s in asker.said if "cluster name" in s]
    assert len(rejections) == 2 and all(Q.NAME_RULE in s for s in rejections)


def test_join_with_pasted_join_information(det_pve):
    services = S.FakeServices()
    blob = S.join_blob("10.1.0.9", FP, {0: "10.1.0.9", 1: "10.2.0.9"}, "prod")
    asker = S.ScriptedAsker([
        ("role", "join"), ("join.method", "info"), ("join.info", "not base64 !"),
        ("join.info", blob), ("join.fingerprint", True), ("join.password", "s3cret-pw"),
        ("link0.address", ...), ("link1.address", ...), ("peer1.name", "pve9"),
        ("peer1.link0", ...), ("peer1.link1", ...), ("peer2.name", ""), ("node.nodeid", ...),
        ("join.password_ref", "file"), ("join.password_file", "/root/.pw")])
    talk = flow.gather(det_pve, asker, services)
    asker.done()
    assert any("not usable" in s for s in asker.said)  # the bad paste was refused, with why
    assert services.fetched == ["10.1.0.9"]
    assert "It matches the Join Information" in asker.prompts["join.fingerprint"]
    # the cluster's links and its node's addresses come from the blob
    assert asker.defaults["peer1.link0"] == "10.1.0.9"
    assert asker.defaults["link1.address"] == "10.2.0.1"  # same network as the peer's link1
    plan = flow.to_plan(talk.state())
    assert plan == ClusterPlan(
        cluster_name="prod",
        nodes=(Node("pve9", 1, {0: "10.1.0.9", 1: "10.2.0.9"}),
               Node("pve1", 2, {0: "10.1.0.1", 1: "10.2.0.1"})),
        links=(Link(0, "10.1.0.0/24"), Link(1, "10.2.0.0/24")), create_node="pve9",
        join=JoinTarget(address="10.1.0.9", fingerprint=FP, password_file="/root/.pw"),
        backend="pve")
    assert talk.facts["password"].value == "s3cret-pw"
    assert "s3cret-pw" not in dumps(plan) and "s3cret-pw" not in repr(talk.answers)


def test_join_by_address_asks_name_and_links(det):
    asker = S.ScriptedAsker([
        ("role", "join"), ("join.method", "address"), ("join.address", "10.1.0.9"),
        ("join.links", "0"), ("cluster.name", "prod"), ("link0.address", ...),
        ("peer1.name", ""), ("peer1.name", "pve9"), ("peer1.link0", ...), ("peer2.name", ""),
        ("node.nodeid", "5")])
    talk = flow.gather(det, asker, S.FakeServices())
    asker.done()
    assert any("name the cluster node you join" in s for s in asker.said)
    plan = flow.to_plan(talk.state())
    assert [(n.name, n.nodeid) for n in plan.nodes] == [("pve9", 1), ("pve1", 5)]
    assert plan.join == JoinTarget(address="10.1.0.9")  # plain corosync: no fingerprint
    assert plan.role_of("pve1") == "join"


def test_a_fingerprint_not_confirmed_stops_with_nothing_changed(det_pve):
    services = S.FakeServices(fingerprint=":".join(["CD"] * 32))
    blob = S.join_blob("10.1.0.9", FP, {0: "10.1.0.9"})
    asker = S.ScriptedAsker([("role", "join"), ("join.method", "info"), ("join.info", blob),
                             ("join.fingerprint", False)])
    with pytest.raises(UserError) as err:
        flow.gather(det_pve, asker, services)
    assert err.value.code == "fingerprint-not-confirmed"
    assert any("WARNING" in s and "CD:CD" in s for s in asker.said)
    assert asker.defaults["join.fingerprint"] is False  # a mismatch is not offered as yes


def test_preflight_fail_goes_back_to_the_link_that_caused_it(det):
    def fails(plan, node):
        if plan.node(node).addresses[0] == "10.9.9.9":
            yield fail("link-address-missing", "link0 address 10.9.9.9 is not configured",
                       f"{node}/link0", check="link-address",
                       payload={"link": 0, "address": "10.9.9.9"})

    services = S.FakeServices(fails=fails)
    asker = S.ScriptedAsker([
        ("role", "create"), ("cluster.name", "prod"), ("link0.address", Q.OTHER),
        ("link0.other", "10.9.9.9"), ("links.add1", False), ("peer1.name", ""),
        ("migration.network", ...), ("migration.type", ...), ("keyboard", ...),
        ("preflight.next", "link0"), ("link0.address", "10.1.0.1"),
        ("apply", True), ("save", "/tmp/a.toml")])
    result = flow.run(det, asker, services)
    asker.done()
    assert [p.node("pve1").addresses[0] for p, _ in services.preflights] == \
        ["10.9.9.9", "10.1.0.1"]
    assert result.applied and services.applied[0][0].node("pve1").addresses == {0: "10.1.0.1"}
    # going back re-asked only link0; its old answer was the offered default
    assert asker.defaults["preflight.next"] == "link0"
    assert loads(services.saved["/tmp/a.toml"]) == result.plan


def test_preflight_targets_come_from_the_findings_payloads(det):
    state = Q.State(det, {"role": "create", "link0.address": "10.1.0.1", "peer1.name": "pve2",
                          "peer1.link0": "10.1.0.2", "cluster.name": "prod"})
    filtered = PortsCheck().run(Context(node="pve1", probes={
        prober.PROBES_KEY: prober.Measurements("pve1", 0.0, 1.0, udp=(prober.PortResult(
            "pve2", 0, 5405, "10.1.0.2", "10.1.0.1", False, "filtered", 20, 0),))}))
    assert goback.targets_for(filtered[0], state) == ("link0", "peer1.link0")
    cases = {("latency-high", "pve1->pve2/link0", (("peer", "pve2"), ("link", 0))):
             ("link0", "peer1.link0"),
             ("link-address-missing", "pve1/link0", (("link", 0), ("address", "10.1.0.1"))):
             ("link0",),
             ("address-in-use", "pve1/link0 10.1.0.1", (("link", 0), ("address", "10.1.0.1"))):
             ("link0",),
             ("clock-offset-fail", "pve1->pve2", (("peer", "pve2"),)): (),
             ("cluster-name-invalid", "cluster.name", ()): ("cluster.name",),
             ("hostname-loopback", "pve1", ()): (),
             # the subject is prose for people: a link-like subject without a payload is no link
             ("link-port-filtered", "pve1->pve2/link0:5405", ()): ()}
    for (code, subject, payload), want in cases.items():
        found = fail(code, "x", subject, payload=dict(payload))
        assert goback.targets_for(found, state) == want, (code, subject)
    joining = Q.State(det, {"role": "join"})
    f = Finding("fingerprint-mismatch", Severity.FAIL, "x", "10.1.0.9", "join-fingerprint")
    assert goback.targets_for(f, joining) == ("join",)
    assert goback.reask_set("join", joining) == set(goback.JOIN_TARGET)


def test_preflight_abort_and_unattended_fail(det):
    def fails(plan, node):
        yield fail("hostname-loopback", "resolves to 127.0.1.1", node, check="hostname")

    asker = S.ScriptedAsker([*CREATE[:8], ("peer1.name", ""), ("migration.network", ...),
                             ("migration.type", ...), ("keyboard", ...),
                             ("preflight.next", "abort")])
    services = S.FakeServices(fails=fails)
    with pytest.raises(UserError) as err:
        flow.run(det, asker, services)
    assert err.value.code == "preflight-aborted" and services.applied == []
    values = unattended.answers_from_plan(EXPECTED_CREATE, det)
    asker = unattended.UnattendedAsker({**values, "apply": True})
    with pytest.raises(OperationFailed) as err:
        flow.run(det, asker, S.FakeServices(fails=fails),
                 facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert err.value.code == "preflight-failed"


def test_declining_the_apply_changes_nothing(det):
    asker = S.ScriptedAsker([*CREATE, ("apply", False), ("save", "")])
    services = S.FakeServices()
    result = flow.run(det, asker, services)
    asker.done()
    assert not result.applied and services.applied == [] and services.saved == {}
    assert "Not applied: nothing changed." in asker.said


def test_ctrl_c_at_a_prompt_propagates_before_any_change(det):
    asker = S.ScriptedAsker([*CREATE[:5], ("link1.static", KeyboardInterrupt())])
    services = S.FakeServices()
    with pytest.raises(KeyboardInterrupt):
        flow.run(det, asker, services)
    assert services.preflights == [] and services.applied == [] and services.saved == {}


def test_a_node_in_a_cluster_is_refused_before_any_question(det):
    clustered = dataclasses.replace(det, cluster=ExistingCluster("/etc/pve/corosync.conf", "x"))
    asker = S.ScriptedAsker([])
    with pytest.raises(UserError) as err:
        flow.gather(clustered, asker, S.FakeServices())
    assert err.value.code == "already-clustered" and asker.asked == []


# -- unattended: the same questions, answered from an answer file -------------------------------

def test_unattended_create_from_an_answer_file_rebuilds_the_same_plan(det):
    values = unattended.answers_from_plan(EXPECTED_CREATE, det)
    talk = flow.gather(det, unattended.UnattendedAsker(values), None,
                       facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert flow.to_plan(talk.state()) == EXPECTED_CREATE


def test_unattended_join_rebuilds_the_plan_and_checks_the_pinned_fingerprint(det_pve):
    plan = ClusterPlan(
        cluster_name="prod", nodes=(Node("pve9", 1, {0: "10.1.0.9"}),
                                    Node("pve1", 2, {0: "10.1.0.77"})),
        links=(Link(0, "10.1.0.0/24", 5),), create_node="pve9", backend="pve",
        join=JoinTarget(address="10.1.0.9", fingerprint=FP, password_env="PW"))
    values = unattended.answers_from_plan(plan, det_pve)
    asker = unattended.UnattendedAsker(values, secrets={"join.password": "pw"})
    talk = flow.gather(det_pve, asker, S.FakeServices(), facts=unattended.facts_from_plan(plan))
    assert flow.to_plan(talk.state()) == plan
    assert talk.facts["password"].value == "pw"
    wrong = S.FakeServices(fingerprint=":".join(["CD"] * 32))
    with pytest.raises(UserError) as err:
        flow.gather(det_pve, asker, wrong, facts=unattended.facts_from_plan(plan))
    assert err.value.code == "fingerprint-mismatch"


@pytest.mark.parametrize("missing, key", [("cluster.name", "cluster.name"),
                                          ("link0.address", "nodes[].link0"),
                                          ("peer1.link1", "nodes[].link1")])
def test_unattended_never_guesses_a_required_answer(det, missing, key):
    values = unattended.answers_from_plan(EXPECTED_CREATE, det)
    del values[missing]
    with pytest.raises(UserError) as err:
        flow.gather(det, unattended.UnattendedAsker(values), None,
                    facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert err.value.code == "answer-key-missing" and err.value.message.startswith(key)


def test_unattended_join_without_password_reference_or_fingerprint_names_the_key(det_pve):
    plan = ClusterPlan(cluster_name="prod", nodes=(Node("pve9", 1, {0: "10.1.0.9"}),
                                                    Node("pve1", 2, {0: "10.1.0.1"})),
                       links=(Link(0),), create_node="pve9", backend="pve",
                       join=JoinTarget(address="10.1.0.9", fingerprint=FP))
    values = unattended.answers_from_plan(plan, det_pve)
    with pytest.raises(UserError) as err:
        flow.gather(det_pve, unattended.UnattendedAsker(values), S.FakeServices(),
                    facts=unattended.facts_from_plan(plan))
    assert err.value.code == "answer-key-missing" and "join.password_env" in err.value.message
    with pytest.raises(UserError) as err:
        flow.gather(det_pve, unattended.UnattendedAsker(values, secrets={"join.password": "x"}),
                    S.FakeServices(), facts={})
    assert err.value.message.startswith("join.fingerprint")


def test_unattended_apply_needs_an_explicit_yes(det):
    values = unattended.answers_from_plan(EXPECTED_CREATE, det)
    services = S.FakeServices()
    with pytest.raises(UserError) as err:
        flow.run(det, unattended.UnattendedAsker(values), services,
                 facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert err.value.code == "answer-key-missing" and services.applied == []
    result = flow.run(det, unattended.UnattendedAsker({**values, "apply": True}), services,
                      facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert result.applied and result.plan == EXPECTED_CREATE


def test_unattended_rejects_an_invalid_value_naming_the_key(det):
    values = {**unattended.answers_from_plan(EXPECTED_CREATE, det), "peer1.link0": "10.1.0.1"}
    with pytest.raises(UserError) as err:
        flow.gather(det, unattended.UnattendedAsker(values), None,
                    facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert err.value.code == "answer-invalid" and err.value.message.startswith("nodes[].link0")


def test_unattended_rerun_after_the_apply_keeps_the_stanza_it_configured():
    """Once the apply put 10.3.0.1/24 on eth2, the address is local (eth2 no longer free);
    the answer file's stanza for eth2 stays in the plan all the same."""
    import dataclasses as dc

    from pvestrap.checks.localsys import IfAddress

    m = S.machine()
    eth2 = dc.replace(m.interface("eth2"), addresses=(IfAddress("10.3.0.1", 24),))
    applied = dc.replace(m, interfaces=tuple(eth2 if i.name == "eth2" else i
                                             for i in m.interfaces))
    det = detect("/nonexistent", machine=applied, resolver=lambda n: ("10.1.0.1",),
                 runner=lambda argv: CommandResult(tuple(argv), 127))
    assert det.free_nics == ()
    values = unattended.answers_from_plan(EXPECTED_CREATE, det)
    assert values["link1.address"] == "10.3.0.1"
    talk = flow.gather(det, unattended.UnattendedAsker(values), None,
                       facts=unattended.facts_from_plan(EXPECTED_CREATE))
    assert flow.to_plan(talk.state()) == EXPECTED_CREATE


def test_the_other_nodes_nic_on_a_new_network_is_asked_and_becomes_their_stanza(det):
    """link1 is a new network on this node's free eth2: each other node's address there needs
    a NIC of its own, which the user names (default: the same name as here); empty means it
    is configured on that node already (no stanza). link0 (an existing network) asks nothing."""
    script = [(q, "" if q == "peer2.nic1" else a) for q, a in CREATE]
    asker = S.ScriptedAsker(script)
    plan = flow.to_plan(flow.gather(det, asker, S.FakeServices()).state())
    asker.done()
    assert asker.defaults["peer1.nic1"] == asker.defaults["peer2.nic1"] == "eth2"
    assert "pve2: its NIC for 10.3.0.2" in asker.prompts["peer1.nic1"]
    assert not {"peer1.nic0", "peer2.nic0"} & set(asker.prompts)
    assert plan.node("pve2").interfaces == (InterfaceStanza("eth2", "10.3.0.2/24"),)
    assert plan.node("pve3").interfaces == ()


def test_a_peer_nic_that_is_no_interface_name_is_refused_with_the_rule(det):
    at = next(i for i, (q, _) in enumerate(CREATE) if q == "peer1.nic1")
    script = [*CREATE[:at], ("peer1.nic1", "eth 2; reboot"), *CREATE[at:]]
    asker = S.ScriptedAsker(script)
    flow.gather(det, asker, S.FakeServices())
    asker.done()
    assert [s for s in asker.said if "not an interface name: an interface name such as" in s]


def test_a_no_after_the_network_phase_says_what_was_done(det):
    """The live apply asks twice (pvestrap.apply.flow): a no to the cluster steps after a yes
    to the network phase keeps the configured NIC, and the wizard says so."""

    class NetworkThenNo(S.FakeServices):
        def apply(self, plan, node, password, rep, confirm, out):
            from pvestrap.apply.engine import ApplyDeclined

            assert confirm("Apply the network changes?") is True
            raise ApplyDeclined("not confirmed: the cluster steps were not applied; x",
                                done="the network phase configured 10.1.9.1/24 on eth9 "
                                     "(/etc/network/interfaces written, up and verified) and "
                                     "keeps it")

    asker = S.ScriptedAsker([*CREATE, ("apply", True), ("save", "")])
    result = flow.run(det, asker, NetworkThenNo())
    asker.done()
    assert not result.applied
    said = "\n".join(asker.said)
    assert "nothing changed" not in said
    assert "The cluster steps were not applied; the network phase configured 10.1.9.1/24 on " \
           "eth9" in said and "again" in said
