"""The runner's own rules: check ids stamped, crashes contained, ignores applied, sections
ordered."""

from __future__ import annotations

from dataclasses import dataclass

from pvestrap.checks.base import Context
from pvestrap.checks.runner import build_sections, collect
from pvestrap.findings import Finding, Severity
from pvestrap.report.model import Report


def run_checks(checks, ctx, ignore=()):
    """What pvestrap.preflight.run does with its checks' findings."""
    return Report("t", build_sections(collect(checks, ctx), ignore))


@dataclass(frozen=True)
class Fixed:
    id: str
    family: str
    findings: tuple
    title: str = "fixed findings"

    def run(self, ctx):
        return self.findings


@dataclass(frozen=True)
class Crashing:
    id: str = "crashes"
    family: str = "nics"
    title: str = "always crashes"

    def run(self, ctx):
        raise RuntimeError("boom")


def test_sections_follow_the_report_order_and_carry_check_ids():
    report = run_checks(
        [Fixed("lat", "latency", (Finding("latency-ok", Severity.PASS, "ok"),)),
         Fixed("ident", "identity", (Finding("hostname-loopback", Severity.FAIL, "bad"),))],
        Context(),
    )
    assert [s.name for s in report.sections] == ["identity", "latency"]
    assert [f.check for f in report.findings] == ["ident", "lat"]
    assert report.exit_code() == 1


def test_a_crashing_check_becomes_one_fail_and_the_rest_still_run():
    fine = Fixed("ok", "nics", (Finding("nic-free", Severity.INFO, "x"),))
    report = run_checks([Crashing(), fine], Context())
    codes = [(f.code, f.check) for f in report.findings]
    assert ("check-crashed", "crashes") in codes and ("nic-free", "ok") in codes


def test_ignore_by_check_id_downgrades_fail_to_warn_and_says_so():
    failing = Fixed("ports", "ports", (Finding("link-port-filtered", Severity.FAIL, "x"),))
    report = run_checks([failing], Context(), ignore=["ports"])
    (f,) = report.findings
    assert f.severity is Severity.WARN and f.ignored
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 3
