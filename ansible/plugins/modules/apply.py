#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: apply
short_description: Create, join or confirm a node's cluster membership as the plan says
description:
  - Runs C(pvestrap apply --yes) on the node through the pvestrap library shipped to it - the
    node's local preflight gate, then the steps of its role (create, join, or member), each
    planned before anything changes, undone in reverse order when one fails.
  - Check mode is C(--dry-run) (nothing changes); with C(--diff) the planned file changes are
    shown, the authkey as C(<secret>). A joiner whose cluster does not exist yet (check mode on
    fresh nodes) shows the files it will get when it joins.
  - C(changed) only when a step changed something; a node that is already as planned reports
    no change.
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
  ignore:
    description: Preflight check ids whose FAILs are accepted.
    type: list
    default: []
    elements: str
author: pvestrap developers
"""

EXAMPLES = r"""
- name: Create or join as planned
  pvestrap.cluster.apply:
    pvestrap: /var/lib/pvestrap/ansible/pvestrap.pyz
    answers: "{{ cluster_toml }}"
    node: pve2
"""

RETURN = r"""
role:
  description: create, join or member.
  returned: always
  type: str
steps: {description: Every step and the actions it planned., returned: always, type: list}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.pvestrap.cluster.plugins.module_utils import target


def main():
    module = AnsibleModule(argument_spec=dict(
        target.COMMON_ARGS, ignore=dict(type="list", elements="str", default=[])),
        supports_check_mode=True)
    target.library(module)
    plan = target.plan(module)
    from pvestrap.apply.corosync import JoinRefused
    from pvestrap.apply.flow import ApplyContext, apply_node
    from pvestrap.errors import PvestrapError
    from pvestrap.system import RealSystem

    node, lines = module.params["node"], []
    ctx = ApplyContext(RealSystem(), dry_run=module.check_mode,
                       ignore=tuple(module.params["ignore"]), out=lines.append)
    try:
        result = apply_node(plan, node, ctx)
    except JoinRefused as exc:
        if module.check_mode and exc.reasons and set(exc.reasons) <= {"member-not-clustered"}:
            not_yet(module, plan, node, lines)
        target.failed(module, exc, stdout_lines=lines)
    except PvestrapError as exc:
        target.failed(module, exc, stdout_lines=lines)
    changes = [a for _, actions in result.plans for a in actions if _is_change(a)]
    module.exit_json(
        changed=result.changed if not module.check_mode else result.planned,
        role=result.role, backend=result.backend, stdout_lines=lines,
        steps=[{"id": step, "actions": [a.path if _is_change(a) else str(a) for a in actions]}
               for step, actions in result.plans],
        diff=[_diff(c) for c in changes])


def not_yet(module, plan, node, lines):
    """Check mode on fresh nodes: the joiner's cluster is created by this same run, so there is
    no member to plan the join against yet. Show the files the node gets."""
    from pvestrap.apply.corosync import SECRET_TEXT
    from pvestrap.paths import AUTHKEY
    from pvestrap.render import Change, render_node

    changes = render_node(plan, node) + [Change(AUTHKEY, None, SECRET_TEXT, 0o400)]
    lines.append("%s: the cluster does not exist yet; it joins after %s creates it" % (
        node, plan.creator.name))
    module.exit_json(changed=True, role="join", backend="corosync", stdout_lines=lines,
                     steps=[{"id": "join", "actions": [c.path for c in changes]}],
                     diff=[_diff(c) for c in changes])


def _is_change(action):
    return hasattr(action, "after") and hasattr(action, "path")


def _diff(change):
    return {"before_header": change.path if change.before is not None else "/dev/null",
            "after_header": change.path, "before": change.before or "",
            "after": change.after}


if __name__ == "__main__":
    main()
