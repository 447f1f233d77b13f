"""Never cut the branch you sit on: apply refuses a plan that changes the interfaces stanza of the
default route's or the SSH session's interface (or a device below it), exit 2, before any change.

The machine is given through ApplyContext.machine (the seam apply fills from `ip -j` otherwise)
and the node's /etc/network/interfaces lives in a tmp root, as read by apply itself.
"""

from __future__ import annotations

import pytest

from pvestrap.apply.flow import ApplyContext, apply_node
from pvestrap.apply.network_guard import carrying, refuse_cutting_branch
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.errors import UserError
from pvestrap.interfaces import edit_interfaces
from pvestrap.plan import ClusterPlan, InterfaceStanza, Link, Node
from pvestrap.recorded import RecordingSystem

UP = ("UP", "LOWER_UP")
INSTALLER = ("auto lo\niface lo inet loopback\n\niface eno1 inet manual\n\nauto vmbr0\n"
             "iface vmbr0 inet static\n\taddress 10.254.7.11/24\n\tgateway 10.254.7.1\n"
             "\tbridge-ports eno1\n\tbridge-stp off\n\tbridge-fd 0\n\nsource /etc/network/"
             "interfaces.d/*\n")
MACHINE = Machine("pve1", (
    Interface("eno1", "physical", flags=UP, master="vmbr0"),
    Interface("vmbr0", "bridge", flags=UP, addresses=(IfAddress("10.254.7.11", 24),)),
    Interface("eno2", "physical", flags=UP, addresses=(IfAddress("10.254.8.11", 24),)),
    Interface("eno3", "physical", flags=UP)), default_route=("vmbr0",))
SSH_ON_ENO2 = {"SSH_CONNECTION": "10.254.8.50 51234 10.254.8.11 22"}


def plan_with(*stanzas: InterfaceStanza) -> ClusterPlan:
    me = Node("pve1", 1, {0: "10.254.9.1"}, interfaces=stanzas)
    return ClusterPlan("lab", (me, Node("pve2", 2, {0: "10.254.9.2"})),
                       (Link(0, "10.254.9.0/24"),), backend="corosync")


def test_what_carries_the_route_and_the_session_includes_the_devices_below():
    found = carrying(MACHINE, SSH_ON_ENO2)
    assert found == {"vmbr0": "carries the default route",
                     "eno2": "carries this SSH session (to 10.254.8.11)",
                     "eno1": "is below vmbr0, which carries the default route"}
    assert carrying(MACHINE, {"SSH_CONNECTION": "garbage"}) == {
        "vmbr0": "carries the default route",
        "eno1": "is below vmbr0, which carries the default route"}


@pytest.mark.parametrize("stanza, why", [
    (InterfaceStanza("eno2", "10.254.9.1/24"), "carries this SSH session"),
    (InterfaceStanza("eno1", "10.254.9.1/24"), "is below vmbr0"),
    (InterfaceStanza("vmbr0", "10.254.9.1/24", kind="bridge", bridge_ports="eno1"),
     "carries the default route"),
])
def test_apply_refuses_before_any_change(tmp_path, stanza, why):
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(INSTALLER)
    system = RecordingSystem({})
    ctx = ApplyContext(system, root=str(tmp_path), machine=MACHINE, environ=SSH_ON_ENO2,
                       out=lambda line: None)
    with pytest.raises(UserError) as err:
        apply_node(plan_with(stanza), "pve1", ctx)
    assert err.value.exit_code == 2 and err.value.code == "network-branch-in-use"
    assert why in str(err.value) and "nothing was changed" in str(err.value)
    assert system.records == [] and system.files == {}
    assert (tmp_path / "etc/network/interfaces").read_text() == INSTALLER
    assert not (tmp_path / "run").exists()  # not even the apply lock


def test_a_free_nic_or_a_stanza_already_as_planned_passes():
    free = InterfaceStanza("eno3", "10.254.9.1/24")
    refuse_cutting_branch(plan_with(free).node("pve1"), MACHINE, INSTALLER, SSH_ON_ENO2)
    # a second apply: the stanza on eno2 is already in the file as planned, nothing to reload
    done = InterfaceStanza("eno2", "10.254.8.11/24")
    text = edit_interfaces(INSTALLER, (done,))
    refuse_cutting_branch(plan_with(done).node("pve1"), MACHINE, text, SSH_ON_ENO2)
    with pytest.raises(UserError):
        refuse_cutting_branch(plan_with(done).node("pve1"), MACHINE, INSTALLER, SSH_ON_ENO2)
