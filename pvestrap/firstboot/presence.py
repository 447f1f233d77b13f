"""First boot on the wire: this node's responder, for the whole run.

Every node runs the same answer file at about the same time, none of them knowing which peers
are up yet, so each one answers probes from the start (peers wait for that) and keeps answering
until the whole cluster stands: a peer still running its preflight must not see this node's
ports go dark because this node already moved on to create or join.

The catch is that corosync needs its link ports (link N: UDP 5405+N on the node's link-N
address) for itself. So the responder never owns them: while it opens, small placeholder
sockets hold exactly those (address, port) pairs, the responder finds them busy and answers on
them through its raw socket (the way it answers beside a running corosync). The placeholders
stay until `release_corosync_ports()`, right before the apply starts corosync. The responder is
never stopped or restarted during the run.

Progress is told by probe (tokens.py): each stage is one more token the responder answers
(`announce`). One responder for all of them, not one per stage: its raw socket gets a copy of
every UDP datagram of the node (every probe, every reply to this node's own prober, corosync's
traffic once it runs), and a responder per stage made a node that had passed its preflight
parse each of them two or three times over while the others still measured. The creating node
waits until every peer is ready before it creates, so nobody's preflight probes a node whose
corosync is half up; with `pvecm add` a joiner waits until the node before it is a member
(waiting.turn).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import threading
from typing import Callable

from pvestrap.checks.probe import Token
from pvestrap.checks.responder import Endpoint, Responder, ResponderConfig, ports_for_links
from pvestrap.errors import OperationFailed
from pvestrap.firstboot.tokens import STAGES, Tokens
from pvestrap.plan import ClusterPlan, Node

Say = Callable[[str], None]


def _family(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


class Presence:
    """This node's responders for the whole first boot (see the module docstring)."""

    def __init__(self, plan: ClusterPlan, node: Node, tokens: Tokens, ttl_s: float,
                 say: Say = lambda _m: None):
        self.plan, self.node, self.tokens, self.ttl_s, self.say = plan, node, tokens, ttl_s, say
        self.placeholders: list[socket.socket] = []
        self.addresses: tuple[str, ...] = ()
        self.stages: list[str] = []
        self.serving: tuple[Responder, threading.Thread, threading.Event] | None = None

    def __enter__(self) -> "Presence":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def corosync_ports(self) -> list[tuple[str, int]]:
        """(address, port) of each link as corosync binds them on this node."""
        return [(self.node.addresses[link.number], link.port)
                for link in sorted(self.plan.links, key=lambda link: link.number)]

    def open(self) -> tuple[Endpoint, ...]:
        local = []
        for address, port in self.corosync_ports():
            held = self._hold(address, port)
            if held is not False:
                local.append(address)
                if held is not True:
                    self.placeholders.append(held)
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
        self.say(f"answering probes on {', '.join(self.addresses)} (UDP "
                 f"{', '.join(map(str, ports))}; {raw} kept free for corosync, answered "
                 "through a raw socket)")
        for e in endpoints:
            if e.mode == "skipped":
                self.say(f"warning: cannot answer on {e.address}:{e.port}: {e.reason}")
        return endpoints

    def _hold(self, address: str, port: int) -> socket.socket | bool:
        """A socket holding (address, port); True when something holds it already (corosync,
        on a rerun); False when the address is not on this machine."""
        sock = socket.socket(_family(address), socket.SOCK_DGRAM)
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                return True
            if exc.errno == errno.EADDRNOTAVAIL:
                self.say(f"warning: {address} is not on this machine (yet): not answering there")
                return False
            raise OperationFailed(f"cannot bind {address}:{port}: {exc.strerror}",
                                  code="firstboot-bind-failed") from None
        return sock

    def _serve(self, token: Token, ports: tuple[int, ...]) -> tuple[Endpoint, ...]:
        """Open the responder (corosync's ports are held: it finds them busy and listens
        there only through its raw socket, whether corosync runs yet or not)."""
        responder = Responder(ResponderConfig(token=token, ports=ports,
                                              addresses=self.addresses, ttl_s=self.ttl_s))
        endpoints = responder.open()
        stop = threading.Event()
        thread = threading.Thread(target=responder.serve, kwargs={"stop": stop.is_set},
                                  name="pvestrap-responder", daemon=True)
        thread.start()
        self.serving = (responder, thread, stop)
        return endpoints

    def release_corosync_ports(self) -> None:
        """Let corosync bind its link ports; the responders keep answering on them."""
        for sock in self.placeholders:
            sock.close()
        self.placeholders.clear()

    def announce(self, stage: str) -> None:
        """From now on also answer the STAGE token (checked, ready, member): the responder
        that answers the probe token takes it on (Responder.answer_also), so the node keeps
        one responder, with one raw socket per family, whatever its stage."""
        if stage in self.stages:
            return
        assert self.serving is not None, "announce() after open()"
        self.serving[0].answer_also(self.tokens.stage(stage))
        self.stages.append(stage)
        self.say(f"telling the other nodes by probe: {self.node.name} is {STAGES[stage]}")

    def close(self) -> None:
        self.release_corosync_ports()
        if self.serving is not None:
            responder, thread, stop = self.serving
            stop.set()
            thread.join(timeout=2)
            responder.close()
        self.serving = None
