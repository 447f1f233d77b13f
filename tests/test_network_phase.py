"""apply's network phase, step logic on an in-memory node (RecordingSystem) whose NICs follow its
/etc/network/interfaces the way ifupdown2 does (tests/support/network_fakes.py). The text
written is render_node's (the one render path), read from a tmp root holding the same file.
The real thing (ifupdown2 in lab nodes, real corosync) is tests/lab/test_network_phase_lab.py.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import replace

import pytest
from network_fakes import FAST, FILE, INTERFACES, no_conflict, node, plan

from pvestrap.apply import address_probe, network_phase
from pvestrap.apply.engine import StepFailed
from pvestrap.errors import UserError
from pvestrap.plan import InterfaceStanza
from pvestrap.recorded import DryRunSystem

@pytest.fixture
def root(tmp_path):
    (tmp_path / "etc/network").mkdir(parents=True)
    (tmp_path / "etc/network/interfaces").write_text(FILE)
    return str(tmp_path)


def run(the_plan, system, root, lines=None, **kw):
    return network_phase.run(the_plan, "n1", system, root=root, prober=no_conflict,
                             timeouts=FAST, out=(lines.append if lines is not None
                                                 else lambda line: None), **kw)


def test_the_phase_writes_the_rendered_file_brings_it_up_and_a_second_run_plans_nothing(root):
    system, net = node()
    lines: list[str] = []
    outcome = run(plan(), system, root, lines)
    assert outcome.applied == ("network:write-interfaces", "network:reload",
                               "network:wait-carrier", "network:wait-address")
    written = system.read_text(INTERFACES)
    assert written.startswith(FILE.split("source")[0]) and "source /etc/network/interfaces.d/*" \
        in written
    assert network_phase.interfaces_change(plan(), "n1", root).after == written
    assert "iface eth9 inet static\n\taddress 10.254.77.1/24" in written
    assert net.addresses["eth9"] == {"10.254.77.1/24"}
    assert ("ifreload", "-a") in system.commands
    assert any("+iface eth9 inet static" in line for line in lines)  # the diff was shown
    with open(f"{root}/etc/network/interfaces", "w") as fh:  # what render_node reads
        fh.write(written)
    system.records.clear()
    assert run(plan(), system, root) is None
    assert system.commands == [("ip", "-j", "addr", "show")] * len(system.commands)


def assert_restored(system, net):
    assert system.read_text(INTERFACES) == FILE
    assert INTERFACES + ".bak" not in system.files
    assert net.addresses["eth0"] == {"10.254.0.1/24"} and net.addresses["eth9"] == set()


@pytest.mark.parametrize("breaks, step, cause", [
    (lambda net: setattr(net, "reject", True), "network:reload", "command-failed"),
    (lambda net: net.carrier.update(eth9=False), "network:wait-carrier", "network-no-carrier"),
    (lambda net: net.dadfailed.add("10.254.77.1/24"), "network:wait-address",
     "link-address-in-use"),
])
def test_a_failure_restores_the_file_byte_identical_and_the_previous_addresses(
        root, breaks, step, cause):
    system, net = node()
    breaks(net)
    with pytest.raises(StepFailed) as failed:
        run(plan(), system, root)
    assert failed.value.step_id == step and failed.value.cause_code == cause
    assert failed.value.exit_code == 1 and not failed.value.undo_failures
    assert "network:write-interfaces" in failed.value.undone
    assert_restored(system, net)
    assert system.commands.count(("ifreload", "-a")) == 2


def test_an_address_still_there_after_the_restore_is_an_undo_failure(root):
    system, net = node()
    net.carrier["eth9"] = False
    net.keep_after_restore = True
    with pytest.raises(StepFailed) as failed:
        run(plan(), system, root)
    assert [f.step_id for f in failed.value.undo_failures] == ["network:write-interfaces"]
    assert "eth9 still has 10.254.77.1/24" in failed.value.undo_failures[0].cause
    assert system.read_text(INTERFACES) == FILE  # the file is back all the same


def test_an_address_another_host_answers_for_is_refused_before_any_change(root):
    system, net = node()
    probed = []

    def taken(nic, address):
        probed.append((nic, address, net.up[nic]))
        return address_probe.Conflict(address, "02:00:00:00:00:02", "reply")

    with pytest.raises(UserError) as refused:
        network_phase.run(plan(), "n1", system, root=root, prober=taken, timeouts=FAST,
                          out=lambda line: None)
    assert refused.value.exit_code == 2 and refused.value.code == "link-address-in-use"
    assert "02:00:00:00:00:02" in refused.value.message
    assert probed == [("eth9", "10.254.77.1", True)]  # set up for the probe ...
    assert net.up["eth9"] is False  # ... and down again
    assert system.read_text(INTERFACES) == FILE and ("ifreload", "-a") not in system.commands


def test_a_nic_the_node_does_not_have_is_refused(root):
    system, _ = node()
    with pytest.raises(UserError) as refused:
        run(plan(nic="eth5"), system, root)
    assert refused.value.code == "network-nic-missing" and "eth5" in refused.value.message
    assert system.read_text(INTERFACES) == FILE


def test_classic_ifupdown_brings_the_stanza_up_with_ifup_and_down_before_the_restore(root):
    """The step logic; real classic ifup/ifdown: tests/lab/test_network_phase_classic_lab.py."""
    system, net = node(tools=("/sbin/ifup",))
    net.carrier["eth9"] = False
    system.on(["ifup"], lambda s, argv, i: net.ifreload(s, argv, i))
    order = []
    system.on(["ifdown"], lambda s, argv, i: order.append(s.read_text(INTERFACES)) or (0, "", ""))
    with pytest.raises(StepFailed):
        run(plan(), system, root)
    assert ("ifup", "eth9") in system.commands and ("ifreload", "-a") not in system.commands
    assert ("ifdown", "--force", "eth9") in system.commands
    assert "eth9" in order[0]  # ifdown ran while the file still had the stanza
    assert system.read_text(INTERFACES) == FILE


def test_without_ifupdown_nothing_is_changed(root):
    system, _ = node(tools=())
    with pytest.raises(UserError) as refused:
        run(plan(), system, root)
    assert refused.value.code == "network-tools-missing" and refused.value.exit_code == 2
    assert system.read_text(INTERFACES) == FILE


def test_a_dry_run_shows_the_diff_and_changes_nothing(root):
    system, net = node()
    lines: list[str] = []
    shown = run(plan(), DryRunSystem(system), root, lines)
    assert not shown.changed and [sid for sid, _ in shown.plans][0] == "network:write-interfaces"
    assert system.read_text(INTERFACES) == FILE and net.addresses["eth9"] == set()
    assert all(argv[:3] == ("ip", "-j", "addr") for argv in system.commands)
    text = "\n".join(lines)
    assert "+iface eth9 inet static" in text and "ifreload -a" in text
    assert "wait up to 2 s for carrier (LOWER_UP) on eth9" in text


def test_the_arp_probe_frame_is_rfc_5227s():
    mac = bytes.fromhex("020000000001")
    frame = address_probe.arp_probe_frame(mac, "10.254.77.1")
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == mac and frame[12:14] == b"\x08\x06"
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = struct.unpack("!HHBBH6s4s6s4s",
                                                                    frame[14:42])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 1)
    assert (sha, spa, tha, tpa) == (mac, b"\0" * 4, b"\0" * 6, socket.inet_aton("10.254.77.1"))


def arp(op, sha, spa, tpa):
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, socket.inet_aton(spa),
                       b"\0" * 6, socket.inet_aton(tpa))
    return b"\xff" * 6 + sha + b"\x08\x06" + body


def test_what_counts_as_a_conflict():
    me, other = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    found = address_probe.conflict_in(arp(2, other, "10.254.77.1", "0.0.0.0"), me, "10.254.77.1")
    assert found == address_probe.Conflict("10.254.77.1", "02:00:00:00:00:02", "reply")
    assert address_probe.conflict_in(arp(1, other, "0.0.0.0", "10.254.77.1"), me,
                                      "10.254.77.1").how == "probe"
    assert address_probe.conflict_in(arp(1, other, "10.254.77.1", "10.254.77.9"), me,
                                      "10.254.77.1").how == "request"
    assert address_probe.conflict_in(arp(1, me, "0.0.0.0", "10.254.77.1"), me,
                                     "10.254.77.1") is None  # our own probe
    assert address_probe.conflict_in(arp(2, other, "10.254.77.2", "10.254.77.3"), me,
                                     "10.254.77.1") is None
    assert address_probe.probe("eth9", "fd77::1") is None  # IPv6: the kernel's DAD decides


def test_a_new_bridge_is_probed_for_on_its_port(root):
    system, net = node()
    probed = []
    bridge = InterfaceStanza("vmbr9", "10.254.77.1/24", kind="bridge", bridge_ports="eth9")
    the_plan = replace(plan(), nodes=(replace(plan().nodes[0], interfaces=(bridge,)),
                                      plan().nodes[1]))
    network_phase.refuse_duplicates(the_plan, "n1", system,
                                    lambda nic, address: probed.append((nic, address)))
    assert probed == [("eth9", "10.254.77.1")] and net.up["eth9"] is False
