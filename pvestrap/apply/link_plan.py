"""`pvestrap link add` and `pvestrap link move`: the edit, its phases and the preflight.

The edit is the admin guide's ("Adding Redundant Links To An Existing Cluster"): a ringN_addr on
every node and an `interface` section, config_version one higher per write, as pvecm counts it
(pve-cluster src/PVE/Corosync.pm, atomic_write_conf). Before any change: quorate, every node of
corosync.conf a member, the links that stay connected, the same corosync.conf everywhere, and on
the new network every member holds its new address on an interface that is up and reaches every
other member's new address by ICMP from it. pvestrap.apply.links writes the phases.

corosync 3.1.7 refuses a reload that changes a link's address ("To reconfigure an interface it
must be deleted and recreated. A working interface needs to be available to corosync at all
times", exec/totemconfig.c; seen in the lab) but takes new and removed links. So a move is two
phases, drop the link and add it again at the new addresses, while the other links carry the
cluster; the only link cannot move this way (`link-last`). Every rollback is again a removal or
an addition.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping

from pvestrap.apply.links import (SPLIT, Cluster, MemberHost, MemberOps, Phase, PhaseStep, each,
                                  run_locked)
from pvestrap.apply.remote import parse_show, show_script
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import PvestrapError, UserError, ValidationFailed
from pvestrap.findings import Finding, Severity, fail, warn
from pvestrap.paths import COROSYNC_CONF
from pvestrap.render import Change
from pvestrap.system import System


@dataclass(frozen=True)
class LinkRequest:
    action: str                   # add | move
    number: int
    addresses: Mapping[str, str]  # node name -> new address on link `number`
    priority: int | None = None
    network: str | None = None


@dataclass(frozen=True)
class ChangePlan:
    request: LinkRequest
    before: CorosyncConf
    before_text: str
    phases: tuple[Phase, ...]

    @property
    def final(self) -> CorosyncConf:
        return self.phases[-1].conf if self.phases else self.before

    def change(self, cluster: Cluster) -> Change:
        """The whole edit as one file change (what the user reviews): on Proxmox VE the
        cluster's copy in pmxcfs, else corosync.conf."""
        path, mode = cluster.conf_file
        return Change(path, self.before_text, self.final.text(), mode)


# -- the edit --------------------------------------------------------------------------------------

def plan_change(conf: CorosyncConf, text: str, request: LinkRequest) -> ChangePlan:
    """The phases that take CONF to the requested links (none when it is there already).
    Bad input raises ValidationFailed (every problem at once) before anything happens."""
    number, wanted, net = request.number, dict(request.addresses), request.network
    current = {n.name: n.addresses.get(number) for n in conf.nodes}
    if request.action == "add":
        if number in conf.link_numbers:
            if wanted == current and request.priority in (None, conf.priorities.get(number)):
                return ChangePlan(request, conf, text, ())
            raise ValidationFailed([fail(
                "link-exists", f"link {number} exists already", "number",
                payload={"number": number, "addresses": current},
                remedy=f"move it with `pvestrap link move --number {number}`, or pick a free "
                       "link number")], source="link add")
        added = conf.add_link(number, wanted, request.priority or 0, net).bump_version()
        return ChangePlan(request, conf, text, (
            Phase(f"add-link{number}", f"add link{number} on every member", added),))
    if request.action != "move":
        raise UserError(f"unknown link action {request.action!r}")
    moved = conf.set_link_addresses(number, wanted, net)  # checks the addresses and names
    if all(current.get(n) == a for n, a in wanted.items()):
        return ChangePlan(request, conf, text, ())
    dropped = conf.remove_link(number).bump_version()
    return ChangePlan(request, conf, text, (
        Phase(f"drop-link{number}", f"drop link{number} (corosync cannot change a link's "
              "address in place)", dropped),
        Phase(f"add-link{number}", f"add link{number} again at the new addresses",
              moved.bump_version().bump_version())))


# -- preflight -------------------------------------------------------------------------------------

def preflight(system: System, cluster: Cluster, plan: ChangePlan) -> list[Finding]:
    """Everything that must hold before the first write, as findings (FAIL stops the change)."""
    from pvestrap.verify import link_findings, quorum_findings

    number = plan.request.number
    out = [f for f in quorum_findings(cluster.observed) if f.severity is not Severity.WARN]
    present = {m.nodeid for m in (cluster.observed.quorum.nodes_only
                                  if cluster.observed.quorum else ())}
    for m in cluster.members:
        if m.nodeid not in present:
            out.append(fail("member-missing", f"{m.name} is not a member now; it would miss "
                            "the change", m.name, payload={"nodeid": m.nodeid},
                            remedy="bring it back into the cluster first"))
    for f in link_findings(cluster.observed):
        if f.code == "knet-link-down" and f.payload.get("link") == number:
            f = warn(f.code, f.message + " (this is the link being changed)", f.subject,
                     payload=f.payload)
        out.append(f)
    results = each(cluster.members, lambda m: _member_checks(system, cluster, plan, m))
    return out + shared_findings(system, cluster) + \
        [f for m in cluster.members for f in results[m.name]]


def shared_findings(system: System, cluster: Cluster) -> list[Finding]:
    """Proxmox VE: pmxcfs's copy must be this node's corosync.conf; a different one is a change
    pmxcfs has not handed out (or will not: a lower config_version, src/pmxcfs/dcdb.c)."""
    if not cluster.shared or system.read_text(cluster.shared) == cluster.text:
        return []
    return [fail("conf-differs", f"{cluster.shared} differs from this node's {COROSYNC_CONF}",
                 cluster.local.name, payload={"node": cluster.local.name,
                                              "path": cluster.shared},
                 remedy="let pmxcfs hand the cluster's copy to every member first (`journalctl "
                        "-u pve-cluster` says why it did not), or make the two files the same")]


def ping_command(count: int, source: str, target: str) -> str:
    """`ping` from SOURCE to TARGET as a shell word list: every value quoted (an address may
    carry a scope id, which is user input)."""
    return shlex.join(["ping", "-n", "-q", "-c", str(int(count)), "-i", "0.2", "-W", "1",
                       "-I", source, target])


def _member_checks(system: System, cluster: Cluster, plan: ChangePlan,
                   member: MemberHost) -> list[Finding]:
    from pvestrap.verify import address_findings, ping_findings

    access = cluster.access(system, member)
    number, final = plan.request.number, plan.final
    mine = next(n for n in final.nodes if n.name == member.name).addresses[number]
    peers = [(n.name, n.addresses[number]) for n in final.nodes
             if n.name is not None and n.name != member.name]
    script = "; ".join(
        [show_script([COROSYNC_CONF]), f"echo {SPLIT}", "ip -j addr show"] +
        [f"echo {SPLIT}; {ping_command(cluster.timeouts.pings, mine, addr)} 2>&1 || true"
         for _, addr in peers])
    try:
        parts = access.run(script, "check the new network", mutates=False).stdout.split(SPLIT)
    except PvestrapError as exc:
        return [fail("member-unreachable", f"{member.name}: {exc.message}", member.name,
                     payload={"address": member.address}, remedy=exc.remedy)]
    theirs = parse_show(parts[0]).get(COROSYNC_CONF)
    out = []
    if theirs is None or theirs.data != cluster.text.encode():
        out.append(fail("conf-differs", f"{member.name}'s {COROSYNC_CONF} differs from this "
                        "node's", member.name, payload={"node": member.name},
                        remedy="make every member's corosync.conf the same first"))
    out += address_findings(member.name, number, mine, parts[1] if len(parts) > 1 else "")
    for (peer, addr), text in zip(peers, parts[2:] + [""] * (len(peers) - len(parts[2:]))):
        out += ping_findings(member.name, peer, number, mine, addr, text)
    return out


# -- the phases ------------------------------------------------------------------------------------

def steps(cluster: Cluster, plan: ChangePlan, ops: MemberOps) -> list[PhaseStep]:
    befores = [plan.before_text] + [p.conf.text() for p in plan.phases[:-1]]
    return [PhaseStep(phase, cluster, before, ops)
            for phase, before in zip(plan.phases, befores)]


def run_change(system: System, cluster: Cluster, plan: ChangePlan, on_progress=None):
    """Apply PLAN (see run_locked); StepFailed (after the rollback) when a phase fails."""
    return run_locked(system, cluster, lambda ops: steps(cluster, plan, ops), on_progress)

