"""TCP services a node needs from others: the join target's API (8006) and SSH (22), and the
QDevice's qnetd (5403).

`pvecm add` joins over the API on 8006; `--use_ssh` and most tooling need 22; every node of a
cluster with a QDevice needs 5403 to the qnetd host. The connects run inside the prober's loop
(ConnectFlow: non-blocking connect, then SO_ERROR), all at once.

Findings (subject `pve2->pve1:8006/tcp`): tcp-port-open (PASS), tcp-port-closed (FAIL: RST, nothing
listens), tcp-port-filtered (FAIL: no answer), tcp-port-unreachable (FAIL: no route),
tcp-unmeasured (SKIP: nothing to check, or not measured). Payload: name, address, port,
purpose (join-api | join-ssh | qdevice), connect_ms.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.findings import Finding, Severity

if TYPE_CHECKING:
    from pvestrap.plan import ClusterPlan

PORTS = {"join-api": 8006, "join-ssh": 22, "qdevice": 5403}
_SERVICE = {"join-api": "the Proxmox VE API (pveproxy)", "join-ssh": "SSH (sshd)",
            "qdevice": "corosync-qnetd"}


def targets_for(plan: "ClusterPlan", node: str, resolver: Resolver = resolve
                ) -> tuple["prober.TcpTarget", ...]:
    """22 (and 8006 on Proxmox VE when the plan names the root password: the corosync backend
    and pvecm add --use_ssh join over SSH only) to the join target for a joining node (as this
    node reaches it, RESOLVER its name lookup: plan.join_address); 5403 to the QDevice for
    every node."""
    out = []
    if plan.role_of(node) == "join":
        address = plan.join_address(resolver)
        name = next((n.name for n in plan.nodes
                     if address == n.name or address in n.addresses.values()), address)
        # The API join (8006) exists only on Proxmox VE, and only with the root password;
        # without one, pvecm add --use_ssh joins over 22.
        if plan.backend != "corosync" and plan.join.names_password:
            out.append(prober.TcpTarget(name, address, PORTS["join-api"], "join-api"))
        out.append(prober.TcpTarget(name, address, PORTS["join-ssh"], "join-ssh"))
    if plan.qdevice is not None:
        out.append(prober.TcpTarget("qdevice", plan.qdevice.host, PORTS["qdevice"], "qdevice"))
    return tuple(out)


class ConnectFlow:
    """One non-blocking connect as a flow of the prober's loop."""

    events = selectors.EVENT_WRITE

    def __init__(self, target: "prober.TcpTarget", timeout_s: float):
        self.target = target
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout_s
        self.state: str | None = None
        self.error: str | None = None
        self.connect_ms: float | None = None
        self.sock: socket.socket | None = None
        self.done = False
        try:
            info = socket.getaddrinfo(target.address, target.port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(info[0], socket.SOCK_STREAM)
        except OSError as exc:
            self._finish("error", exc.strerror or str(exc))
            return
        sock.setblocking(False)
        self.sock = sock
        code = sock.connect_ex(info[4])
        if code != errno.EINPROGRESS:
            self._finish(*_state(code))

    def wake_at(self) -> float:
        return self.deadline

    def on_timer(self, now: float) -> None:
        self._finish("filtered", "no answer")

    def on_event(self, now: float) -> None:
        if self.sock is None:  # done at once: never registered with the loop
            return
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self.connect_ms = round((now - self.t0) * 1000, 3)
        self._finish(*_state(code))

    def _finish(self, state: str, error: str | None) -> None:
        self.state, self.error, self.done = state, error, True

    def result(self) -> "prober.TcpResult":
        if self.sock is not None:
            self.sock.close()
        t = self.target
        return prober.TcpResult(t.name, t.address, t.port, t.purpose, self.state or "error",
                                self.connect_ms, self.error)


def _state(code: int) -> tuple[str, str | None]:
    if code == 0:
        return "open", None
    if code == errno.ECONNREFUSED:
        return "closed", "connection refused"
    if code == errno.ETIMEDOUT:
        return "filtered", "no answer"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable", "no route to host"
    return "error", errno.errorcode.get(code, str(code))


@dataclass(frozen=True)
class TcpCheck:
    id: str = "tcp-services"
    family: str = "tcp"
    title: str = "TCP 8006 and 22 to the join target, 5403 to the QDevice"

    def run(self, ctx: Context) -> list[Finding]:
        found = prober.measurements(ctx)
        if found is None:
            return [Finding("tcp-unmeasured", Severity.SKIP, "no probes were run", ctx.node)]
        if not found.tcp:
            return [Finding("tcp-unmeasured", Severity.SKIP, "nothing to check: this node joins "
                            "no one and the plan has no QDevice", ctx.node)]
        me = ctx.node or found.node or "this node"
        return [_finding(me, r) for r in found.tcp]


def _finding(me: str, r: "prober.TcpResult") -> Finding:
    subject = f"{me}->{r.name}:{r.port}/tcp"
    payload = {"name": r.name, "address": r.address, "port": r.port, "purpose": r.purpose,
               "connect_ms": r.connect_ms}
    service = _SERVICE.get(r.purpose, f"TCP {r.port}")
    where = f"{r.name} ({r.address})" if r.name != r.address else r.address
    if r.state == "open":
        return Finding("tcp-port-open", Severity.PASS, f"{service} on {where} answers on TCP "
                       f"{r.port}", subject, payload=payload)
    if r.state == "closed":
        return Finding("tcp-port-closed", Severity.FAIL, f"nothing listens on TCP {r.port} on "
                       f"{where} (connection refused)", subject, payload=payload,
                       remedy=f"start {service} on {r.name} (`systemctl status ...` there), or "
                              f"remove the REJECT rule for TCP {r.port}")
    if r.state == "filtered":
        return Finding("tcp-port-filtered", Severity.FAIL, f"TCP {r.port} on {where} does not "
                       "answer: a firewall drops it", subject, payload=payload,
                       remedy=f"allow TCP {r.port} from this node on {r.name}, e.g. `nft add "
                              f"rule inet filter input tcp dport {r.port} accept`, or in "
                              "pve-firewall's datacenter/host rules")
    if r.state == "unreachable":
        return Finding("tcp-port-unreachable", Severity.FAIL, f"no route to {where}", subject,
                       payload=payload, remedy="check the address and this node's routes")
    return Finding("tcp-unmeasured", Severity.SKIP, f"TCP {r.port} to {where} not measured: "
                   f"{r.error}", subject, payload=payload)
