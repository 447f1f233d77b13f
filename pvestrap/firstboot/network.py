"""First boot's network phase: the cluster NIC configured from the answer file, first of all.

An installed node (the ISO path: the installer configured only the management NIC) does not
have the link addresses the answer file puts on a NIC of their own yet. Without them nothing
else of the first boot can work: no responder can answer there, no peer can be reached over
the link, and the preflight would probe nothing on it. So before it waits for the peers, the
first boot writes this node's stanzas and brings them up: the same network phase as `pvestrap
apply` (pvestrap.apply.network_phase: one render path, the atomic write, the carrier and address
waits, the rollback to the exact previous file on any failure), behind the same guard (a stanza
for the interface of the default route or of an SSH session is refused, exit 2). The apply later
in the run finds the network as planned and plans nothing there. A rerun does the same: nothing
when the node is as planned already.
"""

from __future__ import annotations

from typing import Callable

from pvestrap.apply import address_probe
from pvestrap.apply.flow import ApplyContext, configure_network
from pvestrap.apply.network_phase import Prober
from pvestrap.checks.localsys import Machine
from pvestrap.paths import INTERFACES
from pvestrap.plan import ClusterPlan
from pvestrap.system import RealSystem, System

Say = Callable[[str], None]


def configure(plan: ClusterPlan, node: str, say: Say, detail: Say, *,
              system: System | None = None, root: str = "/", machine: Machine | None = None,
              prober: Prober = address_probe.probe) -> bool:
    """Bring NODE's planned stanzas up (see the module docstring); True when something changed.
    Raises UserError (refused, nothing changed) or StepFailed (rolled back). The keyword
    arguments are seams for tests (this machine, its `ip -j` view, the ARP probe)."""
    me = plan.node(node)
    if not any(s.address for s in me.interfaces):
        return False
    planned = ", ".join(f"{s.address} on {s.name}" for s in me.interfaces if s.address)
    outcome = configure_network(plan, node, ApplyContext(
        system or RealSystem(), root=root, out=detail, machine=machine, prober=prober))
    if outcome is None or not outcome.changed:
        say(f"network: {planned} as planned already")
        return False
    say(f"network: configured {planned} ({INTERFACES} written, brought up, verified)")
    return True
