"""Corosync's UDP ports, per peer, link and port: open, closed or filtered.

knet link N listens on UDP 5405 + N; every link needs its own port open in both directions, and
Proxmox's own firewall opens only 5404:5405, so links 1..7 are easily blocked. A closed port
(ICMP port unreachable: nothing listens, or a REJECT rule) and a filtered one (no answer: a DROP
rule) are reported apart because the fixes differ. UDP 5404 is a corosync 2 leftover (transport
udp/udpu), reported as a warning only.

The probes need `pvestrap responder` running on the peer: without it, every port looks closed.

Findings (subject `pve1->pve2/link0:5405`): link-port-open (PASS), link-port-closed (FAIL),
link-port-filtered (FAIL), link-port-unreachable (FAIL), link-port-unmeasured (SKIP),
link-port-pending (SKIP: this node's link address is only planned, see checks.pending), and for 5404
legacy-port-open (INFO), legacy-port-closed / legacy-port-filtered / legacy-port-unreachable
(WARN). Payload: peer, link, port, address, source, sent, received.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvestrap.checks import pending, prober
from pvestrap.checks.base import Context
from pvestrap.findings import Finding, Severity

LEGACY_NOTE = "needed only for transport udp/udpu (corosync 2); knet does not use it"


@dataclass(frozen=True)
class PortsCheck:
    id: str = "link-ports"
    family: str = "ports"
    title: str = "UDP 5405+N (each link) and 5404 (legacy) open to every peer"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None:
            return [Finding("link-port-unmeasured", Severity.SKIP, "no probes were run",
                            ctx.node)]
        me = ctx.node or found.node or "this node"
        out = pending.port_findings(ctx) + [_finding(me, r) for r in found.udp]
        return out or [Finding("link-port-unmeasured", Severity.SKIP, "no peers to probe",
                               ctx.node)]


def _finding(me: str, r: "prober.PortResult") -> Finding:
    subject = f"{me}->{r.peer}/link{r.link}:{r.port}"
    payload = {"peer": r.peer, "link": r.link, "port": r.port, "address": r.address,
               "source": r.source, "sent": r.sent, "received": r.received, "state": r.state}
    prefix = "legacy-port" if r.legacy else "link-port"
    where = f"UDP {r.port} on {r.peer} ({r.address}, link{r.link})"
    if r.state == "error":
        return Finding(f"{prefix}-unmeasured", Severity.SKIP, f"{where} not measured: {r.error}",
                       subject, payload=payload)
    if r.state == "open":
        if r.legacy:
            return Finding("legacy-port-open", Severity.INFO, f"{where} answers; {LEGACY_NOTE}",
                           subject, payload=payload)
        return Finding("link-port-open", Severity.PASS, f"{where} answers "
                       f"({r.received}/{r.sent} probes)", subject, payload=payload)
    severity = Severity.WARN if r.legacy else Severity.FAIL
    note = f"; {LEGACY_NOTE}" if r.legacy else ""
    if r.state == "closed":
        message = f"{where} is closed: ICMP port unreachable{note}"
        remedy = (f"on {r.peer}: make sure `pvestrap responder` runs there during the preflight "
                  f"(corosync once clustered), and remove any REJECT rule for UDP {r.port} "
                  f"(`nft list ruleset | grep {r.port}`)")
    elif r.state == "unreachable":
        message = f"{where} is unreachable: no route or no neighbour answers ARP{note}"
        remedy = (f"check that {r.address} is up on {r.peer} and in the same network as "
                  f"{r.source or 'this node'}")
    else:
        message = f"{where} is filtered: {r.sent} probes, no answer{note}"
        remedy = (f"a firewall drops UDP {r.port}: on {r.peer} allow it from this node, e.g. "
                  f"`nft add rule inet filter input {_family_word(r.address)} saddr "
                  f"{r.source or '<this node>'} udp dport {r.port} accept`, or a pve-firewall rule "
                  f"(its corosync rule covers only 5404:5405, links 1..7 need their own); also "
                  f"check that `pvestrap responder` runs on {r.peer}")
    return Finding(f"{prefix}-{r.state}", severity, message, subject, payload=payload,
                   remedy=remedy)


def _family_word(address: str) -> str:
    return "ip6" if ":" in address else "ip"
