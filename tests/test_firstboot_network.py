"""First boot's network phase (pvestrap/firstboot/network.py) on the in-memory node of the
network phase's own tests (tests/support/network_fakes.py: its NICs follow the file as
ifupdown2 does). The real thing, from a prepared ISO's hook in lab nodes, is
tests/lab/test_iso_firstboot_lab.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from network_fakes import FILE, INTERFACES, no_conflict, node, plan

from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.errors import UserError
from pvestrap.firstboot import network
from pvestrap.plan import InterfaceStanza

UP = ("UP", "LOWER_UP")
# the installer's machine: management on eth0 (the default route), the cluster NIC untouched
MACHINE = Machine("n1", (Interface("eth0", "veth", flags=UP,
                                   addresses=(IfAddress("10.254.0.1", 24),)),
                         Interface("eth9", "veth")), default_route=("eth0",))


@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(FILE)
    return str(tmp_path)


def configure(the_plan, system, root, lines):
    return network.configure(the_plan, "n1", lines.append, lines.append, system=system,
                             root=root, machine=MACHINE, prober=no_conflict)


def test_the_cluster_nic_is_configured_from_the_answer_file_and_a_rerun_does_nothing(root):
    system, net = node()
    lines: list[str] = []
    assert configure(plan(), system, root, lines) is True
    assert net.addresses["eth9"] == {"10.254.77.1/24"} and net.up["eth9"]
    assert "iface eth9 inet static" in system.read_text(INTERFACES)
    assert "network: configured 10.254.77.1/24 on eth9" in lines[-1]
    assert [line for line in lines if line.startswith("[applied] network:")]
    # the file as the phase wrote it is what the node has now: a rerun plans nothing
    Path(root, "etc/network/interfaces").write_text(system.read_text(INTERFACES))
    again: list[str] = []
    assert configure(plan(), system, root, again) is False
    assert again == ["network: 10.254.77.1/24 on eth9 as planned already"]


def test_a_plan_without_stanzas_changes_nothing_and_reads_nothing(root):
    system, _net = node()
    bare = replace(plan(), nodes=tuple(replace(n, interfaces=()) for n in plan().nodes))
    lines: list[str] = []
    assert configure(bare, system, root, lines) is False
    assert lines == [] and system.commands == []


def test_a_stanza_on_the_default_routes_nic_is_refused_before_any_change(root):
    system, net = node()
    cutting = replace(plan(), nodes=(replace(plan().nodes[0], addresses={0: "10.254.0.9"},
                                             interfaces=(InterfaceStanza("eth0",
                                                                         "10.254.0.9/24"),)),
                                     plan().nodes[1]))
    with pytest.raises(UserError) as err:
        configure(cutting, system, root, [])
    assert err.value.exit_code == 2 and "default route" in err.value.message
    assert system.read_text(INTERFACES) == FILE and net.addresses["eth0"] == {"10.254.0.1/24"}
