"""The QDevice as the running cluster sees it, for `pvestrap status` and `pvestrap qdevice status`.

votequorum (`corosync-quorumtool -s`) says whether the cluster counts a Qdevice (the `Qdevice`
flag), how many votes it carries (member 0) and, per node, the qdevice flags (corosync's
quorumtool.c: A alive / NA, V voting / NV, MW / NMW master wins, NR not registered);
`corosync-qdevice-tool -s` says whether this node's qdevice is connected to corosync-qnetd and
with which algorithm; corosync.conf's quorum.device says what was configured.
"""

from __future__ import annotations

import re
from typing import Any

from pvestrap import qdevice as model
from pvestrap.errors import PvestrapError
from pvestrap.findings import Finding, fail, info, passed, warn
from pvestrap.system import System

CHECK = "qdevice"
TOOL = ("corosync-qdevice-tool", "-s")
_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9 -]*?):\s*(.*?)\s*$")


def parse_tool(text: str) -> dict[str, str]:
    """`corosync-qdevice-tool -s`: its `Key:<tabs>value` lines (the first of each key)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match and match.group(2):
            out.setdefault(match.group(1), match.group(2))
    return out


def read_tool(system: System) -> dict[str, str] | None:
    """This node's qdevice, or None when it does not run (or cannot be asked)."""
    try:
        result = system.run(list(TOOL), check=False, mutates=False, timeout=10)
    except PvestrapError:
        return None
    return parse_tool(result.stdout) if result.returncode == 0 and result.stdout else None


def qdevice_findings(obs: Any, system: System | None = None,
                     tool: dict[str, str] | None = None) -> list[Finding]:
    """Findings about the QDevice (empty when none is configured or counted). OBS is the
    verify.Observed of this node; TOOL (or SYSTEM, to ask) corosync-qdevice-tool -s."""
    device = model.configured(obs.conf) if obs.conf is not None else None
    quorum = obs.quorum
    counted = quorum is not None and "Qdevice" in quorum.flags
    if device is None and not counted:
        return []
    if tool is None and system is not None:
        tool = read_tool(system)
    member = next((m for m in (quorum.members if quorum else ()) if m.is_qdevice), None)
    payload: dict[str, Any] = {
        "host": (device or {}).get("host"), "algorithm": (device or {}).get("algorithm"),
        "tie_breaker": (device or {}).get("tie_breaker", "lowest"),
        "configured": device is not None, "counted": counted,
        "votes": member.votes if member else None,
        "expected_votes": quorum.expected_votes if quorum else None,
        "total_votes": quorum.total_votes if quorum else None,
        "state": (tool or {}).get("State"), "flags": {}}
    out = [_connection(payload, tool, counted)]
    for node in (quorum.nodes_only if quorum else ()):
        flags = (node.qdevice or "").split(",") if node.qdevice else []
        payload["flags"][node.name] = node.qdevice
        out.append(_node(node.name, flags))
    return [f if f.check else Finding(f.code, f.severity, f.message, f.subject, CHECK,
                                      f.payload, f.remedy) for f in out]


def _connection(payload: dict, tool: dict[str, str] | None, counted: bool) -> Finding:
    host = payload["host"] or "?"
    if not payload["configured"]:
        return warn("qdevice-not-in-conf", "corosync counts a Qdevice that corosync.conf does "
                    "not configure", host, payload=payload,
                    remedy="compare corosync.conf with the running config (reload)")
    if tool is None:
        return fail("qdevice-not-running", f"corosync-qdevice does not run on this node "
                    f"(QDevice {host})", host, payload=payload,
                    remedy="systemctl enable --now corosync-qdevice")
    state = tool.get("State", "?")
    if state != "Connected" or not counted:
        return fail("qdevice-disconnected", f"QDevice {host}: {state}"
                    + ("" if counted else ", not counted by votequorum"), host, payload=payload,
                    remedy=f"check that corosync-qnetd runs on {host} and TCP "
                           f"{model.QNETD_PORT} is open from every node")
    return passed("qdevice-connected", f"QDevice {host}: connected, {payload['algorithm']}, "
                  f"{payload['votes']} vote(s); {payload['total_votes']} of "
                  f"{payload['expected_votes']} expected votes", host, payload=payload)


def _node(name: str, flags: list[str]) -> Finding:
    shown = ",".join(flags) or "none"
    payload = {"node": name, "flags": flags}
    if "NR" in flags:
        return fail("qdevice-node-not-registered", f"{name}: qdevice not registered ({shown})",
                    name, payload=payload, remedy=f"start corosync-qdevice on {name}")
    if "V" not in flags:
        return warn("qdevice-node-not-voting", f"{name}: the QDevice does not vote for it "
                    f"({shown})", name, payload=payload)
    return info("qdevice-node-voting", f"{name}: {shown}", name, payload=payload)
