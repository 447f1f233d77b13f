"""One node-name rule (pvestrap.plan.name_problem): the plan, the corosync.conf facade, the
wizard, the preflight's names check, doctor and the installer all take the same names."""

from __future__ import annotations

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import ValidationFailed
from pvestrap.plan import NAME_RULE, ClusterPlan, Link, Node, name_problem, validate
from pvestrap.wizard.rules import check_name

GOOD = ["a", "pve1", "PVE-prod1", "0", "a" * 15, "x-y-z"]
BAD = ["", "-pve", "pve-", "pve_1", "pve.1", "a" * 16, "pvé", "pve 1", "pve\n"]


def _plan(name: str) -> ClusterPlan:
    return ClusterPlan("lab", (Node(name, 1, {0: "10.9.0.1"}), Node("other", 2, {0: "10.9.0.2"})),
                       (Link(0),))


@pytest.mark.parametrize("name", GOOD + BAD)
def test_every_consumer_takes_the_names_the_rule_takes(name):
    ok = name_problem(name) is None
    assert ok == (name in GOOD)
    codes = {f.code for f in validate(_plan(name))}
    assert ("node-name-invalid" not in codes) == ok
    assert (check_name(name, "node name") is None) == ok
    conf = CorosyncConf.create(_plan("keep"))
    try:
        conf.add_node(name, {0: "10.9.0.9"})
        added = True
    except ValidationFailed as exc:
        added = "node-name-invalid" not in {f.code for f in exc.findings}
    except Exception:  # forbidden characters are refused before the name rule
        added = False
    assert added == ok


def test_the_rule_has_one_wording_and_explains_itself():
    assert name_problem("a" * 16) == "longer than 15 characters"
    assert name_problem("pve_1") == "only letters, digits and inner hyphens are allowed"
    assert name_problem(7) == "not text"
    assert NAME_RULE in check_name("-x")
