"""`pvestrap status` in every format inside a node of Proxmox VE's REAL cluster stack (`lab up
--pve`: real pmxcfs, real Perl pvecm, real corosync), PVE 8 (pve-cluster 8.1.3) and PVE 9
(9.1.6). Skipped, with the reason, where Proxmox's sources are absent.

pvecm itself forms the cluster with two links (create and add --use_ssh with --link0 and
--link1). The report must agree with `pvecm status` on the same node; then nftables on n3 drops
UDP 5406 (link1's port) and the report must name exactly that link and peer as down.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import pytest

from labtesting import wait
from pvelab import form, pve_status

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]


def status(lab, *args: str):
    return lab.exec(1, [*PVESTRAP, "status", *args], timeout=90)


def report(lab, *args: str) -> tuple[int, dict]:
    out = status(lab, "--json", *args)
    assert out.stdout.startswith("{"), out.stdout + out.stderr
    return out.returncode, json.loads(out.stdout)


def by_code(found: dict, code: str) -> list[dict]:
    return [f for s in found["sections"] for f in s["findings"] if f["code"] == code]


def healthy(found: dict) -> bool:
    links = by_code(found, "knet-link-connected")
    return (bool(by_code(found, "cluster-quorate")) and len(links) == 4
            and all(f["payload"]["latency_samples"] > 0 for f in links)
            and found["summary"]["failures"] == 0 and found["summary"]["warnings"] == 0)


@pytest.mark.parametrize("release", ["8", "9"])
def test_status_in_every_format_on_a_real_proxmox_cluster(lab, release):
    three = form(lab, 3, release, links=2, cluster_links=2)
    n1, n2, n3 = (n.name for n in three.nodes)
    seen: list[tuple[int, dict]] = []
    assert wait(lambda: healthy((seen.append(report(three, "--expect-nodes", "3")) or
                                 seen[-1])[1]), 60), json.dumps(seen[-1][1], indent=1)
    rc, found = seen[-1]
    assert rc == 0
    pvecm = pve_status(three, 1)  # Proxmox's own view of the same cluster
    quorate = by_code(found, "cluster-quorate")[0]["payload"]
    assert (quorate["expected_votes"], quorate["total_votes"], quorate["nodes"]) == \
        (pvecm.expected_votes, pvecm.total_votes, len(pvecm.nodes_only)) == (3, 3, 3)
    assert by_code(found, "members-complete")[0]["payload"]["members"] == [n1, n2, n3]
    links = {(f["payload"]["peer"], f["payload"]["link"]): f["payload"]
             for f in by_code(found, "knet-link-connected")}
    assert sorted(links) == [(n2, 0), (n2, 1), (n3, 0), (n3, 1)]
    assert links[(n3, 1)]["remote_address"] == three.node(3).address(1)
    assert found["matrices"]["link1"]["nodes"] == [n1, n2, n3]

    text = status(three, "--expect-nodes", "3", "--strict", "--junit", "/tmp/status.xml",
                  "--html", "/tmp/status.html")
    assert text.returncode == 0, text.stdout + text.stderr
    assert "[cluster-quorate]" in text.stdout and "FAIL: " not in text.stdout
    junit = ET.fromstring(three.node(1).path("/tmp/status.xml").read_text())
    assert junit.tag == "testsuites" and junit.get("failures") == "0"
    assert int(junit.get("tests")) == len(list(junit.iter("testcase"))) > 4
    page = three.node(1).path("/tmp/status.html").read_text()
    assert 'data-link="link0"' in page and 'data-link="link1"' in page

    three.impair(drop="n3:udp/5406")
    assert wait(lambda: bool(by_code(report(three)[1], "knet-link-down")), 30)
    rc, found = report(three)
    fails = [(f["subject"], f["code"]) for s in found["sections"] for f in s["findings"]
             if f["severity"] == "fail"]
    assert rc == 1 and fails == [(f"{n3}/link1", "knet-link-down")], json.dumps(found, indent=1)
    assert by_code(found, "cluster-quorate"), "link0 still carries the cluster"
    assert pve_status(three, 1).quorate
    text = status(three, "--junit", "/tmp/down.xml")
    assert text.returncode == 1 and "[knet-link-down]" in text.stdout
    junit = ET.fromstring(three.node(1).path("/tmp/down.xml").read_text())
    assert junit.get("failures") == "1"
    assert [f.get("type") for f in junit.iter("failure")] == ["knet-link-down"]
