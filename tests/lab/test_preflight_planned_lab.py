"""Preflight knows "planned, not yet configured", on a real lab node: link0 is planned on the
node's spare NIC eth9 (cabled, no address) with a new address on a network that exists nowhere
yet; link1 stays on eth1, where the peer's `pvestrap responder` answers. The standalone
`pvestrap preflight --answers F` (the real command inside the node: its own NICs via `ip -j`,
real probes) reports link0 as planned (INFO, apply configures it), skips only the probes that
need that address (link-port-pending, latency-pending: SKIP, one per link), and still probes
link1 (port open, latency measured). Nothing is configured by the preflight (eth9 still has no
address).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from labtesting import wait

from pvestrap.answers import dumps
from pvestrap.checks.probe import TOKEN_ENV
from pvestrap.lab import names
from pvestrap.plan import InterfaceStanza

pytestmark = pytest.mark.lab

CLI = [sys.executable, "-m", "pvestrap"]
TOKEN = "planned-test-token"
PORTS = (5404, 5405, 5406)


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def bound(lab, node: int, ports) -> bool:
    out = lab.exec(node, ["ss", "-Hulnp"]).stdout
    return all(f":{port} " in out for port in ports)


def test_standalone_preflight_skips_only_the_probes_of_the_planned_address(lab, tmp_path,
                                                                           processes):
    two = lab(nodes=2, links=2)
    plan = two.plan()
    nodes = tuple(replace(n, addresses={**n.addresses, 0: f"10.254.251.{i + 1}"},
                          interfaces=(InterfaceStanza(names.SPARE_NIC, f"10.254.251.{i + 1}/24"),))
                  for i, n in enumerate(plan.nodes))
    links = tuple(replace(link, network="10.254.251.0/24") if link.number == 0 else link
                  for link in plan.links)
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(replace(plan, nodes=nodes, links=links)))
    me, peer = two.node(1).name, two.node(2).name
    argv = CLI + ["responder", "--ttl", "120"] + [a for p in PORTS for a in ("-p", str(p))]
    processes.append(two.popen(2, argv, env={TOKEN_ENV: TOKEN}, stderr=subprocess.DEVNULL))
    assert wait(lambda: bound(two, 2, PORTS), 30), two.exec(2, ["ss", "-Hulnp"]).stdout
    result = two.exec(1, CLI + ["preflight", "--answers", str(answers), "--node", me, "--json",
                                "--duration", "0.5"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                      env={TOKEN_ENV: TOKEN})
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("{"), (result.returncode, result.stdout, result.stderr)
    report = json.loads(result.stdout)
    findings = [f for s in report["sections"] for f in s["findings"]]

    def at(subject):
        return sorted((f["code"], f["severity"]) for f in findings if f["subject"] == subject)

    assert at(f"{me}/link0") == [("latency-pending", "skip"), ("link-address-planned", "info"),
                                 ("link-port-pending", "skip")]
    planned = next(f for f in findings if f["code"] == "link-address-planned")
    assert planned["payload"]["planned_on"] == names.SPARE_NIC and "apply" in planned["message"]
    pending = next(f for f in findings if f["code"] == "link-port-pending")
    assert pending["payload"]["peers"] == [peer] and pending["payload"]["nic"] == "eth9"
    assert report["meta"]["pending_links"] == [0]
    # link1 (eth1, configured) is probed for real: the peer's responder answers
    assert ("link-port-open", "pass") in at(f"{me}->{peer}/link1:5406")
    assert ("latency-ok", "pass") in at(f"{me}->{peer}/link1")
    assert not [f for f in findings if "link0" in f["subject"] and f["severity"] == "fail"]
    assert not [f for f in findings if f["code"] == "link-address-missing"]
    spare = two.exec(1, ["ip", "-j", "addr", "show", "dev", names.SPARE_NIC])
    assert not [a for a in json.loads(spare.stdout)[0]["addr_info"] if a["scope"] == "global"]
