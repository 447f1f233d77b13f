"""`pvestrap doctor`: the checks over every node's facts, and the one Report out of them.

On one node: gather this node's facts (a knet window included), run the checks. With --mesh:
the mesh runner (pvestrap.mesh.run_agents) starts `pvestrap doctor --agent` on every node of
the nodelist over SSH; each agent answers probes on its link ports, gathers its facts, probes
the others for the clock offsets (preflight's clock-offset check) while its knet window runs,
and sends its facts back; the orchestrator runs the same checks over all of them. A node that
does not answer is a finding (node-unreachable), its facts are simply missing.
"""

from __future__ import annotations

import secrets
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pvestrap import __version__, mesh
from pvestrap.checks import prober
from pvestrap.checks.base import Context
from pvestrap.checks.clockpair import ClockPairCheck
from pvestrap.checks.localsys import LIVE, Sources
from pvestrap.checks.runner import build_sections, run_one
from pvestrap.checks.timesync import LocalSyncCheck
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.doctor import cluster_checks, config_checks, identity_checks
from pvestrap.doctor import facts as F
from pvestrap.doctor.knet import KnetLatencyCheck, KnetLinksCheck, windows
from pvestrap.doctor.view import DoctorView, NodeView
from pvestrap.errors import UserError
from pvestrap.findings import Finding, Severity
from pvestrap.plan import ip_or_none
from pvestrap.report.model import Report

AGENT = ("doctor", "--agent")
NODE_FINDINGS = "findings"  # facts key: finding dicts of preflight checks run on the node
FAMILY_OF = {"time-sync": "timesync", "clock-offset": "clock"}


def doctor_checks() -> tuple:
    return (*config_checks.checks(), *identity_checks.checks(), *cluster_checks.checks(),
            KnetLinksCheck(), KnetLatencyCheck())


def catalogue() -> list[tuple[str, str, str]]:
    own = [(c.id, c.family, c.title) for c in doctor_checks()]
    return own + [("time-sync", "timesync", LocalSyncCheck.title),
                  ("clock-offset", "clock", "clock offset between the nodes (--mesh, probes)")]


def node_facts(root: str, window_s: float, sources: Sources = LIVE,
               sample: bool = True) -> dict[str, Any]:
    """This node's facts plus preflight's time-sync finding, judged here where it was read."""
    facts = F.snapshot(root, sources)
    sync = run_one(LocalSyncCheck(sources), Context(node=facts["hostname"], root=root))
    facts[NODE_FINDINGS] = [f.as_dict() for f in sync]
    if sample:
        F.add_window(facts, window_s, sources)
    return facts


def report(view: DoctorView, facts_by_node: Mapping[str, Mapping[str, Any]],
           ignore: Sequence[str] = (), meta: Mapping[str, Any] | None = None) -> Report:
    ctx = Context(node=view.local, options={"doctor": view})
    by_family: dict[str, list[Finding]] = {}
    for check in doctor_checks():
        by_family.setdefault(check.family, []).extend(run_one(check, ctx))
    for name, facts in facts_by_node.items():
        for d in facts.get(NODE_FINDINGS) or ():
            finding = _revive(d, name)
            by_family.setdefault(FAMILY_OF.get(finding.check or "", "timesync"),
                                 []).append(finding)
    conf = view.conf
    full = {"cluster": conf.cluster_name if conf else None, "node": view.local,
            "host": socket.gethostname(), "pvestrap": __version__, "mode":
            "mesh" if view.mesh else "local", "nodes": sorted(view.nodes),
            "latency_fail_ms": view.latency_ms, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **(meta or {})}
    return Report("pvestrap doctor", build_sections(by_family, ignore), full,
                  matrices(view))


def _revive(d: Mapping[str, Any], node: str) -> Finding:
    subject = d.get("subject") or node
    if not str(subject).startswith(node):
        subject = f"{node}: {subject}"
    return Finding(d["code"], Severity(d["severity"]), d["message"], subject, d.get("check"),
                   d.get("payload") or {}, d.get("remedy"), d.get("ignored", False))


def matrices(view: DoctorView) -> dict[str, dict[str, Any]]:
    """Per link: rows = from node, columns = to node; knet's window latency and link state."""
    conf = view.conf
    if conf is None:
        return {}
    names = [n.name or f"node{n.nodeid}" for n in conf.nodes]
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for link in conf.link_numbers:
        rtt: list[list[float | None]] = [[None] * len(names) for _ in names]
        state: list[list[str | None]] = [[None] * len(names) for _ in names]
        for node in view.nodes.values():
            for w in windows(view, node):
                i, j = index.get(w.node), index.get(w.peer)
                if w.link != link or i is None or j is None:
                    continue
                state[i][j] = "disconnected" if w.down_now else "connected"
                if w.window_ave_us is not None:
                    rtt[i][j] = round(w.window_ave_us / 1000, 3)
        out[f"link{link}"] = {"nodes": names, "rtt_ms": rtt, "state": state,
                              "threshold_ms": view.latency_ms}
    return out


def run_local(root: str = "/", window_s: float = 5.0, latency_ms: float = 2.0,
              ignore: Sequence[str] = (), sources: Sources = LIVE) -> Report:
    started = time.monotonic()
    facts = node_facts(root, window_s, sources)
    view = DoctorView.of({"local": facts}, latency_ms=latency_ms)
    return report(view, {view.local: facts}, ignore,
                  {"duration_s": round(time.monotonic() - started, 3), "window_s": window_s})


# -- mesh ------------------------------------------------------------------------------------------

def mesh_targets(conf_text: str | None) -> dict[str, str]:
    """node name -> where to SSH: its link0 (lowest link) address from the nodelist."""
    if conf_text is None:
        raise UserError("--mesh needs this node's corosync.conf to find the other nodes",
                        code="doctor-no-conf", remedy="run it on a cluster member (or give "
                        "--root with etc/corosync/corosync.conf)")
    conf = CorosyncConf.parse(conf_text)
    out = {}
    for node in conf.nodes:
        if node.name and node.addresses:
            out[node.name] = node.addresses[min(node.addresses)]
    return out


def run_mesh(root: str = "/", window_s: float = 5.0, latency_ms: float = 2.0,
             ignore: Sequence[str] = (), remote: Sequence[str] = ("pvestrap",),
             launcher: Callable | None = None, probe_s: float = 1.0, timeout_s: float = 120.0,
             progress: Callable[[str], None] | None = None) -> Report:
    started = time.monotonic()
    targets = mesh_targets(F.read_file(root, F.PVE_COROSYNC_CONF)
                           or F.read_file(root, F.COROSYNC_CONF))
    token = secrets.token_hex(16)
    jobs = {name: {"token": token, "root": root, "window_s": window_s, "probe_s": probe_s}
            for name in targets}
    results = mesh.run_agents(targets, [*remote, *AGENT], jobs, launcher=launcher,
                              timeout_s=timeout_s + window_s, progress=progress)
    facts = {r.node: r.data["facts"] for r in results if r.data and r.data.get("facts")}
    unanswered = {r.node: r.error or "sent no facts" for r in results
                  if not (r.data and r.data.get("facts"))}
    me = socket.gethostname().split(".")[0]
    view = DoctorView.of(facts, local=me, mesh=True, unanswered=unanswered,
                         latency_ms=latency_ms)
    return report(view, facts, ignore, {"duration_s": round(time.monotonic() - started, 3),
                                        "window_s": window_s})


def agent_main(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """One node's side of `doctor --mesh` (the conversation of pvestrap.mesh)."""
    job = mesh.read_job(stdin, "token")
    root = str(job.get("root") or "/")
    text = F.read_file(root, F.COROSYNC_CONF)
    conf = CorosyncConf.parse(text) if text else None
    me = NodeView({"hostname": socket.gethostname().split(".")[0],
                   "files": {F.COROSYNC_CONF: text},
                   "commands": {" ".join(F.VOTEQUORUM): _cmd(F.VOTEQUORUM)}}).name
    peers = {n.name: {k: a for k, a in n.addresses.items() if ip_or_none(a) is not None}
             for n in (conf.nodes if conf else ()) if n.name and n.name != me}
    mine = next((n.addresses for n in (conf.nodes if conf else ()) if n.name == me), {})
    mine = {k: a for k, a in mine.items() if ip_or_none(a) is not None}
    links = conf.link_numbers if conf else (0,)

    def before_ready():
        return node_facts(root, 0.0, sample=False)

    def after_go(token, facts):
        settings = prober.ProbeSettings(duration_s=float(job.get("probe_s", 1.0)), mtu=False,
                                        icmp=False)
        request = prober.ProbeRequest(me, prober.udp_targets(peers, mine), settings=settings)
        measured = prober.measure(request, token)
        ctx = Context(node=me, probes={prober.PROBES_KEY: measured})
        facts[NODE_FINDINGS] += [f.as_dict() for f in run_one(ClockPairCheck(), ctx)]
        F.add_window(facts, float(job.get("window_s", 5.0)))
        return {"facts": facts}

    return mesh.agent_session(job, links, list(mine.values()), before_ready, after_go, stdin,
                              stdout)


def _cmd(argv: tuple[str, ...]) -> dict[str, Any]:
    res = LIVE.runner(list(argv))
    return {"rc": res.rc, "stdout": res.stdout, "stderr": res.stderr}


__all__ = ["NodeView", "agent_main", "catalogue", "doctor_checks", "node_facts", "report",
           "run_local", "run_mesh"]
