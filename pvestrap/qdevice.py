"""The QDevice (corosync-qdevice + an external corosync-qnetd): its plan, its vote math and its
corosync.conf section.

What pvecm does and this module follows (pve-cluster, src/PVE/CLI/pvecm.pm, setup_qdevice):
model `net` with `tls: on`; algorithm `ffsplit` with `votes: 1` for an even node count; an odd
count is refused unless forced, and then gets `lms` (the QDevice then carries N-1 votes, which
corosync-qdevice computes itself, so no `votes` key). The admin guide ("Corosync External Vote
Support") explains why an odd count is discouraged: with N-1 votes the QDevice is almost a
single point of failure. corosync's votequorum refuses `two_node` together with a device, so
the section replaces a `two_node: 1` (a pvecm-written file has none).

Pure functions only: the steps that install it live in pvestrap.apply.qdevice.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from pvestrap.corosync.tree import Item, Section
from pvestrap.errors import UserError
from pvestrap.findings import Finding, fail

if TYPE_CHECKING:  # the facade imports the plan, which holds a QDevice
    from pvestrap.corosync.facade import CorosyncConf

QNETD_PORT = 5403
ALGORITHMS = ("ffsplit", "lms")
TIE_BREAKERS = ("lowest", "highest")
QDEVICE_DIR = "/etc/corosync/qdevice"
NODE_DB = QDEVICE_DIR + "/net/nssdb"
QNETD_DB = "/etc/corosync/qnetd/nssdb"
CA_CERT = QNETD_DB + "/qnetd-cacert.crt"
CRQ = NODE_DB + "/qdevice-net-node.crq"
P12 = NODE_DB + "/qdevice-net-node.p12"
ODD_REFUSAL = "Clusters with an odd node count are not officially supported!"  # pvecm's words


def cluster_cert(cluster_name: str) -> str:
    """Where `corosync-qnetd-certutil -s -n NAME` leaves the signed cluster certificate."""
    return f"{QNETD_DB}/cluster-{cluster_name}.crt"


@dataclass(frozen=True)
class QDevice:
    """The `[qdevice]` answer table: the qnetd host's address (an IP, as pvecm wants),
    the algorithm (None: what pvecm picks for the node count), the tie-breaker and the
    network the nodes reach the host from (pvecm --network)."""

    host: str
    algorithm: str | None = None
    tie_breaker: str = "lowest"
    network: str | None = None

    def resolved(self, nodes: int) -> str:
        return self.algorithm or default_algorithm(nodes)


def default_algorithm(nodes: int) -> str:
    """pvecm: ffsplit for an even node count, lms (only with --force) for an odd one."""
    return "lms" if nodes % 2 else "ffsplit"


def problems(q: QDevice, member_addresses: Sequence[str] = (), nodeids: Sequence[int] = (),
             where: str = "qdevice") -> list[Finding]:
    """Everything wrong with Q, every problem at once (field paths under WHERE)."""
    out = []
    try:
        ipaddress.ip_address(q.host)
    except ValueError:
        out.append(fail("qdevice-host-invalid", f"{where}.host {q.host!r} is not an IP address",
                        f"{where}.host", remedy="give the qnetd host's IP address (pvecm "
                        "qdevice setup takes an address, format 'ip')"))
    if q.host in member_addresses:
        out.append(fail("qdevice-host-member", f"{where}.host {q.host} is a cluster node's "
                        "address; the qnetd host must be outside the cluster", f"{where}.host",
                        remedy="run corosync-qnetd on a host that is not a cluster node"))
    if q.algorithm is not None and q.algorithm not in ALGORITHMS:
        out.append(fail("qdevice-algorithm-invalid", f"{where}.algorithm {q.algorithm!r} is "
                        f"not one of {', '.join(ALGORITHMS)}", f"{where}.algorithm"))
    if not _tie_breaker_ok(q.tie_breaker, nodeids):
        out.append(fail("qdevice-tie-breaker-invalid", f"{where}.tie_breaker "
                        f"{q.tie_breaker!r} is not lowest, highest or a node id of the cluster",
                        f"{where}.tie_breaker"))
    if q.network is not None:
        try:
            ipaddress.ip_network(q.network, strict=False)
        except ValueError:
            out.append(fail("qdevice-network-invalid", f"{where}.network {q.network!r} is not "
                            "a CIDR network", f"{where}.network", remedy="e.g. 10.10.10.0/24"))
    return out


def plan_problems(plan: Any) -> list[Finding]:
    """A ClusterPlan's [qdevice] checked against its nodes (none: nothing to check)."""
    if plan.qdevice is None:
        return []
    return problems(plan.qdevice, [a for n in plan.nodes for a in n.addresses.values()],
                    [n.nodeid for n in plan.nodes])


def _tie_breaker_ok(value: str, nodeids: Sequence[int]) -> bool:
    if value in TIE_BREAKERS:
        return True
    return bool(re.fullmatch(r"[1-9][0-9]*", str(value))) and (
        not nodeids or int(value) in nodeids)


def check(q: QDevice, member_addresses: Sequence[str] = (), nodeids: Sequence[int] = ()) -> None:
    found = problems(q, member_addresses, nodeids)
    if found:
        from pvestrap.errors import ValidationFailed

        raise ValidationFailed(found, source="qdevice")


# -- vote math -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FailureOutcome:
    """Votes left after one failure (a node, the QDevice)."""

    lost: str        # what failed
    votes: int       # votes left
    quorate: bool


@dataclass(frozen=True)
class VoteMath:
    nodes: int
    algorithm: str
    node_votes: int
    qdevice_votes: int
    expected: int
    quorum: int
    outcomes: tuple[FailureOutcome, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "algorithm": self.algorithm,
                "node_votes": self.node_votes, "qdevice_votes": self.qdevice_votes,
                "expected_votes": self.expected, "quorum": self.quorum,
                "outcomes": [{"lost": o.lost, "votes": o.votes, "quorate": o.quorate}
                             for o in self.outcomes]}


def qdevice_votes(algorithm: str, nodes: int) -> int:
    """ffsplit gives one vote; lms gives N-1 (corosync-qdevice(8), votequorum)."""
    return max(1, nodes - 1) if algorithm == "lms" else 1


def vote_math(votes: Sequence[int], algorithm: str) -> VoteMath:
    """Expected votes, quorum (votequorum: half plus one) and what survives each loss: one
    node (the QDevice votes for the rest), the QDevice, both, and all nodes but one."""
    n, total = len(votes), sum(votes)
    qv = qdevice_votes(algorithm, n)
    expected = total + qv
    quorum = expected // 2 + 1
    biggest = max(votes) if votes else 0
    smallest = min(votes) if votes else 0
    cases = [("nothing", total + qv), ("one node", total - biggest + qv),
             ("the qdevice", total), ("one node and the qdevice", total - biggest)]
    if n > 2:
        cases.append((f"all nodes but one ({n - 1})", smallest + qv))
    return VoteMath(n, algorithm, total, qv, expected, quorum,
                    tuple(FailureOutcome(what, v, v >= quorum) for what, v in cases))


# -- corosync.conf ---------------------------------------------------------------------------------

def device_section(q: QDevice, nodes: int) -> Section:
    """`device { model: net  votes: 1  net { tls: on  host: H  algorithm: A } }` as pvecm
    writes it (votes only for ffsplit), plus a tie_breaker other than the default."""
    algorithm = q.resolved(nodes)
    net: list[Item] = [Item("algorithm", algorithm), Item("host", q.host), Item("tls", "on")]
    if q.tie_breaker != "lowest":
        net.append(Item("tie_breaker", str(q.tie_breaker)))
    items: list[Item | Section] = [Item("model", "net"), Section("net", tuple(net))]
    if algorithm == "ffsplit":
        items.append(Item("votes", "1"))
    return Section("device", tuple(items))


def _quorum(conf: "CorosyncConf") -> Section:
    found = conf.tree.section("quorum")
    if found is None:
        raise UserError("corosync.conf has no quorum section", code="conf-quorum-missing",
                        remedy="add 'quorum { provider: corosync_votequorum }'")
    return found


def configured(conf: "CorosyncConf") -> dict[str, str] | None:
    """The configured device (model, votes and its net keys), or None."""
    device = _quorum(conf).section("device") if conf.tree.section("quorum") else None
    if device is None:
        return None
    out = {i.key: i.value for i in device.items()}
    net = device.section("net")
    out.update({i.key: i.value for i in (net.items() if net else ())})
    return out


def with_device(conf: "CorosyncConf", q: QDevice) -> "CorosyncConf":
    """CONF with the device section (two_node dropped) and config_version + 1."""
    if configured(conf) is not None:
        raise UserError("a QDevice is configured already", code="qdevice-configured",
                        remedy="remove it first (`pvestrap qdevice remove`)")
    quorum = _quorum(conf)
    kept = tuple(c for c in quorum.children if not (isinstance(c, Item) and c.key == "two_node"))
    new = quorum.with_children((*kept, device_section(q, len(conf.nodes))))
    return type(conf)(conf.tree.replace(quorum, new)).bump_version()


def without_device(conf: "CorosyncConf") -> "CorosyncConf":
    """CONF without the device section, config_version + 1."""
    quorum = _quorum(conf)
    device = quorum.section("device")
    if device is None:
        raise UserError("no QDevice is configured", code="qdevice-not-configured",
                        remedy="nothing to remove")
    new = quorum.with_children(c for c in quorum.children if c is not device)
    return type(conf)(conf.tree.replace(quorum, new)).bump_version()
