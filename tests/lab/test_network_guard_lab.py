"""Never cut the branch you sit on, on a real lab node: its own /etc/network/interfaces, its own
routes (`ip -j route` inside its network namespace) and the real `pvestrap apply` command.

A plan that re-addresses eth0 (the interface of the node's default route, or of the SSH session
named by SSH_CONNECTION) is refused with exit 2 before anything changes: the node's /etc (the
upper layer of its overlay) hashes the same before and after, corosync never written. The route
is added inside the node's namespace only (never the root namespace).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from pvestrap.answers import dumps
from pvestrap.lab import names
from pvestrap.plan import InterfaceStanza

pytestmark = pytest.mark.lab

INTERFACES = ("auto lo\niface lo inet loopback\n\n# the node's own management NIC\nauto eth0\n"
              "iface eth0 inet static\n\taddress {address}/24\n\nsource /etc/network/"
              "interfaces.d/*\n")


def etc_changes(lab, index: int) -> dict[str, bytes]:
    """The node's own /etc (the upper layer of its overlay, where its writes land)."""
    folder = names.Layout(lab.prefix).node_dir(index) / "etc"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _answers(lab, tmp_path: Path) -> Path:
    """The lab's plan, with n1 moving link0 to a new address on eth0 (its reachable NIC)."""
    plan = lab.plan()
    n1 = plan.nodes[0]
    moved = replace(n1, interfaces=(InterfaceStanza("eth0", "10.254.250.1/24"),))
    path = tmp_path / "answers.toml"
    path.write_text(dumps(replace(plan, nodes=(moved, *plan.nodes[1:]))))
    return path


def _apply(lab, answers: Path, env: dict[str, str] | None = None):
    argv = [sys.executable, "-m", "pvestrap", "apply", "--answers", str(answers), "--node",
            lab.node(1).name, "--yes"]
    return lab.exec(1, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
                    env=env or {})


@pytest.mark.parametrize("how", ["default-route", "ssh-session"])
def test_apply_refuses_to_readdress_the_nic_it_is_reached_by(lab, tmp_path, how):
    one = lab(nodes=2, links=1)
    address = one.node(1).address(0)
    one.node(1).path("/etc/network").mkdir(parents=True, exist_ok=True)
    one.node(1).path("/etc/network/interfaces").write_text(INTERFACES.format(address=address))
    env = {"SSH_CONNECTION": ""}
    if how == "default-route":
        route = one.exec(1, ["ip", "route", "add", "default", "dev", "eth0"])
        assert route.returncode == 0, route.stderr
    else:
        peer = one.node(2).address(0)
        env = {"SSH_CONNECTION": f"{peer} 50022 {address} 22"}
    answers = _answers(one, tmp_path)
    before = etc_changes(one, 1)
    result = _apply(one, answers, env)
    assert result.returncode == 2, result.stdout
    assert "network-branch-in-use" in result.stdout or "eth0" in result.stdout, result.stdout
    want = "carries the default route" if how == "default-route" else "carries this SSH session"
    assert want in result.stdout and "nothing was changed" in result.stdout
    assert "Traceback" not in result.stdout
    assert etc_changes(one, 1) == before
    assert one.node(1).path("/etc/network/interfaces").read_text() == \
        INTERFACES.format(address=address)
    assert not one.node(1).path("/etc/corosync/corosync.conf").exists() or \
        "10.254.250.1" not in one.node(1).path("/etc/corosync/corosync.conf").read_text()
