"""Preflight knows "planned, not yet configured", on a real lab node: link0 is planned on the
node's spare NIC eth9 (cabled, no address) with a new address on a network that exists nowhere
yet. The standalone `pvestrap preflight --answers F` (the real command inside the node: its own
NICs via `ip -j`) reports link-address-planned (INFO, apply configures it), not
link-address-missing; nothing is configured by the preflight (eth9 still has no address).
No responder runs on the peer (its address is only planned too): this test holds the local
finding only; skipping the probes that need the planned address is not done yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from pvestrap.answers import dumps
from pvestrap.lab import names
from pvestrap.plan import InterfaceStanza

pytestmark = pytest.mark.lab


def test_standalone_preflight_reports_the_planned_address_on_the_spare_nic(lab, tmp_path):
    two = lab(nodes=2, links=1)
    plan = two.plan()
    nodes = tuple(replace(n, addresses={0: f"10.254.251.{i + 1}"},
                          interfaces=(InterfaceStanza(names.SPARE_NIC, f"10.254.251.{i + 1}/24"),))
                  for i, n in enumerate(plan.nodes))
    links = tuple(replace(link, network="10.254.251.0/24") if link.number == 0 else link
                  for link in plan.links)
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(replace(plan, nodes=nodes, links=links)))
    me = two.node(1).name
    result = two.exec(1, [sys.executable, "-m", "pvestrap", "preflight", "--answers",
                          str(answers), "--node", me, "--json", "--duration", "0.5"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                      env={"PVESTRAP_PROBE_TOKEN": "planned-test-token"})
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("{"), (result.returncode, result.stdout, result.stderr)
    report = json.loads(result.stdout)
    findings = [f for s in report["sections"] for f in s["findings"]]
    mine = [f for f in findings if f["subject"] == f"{me}/link0" and f["check"] == "link-address"]
    assert [(f["code"], f["severity"]) for f in mine] == [("link-address-planned", "info")], mine
    assert mine[0]["payload"]["planned_on"] == names.SPARE_NIC
    assert "apply" in mine[0]["message"]
    assert not [f for f in findings if f["code"] == "link-address-missing"]
    spare = two.exec(1, ["ip", "-j", "addr", "show", "dev", names.SPARE_NIC])
    assert not [a for a in json.loads(spare.stdout)[0]["addr_info"] if a["scope"] == "global"]
