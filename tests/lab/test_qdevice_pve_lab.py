"""`pvestrap qdevice setup` and `remove` against Proxmox VE's REAL cluster stack (`lab up --pve
8|9 --qnetd`): real pmxcfs and the real Perl `pvecm qdevice setup/remove` (ssh-copy-id to the
qnetd host, the certificates with corosync-qdevice-net-certutil / corosync-qnetd-certutil and
NSS's certutil, /etc/pve/corosync.conf, `systemctl start corosync-qdevice` on every member),
Debian's corosync-qnetd and corosync-qdevice. Skipped, with the reason, where Proxmox's sources
are absent.

The command runs inside n1 as a user would run it; pvestrap plans, previews and verifies, pvecm
does the work.
"""

from __future__ import annotations

import json
import sys

import pytest

from pvestrap.apply import qdevice_pve
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.qdevice import ODD_REFUSAL, QDevice, configured
from pvestrap.render import unified_diff
from pvestrap.system import RealSystem
from pvelab import form, pve_status

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
PVE_CONF = "/etc/pve/corosync.conf"


def qdevice(lab, *args: str):
    return lab.exec(1, [*PVESTRAP, "qdevice", *args], timeout=400)


@pytest.mark.parametrize("release", ["8", "9"])
def test_qdevice_setup_and_remove_run_the_real_pvecm_qdevice(lab, release):
    two = form(lab, 2, release, qnetd=True)
    host = two.qnetd.address(0)
    node = two.node(1)
    change = qdevice_pve.read_setup(RealSystem(root=str(node.root), wrap=node.wrap),
                                    QDevice(host))
    preview = change.diff()
    assert preview.before == node.path(PVE_CONF).read_text()

    dry = qdevice(two, "setup", host, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert unified_diff(preview) in dry.stdout
    assert node.path(PVE_CONF).read_text() == preview.before

    done = qdevice(two, "setup", host, "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "done" and doc["expected_votes"] == 3
    for index in (1, 2):
        assert two.node(index).path(PVE_CONF).read_text() == preview.after  # byte for byte
        status = pve_status(two, index)
        assert status.quorate and "Qdevice" in status.flags
        assert (status.expected_votes, status.total_votes) == (3, 3)
        assert all("V" in (m.qdevice or "").split(",") for m in status.nodes_only)
        assert two.exec(index, ["corosync-qdevice-tool", "-s"]).returncode == 0
    clusters = two.exec("qnetd", ["corosync-qnetd-tool", "-l"]).stdout
    assert "Cluster \"lab\"" in clusters and clusters.count("Node ID") == 2, clusters

    removed = qdevice(two, "remove", "--yes", "--json")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    for index in (1, 2):
        text = two.node(index).path(PVE_CONF).read_text()
        assert "device" not in text and text.count("config_version") == 1
        status = pve_status(two, index)
        assert status.quorate and "Qdevice" not in status.flags
        assert status.expected_votes == 2


def qdevice_state(lab) -> dict[str, object]:
    """Every member's /etc/pve/corosync.conf and QDevice certificate store, the qnetd host's
    clusters."""
    out: dict[str, object] = {}
    for node in lab.nodes:
        out[f"{node.name}:conf"] = node.path(PVE_CONF).read_bytes()
        out[f"{node.name}:certs"] = node.path("/etc/corosync/qdevice").exists()
    out["qnetd"] = lab.exec("qnetd", ["corosync-qnetd-tool", "-l"]).stdout
    return out


@pytest.mark.parametrize("release", ["8", "9"])
def test_qdevice_on_an_odd_node_count_needs_the_users_force(lab, release):
    """pvecm qdevice setup refuses an odd node count without --force (pve-cluster's pvecm.pm:
    "Clusters with an odd node count are not officially supported!"); pvestrap's preflight
    refuses the same before any command (qdevice-odd-nodes, the vote math, exit 1) and passes
    --force only when the user gave it; forced, pvecm sets up lms and the QDevice carries
    N-1 = 2 votes."""
    three = form(lab, 3, release, qnetd=True)
    host = three.qnetd.address(0)
    before = qdevice_state(three)
    assert "Cluster" not in before["qnetd"]

    direct = three.exec(1, ["pvecm", "qdevice", "setup", host], timeout=120)  # the oracle
    assert direct.returncode == 255, direct.stdout + direct.stderr
    assert ODD_REFUSAL in direct.stderr
    refused = qdevice(three, "setup", host, "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[qdevice-odd-nodes]" in refused.stdout and "--force" in refused.stdout
    assert "refused by the preflight: nothing was changed" in refused.stderr
    as_json = qdevice(three, "setup", host, "--yes", "--json")
    assert as_json.returncode == 1, as_json.stdout + as_json.stderr
    doc = json.loads(as_json.stdout)
    codes = [f["code"] for s in doc["preflight"]["sections"] for f in s["findings"]]
    assert doc["status"] == "refused" and "qdevice-odd-nodes" in codes, doc
    assert qdevice_state(three) == before
    assert "Qdevice" not in pve_status(three, 1).flags

    dry = qdevice(three, "setup", host, "--force", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"pvecm qdevice setup {host} --force" in dry.stdout, dry.stdout
    assert qdevice_state(three) == before
    node = three.node(1)
    preview = qdevice_pve.read_setup(RealSystem(root=str(node.root), wrap=node.wrap),
                                     QDevice(host), force=True).diff()

    done = qdevice(three, "setup", host, "--force", "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["status"] == "done" and doc["expected_votes"] == 5, doc
    for index in (1, 2, 3):
        assert three.node(index).path(PVE_CONF).read_text() == preview.after
        status = pve_status(three, index)
        assert status.quorate and "Qdevice" in status.flags
        assert (status.expected_votes, status.total_votes) == (5, 5)
        assert all("V" in (m.qdevice or "").split(",") for m in status.nodes_only)
        assert three.exec(index, ["corosync-qdevice-tool", "-s"]).returncode == 0
    clusters = three.exec("qnetd", ["corosync-qnetd-tool", "-l"]).stdout
    assert "Cluster \"lab\"" in clusters and clusters.count("Node ID") == 3, clusters
    device = configured(CorosyncConf.parse(preview.after))
    assert device and device["algorithm"] == "lms" and "votes" not in device, device
