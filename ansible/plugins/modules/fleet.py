#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet
short_description: Turn the inventory's cluster groups into checked answer files (controller)
description:
  - Runs on the controller, with the pvestrap installed there. Reads the inventory as
    C(ansible-inventory --list --export) prints it, renders one answer file per cluster group
    (the children of O(parent)) and validates it with pvestrap, so a bad inventory fails here
    with the answer file's key paths and lines, before any node is touched.
  - Checks what only the whole fleet shows - the same cluster name in two groups, a host in two
    clusters, an address on two clusters, overlapping link networks - and fails on any of them,
    naming the groups.
  - Builds, per cluster, the single-file pvestrap the nodes run (the ISO first-boot hook - the
    core library and the answer file, at most 1 MiB, for the node's own python3) into
    O(build_dir). Reproducible - an unchanged inventory changes no file.
options:
  inventory:
    description: The output of C(ansible-inventory --list --export).
    type: dict
    required: true
  build_dir:
    description: Where the answer files and the per-cluster pvestrap go.
    type: path
    required: true
  parent:
    description: The group whose children are the clusters.
    type: str
    default: pvestrap_clusters
author: pvestrap developers
"""

EXAMPLES = r"""
- name: Fleet preflight and per-cluster pvestrap
  pvestrap.cluster.fleet:
    inventory: "{{ export.stdout | from_json }}"
    build_dir: /tmp/pvestrap
"""

RETURN = r"""
ansible_facts:
  description: >-
    C(pvestrap_fleet) - per cluster group its name, hosts, nodes, create host, answers and
    pvestrap file; and the fleet findings.
  returned: always
  type: dict
"""

import hashlib
import os

from ansible.module_utils.basic import AnsibleModule

# Every pvestrap module the node-side modules import: the single file carries them (and what
# they import) whatever the first-boot flow needs itself.
EXTRA_MODULES = (
    "pvestrap.answers", "pvestrap.apply.corosync", "pvestrap.apply.flow", "pvestrap.apply.pve",
    "pvestrap.checks.probe", "pvestrap.checks.prober", "pvestrap.checks.responder",
    "pvestrap.errors", "pvestrap.findings", "pvestrap.paths", "pvestrap.preflight",
    "pvestrap.render", "pvestrap.report.jsonout", "pvestrap.system", "pvestrap.verify",
)


def main():
    module = AnsibleModule(argument_spec=dict(
        inventory=dict(type="dict", required=True), build_dir=dict(type="path", required=True),
        parent=dict(type="str", default="pvestrap_clusters")), supports_check_mode=True)
    try:
        from pvestrap import fleet
        from pvestrap.errors import PvestrapError
        from pvestrap.findings import Severity
    except ImportError as exc:
        module.fail_json(msg="pvestrap is not installed for the controller's python (%s): "
                         "pip install pvestrap next to ansible-core" % exc)
    try:
        groups = fleet.cluster_groups(module.params["inventory"], module.params["parent"])
    except PvestrapError as exc:
        module.fail_json(msg=exc.render())
    findings = fleet.invalid_findings(groups) + fleet.fleet_findings(groups)
    fails = [f for f in findings if f.severity is Severity.FAIL]
    facts = {"findings": [f.as_dict() for f in findings], "parent": module.params["parent"],
             "build_dir": module.params["build_dir"]}
    if fails:
        module.fail_json(msg="fleet preflight: %d FAIL\n%s" % (
            len(fails), "\n".join("[%s] %s" % (f.code, f.message) for f in fails)),
            ansible_facts={"pvestrap_fleet": facts})
    changed = False
    facts["clusters"] = {}
    for group in groups:
        one, wrote = build(module, group)
        facts["clusters"][group.group] = one
        changed = changed or wrote
    module.exit_json(changed=changed, ansible_facts={"pvestrap_fleet": facts},
                     msg="%d clusters, %d hosts" % (len(groups),
                                                    sum(len(g.hosts) for g in groups)))


def build(module, group):
    """The group's answer file and its single-file pvestrap in build_dir; (facts, changed)."""
    from pvestrap.atomic import atomic_write
    from pvestrap.iso import hook

    folder = module.params["build_dir"]
    os.makedirs(folder, mode=0o700, exist_ok=True)
    answers = os.path.join(folder, group.group + ".toml")
    wrote = atomic_write(answers, group.answers, mode=0o600, backup=False)
    built = hook.build(answers, extra=EXTRA_MODULES)
    path = os.path.join(folder, group.group + ".pyz")
    wrote = atomic_write(path, built.data, 0o755, backup=False) or wrote
    plan = group.plan
    hosts = dict(zip(group.hosts, (n.name for n in plan.nodes)))
    return {
        "name": plan.cluster_name, "hosts": list(group.hosts), "nodes": hosts,
        "create_host": next(h for h, n in hosts.items() if n == plan.creator.name),
        "answers": group.answers, "answers_file": answers, "pvestrap": path,
        "pvestrap_sha256": hashlib.sha256(built.data).hexdigest(), "size": built.size,
    }, wrote


if __name__ == "__main__":
    main()
