"""Before a node leaves a cluster: is it really gone, do the votes still add up, what does it leave.

The admin guide ("Remove a Cluster Node", "Separate A Node Without Reinstalling") asks for the
node to be powered off before `pvecm delnode`, for the remaining nodes to be quorate (else
`pvecm expected 1` as a workaround), for no guests left on it, and for no shared storage kept by a
separated node. These functions turn what the tools said into findings, each with its check id
(what `--ignore` names); they read nothing themselves, so the commands and tests feed them.

Vote math follows votequorum (corosync's votequorum(5)): expected votes are the sum of the
nodelist's quorum_votes plus the quorum device's votes (the quorum.device section, read and
counted by pvestrap.qdevice); quorum is expected // 2 + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import LinksStatus, QuorumStatus
from pvestrap.corosync.tree import as_int
from pvestrap.findings import Finding, fail, passed, warn
from pvestrap.qdevice import configured, qdevice_votes

CHECK_MEMBER = "remove-member"      # NAME is in this cluster's corosync.conf (and not us)
CHECK_OFFLINE = "remove-offline"    # NAME is not online: membership, knet, ICMP
CHECK_VOTES = "remove-votes"        # quorate now, and after the removal; QDevice parity
CHECK_MEMBERS = "remove-members"    # every remaining node a member, reachable, same config
CHECK_GUESTS = "remove-guests"      # Proxmox: no guests of NAME, no HA resource pinned to it
CHECKS = {
    CHECK_MEMBER: "the node is in this cluster's corosync.conf and is not this node",
    CHECK_OFFLINE: "the node is powered off: not a member, no knet link up, no ICMP answer",
    CHECK_VOTES: "the remaining nodes are quorate now and after the removal",
    CHECK_MEMBERS: "every remaining node is a member, reachable over SSH, with the same config",
    CHECK_GUESTS: "(Proxmox) no guest configs of the node, no HA resource pinned to it",
}


def member_findings(conf: CorosyncConf, name: str, local: str | None) -> list[Finding]:
    names = [n.name for n in conf.nodes]
    if name == local:
        return [fail("remove-self", f"{name} is this node: a node cannot remove itself",
                     name, check=CHECK_MEMBER,
                     remedy="run `pvestrap node remove` on another member, or `pvestrap node "
                            "separate` on this one")]
    if name not in names:
        return [fail("node-not-in-cluster", f"{name} is not in this cluster's corosync.conf "
                     f"(nodes: {', '.join(str(n) for n in names)})", name, check=CHECK_MEMBER,
                     payload={"node": name, "nodes": names},
                     remedy="check the name (`pvestrap status` lists the members)")]
    return [passed("node-in-cluster", f"{name} is in corosync.conf", name, CHECK_MEMBER)]


def offline_findings(name: str, nodeid: int, quorum: QuorumStatus | None,
                     links: LinksStatus | None, answers: Sequence[str]) -> list[Finding]:
    """NAME is gone when corosync does not count it, knet reaches it on no link and none of
    its addresses answers ICMP (ANSWERS: the addresses that did)."""
    member = quorum is not None and nodeid in {m.nodeid for m in quorum.nodes_only}
    connected = sorted({link.link for link in (links.links if links else ())
                        for p in link.peers if p.nodeid == nodeid and p.connected})
    still = ([f"it is in corosync's membership (nodeid {nodeid})"] if member else []) + \
        [f"knet link{n} to it is connected" for n in connected] + \
        [f"{a} answers ICMP" for a in answers]
    payload = {"node": name, "nodeid": nodeid, "member": member, "links_connected": connected,
               "answering": list(answers)}
    if still:
        return [fail("node-still-online", f"{name} is still up: " + "; ".join(still), name,
                     check=CHECK_OFFLINE, payload=payload,
                     remedy=f"power {name} off first and make sure it never comes back as it "
                            "is (the admin guide: a removed node that powers on again breaks "
                            "the cluster); or separate it: `pvestrap node separate` on it")]
    return [passed("node-offline", f"{name} is not a member, no knet link reaches it and its "
                   "addresses do not answer", name, CHECK_OFFLINE, payload=payload)]


# -- votes -----------------------------------------------------------------------------------------

def device_votes(device: Mapping[str, str] | None, nodes: int) -> int:
    """The QDevice's votes for NODES nodes: its `votes` key, else corosync-qdevice's default
    for its algorithm (pvestrap.qdevice, the one owner of that rule)."""
    if device is None:
        return 0
    votes = as_int(device.get("votes"))
    if isinstance(votes, int):
        return votes
    return qdevice_votes(device.get("algorithm") or "ffsplit", nodes)


def node_votes(conf: CorosyncConf) -> dict[str, int]:
    return {str(n.name): n.votes if isinstance(n.votes, int) else 1 for n in conf.nodes}


@dataclass(frozen=True)
class VotePlan:
    """Votes before and after NAME leaves, and what is present now (without NAME)."""

    expected_now: int | None
    expected_after: int
    quorum_after: int
    present: int          # votes of the members other than NAME, QDevice included
    qdevice: Mapping[str, str] | None
    nodes_after: int

    @property
    def quorate_after(self) -> bool:
        return self.present >= self.quorum_after

    def as_dict(self) -> dict:
        return {"expected_now": self.expected_now, "expected_after": self.expected_after,
                "quorum_after": self.quorum_after, "present": self.present,
                "nodes_after": self.nodes_after, "qdevice": self.qdevice is not None}


def vote_plan(conf: CorosyncConf, name: str, quorum: QuorumStatus | None) -> VotePlan:
    votes = node_votes(conf)
    nodeid = {str(n.name): n.nodeid for n in conf.nodes}.get(name)
    after = {n: v for n, v in votes.items() if n != name}
    device = configured(conf)
    expected = sum(after.values()) + device_votes(device, len(after))
    members = quorum.members if quorum else ()
    present = sum(m.votes or 0 for m in members if m.nodeid != nodeid)
    return VotePlan(quorum.expected_votes if quorum else None, expected, expected // 2 + 1,
                    present, device, len(after))


def expected_votes_problem(votes: VotePlan, wanted: int) -> str | None:
    """Why --expected-votes WANTED is out of bounds (None: fine): never below the votes that
    are present (corosync refuses that), never so high that they are no majority of it."""
    low, high = max(votes.present, 1), 2 * votes.present - 1
    if votes.present < 1:
        return "no votes are present here at all"
    if not low <= wanted <= high:
        span = f"{low}" if low == high else f"{low}..{high}"
        return (f"--expected-votes {wanted} is outside {span}: the {votes.present} vote(s) "
                f"online here must be a majority of it, and it cannot be below them")
    return None


def vote_findings(votes: VotePlan, quorate_now: bool, expected_override: int | None,
                  name: str) -> list[Finding]:
    out: list[Finding] = []
    payload = {**votes.as_dict(), "expected_override": expected_override}
    if not quorate_now and expected_override is None:
        out.append(fail("cluster-not-quorate", f"the remaining nodes are not quorate "
                        f"({votes.present} of {votes.expected_now} expected votes): neither "
                        "pvecm nor pmxcfs take a change now", "cluster", check=CHECK_VOTES,
                        payload=payload,
                        remedy="bring enough nodes back; or, if the missing nodes are gone "
                               "for good, pass --expected-votes N (the admin guide's `pvecm "
                               f"expected 1` workaround; N = {max(votes.present, 1)} here)"))
    elif not quorate_now:
        out.append(warn("expected-votes-lowered", f"expected votes will be lowered to "
                        f"{expected_override} for the removal only (the remaining nodes are "
                        "not quorate)", "cluster", check=CHECK_VOTES, payload=payload))
    if not votes.quorate_after:
        out.append(fail("removal-loses-quorum", f"after removing {name}: {votes.present} "
                        f"vote(s) present, {votes.quorum_after} needed of "
                        f"{votes.expected_after}", "cluster", check=CHECK_VOTES,
                        payload=payload, remedy="bring the missing members back first"))
    if votes.qdevice is not None and votes.nodes_after % 2 == 1:
        out.append(warn("qdevice-odd-nodes", f"a QDevice with {votes.nodes_after} nodes left: "
                        "the admin guide discourages a QDevice in a cluster with an odd "
                        "number of nodes (it can become a single point of failure)",
                        "cluster", check=CHECK_VOTES, payload=payload,
                        remedy="remove the QDevice (`pvecm qdevice remove`) or add a node"
                        + ("; algorithm ffsplit works only with an even number of nodes"
                           if votes.qdevice.get("algorithm") == "ffsplit" else "")))
    if not any(f.severity.value == "fail" for f in out):
        out.append(passed("removal-votes", f"after the removal: expected votes "
                          f"{votes.expected_after}, quorum {votes.quorum_after}, "
                          f"{votes.present} present", "cluster", CHECK_VOTES,
                          payload=payload))
    return out


# -- what a Proxmox node leaves behind -------------------------------------------------------------

def guest_findings(name: str, guests: Mapping[str, Sequence[str]],
                   ha_rules: Iterable[tuple[str, str, Sequence[str]]]) -> list[Finding]:
    """GUESTS: kind (qemu-server/lxc) -> VMIDs with a config under /etc/pve/nodes/NAME;
    HA_RULES: (file, rule or group id, its nodes) that name NAME."""
    out = []
    listed = {kind: sorted(ids, key=lambda v: (len(v), v)) for kind, ids in guests.items() if ids}
    if listed:
        out.append(fail("node-has-guests", f"{name} still owns guests: " + "; ".join(
            f"{kind} {', '.join(ids)}" for kind, ids in listed.items()), name,
            check=CHECK_GUESTS, payload={"guests": listed},
            remedy=f"migrate them to another node (or back them up and remove them) first: "
                   f"their configs live under /etc/pve/nodes/{name}"))
    for where, rule, nodes in ha_rules:
        only = list(nodes) == [name]
        out.append((fail if only else warn)(
            "ha-pinned-to-node" if only else "ha-names-node",
            f"HA {rule} in {where} " + ("allows only " if only else "lists ") + name, name,
            check=CHECK_GUESTS, payload={"file": where, "rule": rule, "nodes": list(nodes)},
            remedy=f"edit {rule} so that it names other nodes (Datacenter -> HA)"))
    if not out:
        out.append(passed("node-no-guests", f"no guest configs of {name} and no HA rule "
                          "naming it", name, CHECK_GUESTS))
    return out
