"""`pvestrap qdevice` on Proxmox VE through the pvecm TEST STAND-IN (tests/standin/:
pvecm qdevice setup/remove as strict as pve-cluster's pvecm.pm; certificates and qnetd are
simulated). Real subprocesses, files under a temporary root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvestrap.apply import qdevice_pve as pve
from pvestrap.apply.engine import StepFailed, run_steps
from pvestrap.errors import OperationFailed, UserError
from pvestrap.checks.qdevice import vote_findings
from pvestrap.findings import Severity
from pvestrap.qdevice import ODD_REFUSAL, QDevice, configured
from pvestrap.system import RealSystem

STANDIN = Path(__file__).resolve().parent / "standin"  # the pvecm/pvesh TEST STAND-IN, tests only
QNETD = "10.254.0.100"


def standin(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PVESTRAP_STANDIN_ROOT": str(root), "PVESTRAP_STANDIN_NODENAME": "pve1"}
    return subprocess.run([str(STANDIN / argv[0]), *argv[1:]], text=True, capture_output=True,
                          env=env)


def cluster_of(root: Path, count: int) -> RealSystem:
    """A member pve1 of a COUNT-node cluster, as the stand-in keeps it."""
    assert standin(root, "pvecm", "create", "lab", "--link0", "10.254.0.1").returncode == 0
    state = root / "standin/cluster.json"
    cluster = json.loads(state.read_text())
    cluster["nodes"] += [{"name": f"pve{i}", "nodeid": i, "votes": 1,
                          "addresses": {"0": f"10.254.0.{i}"}} for i in range(2, count + 1)]
    cluster["config_version"] = count
    state.write_text(json.dumps(cluster))
    rewrite = ("import json, sys; sys.path.insert(0, sys.argv[1]); import _standin as S; "
               "c = S.load_cluster(); S.write_node_files(c, bytes.fromhex(c['authkey_hex']))")
    env = {**os.environ, "PVESTRAP_STANDIN_ROOT": str(root)}
    subprocess.run([sys.executable, "-c", rewrite, str(STANDIN)], env=env, check=True)
    return RealSystem(root=str(root), env={
        "PATH": f"{STANDIN}:{os.environ['PATH']}", "PVESTRAP_STANDIN_ROOT": str(root),
        "PVESTRAP_STANDIN_NODENAME": "pve1"})


def test_setup_and_remove_with_pvecm_preview_is_what_pvecm_writes(tmp_path):
    system = cluster_of(tmp_path, 2)
    change = pve.read_setup(system, QDevice(QNETD), verify_s=5)
    assert change.setup_argv == ("pvecm", "qdevice", "setup", QNETD)
    run_steps(pve.steps(change), system)
    written = (tmp_path / "etc/pve/corosync.conf").read_text()
    assert written == change.diff().after  # the preview is byte for byte what pvecm wrote
    assert configured(change.after) == {"model": "net", "votes": "1", "algorithm": "ffsplit",
                                        "host": QNETD, "tls": "on"}
    status = standin(tmp_path, "pvecm", "status").stdout
    assert "Flags:            Quorate Qdevice" in status and "Expected votes:   3" in status

    removal = pve.read_remove(system, verify_s=5)
    run_steps(pve.steps(removal), system)
    assert (tmp_path / "etc/pve/corosync.conf").read_text() == removal.diff().after
    assert "device" not in removal.diff().after
    assert not (tmp_path / "etc/corosync/qdevice").exists()
    calls = [json.loads(line)["argv"] for line in
             (tmp_path / "standin/calls.log").read_text().splitlines()]
    assert ["qdevice", "setup", QNETD] in calls and ["qdevice", "remove"] in calls


def test_odd_count_refused_like_pvecm_unless_forced(tmp_path):
    system = cluster_of(tmp_path, 3)
    plain = pve.read_setup(system, QDevice(QNETD), verify_s=5)
    assert plain.setup_argv == ("pvecm", "qdevice", "setup", QNETD)
    # the command's preflight refuses it (exit 1, with --json a refused document)...
    refused = [f for f in vote_findings(plain.math, False) if f.code == "qdevice-odd-nodes"]
    assert [f.severity for f in refused] == [Severity.FAIL] and "--force" in refused[0].remedy
    assert [f.severity for f in vote_findings(plain.math, True)
            if f.code == "qdevice-odd-nodes"] == [Severity.WARN]
    # ...and past an --ignore, pvecm itself refuses without --force: nothing changed
    conf = (tmp_path / "etc/pve/corosync.conf").read_bytes()
    with pytest.raises(StepFailed) as failed:
        run_steps(pve.steps(plain), system)
    assert failed.value.step_id == "pvecm-qdevice-setup"
    assert (tmp_path / "etc/pve/corosync.conf").read_bytes() == conf
    direct = standin(tmp_path, "pvecm", "qdevice", "setup", QNETD)
    assert direct.returncode == 255 and ODD_REFUSAL in direct.stderr
    change = pve.read_setup(system, QDevice(QNETD), force=True, verify_s=5)
    assert change.setup_argv[-1] == "--force" and change.math.qdevice_votes == 2
    run_steps(pve.steps(change), system)
    assert "Expected votes:   5" in standin(tmp_path, "pvecm", "status").stdout
    assert "votes" not in configured(change.after)  # lms: qdevice computes N-1 itself


def test_standin_is_as_strict_as_pvecm(tmp_path):
    system = cluster_of(tmp_path, 2)
    bad = standin(tmp_path, "pvecm", "qdevice", "setup", "qnetd.example")
    assert bad.returncode == 255 and "address: invalid format - value does not look like a " \
        "valid IP address" in bad.stderr
    net = standin(tmp_path, "pvecm", "qdevice", "setup", QNETD, "--network", "10.0.0.1")
    assert "network: invalid format" in net.stderr
    assert standin(tmp_path, "pvecm", "qdevice", "remove").stderr.strip() == \
        "No QDevice configured!"
    assert standin(tmp_path, "pvecm", "qdevice", "setup", QNETD).returncode == 0
    again = standin(tmp_path, "pvecm", "qdevice", "setup", QNETD)
    assert again.returncode == 255 and again.stderr.strip() == "QDevice already configured!"
    with pytest.raises(OperationFailed):
        pve.read_setup(system, QDevice(QNETD))
    with pytest.raises(UserError):
        pve.read_setup(cluster_of(tmp_path / "other", 2), QDevice(QNETD, tie_breaker="highest"))
