#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: status
short_description: Quorum, members and knet links of the node's running cluster, as facts
description:
  - Reads corosync's own tools on the node (C(pvestrap status)) with the pvestrap library
    shipped to it and returns C(pvestrap_status) - quorate, members, links, the report - as
    facts. Fails when the report has a FAIL (not quorate, fewer members than expected, a link
    down). Changes nothing.
options:
  pvestrap:
    description: Path of the single-file pvestrap on the node.
    type: path
    required: true
  expect_nodes:
    description: The number of members the cluster must have.
    type: int
author: pvestrap developers
"""

EXAMPLES = r"""
- name: Quorate with three members
  pvestrap.cluster.status:
    pvestrap: /var/lib/pvestrap/ansible/pvestrap.pyz
    expect_nodes: 3
"""

RETURN = r"""
ansible_facts:
  description: C(pvestrap_status).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pvestrap.cluster.plugins.module_utils import target


def main():
    module = AnsibleModule(argument_spec=dict(
        pvestrap=dict(type="path", required=True), expect_nodes=dict(type="int")),
        supports_check_mode=True)
    target.library(module)
    from pvestrap.findings import Severity
    from pvestrap.report.jsonout import report_dict
    from pvestrap.system import RealSystem
    from pvestrap.verify import build_report, observe

    obs = observe(RealSystem())
    report = build_report(obs, expect_nodes=module.params["expect_nodes"])
    names = obs.names()
    facts = {
        "cluster": report.meta.get("cluster"),
        "quorate": bool(obs.quorum and obs.quorum.quorate),
        "members": [names.get(m.nodeid, m.name) for m in (obs.quorum.nodes_only
                                                           if obs.quorum else ())],
        "links": {str(link.link): sorted(names.get(p.nodeid, str(p.nodeid))
                                         for p in link.peers if p.connected)
                  for link in (obs.links.links if obs.links else ())},
        "report": report_dict(report),
    }
    fails = [f for f in report.findings if f.severity is Severity.FAIL]
    if fails:
        module.fail_json(msg="status: %d FAIL: %s" % (len(fails),
                                                      "; ".join(target.fail_lines(fails))),
                         ansible_facts={"pvestrap_status": facts})
    module.exit_json(changed=False, ansible_facts={"pvestrap_status": facts},
                     msg="%s: quorate, %d members, links %s" % (
                         facts["cluster"], len(facts["members"]), ", ".join(facts["links"])))


if __name__ == "__main__":
    main()
