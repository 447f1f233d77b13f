"""Helpers of the wizard tests (no tests here): a scripted asker, fake services, a recorded
machine and the GUI's Join Information blob.

Other test modules load this file by path, since pytest runs with --import-mode=importlib and
the tests folder is not a package.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from pvestrap.apply.engine import ApplyDeclined
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.findings import Finding, Severity
from pvestrap.report.model import Report, ReportSection

FINGERPRINT = ":".join(["AB"] * 32)


def machine(hostname: str = "pve1") -> Machine:
    """eth0 (management, default route), eth1 (a second network) and eth2 (free)."""
    up = ("BROADCAST", "UP", "LOWER_UP")
    return Machine(hostname, (
        Interface("lo", "loopback", flags=("LOOPBACK", "UP", "LOWER_UP"),
                  addresses=(IfAddress("127.0.0.1", 8, "host"),)),
        Interface("eth0", "physical", flags=up, addresses=(IfAddress("10.1.0.1", 24),)),
        Interface("eth1", "physical", flags=up, addresses=(IfAddress("10.2.0.1", 24),
                                                           IfAddress("fe80::1", 64, "link"))),
        Interface("eth2", "physical", flags=up),
    ), ("eth0",))


def join_blob(address: str, fingerprint: str, peer_links: dict[int, str],
              cluster: str = "prod") -> str:
    """The GUI's Join Information as pve-manager builds it (see pvestrap.joininfo)."""
    totem = {"cluster_name": cluster, "config_version": "3", "ip_version": "ipv4-6",
             "link_mode": "passive", "secauth": "on", "version": "2",
             "interface": {str(n): {"linknumber": str(n)} for n in peer_links}}
    data = {"ipAddress": address, "fingerprint": fingerprint,
            "peerLinks": {str(n): a for n, a in peer_links.items()},
            "ring_addr": list(peer_links.values()), "totem": totem}
    return base64.b64encode(json.dumps(data).encode()).decode()


class ScriptedAsker:
    """Answers from a script of (question id, answer); `...` takes the offered default.

    Fails loudly when the flow asks a question the script did not expect, so a test states
    the exact conversation."""

    interactive = True

    def __init__(self, script):
        self.script = list(script)
        self.asked: list[str] = []
        self.said: list[str] = []
        self.defaults: dict[str, Any] = {}
        self.prompts: dict[str, str] = {}

    def ask(self, question, state, default):
        assert self.script, f"unexpected question {question.id!r} (script is empty)"
        qid, answer = self.script.pop(0)
        assert qid == question.id, f"asked {question.id!r}, script expected {qid!r}"
        self.asked.append(qid)
        self.defaults[qid] = default
        self.prompts[qid] = question.message(state)
        if isinstance(answer, BaseException):
            raise answer
        return default if answer is ... else answer

    def say(self, text):
        self.said.append(text)

    def done(self):
        assert self.script == [], f"questions never asked: {[q for q, _ in self.script]}"


def report(*findings: Finding) -> Report:
    return Report("test preflight", (ReportSection("nics", "NICS", tuple(findings)),))


@dataclass
class FakeServices:
    """The flow's seams, recorded. `fails(plan, node)` returns the FAIL findings to report."""

    fingerprint: str = FINGERPRINT
    fails: Any = None
    apply_answer: bool | None = None
    fetched: list[str] = field(default_factory=list)
    preflights: list[Any] = field(default_factory=list)
    applied: list[Any] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)

    def fetch_fingerprint(self, host):
        self.fetched.append(host)
        return self.fingerprint

    def preflight(self, plan, node):
        self.preflights.append((plan, node))
        found = list(self.fails(plan, node)) if self.fails else []
        return report(*(found or [Finding("link-address-local", Severity.PASS, "ok",
                                          f"{node}/link0", "link-address")]))

    def apply(self, plan, node, password, rep, confirm, out):
        out("+ step: shown before asking")
        if not confirm(f"Apply these changes on {node}?"):
            raise ApplyDeclined()
        self.applied.append((plan, node, password))
        out("[applied] step")

    def status(self, plan, node):
        return report(Finding("quorate", Severity.PASS, "quorate", node, "status"))

    def save(self, path, text):
        self.saved[path] = text

    def render_report(self, rep):
        return "\n".join(f"{f.severity.label}: {f.code} {f.subject}" for f in rep.findings)
