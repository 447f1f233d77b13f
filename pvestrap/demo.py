"""`pvestrap demo`: the whole story on one Linux machine, in about half a minute.

A lab of N nodes (network namespaces with real corosync and sshd, see pvestrap.lab), one answer
file for all of them, and the unattended first boot started in every node at the same moment,
exactly as the ISO's hook would on real machines: each answers probes, waits for the others,
runs its preflight, then creates or joins. At the end the preflight of every node is merged
into one N x N report, every node's corosync is asked how the cluster stands (quorum, members,
knet links and their round-trip times), and the lab is removed again (unless kept). Ctrl-C
removes it too. The reports are returned (`one_page` joins them for one HTML page); printing and
writing them is the command's job (pvestrap.commands.demo).
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from pvestrap.errors import UserError
from pvestrap.findings import Finding
from pvestrap.report.model import Report, ReportSection

Out = Callable[[str], None]
STATE_DIR = "/run/pvestrap/firstboot"  # a lab node's /run is its own; /var/lib is the host's
TOOLS = ("corosync", "corosync-quorumtool", "corosync-cfgtool", "corosync-cmapctl", "ssh",
         "ssh-keygen", "/usr/sbin/sshd", "nft", "nsenter", "unshare", "ip")


@dataclass(frozen=True)
class DemoOptions:
    nodes: int = 3
    links: int = 2
    keep: bool = False
    prefix: str | None = None
    timeout_s: float = 300.0  # for the first boots of all nodes together
    python: str = sys.executable


@dataclass(frozen=True)
class DemoResult:
    prefix: str
    exit_codes: Mapping[str, int | None]
    preflight: Report
    status: Report
    cluster: str = ""
    timings: Mapping[str, float] = field(default_factory=dict)
    kept: bool = False

    @property
    def ok(self) -> bool:
        return (all(code == 0 for code in self.exit_codes.values())
                and self.status.exit_code() == 0)


def check_tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise UserError(f"the demo needs {', '.join(missing)}", code="demo-tools-missing",
                        remedy="apt-get install corosync openssh-server openssh-client nftables "
                               "util-linux iproute2")


def new_prefix() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "demo" + "".join(secrets.choice(alphabet) for _ in range(4))


def run_demo(opts: DemoOptions, out: Out = print) -> DemoResult:
    """Build, cluster, report, clean up (see the module docstring)."""
    from pvestrap.lab import Lab

    check_tools()
    prefix = opts.prefix or new_prefix()
    timings: dict[str, float] = {}
    started = time.monotonic()
    out(f"demo: a lab of {opts.nodes} nodes with {opts.links} link networks ({prefix})")
    work = Path(tempfile.mkdtemp(prefix=f"pvestrap-{prefix}-"))
    lab = None
    try:
        lab = Lab.up(prefix, opts.nodes, opts.links)
        lab.start("sshd")  # a corosync joiner reads and updates the cluster over SSH
        timings["lab_up_s"] = time.monotonic() - started
        result = _cluster(lab, opts, work, out, timings)
        timings["total_s"] = time.monotonic() - started
        out(f"demo: {'done' if result.ok else 'FAILED'} in {timings['total_s']:.1f} s "
            f"(lab {timings['lab_up_s']:.1f} s, first boot {timings['firstboot_s']:.1f} s, "
            f"reports {timings['reports_s']:.1f} s)")
        return replace(result, timings=dict(timings), kept=opts.keep)
    finally:
        if lab is not None and opts.keep:
            out(f"demo: the lab is kept: `pvestrap lab status --name {prefix}`; remove it with "
                f"`pvestrap lab down --name {prefix}` (answer file, first-boot secret: {work})")
        else:
            if lab is not None:
                removed = lab.down()
                out(f"demo: lab {prefix} removed ({removed.namespaces} namespaces, "
                    f"{removed.processes} processes)")
            shutil.rmtree(work, ignore_errors=True)


def _cluster(lab, opts: DemoOptions, work: Path, out: Out, timings: dict) -> DemoResult:
    from pvestrap import answers
    from pvestrap.firstboot import secret

    plan = lab.plan()
    answers_file = work / "answers.toml"
    answers_file.write_text(answers.dumps(plan))
    secret.ensure(secret.path_for(answers_file))  # as `iso prepare` makes it
    out(f"demo: answer file {answers_file} and the cluster's first-boot secret beside it "
        f"(0600); starting the first boot on every node at once")
    t0 = time.monotonic()
    codes = run_firstboots(lab, answers_file, opts, out)
    timings["firstboot_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    preflight = merged_preflight(lab, plan)
    status = cluster_status(lab, len(plan.nodes))
    timings["reports_s"] = time.monotonic() - t0
    return DemoResult(lab.prefix, codes, preflight, status, plan.cluster_name)


# -- the first boots -------------------------------------------------------------------------------

def firstboot_argv(python: str, answers_file: Path, node: str, timeout_s: float) -> list[str]:
    """The flow as the hook runs it, with waits bounded by the demo's own timeout."""
    wait = str(round(max(30.0, timeout_s / 2)))
    return [python, "-m", "pvestrap", "firstboot", "--answers", str(answers_file),
            "--node", node, "--state-dir", STATE_DIR, "--quiet", "--peer-wait", wait,
            "--turn-wait", wait, "--apply-timeout", wait, "--quorum-timeout", "60",
            "--linger", wait]


def run_firstboots(lab, answers_file: Path, opts: DemoOptions, out: Out
                   ) -> dict[str, int | None]:
    """Start the first boot in every node at once, show their lines as they come, and wait
    (bounded). Returns each node's exit code; None for one that had to be stopped."""
    procs: dict[str, subprocess.Popen] = {}
    pumps = []
    try:
        for node in lab.nodes:
            argv = firstboot_argv(opts.python, answers_file, node.name, opts.timeout_s)
            procs[node.name] = lab.popen(node.index, argv, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, bufsize=1)
        for name, proc in procs.items():
            pump = threading.Thread(target=_pump, args=(name, proc, out), daemon=True)
            pump.start()
            pumps.append(pump)
        deadline = time.monotonic() + opts.timeout_s
        codes: dict[str, int | None] = {}
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[name] = None
        return codes
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pump in pumps:
            pump.join(timeout=2)


def _pump(name: str, proc: subprocess.Popen, out: Out) -> None:
    for line in proc.stdout or ():  # started with stdout=PIPE
        out(f"  [{name}] {line.rstrip()}")


# -- the reports -----------------------------------------------------------------------------------

def merged_preflight(lab, plan) -> Report:
    """Every node's preflight (saved by its first boot) as one N x N report."""
    from pvestrap import mesh

    results = []
    for node in lab.nodes:
        path = node.path(f"{STATE_DIR}/firstboot-preflight.json")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            results.append(mesh.NodeResult(node.name, None,
                                           f"no preflight report ({exc.__class__.__name__})"))
            continue
        results.append(mesh.NodeResult(node.name, data["report"]))
    return mesh.merge(plan, results)


def cluster_status(lab, expect_nodes: int) -> Report:
    """`pvestrap status` on every node (its own corosync tools), merged: each node's findings
    under its name, and its row of every knet RTT matrix."""
    from pvestrap.system import RealSystem
    from pvestrap.verify import status_report

    per_node = {}
    for node in lab.nodes:
        system = RealSystem(root=str(node.root), wrap=node.wrap)
        per_node[node.name] = status_report(system, expect_nodes=expect_nodes)
    return merge_status(per_node)


def merge_status(per_node: Mapping[str, Report]) -> Report:
    sections: dict[str, tuple[str, list[Finding]]] = {}
    for name, report in per_node.items():
        for section in report.sections:
            title, found = sections.setdefault(section.name, (section.title, []))
            found.extend(replace(f, subject=f"{name}: {f.subject}" if f.subject else name)
                         for f in section.findings)
    matrices: dict[str, dict] = {}
    for report in per_node.values():
        for link, grid in report.matrices.items():
            merged = matrices.setdefault(link, json.loads(json.dumps(grid)))
            for key in ("rtt_ms", "state"):
                for i, row in enumerate(grid.get(key, ())):
                    if any(cell is not None for cell in row):
                        merged[key][i] = list(row)
    first = next(iter(per_node.values()), None)
    meta = {**(first.meta if first else {}), "nodes": len(per_node), "mode": "every node"}
    meta.pop("node", None)
    return Report("pvestrap status (every node)",
                  tuple(ReportSection(n, t, tuple(fs)) for n, (t, fs) in sections.items()),
                  meta, matrices)


def one_page(result: DemoResult) -> Report:
    """The preflight (probe RTTs) and the cluster as corosync sees it (knet RTTs) as one
    report, for one HTML page."""
    preflight, status = result.preflight, result.status
    sections = preflight.sections + tuple(
        ReportSection(f"status-{s.name}", f"CLUSTER STATUS: {s.title}", s.findings)
        for s in status.sections)
    matrices = {**{f"preflight {k}": v for k, v in preflight.matrices.items()},
                **{f"knet {k}": v for k, v in status.matrices.items()}}
    meta = {"cluster": result.cluster, "nodes": len(result.exit_codes),
            "first boot (s)": round(result.timings.get("firstboot_s", 0.0), 1),
            "pvestrap": status.meta.get("pvestrap"), "time": status.meta.get("time")}
    return Report("pvestrap demo: preflight and cluster status", sections, meta, matrices)
