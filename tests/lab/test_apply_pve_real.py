"""`pvestrap apply` with the pve backend against Proxmox VE's REAL cluster stack (`lab up --pve`):
real pmxcfs, real Perl pvecm (create, add --use_ssh 1), real corosync, for PVE 8 (pve-cluster
8.1.3) and PVE 9 (9.1.6). Skipped, with the reason, where Proxmox's sources are absent.

Every run is the real command inside a node (its namespaces, /etc, /etc/pve and dpkg database),
from ONE answer file that plans ahead for Proxmox VE 9.2: the node's installed pve-cluster
decides what pvecm is asked and what the preview shows.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from diffblocks import same_diffs
from labtesting import etc_hashes
from pvestrap.answers import dumps
from pvestrap.apply.pve import JoinFailed, PveJoinStep
from pvestrap.apply.pve_join_method import JoinMethod
from pvestrap.firstboot import secret
from pvestrap.lab.lab import Lab
from pvestrap.paths import COROSYNC_CONF, DATACENTER_CFG
from pvestrap.plan import ClusterPlan, Datacenter
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.system import RealSystem

pytestmark = pytest.mark.lab

HEADER = "==> /etc/corosync/corosync.conf (mode 0644) <==\n"


def answer_file(lab: Lab, tmp_path: Path) -> tuple[ClusterPlan, Path]:
    plan = replace(lab.plan(), datacenter=Datacenter(keyboard="de"))
    text = dumps(plan).replace('backend = "pve"\n', 'backend = "pve"\npve_version = "9.2"\n')
    assert 'pve_version = "9.2"' in text
    path = tmp_path / "answers.toml"
    path.write_text(text)
    return plan, path


def pvestrap(lab: Lab, index: int, *args: str) -> subprocess.CompletedProcess:
    return lab.exec(index, [sys.executable, "-m", "pvestrap", *args], timeout=300)


def preview(lab: Lab, index: int, answers: Path) -> str:
    """What `pvestrap render` prints for the node's corosync.conf (no file written)."""
    result = pvestrap(lab, index, "render", "--answers", str(answers),
                      "--node", lab.node(index).name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(HEADER), result.stdout
    return result.stdout[len(HEADER):].split("==> ")[0]


def apply(lab: Lab, index: int, answers: Path, *args: str) -> subprocess.CompletedProcess:
    return pvestrap(lab, index, "apply", "--answers", str(answers), "--node",
                    lab.node(index).name, *args)


def same_as_dry_run(lab: Lab, index: int, answers: Path) -> list[str]:
    """`render --diff` and `apply --dry-run` on the node show the same diffs (pvecm's files
    included); neither changes the node's /etc. Returns the paths."""
    before = etc_hashes(lab, clustered=False)
    rendered = pvestrap(lab, index, "render", "--diff", "--answers", str(answers),
                        "--node", lab.node(index).name)
    planned = apply(lab, index, answers, "--dry-run")
    assert rendered.returncode == 0 and planned.returncode == 0, planned.stdout + planned.stderr
    assert etc_hashes(lab, clustered=False) == before
    return same_diffs(rendered.stdout, planned.stdout)


@pytest.mark.parametrize("release", ["8", "9"])
def test_apply_builds_a_real_proxmox_cluster_exactly_as_previewed(lab, tmp_path, release):
    three = lab(nodes=3, pve=release)
    plan, answers = answer_file(three, tmp_path)
    before = preview(three, 3, answers)  # the last joiner's: the whole cluster
    # the same answer file: PVE 8's pvecm has no --token-coefficient, PVE 9's writes 125
    assert ("  token_coefficient: 125\n" in before) == (release == "9")
    assert "  config_version: 3\n" in before

    shown = preview(three, 1, answers)  # pvecm create: n1 alone, config_version 1
    assert same_as_dry_run(three, 1, answers) == [COROSYNC_CONF, DATACENTER_CFG]
    created = apply(three, 1, answers, "--yes")
    assert created.returncode == 0, created.stdout + created.stderr
    assert three.node(1).path(COROSYNC_CONF).read_text() == shown  # what pvecm wrote
    argv = next(line for line in created.stdout.splitlines() if "run pvecm create" in line)
    assert ("--token-coefficient 125" in argv) == (release == "9")
    if release == "8":
        assert "following the node" in created.stdout + created.stderr
    for index in (2, 3):
        shown = preview(three, index, answers)
        assert same_as_dry_run(three, index, answers) == [COROSYNC_CONF]
        joined = apply(three, index, answers, "--yes")
        assert joined.returncode == 0, joined.stdout + joined.stderr
        # no join.address: n1's name, which resolves here (/etc/hosts), as pvecm add takes it
        assert f"pvecm add {three.node(1).name} --use_ssh 1" in joined.stdout
        assert "root key login" in joined.stdout  # the plan says which join and why
        assert three.node(index).path(COROSYNC_CONF).read_text() == shown

    for index in (1, 2, 3):
        status = three.exec(index, ["pvecm", "status"])
        assert status.returncode == 0, status.stdout + status.stderr
        quorum = parse_quorum_status(status.stdout, "pvecm status")
        assert quorum.quorate and (quorum.total_votes, quorum.expected_votes) == (3, 3)
        final = three.node(index).path("/etc/pve/corosync.conf").read_text()
        assert final == before  # byte for byte what pvestrap previewed
        diff = pvestrap(three, index, "render", "--diff", "--answers", str(answers),
                        "--node", three.node(index).name)
        assert diff.returncode == 0 and diff.stdout == ""
        assert "already as planned" in diff.stderr
        dry = apply(three, index, answers, "--dry-run")
        assert dry.returncode == 0 and "nothing to do, already as planned" in dry.stdout
        assert same_diffs(diff.stdout, dry.stdout) == []
        # datacenter.cfg was written once, on n1, into pmxcfs: every node has it, no backup
        pve = three.node(index).path("/etc/pve")
        assert "keyboard: de\n" in (pve / "datacenter.cfg").read_text()
        assert not (pve / "datacenter.cfg.bak").exists()

    # A join real pvecm refuses (n2 is a member already): it prints the errors and exits 0,
    # and pvestrap reports the refusal instead of taking the exit code for success.
    node = three.node(2)
    system = RealSystem(root=str(node.root), wrap=node.wrap)
    step = PveJoinStep(plan, node.name, None, method=JoinMethod("ssh", "test"))
    with pytest.raises(JoinFailed) as refused:
        step.apply(system)
    assert refused.value.code == "join-refused"
    assert any("already exists" in line for line in refused.value.details["output"])


FIRSTBOOT_ARGS = ("--peer-wait 120 --turn-wait 240 --apply-timeout 240 --quorum-timeout 90 "
                  "--linger 240 --duration 1")


@pytest.mark.slow
@pytest.mark.parametrize("release", ["8", "9"])
def test_first_boot_of_a_pve_lab_ends_as_apply_does(lab, tmp_path, release):
    """iso/pvestrap-firstboot.sh in every node at once, from one answer file: the same
    cluster as `apply` builds, byte for byte the preview."""
    import pvestrap.iso

    script = Path(pvestrap.iso.__file__).with_name("pvestrap-firstboot.sh")
    three = lab(nodes=3, pve=release)
    _, answers = answer_file(three, tmp_path)
    secret.ensure(secret.path_for(answers))  # the cluster's first-boot secret, 0600
    before = preview(three, 3, answers)  # the last joiner's: the whole cluster
    env = {"PVESTRAP_ANSWERS": str(answers), "PVESTRAP_STATE_DIR": "/run/pvestrap/firstboot",
           "PVESTRAP_FIRSTBOOT": f"{sys.executable} -m pvestrap.firstboot",
           "PVESTRAP_FIRSTBOOT_ARGS": FIRSTBOOT_ARGS}
    runs = {}
    for index in (1, 2, 3):
        out = (tmp_path / f"n{index}.out").open("w")
        runs[index] = three.popen(index, ["sh", str(script)], env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        codes = {i: p.wait(timeout=600) for i, p in runs.items()}
    finally:
        for p in runs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = {i: (tmp_path / f"n{i}.out").read_text()[-3000:] for i in runs}
    assert codes == {1: 0, 2: 0, 3: 0}, logs
    for index in (1, 2, 3):
        quorum = parse_quorum_status(three.exec(index, ["pvecm", "status"]).stdout)
        assert quorum.quorate and quorum.total_votes == 3
        assert three.node(index).path("/etc/pve/corosync.conf").read_text() == before
