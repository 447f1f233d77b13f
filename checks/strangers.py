"""Hosts that talk on the cluster's link ports but are not in the nodelist, for `pvestrap status`.

The admin guide warns that a removed node which powers on again "as it is" screws up the
cluster: its corosync still has the old corosync.conf and keeps sending knet packets to the
members' link ports (UDP 5405 + N); knet drops them silently, so neither corosync-quorumtool
nor corosync-cfgtool shows it. checks.link_senders (shared with `pvestrap doctor`, whose check
has the same id) hears every datagram arriving for those ports; any source that no node of
corosync.conf has is a stranger. Without CAP_NET_RAW the finding is a SKIP.
"""

from __future__ import annotations

import ipaddress
from typing import Mapping

from pvestrap.checks.link_senders import listen
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.findings import Finding, Severity, fail, passed

CHECK = "link-strangers"
KNET_PORT = 5405  # corosync's default mcastport; knet link N uses it + N


def ports_of(conf: CorosyncConf) -> dict[int, int]:
    """UDP port -> link number, for every link of CONF."""
    return {KNET_PORT + n: n for n in conf.link_numbers}


def known_addresses(conf: CorosyncConf) -> set[str]:
    return {a for n in conf.nodes for a in n.addresses.values()}


def stranger_findings(conf: CorosyncConf, heard: Mapping[str, set[int]] | None,
                      seconds: float, why: str | None = None) -> list[Finding]:
    """Findings for the sources heard on the link ports (None: could not listen, WHY says
    why); sources in the nodelist and loopback are not strangers."""
    if heard is None:
        return [Finding("link-strangers-unheard", Severity.SKIP, f"could not listen on the "
                        f"link ports: {why}", "links", CHECK, {"error": why})]
    ports, known = ports_of(conf), known_addresses(conf)
    out = []
    for address, dports in sorted(heard.items()):
        if address in known or ipaddress.ip_address(address.split("%")[0]).is_loopback:
            continue
        links = sorted(ports[p] for p in dports if p in ports)
        out.append(fail("link-stranger", f"{address} sends to link port(s) "
                        f"{', '.join(str(p) for p in sorted(dports))} but is not in the "
                        "nodelist (a removed node that came back with its old corosync.conf?)",
                        address, check=CHECK, payload={"address": address,
                                                       "ports": sorted(dports), "links": links},
                        remedy=f"find the host at {address}: power it off, or run `pvestrap "
                               "node separate` on it (stops corosync, keeps its files aside); "
                               "it can join again cleanly with `pvestrap apply`"))
    if not out:
        out.append(passed("link-strangers-none", f"nobody outside the nodelist sent to the "
                          f"link ports in {seconds:g} s", "links", CHECK,
                          payload={"seconds": seconds, "ports": sorted(ports)}))
    return out


def heard_findings(conf: CorosyncConf, seconds: float) -> list[Finding]:
    """Listen on CONF's link ports here for SECONDS and report the strangers."""
    senders = listen(ports_of(conf), seconds)
    if senders.error:
        return stranger_findings(conf, None, seconds, senders.error)
    return stranger_findings(conf, {a: set(p) for a, p in senders.seen.items()}, seconds)
