"""Issue 17's acceptance: `pvestrap doctor --mesh` on a real 3-node, 2-link corosync lab cluster.

Healthy first: exit 0, no FAIL. Then the same cluster made sick one thing at a time, each put
back before the next: every sickness must be found by its own check id and nothing else may
FAIL. The orchestrator runs inside n1 and reaches every node over real SSH (root key login),
where the agent runs in the node's namespaces against that node's real corosync.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest

pytestmark = pytest.mark.lab

PVESTRAP = [sys.executable, "-m", "pvestrap"]
WINDOW = "4"


def doctor(lab, *args, window: str = WINDOW) -> tuple[int, dict]:
    out = lab.exec("n1", [*PVESTRAP, "doctor", "--mesh", "--json", "--window", window,
                          "--remote-command", " ".join(PVESTRAP), *args], timeout=180)
    assert out.stdout.startswith("{"), out.stderr
    return out.returncode, json.loads(out.stdout)


def findings(report: dict) -> list[dict]:
    return [f for s in report["sections"] for f in s["findings"]]


def failing(report: dict) -> dict[str, set[str]]:
    """check id -> codes of its FAILs."""
    out: dict[str, set[str]] = {}
    for f in findings(report):
        if f["severity"] == "fail":
            out.setdefault(f["check"], set()).add(f["code"])
    return out


def only_failing(report: dict, check: str, code: str) -> list[dict]:
    fails = failing(report)
    assert set(fails) == {check} and code in fails[check], json.dumps(
        [f for f in findings(report) if f["severity"] == "fail"], indent=1)
    return [f for f in findings(report) if f["code"] == code]


def wait_healthy(lab, timeout: float = 30.0) -> None:
    """Every node quorate with 3 members and every knet link connected again."""
    deadline = time.monotonic() + timeout
    while True:
        ok = True
        for node in ("n1", "n2", "n3"):
            q = lab.exec(node, ["corosync-quorumtool", "-s"]).stdout
            s = lab.exec(node, ["corosync-cfgtool", "-s"]).stdout
            ok &= "Quorate:          Yes" in q and "Nodes:            3" in q \
                and "disconnected" not in s
        if ok:
            return
        assert time.monotonic() < deadline, "the lab did not come back"
        time.sleep(0.5)


def edit(path, old: str, new: str) -> str:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))
    return text


def test_doctor_healthy_then_each_sickness_alone(lab):
    lb = lab(nodes=3, links=2)
    lb.write_corosync(config_version=2)
    lb.start("corosync")
    lb.start("sshd")
    wait_healthy(lb)
    n1, n2, n3 = (lb.node(i) for i in (1, 2, 3))

    rc, report = doctor(lb)
    assert rc == 0 and failing(report) == {}, json.dumps(report, indent=1)
    codes = {f["code"] for f in findings(report)}
    assert {"authkey-equal", "config-version-equal", "cluster-quorate", "expected-votes-ok",
            "knet-links-up", "knet-latency-ok", "clock-offset-ok", "mesh-all-answered",
            "links-redundant"} <= codes
    assert report["meta"]["nodes"] == [n1.name, n2.name, n3.name]
    assert doctor(lb, "--strict")[0] == 3  # warnings only (link0 is the management network)

    # 1. link1 of n3 written as a hostname that n2 resolves to another address
    alias = f"{lb.prefix}-c3"
    confs = [n.path("/etc/corosync/corosync.conf") for n in (n1, n2, n3)]
    hosts = [n.path("/etc/hosts") for n in (n1, n2, n3)]
    saved = [p.read_text() for p in confs + hosts]
    for p in confs:
        edit(p, f"ring1_addr: {n3.address(1)}", f"ring1_addr: {alias}")
    for p, address in zip(hosts, (n3.address(1), "10.254.1.99", n3.address(1))):
        p.write_text(p.read_text() + f"{address}\t{alias}\n")
    rc, report = doctor(lb)
    for p, text in zip(confs + hosts, saved):
        p.write_text(text)
    [found] = only_failing(report, "link-hostnames", "link-hostname-differs")
    assert found["payload"]["resolved"] == {n1.name: n3.address(1), n2.name: "10.254.1.99",
                                            n3.name: n3.address(1)}
    assert rc == 1 and any(f["code"] == "address-not-ip" for f in findings(report))

    # 2. 3 ms on n3's link1 NIC (both directions: about 6 ms more round trip)
    lb.impair(delay="n3:eth1=3ms")
    try:
        rc, report = doctor(lb)
    finally:
        lb.impair(delay="n3:eth1=0ms")
    slow = only_failing(report, "knet-latency", "knet-latency-high")
    assert {(f["payload"]["link"], n3.name in (f["payload"]["node"], f["payload"]["peer"]))
            for f in slow} == {(1, True)}
    assert all(f["payload"]["latency_window_ms"] > 4.0 for f in slow)

    # 3. n3's link0 cut (nftables drops its UDP 5405) while the window runs
    proc = lb.popen("n1", [*PVESTRAP, "doctor", "--mesh", "--json", "--window", "6",
                           "--remote-command", " ".join(PVESTRAP)], stdout=-1, stderr=-1,
                    text=True)
    time.sleep(2.5)
    lb.impair(drop="n3:udp/5405")
    try:
        out, _err = proc.communicate(timeout=180)
    finally:
        lb.impair(clear=True)
    report = json.loads(out)
    cut = only_failing(report, "knet-links", "knet-link-down")
    assert {f["payload"]["link"] for f in cut} == {0}
    assert all(n3.name in (f["payload"]["node"], f["payload"]["peer"]) for f in cut)
    wait_healthy(lb)

    # 4. n2's file older than what corosync runs
    conf2 = n2.path("/etc/corosync/corosync.conf")
    saved2 = edit(conf2, "config_version: 2", "config_version: 1")
    try:
        rc, report = doctor(lb)
    finally:
        conf2.write_text(saved2)
    [behind] = only_failing(report, "config-version", "config-version-behind")
    assert (behind["subject"], behind["payload"]["file"], behind["payload"]["running"]) == \
        (n2.name, 1, 2)

    # 5. expected votes lowered by hand on n1 (while alone, as pvecm expected 1 is used) and
    #    never set back after the others came back
    lb.stop("corosync", ["n2", "n3"])
    lowered = lb.exec("n1", ["corosync-quorumtool", "-e", "1"])
    assert lowered.returncode == 0, lowered.stderr
    lb.start("corosync", ["n2", "n3"])
    wait_healthy(lb)
    try:
        rc, report = doctor(lb)
    finally:
        lb.exec("n1", ["corosync-quorumtool", "-e", "3"])
    [hand] = only_failing(report, "expected-votes", "expected-votes-set-by-hand")
    assert (hand["subject"], hand["payload"]["barrier"], hand["payload"]["configured"]) == \
        (n1.name, 1, 3)

    # 6. another authkey on n2 (corosync there still runs with the old one)
    key2 = n2.path("/etc/corosync/authkey")
    original = key2.read_bytes()
    key2.unlink()
    key2.write_bytes(os.urandom(256))
    try:
        rc, report = doctor(lb)
    finally:
        key2.unlink()
        key2.write_bytes(original)
        os.chmod(key2, 0o400)
    [odd] = only_failing(report, "authkey", "authkey-differs")
    assert odd["payload"]["odd"] == [n2.name]
    assert all(len(h) == 12 for h in odd["payload"]["sha256_prefix"].values())

    # 7. a Proxmox layout under --root with a removed node's /etc/pve/nodes/NAME still there
    for node in (n1, n2, n3):
        root = node.path("/root/pve-layout")  # /root is private to the node (overlay)
        for name in (n1.name, n2.name, n3.name, f"{lb.prefix}-gone"):
            (root / "etc/pve/nodes" / name / "qemu-server").mkdir(parents=True, exist_ok=True)
        (root / "etc/corosync").mkdir(parents=True, exist_ok=True)
        for name in ("corosync.conf", "authkey"):
            shutil.copyfile(node.path(f"/etc/corosync/{name}"), root / "etc/corosync" / name)
        shutil.copyfile(node.path("/etc/corosync/corosync.conf"), root / "etc/pve/corosync.conf")
    rc, report = doctor(lb, "--root", "/root/pve-layout")
    left = only_failing(report, "leftover-nodes", "leftover-node-dir")
    assert len(left) == 1, json.dumps(left, indent=1)
    left = left[0]
    assert left["subject"] == f"{lb.prefix}-gone" and rc == 1

    rc, report = doctor(lb)
    assert rc == 0 and failing(report) == {}, json.dumps(failing(report))

    # 8. a node that does not answer over SSH is a finding, and the reports are written
    lb.stop("sshd", ["n3"])
    rc, report = doctor(lb, "--junit", "/root/doctor.xml", "--html", "/root/doctor.html")
    [gone] = only_failing(report, "mesh-nodes", "node-unreachable")
    assert gone["subject"] == n3.name and rc == 1
    assert report["meta"]["nodes"] == [n1.name, n2.name]
    junit = n1.path("/root/doctor.xml").read_text()
    assert 'failures="1"' in junit and "node-unreachable" in junit
    assert "knet-latency" in n1.path("/root/doctor.html").read_text()


def test_doctor_hears_a_removed_node_still_sending(lab):
    """n3 was removed from n1 and n2's nodelist but still runs corosync with the old one: its
    knet keeps sending to their link port, which knet drops silently. doctor on n1 names it."""
    from pvestrap.lab import files

    lb = lab(nodes=3, links=1)
    lb.write_corosync(nodes=[1, 2])
    old = files.corosync_conf(lb.state.layout, [1, 2, 3], 1)
    n3 = lb.node(3)
    n3.path("/etc/corosync/corosync.conf").write_text(old)
    key = n3.path("/etc/corosync/authkey")
    key.write_bytes(os.urandom(256))
    os.chmod(key, 0o400)
    lb.start("corosync")
    deadline = time.monotonic() + 30
    while "Nodes:            2" not in lb.exec("n1", ["corosync-quorumtool", "-s"]).stdout:
        assert time.monotonic() < deadline, "n1 and n2 did not form their cluster"
        time.sleep(0.5)
    out = lb.exec("n1", [*PVESTRAP, "doctor", "--json", "--window", "3"], timeout=120)
    report = json.loads(out.stdout)
    [stranger] = only_failing(report, "link-strangers", "link-stranger")
    assert stranger["subject"] == n3.address(0) and stranger["payload"]["ports"]["5405"] > 0
    assert out.returncode == 1


def test_doctor_on_proxmox_ves_real_stack(lab, tmp_path):
    """A 3-node cluster built by the real pvecm (lab --pve 9: pmxcfs, /etc/pve): doctor --mesh
    reads /etc/pve/corosync.conf, /etc/pve/nodes and /etc/pve/priv/known_hosts for real; no
    FAIL. A node directory left in pmxcfs (cluster-wide) is then the only FAIL."""
    from pvestrap.answers import dumps

    three = lab(nodes=3, pve="9")
    answers = tmp_path / "answers.toml"
    answers.write_text(dumps(three.plan()))
    for index in (1, 2, 3):
        done = three.exec(index, [*PVESTRAP, "apply", "--answers", str(answers), "--node",
                                  three.node(index).name, "--yes"], timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    three.start("sshd")
    wait_healthy_pve = time.monotonic() + 60
    while "Nodes:            3" not in three.exec(1, ["corosync-quorumtool", "-s"]).stdout:
        assert time.monotonic() < wait_healthy_pve
        time.sleep(0.5)
    rc, report = doctor(three)
    assert rc == 0 and failing(report) == {}, json.dumps(
        [f for f in findings(report) if f["severity"] in ("fail", "warn")], indent=1)
    codes = {f["code"] for f in findings(report)}
    assert {"leftover-none", "config-version-equal", "authkey-equal"} <= codes
    ghost = f"{three.prefix}-old"
    made = three.exec(1, ["mkdir", "-p", f"/etc/pve/nodes/{ghost}/qemu-server"])
    assert made.returncode == 0, made.stderr
    rc, report = doctor(three)
    [left] = only_failing(report, "leftover-nodes", "leftover-node-dir")
    assert left["subject"] == ghost and rc == 1
