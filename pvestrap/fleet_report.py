"""The fleet preflight's reports: one per cluster (its nodes' reports merged, N x N matrices per
link, as `pvestrap preflight --mesh` gives) and one for the fleet (the cross-cluster findings
and one line per cluster), each as JSON and HTML.

The inputs are what the node-side preflight returned per host (the report, which carries the
node's own row of the matrices, or the error that stopped it), so a node that failed, or was
never reached, is in its cluster's report as such.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from pvestrap.atomic import atomic_write
from pvestrap.findings import Finding, Severity, fail, passed
from pvestrap.fleet import ClusterGroup
from pvestrap.mesh import NodeResult, merge
from pvestrap.report.model import Report, ReportSection

# A host's preflight result: {"report": report dict | None, "error": message | None}
HostResult = Mapping[str, Any]


def cluster_report(group: ClusterGroup, results: Mapping[str, HostResult]) -> Report:
    """GROUP's nodes' reports merged into one (a missing result is a node that never reported)."""
    plan = group.valid_plan
    nodes = []
    for host, node in zip(group.hosts, (n.name for n in plan.nodes)):
        got = results.get(host) or {}
        report = got.get("report")
        if report and report.get("member"):
            report = {"sections": [{"name": "cluster", "findings": [passed(
                "already-member", f"{node} already runs in cluster {plan.cluster_name}: "
                "preflight skipped", node, check="fleet").as_dict()]}]}
        error = None if report else (got.get("error") or "no preflight result")
        nodes.append(NodeResult(node=node, report=report, error=error))
    merged = merge(plan, nodes)
    return Report(f"pvestrap preflight: cluster {plan.cluster_name} (group {group.group})",
                  merged.sections, {**merged.meta, "group": group.group, "mode": "ansible"},
                  merged.matrices)


def fleet_summary(groups: Sequence[ClusterGroup], fleet_findings: Sequence[Finding],
                  reports: Mapping[str, Report]) -> Report:
    """The fleet findings, then one finding per cluster: PASS, or FAIL with its FAIL count."""
    lines = []
    for g in groups:
        report = reports[g.group]
        fails = report.count(Severity.FAIL)
        subject = f"{g.group}: {g.valid_plan.cluster_name}"
        payload = {"group": g.group, "cluster": g.valid_plan.cluster_name, "nodes": len(g.hosts),
                   "fail": fails, "warn": report.count(Severity.WARN)}
        if fails:
            first = next(f for f in report.findings if f.severity is Severity.FAIL)
            lines.append(fail("fleet-cluster-failed", f"{fails} FAIL, first: [{first.code}] "
                              f"{first.message}", subject, check="fleet", payload=payload))
        else:
            lines.append(passed("fleet-cluster-passed", f"{len(g.hosts)} nodes passed",
                                subject, check="fleet", payload=payload))
    sections = (ReportSection("fleet", "FLEET", tuple(fleet_findings)),
                ReportSection("clusters", "CLUSTERS", tuple(lines)))
    return Report("pvestrap fleet preflight", sections,
                  {"clusters": len(groups), "nodes": sum(len(g.hosts) for g in groups),
                   "mode": "ansible"})


def write_reports(folder: str, groups: Sequence[ClusterGroup],
                  fleet_findings: Sequence[Finding],
                  results: Mapping[str, HostResult]) -> dict[str, str]:
    """Every cluster's report and the fleet summary as FOLDER/NAME.json and .html; returns
    name -> path of the JSON file ("fleet" for the summary)."""
    from pvestrap.report.html import render_html
    from pvestrap.report.jsonout import render_json

    os.makedirs(folder, mode=0o700, exist_ok=True)
    reports = {g.group: cluster_report(g, results) for g in groups}
    everything = {**reports, "fleet": fleet_summary(groups, fleet_findings, reports)}
    out = {}
    for name, report in everything.items():
        base = os.path.join(folder, name)
        atomic_write(base + ".json", render_json(report) + "\n", backup=False)
        atomic_write(base + ".html", render_html(report), backup=False)
        out[name] = base + ".json"
    return out
