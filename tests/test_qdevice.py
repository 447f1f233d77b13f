"""The QDevice's model, vote math, corosync.conf section, checks and status findings (no root)."""

from __future__ import annotations

import pytest

from pvestrap import qdevice as model
from pvestrap.checks import qdevice as checks
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import UserError
from pvestrap.findings import Severity
from pvestrap.lab import files, names
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.verify import Observed
from pvestrap.verify_qdevice import parse_tool, qdevice_findings

TWO = files.corosync_conf(names.Layout("qd"), [1, 2], 1)  # has two_node: 1
QUORUMTOOL = """Quorum information
------------------
Date:             Thu Dec  3 07:17:26 2026
Quorum provider:  corosync_votequorum
Nodes:            2
Node ID:          0x00000001
Ring ID:          1.9
Quorate:          Yes

Votequorum information
----------------------
Expected votes:   3
Highest expected: 3
Total votes:      3
Quorum:           2
Flags:            Quorate Qdevice

Membership information
----------------------
    Nodeid      Votes    Qdevice Name
         1          1    A,V,NMW qd-n1 (local)
         2          1         NR qd-n2
         0          1            Qdevice
"""
TOOL = """Qdevice information
-------------------
Model:\t\t\tNet
Node ID:\t\t1
Quorate:\t\tYes

Qdevice-net information
----------------------
Cluster name:\t\tqd
QNetd host:\t\t10.254.0.100:5403
Algorithm:\t\tFifty-Fifty split
State:\t\t\tConnected
"""


def test_algorithm_follows_pvecm():
    assert model.default_algorithm(2) == "ffsplit"
    assert model.default_algorithm(4) == "ffsplit"
    assert model.default_algorithm(3) == "lms"


@pytest.mark.parametrize("votes,algorithm,expected,quorum,qv,survives", [
    ([1, 1], "ffsplit", 3, 2, 1, {"one node": True, "the qdevice": True,
                                  "one node and the qdevice": False}),
    ([1, 1, 1, 1], "ffsplit", 5, 3, 1, {"one node": True, "the qdevice": True,
                                        "one node and the qdevice": True}),
    ([1, 1, 1], "lms", 5, 3, 2, {"one node": True, "the qdevice": True,
                                 "one node and the qdevice": False,
                                 "all nodes but one (2)": True}),
])
def test_vote_math(votes, algorithm, expected, quorum, qv, survives):
    math = model.vote_math(votes, algorithm)
    assert (math.expected, math.quorum, math.qdevice_votes) == (expected, quorum, qv)
    got = {o.lost: o.quorate for o in math.outcomes}
    assert {k: got[k] for k in survives} == survives


def test_section_replaces_two_node_and_bumps_version():
    conf = CorosyncConf.parse(TWO)
    new = model.with_device(conf, model.QDevice("10.254.0.100"))
    assert new.config_version == conf.config_version + 1
    assert "two_node" not in new.text()
    assert model.configured(new) == {"model": "net", "votes": "1", "algorithm": "ffsplit",
                                     "host": "10.254.0.100", "tls": "on"}
    with pytest.raises(UserError):
        model.with_device(new, model.QDevice("10.254.0.100"))
    back = model.without_device(new)
    assert model.configured(back) is None and back.config_version == new.config_version + 1
    with pytest.raises(UserError):
        model.without_device(back)


def test_lms_has_no_votes_key_and_tie_breaker_is_written():
    conf = CorosyncConf.parse(files.corosync_conf(names.Layout("qd"), [1, 2, 3], 1))
    new = model.with_device(conf, model.QDevice("10.0.0.9", "lms", "highest"))
    found = model.configured(new)
    assert "votes" not in found and found["algorithm"] == "lms"
    assert found["tie_breaker"] == "highest"


def test_problems_name_every_field():
    q = model.QDevice("qnetd.example", "split", "nobody", "10.0.0.0/33")
    codes = {f.code for f in model.problems(q)}
    assert codes == {"qdevice-host-invalid", "qdevice-algorithm-invalid",
                     "qdevice-tie-breaker-invalid", "qdevice-network-invalid"}
    member = model.problems(model.QDevice("10.0.0.1"), ["10.0.0.1"])
    assert [f.code for f in member] == ["qdevice-host-member"]
    assert model.problems(model.QDevice("10.0.0.9", tie_breaker="2"), nodeids=[1, 2]) == []
    assert model.problems(model.QDevice("10.0.0.9", tie_breaker="7"), nodeids=[1, 2])


def test_port_findings_tell_states_apart():
    found = checks.port_findings("10.0.0.9", {"a": ("open", 0.4), "b": ("closed", None),
                                              "c": ("filtered", None)})
    assert [(f.code, f.severity) for f in found] == [
        ("qdevice-port-open", Severity.PASS), ("qdevice-port-closed", Severity.FAIL),
        ("qdevice-port-filtered", Severity.FAIL)]
    assert found[0].payload["rtt_ms"] == 0.4 and found[0].check == checks.CHECK_PORT


def test_odd_count_fails_unless_forced():
    math = model.vote_math([1, 1, 1], "lms")
    assert checks.vote_findings(math, False)[0].severity is Severity.FAIL
    assert checks.vote_findings(math, True)[0].severity is Severity.WARN
    assert checks.vote_findings(model.vote_math([1, 1], "ffsplit"), False)[0].code == \
        "qdevice-even-nodes"


def test_status_findings_from_the_tools():
    conf = model.with_device(CorosyncConf.parse(TWO), model.QDevice("10.254.0.100"))
    obs = Observed(quorum=parse_quorum_status(QUORUMTOOL), conf=conf)
    found = qdevice_findings(obs, tool=parse_tool(TOOL))
    codes = [f.code for f in found]
    assert codes == ["qdevice-connected", "qdevice-node-voting", "qdevice-node-not-registered"]
    assert found[0].payload["votes"] == 1 and found[0].payload["state"] == "Connected"
    assert found[0].payload["flags"] == {"qd-n1": "A,V,NMW", "qd-n2": "NR"}
    assert all(f.check == "qdevice" for f in found)
    stopped = qdevice_findings(obs, tool=None)
    assert stopped[0].code == "qdevice-not-running"
    assert qdevice_findings(Observed(conf=CorosyncConf.parse(TWO))) == []


def test_lab_names_know_the_qnetd_host():
    layout = names.Layout("lab1")
    assert layout.node_name(names.QNETD) == "lab1-qnetd"
    assert layout.owns_netns("lab1-qnetd") and not layout.owns_netns("lab10-qnetd")
    assert layout.owns_cmdline("pvestrap-lab:lab1-qnetd infinity")
    assert names.prefix_of_tag("pvestrap-lab:lab1-qnetd infinity") == "lab1"
    assert names.node_index("qnetd", "lab1", 2, "--drop", qnetd=True) == names.QNETD
    with pytest.raises(UserError):
        names.node_index("qnetd", "lab1", 2, "--drop")
    assert names.address(0, names.QNETD) == "10.254.0.100"


ANSWERS = """
[cluster]
name = "prod"

[[links]]
number = 0

[[nodes]]
name = "pve1"
link0 = "10.1.0.1"

[[nodes]]
name = "pve2"
link0 = "10.1.0.2"
"""


def test_answer_table_loads_and_round_trips():
    from pvestrap import answers

    plan = answers.loads(ANSWERS + '\n[qdevice]\nhost = "10.1.0.50"\ntie_breaker = "2"\n')
    assert plan.qdevice == model.QDevice("10.1.0.50", None, "2", None)
    assert answers.loads(answers.dumps(plan)) == plan
    older = answers.loads(ANSWERS + '\n[preflight]\nqdevice = "10.1.0.50"\n')
    assert older.qdevice == model.QDevice("10.1.0.50")


def test_answer_table_problems_name_the_key_and_line():
    from pvestrap import answers
    from pvestrap.errors import AnswerFileInvalid

    text = ANSWERS + '\n[qdevice]\nhost = "10.1.0.2"\nalgorithm = "split"\n'
    with pytest.raises(AnswerFileInvalid) as caught:
        answers.loads(text)
    found = {f.code: f for f in caught.value.findings}
    assert "qdevice-host-member" in found
    assert found["qdevice-host-member"].subject == "qdevice.host"
    assert found["qdevice-host-member"].payload.get("line") == 17
    assert any(f.subject and f.subject.startswith("qdevice.algorithm")
               for f in caught.value.findings)
    with pytest.raises(AnswerFileInvalid) as missing:
        answers.loads(ANSWERS + '\n[qdevice]\nalgorithm = "lms"\n')
    assert any("qdevice.host" in (f.subject or "") for f in missing.value.findings)


def test_status_report_shows_the_qdevice_in_every_format():
    import json

    from pvestrap.report.html import render_html
    from pvestrap.report.jsonout import render_json
    from pvestrap.report.junit import render_junit
    from pvestrap.report.text import render_text
    from pvestrap.verify import build_report

    conf = model.with_device(CorosyncConf.parse(TWO), model.QDevice("10.254.0.100"))
    obs = Observed(quorum=parse_quorum_status(QUORUMTOOL), conf=conf)
    report = build_report(obs, qdevice=qdevice_findings(obs, tool=parse_tool(TOOL)))
    assert [s.name for s in report.sections][:3] == ["quorum", "members", "qdevice"]
    text = render_text(report, color=False)
    assert "= QDEVICE =" in text and "[qdevice-connected]" in text
    doc = json.loads(render_json(report))
    section = next(s for s in doc["sections"] if s["name"] == "qdevice")
    assert section["findings"][0]["payload"]["votes"] == 1
    assert "qdevice-connected" in render_junit(report)
    assert "qdevice-node-not-registered" in render_html(report)
