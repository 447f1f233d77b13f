"""Join preconditions on a scratch root, and the fingerprint against a real local TLS server.

The certificate is made by the openssl CLI and its expected fingerprint is computed by
`openssl x509 -fingerprint -sha256`, independently of the code under test.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from pvestrap.checks.base import Context
from pvestrap.checks.joinable import (AuthkeyCheck, ClusterSideCheck, ClusterView,
                                      CorosyncConfCheck, CorosyncRunningCheck, FingerprintCheck,
                                      GuestsCheck, guest_ids)
from pvestrap.checks.localsys import Sources
from pvestrap.errors import OperationFailed
from pvestrap.findings import Severity
from pvestrap.fingerprint import TIMEOUT, fetch_fingerprint
from pvestrap.plan import ClusterPlan, JoinTarget, Link, Node
from pvestrap.system import CommandResult


def plan(fingerprint=None, join_address=None, links=(0, 1)):
    nodes = tuple(Node(f"pve{i}", i, {n: f"10.254.{n}.{i}" for n in links}) for i in (1, 2, 3))
    return ClusterPlan("lab", nodes, tuple(Link(n) for n in links),
                       join=JoinTarget(address=join_address, fingerprint=fingerprint))


def write(root, path, text="x"):
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def codes(found):
    return [f.code for f in found]


def test_clean_root_passes_every_local_join_check(tmp_path):
    ctx = Context(plan=plan(), node="pve2", root=str(tmp_path))
    stopped = Sources(runner=lambda argv: CommandResult(tuple(argv), 1, "",
                                                        "Cannot initialize CMAP service"))
    found = [f for c in (AuthkeyCheck(), CorosyncConfCheck(), CorosyncRunningCheck(stopped),
                         GuestsCheck()) for f in c.run(ctx)]
    assert codes(found) == ["authkey-absent", "corosync-conf-absent", "corosync-stopped",
                            "no-guests"]
    assert all(f.severity is Severity.PASS for f in found)


PACKAGED = Path("/etc/corosync/corosync.conf")  # Debian's corosync ships an example here
DEBIAN_STOCK = PACKAGED.read_text() if PACKAGED.exists() else None
CLUSTER_CONF = ("nodelist {\n  node {\n    name: pve1\n    nodeid: 1\n"
                "    ring0_addr: 10.254.0.1\n  }\n}\n")


def test_leftovers_of_a_cluster_fail_on_a_joiner(tmp_path):
    write(tmp_path, "/etc/corosync/authkey")
    write(tmp_path, "/etc/corosync/corosync.conf", CLUSTER_CONF)
    ctx = Context(plan=plan(), node="pve2", root=str(tmp_path))
    [auth] = AuthkeyCheck().run(ctx)
    [conf] = CorosyncConfCheck().run(ctx)
    assert (auth.code, auth.severity) == ("authkey-exists", Severity.FAIL)
    assert conf.code == "corosync-conf-exists"
    assert conf.payload["paths"] == ["/etc/corosync/corosync.conf"]


def test_the_packaged_example_conf_is_not_a_cluster(tmp_path):
    stock = ("totem {\n  version: 2\n  cluster_name: debian\n}\nnodelist {\n  node {\n"
             "    name: node1\n    nodeid: 1\n    ring0_addr: 127.0.0.1\n  }\n}\n")
    write(tmp_path, "/etc/corosync/corosync.conf", stock)
    [f] = CorosyncConfCheck().run(Context(root=str(tmp_path)))
    assert f.code == "corosync-conf-absent"
    assert f.payload["stock"] == ["/etc/corosync/corosync.conf"]
    # ... but in /etc/pve any corosync.conf means a cluster.
    write(tmp_path, "/etc/pve/corosync.conf", stock)
    [g] = CorosyncConfCheck().run(Context(root=str(tmp_path)))
    assert (g.code, g.payload["paths"]) == ("corosync-conf-exists", ["/etc/pve/corosync.conf"])


@pytest.mark.skipif(DEBIAN_STOCK is None or "127.0.0.1" not in DEBIAN_STOCK,
                    reason="this machine has no packaged corosync.conf example")
def test_this_machines_packaged_corosync_conf_is_recognised(tmp_path):
    write(tmp_path, "/etc/corosync/corosync.conf", DEBIAN_STOCK)
    [f] = CorosyncConfCheck().run(Context(root=str(tmp_path)))
    assert f.code == "corosync-conf-absent" and f.payload["stock"]


def test_the_creator_only_cares_about_an_existing_corosync_conf(tmp_path):
    write(tmp_path, "/etc/corosync/authkey")
    write(tmp_path, "/etc/pve/qemu-server/100.conf")
    write(tmp_path, "/etc/pve/corosync.conf")
    ctx = Context(plan=plan(), node="pve1", root=str(tmp_path))
    assert [f.severity for f in AuthkeyCheck().run(ctx)] == [Severity.SKIP]
    assert [f.severity for f in GuestsCheck().run(ctx)] == [Severity.SKIP]
    assert codes(CorosyncConfCheck().run(ctx)) == ["corosync-conf-exists"]


def test_guests_are_listed_by_vmid(tmp_path):
    for path in ("/etc/pve/qemu-server/100.conf", "/etc/pve/lxc/105.conf",
                 "/etc/pve/nodes/pve2/qemu-server/101.conf", "/etc/pve/qemu-server/notes.txt",
                 "/etc/pve/qemu-server/template.conf"):
        write(tmp_path, path)
    assert guest_ids(str(tmp_path)) == {"qemu": [100, 101], "lxc": [105]}
    [f] = GuestsCheck().run(Context(root=str(tmp_path)))
    assert (f.code, f.severity, f.payload["vmids"]) == ("guests-exist", Severity.FAIL,
                                                        [100, 101, 105])


def test_running_corosync_fails_with_its_output():
    members = "\nMembership information\n----------------------\n    Nodeid      Votes Name\n" \
              "         1          1 10.254.0.1 (local)\n"
    running = Sources(runner=lambda argv: CommandResult(tuple(argv), 0, members))
    [f] = CorosyncRunningCheck(running).run(Context())
    assert (f.code, f.severity, f.payload["rc"]) == ("corosync-running", Severity.FAIL, 0)
    assert any("10.254.0.1" in line for line in f.payload["output"])


def view(**kw):
    data = {"name": "lab", "quorate": True,
            "nodes": [{"name": "pve1", "nodeid": 1, "addresses": {"0": "10.254.0.1",
                                                                   "1": "10.254.1.1"}}]}
    data.update(kw)
    return data


def test_cluster_side_accepts_a_matching_joiner():
    ctx = Context(plan=plan(), node="pve2", options={"cluster": view()})
    [f] = ClusterSideCheck().run(ctx)
    assert (f.code, f.payload["links"]) == ("cluster-accepts-join", [0, 1])


def test_cluster_side_refusals():
    nodes = view()["nodes"] + [{"name": "pve2", "nodeid": 2, "addresses": {"0": "10.254.0.9"}},
                               {"name": "old", "nodeid": 3, "addresses": {"0": "10.254.0.2"}}]
    ctx = Context(plan=plan(links=(0,)), node="pve2",
                  options={"cluster": view(nodes=nodes, quorate=False, links=[0, 1])})
    found = ClusterSideCheck().run(ctx)
    assert codes(found) == ["link-set-mismatch", "node-name-used-in-cluster",
                            "address-used-in-cluster", "cluster-not-quorate"]
    assert found[0].payload == {"node": [0], "cluster": [0, 1]}
    assert found[2].payload == {"link": 0, "address": "10.254.0.2", "used_by": "old"}
    assert all(f.severity is Severity.FAIL for f in found)


def test_cluster_view_from_mapping_infers_links():
    v = ClusterView.from_mapping({"nodes": [{"name": "a", "nodeid": 1,
                                             "addresses": {"0": "10.0.0.1", "2": "10.2.0.1"}}]})
    assert v.links == (0, 2) and v.nodes[0].addresses == {0: "10.0.0.1", 2: "10.2.0.1"}


def test_cluster_side_without_a_view_is_skipped():
    [f] = ClusterSideCheck().run(Context(plan=plan(), node="pve2"))
    assert f.severity is Severity.SKIP


# -- fingerprint against a real TLS server ---------------------------------------------------------

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.skip("the openssl CLI is not installed (Debian package: openssl)")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=pve1"],
                   check=True, capture_output=True)
    out = subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-fingerprint",
                          "-sha256"], check=True, capture_output=True, text=True).stdout
    return cert, key, out.strip().split("=", 1)[1]


@pytest.fixture
def tls_server(certificate):
    cert, key, fingerprint = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], fingerprint
    stop.set()
    thread.join(2)
    listener.close()


def test_fetch_fingerprint_matches_openssl(tls_server):
    port, expected = tls_server
    got = fetch_fingerprint("127.0.0.1", port, 3.0)
    assert got == expected.upper()
    assert len(got.split(":")) == 32


def test_planned_fingerprint_ok_and_mismatch(tls_server):
    port, expected = tls_server
    ok = FingerprintCheck(port=port).run(Context(plan=plan(expected, "127.0.0.1"), node="pve2"))
    assert [(f.code, f.severity) for f in ok] == [("fingerprint-ok", Severity.PASS)]
    wrong = ":".join(["AB"] * 32)
    [bad] = FingerprintCheck(port=port).run(Context(plan=plan(wrong, "127.0.0.1"), node="pve2"))
    assert (bad.code, bad.severity) == ("fingerprint-mismatch", Severity.FAIL)
    assert bad.payload["seen"] == expected.upper() and bad.payload["planned"] == wrong


def test_lower_case_planned_fingerprint_still_matches(tls_server):
    port, expected = tls_server
    [f] = FingerprintCheck(port=port).run(Context(plan=plan(expected.lower(), "127.0.0.1"),
                                                  node="pve3"))
    assert f.code == "fingerprint-ok"


def test_unpinned_fingerprint_is_reported_for_the_plan(tls_server):
    port, expected = tls_server
    [f] = FingerprintCheck(port=port).run(Context(plan=plan(None, "127.0.0.1"), node="pve2"))
    assert (f.code, f.severity, f.payload["seen"]) == ("fingerprint-unpinned", Severity.INFO,
                                                       expected.upper())


def test_unreachable_target_cannot_be_verified():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    try:
        [f] = FingerprintCheck(port=port, timeout_s=1).run(
            Context(plan=plan(":".join(["AB"] * 32), "127.0.0.1"), node="pve2"))
        [s] = FingerprintCheck(port=port, timeout_s=1).run(
            Context(plan=plan(None, "127.0.0.1"), node="pve2"))
    finally:
        closed.close()
    assert (f.code, f.severity) == ("fingerprint-unverified", Severity.WARN)
    assert "ConnectionRefusedError" in f.payload["error"]
    assert s.severity is Severity.SKIP


def test_one_fetch_one_error_for_every_caller():
    """The preflight, the wizard and the join share pvestrap.fingerprint: one timeout, one error."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    try:
        with pytest.raises(OperationFailed) as err:
            fetch_fingerprint("127.0.0.1", port, 1.0)
    finally:
        closed.close()
    assert err.value.code == "fingerprint-unreachable"
    assert f"127.0.0.1:{port}" in err.value.message and "ConnectionRefusedError" in \
        err.value.message
    assert FingerprintCheck().timeout_s == TIMEOUT and FingerprintCheck().fetch is fetch_fingerprint


def test_the_creator_does_not_fetch():
    def boom(*_):
        raise AssertionError("must not connect")
    [f] = FingerprintCheck(fetch=boom).run(Context(plan=plan(), node="pve1"))
    assert f.severity is Severity.SKIP
