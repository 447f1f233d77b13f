"""The real corosync as the oracle: `corosync -t -c FILE` accepts what CorosyncConf writes and
rejects what lint rejects.

`corosync -t` only passes where one of the nodes' addresses is local, so it runs inside a fresh
network namespace whose loopback holds node 1's link-0 address (10.254.0.1/32). What it needs
besides (checked with strace on corosync 3.1.7): with crypto on it reads /etc/corosync/authkey,
and libqb writes its blackbox to /dev/shm (removed at exit); nothing in /var/lib/corosync or
/run. So each run gets a private mount namespace with a throw-away key folder bound over
/etc/corosync and a tmpfs over /dev/shm; the machine's own files are never touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.lint import lint
from pvestrap.errors import ValidationFailed
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node

LOCAL = "10.254.0.1"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: corosync -t runs in its own network and mount namespace"
    for tool, package in (("corosync", "corosync"), ("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    return None


pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))]


@pytest.fixture(scope="module")
def corosync_t(tmp_path_factory):
    """corosync_t(text) -> (exit code, output) of `corosync -t` in namespace pvs-ct-<random>."""
    ns = "pvs-ct-" + secrets.token_hex(4)
    keys = tmp_path_factory.mktemp("corosync-etc")
    key = keys / "authkey"
    key.write_bytes(secrets.token_bytes(256))
    key.chmod(0o400)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", f"{LOCAL}/32", "dev", "lo"], check=True)
        folder = tmp_path_factory.mktemp("corosync-t")

        def run(text: str) -> tuple[int, str]:
            path = folder / f"{secrets.token_hex(4)}.conf"
            path.write_text(text)
            script = ('mount --bind "$1" /etc/corosync && mount -t tmpfs tmpfs /dev/shm && '
                      'exec corosync -t -c "$2"')
            done = subprocess.run(
                ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                 "--", "sh", "-c", script, "sh", str(keys), str(path)],
                capture_output=True, text=True, timeout=60)
            return done.returncode, done.stdout + done.stderr

        yield run
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def plan_3x2() -> ClusterPlan:
    return ClusterPlan(
        "lab-ct",
        tuple(Node(f"n{i}", i, {0: f"10.254.0.{i}", 1: f"10.254.1.{i}"}) for i in (1, 2, 3)),
        (Link(0, "10.254.0.0/24", 20), Link(1, "10.254.1.0/24", 10)),
        pve_version="9.2")


def created() -> CorosyncConf:
    return CorosyncConf.create(plan_3x2())


EDITS = {
    "create": lambda c: c,
    "add_node": lambda c: c.add_node("n4", {0: "10.254.0.4", 1: "10.254.1.4"}).bump_version(),
    "add_link_ipv6": lambda c: c.add_link(
        2, {"n1": "fd5e:c7::1", "n2": "fd5e:c7::2", "n3": "fd5e:c7::3"}, 30).bump_version(),
    "remove_and_move": lambda c: c.remove_node("n3").set_link_addresses(
        1, {"n2": "10.254.1.20"}).set_priority(0, 0).bump_version(),
}


@pytest.mark.parametrize("name", sorted(EDITS))
def test_corosync_accepts_what_the_facade_writes(corosync_t, name):
    conf = EDITS[name](created())
    for text in {conf.text(), conf.canonical()}:
        code, output = corosync_t(text)
        assert code == 0, output
        assert lint(text) == []


def test_the_oracle_needs_a_local_node_address(corosync_t):
    """A control: the same file with no local address fails, so a pass above means something."""
    text = created().text().replace(f"ring0_addr: {LOCAL}\n", "ring0_addr: 10.254.0.9\n")
    code, output = corosync_t(text)
    assert code != 0 and "No valid name found for local host" in output


def test_duplicate_nodeid_rejected_by_corosync_and_by_lint(corosync_t):
    text = created().text().replace("nodeid: 3", "nodeid: 1")
    code, output = corosync_t(text)
    assert code != 0 and "Nodeid 1 appears twice" in output
    found = [f for f in lint(text) if f.code == "nodeid-duplicate"]
    assert [(f.severity, f.subject) for f in found] == [(Severity.FAIL, "nodelist.node[2].nodeid")]
    with pytest.raises(ValidationFailed):  # and the facade never writes one
        created().add_node("n4", {0: "10.254.0.4", 1: "10.254.1.4"}, nodeid=2)


@pytest.mark.parametrize("old,new", [("linknumber: 1", "linknumber: 8"),
                                     ("ring1_addr", "ring8_addr")])
def test_link_number_8_rejected_by_corosync_and_by_lint(corosync_t, old, new):
    text = created().text().replace(old, new)
    code, output = corosync_t(text)
    assert code != 0 and "bigger than allowed maximum 7" in output
    assert "link-number-out-of-range" in {f.code for f in lint(text)
                                          if f.severity is Severity.FAIL}
