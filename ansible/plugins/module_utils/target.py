# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""What every node-side module shares: the pvestrap library from the single file the role
ships (the ISO first-boot hook, a zipapp that runs on the node's own python3), the plan from
the cluster's answer file, and errors turned into a failed task with pvestrap's own message."""

from __future__ import annotations

import os
import sys

COMMON_ARGS = dict(
    pvestrap=dict(type="path", required=True),
    answers=dict(type="str", required=True),
    node=dict(type="str", required=True),
)


def library(module):
    """Put the shipped pvestrap first on sys.path (once) and check that it imports."""
    path = module.params["pvestrap"]
    if not os.path.isfile(path):
        module.fail_json(msg="pvestrap is not on this node at %s (the role copies it there)"
                         % path)
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        import pvestrap  # noqa: F401
    except ImportError as exc:
        module.fail_json(msg="%s does not carry the pvestrap library: %s" % (path, exc))


def plan(module):
    """The cluster plan of the answers parameter; a bad file fails with its key paths/lines."""
    from pvestrap.answers import loads
    from pvestrap.errors import PvestrapError

    try:
        found = loads(module.params["answers"], source="answers (from the controller)")
    except PvestrapError as exc:
        failed(module, exc)
    if not found.has_node(module.params["node"]):
        module.fail_json(msg="node %r is not in cluster %s (nodes: %s)" % (
            module.params["node"], found.cluster_name, ", ".join(n.name for n in found.nodes)))
    return found


def failed(module, exc, **extra):
    """Fail the task with pvestrap's rendering of the error (findings, remedies), no traceback."""
    module.fail_json(msg=exc.render(), code=getattr(exc, "code", "error"), **extra)


def is_member(plan_, node, system):
    """Whether NODE already runs in the planned cluster (then it is not a fresh node, and its
    preflight is skipped, as `pvestrap apply` does)."""
    from pvestrap.apply.flow import choose_backend

    if choose_backend(plan_, system) == "pve":
        from pvestrap.apply import pve

        return bool(pve.cluster_membership(system, plan_, node))
    from pvestrap.apply import corosync as cs

    return cs.membership(system, plan_, node).state == "member"


def fail_lines(findings):
    """One line per FAIL: '[check] message (code)'."""
    return ["[%s] %s (%s)" % (f.check or f.code, f.message, f.code) for f in findings]
