"""Mesh preflight: from one machine, run the preflight on every node and merge one N x N report.

Each node gets one SSH session running `pvestrap preflight --agent`. The agent reads a job (the
answer file, its node name, the probe token, the duration) from stdin, opens its responder, says
READY, waits for GO, runs its checks and probes, prints its measurements and findings as one JSON
line, and keeps answering probes until its stdin closes. So every responder is up before anyone
probes, and none outlives the run. The token travels on stdin, never on a command line.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Finding, Severity
from pvestrap.plan import ClusterPlan

READY = "PVESTRAP-AGENT-READY"
GO = "GO"
RESULT = "PVESTRAP-AGENT-RESULT "


@dataclass(frozen=True)
class NodeResult:
    node: str
    report: Mapping[str, Any] | None  # report_dict() of the node's own report
    measurements: Mapping[str, Any] | None
    error: str | None = None
    data: Mapping[str, Any] | None = None  # the whole RESULT object (other agents than preflight)


def ssh_argv(address: str, remote: Sequence[str], ssh: Sequence[str] = ("ssh",)) -> list[str]:
    return [*ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=accept-new", f"root@{address}",
            " ".join(shlex.quote(a) for a in remote)]


def run_mesh(plan: ClusterPlan, answers_text: str, *, duration_s: float,
             remote: Sequence[str] = ("pvestrap",), ssh: Sequence[str] = ("ssh",),
             launcher: Callable[[str, list[str]], tuple[list[str], dict | None]] | None = None,
             ignore: Sequence[str] = (), timeout_s: float = 120.0,
             progress: Callable[[str], None] | None = None) -> list[NodeResult]:
    """Run the preflight agent on every node of the plan at once; return each node's results.

    launcher(node, agent_argv) -> (argv, env) lets the lab run agents with nsenter (and its
    libfaketime clock offsets) instead of SSH.
    """
    token = secrets.token_hex(16)
    targets = {n.name: n.addresses[min(n.addresses)] for n in plan.nodes}
    jobs = {n.name: {"answers": answers_text, "node": n.name, "token": token,
                     "duration_s": duration_s, "ignore": list(ignore)} for n in plan.nodes}
    return run_agents(targets, [*remote, "preflight", "--agent"], jobs, ssh=ssh,
                      launcher=launcher, timeout_s=timeout_s, progress=progress)


def run_agents(targets: Mapping[str, str], agent: Sequence[str], jobs: Mapping[str, Any], *,
               ssh: Sequence[str] = ("ssh",),
               launcher: Callable[[str, list[str]], tuple[list[str], dict | None]] | None = None,
               timeout_s: float = 120.0,
               progress: Callable[[str], None] | None = None) -> list[NodeResult]:
    """One agent per node (name -> SSH address), all at once: send each its job, wait until
    every one is READY, say GO to all, collect each RESULT line. A node that cannot be reached
    or sends nothing in time is a NodeResult with an error, never an exception."""
    procs: dict[str, subprocess.Popen] = {}
    say = progress or (lambda _m: None)
    agent = list(agent)
    try:
        for name, address in targets.items():
            argv, env = launcher(name, agent) if launcher else (ssh_argv(address, agent, ssh),
                                                                None)
            procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
            try:
                procs[name].stdin.write(json.dumps(jobs[name]) + "\n")
                procs[name].stdin.flush()
            except OSError:
                pass  # it died at once; READY will not come and _why says why
        deadline = time.monotonic() + timeout_s
        failed: dict[str, str] = {}
        for name, proc in procs.items():
            line = _read_until(proc, READY, deadline)
            if line is None:
                failed[name] = _why(proc, "did not start its responder")
        say(f"responders up on {len(procs) - len(failed)}/{len(procs)} nodes; probing")
        for name, proc in procs.items():
            if name not in failed:
                try:
                    proc.stdin.write(GO + "\n")
                    proc.stdin.flush()
                except OSError:
                    failed[name] = _why(proc, "hung up before GO")
        results = []
        for name, proc in procs.items():
            if name in failed:
                results.append(NodeResult(name, None, None, failed[name]))
                continue
            line = _read_until(proc, RESULT, deadline)
            if line is None:
                results.append(NodeResult(name, None, None, _why(proc, "sent no result")))
                continue
            data = json.loads(line[len(RESULT):])
            results.append(NodeResult(name, data.get("report"), data.get("measurements"),
                                      None, data))
            say(f"{name}: done")
        return results
    finally:
        for proc in procs.values():  # hang up on every agent first, then wait for them
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in procs.values():
            _close(proc)


def _read_until(proc: subprocess.Popen, marker: str, deadline: float) -> str | None:
    """The first stdout line starting with marker, or None at EOF or the deadline."""
    box: list[str | None] = [None]

    def reader() -> None:
        for raw in proc.stdout:
            if raw.startswith(marker):
                box[0] = raw.rstrip("\n")
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    return box[0]


def _why(proc: subprocess.Popen, what: str) -> str:
    if proc.poll() is None:
        return f"{what} in time"
    err = (proc.stderr.read() or "").strip().splitlines()
    return f"{what} (exit {proc.returncode}{': ' + ' | '.join(err[-3:]) if err else ''})"


def _close(proc: subprocess.Popen) -> None:
    try:
        if proc.stdin and not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the agent (runs on each node) ------------------------------------------------------------------

def agent_main(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """One node's side of the mesh run; see the module docstring for the conversation."""
    from pvestrap import answers, preflight
    from pvestrap.checks import prober
    from pvestrap.report.jsonout import report_dict

    job = json.loads(stdin.readline() or "{}")
    plan = answers.loads(job["answers"], source="answers (mesh)")
    node = plan.node(job["node"])
    ignore = tuple(job.get("ignore", ()))

    def before_ready():
        # the CPU-heavy local checks run now, while the others start, not while probes fly
        return preflight.run_local(plan, node.name, ignore=ignore)

    def after_go(token, local):
        settings = prober.ProbeSettings(duration_s=float(job.get("duration_s", 3.0)))
        request = prober.request_from_plan(plan, node.name, settings)
        measured = prober.measure(request, token)
        network = preflight.run_network(plan, node.name, {prober.PROBES_KEY: measured},
                                        ignore=ignore)
        report = preflight.combine(local, network)
        return {"report": report_dict(report), "measurements": measured.to_dict()}

    return agent_session(job, plan.link_numbers, node.addresses.values(), before_ready,
                         after_go, stdin, stdout)


def agent_session(job: Mapping[str, Any], links: Sequence[int], addresses: Sequence[str],
                  before_ready: Callable[[], Any], after_go: Callable[[Any, Any], Any],
                  stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The agent's half of the conversation, for any agent: answer probes on the link ports of
    ADDRESSES from before READY until the orchestrator hangs up; run BEFORE_READY, say READY,
    wait for GO, print RESULT + AFTER_GO(token, what before_ready returned)."""
    from pvestrap.checks import probe as wire
    from pvestrap.checks.responder import Responder, ResponderConfig, ports_for_links

    token = wire.Token(job["token"].encode())
    config = ResponderConfig(token=token, ports=ports_for_links(tuple(links), base_port=5405),
                             addresses=tuple(sorted(set(addresses))),
                             ttl_s=float(job.get("ttl_s", 600)))
    done = threading.Event()
    with Responder(config) as responder:
        thread = threading.Thread(target=responder.serve, kwargs={"stop": done.is_set},
                                  daemon=True)
        thread.start()
        early = before_ready()
        print(READY, flush=True, file=stdout)
        if stdin.readline().strip() != GO:
            done.set()
            return 1
        out = after_go(token, early)
        print(RESULT + json.dumps(out), flush=True, file=stdout)
        stdin.read()  # keep answering the others' probes until the orchestrator hangs up
        done.set()
        thread.join(timeout=2)
    return 0


# -- merging -----------------------------------------------------------------------------------------

def merge(plan: ClusterPlan, results: Sequence[NodeResult], ignore: Sequence[str] = ()):
    """One report: every node's findings (subjects prefixed by the node) and the N x N matrices."""
    from pvestrap.checks.runner import build_sections
    from pvestrap.report.model import Report

    by_section: dict[str, list[Finding]] = {}
    for r in results:
        if r.error:
            by_section.setdefault("plan", []).append(Finding(
                "node-unreachable", Severity.FAIL, f"{r.node}: {r.error}", r.node,
                check="mesh", remedy="check SSH root key login to the node and that pvestrap is "
                                     "installed there (--remote-command)"))
            continue
        for section in r.report.get("sections", ()):
            for f in section["findings"]:
                by_section.setdefault(section["name"], []).append(_finding(f, r.node))
    sections = build_sections(by_section, ignore)
    meta = {"cluster": plan.cluster_name, "nodes": len(plan.nodes), "mode": "mesh"}
    return Report("pvestrap preflight (mesh)", sections, meta, matrices(plan, results))


def _finding(d: Mapping[str, Any], node: str) -> Finding:
    subject = d.get("subject")
    if subject and not subject.startswith(node):
        subject = f"{node}: {subject}"
    return Finding(d["code"], Severity(d["severity"]), d["message"], subject or node,
                   d.get("check"), d.get("payload") or {}, d.get("remedy"), d.get("ignored", False))


def matrices(plan: ClusterPlan, results: Sequence[NodeResult]) -> dict[str, dict[str, Any]]:
    """Per link: rows = from node, columns = to node; median RTT and port state."""
    names = [n.name for n in plan.nodes]
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, dict[str, Any]] = {}
    for link in plan.links:
        rtt = [[None] * len(names) for _ in names]
        state = [[None] * len(names) for _ in names]
        loss = [[None] * len(names) for _ in names]
        for r in results:
            for port in (r.measurements or {}).get("udp", ()):
                if port.get("link") != link.number or port.get("legacy"):
                    continue
                i, j = index.get(r.node), index.get(port.get("peer"))
                if i is None or j is None:
                    continue
                state[i][j] = port.get("state")
                rtts = sorted(port.get("rtts_ms") or ())
                if rtts:
                    rtt[i][j] = round(rtts[len(rtts) // 2], 3)
                if port.get("sent"):
                    loss[i][j] = round(100.0 * (port["sent"] - port["received"]) / port["sent"], 1)
        out[f"link{link.number}"] = {"nodes": names, "rtt_ms": rtt, "state": state,
                                     "loss_pct": loss, "port": link.port,
                                     "threshold_ms": plan.preflight.thresholds.latency_fail_ms}
    return out


def require_nodes_reachable(plan: ClusterPlan) -> None:
    if len(plan.nodes) < 2:
        raise UserError("mesh mode needs at least two nodes in the answer file",
                        remedy="add the other nodes, or run `pvestrap preflight` without --mesh")


__all__ = [
    "NodeResult",
    "OperationFailed",
    "agent_main",
    "matrices",
    "merge",
    "run_mesh",
    "ssh_argv",
]
