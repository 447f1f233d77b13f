"""First boot on the wire: this node's responders, and waiting for the others by probing them.

Every node runs the same answer file at about the same time, none of them knowing which peers
are up yet, so each one answers probes from the start (peers wait for that) and keeps answering
until the whole cluster stands: a peer still running its preflight must not see this node's
ports go dark because this node already moved on to create or join.

The catch is that corosync needs its link ports (link N: UDP 5405+N on the node's link-N
address) for itself once this node creates or joins. So the responder never owns them: small
placeholder sockets hold exactly those (address, port) pairs, the responder finds them busy and
answers on them through its raw socket (the way it answers beside a running corosync), and
`release_corosync_ports()` closes the placeholders right before the apply starts corosync. The
responder itself never stops and never has to be restarted.

Two tokens, both derived from one shared secret (see `derive_tokens`): the probe token that the
preflight and the peer wait use, and a member token that only a node which has finished its
create or join answers (a second responder, started by `announce_member()`, also listening
through a raw socket). A joiner waits for its predecessor by probing with the member token.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from pvestrap.checks import prober
from pvestrap.checks.probe import Token
from pvestrap.checks.responder import Endpoint, Responder, ResponderConfig, ports_for_links
from pvestrap.errors import OperationFailed
from pvestrap.plan import ClusterPlan, Node

Say = Callable[[str], None]
# One probe round: three probes per path, then at most 0.7 s for the last reply.
ROUND = prober.ProbeSettings(duration_s=0.3, interval_s=0.1, reply_timeout_s=0.7, mtu=False,
                             icmp=False, dad_wait_s=0.0)
POLL_S = 2.0
PROGRESS_EVERY_S = 15.0


@dataclass(frozen=True)
class Tokens:
    probe: Token   # "I am here": the peer wait and the preflight's probes
    member: Token  # "I am a member of the cluster": what a joiner's successor waits for


def derive_tokens(secret: bytes) -> Tokens:
    """Both tokens from one secret every node of the cluster has and outsiders do not.

    By default the secret is the answer file's bytes: the nodes of one cluster are given the
    same file (the ISO embeds it), nobody else is. HMAC with a fixed label per purpose keeps
    the file itself out of the token, and the two tokens apart.
    """
    def one(label: bytes) -> Token:
        return Token(hmac.new(secret, b"pvestrap-firstboot/" + label,
                              hashlib.sha256).hexdigest().encode())

    return Tokens(probe=one(b"probe"), member=one(b"member"))


class PeersMissing(OperationFailed):
    code = "firstboot-peers-missing"

    def __init__(self, missing: list[str], waited_s: float):
        self.missing = list(missing)
        super().__init__(
            f"{', '.join(missing)} did not answer within {waited_s:g} s",
            remedy="start them (they run the same first boot), check the link networks "
                   "between the nodes, and that every node got the same answer file (the "
                   "probe token is derived from it); then run the first boot again "
                   "(`systemctl start pvestrap-firstboot` or reboot)")


# -- this node's responders -------------------------------------------------------------------------

def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class Presence:
    """This node's responders for the whole first boot (see the module docstring)."""

    def __init__(self, plan: ClusterPlan, node: Node, tokens: Tokens, ttl_s: float,
                 say: Say = lambda _m: None):
        self.plan, self.node, self.tokens, self.ttl_s, self.say = plan, node, tokens, ttl_s, say
        self.placeholders: list[socket.socket] = []
        self.addresses: tuple[str, ...] = ()
        self.serving: list[tuple[Responder, threading.Thread, threading.Event]] = []

    def __enter__(self) -> "Presence":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> tuple[Endpoint, ...]:
        local = []
        for link in sorted(self.plan.links, key=lambda link: link.number):
            address = self.node.addresses[link.number]
            if self._hold(address, link.port):
                local.append(address)
        if not local:
            raise OperationFailed(f"none of {self.node.name}'s link addresses "
                                  f"({', '.join(self.node.addresses.values())}) is on this "
                                  "machine", code="firstboot-no-link-address",
                                  remedy="configure the link addresses of the answer file on "
                                         "this node's NICs (or fix the answer file)")
        self.addresses = tuple(dict.fromkeys(local))
        ports = ports_for_links(self.plan.link_numbers)
        endpoints = self._serve(self.tokens.probe, ports)
        raw = sum(1 for e in endpoints if e.mode == "sniff")
        skipped = [e for e in endpoints if e.mode == "skipped"]
        self.say(f"answering probes on {', '.join(self.addresses)} (UDP "
                 f"{', '.join(map(str, ports))}; {raw} kept free for corosync, answered "
                 "through a raw socket)")
        for e in skipped:
            self.say(f"warning: cannot answer on {e.address}:{e.port}: {e.reason}")
        return endpoints

    def _hold(self, address: str, port: int) -> bool:
        """Hold (address, port) for corosync; False when the address is not local."""
        sock = socket.socket(_family(address), socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return True  # corosync has it already (a rerun): the responder sniffs it too
            if exc.errno == errno.EADDRNOTAVAIL:
                self.say(f"warning: {address} is not on this machine (yet): not answering there")
                return False
            raise OperationFailed(f"cannot bind {address}:{port}: {exc.strerror}",
                                  code="firstboot-bind-failed") from None
        self.placeholders.append(sock)
        return True

    def _serve(self, token: Token, ports: tuple[int, ...]) -> tuple[Endpoint, ...]:
        config = ResponderConfig(token=token, ports=ports, addresses=self.addresses,
                                 ttl_s=self.ttl_s)
        responder = Responder(config)
        endpoints = responder.open()
        stop = threading.Event()
        thread = threading.Thread(target=responder.serve, kwargs={"stop": stop.is_set},
                                  name="pvestrap-responder", daemon=True)
        thread.start()
        self.serving.append((responder, thread, stop))
        return endpoints

    def release_corosync_ports(self) -> None:
        """Let corosync bind its link ports; the responder keeps answering on them."""
        for sock in self.placeholders:
            sock.close()
        self.placeholders.clear()

    def announce_member(self) -> None:
        """From now on also answer the member token: successors may join."""
        if len(self.serving) < 2:
            link_ports = tuple(sorted(link.port for link in self.plan.links))
            self._serve(self.tokens.member, link_ports)
            self.say("member of the cluster: telling the other nodes by probe")

    def close(self) -> None:
        self.release_corosync_ports()
        for responder, thread, stop in self.serving:
            stop.set()
            thread.join(timeout=2)
            responder.close()
        self.serving.clear()


# -- probing the others -----------------------------------------------------------------------------

def answering(me: Node, peers: Mapping[str, Mapping[int, str]], token: Token,
              settings: prober.ProbeSettings = ROUND) -> set[str]:
    """The peers that answer TOKEN on at least one link in one short probe round."""
    if not peers:
        return set()
    targets = prober.udp_targets(peers, dict(me.addresses), legacy=False)
    measured = prober.measure(prober.ProbeRequest(me.name, targets, settings=settings), token)
    return {r.peer for r in measured.udp if r.state == "open"}


def _peers(plan: ClusterPlan, me: Node, names: list[str] | None = None
           ) -> dict[str, dict[int, str]]:
    return {n.name: dict(n.addresses) for n in plan.nodes
            if n.name != me.name and (names is None or n.name in names)}


def wait_for_peers(plan: ClusterPlan, me: Node, token: Token, timeout_s: float, say: Say,
                   poll_s: float = POLL_S) -> set[str]:
    """Until every other node of the plan answers probes; PeersMissing after TIMEOUT_S."""
    peers = _peers(plan, me)
    started = time.monotonic()
    present: set[str] = set()
    shown: tuple[frozenset[str], float] | None = None
    while True:
        present |= answering(me, {n: a for n, a in peers.items() if n not in present}, token)
        missing = sorted(set(peers) - present)
        waited = time.monotonic() - started
        if not missing:
            say(f"all {len(peers)} peers answer ({waited:.0f} s)")
            return present
        if waited >= timeout_s:
            raise PeersMissing(missing, timeout_s)
        if shown is None or shown[0] != frozenset(present) or \
                time.monotonic() - shown[1] >= PROGRESS_EVERY_S:
            say(f"waiting for peers: {len(present)} of {len(peers)} answer; still waiting for "
                f"{', '.join(missing)} ({waited:.0f} s of {timeout_s:g} s)")
            shown = (frozenset(present), time.monotonic())
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))


def wait_for_member(plan: ClusterPlan, me: Node, peer: str, token: Token, timeout_s: float,
                    say: Say, poll_s: float = POLL_S) -> bool:
    """Until PEER answers the member token (it has created or joined); False at the timeout."""
    target = _peers(plan, me, [peer])
    started = time.monotonic()
    last_said = -PROGRESS_EVERY_S
    while True:
        if answering(me, target, token):
            say(f"{peer} is a member of the cluster ({time.monotonic() - started:.0f} s)")
            return True
        waited = time.monotonic() - started
        if waited >= timeout_s:
            return False
        if waited - last_said >= PROGRESS_EVERY_S:
            say(f"waiting for {peer} to be a member before joining ({waited:.0f} s of "
                f"{timeout_s:g} s)")
            last_said = waited
        time.sleep(min(poll_s, max(0.0, timeout_s - waited)))
