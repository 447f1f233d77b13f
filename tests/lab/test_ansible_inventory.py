"""`pvestrap lab inventory` with the real ansible: every node answers through its own sshd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvestrap.lab.inventory import inventory

pytestmark = pytest.mark.lab

ANSIBLE = Path(sys.executable).with_name("ansible")


def test_every_node_of_every_group_is_reached_over_ssh(lab, tmp_path):
    if not ANSIBLE.exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    four = lab(nodes=4, links=2)
    four.start("sshd")
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps(inventory(four.state, clusters=2)))
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local")}
    result = subprocess.run([str(ANSIBLE), "-i", str(path), "pvestrap_clusters",
                             "-m", "ansible.builtin.command", "-a", "hostname"],
                            capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for i in range(1, 5):
        name = four.node(i).name
        assert f"{name} | CHANGED | rc=0 >>\n{name}\n" in result.stdout, result.stdout
    groups = json.loads(subprocess.run(
        [str(ANSIBLE.with_name("ansible-inventory")), "-i", str(path), "--list"],
        capture_output=True, text=True, check=True, env=env).stdout)
    prefix = four.prefix.replace("-", "_")
    assert groups[f"{prefix}_c1"]["hosts"] == [four.node(1).name, four.node(2).name]
    assert groups[f"{prefix}_c2"]["hosts"] == [four.node(3).name, four.node(4).name]
