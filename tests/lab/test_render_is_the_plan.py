"""One render path in the lab, real corosync 3 and sshd, every command the real CLI inside the
node: `render --diff` shows what `apply --dry-run` plans for the node as creator, joiner and
member, a dry run leaves the node's /etc byte for byte as it was (every node's, in fact), and
the cluster ends with the file render showed; with a new cluster network on the spare NIC, the
interfaces diff too (real ifupdown2). The fast twin is tests/test_render_is_the_plan.py.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from diffblocks import diff_blocks, diff_path, same_diffs
from labtesting import etc_hashes
from pvestrap.answers import dumps
from pvestrap.lab import names
from pvestrap.lab.lab import Lab
from pvestrap.paths import COROSYNC_CONF, INTERFACES
from pvestrap.plan import InterfaceStanza

pytestmark = pytest.mark.lab


def pvestrap(lab: Lab, index: int, *args: str) -> subprocess.CompletedProcess:
    result = lab.exec(index, [sys.executable, "-m", "pvestrap", *args], timeout=240,
                      env={"SSH_CONNECTION": ""})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def shown(lab: Lab, index: int, answers: Path) -> tuple[str, str]:
    """`render --diff` and `apply --dry-run` on node INDEX; no /etc changed on any node."""
    name = lab.node(index).name
    before = etc_hashes(lab, clustered=False)
    rendered = pvestrap(lab, index, "render", "--diff", "--answers", str(answers),
                        "--node", name).stdout
    planned = pvestrap(lab, index, "apply", "--dry-run", "--answers", str(answers),
                       "--node", name).stdout
    assert etc_hashes(lab, clustered=False) == before
    return rendered, planned


def test_render_diff_is_the_dry_run_and_a_dry_run_changes_nothing(lab, tmp_path: Path):
    three = lab(nodes=3, links=1)
    three.start("sshd")
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))

    def same(index: int) -> tuple[list[str], str]:
        rendered, planned = shown(three, index, answers)
        return same_diffs(rendered, planned), planned

    def apply(index: int) -> None:
        pvestrap(three, index, "apply", "--yes", "--answers", str(answers), "--node",
                 three.node(index).name)

    paths, planned = same(1)  # a fresh node: creates
    assert "role create" in planned and paths == [COROSYNC_CONF]
    apply(1)
    paths, planned = same(2)  # joins the cluster n1 started
    assert "role join" in planned and paths == [COROSYNC_CONF]
    apply(2)
    for member in (1, 2):
        paths, planned = same(member)
        assert paths == [] and "already in cluster" in planned
    paths, planned = same(3)
    assert "role join" in planned and paths == [COROSYNC_CONF]
    whole = pvestrap(three, 3, "render", "--answers", str(answers), "--node",
                     three.node(3).name).stdout
    apply(3)
    final = {three.node(i).path(COROSYNC_CONF).read_text() for i in (1, 2, 3)}
    assert final == {whole.split(" <==\n", 1)[1]}  # the file render showed, on every node
    for member in (1, 2, 3):
        assert same(member)[0] == []


def test_a_new_cluster_network_shows_the_same_interfaces_diff(lab, tmp_path: Path):
    """link0 on the spare NIC with a new address (apply's network phase writes the stanza):
    the creator's dry run shows render's interfaces and corosync.conf diffs; a joiner's shows
    render's interfaces diff and plans its join after the network phase (the cluster is only
    reachable over the new network); nothing changes; once applied, nothing is left to show."""
    two = lab(nodes=2, links=1)
    plan = two.plan()
    nodes = tuple(replace(n, addresses={0: f"10.254.88.{n.nodeid}"}, interfaces=(
        InterfaceStanza(names.SPARE_NIC, f"10.254.88.{n.nodeid}/24"),)) for n in plan.nodes)
    plan = replace(plan, nodes=nodes, links=(replace(plan.links[0], network="10.254.88.0/24"),),
                   join=replace(plan.join, address=two.node(1).address(0))).check()
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(plan))

    rendered, planned = shown(two, 1, answers)
    assert sorted(same_diffs(rendered, planned, ordered=False)) == [COROSYNC_CONF, INTERFACES]
    rendered, planned = shown(two, 2, answers)
    interfaces = [b for b in diff_blocks(rendered) if diff_path(b) == INTERFACES]
    assert interfaces and interfaces == [b for b in diff_blocks(planned)
                                         if diff_path(b) == INTERFACES]
    assert f"+++ b{COROSYNC_CONF}" in rendered and f"+++ b{COROSYNC_CONF}" not in planned
    pvestrap(two, 1, "apply", "--yes", "--answers", str(answers), "--node", two.node(1).name)
    rendered, planned = shown(two, 1, answers)
    assert rendered == "" and same_diffs(rendered, planned) == []
