#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: preflight
short_description: Run pvestrap's preflight on a node, probing the other nodes of its cluster
description:
  - Runs the node's preflight (local checks and the network checks against the responders of
    the other nodes of the cluster, the mesh) with the pvestrap library shipped to the node.
  - C(phase=listen) starts this node's probe responder; run it on every node of the cluster
    first, then C(phase=check) everywhere, then C(phase=stop).
  - Fails the host when the report has a FAIL (after O(ignore)), with the findings in the
    message. A node that already runs in the planned cluster is not a fresh node; its checks are
    skipped, as C(pvestrap apply) does.
  - Returns the report as the fact C(pvestrap_preflight), the same JSON as
    C(pvestrap preflight --json).
options:
  pvestrap:
    description: Path of the single-file pvestrap on the node.
    type: path
    required: true
  answers:
    description: The cluster answer file (TOML text).
    type: str
    required: true
  node:
    description: This node's name in the answer file.
    type: str
    required: true
  phase:
    description: C(listen), C(check) or C(stop).
    type: str
    default: check
    choices: [listen, check, stop]
  token:
    description: The run's probe token, the same on every node of the cluster.
    type: str
  duration:
    description: Seconds of probing per peer (default from the answer file).
    type: float
  ignore:
    description: Check ids whose FAILs are accepted.
    type: list
    default: []
    elements: str
  ttl:
    description: Seconds the responder lives at most.
    type: float
    default: 300
author: pvestrap developers
"""

EXAMPLES = r"""
- name: Responders up on every node of the cluster
  pvestrap.cluster.preflight:
    pvestrap: /var/lib/pvestrap/ansible/pvestrap.pyz
    answers: "{{ cluster_toml }}"
    node: pve1
    phase: listen
    token: "{{ token }}"
- name: Preflight (then phase=stop on every node)
  pvestrap.cluster.preflight:
    pvestrap: /var/lib/pvestrap/ansible/pvestrap.pyz
    answers: "{{ cluster_toml }}"
    node: pve1
    token: "{{ token }}"
"""

RETURN = r"""
ansible_facts:
  description: C(pvestrap_preflight), the report.
  returned: phase=check
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pvestrap.cluster.plugins.module_utils import responder, target


def main():
    module = AnsibleModule(argument_spec=dict(
        target.COMMON_ARGS, phase=dict(type="str", default="check",
                                       choices=["listen", "check", "stop"]),
        token=dict(type="str", no_log=True), duration=dict(type="float"),
        ignore=dict(type="list", elements="str", default=[]),
        ttl=dict(type="float", default=300.0)), supports_check_mode=True)
    target.library(module)
    phase = module.params["phase"]
    if phase == "stop":
        pid = responder.stop()
        module.exit_json(changed=False, msg="responder %s" % ("stopped" if pid else "not running"))
    plan = target.plan(module)
    if phase == "listen":
        listen(module, plan)
    check(module, plan)


def listen(module, plan):
    from pvestrap.checks.responder import ports_for_links

    if not module.params["token"]:
        module.fail_json(msg="phase=listen needs the run's token")
    node = plan.node(module.params["node"])
    try:
        pid = responder.start(module.params["pvestrap"], module.params["token"],
                              ports_for_links(plan.link_numbers),
                              sorted(set(node.addresses.values())), module.params["ttl"])
    except (OSError, RuntimeError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, pid=pid, msg="responder up for %g s" % module.params["ttl"])


def check(module, plan):
    from pvestrap import preflight
    from pvestrap.checks.probe import Token
    from pvestrap.errors import PvestrapError
    from pvestrap.findings import Severity, apply_ignores
    from pvestrap.report.jsonout import report_dict
    from pvestrap.system import RealSystem

    node, ignore = module.params["node"], tuple(module.params["ignore"])
    measured = []
    try:
        if target.is_member(plan, node, RealSystem()):
            module.exit_json(changed=False, member=True, ansible_facts={"pvestrap_preflight": {
                "member": True, "node": node, "cluster": plan.cluster_name}},
                msg="%s already runs in cluster %s: preflight skipped" % (node,
                                                                          plan.cluster_name))
        if len(plan.nodes) > 1 and not module.params["token"]:
            module.fail_json(msg="probing the peers needs the run's token")
        token = module.params["token"]
        probes = preflight.Probes(Token(token.encode()) if token else None,
                                  module.params["duration"], keep=measured.append)
        report = preflight.run(plan, node, probes=probes, ignore=ignore)
    except PvestrapError as exc:
        target.failed(module, exc)
    facts = report_dict(report)
    if measured:
        facts["measurements"] = measured[0].to_dict()
    fails = [f for f in apply_ignores(report.findings, ignore) if f.severity is Severity.FAIL]
    if fails:
        module.fail_json(msg="preflight on %s: %d FAIL: %s" % (
            node, len(fails), "; ".join(target.fail_lines(fails))),
            ansible_facts={"pvestrap_preflight": facts}, findings=[f.as_dict() for f in fails])
    module.exit_json(changed=False, ansible_facts={"pvestrap_preflight": facts},
                     msg="preflight on %s: %s" % (node, facts.get("summary")))


if __name__ == "__main__":
    main()
