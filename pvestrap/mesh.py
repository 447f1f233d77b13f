"""Mesh preflight: from one machine, run the preflight on every node and merge one N x N report.

Each node gets one SSH session running `pvestrap preflight --agent`. The agent reads a job (the
answer file, its node name, the probe token, the duration) from stdin, opens its responder, runs the
local checks, says READY, waits for GO, probes and runs the network checks (one
pvestrap.preflight.run, whose probe source is that handshake), prints its report (findings and its
own row of the matrices) as one JSON line, and keeps answering probes until its stdin closes. So
every responder is up before anyone probes, and none outlives the run. The token travels on stdin,
never on a command line.

Agents start in parallel; probes start on one GO once every agent is READY, not pair by pair as
each pair gets ready: a per-pair start cannot end sooner (the last agent to be READY still probes
every peer, and is probed, for the whole sampling time after it is READY, so the run ends at the
last READY + the sampling time either way), and it would put probes next to the other agents'
CPU-heavy start and local checks, which skews the round-trip times they measure.

Since every agent probes at the same time, each pair's round trip is sampled from one of its
two ends (preflight.Probes(shared=True), prober.samples_pair): that end judges the pair's
latency, jitter and loss; the other end sends probes until its ports answered a few times (each
direction's ports are still checked) and says who sampled the pair (latency-by-peer, INFO).
Sampling every path from both ends measured each round trip twice and made every responder
answer twice as many probes: 32 lab nodes x 2 links, alternating with and without, the agents'
CPU went from 10.5 to 8.9 s per run and the run from 7.3-7.4 to 6.3-6.6 s.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import secrets
import select
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pvestrap import answers, preflight
from pvestrap.checks import probe as wire
from pvestrap.checks.responder import Responder, ResponderConfig, ports_for_links
from pvestrap.checks.runner import build_sections
from pvestrap.errors import PvestrapError, UserError
from pvestrap.findings import Finding, Severity
from pvestrap.plan import ClusterPlan
from pvestrap.report.jsonout import report_dict
from pvestrap.report.model import Report

READY = "PVESTRAP-AGENT-READY"
GO = "GO"
MAX_JOB_BYTES = 4 << 20  # the job carries an answer file (at most 1 MiB), JSON-escaped
RESULT = "PVESTRAP-AGENT-RESULT "


@dataclass(frozen=True)
class NodeResult:
    node: str
    report: Mapping[str, Any] | None  # report_dict() of the node's own report
    error: str | None = None
    data: Mapping[str, Any] | None = None  # the whole RESULT object (other agents than preflight)
    exit: int | None = None  # an agent that failed: its (or ssh's) exit code, None still running


# One SSH session per node, all opened at once: the key exchange is most of their CPU (OpenSSH
# 9.2's default sntrup761x25519: 72 ms of client CPU per session, 32 nodes 2.3 s before any agent
# starts). The key exchange stays the admin's and OpenSSH's choice: pvestrap does not trade the
# post-quantum exchange for speed. UpdateHostKeys=no: no extra round trip after login to learn
# more host keys; GSSAPIAuthentication=no: no Kerberos attempt before the key.
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
               "-o", "StrictHostKeyChecking=accept-new",
               "-o", "UpdateHostKeys=no", "-o", "GSSAPIAuthentication=no")


def ssh_argv(address: str, remote: Sequence[str], ssh: Sequence[str] = ("ssh",)) -> list[str]:
    return [*ssh, *SSH_OPTIONS, f"root@{address}", " ".join(shlex.quote(a) for a in remote)]


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
    with held_agents(targets, agent, jobs, ssh=ssh, launcher=launcher, timeout_s=timeout_s,
                     progress=progress) as results:
        return results


@contextmanager
def held_agents(targets: Mapping[str, str], agent: Sequence[str], jobs: Mapping[str, Any], *,
                ssh: Sequence[str] = ("ssh",),
                launcher: Callable[[str, list[str]], tuple[list[str], dict | None]] | None = None,
                timeout_s: float = 120.0,
                progress: Callable[[str], None] | None = None) -> Iterator[list[NodeResult]]:
    """run_agents, holding the agents for the block: their results come at its start, and
    they keep answering probes until it ends (on an exception too), then hang up."""
    procs: dict[str, subprocess.Popen] = {}
    agent = list(agent)
    try:
        for name, address in targets.items():
            argv, env = launcher(name, agent) if launcher else (ssh_argv(address, agent, ssh),
                                                                None)
            procs[name] = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, text=True, bufsize=1, env=env)
            try:
                _send(procs[name], json.dumps(jobs[name]))
            except OSError:
                pass  # it died at once; READY will not come and _failed says why
        yield _converse(procs, time.monotonic() + timeout_s, progress or (lambda _m: None))
    finally:
        for proc in procs.values():  # hang up on every agent first, then wait for them
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
        for proc in procs.values():
            _close(proc)


def _converse(procs: Mapping[str, subprocess.Popen], deadline: float,
              say: Callable[[str], None]) -> list[NodeResult]:
    """READY from every agent, GO to each that is, then each one's RESULT."""
    failed: dict[str, NodeResult] = {}
    for name, proc in procs.items():
        if _read_until(proc, READY, deadline) is None:
            failed[name] = _failed(name, proc, "did not start its responder")
    say(f"responders up on {len(procs) - len(failed)}/{len(procs)} nodes; probing")
    for name, proc in procs.items():
        if name not in failed:
            try:
                _send(proc, GO)
            except OSError:
                failed[name] = _failed(name, proc, "hung up before GO")
    results = []
    for name, proc in procs.items():
        if name in failed:
            results.append(failed[name])
            continue
        line = _read_until(proc, RESULT, deadline)
        if line is None:
            results.append(_failed(name, proc, "sent no result"))
            continue
        data = json.loads(line[len(RESULT):])
        results.append(NodeResult(name, data.get("report"), None, data))
        say(f"{name}: done")
    return results


def _read_until(proc: subprocess.Popen, marker: str, deadline: float) -> str | None:
    """The first stdout line starting with marker, or None at EOF or the deadline."""
    box: list[str | None] = [None]

    def reader() -> None:
        for raw in proc.stdout or ():
            if raw.startswith(marker):
                box[0] = raw.rstrip("\n")
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    return box[0]


def _send(proc: subprocess.Popen, line: str) -> None:
    """One line to an agent's stdin (OSError when it hung up)."""
    if proc.stdin is None:
        raise OSError("the agent has no stdin")
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _failed(name: str, proc: subprocess.Popen, what: str) -> NodeResult:
    """NODE's agent said nothing more: why (WHAT, and how it ended) and its exit code."""
    if proc.poll() is None:
        try:  # its output ended: it is exiting (ssh says 127 when the command is missing)
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    return NodeResult(name, None, _why(proc, what), exit=proc.returncode)


def _why(proc: subprocess.Popen, what: str) -> str:
    if proc.poll() is None:
        return f"{what} in time"
    err = ((proc.stderr.read() if proc.stderr else "") or "").strip().splitlines()
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


# -- the agent (runs on each node) -----------------------------------------------------------------

def agent_entry() -> int:
    """agent_main as the `pvestrap preflight --agent` process runs it (pvestrap.launch): its
    errors as the CLI shows them, one line on stderr (the orchestrator quotes the last ones)."""
    try:
        return agent_main()
    except PvestrapError as exc:
        print(exc.render(), file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - as the CLI: a bug is a line, not a traceback
        print(f"internal error (a bug in pvestrap): {type(exc).__name__}: {exc}\n"
              "  run `pvestrap --debug preflight --agent` for the traceback", file=sys.stderr)
        return 70


def read_job(stdin, *required: str) -> dict[str, Any]:
    """An agent's job: the first line of STDIN, a JSON object with the REQUIRED keys (a
    UserError, exit 2, naming what is wrong). The orchestrator writes it; a person running an
    agent by hand gets told so."""
    line = stdin.readline(MAX_JOB_BYTES)
    try:
        job = json.loads(line or "{}")
    except ValueError:
        job = None
    missing = [k for k in required if not isinstance(job, dict) or k not in job]
    if not isinstance(job, dict) or missing:
        what = "is not a JSON object" if not isinstance(job, dict) else \
            f"lacks {', '.join(missing)}"
        raise UserError(f"the agent's job (the first line on stdin) {what}",
                        code="agent-job-invalid", remedy="agents are started by `pvestrap "
                        "preflight --mesh`, `doctor --mesh` and `apply`; do not run one by hand")
    return job


def agent_main(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """One node's side of the mesh preflight; see the module docstring for the conversation."""
    job = read_job(stdin, "answers", "node", "token")
    plan = answers.loads(job["answers"], source="answers (mesh)")
    node = plan.node(job["node"])

    def work(token: wire.Token, ready: Callable[[], bool]) -> dict[str, Any] | None:
        def go() -> None:  # the local checks ran: READY, then probe on GO
            if not ready():
                raise _NoGo()

        source = preflight.AfterLocalChecks(
            preflight.Probes(token, float(job.get("duration_s", 3.0)), shared=True), go)
        try:
            report = preflight.run(plan, node.name, probes=source,
                                   ignore=tuple(job.get("ignore", ())))
        except _NoGo:
            return None
        mine = dataclasses.replace(report, matrices=preflight.own_rows(report.matrices,
                                                                        node.name))
        return {"report": report_dict(mine)}

    return agent_conversation(job, plan.link_numbers, node.addresses.values(), work, stdin,
                              stdout)


def responder_agent_main(stdin=sys.stdin, stdout=sys.stdout) -> int:
    """`pvestrap responder --agent`: only the responder of the conversation, for as long as the
    orchestrator holds the session and at most the job's ttl_s. Apply starts it on the members
    it probes after its network phase (pvestrap.apply.remote_responders); the job names the
    token, the link numbers and the member's link addresses."""
    job = read_job(stdin, "token")

    def work(_token: wire.Token, ready: Callable[[], bool]) -> dict[str, Any] | None:
        return {"responder": "answering"} if ready() else None

    return agent_conversation(job, [int(n) for n in job.get("links") or (0,)],
                              [str(a) for a in job.get("addresses") or ()], work, stdin, stdout)


class _NoGo(Exception):
    """The orchestrator hung up (or said something else) instead of GO."""


def agent_session(job: Mapping[str, Any], links: Sequence[int], addresses: Sequence[str],
                  before_ready: Callable[[], Any], after_go: Callable[[Any, Any], Any],
                  stdin=sys.stdin, stdout=sys.stdout) -> int:
    """agent_conversation for an agent in two halves: BEFORE_READY, then (after GO)
    AFTER_GO(token, what before_ready returned) gives the RESULT object."""

    def work(token: wire.Token, ready: Callable[[], bool]) -> Any:
        early = before_ready()
        return after_go(token, early) if ready() else None

    return agent_conversation(job, links, addresses, work, stdin, stdout)


def agent_conversation(job: Mapping[str, Any], links: Sequence[int], addresses: Iterable[str],
                       work: Callable[[wire.Token, Callable[[], bool]], Any],
                       stdin=sys.stdin, stdout=sys.stdout) -> int:
    """The agent's half of the conversation, for any agent: answer probes on the link ports of
    ADDRESSES from the start until the orchestrator hangs up, and print RESULT + WORK(token,
    ready). WORK calls ready() when it may be probed: that says READY and waits for GO
    (False: the orchestrator gave up; WORK then returns None and the agent exits 1)."""
    token = wire.Token(job["token"].encode())
    config = ResponderConfig(token=token, ports=ports_for_links(tuple(links), base_port=5405),
                             addresses=tuple(sorted(set(addresses))),
                             ttl_s=float(job.get("ttl_s", 600)))
    done = threading.Event()

    def ready() -> bool:
        print(READY, flush=True, file=stdout)
        return stdin.readline().strip() == GO

    with Responder(config) as responder:
        thread = threading.Thread(target=responder.serve, kwargs={"stop": done.is_set},
                                  daemon=True)
        thread.start()
        out = work(token, ready)
        if out is not None:
            print(RESULT + json.dumps(out), flush=True, file=stdout)
            _until_hangup(stdin, thread)  # keep answering the others' probes
        done.set()
        responder.wake()  # its thread ends now, not at its next tick
        thread.join(timeout=2)
    return 0 if out is not None else 1


def _until_hangup(stdin, serving: threading.Thread) -> None:
    """Until the orchestrator hangs up (stdin ends), or the responder's TTL ended: an agent
    whose session died without a word (no FIN reached sshd) does not outlive its TTL."""
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        stdin.read()  # not a file (tests): it ends when the text does
        return
    while serving.is_alive():
        readable, _, _ = select.select([fd], [], [], 1.0)
        if readable and not os.read(fd, 4096):
            return


# -- merging ---------------------------------------------------------------------------------------

def merge(plan: ClusterPlan, results: Sequence[NodeResult], ignore: Sequence[str] = ()) -> Report:
    """One report: every node's findings (subjects prefixed by the node) and the N x N matrices
    (each node's report carries its own row)."""
    by_section: dict[str, list[Finding]] = {}
    waiting = {r.node: frozenset((r.report.get("meta") or {}).get("pending_links") or ())
               for r in results if r.report}
    for r in results:
        if r.error or r.report is None:
            by_section.setdefault("plan", []).append(Finding(
                "node-unreachable", Severity.FAIL, f"{r.node}: {r.error}", r.node,
                check="mesh", remedy="check SSH root key login to the node and that pvestrap is "
                                     "installed there (--remote-command)"))
            continue
        for section in r.report.get("sections", ()):
            for f in section["findings"]:
                by_section.setdefault(section["name"], []).append(
                    _towards_pending(_finding(f, r.node), waiting))
    sections = build_sections(by_section, ignore)
    meta = {"cluster": plan.cluster_name, "nodes": len(plan.nodes), "mode": "mesh"}
    grids = preflight.merge_rows(preflight.matrices(plan, None, None),
                                 [r.report.get("matrices") or {} for r in results if r.report])
    return Report("pvestrap preflight (mesh)", sections, meta, grids)


def _finding(d: Mapping[str, Any], node: str) -> Finding:
    subject = d.get("subject")
    if subject and not subject.startswith(node):
        subject = f"{node}: {subject}"
    return Finding(d["code"], Severity(d["severity"]), d["message"], subject or node,
                   d.get("check"), d.get("payload") or {}, d.get("remedy"), d.get("ignored", False))


def _towards_pending(f: Finding, waiting: Mapping[str, frozenset[int]]) -> Finding:
    """A probe's FAIL or WARN towards a peer's link whose address is only planned on that peer
    (its report says so: apply's network phase has not configured it yet) is a SKIP: the
    path is probed after that node's apply, as its own probes over the link are."""
    peer, link = f.payload.get("peer"), f.payload.get("link")
    if f.severity not in (Severity.FAIL, Severity.WARN) or not isinstance(peer, str) \
            or link not in waiting.get(peer, ()):
        return f
    code = "latency-pending" if f.check == "latency" else "link-port-pending"
    return Finding(code, Severity.SKIP, f"{peer}'s link{link} address is planned, not "
                   f"configured yet: probed after apply's network phase on {peer} "
                   f"(measured now: {f.message})",
                   f.subject, f.check, dict(f.payload), None, f.ignored)


def require_nodes_reachable(plan: ClusterPlan) -> None:
    if len(plan.nodes) < 2:
        raise UserError("mesh mode needs at least two nodes in the answer file",
                        remedy="add the other nodes, or run `pvestrap preflight` without --mesh")


__all__ = ["NodeResult", "agent_conversation", "agent_entry", "agent_main", "agent_session",
           "held_agents", "merge", "responder_agent_main", "run_agents", "run_mesh", "ssh_argv"]
