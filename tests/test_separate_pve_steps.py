"""`node separate` on Proxmox VE plans the cluster side as `node remove` does it (one owner:
pvestrap/apply/removal.py), on the first staying member: /etc/pve/nodes/NAME kept aside there,
the leaving node's keys out of every staying member's known_hosts and, once, out of the
cluster-wide /etc/pve/priv/known_hosts, then `pvecm delnode` there. Run for real in
tests/lab/test_node_separate_pve_lab.py."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from pvestrap.apply import removal as rm
from pvestrap.apply import separate as sp
from pvestrap.apply.corosync_service import SYSTEMD
from pvestrap.apply.links import Cluster, MemberHost, PhaseStep, ShellOps
from pvestrap.checks.removal import vote_plan
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed
from pvestrap.paths import PVE_KNOWN_HOSTS
from pvestrap.recorded import RecordingSystem
from pvestrap.verify import Observed

CONF = "".join(
    ["nodelist {\n"] + [f"  node {{\n    name: pve{i}\n    nodeid: {i}\n    quorum_votes: 1\n"
                        f"    ring0_addr: 10.254.0.{i}\n  }}\n" for i in (1, 2, 3)] +
    ["}\n\nquorum {\n  provider: corosync_votequorum\n}\n\ntotem {\n  cluster_name: lab\n"
     "  config_version: 5\n  version: 2\n}\n"])


def leaving(name: str, members: tuple[MemberHost, ...]) -> rm.Removal:
    conf = CorosyncConf.parse(CONF)
    target = next(n for n in conf.nodes if n.name == name)
    return rm.Removal(name, Cluster(conf, CONF, Observed(), members), target,
                      conf.remove_node(name).bump_version(), vote_plan(conf, name, None), "pve")


def test_separate_plans_the_cluster_side_on_the_first_staying_member():
    r = leaving("pve1", (MemberHost("pve2", 2, "10.254.0.2"), MemberHost("pve3", 3, "10.254.0.3")))
    steps = sp.pve_steps(sp.Separation(r, SYSTEMD))
    ids = [s.id for s in steps]
    assert ids[-4:] == ["nodes-dir-aside", "known-hosts", "delnode", "verify"]
    aside, known, delnode = steps[-4:-1]
    assert r.cluster.writer.name == "pve2" == delnode.member.name
    [move] = aside.plan(None)
    assert move.argv[:2] == ("ssh", "root@pve2")
    assert f"mv -T /etc/pve/nodes/pve1 {r.aside} && echo moved" in move.argv[2]
    assert move.undo_argv == ("ssh", "root@pve2", shlex.join(("mv", "-T", r.aside,
                                                              "/etc/pve/nodes/pve1")))
    assert "pve2:" + r.aside in aside.description
    assert PVE_KNOWN_HOSTS in known.files(r.cluster.members[0])
    assert PVE_KNOWN_HOSTS not in known.files(r.cluster.members[1])
    assert [a.argv[1] for a in known.plan(None)] == ["root@pve2", "root@pve3"]


def test_remove_does_the_cluster_side_here():
    r = leaving("pve3", (MemberHost("pve2", 2, "10.254.0.2"),
                         MemberHost("pve1", 1, "10.254.0.1", local=True)))
    assert r.cluster.writer.name == "pve1"
    known = rm.KnownHostsStep(r)
    assert PVE_KNOWN_HOSTS in known.files(r.cluster.members[1])
    assert PVE_KNOWN_HOSTS not in known.files(r.cluster.members[0])


def test_the_staying_members_reload_once_on_the_first_of_them_through_the_links_ops():
    """One owner for where the reload runs (links.ShellOps on Cluster.writer): separate, whose
    cluster holds only the staying members, reloads on the first of them over SSH; remove, run on
    a member, reloads here."""
    r = leaving("pve1", (MemberHost("pve2", 2, "10.254.0.2"), MemberHost("pve3", 3, "10.254.0.3")))
    sep = sp.Separation(dataclasses.replace(r, backend="corosync"), SYSTEMD)
    system = RecordingSystem()
    [phase] = [s for s in sp.steps(system, sep) if isinstance(s, PhaseStep)]
    assert type(phase.ops) is ShellOps
    phase.ops.reload()
    [reload] = system.commands
    assert reload[0] == "ssh" and reload[-1] == "corosync-cfgtool -R"
    assert reload[reload.index("--") - 1] == "root@10.254.0.2"

    here = leaving("pve3", (MemberHost("pve2", 2, "10.254.0.2"),
                            MemberHost("pve1", 1, "10.254.0.1", local=True)))
    system = RecordingSystem()
    ShellOps(system, here.cluster).reload()
    assert system.commands == [("sh", "-c", "corosync-cfgtool -R")]


def test_lowered_expected_votes_wait_for_pmxcfs_quorum_on_the_member_before_delnode():
    """`pvecm expected 1` returns before pmxcfs on that member takes quorum; a `pvecm delnode`
    run in between dies with "cluster not ready - no quorum?" (the real-PVE lab test failed so
    once ssh sessions got fast). The step waits until /etc/pve/local is writable there."""
    r = dataclasses.replace(leaving("pve1", (MemberHost("pve2", 2, "10.254.0.2"),)),
                            expected_votes=1)
    steps = sp.pve_steps(sp.Separation(r, SYSTEMD))
    [votes] = [s for s in steps if s.id == "expected-votes"]
    assert votes.writable == rm.PVE_LOCAL
    assert "wait up to 30 s for pve2's /etc/pve/local writable (pmxcfs quorate)" in [str(a) for a in
                                                                     votes.plan(None)]
    modes = iter(["555\n", "555\n", "755\n"])  # read-only twice, then pmxcfs is quorate
    system = RecordingSystem().on(("ssh",), lambda s, argv, i: (
        (0, next(modes), "") if "stat -c %a /etc/pve/local" in argv[-1] else (0, "", "")))
    votes.apply(system)
    remote = [c[-1] for c in system.commands if c[0] == "ssh"]
    assert remote == ["pvecm expected 1"] + ["stat -c %a /etc/pve/local"] * 3

    stuck = RecordingSystem().on(("ssh",), lambda s, argv, i: (0, "555\n", ""))
    with pytest.raises(OperationFailed, match="stayed read-only 30 s") as failed:
        votes.apply(stuck)
    assert failed.value.code == "cfs-not-quorate"
