"""The JUnit XML report, for CI systems that show test results (GitLab, Jenkins, GitHub actions).

One <testsuite> per report section, one <testcase> per finding: FAIL has a <failure>, SKIP a
<skipped>, PASS/INFO/WARN pass (with strict=True a WARN is a failure too, matching `--strict`).
Every testcase carries a <system-out> with the severity, message, remedy and the payload as
JSON. Elements and attributes stay within the common JUnit schema (Jenkins' junit-10.xsd,
which GitLab and most tools accept): errors is always 0, because a check never errors, it fails.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from pvestrap.findings import Finding, Severity
from pvestrap.report.jsonout import plain
from pvestrap.report.model import Report, ReportSection
from pvestrap.report.text import display_message


# Characters XML 1.0 cannot carry at all (ElementTree would write them, and parsers then refuse
# the whole file): controls other than tab/newline/CR, surrogates, U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _safe(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _is_failure(f: Finding, strict: bool) -> bool:
    return f.severity is Severity.FAIL or (strict and f.severity is Severity.WARN)


def _case_name(f: Finding) -> str:
    return f"{f.code} [{f.subject}]" if f.subject else f.code


def _system_out(f: Finding) -> str:
    label = f"{f.severity.label} (FAIL ignored)" if f.ignored else f.severity.label
    lines = [f"{label}: {display_message(f)}"]
    if f.remedy:
        lines.append(f"fix: {f.remedy}")
    if f.payload:
        lines.append("payload: " + json.dumps(plain(f.payload), sort_keys=True,
                                              ensure_ascii=False))
    return "\n".join(lines)


def _testcase(parent: ET.Element, section: ReportSection, f: Finding, strict: bool) -> None:
    case = ET.SubElement(parent, "testcase", {
        "name": _safe(_case_name(f)),
        "classname": _safe(f"pvestrap.{section.name}.{f.check or section.name}"),
        "time": "0",
    })
    if _is_failure(f, strict):
        failure = ET.SubElement(case, "failure", {"message": _safe(f.message), "type": f.code})
        failure.text = _safe(f.remedy or f.message)
    elif f.severity is Severity.SKIP:
        ET.SubElement(case, "skipped", {"message": _safe(f.message)})
    ET.SubElement(case, "system-out").text = _safe(_system_out(f))


def _stats(findings: Any, strict: bool) -> dict[str, str]:
    findings = list(findings)
    return {
        "tests": str(len(findings)),
        "failures": str(sum(1 for f in findings if _is_failure(f, strict))),
        "errors": "0",
        "skipped": str(sum(1 for f in findings if f.severity is Severity.SKIP)),
        "time": "0",
    }


def junit_tree(report: Report, strict: bool = False) -> ET.Element:
    root = ET.Element("testsuites", {"name": _safe(report.title),
                                     **_stats(report.findings, strict)})
    del root.attrib["skipped"]  # not a testsuites attribute in junit-10.xsd
    timestamp = report.meta.get("time")
    hostname = report.meta.get("node")
    for index, section in enumerate(report.sections):
        attrs = {"name": _safe(f"pvestrap.{section.name}"), "id": str(index),
                 **_stats(section.findings, strict)}
        if isinstance(timestamp, str) and _TIMESTAMP.match(timestamp):
            attrs["timestamp"] = timestamp[:19]  # the schema's dateTime has no zone
        if isinstance(hostname, str):
            attrs["hostname"] = _safe(hostname)
        suite = ET.SubElement(root, "testsuite", attrs)
        for f in section.findings:
            _testcase(suite, section, f, strict)
    return root


def render_junit(report: Report, strict: bool = False) -> str:
    tree = junit_tree(report, strict)
    ET.indent(tree)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(tree, encoding="unicode") + "\n"
