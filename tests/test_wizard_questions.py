"""The question model: one definition that serves the prompts and the answer files.

The keys tests walk answer_schema.FORMAT (the one definition of the answer-file keys) and the
wizard's own output; the validator tests check that a rejection carries the rule.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from pvestrap import answer_schema, answers
from pvestrap.answers import dumps
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.system import CommandResult
from pvestrap.toml_schema import is_secret
from pvestrap.wizard import flow
from pvestrap.wizard import questions
from pvestrap.wizard.detect import detect


from wizard_support import FakeServices, ScriptedAsker, join_blob, machine


def schema_paths(keys=answer_schema.FORMAT, prefix="") -> dict[str, answer_schema.Key]:
    """Every key of the answer-file format as a path: links[].number, nodes[].linkN ..."""
    out = {}
    for key in keys:
        path = f"{prefix}{key.name}"
        out[path] = key
        if key.kind == answer_schema.TABLE:
            out.update(schema_paths(key.children, path + "."))
        elif key.kind == answer_schema.TABLES:
            out.update(schema_paths(key.children, path + "[]."))
    return out


def in_schema(path: str, paths: dict[str, answer_schema.Key]) -> bool:
    """A concrete path (nodes[].link3) against the schema, pattern keys included."""
    if path in paths:
        return True
    head, _, last = path.rpartition(".")
    return any(k.pattern and p.rpartition(".")[0] == head and re.fullmatch(k.pattern, last)
               for p, k in paths.items())


def file_paths(data, prefix="") -> set[str]:
    """The key paths of a parsed answer file (tables of arrays as [], inline tables walked)."""
    out = set()
    for name, value in data.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            out |= file_paths(value, path + ".")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out |= file_paths(item, path + "[].")
        else:
            out.add(path)
    return out


def test_every_question_key_is_an_answer_file_key():
    paths = schema_paths()
    keys = {k for q in questions.all_questions() for k in q.keys}
    assert keys, "the questions name no keys at all"
    assert sorted(k for k in keys if not in_schema(k, paths)) == []


def test_every_required_answer_file_key_has_a_question():
    paths = schema_paths()
    required_leaves = [p for p, k in paths.items()
                       if k.required and k.kind not in (answer_schema.TABLE, answer_schema.TABLES)]
    assert {"cluster.name", "links[].number", "nodes[].name",
            "nodes[].interfaces[].name"} <= set(required_leaves)
    keys = {k for q in questions.all_questions() for k in q.keys}
    assert [p for p in required_leaves if p not in keys] == []


def test_question_ids_are_unique_and_secrets_have_no_answer_of_their_own():
    ids = [q.id for q in questions.all_questions()]
    assert len(ids) == len(set(ids))
    secrets = [q for q in questions.all_questions() if q.secret]
    assert [q.id for q in secrets] == ["join.password"]
    # the only keys a secret maps to are the references, never a value key
    assert set(secrets[0].keys) == {"join.password_env", "join.password_file"}
    assert all(is_secret(k.rsplit(".", 1)[-1]) is False for q in secrets for k in q.keys)


@pytest.fixture
def det(tmp_path):
    return detect(str(tmp_path), machine=machine(), resolver=lambda n: ("10.1.0.1",),
                  runner=lambda argv: CommandResult(tuple(argv), 127))


def _create_run(det, extra=()):
    script = [("role", "create"), ("cluster.name", "prod"), ("link0.address", "10.1.0.1"),
              ("links.add1", True), ("link1.address", "nic:eth2"),
              ("link1.static", "10.3.0.1/24"), ("links.add2", False), ("links.preferred", 1),
              ("peer1.name", "pve2"), ("peer1.link0", "10.1.0.2"), ("peer1.link1", "10.3.0.2"),
              ("peer1.nic1", "eth2"), ("peer2.name", ""), ("migration.network", "10.3.0.0/24"),
              ("migration.type", "insecure"), ("keyboard", "de"), ("qdevice.host", "10.1.0.50"),
              *extra]
    asker = ScriptedAsker(script)
    talk = flow.gather(det, asker, FakeServices())
    asker.done()
    return flow.to_plan(talk.state())


def _join_run(det_pve, services):
    blob = join_blob("10.1.0.9", services.fingerprint, {0: "10.1.0.9", 1: "10.2.0.9"}, "prod")
    asker = ScriptedAsker([
        ("role", "join"), ("join.method", "info"), ("join.info", blob),
        ("join.fingerprint", True), ("join.password", "hunter2-secret"),
        ("link0.address", "10.1.0.1"), ("link1.address", "10.2.0.1"),
        ("peer1.name", "pve9"), ("peer1.link0", ...), ("peer1.link1", ...), ("peer2.name", ""),
        ("node.nodeid", "2"), ("join.password_ref", "env"), ("join.password_env", "PVE_PW")])
    talk = flow.gather(det_pve, asker, services)
    asker.done()
    return talk, flow.to_plan(talk.state())


def test_every_key_the_wizard_writes_is_in_the_schema_and_comes_from_a_question(det, tmp_path):
    import dataclasses

    paths = schema_paths()
    asked = {k for q in questions.all_questions() for k in q.keys}
    det_pve = dataclasses.replace(det, is_pve=True)
    written = set()
    texts = [dumps(_create_run(det)), dumps(_join_run(det_pve, FakeServices())[1])]
    for text in texts:
        written |= file_paths(tomllib.loads(text))
    assert {"nodes[].interfaces[].address", "datacenter.migration.type", "join.fingerprint",
            "join.password_env", "links[].priority", "qdevice.host"} <= written
    assert sorted(p for p in written if not in_schema(p, paths)) == []
    # the backend comes from what was detected, not from a question; every other key from one
    assert sorted(p for p in written if p not in asked) == ["cluster.backend"]
    assert not any("hunter2-secret" in text for text in texts)


@pytest.mark.parametrize("value, ok", [("prod", True), ("pve-prod1", True), ("a" * 15, True),
                                       ("bad_name", False), ("-prod", False), ("prod-", False),
                                       ("a" * 16, False), ("", False), ("pr od", False)])
def test_cluster_name_rejection_shows_the_rule(det, value, ok):
    problem = questions.CLUSTER_NAME.check(value, questions.State(det))
    assert (problem is None) is ok
    if not ok:
        assert questions.NAME_RULE in problem


def test_qdevice_is_asked_for_an_even_node_count_only(det):
    plan = _create_run(det)  # two nodes: asked, answered
    assert plan.qdevice is not None and plan.qdevice.host == "10.1.0.50"
    assert answers.loads(dumps(plan)) == plan  # the answer export round-trips it
    two = questions.State(det, {"role": "create", "link0.address": "10.1.0.1", "peer1.name": "pve2",
                        "peer1.link0": "10.1.0.2"})
    assert questions.QDEVICE.when(two)
    assert "outside the cluster" in questions.QDEVICE.check("10.1.0.2", two)
    assert questions.QDEVICE.check("", two) is None
    assert questions.QDEVICE.check("10.1.0.50", two) is None
    three = questions.State(det, {**two.answers, "peer2.name": "pve3", "peer2.link0": "10.1.0.3"})
    assert not questions.QDEVICE.when(three)
    note = questions.QDEVICE_ODD_NOTE.format(n=3, votes=2)
    assert "discourages" in note and "no single node may fail" in note


def test_address_rules(det):
    state = questions.State(det, {"link0.address": "10.1.0.1", "peer1.name": "pve2"})
    rule = questions.link_other(1)
    assert questions.IP_RULE in rule.check("pve2.example", state)
    assert "127.0.0.1 cannot carry" in rule.check("127.0.0.1", state)
    assert "already given for this node's link0" in rule.check("10.1.0.1", state)
    assert rule.check("10.9.9.9", state) is None
    peer = questions.peer_link(1, 0)
    assert "not in link0's network 10.1.0.0/24" in peer.check("10.7.0.2", state)
    assert peer.check("10.1.0.2", state) is None
    static = questions.link_static(1)
    st = questions.State(det, {"link0.address": "10.1.0.1", "link1.address": "nic:eth2"})
    assert questions.CIDR_RULE in static.check("10.3.0.1", st)
    assert static.check("10.3.0.1/24", st) is None


def test_defaults_and_choices_come_from_the_machine(tmp_path):
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/keyboard").write_text('XKBMODEL="pc105"\nXKBLAYOUT="ch"\n')
    det = detect(str(tmp_path), machine=machine(), resolver=lambda n: ("10.2.0.1",),
                 runner=lambda argv: CommandResult(tuple(argv), 127))
    state = questions.State(det)
    assert det.keyboard == "de-ch" and questions.KEYBOARD.default_for(state) == "de-ch"
    link0 = questions.link_address(0)
    # the host name's address is PVE's node IP: the default for link0
    assert link0.default_for(state) == "10.2.0.1"
    values = [c.value for c in link0.choices_for(state)]
    assert values == ["10.1.0.1", "10.2.0.1", "nic:eth2", questions.OTHER]
    # an address taken by link0 is not offered again for link1, the free NIC still is
    taken = questions.State(det, {"link0.address": "10.2.0.1"})
    assert [c.value for c in questions.link_address(1).choices_for(taken)] == \
        ["10.1.0.1", "nic:eth2", questions.OTHER]


def test_when_conditions_split_create_and_join(det):
    create = questions.State(det, {"role": "create"})
    join = questions.State(det, {"role": "join"})
    join_only = [questions.JOIN_METHOD, questions.JOIN_ADDRESS, questions.NODEID]
    create_only = [questions.MIGRATION_NETWORK, questions.MIGRATION_TYPE, questions.KEYBOARD,
                   questions.more_links(1)]
    assert [q.when(create) for q in join_only] == [False] * 3
    assert [q.when(join) for q in create_only] == [False] * 4
    assert all(q.when(create) for q in create_only)
    # the password and the fingerprint are asked only where pvecm needs them
    assert not questions.PASSWORD_Q.when(join) and not questions.FINGERPRINT.when(join)


def test_detect_reads_pve_markers_clusters_and_ignores_the_stock_conf(tmp_path):
    def run(root):
        return detect(str(root), machine=machine(), resolver=lambda n: (),
                      runner=lambda argv: CommandResult(tuple(argv), 127))

    assert not run(tmp_path).is_pve and run(tmp_path).cluster is None
    (tmp_path / "etc/corosync").mkdir(parents=True)
    conf = tmp_path / "etc/corosync/corosync.conf"
    conf.write_text("totem {\n  cluster_name: debian\n}\nnodelist {\n  node {\n"
                    "    ring0_addr: 127.0.0.1\n  }\n}\n")
    assert run(tmp_path).cluster is None  # Debian's packaged example is not a cluster
    conf.write_text(conf.read_text().replace("127.0.0.1", "10.1.0.1").replace("debian", "prod"))
    found = run(tmp_path).cluster
    assert (found.config, found.name) == ("/etc/corosync/corosync.conf", "prod")
    (tmp_path / "etc/pve").mkdir()
    assert run(tmp_path).is_pve and run(tmp_path).backend == "pve"


def test_free_nics_and_management_flags():
    m = machine()
    det = detect("/nonexistent", machine=m, resolver=lambda n: (),
                 runner=lambda argv: CommandResult(tuple(argv), 127))
    assert [n.name for n in det.free_nics] == ["eth2"]
    assert [(a.interface, a.management) for a in det.addresses] == [("eth0", True),
                                                                    ("eth1", False)]
    assert det.host_address is None


def test_machine_fixture_is_what_the_tests_say():
    m = machine()
    assert isinstance(m, Machine) and isinstance(m.interfaces[1], Interface)
    assert m.interface("eth0").addresses == (IfAddress("10.1.0.1", 24),)


def test_what_was_detected_is_shown_first(det):
    asker = ScriptedAsker([("role", KeyboardInterrupt())])
    with pytest.raises(KeyboardInterrupt):
        flow.gather(det, asker, FakeServices())
    shown = asker.said[0]
    assert shown.startswith("This machine: pve1, plain Debian (corosync backend); its name "
                            "resolves to 10.1.0.1.")
    assert "eth0: 10.1.0.1/24 (management)" in shown and "free NICs (for a dedicated " \
        "cluster network): eth2" in shown and "no time daemon found" in shown
