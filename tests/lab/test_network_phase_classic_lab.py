"""apply's network phase on a lab node that has only classic ifupdown: real `ifup eth9`, real
`ifdown --force eth9` on rollback (issue 11, item 2). Nothing here is mocked.

Debian's `ifupdown` conflicts with `ifupdown2`, which this machine (and every lab node, which
shares the host's /usr) has installed; it is not installed here. Its package is downloaded
(`apt-get download ifupdown`) and unpacked (`dpkg -x`) into a temporary folder, and inside the
node's own mount namespace a read-only overlay goes over /usr/sbin (/sbin is a link to it): the
classic ifup/ifdown/ifquery on top, and a whiteout hiding ifupdown2's ifreload, which is how
apply tells the two apart (network_phase.reload_argvs: no /usr/sbin/ifreload, an /sbin/ifup).
The node then looks like a classic-ifupdown machine to pvestrap and to anything it runs. Classic
ifupdown keeps its state in /run/network/ifstate*: the node's own /run (the lab binds one per
node), never the host's, which is checked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pvestrap.lab import names
from tests.lab.test_network_phase_lab import (
    NETWORK, apply, assert_untouched, etc_hash, inet, spare_plan, write_answers)

pytestmark = pytest.mark.lab

CLASSIC = ("ifup", "ifdown", "ifquery")
# The folders the package ships, which classic ifup runs with run-parts (it fails without them);
# not its two scripts in them, which are for systemd-resolved (no node runs it).
HOOKS = ("if-pre-up.d", "if-up.d", "if-down.d", "if-post-down.d")


@pytest.fixture(scope="module")
def classic_sbin(tmp_path_factory) -> Path:
    """A folder to lay over /usr/sbin: classic ifupdown's programs and a whiteout on ifreload."""
    work = tmp_path_factory.mktemp("ifupdown")
    try:
        fetched = subprocess.run(["apt-get", "download", "ifupdown"], cwd=work, timeout=120,
                                 capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"classic ifupdown's package could not be downloaded: {exc}")
    debs = sorted(work.glob("ifupdown_*.deb"))
    if fetched.returncode != 0 or not debs:
        pytest.skip("classic ifupdown's package could not be downloaded (`apt-get download "
                    f"ifupdown`, exit {fetched.returncode}): {fetched.stderr.strip()[-300:]}")
    subprocess.run(["dpkg", "-x", str(debs[0]), str(work / "x")], check=True)
    layer = work / "sbin"
    layer.mkdir()
    for program in CLASSIC:
        os.rename(work / "x/sbin" / program, layer / program)  # ifdown/ifquery: links to ifup
    os.mknod(layer / "ifreload", 0o600 | 0o020000, os.makedev(0, 0))  # overlayfs whiteout
    return layer


def make_classic(lab, index: int, layer: Path) -> None:
    """Lay LAYER over the node's /usr/sbin, in its mount namespace only, and add the package's
    hook folders to the node's own /etc."""
    hooks = ["mkdir", "-p", *(f"/etc/network/{hook}" for hook in HOOKS)]
    assert lab.exec(index, hooks).returncode == 0
    mount = ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={layer}:/usr/sbin",
             "/usr/sbin"]
    done = lab.exec(index, mount)
    assert done.returncode == 0, done.stderr
    assert lab.exec(index, ["test", "-e", "/usr/sbin/ifreload"]).returncode == 1
    assert os.path.exists("/usr/sbin/ifreload")  # the host's is untouched
    version = lab.exec(index, ["/sbin/ifup", "--version"])
    assert "ifup version 0." in version.stdout, version.stdout + version.stderr


def ifstate(lab, index: int) -> str:
    """Classic ifupdown's record of eth9 in the node's /run/network ('' if none)."""
    path = lab.node(index).path(f"/run/network/ifstate.{names.SPARE_NIC}")
    return path.read_text().strip() if path.exists() else ""


def host_ifstate() -> list[str]:
    return sorted(p for p in os.listdir("/run/network") if p.startswith("ifstate")) \
        if os.path.isdir("/run/network") else []


def test_classic_ifup_brings_the_stanza_up_and_ifdown_rolls_it_back(lab, tmp_path,
                                                                     classic_sbin):
    """No carrier on n1's eth9: the write and `ifup eth9` succeed, network:wait-carrier fails,
    the undo runs `ifdown --force eth9` with the new file still in place, puts the file back,
    and the addresses are as before. With the cable back the same apply brings eth9 up with
    classic ifup, and the address waits pass; a rerun has nothing to do."""
    two = lab(nodes=2, links=1)
    make_classic(two, 1, classic_sbin)
    host_before = host_ifstate()
    answers = write_answers(spare_plan(two), tmp_path)
    interfaces = two.node(1).path("/etc/network/interfaces").read_text()
    before = etc_hash(two, 1)
    two.impair(carrier="n1:eth9=off")
    dry = apply(two, 1, answers, "--dry-run")
    assert dry.returncode == 0, dry.stdout
    assert f"ifup {names.SPARE_NIC}" in dry.stdout and "ifreload" not in dry.stdout, dry.stdout
    failed = apply(two, 1, answers, "--yes")
    assert failed.returncode == 1, failed.stdout
    assert "[applied] network:reload" in failed.stdout, failed.stdout
    assert "network phase failed at step network:wait-carrier" in failed.stdout, failed.stdout
    assert "[undone] network:write-interfaces" in failed.stdout, failed.stdout
    assert "Traceback" not in failed.stdout
    assert_untouched(two, 1, before, interfaces)
    assert ifstate(two, 1) == ""  # ifdown took eth9 out of the node's state
    two.impair(carrier="n1:eth9=on")
    done = apply(two, 1, answers, "--yes")
    assert done.returncode == 0, done.stdout
    assert "[applied] network:wait-address" in done.stdout, done.stdout
    assert inet(two, 1, names.SPARE_NIC) == [f"{NETWORK}.1/24"]
    assert inet(two, 1, "eth0") == [f"{two.node(1).address(0)}/24"]
    assert ifstate(two, 1) == names.SPARE_NIC
    again = apply(two, 1, answers, "--yes")
    assert again.returncode == 0 and "+ network:" not in again.stdout, again.stdout
    assert host_ifstate() == host_before  # the host's /run/network is not classic's


def test_a_stanza_classic_ifup_rejects_is_rolled_back(lab, tmp_path, classic_sbin):
    """An IPv6 address on a NIC whose IPv6 is disabled: classic `ifup eth9` exits 1
    (`ip -6 addr add` is refused), network:reload fails, the undo's `ifdown --force eth9` and
    the old file put everything back."""
    two = lab(nodes=2, links=1)
    make_classic(two, 1, classic_sbin)
    sysctl = ["sysctl", "-w", f"net.ipv6.conf.{names.SPARE_NIC}.disable_ipv6=1"]
    assert two.exec(1, sysctl).returncode == 0
    answers = write_answers(spare_plan(two, ipv6=True), tmp_path)
    interfaces = two.node(1).path("/etc/network/interfaces").read_text()
    before = etc_hash(two, 1)
    failed = apply(two, 1, answers, "--yes")
    assert failed.returncode == 1, failed.stdout
    assert "network phase failed at step network:reload" in failed.stdout, failed.stdout
    assert f"`ifup {names.SPARE_NIC}` exited 1" in failed.stdout, failed.stdout
    assert "[undone] network:write-interfaces" in failed.stdout, failed.stdout
    assert "Traceback" not in failed.stdout
    assert_untouched(two, 1, before, interfaces)
    assert ifstate(two, 1) == ""
