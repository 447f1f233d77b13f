"""First boot's last act for an answer file with `[qdevice]`: the node that joins last sets the
QDevice up once every node is a member (the admin guide: all nodes online before `pvecm qdevice
setup`), with the same preflight, steps and rollback as `pvestrap qdevice setup`.

Unattended, nothing destructive is guessed: an odd node count is refused (qdevice-odd-nodes)
unless the answer file or `--ignore` names the `qdevice-votes` check, and an existing
certificate store is never replaced. A QDevice already configured at the planned host (a rerun
after a reboot) is left as it is; one at another host is refused.
"""

from __future__ import annotations

from typing import Callable, Sequence

from pvestrap import qdevice as model
from pvestrap.apply import qdevice as qd
from pvestrap.apply.links import LinkTimeouts
from pvestrap.apply.qdevice_preflight import preflight
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed
from pvestrap.findings import Severity, apply_ignores
from pvestrap.firstboot import membership
from pvestrap.paths import COROSYNC_CONF
from pvestrap.plan import ClusterPlan, Node
from pvestrap.system import RealSystem, System

Say = Callable[[str], None]


def last_to_join(plan: ClusterPlan) -> Node:
    """The creator goes first, then the joiners in nodeid order (membership.predecessor)."""
    if len(plan.nodes) == 1:
        return plan.creator
    return max((n for n in plan.nodes if n.name != plan.creator.name), key=lambda n: n.nodeid)


def mine(plan: ClusterPlan, me: Node) -> bool:
    return plan.qdevice is not None and me.name == last_to_join(plan).name


def setup(plan: ClusterPlan, me: Node, wait_s: float, ignore: Sequence[str], say: Say,
          system: System | None = None, verify_s: float = 120.0) -> str:
    """Set up the plan's QDevice from this node: "configured", or "present" when it was."""
    assert plan.qdevice is not None
    system = system or RealSystem()
    text = system.read_text(COROSYNC_CONF) or ""
    present = model.configured(CorosyncConf.parse(text, COROSYNC_CONF)) if text else None
    if present is not None:
        if present.get("host") == plan.qdevice.host:
            say(f"the QDevice at {plan.qdevice.host} is set up already")
            return "present"
        raise OperationFailed(f"a QDevice at {present.get('host')} is configured, the answer "
                              f"file says {plan.qdevice.host}", code="qdevice-other-host",
                              remedy="remove it (pvestrap qdevice remove) or fix the answers")
    if not membership.wait_for_all_members(plan, wait_s, say):
        raise OperationFailed("not every node is a member: the QDevice needs all nodes online",
                              code="qdevice-members-missing")
    say(f"setting up the QDevice at {plan.qdevice.host} (the last node to join does it)")
    change = qd.read_setup(system, plan.qdevice, LinkTimeouts(verify=verify_s))
    ignored = [*plan.preflight.ignore_checks, *ignore]
    found = apply_ignores(preflight(system, change, force=False), ignored)
    for finding in found:
        if finding.severity in (Severity.FAIL, Severity.WARN):
            say(f"  {finding.severity.label}: {finding.message} [{finding.code}]")
    failed = sorted({f.code for f in found if f.severity is Severity.FAIL})
    if failed:
        raise OperationFailed(f"the QDevice preflight failed ({', '.join(failed)}): nothing "
                              "was changed", code="qdevice-preflight-failed")
    qd.run_change(system, change, on_progress=lambda e: say(f"  [{e.state}] {e.step_id}"))
    votes = f": {change.math.expected} expected votes" if change.math else ""
    say(f"QDevice at {plan.qdevice.host} set up{votes}")
    return "configured"
