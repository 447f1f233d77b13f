"""`pvestrap node remove` against Proxmox VE's REAL cluster stack (`lab up --pve`: real pmxcfs,
real Perl `pvecm create`, `pvecm add --use_ssh 1` and `pvecm delnode`, real corosync). Skipped,
with the reason, where Proxmox's sources are absent."""

from __future__ import annotations

import re
import sys

import pytest

from labtesting import wait
from pvelab import FAILING_VERIFY, form, pve_status

# node remove's own steps on n1 with the step after delnode failing (the verify, replaced): the
# undo runs on the real stack, as it would after a verify that never settles
FAIL_AFTER_DELNODE = FAILING_VERIFY + """
import sys
from pvestrap.apply import links, removal as rm
from pvestrap.apply.engine import StepFailed
from pvestrap.commands.node import rollback_note
from pvestrap.system import RealSystem


system = RealSystem()
removal, _ = rm.read_removal(system, sys.argv[1])
try:
    links.run_locked(system, removal.cluster,
                     lambda ops: [*rm.steps(system, removal, ops)[:-1], Fails()])
except StepFailed as exc:
    print("undone:", ",".join(exc.undone), "undo-failures:",
          "; ".join(f"{f.step_id}: {f.cause}" for f in exc.undo_failures) or "none")
    print(rollback_note(system, removal, exc))  # what `node remove` adds to its failure
"""

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]


def power_off(lab, index: int) -> None:
    """pve-cluster and corosync stopped, the NIC down; back once n1's knet dropped the link."""
    for service in ("pve-cluster", "corosync"):
        lab.exec(index, ["systemctl", "stop", service])
    lab.exec(index, ["ip", "link", "set", "eth0", "down"], check=True)

    def gone() -> bool:
        out = lab.exec(1, ["corosync-cfgtool", "-s"]).stdout
        return not re.search(rf"nodeid:\s+{index}:\s+connected", out)

    assert wait(gone, 60)


@pytest.mark.parametrize("release", ["8", "9"])
def test_remove_a_powered_off_node_with_real_pvecm(lab, release):
    three = form(lab, 3, release)
    n3 = three.node(3)
    assert three.exec(1, ["test", "-d", f"/etc/pve/nodes/{n3.name}"]).returncode == 0
    power_off(three, 3)

    out = three.exec(1, [*PVESTRAP, "node", "remove", n3.name, "--yes"], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[applied] delnode" in out.stderr and "[applied] nodes-dir-aside" in out.stderr
    aside = out.stdout.split(f"/etc/pve/nodes/{n3.name} is now ")[1].split()[0]
    assert three.exec(1, ["test", "-d", aside]).returncode == 0
    for index in (1, 2):
        status = pve_status(three, index)
        assert status.quorate and status.expected_votes == 2
        assert {m.nodeid for m in status.nodes_only} == {1, 2}
        conf = three.node(index).path("/etc/corosync/corosync.conf").read_text()
        assert n3.name not in conf and "config_version: 4" in conf
        assert three.exec(index, ["test", "-e", f"/etc/pve/nodes/{n3.name}"]).returncode == 1


def test_lost_quorum_with_real_pvecm_needs_expected_votes(lab):
    two = form(lab, 2, "9")
    n2 = two.node(2)
    power_off(two, 2)
    assert wait(lambda: pve_status(two, 1).quorate is False, 60)
    refused = two.exec(1, [*PVESTRAP, "node", "remove", n2.name, "--yes"], timeout=300)
    assert refused.returncode == 1 and "[cluster-not-quorate]" in refused.stdout
    done = two.exec(1, [*PVESTRAP, "node", "remove", n2.name, "--yes", "--expected-votes",
                        "1"], timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[applied] expected-votes" in done.stderr and "[applied] delnode" in done.stderr
    status = pve_status(two, 1)
    assert status.quorate and status.expected_votes == 1
    assert n2.name not in two.node(1).path("/etc/pve/corosync.conf").read_text()


def test_a_failure_after_real_delnode_puts_the_node_back_above_delnodes_config_version(lab):
    """pmxcfs never hands on a lower config_version (pve-cluster src/pmxcfs/dcdb.c): the undo
    writes the old nodelist at delnode's + 1 (3 after the joins, 4 delnode, 5 the undo), and
    every staying member's corosync runs it."""
    three = form(lab, 3, "9")
    n3 = three.node(3)
    power_off(three, 3)
    out = three.exec(1, [sys.executable, "-c", FAIL_AFTER_DELNODE, n3.name], timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "undone: delnode,known-hosts,nodes-dir-aside undo-failures: none" in out.stdout, \
        out.stdout + out.stderr
    shared = three.node(1).path("/etc/pve/corosync.conf").read_text()
    assert "config_version: 5" in shared and f"name: {n3.name}" in shared
    assert (f"note: {n3.name} is in the nodelist again, at config_version 5, but {n3.name} "
            "itself, powered off, still has config_version 3 (or older)") in out.stdout
    assert f"copy {three.node(1).name}:/etc/corosync/corosync.conf over its own" in out.stdout
    assert "config_version: 3" in n3.path("/etc/corosync/corosync.conf").read_text()
    for index in (1, 2):
        assert three.node(index).path("/etc/corosync/corosync.conf").read_text() == shared
        assert three.node(index).path("/etc/pve/corosync.conf").read_text() == shared
        running = three.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
        assert running.strip().endswith("= 5"), running
        status = pve_status(three, index)
        assert status.quorate and status.expected_votes == 3
        assert three.exec(index, ["test", "-d", f"/etc/pve/nodes/{n3.name}"]).returncode == 0
