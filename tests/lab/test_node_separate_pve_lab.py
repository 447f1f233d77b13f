"""`pvestrap node separate` against Proxmox VE's REAL cluster stack (`lab up --pve 8|9`: real
pmxcfs, in local mode too, real Perl `pvecm delnode` on a staying member, real corosync), the
cluster built by `pvestrap apply`, and the separated node joined again by `pvestrap apply`.
Skipped, with the reason, for a release whose Proxmox sources are absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labtesting import QuorumWatcher, wait
from pvestrap.answers import dumps
from pvestrap.corosync.status import parse_quorum_status
from pvestrap.lab.lab import Lab

pytestmark = pytest.mark.lab

CONFS = ("/etc/pve/corosync.conf", "/etc/corosync/corosync.conf")
KNOWN = ("/root/.ssh/known_hosts", "/etc/pve/priv/known_hosts")
PVECM_LOCK = "/var/lock/pvecm.lock"  # pve-cluster's API2/ClusterConfig.pm $local_cluster_lock
# Holds PVECM_LOCK (flock, as PVE::Tools::lock_file takes it) until its stdin closes.
HOLD = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('locked', flush=True); sys.stdin.read()")


def pvestrap(lab: Lab, index: int, *args: str) -> subprocess.CompletedProcess:
    return lab.exec(index, [sys.executable, "-m", "pvestrap", *args], timeout=300)


def build(lab, tmp_path: Path, release: str) -> tuple[Lab, Path]:
    three = lab(nodes=3, pve=release)
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))
    for index in (1, 2, 3):
        done = pvestrap(three, index, "apply", "--answers", str(answers), "--node",
                        three.node(index).name, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
    return three, answers


def status(lab: Lab, index: int):
    out = lab.exec(index, ["pvecm", "status"])
    return parse_quorum_status(out.stdout, "pvecm status") if out.returncode == 0 else None


def all_quorate(lab: Lab, indexes, expected: int) -> bool:
    found = [status(lab, i) for i in indexes]
    return all(q and q.quorate and q.expected_votes == expected and len(q.nodes_only) == expected
               for q in found)


def snapshot(lab: Lab, name: str) -> dict[str, bytes]:
    """Every node's corosync.conf (both), root's and the cluster's known_hosts, and n1's
    /etc/pve/nodes/NAME (each file's bytes)."""
    out = {}
    for node in lab.nodes:
        for path in CONFS + KNOWN:
            file = node.path(path)
            out[f"{node.name}:{path}"] = file.read_bytes() if file.exists() else b"-"
    out.update(tree(lab, 1, f"/etc/pve/nodes/{name}"))
    return out


def tree(lab: Lab, index: int, folder: str) -> dict[str, bytes]:
    root = lab.node(index).path(folder)
    assert root.is_dir(), folder
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def knows(lab: Lab, index: int, path: str, host: str) -> bool:
    return lab.exec(index, ["ssh-keygen", "-F", host, "-f", path]).returncode == 0


def fail_midway_on_this_node(three: Lab, conf_before: bytes, authkey_before: bytes) -> None:
    """The aside folder cannot be made (a file is in the way) after pve-cluster and corosync
    stopped and pmxcfs runs in local mode -> undone in reverse: exit 1, n3 back in the quorate
    3-node cluster, every file as it was. n3's /var is an overlay over this machine's (private
    upper layer): what rm removes there is only hidden in n3. Checked first, never assumed."""
    n3 = three.node(3)
    mounts = three.exec(3, ["cat", "/proc/self/mounts"]).stdout.splitlines()
    assert any(line.split()[1:3] == ["/var", "overlay"] for line in mounts), mounts
    blocker = n3.path("/var/lib/pvestrap/separated")
    planted = three.exec(3, ["sh", "-c", "rm -rf /var/lib/pvestrap/separated && mkdir -p "
                             "/var/lib/pvestrap && echo in-the-way > /var/lib/pvestrap/separated"])
    assert planted.returncode == 0 and blocker.is_file(), planted.stderr
    failed = pvestrap(three, 3, "node", "separate", "--yes")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "[applied] pmxcfs-local" in failed.stderr, failed.stderr
    for step in ("pmxcfs-local", "stop-pve-cluster"):
        assert f"[undone] {step}" in failed.stderr, failed.stderr
    assert "[applied] delnode" not in failed.stderr
    for index in (1, 2, 3):
        quorum = status(three, index)
        assert quorum and quorum.quorate and quorum.expected_votes == 3
        assert three.node(index).path("/etc/pve/corosync.conf").read_bytes() == conf_before
    assert n3.path("/etc/corosync/corosync.conf").read_bytes() == conf_before
    assert n3.path("/etc/corosync/authkey").read_bytes() == authkey_before
    three.exec(3, ["rm", "/var/lib/pvestrap/separated"], check=True)


def fail_on_the_cluster_side(three: Lab) -> None:
    """`pvecm delnode` fails on n1 (another pvecm holds pve-cluster's local lock there: real
    pvecm gives up after 10 s) after n3 left and the cluster side began -> n1's
    /etc/pve/nodes/n3 and every known_hosts back, n3 back in the cluster; n1 and n2 quorate at
    every 100 ms sample, every corosync.conf byte-identical."""
    n3 = three.node(3)
    before = snapshot(three, n3.name)
    holder = three.popen(1, [sys.executable, "-c", HOLD, PVECM_LOCK], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with QuorumWatcher(three, 1, None) as w1, QuorumWatcher(three, 2, None) as w2:
            failed = pvestrap(three, 3, "node", "separate", "--yes", "--json")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    doc = json.loads(failed.stdout)
    assert doc["status"] == "rolled-back", doc
    failure = doc["failure"]
    assert failure["step"] == "delnode" and failure["undo_failures"] == [], failure
    assert "pvecm.lock" in failure["message"], failure
    assert failure["undone"][:3] == ["known-hosts", "nodes-dir-aside", "var-lib-corosync-aside"]
    assert failure["undone"][-2:] == ["pmxcfs-local", "stop-pve-cluster"], failure
    assert w1.samples > 0 and w2.samples > 0 and w1.bad == [] and w2.bad == []
    assert wait(lambda: all_quorate(three, (1, 2, 3), 3), 60)
    assert snapshot(three, n3.name) == before
    assert three.exec(1, ["sh", "-c", "ls -A /var/lib/pvestrap/removed 2>/dev/null"]
                      ).stdout == ""


def lose_the_member_midway(three: Lab) -> None:
    """n1 stops answering n3's SSH (nftables in n1 drops n3's TCP 22, the connections already
    open included) once n3 has left (pve-cluster and corosync stopped), before the cluster side
    -> the first cluster-side step times out, everything on n3 is undone: exit 1, n3 back in the
    cluster; n1 and n2 quorate at every 100 ms sample, every file as it was."""
    n3 = three.node(3)
    before = snapshot(three, n3.name)
    cut = ("add table inet sepcut; add chain inet sepcut i { type filter hook input priority "
           f"-10; }}; add rule inet sepcut i ip saddr {n3.address(0)} tcp dport 22 drop")
    run = three.popen(3, [sys.executable, "-m", "pvestrap", "node", "separate", "--yes",
                          "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with QuorumWatcher(three, 1, None) as w1, QuorumWatcher(three, 2, None) as w2:
            seen = []
            for line in run.stderr:
                seen.append(line)
                if line.startswith("[applied] stop-pve-cluster"):
                    three.exec(1, ["nft", cut], check=True)
                    break
            out, err = run.communicate(timeout=300)
    finally:
        three.exec(1, ["nft", "delete table inet sepcut"])
        if run.poll() is None:
            run.kill()
    err = "".join(seen) + err
    assert run.returncode == 1, out + err
    failure = json.loads(out)["failure"]
    assert failure["step"] == "nodes-dir-aside" and failure["cause"] == "member-unreachable"
    assert failure["undone"][-2:] == ["pmxcfs-local", "stop-pve-cluster"], failure
    assert failure["undo_failures"] == [], failure
    assert w1.samples > 0 and w2.samples > 0 and w1.bad == [] and w2.bad == []
    assert wait(lambda: all_quorate(three, (1, 2, 3), 3), 60)
    assert snapshot(three, n3.name) == before


def separate(three: Lab) -> None:
    """The separation, then the cluster side checked as `node remove` leaves it."""
    n3 = three.node(3)
    conf_before = n3.path("/etc/pve/corosync.conf").read_bytes()
    authkey_before = n3.path("/etc/corosync/authkey").read_bytes()
    files_before = tree(three, 1, f"/etc/pve/nodes/{n3.name}")
    # root's known_hosts on the staying members names n3 (the cluster-wide
    # /etc/pve/priv/known_hosts only has what `pvecm create` merged: since pve-cluster 8.1 each
    # node's host key is in /etc/pve/nodes/NAME/ssh_known_hosts, PVE/Cluster/Setup.pm)
    hosts = (n3.name, n3.address(0))
    assert all(knows(three, i, KNOWN[0], h) for i in (1, 2) for h in hosts)

    done = pvestrap(three, 3, "node", "separate", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    for step in ("stop-pve-cluster", "pmxcfs-local", "pve-conf-aside", "etc-corosync-aside",
                 "stop-local-pmxcfs", "start-pve-cluster", "var-lib-corosync-aside",
                 "nodes-dir-aside", "known-hosts", "delnode", "verify"):
        assert f"[applied] {step}" in done.stderr, done.stderr
    aside = done.stdout.split("its old files are in ")[1].split(";")[0]
    kept = done.stdout.split(f"/etc/pve/nodes/{n3.name} of the cluster is now ")[1].split()[0]
    member, kept_path = kept.split(":", 1)

    # n3: standalone pmxcfs (pve-cluster), no corosync, /etc/pve writable, old files kept aside
    assert three.exec(3, ["mountpoint", "-q", "/etc/pve"]).returncode == 0
    assert three.exec(3, ["systemctl", "is-active", "pve-cluster"]).returncode == 0
    assert three.exec(3, ["systemctl", "is-active", "corosync"]).returncode == 3
    assert three.exec(3, ["corosync-quorumtool", "-s"]).returncode not in (0, 2)
    assert not n3.path("/etc/pve/corosync.conf").exists()
    assert list(n3.path("/etc/corosync").iterdir()) == []
    assert list(n3.path("/var/lib/corosync").iterdir()) == []
    wrote = three.exec(3, ["sh", "-c", "echo standalone > /etc/pve/separated-test"])
    assert wrote.returncode == 0, wrote.stderr
    assert n3.path(f"{aside}/etc/pve/corosync.conf").read_bytes() == conf_before
    assert n3.path(f"{aside}/etc/corosync/authkey").read_bytes() == authkey_before
    assert n3.path(f"{aside}/etc/corosync/corosync.conf").read_bytes() == conf_before

    # n1, n2: a quorate 2-node cluster without n3, its nodes folder kept aside on n1, its keys
    # in no known_hosts
    assert member == three.node(1).name
    assert tree(three, 1, kept_path) == files_before
    for index in (1, 2):
        quorum = status(three, index)
        assert quorum and quorum.quorate and quorum.expected_votes == 2
        assert {m.nodeid for m in quorum.nodes_only} == {1, 2}
        conf = three.node(index).path("/etc/pve/corosync.conf").read_text()
        assert f"name: {n3.name}\n" not in conf and "config_version: 4" in conf
        assert not three.node(index).path(f"/etc/pve/nodes/{n3.name}").exists()
        for path in KNOWN:
            assert not any(knows(three, index, path, h) for h in hosts), (index, path)


@pytest.mark.parametrize("release", ["8", "9"])
def test_separate_a_real_proxmox_node_and_join_it_again(lab, tmp_path, release):
    three, answers = build(lab, tmp_path, release)
    n3 = three.node(3)
    fail_midway_on_this_node(three, n3.path("/etc/pve/corosync.conf").read_bytes(),
                             n3.path("/etc/corosync/authkey").read_bytes())
    fail_on_the_cluster_side(three)
    lose_the_member_midway(three)
    separate(three)

    # Rejoin: the separated node joins again with `pvestrap apply` (real pvecm add).
    joined = pvestrap(three, 3, "apply", "--answers", str(answers), "--node", n3.name, "--yes")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    assert wait(lambda: all_quorate(three, (1, 2, 3), 3), 60)
    conf = three.node(1).path("/etc/pve/corosync.conf").read_bytes()
    assert f"name: {n3.name}\n".encode() in conf
    for index in (2, 3):
        assert three.node(index).path("/etc/pve/corosync.conf").read_bytes() == conf
    assert three.exec(1, ["test", "-d", f"/etc/pve/nodes/{n3.name}"]).returncode == 0
