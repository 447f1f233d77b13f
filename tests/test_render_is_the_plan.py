"""One render path: what `pvestrap render --diff` shows for a node is what `pvestrap apply
--dry-run` plans for it and what apply (or pvecm) writes, through the real CLI entry.

Proxmox VE through the pvecm/pvesh TEST STAND-IN (tests/standin/); plain corosync, and the
interfaces diff of apply's network phase, without starting or reloading anything (a corosync
or ifreload started here would act on this machine's own network namespace: create, join and
member, and a new cluster network, run for real in tests/lab/test_render_is_the_plan.py, real
corosync, sshd and ifupdown2). A join reads its cluster over the network (the member's files
over SSH, or the cluster node's API), which the fast suite never does: here the corosync join
is planned through the apply flow with the member's answer scripted at the ssh seam, the
stand-in's join through its step; both against `render --diff` from the CLI.

The one file a dry run shows beyond render's is the corosync backend's new authkey: a secret,
shown as `<secret>`, that no render produces.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from diffblocks import diff_blocks, diff_path, same_diffs
from pvestrap.answers import dumps
from pvestrap.apply.flow import ApplyContext, apply_node, plan_only_preflight
from pvestrap.apply.pve import PveJoinStep, PveTimeouts
from pvestrap.apply.pve_join_method import JoinMethod
from pvestrap.cli import main
from pvestrap.paths import AUTHKEY, COROSYNC_CONF, DATACENTER_CFG, INTERFACES
from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, JoinTarget, Link, Node
from pvestrap.recorded import DryRunSystem, RecordingSystem
from pvestrap.render import render_corosync_conf, unified_diff
from pvestrap.system import RealSystem, Secret

STANDIN = Path(__file__).resolve().parent / "standin"  # the pvecm/pvesh TEST STAND-IN
QUORATE = (Path(__file__).parent / "data/status/quorumtool-s-2node-quorate.txt").read_text()
FP = ":".join(["AB", "CD", "EF", "01"] * 8)
PASSWORD = "correct horse"
# This machine is not the planned node: its names and addresses are not the plan's.
NOT_THIS_MACHINE = ("--ignore", "hostname", "--ignore", "link-address")


def make_plan(backend: str) -> ClusterPlan:
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"})
                  for i in (1, 2, 3))
    return ClusterPlan("lab", nodes, (Link(0, "10.254.0.0/24"), Link(1, "10.254.1.0/24", 10)),
                       join=JoinTarget(fingerprint=FP, password_env="PVESTRAP_TEST_PW"),
                       datacenter=Datacenter(keyboard="de"), pve_version="9.2",
                       backend=backend)


def answers(tmp_path: Path, plan: ClusterPlan) -> Path:
    path = tmp_path / "answers.toml"
    path.write_text(dumps(plan))
    return path


def cli(capsys, *args: str) -> str:
    code = main(list(args))
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    return out.out


def render_diff(capsys, answers_file: Path, node: str, root: Path) -> tuple[str, Path]:
    """`render --diff` against ROOT; --root writes its results, so it runs on a copy of ROOT
    (returned: it holds the rendered files)."""
    copy = root.with_name(root.name + "-rendered")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root, copy, symlinks=True)
    return cli(capsys, "render", "--diff", "--answers", str(answers_file), "--node", node,
               "--root", str(copy)), copy


def dry_run(capsys, answers_file: Path, node: str, root: Path) -> str:
    return cli(capsys, "apply", "--dry-run", "--answers", str(answers_file), "--node", node,
               "--root", str(root), *NOT_THIS_MACHINE)


@pytest.fixture
def pve_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh Proxmox VE node pve1 whose pvecm and pvesh are the stand-in."""
    root = tmp_path / "pve1"
    (root / "etc/pve").mkdir(parents=True)
    (root / "etc/pve/datacenter.cfg").write_text("keyboard: en-us\n")
    (root / "standin").mkdir()
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    monkeypatch.setenv("PVESTRAP_STANDIN_ROOT", str(root))
    monkeypatch.setenv("PVESTRAP_STANDIN_NODENAME", "pve1")
    return root


def test_pve_create_then_member_shows_and_writes_what_render_shows(tmp_path, pve_node, capsys):
    plan = make_plan("auto")  # /etc/pve: the pve backend, as on a real node
    answers_file = answers(tmp_path, plan)
    rendered, copy = render_diff(capsys, answers_file, "pve1", pve_node)
    planned = dry_run(capsys, answers_file, "pve1", pve_node)
    assert "backend pve, role create" in planned
    assert same_diffs(rendered, planned) == [COROSYNC_CONF, DATACENTER_CFG]
    assert f"file {COROSYNC_CONF} (mode 0644, written by pvecm create)" in planned

    cli(capsys, "apply", "--yes", "--answers", str(answers_file), "--node", "pve1", "--root",
        str(pve_node), *NOT_THIS_MACHINE)
    for path in (COROSYNC_CONF, DATACENTER_CFG):  # what (stand-in) pvecm wrote is the preview
        assert (pve_node / path.lstrip("/")).read_text() == (copy / path.lstrip("/")).read_text()

    rendered, _ = render_diff(capsys, answers_file, "pve1", pve_node)
    planned = dry_run(capsys, answers_file, "pve1", pve_node)
    assert rendered == "" and same_diffs(rendered, planned) == []
    assert "nothing to do, already as planned" in planned


def test_pve_join_shows_and_writes_what_render_shows(tmp_path, pve_node, capsys):
    """The joiner pve2 of the stand-in's cluster (pve1, as `pvecm create` left it)."""
    plan = make_plan("pve")
    answers_file = answers(tmp_path, plan)
    cli(capsys, "apply", "--yes", "--answers", str(answers_file), "--node", "pve1", "--root",
        str(pve_node), *NOT_THIS_MACHINE)
    joiner = tmp_path / "pve2"
    (joiner / "etc").mkdir(parents=True)
    (joiner / "standin").mkdir()
    cluster = json.loads((pve_node / "standin/cluster.json").read_text())  # as create left it
    cluster.update(fingerprint=FP, password_sha256=hashlib.sha256(PASSWORD.encode()).hexdigest())
    (joiner / "standin/cluster.json").write_text(json.dumps(cluster))
    os.environ["PVESTRAP_STANDIN_ROOT"], os.environ["PVESTRAP_STANDIN_NODENAME"] = \
        str(joiner), "pve2"  # monkeypatch restores both
    rendered, copy = render_diff(capsys, answers_file, "pve2", joiner)
    assert [diff_path(b) for b in diff_blocks(rendered)] == [COROSYNC_CONF]

    system = RealSystem(root=str(joiner))
    step = PveJoinStep(plan, "pve2", Secret(PASSWORD), timeouts=PveTimeouts(
        join=60, quorum=5, poll=0.1), fetch=None, method=JoinMethod("api", "test"))
    actions = step.plan(DryRunSystem(system))
    shown = "".join(unified_diff(a) for a in actions if getattr(a, "writer", "") == "pvecm add")
    assert shown == rendered

    step.apply(system)
    conf = (joiner / COROSYNC_CONF.lstrip("/")).read_text()
    assert conf == (copy / COROSYNC_CONF.lstrip("/")).read_text()  # pvecm add wrote the preview


def test_corosync_create_and_member_show_what_render_shows(tmp_path, capsys, monkeypatch):
    """With a stanza for a NIC this machine does not have (apply's network phase would write
    it; only planned here): its interfaces diff comes first in the dry run, as the phase
    runs before the cluster steps."""
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    plan = make_plan("corosync")
    stanza = InterfaceStanza("pvs9", "10.254.0.1/24")
    plan = replace(plan, nodes=(replace(plan.nodes[0], interfaces=(stanza,)), *plan.nodes[1:]))
    answers_file = answers(tmp_path, plan)
    root = tmp_path / "pve1"
    for path, text in ((COROSYNC_CONF, "totem {\n\tversion: 2\n\tcluster_name: debian\n}\n"),
                       (INTERFACES, "auto lo\niface lo inet loopback\n\n"
                                    "source /etc/network/interfaces.d/*\n"),
                       ("/usr/sbin/ifreload", "")):  # ifupdown2 is there (never run here)
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    rendered, copy = render_diff(capsys, answers_file, "pve1", root)
    planned = dry_run(capsys, answers_file, "pve1", root)
    assert "backend corosync, role create" in planned
    # no datacenter.cfg without PVE; the network phase's interfaces diff first
    assert same_diffs(rendered, planned, ordered=False) == [INTERFACES, COROSYNC_CONF]
    assert "+iface pvs9 inet static\n+\taddress 10.254.0.1/24\n" in rendered
    assert f"+++ b{AUTHKEY}\n@@ -0,0 +1 @@\n+<secret>\n" in planned
    assert (copy / COROSYNC_CONF.lstrip("/")).read_text() == \
        render_corosync_conf(replace(plan, nodes=plan.nodes[:1]), 1)

    # the node as its create left it (render wrote the files): a member, nothing to render
    for path in (COROSYNC_CONF, INTERFACES):
        shutil.copy(copy / path.lstrip("/"), root / path.lstrip("/"))
    (root / AUTHKEY.lstrip("/")).write_bytes(os.urandom(256))
    rendered, _ = render_diff(capsys, answers_file, "pve1", root)
    planned = dry_run(capsys, answers_file, "pve1", root)
    assert "already in cluster lab as planned" in planned
    assert rendered == "" and same_diffs(rendered, planned) == []


def test_corosync_join_shows_what_render_shows(tmp_path, capsys):
    """The flow's join plan (the member's files and quorum scripted at the ssh seam, as the
    real one answers them) against `render --diff` of the fresh joiner."""
    plan = make_plan("corosync")
    answers_file = answers(tmp_path, plan)
    (tmp_path / "pve2").mkdir()
    rendered, _ = render_diff(capsys, answers_file, "pve2", tmp_path / "pve2")

    member_conf = render_corosync_conf(replace(plan, nodes=plan.nodes[:1]), 1)
    system = RecordingSystem()
    system.on(("corosync-quorumtool", "-s"), (1, "", "Cannot initialize QUORUM service"))
    answer = (f"file {COROSYNC_CONF} 644 {base64.b64encode(member_conf.encode()).decode()}\n"
              f"file {AUTHKEY} 400 {base64.b64encode(b'k' * 256).decode()}\n"
              f"quorum 0\n{QUORATE}")
    system.on(("ssh",), (0, answer, ""))
    lines: list[str] = []
    result = apply_node(plan, "pve2", ApplyContext(system, root=str(tmp_path), dry_run=True,
                                                   preflight=plan_only_preflight,
                                                   out=lines.append))
    assert result.role == "join"
    planned = "\n".join(lines) + "\n"
    assert same_diffs(rendered, planned) == [COROSYNC_CONF]
    assert f"+++ pve1:{COROSYNC_CONF}" in planned  # the member's file too (not this node's)
