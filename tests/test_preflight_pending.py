"""Preflight knows "planned, not yet configured" (issue 11, item 4): a link address the plan puts
on a free NIC is reported as planned, only the probes that need it are left out (and said so,
as SKIPs), every other probe runs; once the address is on the machine, the same call probes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pvestrap import mesh, preflight
from pvestrap.checks import prober as P
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, InterfaceStanza, Link, Node
from pvestrap.report.jsonout import report_dict

UP = ("UP", "LOWER_UP")
# link0 on a new network (10.77.0.0/24, nowhere yet): every node gets it on its spare eth9
PLAN = ClusterPlan(
    cluster_name="prod",
    nodes=tuple(Node(f"pve{i}", i, {0: f"10.77.0.{i}", 1: f"10.98.0.{i}"},
                     interfaces=(InterfaceStanza("eth9", f"10.77.0.{i}/24"),))
                for i in (1, 2, 3)),
    links=(Link(0, "10.77.0.0/24", 20), Link(1, "10.98.0.0/24", 10)), create_node="pve1",
    backend="corosync")


def machine(eth9: tuple[IfAddress, ...] = ()) -> Machine:
    """pve1: management on eth0, link1 on eth1, the spare eth9 (down, no address) unless given."""
    return Machine("pve1", (
        Interface("eth0", "veth", flags=UP, addresses=(IfAddress("10.99.0.1", 24),)),
        Interface("eth1", "veth", flags=UP, addresses=(IfAddress("10.98.0.1", 24),)),
        Interface("eth9", "veth", flags=UP if eth9 else ("BROADCAST",), addresses=eth9)),
        default_route=("eth0",))


def port(peer: str, link: int, state: str = "open") -> P.PortResult:
    rtts = (0.2, 0.3) if state == "open" else ()
    return P.PortResult(peer, link, 5405 + link, f"10.{77 if link == 0 else 98}.0.{peer[-1]}",
                        None, False, state, 2, len(rtts), rtts, 0.0, min(rtts) if rtts else None)


@dataclass
class Asked:
    """A probe source at the seam: measures what it is asked for (every peer on every link
    that is not pending), from fixed results, and notes what was pending."""

    results: tuple[P.PortResult, ...]
    pending: list = field(default_factory=list)

    def measure(self, plan, node, pending):
        self.pending.append(pending)
        return P.Measurements(node, 0.0, 1.0, udp=tuple(
            r for r in self.results if r.link not in pending))


def every_path(state: str = "open") -> tuple[P.PortResult, ...]:
    return tuple(port(p, link, state) for p in ("pve2", "pve3") for link in (0, 1))


def codes(report, subject: str) -> list[tuple[str, Severity]]:
    return sorted((f.code, f.severity) for f in report.findings if f.subject == subject)


def test_a_planned_link_is_left_out_of_the_probes_and_reported_as_pending_not_failed():
    source = Asked(every_path())
    report = preflight.run(PLAN, "pve1", probes=source, root="/nonexistent", machine=machine())
    assert source.pending == [frozenset({0})]
    assert codes(report, "pve1/link0") == [("latency-pending", Severity.SKIP),
                                           ("link-address-planned", Severity.INFO),
                                           ("link-port-pending", Severity.SKIP)]
    pending = next(f for f in report.findings if f.code == "link-port-pending")
    assert pending.payload == {"link": 0, "address": "10.77.0.1", "nic": "eth9", "port": 5405,
                               "peers": ["pve2", "pve3"]}
    assert "apply" in pending.message and "eth9" in pending.message
    # the other link is probed as ever, and nothing about link0 fails
    assert {f.subject for f in report.findings if f.code == "link-port-open"} == {
        "pve1->pve2/link1:5406", "pve1->pve3/link1:5406"}
    network = {c.id for c in preflight.network_checks()} | {"link-address"}
    assert not [f for f in report.findings
                if f.severity is Severity.FAIL and (f.check in network or "link0" in f.subject)]
    assert report.meta["pending_links"] == [0]


def test_once_the_network_phase_configured_the_address_the_same_call_probes_the_link():
    source = Asked(every_path())
    configured = machine((IfAddress("10.77.0.1", 24),))
    report = preflight.run(PLAN, "pve1", probes=source, root="/nonexistent", machine=configured)
    assert source.pending == [frozenset()]
    assert codes(report, "pve1/link0") == [("link-address-local", Severity.PASS)]
    assert {f.subject for f in report.findings if f.code == "link-port-open"} == {
        f"pve1->{p}/link{n}:{5405 + n}" for p in ("pve2", "pve3") for n in (0, 1)}
    assert "pending_links" not in report.meta


def test_the_request_leaves_out_only_the_pending_links_paths():
    request = preflight.Probes().request(PLAN, "pve1", frozenset({0}))
    assert {(t.peer, t.link) for t in request.targets if not t.legacy} == {
        ("pve2", 1), ("pve3", 1)}
    # duplicate address detection of the planned address itself still runs (it needs no
    # address, only the NIC): it is what tells whether the new address is free
    assert "10.77.0.1" in {d.address for d in request.addresses}


def test_an_explicit_pending_set_wins_over_the_machine():
    source = Asked(every_path())
    report = preflight.run(PLAN, "pve1", probes=source, pending=frozenset({1}),
                           root="/nonexistent", machine=machine((IfAddress("10.77.0.1", 24),)))
    assert source.pending == [frozenset({1})]
    skipped = next(f for f in report.findings if f.code == "link-port-pending")
    assert skipped.subject == "pve1/link1" and skipped.payload["nic"] is None


def test_a_stanza_for_an_address_already_configured_is_not_pending():
    plan = replace(PLAN, nodes=(replace(PLAN.nodes[0], interfaces=(
        InterfaceStanza("eth1", "10.98.0.1/24"),)), *PLAN.nodes[1:]))
    plan = replace(plan, nodes=(replace(plan.nodes[0], addresses={0: "10.99.0.1",
                                                                  1: "10.98.0.1"}),
                                *plan.nodes[1:]))
    assert preflight.pending_links(preflight.planned_machine(machine(), plan, "pve1"), plan,
                                   "pve1") == {}


def test_the_mesh_skips_the_peers_probes_towards_a_nodes_pending_link():
    """pve2 has link0 configured already (applied earlier), pve1 not: pve2's probes to pve1's
    planned address find nothing, which the merged report shows as pending, not failed."""
    pve1 = preflight.run(PLAN, "pve1", probes=Asked(every_path()), root="/nonexistent",
                         machine=machine())
    towards = (port("pve1", 0, "filtered"), port("pve3", 0), port("pve1", 1), port("pve3", 1))
    pve2_machine = Machine("pve2", tuple(
        replace(i, addresses=tuple(replace(a, address=a.address[:-1] + "2")
                                   for a in i.addresses))
        for i in machine((IfAddress("10.77.0.1", 24),)).interfaces))
    pve2 = preflight.run(PLAN, "pve2", probes=Asked(towards), root="/nonexistent",
                         machine=pve2_machine)
    assert ("link-port-filtered", Severity.FAIL) in codes(pve2, "pve2->pve1/link0:5405")
    merged = mesh.merge(PLAN, [mesh.NodeResult("pve1", report_dict(pve1)),
                               mesh.NodeResult("pve2", report_dict(pve2))])
    assert codes(merged, "pve2->pve1/link0:5405") == [("link-port-pending", Severity.SKIP)]
    assert codes(merged, "pve2->pve3/link0:5405") == [("link-port-open", Severity.PASS)]
    assert not [f for f in merged.findings if f.severity is Severity.FAIL
                and "pve1" in f.subject and "link0" in f.subject]
