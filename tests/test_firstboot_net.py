"""First boot's responders and waits in a network namespace of the test's own (its loopback
carries a fresh random 10.254.N.0/24 per test; a link address may not be a loopback address):
real sockets, real raw-socket answers, real probes. Nothing of the machine's network is seen.

The point of the placeholders: corosync's own link ports (link N: 5405+N on the node's link-N
address) must stay free for corosync at every moment, while probes to them are answered all
the same; and a stage announced later must not grab them either.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import random
import socket
import subprocess
import threading

import pytest

from pvestrap.checks import prober
from pvestrap.errors import OperationFailed
from pvestrap.plan import ClusterPlan, Link, Node
from pvestrap.firstboot import entry, waiting
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.firstboot.presence import Presence
from pvestrap.firstboot.tokens import derive_tokens

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="answering on a busy port needs a "
                                "raw socket (root)")


CLONE_NEWNET = 0x40000000
LIBC = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def private_network(addresses):
    """This thread, and every thread and process it starts, in a new network namespace whose
    loopback is up and carries ADDRESSES; back to the machine's namespace afterwards."""
    back = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        if LIBC.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for address in addresses:
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", "lo"], check=True)
        yield
    finally:
        if LIBC.setns(back, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "could not return to the machine's namespace")
        os.close(back)


@pytest.fixture
def plan():
    base = f"10.254.{random.randint(1, 254)}"
    nodes = tuple(Node(f"n{i}", i, {0: f"{base}.{i}"}) for i in (1, 2, 3))
    with private_network([node.addresses[0] for node in nodes]):
        yield ClusterPlan("lo", nodes, (Link(0),)).check()


TOKENS = derive_tokens(bytes(range(32)))  # a cluster's first-boot secret


def cluster_files(plan, folder):
    """The answer file and the cluster's first-boot secret beside it (0600), as `pvestrap iso
    prepare` leaves them; returns (answers path, the tokens every node derives)."""
    from pvestrap.answers import dumps

    answers = folder / "answers.toml"
    answers.write_text(dumps(plan))
    return answers, derive_tokens(firstboot_secret.ensure(firstboot_secret.path_for(answers)).value)


def _bind(address: str, port: int) -> socket.socket | int:
    """A socket on (address, port), or the errno that refused it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        return exc.errno
    return sock


def test_probes_are_answered_by_token_and_stage(plan):
    n1, n2 = plan.node("n1"), plan.node("n2")
    peer = {"n2": dict(n2.addresses)}
    with Presence(plan, n2, TOKENS, ttl_s=60) as presence:
        assert waiting.answering(n1, peer, TOKENS.probe) == {"n2"}
        assert waiting.answering(n1, peer, TOKENS.ready) == set()
        assert waiting.answering(n1, peer, derive_tokens(bytes(32)).probe) == set()
        threads = threading.active_count()
        presence.announce("ready")
        assert waiting.answering(n1, peer, TOKENS.ready) == {"n2"}
        assert waiting.answering(n1, peer, TOKENS.probe) == {"n2"}
        assert waiting.answering(n1, peer, TOKENS.member) == set()
        assert threading.active_count() == threads  # the one responder took the stage on
    assert waiting.answering(n1, peer, TOKENS.probe) == set()  # closed with the block


def test_a_fast_round_ends_at_the_first_answer_and_keeps_asking_a_silent_peer(plan):
    """The fast pace's round (LISTEN): a peer at the stage answers the first probe and its
    path is done; a peer not there yet is asked all round long, every probe of it."""
    n1, n2, n3 = (plan.node(n) for n in ("n1", "n2", "n3"))
    listen = waiting.LISTEN
    assert listen.until_answered and listen.count == 10
    with Presence(plan, n2, TOKENS, ttl_s=60) as p2, Presence(plan, n3, TOKENS, ttl_s=60):
        p2.announce("ready")
        targets = prober.udp_targets({"n2": dict(n2.addresses), "n3": dict(n3.addresses)},
                                     dict(n1.addresses), legacy=False)
        found = {r.peer: r for r in prober.measure(
            prober.ProbeRequest("n1", targets, settings=listen), TOKENS.ready).udp}
    assert found["n2"].state == "open" and found["n2"].received == 1
    assert found["n2"].sent < listen.count
    assert found["n3"].state != "open" and found["n3"].sent == listen.count


def test_the_answer_file_alone_forges_no_token_the_nodes_accept(plan, tmp_path):
    """Anyone may read the answer file (the hook extracts it 0644): tokens made from it, the
    way first boot once made them, get no answer from a node, and a forger announcing "ready"
    or "member" with them is not seen by a node that waits for that stage. Only the secret's
    tokens are answered."""
    answers, tokens = cluster_files(plan, tmp_path)
    forged = derive_tokens(answers.read_bytes())
    n1, n2, n3 = (plan.node(n) for n in ("n1", "n2", "n3"))
    peer = {"n2": dict(n2.addresses)}
    with Presence(plan, n2, tokens, ttl_s=60) as real, Presence(plan, n3, forged, ttl_s=60) as fake:
        real.announce("ready")
        fake.announce("ready")
        fake.announce("member")
        assert waiting.answering(n1, peer, tokens.probe) == {"n2"}
        assert waiting.answering(n1, peer, tokens.ready) == {"n2"}
        for token in (forged.probe, forged.ready, forged.member):
            assert waiting.answering(n1, peer, token) == set()
        for stage in ("ready", "member"):
            assert waiting.wait_for_stage(plan, n1, ["n3"], stage, tokens.stage(stage),
                                          timeout_s=0.5, say=lambda _m: None,
                                          poll_s=0.2) == set()


def test_corosync_ports_stay_free_for_corosync_and_are_answered_all_along(plan):
    n1, n2 = plan.node("n1"), plan.node("n2")
    address, peer = n2.addresses[0], {"n2": dict(n2.addresses)}
    with Presence(plan, n2, TOKENS, ttl_s=60) as presence:
        assert _bind(address, 5405) == errno.EADDRINUSE  # held for corosync
        presence.release_corosync_ports()
        presence.announce("ready")  # while nothing holds the port
        corosync = _bind(address, 5405)  # what corosync does when it starts
        assert isinstance(corosync, socket.socket), "a later responder took corosync's port"
        try:
            assert waiting.answering(n1, peer, TOKENS.probe) == {"n2"}
            assert waiting.answering(n1, peer, TOKENS.ready) == {"n2"}
            presence.announce("member")
            assert waiting.answering(n1, peer, TOKENS.member) == {"n2"}
        finally:
            corosync.close()


def test_a_rerun_beside_a_running_corosync_answers_through_it(plan):
    n1, n2 = plan.node("n1"), plan.node("n2")
    corosync = _bind(n2.addresses[0], 5405)
    assert isinstance(corosync, socket.socket)
    try:
        with Presence(plan, n2, TOKENS, ttl_s=60) as presence:
            assert [e.mode for e in presence.serving[0].endpoints
                    if e.port == 5405] == ["sniff"]
            assert waiting.answering(n1, {"n2": dict(n2.addresses)}, TOKENS.probe) == {"n2"}
    finally:
        corosync.close()


def test_a_node_whose_addresses_are_elsewhere_refuses_to_start():
    elsewhere = ClusterPlan("lo", (Node("n1", 1, {0: "10.254.250.1"}),
                                   Node("n2", 2, {0: "10.254.250.2"})), (Link(0),))
    with pytest.raises(OperationFailed) as caught:
        Presence(elsewhere, elsewhere.node("n1"), TOKENS, ttl_s=5).open()
    assert caught.value.code == "firstboot-no-link-address"


def test_waiting_until_the_peers_are_checked_names_the_ones_that_are_not(plan):
    """A peer that merely answers (its local checks still running) is not enough: every
    peer must answer the "checked" token before this node probes."""
    n1, n2 = plan.node("n1"), plan.node("n2")
    lines: list[str] = []
    with Presence(plan, n2, TOKENS, ttl_s=60) as p2, \
            Presence(plan, plan.node("n3"), TOKENS, ttl_s=60) as p3:
        p2.announce("checked")
        with pytest.raises(waiting.PeersMissing) as caught:
            waiting.wait_for_checked(plan, n1, TOKENS.checked, timeout_s=1.5, say=lines.append)
        assert caught.value.code == "firstboot-peers-missing"
        assert caught.value.missing == ["n3"]
        p3.announce("checked")
        assert waiting.wait_for_checked(plan, n1, TOKENS.checked, 10, lines.append) == {"n2",
                                                                                        "n3"}


def test_waiting_for_a_stage_returns_who_reached_it(plan):
    n1, n2, n3 = (plan.node(n) for n in ("n1", "n2", "n3"))
    with Presence(plan, n2, TOKENS, ttl_s=60) as p2, \
            Presence(plan, n3, TOKENS, ttl_s=60):
        p2.announce("ready")
        arrived = waiting.wait_for_stage(plan, n1, ["n2", "n3"], "ready", TOKENS.ready,
                                     timeout_s=1.0, say=lambda _m: None, poll_s=0.2)
        assert arrived == {"n2"}
        assert waiting.wait_for_stage(plan, n1, ["n2"], "member", TOKENS.member, timeout_s=0.5,
                                  say=lambda _m: None, poll_s=0.2) == set()


def test_a_local_preflight_fail_stops_before_any_change(plan, tmp_path, capsys):
    """The whole flow for n1 on loopback, with n2 and n3 answering: this machine's host name is
    not n1, so the preflight FAILs on a local check; the apply is never called, nothing is
    marked done, and the saved report says why."""
    answers, tokens = cluster_files(plan, tmp_path)
    applied = []
    with Presence(plan, plan.node("n2"), tokens, ttl_s=60) as p2, \
            Presence(plan, plan.node("n3"), tokens, ttl_s=60) as p3:
        p2.announce("checked")  # their local checks ran: n1 probes once its own did
        p3.announce("checked")
        code = entry.main(["--answers", str(answers), "--node", "n1", "--state-dir",
                               str(tmp_path / "state"), "--duration", "0.5", "--peer-wait",
                               "20", "--quiet"], apply=applied.append)
    assert code == 1 and applied == []
    assert "firstboot-preflight-failed" in capsys.readouterr().out
    saved = json.loads((tmp_path / "state/firstboot-preflight.json").read_text())
    fails = {f["check"] for s in saved["report"]["sections"] for f in s["findings"]
             if f["severity"] == "fail"}
    assert "hostname" in fails
    opened = {(r["peer"], r["state"]) for r in saved["measurements"]["udp"] if not r["legacy"]}
    assert opened == {("n2", "open"), ("n3", "open")}
    assert json.loads((tmp_path / "state/firstboot.json").read_text())["phase"] == "started"
    assert not (tmp_path / "state/firstboot.done").exists()


def test_after_a_passed_preflight_the_apply_runs_once_and_the_node_is_done(plan, tmp_path,
                                                                          capsys):
    """The same flow with this machine's local FAILs ignored by check id (as an answer file's
    ignore_checks would): n1 creates once n2 and n3 are ready, the apply gets n1's request, the
    node is marked done, and a rerun does nothing at all."""
    answers, tokens = cluster_files(plan, tmp_path)
    state = tmp_path / "state"
    argv = ["--answers", str(answers), "--node", "n1", "--state-dir", str(state),
            "--duration", "0.5", "--peer-wait", "20", "--turn-wait", "20", "--linger", "0.5",
            "--quorum-timeout", "42", "--quiet"]
    applied: list = []
    with Presence(plan, plan.node("n2"), tokens, ttl_s=60) as p2, \
            Presence(plan, plan.node("n3"), tokens, ttl_s=60) as p3:
        p2.announce("checked")
        p3.announce("checked")
        assert entry.main(argv, apply=applied.append) == 1
        saved = json.loads((state / "firstboot-preflight.json").read_text())
        local = sorted({f["check"] for s in saved["report"]["sections"] for f in s["findings"]
                        if f["severity"] == "fail"})
        assert local and not set(local) & {"link-ports", "latency", "mtu", "clock-offset"}
        p2.announce("ready")
        p3.announce("ready")
        ignore = [arg for check in local for arg in ("--ignore", check)]
        assert entry.main(argv + ignore, apply=applied.append) == 0
    assert [(r.node, r.quorum_timeout_s, r.ignore) for r in applied] == [
        ("n1", 42.0, tuple(local))]
    done = json.loads((state / "firstboot.done").read_text())
    assert (done["node"], done["cluster"]) == ("n1", plan.cluster_name)
    assert entry.main(argv, apply=applied.append) == 0
    assert len(applied) == 1
    value = firstboot_secret.read(firstboot_secret.path_for(answers))
    printed = capsys.readouterr()
    written = b"".join(f.read_bytes() for f in state.iterdir() if f.is_file())
    for shown in (printed.out.encode(), printed.err.encode(), written, answers.read_bytes()):
        assert value not in shown and value.hex().encode() not in shown.lower()
