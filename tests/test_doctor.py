"""Fast tests of `pvestrap doctor`'s checks over node facts (the lab test runs the real thing).

Facts are what pvestrap.doctor.facts gathers on a node; here they are built from corosync's real
outputs (tests/data/status, corosync 3.1.7) and a corosync.conf, changed one thing at a time.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest
from pvestrap.checks.link_senders import ETH_P_IP, ETH_P_IPV6, udp_destination
from pvestrap.checks.localsys import Machine, Sources
from pvestrap.system import CommandResult

from pvestrap.cli import main
from pvestrap.doctor import facts as F
from pvestrap.doctor import run
from pvestrap.doctor.knet import windows
from pvestrap.doctor.pvefiles import migration_network, storage_servers
from pvestrap.doctor.view import DoctorView
from pvestrap.findings import Severity
from pvestrap.report.html import render_html
from pvestrap.report.junit import render_junit

DATA = Path(__file__).parent / "data" / "status"
NAMES = ("pveA", "pveB")


def conf(version: int = 2, addr1: str = "10.254.1.2", links: int = 2) -> str:
    text = (f"totem {{\n  version: 2\n  cluster_name: lab\n  config_version: {version}\n"
            "  link_mode: passive\n  crypto_cipher: aes256\n  crypto_hash: sha256\n")
    text += "".join(f"  interface {{\n    linknumber: {n}\n  }}\n" for n in range(links))
    text += "}\nnodelist {\n"
    for i, name in enumerate(NAMES, 1):
        text += f"  node {{\n    name: {name}\n    nodeid: {i}\n    quorum_votes: 1\n"
        text += f"    ring0_addr: 10.254.0.{i}\n"
        if links > 1:
            text += f"    ring1_addr: {addr1 if i == 2 else '10.254.1.1'}\n"
        text += "  }\n"
    return text + "}\nquorum {\n  provider: corosync_votequorum\n  two_node: 1\n}\n"


def cmd(stdout: str, rc: int = 0) -> dict:
    return {"rc": rc, "stdout": stdout, "stderr": ""}


def machine(i: int) -> dict:
    return Machine.from_dict({"hostname": NAMES[i - 1], "interfaces": [
        {"name": "eth0", "kind": "veth", "addresses": [{"address": f"10.254.0.{i}",
                                                       "prefixlen": 24}]},
        {"name": "eth1", "kind": "veth", "addresses": [{"address": f"10.254.1.{i}",
                                                       "prefixlen": 24}]}]}).to_dict()


def node_facts(i: int, **over) -> dict:
    quorum = (DATA / ("quorumtool-s-2node-quorate.txt" if i == 1 else
                      "quorumtool-s-2node-nodeB.txt")).read_text()
    knet = (DATA / "cmapctl-stats-2node.txt").read_text()
    facts = {
        "hostname": NAMES[i - 1],
        "files": {F.COROSYNC_CONF: conf()},
        "authkey_sha256": "ab" * 32,
        "pve_nodes": None,
        "commands": {
            " ".join(F.QUORUM): cmd(quorum),
            " ".join(F.RUNTIME_VERSION): cmd("totem.config_version (u64) = 2\n"),
            " ".join(F.VOTEQUORUM): cmd(f"runtime.votequorum.ev_barrier (u32) = 2\n"
                                        f"runtime.votequorum.this_node_id (u32) = {i}\n"),
            " ".join(F.RUNTIME_TOTEM): cmd("runtime.config.totem.token (u32) = 3000\n"
                                           "runtime.config.totem.consensus (u32) = 3600\n"),
        },
        "machine": machine(i),
        "versions": {"corosync": "3.1.7-1", "pve-manager": None, "pve-cluster": None,
                     "kernel": "6.1.0"},
        "resolved": {},
        "hostname_addresses": [f"10.254.0.{i}"],
        "window": [{"t": 0.0, "knet": cmd(knet), "links": cmd("")},
                   {"t": 3.0, "knet": cmd(knet), "links": cmd("")}],
        "senders": {"seen": {}, "error": None, "seconds": 3.0},
        run.NODE_FINDINGS: [],
    }
    facts.update(over)
    return facts


def doctor(*facts: dict, mesh: bool = True, unanswered=None):
    by = {f["hostname"]: f for f in facts}
    view = DoctorView.of(by, local="pveA", mesh=mesh, unanswered=unanswered)
    return run.report(view, by)


def fails(report) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in report.findings:
        if f.severity is Severity.FAIL:
            out.setdefault(f.check, set()).add(f.code)
    return out


def by_code(report, code):
    return [f for f in report.findings if f.code == code]


def test_healthy_two_nodes_no_fail_and_a_report_in_every_format():
    report = doctor(node_facts(1), node_facts(2))
    assert fails(report) == {}
    assert report.exit_code() == 0
    assert {"config-version-equal", "authkey-equal", "cluster-quorate", "expected-votes-ok",
            "links-redundant", "link-addresses-ip", "mesh-all-answered"} <= \
        {f.code for f in report.findings}
    assert by_code(report, "two-node-no-qdevice")  # the guide: a QDevice for 2 nodes
    assert "<testsuite" in render_junit(report) and "<html" in render_html(report).lower()
    json.dumps([f.as_dict() for f in report.findings])


def test_each_sickness_fails_only_its_own_check():
    older = node_facts(2, files={F.COROSYNC_CONF: conf(version=1)})
    assert fails(doctor(node_facts(1), older)) == {
        "config-version": {"config-version-behind", "config-version-differs"}}
    key = node_facts(2, authkey_sha256="cd" * 32)
    [odd] = by_code(doctor(node_facts(1), key), "authkey-differs")
    assert odd.payload["sha256_prefix"] == {"pveA": "ab" * 6, "pveB": "cd" * 6}
    assert "ab" * 32 not in json.dumps(odd.as_dict())  # only a prefix of the hash, never more
    lowered = node_facts(1)
    lowered["commands"][" ".join(F.VOTEQUORUM)] = cmd(
        "runtime.votequorum.ev_barrier (u32) = 1\nruntime.votequorum.this_node_id (u32) = 1\n")
    assert fails(doctor(lowered, node_facts(2))) == {"expected-votes":
                                                     {"expected-votes-set-by-hand"}}


def test_hostname_link_address_resolving_differently():
    text = conf(addr1="pveB-l1")
    a = node_facts(1, files={F.COROSYNC_CONF: text}, resolved={"pveB-l1": ["10.254.1.2"]})
    b = node_facts(2, files={F.COROSYNC_CONF: text}, resolved={"pveB-l1": ["10.254.1.9"]})
    report = doctor(a, b)
    assert fails(report) == {"link-hostnames": {"link-hostname-differs"}}
    assert by_code(report, "address-not-ip")[0].severity is Severity.WARN
    same = node_facts(2, files={F.COROSYNC_CONF: text}, resolved={"pveB-l1": ["10.254.1.2"]})
    assert by_code(doctor(a, same), "link-hostname-consistent")


def test_single_link_and_shared_networks_are_warnings():
    one = conf(links=1)
    dc = "keyboard: en-us\nmigration: secure,network=10.254.0.0/24\n"
    storage = "nfs: backup\n\tserver 10.254.0.50\n\texport /srv\n\tpath /mnt/pve/backup\n"
    a = node_facts(1, files={F.COROSYNC_CONF: one, F.DATACENTER_CFG: dc, F.STORAGE_CFG: storage})
    report = doctor(a, node_facts(2, files={F.COROSYNC_CONF: one}))
    codes = {f.code for f in report.findings if f.severity is Severity.WARN}
    assert {"single-link", "link-shares-management", "link-shares-migration",
            "link-shares-storage"} <= codes
    assert fails(report) == {}


def test_unanswered_node_is_a_finding_and_garbage_is_a_clear_error():
    garbage = node_facts(1)
    garbage["commands"][" ".join(F.QUORUM)] = cmd("this is not corosync\n\x00\x01")
    garbage["window"] = [{"t": 0, "knet": cmd("garbage here"), "links": cmd("nonsense")}]
    report = doctor(garbage, unanswered={"pveB": "did not start its responder (exit 255: "
                                                 "ssh: connect to host 10.254.0.2 port 22)"})
    assert by_code(report, "node-unreachable")[0].subject == "pveB"
    [unknown] = by_code(report, "quorum-unknown")
    assert "cannot read corosync-quorumtool -s output" in unknown.message
    assert not by_code(report, "check-crashed")


def test_leftover_node_dir_and_known_host():
    a = node_facts(1, pve_nodes=["pveA", "pveB", "pveC"])
    a["files"][F.PVE_KNOWN_HOSTS] = ("pveA ssh-ed25519 AAAA\npveB ssh-ed25519 AAAA\n"
                                     "pveC ssh-ed25519 AAAA\n10.254.0.3 ssh-rsa AAAA\n")
    report = doctor(a, node_facts(2))
    assert fails(report) == {"leftover-nodes": {"leftover-node-dir"}}
    assert {f.subject for f in by_code(report, "leftover-known-host")} == {"pveC", "10.254.0.3"}


def test_stranger_on_the_link_port():
    a = node_facts(1, senders={"seen": {"10.254.0.3": {"5405": 12}, "10.254.0.2": {"5405": 9}},
                               "error": None, "seconds": 3.0})
    report = doctor(a, node_facts(2))
    [s] = by_code(report, "link-stranger")
    assert (s.subject, s.payload["ports"]) == ("10.254.0.3", {"5405": 12})


def test_knet_window_mean_comes_from_the_samples_in_the_window():
    first = ("stats.knet.node2.link0.connected (u8) = 1\n"
             "stats.knet.node2.link0.latency_ave (u32) = 300\n"
             "stats.knet.node2.link0.latency_max (u32) = 700\n"
             "stats.knet.node2.link0.latency_samples (u32) = 10\n"
             "stats.knet.node2.link0.down_count (u32) = 1\n"
             "stats.knet.node2.link0.up_count (u32) = 1")
    last = first.replace("= 300", "= 1000").replace("= 10\n", "= 20\n")
    a = node_facts(1, window=[{"t": 0, "knet": cmd(first), "links": cmd("")},
                              {"t": 4, "knet": cmd(last), "links": cmd("")}])
    view = DoctorView.of({"pveA": a}, local="pveA")
    [w] = windows(view, view.me)
    assert (w.new_samples, w.window_ave_us, w.basis) == (10, 1700.0, "window")
    report = doctor(a, mesh=False)
    assert fails(report) == {}
    slow = last.replace("= 1000", "= 2000")
    b = node_facts(1, window=[{"t": 0, "knet": cmd(first), "links": cmd("")},
                              {"t": 4, "knet": cmd(slow), "links": cmd("")}])
    assert fails(doctor(b, mesh=False)) == {"knet-latency": {"knet-latency-high"}}
    down = slow.replace("connected (u8) = 1", "connected (u8) = 0").replace(
        "down_count (u32) = 1", "down_count (u32) = 2")
    c = node_facts(1, window=[{"t": 0, "knet": cmd(first), "links": cmd("")},
                              {"t": 4, "knet": cmd(down), "links": cmd("")}])
    assert fails(doctor(c, mesh=False)) == {"knet-links": {"knet-link-down"}}


def _stats(ave: int, samples: int) -> str:
    return "\n".join(["stats.knet.node2.link0.connected (u8) = 1",
                      f"stats.knet.node2.link0.latency_ave (u32) = {ave}",
                      f"stats.knet.node2.link0.latency_samples (u32) = {samples}"])


def test_one_late_pong_is_not_a_slow_link_and_a_long_running_link_uses_knets_average():
    # pongs of 300, 300, 4300 (a busy host), 300 us: the running mean after each
    steps = [(300, 10), (300, 11), (300, 12), (633, 13), (611, 14)]
    a = node_facts(1, window=[{"t": i, "knet": cmd(_stats(*x)), "links": cmd("")}
                              for i, x in enumerate(steps)])
    view = DoctorView.of({"pveA": a}, local="pveA")
    [w] = windows(view, view.me)
    assert w.basis == "window" and w.new_samples == 4 and w.window_ave_us < 400
    capped = [(2500, 2048), (2501, 2048)]  # knet_ping_precision reached: n stays
    b = node_facts(1, window=[{"t": i, "knet": cmd(_stats(*x)), "links": cmd("")}
                              for i, x in enumerate(capped)])
    view = DoctorView.of({"pveA": b}, local="pveA")
    [w] = windows(view, view.me)
    assert (w.basis, w.window_ave_us) == ("knet-average", 2501.0)
    assert fails(doctor(b, mesh=False)) == {"knet-latency": {"knet-latency-high"}}


def test_pve_files():
    assert migration_network("migration: type=secure,network=10.1.2.0/24\n") == "10.1.2.0/24"
    assert migration_network("migration: insecure\n") is None
    text = ("dir: local\n\tpath /var/lib/vz\n\niscsi: san\n\tportal 10.9.0.5:3260\n"
            "\ttarget iqn.x\n\nrbd: ceph\n\tmonhost 10.8.0.1 10.8.0.2;10.8.0.3\n"
            "\npbs: pbs\n\tserver [fd12::5]\n")
    assert storage_servers(text) == {"san": ["10.9.0.5"], "ceph": ["10.8.0.1", "10.8.0.2",
                                                                   "10.8.0.3"],
                                     "pbs": ["fd12::5"]}


def test_udp_destination_of_raw_packets():
    v4 = bytes([0x45, 0, 0, 29, 0, 0, 0, 0, 64, 17, 0, 0]) + socket.inet_aton("10.0.0.7") + \
        socket.inet_aton("10.0.0.1") + struct.pack("!HHHH", 5405, 5406, 9, 0) + b"x"
    assert udp_destination(ETH_P_IP, v4) == ("10.0.0.7", 5406)
    tcp = v4[:9] + bytes([6]) + v4[10:]
    assert udp_destination(ETH_P_IP, tcp) is None
    v6 = bytes([0x60, 0, 0, 0, 0, 9, 17, 64]) + socket.inet_pton(socket.AF_INET6, "fd00:1::7") + \
        socket.inet_pton(socket.AF_INET6, "fd00:1::1") + struct.pack("!HHHH", 5405, 5405, 9, 0)
    assert udp_destination(ETH_P_IPV6, v6) == ("fd00:1::7", 5405)
    assert udp_destination(ETH_P_IP, b"\x45garbage") is None


def test_facts_on_a_folder_hash_the_authkey_and_never_keep_it(tmp_path):
    (tmp_path / "etc/corosync").mkdir(parents=True)
    (tmp_path / "etc/pve/nodes/pveA").mkdir(parents=True)
    (tmp_path / "etc/corosync/corosync.conf").write_text(conf(addr1="pveB-l1"))
    (tmp_path / "etc/corosync/authkey").write_bytes(b"SECRET-KEY" * 20)

    def runner(argv):
        return CommandResult(tuple(argv), 127, "", f"{argv[0]}: not found")

    sources = Sources(machine=Machine("pveA"), resolver=lambda n: ("10.254.1.2",),
                      runner=runner)
    facts = F.snapshot(str(tmp_path), sources)
    assert facts["pve_nodes"] == ["pveA"]
    assert facts["resolved"] == {"pveB-l1": ["10.254.1.2"]}
    assert len(facts["authkey_sha256"]) == 64 and "SECRET" not in json.dumps(facts)
    assert F.link_ports(conf()) == [5405, 5406]


def test_cli_bad_root_is_exit_2(capsys):
    assert main(["doctor", "--root", "/nonexistent/folder"]) == 2
    assert "--root" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("quorumtool-s*.txt")))
def test_recorded_quorum_outputs_read(name):
    a = node_facts(1)
    a["commands"][" ".join(F.QUORUM)] = cmd((DATA / name).read_text())
    report = doctor(a, mesh=False)
    assert not by_code(report, "quorum-unknown") and not by_code(report, "check-crashed")
