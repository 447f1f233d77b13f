"""Never cut the branch you sit on: a plan that changes the /etc/network/interfaces stanza of the
interface carrying the default route or the current SSH session is refused before any change.

Rewriting and reloading that stanza (`ifreload -a`) drops the route or the session for a moment at
best; at worst a typo leaves the node unreachable with nobody to roll it back. The interfaces that
count are the default route's devices and the one holding SSH_CONNECTION's server address, with
every device below them (a bridge's ports, a bond's slaves, a VLAN's parent): a stanza for any of
them is the same cable. A stanza the plan names but that is already as planned changes nothing
and is allowed (a second apply).
"""

from __future__ import annotations

from typing import Mapping

from pvestrap.checks.localsys import Machine
from pvestrap.errors import UserError
from pvestrap.interfaces import edit_interfaces
from pvestrap.plan import InterfaceStanza, Node


def carrying(machine: Machine, environ: Mapping[str, str]) -> dict[str, str]:
    """interface -> why it must not be touched (default route / SSH session), lower devices too."""
    reasons: dict[str, str] = {}
    for dev in machine.default_route:
        reasons.setdefault(dev, "carries the default route")
    session = environ.get("SSH_CONNECTION", "").split()
    if len(session) == 4:
        for iface in machine.carrying(session[2]):
            reasons.setdefault(iface.name, f"carries this SSH session (to {session[2]})")
    for name, why in list(reasons.items()):
        for lower in machine.lower(name) - {name}:
            reasons.setdefault(lower, f"is below {name}, which {why}")
    return reasons


def _already(text: str, stanza: InterfaceStanza) -> bool:
    """The file has STANZA as planned (a stanza the file cannot take is no excuse either)."""
    try:
        return edit_interfaces(text, (stanza,)) == text
    except UserError:
        return False


def refuse_cutting_branch(node: Node, machine: Machine, interfaces_text: str,
                          environ: Mapping[str, str]) -> None:
    """UserError (exit 2) when the plan changes a stanza of an interface the node is reached by."""
    if not node.interfaces:
        return
    reasons = carrying(machine, environ)
    for stanza in node.interfaces:
        why = reasons.get(stanza.name)
        if why is None or _already(interfaces_text, stanza):
            continue
        raise UserError(
            f"{node.name}: the plan changes the stanza of {stanza.name} in "
            f"/etc/network/interfaces, and {stanza.name} {why}: reloading it could cut this node "
            "off; nothing was changed", code="network-branch-in-use",
            remedy=f"put the cluster link on a free NIC (not {stanza.name}), or change "
                   f"{stanza.name} from the node's console, then run apply again")
