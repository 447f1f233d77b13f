"""The removal preflight's pure parts: membership, offline evidence, vote math with and without a
QDevice, --expected-votes bounds, guests and HA rules (checks/removal.py)."""

from __future__ import annotations

import pytest

from pvestrap.apply.removal import refuse_expected_votes
from pvestrap.checks import removal as r
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import parse_cfgtool_status, parse_quorum_status
from pvestrap.errors import UserError


def conf_text(nodes: int, device: str = "") -> str:
    body = "".join(f"  node {{\n    name: n{i}\n    nodeid: {i}\n    quorum_votes: 1\n"
                   f"    ring0_addr: 10.0.0.{i}\n  }}\n" for i in range(1, nodes + 1))
    return (f"nodelist {{\n{body}}}\n\nquorum {{\n  provider: corosync_votequorum\n{device}}}\n\n"
            "totem {\n  cluster_name: c\n  config_version: 4\n  interface {\n    linknumber: 0\n"
            "  }\n  version: 2\n}\n")


def quorum(present: list[int], expected: int, quorate: bool, qdevice: int = 0):
    rows = "".join(f"         {i}          1 n{i}{' (local)' if i == present[0] else ''}\n"
                   for i in present)
    if qdevice:
        rows += f"         0          {qdevice} Qdevice\n"
    total = len(present) + qdevice
    return parse_quorum_status(
        "Quorum information\n------------------\nDate:             x\nQuorum provider:  "
        f"corosync_votequorum\nNodes:            {len(present)}\nNode ID:          "
        f"{present[0]}\nRing ID:          1.8\nQuorate:          {'Yes' if quorate else 'No'}\n\n"
        "Votequorum information\n----------------------\n"
        f"Expected votes:   {expected}\nHighest expected: {expected}\nTotal votes:      {total}\n"
        f"Quorum:           {expected // 2 + 1}\nFlags:            "
        f"{'Quorate' if quorate else ''}\n\nMembership information\n----------------------\n"
        f"    Nodeid      Votes Name\n{rows}")


DEVICE = ("  device {{\n    model: net\n{votes}    net {{\n      algorithm: {algo}\n"
          "      host: 10.0.0.9\n    }}\n  }}\n")


def codes(found):
    return {f.code: f.severity.value for f in found}


def test_member_findings():
    conf = CorosyncConf.parse(conf_text(3))
    assert codes(r.member_findings(conf, "n3", "n1")) == {"node-in-cluster": "pass"}
    assert codes(r.member_findings(conf, "n1", "n1")) == {"remove-self": "fail"}
    unknown = r.member_findings(conf, "n9", "n1")
    assert codes(unknown) == {"node-not-in-cluster": "fail"}
    assert unknown[0].payload["nodes"] == ["n1", "n2", "n3"]


def test_offline_names_everything_that_still_answers():
    links = parse_cfgtool_status(
        "Local node ID 1, transport knet\nLINK ID 0 udp\n\taddr\t= 10.0.0.1\n\tstatus:\n"
        "\t\tnodeid:          1:\tlocalhost\n\t\tnodeid:          2:\tconnected\n"
        "\t\tnodeid:          3:\tconnected\n")
    up = r.offline_findings("n3", 3, quorum([1, 2, 3], 3, True), links, ["10.0.0.3"])
    assert codes(up) == {"node-still-online": "fail"}
    assert up[0].payload["member"] and up[0].payload["links_connected"] == [0]
    assert "10.0.0.3 answers ICMP" in up[0].message and "membership" in up[0].message
    gone = r.offline_findings("n3", 3, quorum([1, 2], 3, True), None, [])
    assert codes(gone) == {"node-offline": "pass"}


def test_vote_math_without_a_qdevice():
    conf = CorosyncConf.parse(conf_text(4))
    votes = r.vote_plan(conf, "n4", quorum([1, 2, 3], 4, True))
    assert (votes.expected_after, votes.quorum_after, votes.present) == (3, 2, 3)
    assert codes(r.vote_findings(votes, True, None, "n4")) == {"removal-votes": "pass"}


def test_lost_quorum_and_expected_votes_bounds():
    conf = CorosyncConf.parse(conf_text(2))
    votes = r.vote_plan(conf, "n2", quorum([1], 2, False))
    assert codes(r.vote_findings(votes, False, None, "n2")) == {"cluster-not-quorate": "fail"}
    assert codes(r.vote_findings(votes, False, 1, "n2")) == {
        "expected-votes-lowered": "warn", "removal-votes": "pass"}
    assert r.expected_votes_problem(votes, 1) is None
    assert "outside 1" in r.expected_votes_problem(votes, 2)
    four = r.vote_plan(CorosyncConf.parse(conf_text(4)), "n4", quorum([1, 2], 4, False))
    assert [n for n in range(1, 6) if r.expected_votes_problem(four, n) is None] == [2, 3]


def test_expected_votes_out_of_bounds_is_refused_with_the_votes_to_pass():
    """apply.removal.refuse_expected_votes, the one owner of node remove's and node separate's
    --expected-votes refusal: the bound problem, exit-2 code, and a remedy naming what to pass."""
    votes = r.vote_plan(CorosyncConf.parse(conf_text(2)), "n2", quorum([1], 2, False))
    refuse_expected_votes(votes, None, meaning="the votes online")
    refuse_expected_votes(votes, 1, meaning="the votes online")
    with pytest.raises(UserError) as bad:
        refuse_expected_votes(votes, 2, meaning="the votes online",
                              otherwise=", or bring the other nodes back")
    assert bad.value.code == "bad-expected-votes"
    assert "--expected-votes 2 is outside 1" in str(bad.value)
    assert bad.value.remedy == ("pass --expected-votes 1 (the votes online), or bring the other "
                                "nodes back")
    with pytest.raises(UserError) as stay:
        refuse_expected_votes(votes, 3, meaning="the votes of the nodes that stay")
    assert stay.value.remedy == "pass --expected-votes 1 (the votes of the nodes that stay)"


def test_a_removal_that_would_lose_quorum_fails():
    conf = CorosyncConf.parse(conf_text(5))
    votes = r.vote_plan(conf, "n5", quorum([1, 2], 5, False))
    assert votes.quorate_after is False
    assert "removal-loses-quorum" in codes(r.vote_findings(votes, True, None, "n5"))


@pytest.mark.parametrize("algo,votes,nodes,expected,odd", [
    ("ffsplit", "    votes: 1\n", 4, 4, True),    # 3 nodes + 1: the guide's discouraged setup
    ("ffsplit", "", 5, 5, False),                 # 4 nodes + 1 (ffsplit's default)
    ("lms", "", 4, 5, True),                      # 3 nodes + (3 - 1)
])
def test_qdevice_votes_and_parity(algo, votes, nodes, expected, odd):
    conf = CorosyncConf.parse(conf_text(nodes, DEVICE.format(votes=votes, algo=algo)))
    assert r.device_votes(r.configured(conf), nodes - 1) == expected - (nodes - 1)
    plan = r.vote_plan(conf, f"n{nodes}", quorum(list(range(1, nodes)), 99, True, qdevice=1))
    assert plan.expected_after == expected
    found = codes(r.vote_findings(plan, True, None, f"n{nodes}"))
    assert ("qdevice-odd-nodes" in found) is odd


def test_guests_and_ha():
    found = r.guest_findings("n4", {"qemu-server": ["100", "99"], "lxc": []},
                             [("/etc/pve/ha/groups.cfg", "group: only4", ["n4"]),
                              ("/etc/pve/ha/rules.cfg", "node-affinity: r1", ["n1", "n4"])])
    assert codes(found) == {"node-has-guests": "fail", "ha-pinned-to-node": "fail",
                            "ha-names-node": "warn"}
    assert found[0].payload["guests"] == {"qemu-server": ["99", "100"]}
    assert codes(r.guest_findings("n4", {}, [])) == {"node-no-guests": "pass"}


STORAGE_CFG = """dir: local
\tpath /var/lib/vz
\tcontent iso,backup

nfs: shared-nfs
\tserver 10.0.0.50
\texport /srv
\tpath /mnt/pve/shared-nfs

lvm: san
\tvgname vg0
\tshared 1
\tnodes n1,n2

rbd: ceph
\tpool vms
"""


def test_shared_storage_and_guests():
    from pvestrap.checks import separation as s

    storages = s.parse_storage_cfg(STORAGE_CFG)
    assert [(x.id, x.shared) for x in storages] == [
        ("local", False), ("shared-nfs", True), ("san", True), ("ceph", True)]
    found = s.storage_findings("n3", storages)  # san is restricted to n1, n2
    assert [(f.code, f.subject) for f in found] == [("shared-storage-kept", "shared-nfs"),
                                                    ("shared-storage-kept", "ceph")]
    assert codes(s.storage_findings("n3", storages[:1])) == {"no-shared-storage": "pass"}
    guests = {"qemu-server/100": "scsi0: ceph:vm-100-disk-0,size=8G\nnet0: virtio=AA\n",
              "lxc/101": "rootfs: local:101/vm-101-disk-0.raw,size=8G\n"}
    found = s.guest_storage_findings("n3", storages, guests)
    assert [(f.code, f.payload["storages"]) for f in found] == [
        ("guest-on-shared-storage", ["ceph"])]


def test_separation_quorum():
    from pvestrap.checks import separation as s

    three = r.vote_plan(CorosyncConf.parse(conf_text(3)), "n1", quorum([1, 2, 3], 3, True))
    assert codes(s.quorum_findings(three, True, None, "n1")) == {"others-stay-quorate": "pass"}
    two = r.vote_plan(CorosyncConf.parse(conf_text(2)), "n1", quorum([1, 2], 2, True))
    assert codes(s.quorum_findings(two, True, None, "n1")) == {"separation-loses-quorum": "fail"}
    assert codes(s.quorum_findings(two, True, 1, "n1")) == {"expected-votes-lowered": "warn"}


def test_strangers_findings():
    from pvestrap.checks import strangers as s

    conf = CorosyncConf.parse(conf_text(3))
    assert s.ports_of(conf) == {5405: 0}
    found = s.stranger_findings(conf, {"10.0.0.4": {5405}, "10.0.0.2": {5405},
                                       "127.0.0.1": {5405}}, 2.0)
    assert [(f.code, f.subject, f.payload["links"]) for f in found] == [
        ("link-stranger", "10.0.0.4", [0])]
    assert codes(s.stranger_findings(conf, {}, 2.0)) == {"link-strangers-none": "pass"}
    assert codes(s.stranger_findings(conf, None, 2.0, "not root")) == {
        "link-strangers-unheard": "skip"}
