"""`pvestrap node separate --expected-votes N` against Proxmox VE's REAL cluster stack (`lab up
--pve`: real pmxcfs, the Perl `pvecm create`, `pvecm add --use_ssh 1`, `pvecm expected` and
`pvecm delnode`, real corosync): the admin guide's "Separate A Node Without Reinstalling" on a
2-node cluster, where the node that stays loses quorum once the other leaves and the guide's
workaround, `pvecm expected 1` on the remaining node, lets `pvecm delnode` through. Skipped,
with the reason, where Proxmox's sources are absent."""

from __future__ import annotations

import sys

import pytest

from labtesting import wait
from pvelab import cfs_writable, form, pve_status

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
CONFS = ("/etc/pve/corosync.conf", "/etc/corosync/corosync.conf")
KNOWN = ("/root/.ssh/known_hosts", "/etc/pve/priv/known_hosts")


def separate(lab, *args: str):
    return lab.exec(2, [*PVESTRAP, "node", "separate", "--yes", *args], timeout=400)


def snapshot(lab) -> dict[str, bytes]:
    """Both nodes' corosync.conf (both), authkey and known_hosts (each file's bytes)."""
    out = {}
    for node in lab.nodes:
        for path in (*CONFS, "/etc/corosync/authkey", *KNOWN):
            file = node.path(path)
            out[f"{node.name}:{path}"] = file.read_bytes() if file.exists() else b"-"
    return out


def both_quorate(lab) -> bool:
    found = [pve_status(lab, i) for i in (1, 2)]
    return all(s and s.quorate and s.expected_votes == 2 for s in found)


@pytest.mark.parametrize("release", ["8", "9"])
def test_separate_from_a_two_node_cluster_lowers_the_expected_votes(lab, release):
    two = form(lab, 2, release)
    n1, n2 = two.node(1), two.node(2)
    before = snapshot(two)
    conf_before = n2.path(CONFS[0]).read_bytes()
    assert b"config_version: 2\n" in conf_before

    # Without --expected-votes: n1 alone would have 1 of the 2 votes it needs -> refused.
    refused = separate(two)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "[separation-loses-quorum]" in refused.stdout, refused.stdout
    assert "--expected-votes 1" in refused.stdout
    assert "nothing was changed" in refused.stderr
    # Out of bounds (1 vote stays: 1 is the only majority-making count) -> bad input.
    bad = separate(two, "--expected-votes", "2")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "--expected-votes 2 is outside 1" in bad.stderr and "Traceback" not in bad.stderr
    assert snapshot(two) == before and both_quorate(two)

    done = separate(two, "--expected-votes", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    applied = [line.split()[1] for line in done.stderr.splitlines()
               if line.startswith("[applied] ")]
    assert applied == ["stop-pve-cluster", "pmxcfs-local", "pve-conf-aside",
                       "etc-corosync-aside", "stop-local-pmxcfs", "start-pve-cluster",
                       "var-lib-corosync-aside", "expected-votes", "nodes-dir-aside",
                       "known-hosts", "delnode", "verify"], done.stderr
    assert f"ssh root@{n1.name} 'pvecm expected 1'" in done.stdout, done.stdout
    aside = done.stdout.split("its old files are in ")[1].split(";")[0]

    # n1: a quorate one-node cluster (votequorum: 1 expected vote) without n2; pmxcfs takes
    # writes; n2's node folder kept aside there; n2 in no known_hosts.
    status = pve_status(two, 1)
    assert status and status.quorate and status.expected_votes == 1
    assert [m.nodeid for m in status.nodes_only] == [1]
    assert wait(lambda: cfs_writable(two, 1), 30)
    for path in CONFS:
        conf = n1.path(path).read_text()
        assert f"name: {n2.name}\n" not in conf and "config_version: 3\n" in conf
    assert not n1.path(f"/etc/pve/nodes/{n2.name}").exists()
    for path in KNOWN:
        assert two.exec(1, ["ssh-keygen", "-F", n2.name, "-f", path]).returncode == 1

    # n2: standalone pmxcfs, writable, no corosync; its old files kept aside byte for byte.
    assert two.exec(2, ["systemctl", "is-active", "pve-cluster"]).returncode == 0
    assert two.exec(2, ["systemctl", "is-active", "corosync"]).returncode == 3
    assert not n2.path(CONFS[0]).exists()
    assert list(n2.path("/etc/corosync").iterdir()) == []
    wrote = two.exec(2, ["sh", "-c", "echo standalone > /etc/pve/separated-test"])
    assert wrote.returncode == 0, wrote.stderr
    for path in CONFS:
        assert n2.path(f"{aside}{path}").read_bytes() == conf_before
    assert n2.path(f"{aside}/etc/corosync/authkey").read_bytes() == \
        before[f"{n2.name}:/etc/corosync/authkey"]
