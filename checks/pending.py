"""Links this node has only planned: their probes wait for apply's network phase.

A link address the plan puts on a free NIC (a new /etc/network/interfaces stanza) is not on
the machine until `pvestrap apply` writes the stanza and brings it up, so nothing can be sent
from it yet: the prober leaves that link out (preflight.run passes it as `pending`), and the
reachability and latency checks say so with one SKIP per pending link instead of a FAIL for
every peer. Every other probe (the other links, TCP to the join target, the clocks, duplicate
address detection for the planned address itself) still runs. Once the network phase has
configured the address it is no longer pending, and the same preflight probes it.

preflight.run puts `{link: NIC}` under PENDING_KEY in the check context's options.

Findings (subject `pve1/link0`): link-port-pending and latency-pending (SKIP). Payload: link,
address, nic, port, peers.
"""

from __future__ import annotations

from typing import Any

from pvestrap.checks.base import Context
from pvestrap.findings import Finding, Severity

PENDING_KEY = "pending_links"


def pending_links(ctx: Context) -> dict[int, str | None]:
    """{link: NIC} of the links whose address on this node is only planned."""
    return dict(ctx.options.get(PENDING_KEY) or {})


def _payload(ctx: Context, link: int, nic: str | None) -> dict[str, Any]:
    plan, me = ctx.plan, ctx.node
    if plan is None or me is None or not plan.has_node(me):
        return {"link": link, "address": None, "nic": nic, "port": 5405 + link, "peers": []}
    peers = [n.name for n in plan.nodes if n.name != me and link in n.addresses]
    port = next((k.port for k in plan.links if k.number == link), 5405 + link)
    return {"link": link, "address": plan.node(me).addresses.get(link), "nic": nic,
            "port": port, "peers": peers}


def _where(payload: dict[str, Any]) -> str:
    on = f" on {payload['nic']}" if payload["nic"] else ""
    return (f"link{payload['link']}'s address {payload['address']} is planned{on}, not "
            "configured yet")


def port_findings(ctx: Context) -> list[Finding]:
    """One SKIP per pending link: its UDP port is probed once apply has configured it."""
    out = []
    for link, nic in sorted(pending_links(ctx).items()):
        p = _payload(ctx, link, nic)
        peers = ", ".join(p["peers"]) or "the peers"
        out.append(Finding("link-port-pending", Severity.SKIP,
                           f"{_where(p)}: UDP {p['port']} to {peers} is probed after apply's "
                           "network phase has configured it", f"{ctx.node}/link{link}",
                           payload=p))
    return out


def latency_findings(ctx: Context) -> list[Finding]:
    """One SKIP per pending link: its latency is measured once apply has configured it."""
    out = []
    for link, nic in sorted(pending_links(ctx).items()):
        p = _payload(ctx, link, nic)
        out.append(Finding("latency-pending", Severity.SKIP,
                           f"{_where(p)}: its latency to {', '.join(p['peers']) or 'the peers'} "
                           "is measured after apply's network phase has configured it",
                           f"{ctx.node}/link{link}", payload=p))
    return out
