"""The wizard's work on the live machine: responder, preflight, fingerprint, apply, status.

This is `flow.Services` for real. It adds nothing of its own to what the CLI does: the preflight
is pvestrap.preflight with the prober's measurements, the apply is pvestrap.apply.flow's
`apply_node` (which shows the diffs and commands, asks, and applies with a progress line per
step), the status is pvestrap.verify's report.

Probing peers needs the token their responders were started with. With a shared token
(`--token-file`, $PVESTRAP_PROBE_TOKEN) the wizard answers probes itself while it runs (so the
other nodes' wizards can measure the path to this one), probes the node it joins, and after a
successful apply leaves a background responder (bounded TTL) for the nodes that join later.
Without one it runs the local checks, the TCP and duplicate-address probes, and says so.
Nodes that are not up yet (the others of a new cluster) are never probed: an unanswered probe
would read as a filtered port.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

from pvestrap import preflight
from pvestrap.apply.flow import ApplyContext, apply_node, probe_peers
from pvestrap.apply.remote_responders import ssh_starter
from pvestrap.checks.probe import Token
from pvestrap.plan import ClusterPlan
from pvestrap.report.model import Report
from pvestrap.system import RealSystem, Secret

RESPONDER_TTL_S = 900.0
PID_FILE = "/run/pvestrap-wizard-responder.pid"


@dataclass
class LiveServices:
    """Holds the in-process responder while the wizard runs (a resource, hence not frozen)."""

    root: str = "/"
    token: Token | None = None
    duration_s: float | None = None
    out: Callable[[str], None] = print
    applying: bool = False  # the user confirmed: an interrupt now may leave changes behind
    _responder: tuple | None = field(default=None, repr=False)

    # -- fingerprint, report, save -----------------------------------------------------------
    def fetch_fingerprint(self, host: str) -> str:
        from pvestrap.fingerprint import fetch_fingerprint

        return fetch_fingerprint(host)

    def render_report(self, report: Report) -> str:
        from pvestrap.report.text import render_text, wants_color

        return render_text(report, color=wants_color(sys.stdout))

    def save(self, path: str, text: str) -> None:
        """The answer file, and the cluster's first-boot secret beside it (made once, 0600,
        kept when there: pvestrap.firstboot.secret)."""
        from pvestrap.atomic import atomic_write
        from pvestrap.firstboot import secret

        atomic_write(path, text, mode=0o644, backup=False)  # OperationFailed names the path
        secret.ensure(secret.path_for(path))

    # -- preflight ---------------------------------------------------------------------------
    def preflight(self, plan: ClusterPlan, node: str) -> Report:
        if self.token is not None:
            self.start_responder(plan)
        return self.probe(plan, node)

    def probe(self, plan: ClusterPlan, node: str) -> Report:
        """The preflight with probes of the nodes that run (probe_peers), no responder of our
        own: also apply's recheck after its network phase when there is a token (corosync is
        about to bind the link ports here)."""
        peers = probe_peers(plan, node)
        if self.token is None and peers:
            self.out(f"  No probe token given (--token-file): {', '.join(sorted(peers))} is not "
                     "probed (its responder answers only probes made with its token).")
            peers = frozenset()
        probes = preflight.Probes(self.token, self.duration_s, only=peers)
        return preflight.run(plan, node, probes=probes, root=self.root)

    def start_responder(self, plan: ClusterPlan) -> None:
        """Answer probes on 5404 and the plan's link ports while the wizard runs."""
        from pvestrap.checks import responder as rsp

        ports = rsp.ports_for_links(plan.link_numbers)
        if self._responder is not None:
            if self._responder[0] == ports:
                return
            self.stop_responder()
        config = rsp.ResponderConfig(token=self.token, ports=ports, ttl_s=RESPONDER_TTL_S)
        server = rsp.Responder(config)
        server.open()
        stop = threading.Event()
        thread = threading.Thread(target=server.serve, kwargs={"stop": stop.is_set},
                                  name="pvestrap-wizard-responder", daemon=True)
        thread.start()
        self._responder = (ports, server, thread, stop)

    def stop_responder(self) -> None:
        """Free the link ports (corosync binds them when the cluster starts)."""
        if self._responder is None:
            return
        _ports, server, thread, stop = self._responder
        stop.set()
        thread.join(timeout=5)
        server.close()
        self._responder = None

    def leave_responder(self, plan: ClusterPlan, node: str) -> None:
        """After the apply: a background responder (bounded TTL) for the nodes that join next.

        It must never hold a link port: corosync binds them only once it has a peer on the
        link (a new cluster's first node has none yet), and a responder owning one would keep
        that link down for good. So this node's link (address, port) pairs are held by
        placeholder sockets while the responder opens: it finds them busy and answers on them
        through a raw socket; then the placeholders are let go."""
        from pvestrap.checks import responder as rsp

        if self.token is None:
            return
        lock = rsp.PidLock(PID_FILE)
        if not lock.acquire():
            return  # one is running already (a wizard run before this one)
        config = rsp.ResponderConfig(token=self.token, ttl_s=RESPONDER_TTL_S,
                                     ports=rsp.ports_for_links(plan.link_numbers))
        addresses = tuple(plan.node(node).addresses.values())
        # The sockets are opened in the daemon: an epoll set opened before the fork would be
        # shared with this process, and closing our copy would empty the daemon's.
        if rsp.daemonize(lock) is None:
            try:
                held = _hold(addresses, [5405 + n for n in plan.link_numbers])
                server = rsp.Responder(config)
                try:
                    server.open()
                finally:
                    for sock in held:
                        sock.close()
                server.serve()
            finally:
                os._exit(0)  # the daemon must not run the wizard's exit handlers
        os.close(lock.fd)
        self.out(f"  A responder answers probes here for {RESPONDER_TTL_S / 60:g} minutes "
                 "(for the nodes that join next).")

    # -- apply and status --------------------------------------------------------------------
    def apply(self, plan: ClusterPlan, node: str, password: Secret | None, report: Report,
              confirm: Callable[[str], bool], out: Callable[[str], None]) -> None:
        def confirmed(text: str) -> bool:
            yes = confirm(text)
            self.applying = self.applying or yes  # a later no keeps the network phase's yes
            return yes

        self.stop_responder()
        ctx = self.apply_context(report, confirmed, out)
        with _password_reference(plan, password) as usable:
            apply_node(usable, node, ctx)  # ApplyDeclined: the flow says what was done
        self.leave_responder(plan, node)

    def apply_context(self, report: Report, confirm: Callable[[str], bool],
                      out: Callable[[str], None]) -> ApplyContext:
        """apply's, as the CLI's: after the network phase a joiner probes the member with the
        wizard's token, or without one through a responder apply starts there over ssh."""
        system = RealSystem(root=self.root)
        return ApplyContext(system, root=self.root, preflight=lambda _plan, _node: report,
                            confirm=confirm, out=out,
                            recheck=self.probe if self.token is not None else None,
                            responders=ssh_starter(system))

    def status(self, plan: ClusterPlan, node: str) -> Report | None:
        from pvestrap.verify import status_report

        return status_report(RealSystem(root=self.root))

    def close(self) -> None:
        self.stop_responder()


def _hold(addresses, ports) -> list[socket.socket]:
    """Bind every (address, port) that is free; corosync may hold some already."""
    held = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for port in ports:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((address, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
    return held


class _password_reference:
    """The typed password as a plan reference the apply can read: an anonymous in-memory file
    (memfd) named by /proc/self/fd/N, so it never reaches a disk, an environment or a log.
    The plan the user saves is not this one."""

    def __init__(self, plan: ClusterPlan, password: Secret | None):
        self.plan, self.password, self.fd = plan, password, None

    def __enter__(self) -> ClusterPlan:
        if self.password is None:
            return self.plan
        self.fd = os.memfd_create("pvestrap-join", 0)
        os.fchmod(self.fd, 0o600)  # a memfd starts as 0777; the password resolver wants 0600
        os.write(self.fd, self.password.value.encode() + b"\n")
        join = dataclasses.replace(self.plan.join, password_file=f"/proc/self/fd/{self.fd}",
                                   password_env=None)
        return dataclasses.replace(self.plan, join=join)

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
