"""pvestrap.preflight.run: the one entry every front-end calls, and its probe source."""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

from pvestrap import mesh, preflight
from pvestrap.checks import prober as P
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.errors import UserError
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.report.jsonout import report_dict

PLAN = ClusterPlan(
    cluster_name="prod",
    nodes=(Node("pve1", 1, {0: "10.99.0.1", 1: "10.98.0.1"}),
           Node("pve2", 2, {0: "10.99.0.2", 1: "10.98.0.2"}),
           Node("pve3", 3, {0: "10.99.0.3", 1: "10.98.0.3"})),
    links=(Link(0, "10.99.0.0/24", 20), Link(1, "10.98.0.0/24", 10)), create_node="pve1",
    backend="corosync")
UP = ("UP", "LOWER_UP")
MACHINE = Machine("pve1", (Interface("eth0", "physical", flags=UP,
                                     addresses=(IfAddress("10.99.0.1", 24),)),
                           Interface("eth1", "physical", flags=UP,
                                     addresses=(IfAddress("10.98.0.1", 24),))))


def port(peer: str, link: int, rtts=(0.3, 0.1, 0.2), state="open") -> P.PortResult:
    return P.PortResult(peer, link, 5405 + link, f"10.9{9 - link}.0.{peer[-1]}", None, False,
                        state, 4, len(rtts), tuple(rtts), 0.0, min(rtts) if rtts else None)


@dataclass
class Recorded:
    """A probe source at the seam: hands back fixed measurements and notes when it was asked."""

    measured: P.Measurements | None
    events: list = field(default_factory=list)

    def measure(self, plan, node, pending):
        self.events.append(("measure", node, pending))
        return self.measured


def test_local_checks_run_before_the_probes_and_the_network_checks_after():
    source = Recorded(P.Measurements("pve1", 0.0, 1.0, udp=(port("pve2", 0),)))
    report = preflight.run(PLAN, "pve1", probes=source, pending=frozenset({1}), root="/nonexistent",
                           machine=MACHINE, on_progress=lambda c: source.events.append(c.id))
    at = source.events.index(("measure", "pve1", frozenset({1})))
    assert source.events[:at] == [c.id for c in preflight.local_checks()]
    assert source.events[at + 1:] == [c.id for c in preflight.network_checks()]
    assert ("link-port-open", "pve1->pve2/link0:5405") in {(f.code, f.subject)
                                                           for f in report.findings}


def test_the_heatmap_is_this_nodes_row_from_its_own_measurements():
    measured = P.Measurements("pve2", 0.0, 1.0, udp=(
        port("pve1", 0), port("pve3", 0, state="filtered", rtts=()), port("pve1", 1, (0.5,))))
    report = preflight.run(PLAN, "pve2", probes=Recorded(measured), root="/nonexistent",
                           machine=MACHINE)
    link0, link1 = report.matrices["link0"], report.matrices["link1"]
    assert link0["nodes"] == ["pve1", "pve2", "pve3"] and link0["port"] == 5405
    assert link0["rtt_ms"] == [[None] * 3, [0.2, None, None], [None] * 3]
    assert link0["state"][1] == ["open", None, "filtered"]
    assert link0["loss_pct"][1] == [25.0, None, 100.0]
    assert link1["rtt_ms"][1] == [0.5, None, None]


def test_without_a_probe_source_only_the_local_checks_run():
    report = preflight.run(PLAN, "pve1", root="/nonexistent", machine=MACHINE)
    network = {c.id for c in preflight.network_checks()}
    assert report.findings and not {f.check for f in report.findings} & network
    assert report.matrices == {}


def test_nothing_to_probe_leaves_the_network_checks_skipping_and_no_heatmap():
    report = preflight.run(None, "pve1", probes=Recorded(None), root="/nonexistent",
                           machine=MACHINE)
    network = {c.id for c in preflight.network_checks()}
    skipped = {f.check for f in report.findings if f.check in network}
    assert skipped == network
    assert {f.severity.value for f in report.findings if f.check in network} == {"skip"}
    assert report.matrices == {}


def test_a_probe_source_probes_only_the_named_peers_and_no_pending_link():
    request = preflight.Probes(only=frozenset({"pve1"}), duration_s=0.5).request(
        PLAN, "pve2", frozenset({1}))
    assert {(t.peer, t.link) for t in request.targets} == {("pve1", 0)}
    assert request.settings.duration_s == 0.5
    everyone = preflight.Probes().request(PLAN, "pve2")
    assert {t.peer for t in everyone.targets} == {"pve1", "pve3"}
    assert everyone.settings.duration_s == PLAN.preflight.thresholds.duration_s


def test_peers_by_address_without_a_plan_and_nothing_without_either():
    request = preflight.Probes(peers={"b": {0: "10.0.0.2"}}).request(None, "a")
    assert [(t.peer, t.address, t.port) for t in request.targets if not t.legacy] == [
        ("b", "10.0.0.2", 5405)]
    assert preflight.Probes().request(None, "a") is None
    assert preflight.Probes().measure(None, "a", frozenset()) is None


def test_probing_peers_without_their_token_is_refused_before_anything_is_sent():
    with pytest.raises(UserError) as err:
        preflight.Probes().measure(PLAN, "pve1", frozenset())
    assert err.value.code == "probe-token-missing"


def test_the_mesh_lays_every_nodes_own_row_into_one_grid():
    rows = []
    for me, peers in (("pve1", ("pve2", "pve3")), ("pve3", ("pve1", "pve2"))):
        measured = P.Measurements(me, 0.0, 1.0, udp=tuple(port(p, 0) for p in peers))
        rows.append(mesh.NodeResult(me, report_dict(preflight.run(
            PLAN, me, probes=Recorded(measured), root="/nonexistent", machine=MACHINE))))
    rows.append(mesh.NodeResult("pve2", None, "did not start its responder"))
    merged = mesh.merge(PLAN, rows)
    assert merged.matrices["link0"]["rtt_ms"] == [[None, 0.2, 0.2], [None] * 3,
                                                  [0.2, 0.2, None]]
    assert merged.matrices["link1"]["state"] == [[None] * 3] * 3
    assert "node-unreachable" in {f.code for f in merged.findings}
    # what an agent sends: only its own row (N cells per grid, not N x N); the same merge
    trimmed = [mesh.NodeResult(r.node, {**r.report, "matrices": preflight.own_rows(
        r.report["matrices"], r.node)} if r.report else None, r.error) for r in rows]
    assert trimmed[0].report["matrices"]["link0"]["rtt_ms"] == [[None, 0.2, 0.2], [], []]
    assert mesh.merge(PLAN, trimmed).matrices == merged.matrices


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_the_mesh_ssh_options_are_ones_this_ssh_accepts_and_keep_the_key_exchange():
    """ssh -G reads the options as a session would: an option this ssh does not know would make
    every node unreachable. The key exchange offered is ssh's own (post-quantum included)."""
    argv = mesh.ssh_argv("node.invalid", ["pvestrap", "preflight", "--agent"])
    out = subprocess.run([argv[0], "-G", *argv[1:-1]], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    offered = next(line.split()[1] for line in out.splitlines()
                   if line.startswith("kexalgorithms ")).split(",")
    default = next(line.split()[1] for line in subprocess.run(
        ["ssh", "-G", "root@node.invalid"], capture_output=True, text=True, timeout=30,
        check=True).stdout.splitlines() if line.startswith("kexalgorithms ")).split(",")
    assert offered == default
    assert "batchmode yes" in out and "updatehostkeys false" in out


@pytest.mark.parametrize("line, word", [("garbage\n", "is not a JSON object"),
                                        ("[]\n", "is not a JSON object"),
                                        ('{"node": "n1"}\n', "lacks answers, token")])
def test_an_agent_job_that_is_not_one_is_bad_input(line, word):
    """An agent run by hand with a wrong job: exit 2 naming what is wrong, not an internal
    error."""
    with pytest.raises(UserError) as info:
        mesh.read_job(io.StringIO(line), "answers", "node", "token")
    assert info.value.exit_code == 2 and word in info.value.message and info.value.remedy
