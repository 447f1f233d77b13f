"""apply's network phase on real lab nodes: real ifupdown2 (`ifreload -a` inside each node, on
its own /etc/network/interfaces), real corosync 3, real sshd; the real `pvestrap apply` command
run inside the node. Nothing here is mocked.

Link0 goes on every node's spare NIC eth9 (cabled to the lab's spare bridge, no address
anywhere) with a new static address on a network that exists nowhere yet (10.254.77.0/24; the
lab's own link networks are 10.254.0-7.0/24). Joiners reach the creator over its management
address (eth0, as `pvecm add <address of a member>` does) and the other members by name (their
names resolve to eth0 in /etc/hosts, where known_hosts knows them, not at the new link0
addresses); corosync talks over the new network.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pvestrap.answers import dumps
from pvestrap.interfaces import edit_interfaces
from pvestrap.lab import names
from pvestrap.plan import ClusterPlan, InterfaceStanza

pytestmark = pytest.mark.lab

NETWORK = "10.254.77"
NETWORK6 = "fd77:77::"


def spare_plan(lab, ipv6: bool = False) -> ClusterPlan:
    """The lab's plan with link0 moved to eth9 on NETWORK (or NETWORK6)."""
    plan = lab.plan()
    address, cidr = (f"{NETWORK6}{{}}", f"{NETWORK6}{{}}/64") if ipv6 else \
        (f"{NETWORK}.{{}}", f"{NETWORK}.{{}}/24")
    nodes = tuple(replace(n, addresses={0: address.format(n.nodeid)}, interfaces=(
        InterfaceStanza(names.SPARE_NIC, cidr.format(n.nodeid)),)) for n in plan.nodes)
    network = f"{NETWORK6}/64" if ipv6 else f"{NETWORK}.0/24"
    links = tuple(replace(link, network=network) for link in plan.links)
    join = replace(plan.join, address=lab.node(1).address(0))
    return replace(plan, nodes=nodes, links=links, join=join).check()


def write_answers(plan: ClusterPlan, tmp_path: Path) -> Path:
    path = tmp_path / "answers.toml"
    path.write_text(dumps(plan))
    return path


def apply(lab, index: int, answers: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pvestrap", "apply", "--answers", str(answers), "--node",
            lab.node(index).name, *args]
    return lab.exec(index, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                    env={"SSH_CONNECTION": ""})


def etc_hash(lab, index: int) -> dict[str, str]:
    """The node's own /etc (its overlay's upper layer: every write to /etc in the node)."""
    folder = names.Layout(lab.prefix).node_dir(index) / "etc"
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def inet(lab, index: int, nic: str) -> list[str]:
    """NIC's addresses but the link-local ones."""
    out = lab.exec(index, ["ip", "-j", "addr", "show", "dev", nic]).stdout
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"]
            if a["scope"] != "link"]


def assert_untouched(lab, index: int, before: dict[str, str], interfaces: str) -> None:
    assert lab.node(index).path("/etc/network/interfaces").read_text() == interfaces
    assert etc_hash(lab, index) == before  # no corosync file, no backup left behind
    assert inet(lab, index, "eth0") == [f"{lab.node(index).address(0)}/24"]
    assert inet(lab, index, names.SPARE_NIC) == []


def test_a_cluster_on_a_new_network_on_the_spare_nics(lab, tmp_path):
    three = lab(nodes=3, links=1)
    three.start("sshd")
    plan = spare_plan(three)
    answers = write_answers(plan, tmp_path)
    before = {i: three.node(i).path("/etc/network/interfaces").read_text() for i in (1, 2, 3)}
    etc_before = etc_hash(three, 1)
    dry = apply(three, 1, answers, "--dry-run")
    assert dry.returncode == 0, dry.stdout
    assert f"+iface eth9 inet static\n+\taddress {NETWORK}.1/24" in dry.stdout
    assert inet(three, 1, names.SPARE_NIC) == [] and etc_hash(three, 1) == etc_before
    for index in (1, 2, 3):
        done = apply(three, index, answers, "--yes")
        assert done.returncode == 0, done.stdout
        assert "[applied] network:wait-address" in done.stdout, done.stdout
    for index in (1, 2, 3):
        node = three.node(index)
        assert node.path("/etc/network/interfaces").read_text() == \
            edit_interfaces(before[index], plan.node(node.name).interfaces)
        assert inet(three, index, names.SPARE_NIC) == [f"{NETWORK}.{index}/24"]
        assert inet(three, index, "eth0") == [f"{node.address(0)}/24"]
        quorum = three.exec(index, ["corosync-quorumtool", "-s"]).stdout
        assert re.search(r"^Quorate:\s+Yes", quorum, re.M), quorum
        assert re.search(r"^Nodes:\s+3$", quorum, re.M), quorum
        cfg = three.exec(index, ["corosync-cfgtool", "-s"]).stdout
        assert re.findall(r"addr\s*=\s*(\S+)", cfg) == [f"{NETWORK}.{index}"], cfg
        peers = three.exec(index, ["corosync-cfgtool", "-n"]).stdout
        assert sorted(re.findall(r"LINK: 0 udp \((\S+->\S+)\) enabled connected", peers)) == \
            [f"{NETWORK}.{index}->{NETWORK}.{i}" for i in (1, 2, 3) if i != index], peers
    etc = {i: etc_hash(three, i) for i in (1, 2, 3)}
    for index in (1, 2, 3):
        again = apply(three, index, answers, "--yes")
        assert again.returncode == 0, again.stdout
        assert "nothing to do" in again.stdout and "+ network:" not in again.stdout, again.stdout
    assert {i: etc_hash(three, i) for i in (1, 2, 3)} == etc


@pytest.mark.parametrize("how", ["rejected-stanza", "no-carrier"])
def test_a_failing_network_phase_puts_everything_back(lab, tmp_path, how):
    """rejected-stanza: ifreload cannot apply the stanza (its IPv6 address on a NIC whose IPv6
    is disabled: ifupdown2 exits 1, "cannot add address ... Permission denied")."""
    two = lab(nodes=2, links=1)
    if how == "no-carrier":
        two.impair(carrier="n1:eth9=off")
    else:
        sysctl = ["sysctl", "-w", f"net.ipv6.conf.{names.SPARE_NIC}.disable_ipv6=1"]
        assert two.exec(1, sysctl).returncode == 0
    plan = spare_plan(two, ipv6=how == "rejected-stanza")
    answers = write_answers(plan, tmp_path)
    interfaces = two.node(1).path("/etc/network/interfaces").read_text()
    before = etc_hash(two, 1)
    failed = apply(two, 1, answers, "--yes")
    step = "network:reload" if how == "rejected-stanza" else "network:wait-carrier"
    assert failed.returncode == 1, failed.stdout
    assert f"network phase failed at step {step}" in failed.stdout, failed.stdout
    assert "[undone] network:write-interfaces" in failed.stdout, failed.stdout
    assert "Traceback" not in failed.stdout
    assert_untouched(two, 1, before, interfaces)
    if how == "no-carrier":  # nothing was left half-done: with the cable back, apply works
        two.impair(carrier="n1:eth9=on")
        done = apply(two, 1, answers, "--yes")
        assert done.returncode == 0, done.stdout
        assert inet(two, 1, names.SPARE_NIC) == [f"{NETWORK}.1/24"]


def test_an_ipv6_address_another_node_has_fails_the_kernels_dad_and_is_rolled_back(lab,
                                                                                 tmp_path):
    """IPv6 has no probe of ours: the kernel's duplicate address detection marks the address
    dadfailed after the reload, network:wait-address fails, exit 1, everything put back."""
    two = lab(nodes=2, links=1)
    for argv in (["ip", "link", "set", names.SPARE_NIC, "up"],
                 ["ip", "addr", "add", f"{NETWORK6}1/64", "dev", names.SPARE_NIC, "nodad"]):
        assert two.exec(2, argv).returncode == 0
    answers = write_answers(spare_plan(two, ipv6=True), tmp_path)
    interfaces = two.node(1).path("/etc/network/interfaces").read_text()
    before = etc_hash(two, 1)
    failed = apply(two, 1, answers, "--yes")
    assert failed.returncode == 1, failed.stdout
    assert "network phase failed at step network:wait-address [link-address-in-use]" in \
        failed.stdout, failed.stdout
    assert "duplicate address detection" in failed.stdout
    assert_untouched(two, 1, before, interfaces)


def test_an_address_another_node_has_on_the_new_network_is_refused(lab, tmp_path):
    """Refused before any change (exit 2): the ARP probe hears n2 answer for n1's address."""
    two = lab(nodes=2, links=1)
    for argv in (["ip", "addr", "add", f"{NETWORK}.1/24", "dev", names.SPARE_NIC],
                 ["ip", "link", "set", names.SPARE_NIC, "up"]):
        assert two.exec(2, argv).returncode == 0
    answers = write_answers(spare_plan(two), tmp_path)
    interfaces = two.node(1).path("/etc/network/interfaces").read_text()
    before = etc_hash(two, 1)
    refused = apply(two, 1, answers, "--yes")
    assert refused.returncode == 2, refused.stdout
    assert f"{NETWORK}.1 is already used on eth9's network" in refused.stdout, refused.stdout
    assert "nothing was changed" in refused.stdout and "Traceback" not in refused.stdout
    mac = json.loads(two.exec(2, ["ip", "-j", "link", "show", names.SPARE_NIC]).stdout)[0]
    assert mac["address"] in refused.stdout, refused.stdout
    assert_untouched(two, 1, before, interfaces)
    link = json.loads(two.exec(1, ["ip", "-j", "link", "show", names.SPARE_NIC]).stdout)[0]
    assert "UP" not in link["flags"]  # set up for the probe only


def test_a_proxmox_cluster_on_a_new_network_on_the_spare_nics(lab, tmp_path):
    """The pve backend (Proxmox VE 9's real pmxcfs and pvecm): the same network phase first,
    then `pvecm create/add --link0` with the new addresses. The plan names no root password
    (pvecm add --use_ssh): n2 probes n1 over the new address first, through a responder it
    starts there over ssh."""
    two = lab(nodes=2, pve="9")
    plan = spare_plan(two)
    answers = write_answers(plan, tmp_path)
    for index in (1, 2):
        done = apply(two, index, answers, "--yes")
        assert done.returncode == 0, done.stdout
        assert "[applied] network:wait-address" in done.stdout, done.stdout
    assert f"network: probing link0 over the new address ({two.node(1).name}; responder " \
           "started over ssh)" in done.stdout, done.stdout
    for index in (1, 2):
        status = two.exec(index, ["pvecm", "status"])
        assert re.search(r"^Quorate:\s+Yes", status.stdout, re.M), status.stdout + status.stderr
        conf = two.node(index).path("/etc/pve/corosync.conf").read_text()
        assert sorted(re.findall(r"ring0_addr: (\S+)", conf)) == [f"{NETWORK}.1", f"{NETWORK}.2"]
        assert inet(two, index, "eth0") == [f"{two.node(index).address(0)}/24"]
        again = apply(two, index, answers, "--yes")
        assert again.returncode == 0 and "+ network:" not in again.stdout, again.stdout


def test_a_joiner_probes_the_member_over_the_new_address_before_joining(lab, tmp_path):
    """apply's recheck (issue 11, item 4), without a probe token: the preflight leaves link0's
    probes for later (the address is only planned); after the network phase configured it,
    apply starts a responder on the member it joins (n1, which created the cluster on the new
    network) over ssh, with a token of its own, probes n1 over the new address, stops the
    responder, and joins: n2 passes and joins. On n3, replies from port 5405 are dropped on
    eth9 (n1's responder now answers beside its running corosync): the recheck FAILs, exit 1,
    the cluster untouched (no corosync.conf), eth9 kept as configured; a rerun (its network
    phase plans nothing) probes again and FAILs again. No responder is left on n1."""
    three = lab(nodes=3, links=1)
    three.start("sshd")
    plan = spare_plan(three)
    answers = write_answers(plan, tmp_path)
    created = apply(three, 1, answers, "--yes")
    assert created.returncode == 0, created.stdout
    n1 = three.node(1).name
    assert f"no peer can answer probes over it yet ({n1} creates the cluster)" in created.stdout
    probing = f"network: probing link0 over the new address ({n1}; responder started over ssh)"
    joined = apply(three, 2, answers, "--yes")
    assert joined.returncode == 0, joined.stdout
    assert probing in joined.stdout and "not probed" not in joined.stdout, joined.stdout
    assert re.search(r"preflight: \d+ results, 0 FAIL", joined.stdout), joined.stdout
    drop = ["nft", "add table inet pp; add chain inet pp in { type filter hook input "
            "priority 0; }; add rule inet pp in iifname eth9 udp sport 5405 drop"]
    assert three.exec(3, drop).returncode == 0
    for attempt in (1, 2):
        failed = apply(three, 3, answers, "--yes")
        assert failed.returncode == 1, failed.stdout
        assert probing in failed.stdout, failed.stdout
        assert ("[applied] network:wait-address" in failed.stdout) == (attempt == 1)
        kept = (f"the network phase configured {NETWORK}.3/24 on eth9" if attempt == 1 else
                f"{NETWORK}.3/24 on eth9 stays configured as planned (by an earlier apply)")
        assert f"the cluster was not touched; {kept}" in failed.stdout, failed.stdout
        assert "Traceback" not in failed.stdout
        assert not three.node(3).path("/etc/corosync/corosync.conf").exists()
        assert inet(three, 3, names.SPARE_NIC) == [f"{NETWORK}.3/24"]
    agents = three.exec(1, ["pgrep", "-f", "responder --agent"])
    assert agents.returncode == 1, agents.stdout  # every responder apply started is gone
    quorum = three.exec(2, ["corosync-quorumtool", "-s"]).stdout
    assert re.search(r"^Quorate:\s+Yes", quorum, re.M), quorum
    assert re.search(r"^Nodes:\s+2$", quorum, re.M), quorum


def test_without_pvestrap_on_the_member_apply_says_so_and_joins(lab, tmp_path):
    """n1's ssh sessions find no pvestrap (its sshd gives them Debian's PATH only: exit 127):
    apply names it, with the fix, and joins without those probes, as it did before it could
    start a responder."""
    two = lab(nodes=2, links=1)
    two.start("sshd")
    answers = write_answers(spare_plan(two), tmp_path)
    assert apply(two, 1, answers, "--yes").returncode == 0
    two.stop("sshd", [1])
    config = two.node(1).path("/run/sshd-without-pvestrap.conf")
    config.write_text(re.sub(r"PATH=\S+", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                             two.node(1).path("/etc/ssh/sshd_config").read_text()))
    sshd = two.popen(1, ["/usr/sbin/sshd", "-D", "-f", "/run/sshd-without-pvestrap.conf"],
                     stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # bounded: until it listens
            if two.exec(1, ["ss", "-Htln", "sport = :22"]).stdout.strip():
                break
            time.sleep(0.1)
        joined = apply(two, 2, answers, "--yes")
    finally:
        sshd.terminate()
        sshd.wait()
    assert joined.returncode == 0, joined.stdout
    n1 = two.node(1).name
    assert f"network: link0 not probed over the new address: pvestrap not found on {n1} " \
           "(install it, or pass --token-file" in joined.stdout, joined.stdout
    quorum = two.exec(1, ["corosync-quorumtool", "-s"]).stdout
    assert re.search(r"^Nodes:\s+2$", quorum, re.M), quorum
