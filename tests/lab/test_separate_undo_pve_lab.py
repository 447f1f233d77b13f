"""`pvestrap node separate` undone after the REAL `pvecm delnode` went through, on Proxmox VE's
real cluster stack (`lab up --pve`: real pmxcfs in local and cluster mode, the Perl `pvecm
create`, `pvecm add --use_ssh 1` and `pvecm delnode`, real corosync). Skipped, with the reason,
where Proxmox's sources are absent.

The separation's own steps run on n3 with the step after delnode failing (the verify,
replaced): every real step so far is undone on the real stack, in reverse, as after a verify
that never settles."""

from __future__ import annotations

import sys

import pytest

from labtesting import QuorumWatcher, wait
from pvelab import FAILING_VERIFY, cfs_writable, form, pve_status

pytestmark = pytest.mark.lab

FAIL_AFTER_DELNODE = FAILING_VERIFY + """
from pvestrap.apply import links, separate as sp
from pvestrap.apply.corosync_service import default_service
from pvestrap.apply.engine import StepFailed, run_steps
from pvestrap.system import RealSystem


system = RealSystem()
sep = sp.read_separation(system, default_service(system))
with links.locked(system, sep.removal.cluster) as control_path:
    found = sp.steps(system, sep, control_path)
    assert [s.id for s in found][-2:] == ["delnode", "verify"], [s.id for s in found]
    try:
        run_steps([*found[:-1], Fails()], system)
    except StepFailed as exc:
        print("undone:", ",".join(exc.undone), "undo-failures:",
              "; ".join(f"{f.step_id}: {f.cause}" for f in exc.undo_failures) or "none")
"""

CONFS = ("/etc/pve/corosync.conf", "/etc/corosync/corosync.conf")
KNOWN = ("/root/.ssh/known_hosts", "/etc/pve/priv/known_hosts")
UNDONE = ("delnode,known-hosts,nodes-dir-aside,var-lib-corosync-aside,start-pve-cluster,"
          "stop-local-pmxcfs,etc-corosync-aside,pve-conf-aside,pmxcfs-local,stop-pve-cluster")


def snapshot(lab, name: str) -> dict[str, bytes]:
    """Every node's corosync.conf (both), authkey and known_hosts (root's, the cluster's), the
    names in n3's /var/lib/corosync, and NAME's node folder as n1 sees it (each file's bytes)."""
    out = {}
    for node in lab.nodes:
        for path in (*CONFS, "/etc/corosync/authkey", *KNOWN):
            file = node.path(path)
            out[f"{node.name}:{path}"] = file.read_bytes() if file.exists() else b"-"
    out["n3:/var/lib/corosync"] = " ".join(
        sorted(p.name for p in lab.node(3).path("/var/lib/corosync").iterdir())).encode()
    folder = lab.node(1).path(f"/etc/pve/nodes/{name}")
    assert folder.is_dir()
    out.update({f"n1:{p.relative_to(folder)}": p.read_bytes()
                for p in sorted(folder.rglob("*")) if p.is_file()})
    return out


def all_quorate(lab) -> bool:
    found = [pve_status(lab, i) for i in (1, 2, 3)]
    return all(s and s.quorate and s.expected_votes == 3 and len(s.nodes_only) == 3
               for s in found)


@pytest.mark.parametrize("release", ["8", "9"])
def test_a_failure_after_real_delnode_undoes_the_whole_separation(lab, release):
    """pmxcfs never hands on a lower config_version (pve-cluster src/pmxcfs/dcdb.c): the undo
    puts n3 back at delnode's + 1 (3 after the joins, 4 delnode, 5 the undo), also in n3's own
    files kept aside, so that n3's corosync rejoins; everything else byte for byte."""
    three = form(lab, 3, release)
    n3 = three.node(3)
    before = snapshot(three, n3.name)
    conf = before[f"{n3.name}:{CONFS[0]}"]
    assert conf.count(b"config_version: 3\n") == 1
    with QuorumWatcher(three, 1, None) as w1, QuorumWatcher(three, 2, None) as w2:
        out = three.exec(3, [sys.executable, "-c", FAIL_AFTER_DELNODE], timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"undone: {UNDONE} undo-failures: none" in out.stdout, out.stdout + out.stderr
    assert w1.samples > 0 and w2.samples > 0 and w1.bad == [] and w2.bad == []

    assert wait(lambda: all_quorate(three), 60)
    back = conf.replace(b"config_version: 3\n", b"config_version: 5\n")
    expected = {k: back if k.endswith(CONFS) else v for k, v in before.items()}
    after = snapshot(three, n3.name)
    for key in expected:
        old, new = expected[key].splitlines(), after[key].splitlines()
        assert after[key] == expected[key], (key, [x for x in old if x not in new],
                                             [x for x in new if x not in old])
    for index in (1, 2, 3):
        running = three.exec(index, ["corosync-cmapctl", "-g", "totem.config_version"]).stdout
        assert running.strip().endswith("= 5"), running
    assert three.exec(1, ["sh", "-c", "ls -A /var/lib/pvestrap/removed 2>/dev/null"]
                      ).stdout == ""
    # n3's pmxcfs is the cluster's again (quorate a moment after corosync): a write there
    # reaches n1
    assert wait(lambda: cfs_writable(three, 3), 60)
    wrote = three.exec(3, ["sh", "-c", "echo back > /etc/pve/undo-test"])
    assert wrote.returncode == 0, wrote.stderr
    assert wait(lambda: three.node(1).path("/etc/pve/undo-test").exists(), 30)
