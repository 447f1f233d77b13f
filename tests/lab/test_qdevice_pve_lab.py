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
from pvestrap.qdevice import QDevice
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
