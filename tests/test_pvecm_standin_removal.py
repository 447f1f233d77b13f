"""The pvecm TEST STAND-IN's delnode and expected, as strict and as lax as pve-cluster's
API2/ClusterConfig.pm delnode and CLI/pvecm.pm expected (corosync-quorumtool -e), and the
removal steps driven through them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest


STANDIN = Path(__file__).resolve().parent / "standin"  # the pvecm/pvesh TEST STAND-IN, tests only


def cluster(root: Path, nodes: int = 3, **extra) -> Path:
    (root / "standin").mkdir(parents=True)
    data = {"cluster_name": "lab", "config_version": 5, "quorate": True, "local": "pve1",
            "fingerprint": "AB" * 32, "links": {"0": 0}, "token_coefficient": None,
            "nodes": [{"name": f"pve{i}", "nodeid": i, "votes": 1,
                       "addresses": {"0": f"10.254.0.{i}"}} for i in range(1, nodes + 1)],
            **extra}
    (root / "standin/cluster.json").write_text(json.dumps(data))
    (root / "etc/pve").mkdir(parents=True)
    (root / "etc/pve/corosync.conf").write_text("x")
    return root


def pvecm(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVESTRAP_STANDIN_ROOT": str(root), "PVESTRAP_STANDIN_NODENAME": "pve1"}
    return subprocess.run([str(STANDIN / "pvecm"), *argv], text=True, capture_output=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=30, check=False)


def state(root: Path) -> dict:
    return json.loads((root / "standin/cluster.json").read_text())


def test_delnode_removes_the_node_and_bumps_the_version(tmp_path):
    root = cluster(tmp_path)
    done = pvecm(root, "delnode", "pve3")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    after = state(root)
    assert [n["name"] for n in after["nodes"]] == ["pve1", "pve2"]
    assert after["config_version"] == 6
    conf = (root / "etc/corosync/corosync.conf").read_text()
    assert "pve3" not in conf and "config_version: 6" in conf
    assert (root / "etc/pve/corosync.conf").read_text() == conf


@pytest.mark.parametrize("argv,message", [
    (("delnode", "pve1"), "Cannot delete myself from cluster!"),
    (("delnode", "pve9"), "Node/IP: pve9 is not a known host of the cluster."),
    (("delnode", "10.254.0.3"), "node: value does not look like a valid node name"),
    (("delnode",), "node: property is missing and it is not optional"),
    (("expected", "0"), "expected: value must have a minimum value of 1"),
    (("expected", "x"), "expected: type check ('integer') failed - got 'x'"),
])
def test_refusals_change_nothing(tmp_path, argv, message):
    root = cluster(tmp_path)
    before = state(root)
    out = pvecm(root, *argv)
    assert out.returncode == 255 and message in out.stderr
    assert state(root) == before


def test_without_quorum_delnode_refuses_until_expected_votes_are_lowered(tmp_path):
    root = cluster(tmp_path, nodes=2, quorate=False, online=["pve1"])
    refused = pvecm(root, "delnode", "pve2")
    assert refused.returncode == 255 and "cluster not ready - no quorum?" in refused.stderr
    # allowed (not below the present), still no quorum
    assert pvecm(root, "expected", "2").returncode == 0
    assert state(root)["quorate"] is False
    lowered = pvecm(root, "expected", "1")
    assert lowered.returncode == 0 and state(root)["quorate"] is True
    higher = pvecm(root, "expected", "2")
    assert higher.returncode == 1 and "CS_ERR_INVALID_PARAM" in higher.stderr
    assert pvecm(root, "delnode", "pve2").returncode == 0
    status = pvecm(root, "status")
    assert status.returncode == 0 and "Expected votes:   1" in status.stdout


def test_pve_removal_steps_through_the_standin(tmp_path):
    """The pve backend's expected-votes and delnode steps, applied through the stand-in (the
    SSH, known_hosts and /etc/pve/nodes steps act on real paths and are covered in the lab)."""
    from pvestrap.apply import removal as rm
    from pvestrap.apply.engine import StepFailed, run_steps
    from pvestrap.apply.links import Cluster, MemberHost
    from pvestrap.checks.removal import vote_plan
    from pvestrap.corosync.facade import CorosyncConf
    from pvestrap.system import RealSystem
    from pvestrap.verify import Observed

    root = cluster(tmp_path, nodes=2, quorate=False, online=["pve1"])
    conf_text = "".join(
        ["nodelist {\n"] + [f"  node {{\n    name: pve{i}\n    nodeid: {i}\n    quorum_votes: 1\n"
                            f"    ring0_addr: 10.254.0.{i}\n  }}\n" for i in (1, 2)] +
        ["}\n\nquorum {\n  provider: corosync_votequorum\n}\n\ntotem {\n  cluster_name: lab\n"
         "  config_version: 5\n  version: 2\n}\n"])
    (root / "etc/pve/corosync.conf").write_text(conf_text)
    conf = CorosyncConf.parse(conf_text)
    members = (MemberHost("pve1", 1, "10.254.0.1", True),)
    removal = rm.Removal("pve2", Cluster(conf, conf_text, Observed(), members),
                         conf.nodes[1], conf.remove_node("pve2").bump_version(),
                         vote_plan(conf, "pve2", None), "pve", 1)
    system = RealSystem(root=str(root), env={
        "PATH": f"{STANDIN}:{os.environ['PATH']}", "PVESTRAP_STANDIN_ROOT": str(root),
        "PVESTRAP_STANDIN_NODENAME": "pve1"})
    steps = [rm.ExpectedVotesStep(("pvecm", "expected", "1"), 2, ("pvecm", "expected", "2")),
             rm.DelnodeStep(removal)]

    (root / "standin/cluster.lock").write_text("")  # another change holds corosync.conf
    with pytest.raises(StepFailed) as caught:
        run_steps(steps, system)
    assert caught.value.step_id == "delnode" and "got lock request timeout" in \
        caught.value.message
    assert (root / "etc/pve/corosync.conf").read_text() == conf_text
    (root / "standin/cluster.lock").unlink()

    outcome = run_steps(steps, system)
    assert outcome.applied == ("expected-votes", "delnode")
    assert [n["name"] for n in state(root)["nodes"]] == ["pve1"]
    assert "pve2" not in (root / "etc/pve/corosync.conf").read_text()
