#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet_report
short_description: One preflight report per cluster and a fleet summary, JSON and HTML (controller)
description:
  - Runs on the controller after the node preflight. Merges every node's preflight (the
    registered results of M(pvestrap.cluster.preflight)) into one report per cluster, with the
    N x N matrices per link, and writes a fleet summary - the cross-cluster findings and one
    line per cluster. Each as JSON and HTML under O(folder). Changes nothing on the nodes.
options:
  inventory:
    description: The output of C(ansible-inventory --list --export).
    type: dict
    required: true
  results:
    description: Inventory host -> its registered preflight result (or null when it has none).
    type: dict
    required: true
  folder:
    description: Where the reports go.
    type: path
    required: true
  parent:
    description: The group whose children are the clusters.
    type: str
    default: pvestrap_clusters
author: pvestrap developers
"""

EXAMPLES = r"""
- name: Fleet preflight reports
  pvestrap.cluster.fleet_report:
    inventory: "{{ export.stdout | from_json }}"
    results: "{{ per_host_results }}"
    folder: /tmp/pvestrap/reports
  run_once: true
  delegate_to: localhost
"""

RETURN = r"""
reports:
  description: Report name (cluster group, or fleet) -> path of its JSON file.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec=dict(
        inventory=dict(type="dict", required=True), results=dict(type="dict", required=True),
        folder=dict(type="path", required=True),
        parent=dict(type="str", default="pvestrap_clusters")), supports_check_mode=True)
    from pvestrap import fleet
    from pvestrap.errors import PvestrapError
    from pvestrap.fleet_report import write_reports

    try:
        groups = [g for g in fleet.cluster_groups(module.params["inventory"],
                                                  module.params["parent"]) if g.plan]
    except PvestrapError as exc:
        module.fail_json(msg=exc.render())
    results = {}
    for host, got in module.params["results"].items():
        got = got or {}
        report = (got.get("ansible_facts") or {}).get("pvestrap_preflight")
        results[host] = {"report": report, "error": None if report else (
            got.get("msg") or "no preflight result (unreachable, or stopped before it)")}
    written = write_reports(module.params["folder"], groups, fleet.fleet_findings(groups),
                            results)
    module.exit_json(changed=False, reports=written,
                     msg="fleet summary: %s" % written["fleet"].replace(".json", ".html"))


if __name__ == "__main__":
    main()
