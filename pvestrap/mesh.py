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
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

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


def ssh_argv(address: str, remote: Sequence[str], ssh: Sequence[str] = ("ssh",)) -> list[str]:
    return [*ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=accept-new", f"root@{address}",
            " ".join(shlex.quote(a) for a in remote)]


def run_mesh(plan: ClusterPlan, answers_text: str, *, duration_s: float,
             remote: Sequence[str] = ("pvestrap",), ssh: Sequence[str] = ("ssh",),
             launcher: Callable[[str, list[str]], tuple[list[str], dict | None]] | None = None,
             ignore: Sequence[str] = (), timeout_s: float = 120.0,
             progress: Callable[[str], None] | None = None) -> list[NodeResult]:
    """Run the agent on every node of the plan at once; return each node's results.

    launcher(node, agent_argv) -> (argv, env) lets the lab run agents with nsenter (and its
    libfaketime clock offsets) instead of SSH.
    """
    token = secrets.token_hex(16)
    agent = [*remote, "preflight", "--agent"]
    procs: dict[str, subprocess.Popen] = {}
    say = progress or (lambda _m: None)
    try:
        for node in plan.nodes:
            argv, env = launcher(node.name, agent) if launcher else \
                (ssh_argv(node.addresses[min(node.addresses)], agent, ssh), None)
            procs[node.name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True, bufsize=1,
                                                env=env)
            job = {"answers": answers_text, "node": node.name, "token": token,
                   "duration_s": duration_s, "ignore": list(ignore)}
            procs[node.name].stdin.write(json.dumps(job) + "\n")
            procs[node.name].stdin.flush()
        deadline = time.monotonic() + timeout_s
        failed: dict[str, str] = {}
        for name, proc in procs.items():
            line = _read_until(proc, READY, deadline)
            if line is None:
                failed[name] = _why(proc, "did not start its responder")
        say(f"responders up on {len(procs) - len(failed)}/{len(procs)} nodes; probing")
        for name, proc in procs.items():
            if name not in failed:
                proc.stdin.write(GO + "\n")
                proc.stdin.flush()
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
            results.append(NodeResult(name, data["report"], data.get("measurements")))
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
    from pvestrap.checks import probe as wire
    from pvestrap.checks import prober
    from pvestrap.checks.responder import Responder, ResponderConfig, ports_for_links
    from pvestrap.report.jsonout import report_dict

    job = json.loads(stdin.readline() or "{}")
    plan = answers.loads(job["answers"], source="answers (mesh)")
    node = plan.node(job["node"])
    token = wire.Token(job["token"].encode())
    ports = ports_for_links(plan.link_numbers, base_port=5405)
    config = ResponderConfig(token=token, ports=ports,
                             addresses=tuple(sorted(set(node.addresses.values()))),
                             ttl_s=float(job.get("ttl_s", 600)))
    done = threading.Event()
    ignore = tuple(job.get("ignore", ()))
    with Responder(config) as responder:
        thread = threading.Thread(target=responder.serve, kwargs={"stop": done.is_set},
                                  daemon=True)
        thread.start()
        # the CPU-heavy local checks run now, while the others start, not while probes fly
        local = preflight.run_local(plan, node.name, ignore=ignore)
        print(READY, flush=True, file=stdout)
        if stdin.readline().strip() != GO:
            done.set()
            return 1
        settings = prober.ProbeSettings(duration_s=float(job.get("duration_s", 3.0)))
        request = prober.request_from_plan(plan, node.name, settings)
        measured = prober.measure(request, token)
        network = preflight.run_network(plan, node.name, {prober.PROBES_KEY: measured},
                                        ignore=ignore)
        report = preflight.combine(local, network)
        out = {"report": report_dict(report), "measurements": measured.to_dict()}
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


__all__ = ["NodeResult", "agent_main", "matrices", "merge", "run_mesh", "ssh_argv",
           "OperationFailed"]
