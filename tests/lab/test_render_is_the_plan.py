"""One render path in the lab, real corosync 3 and sshd, every command the real CLI inside the
node: `render --diff` shows what `apply --dry-run` plans for the node as creator, joiner and
member, a dry run leaves the node's /etc byte for byte as it was (every node's, in fact), and
the cluster ends with the file render showed. The fast twin is tests/test_render_is_the_plan.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffblocks import same_diffs
from labtesting import etc_hashes
from pvestrap.answers import dumps
from pvestrap.lab.lab import Lab
from pvestrap.paths import COROSYNC_CONF

pytestmark = pytest.mark.lab


def pvestrap(lab: Lab, index: int, *args: str) -> subprocess.CompletedProcess:
    result = lab.exec(index, [sys.executable, "-m", "pvestrap", *args], timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_render_diff_is_the_dry_run_and_a_dry_run_changes_nothing(lab, tmp_path: Path):
    three = lab(nodes=3, links=1)
    three.start("sshd")
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))

    def same(index: int) -> tuple[list[str], str]:
        """render --diff against apply --dry-run on node INDEX; no /etc changed anywhere."""
        name = three.node(index).name
        before = etc_hashes(three, clustered=False)
        rendered = pvestrap(three, index, "render", "--diff", "--answers", str(answers),
                            "--node", name).stdout
        planned = pvestrap(three, index, "apply", "--dry-run", "--answers", str(answers),
                           "--node", name).stdout
        assert etc_hashes(three, clustered=False) == before
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
