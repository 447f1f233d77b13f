"""Version parsing and comparison; the local corosync version comes from the real binary."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import Machine, Sources
from pvestrap.checks.versions import (VersionsCheck, compare_versions, local_versions,
                                      parse_corosync_version, parse_pveversion)
from pvestrap.findings import Severity
from pvestrap.system import CommandResult

PVEVERSION = "pve-manager/8.2.4/faa83925c9641325 (running kernel: 6.8.8-2-pve)\n"
COROSYNC = "Corosync Cluster Engine, version '3.1.7'\nCopyright (c) 2006-2021 Red Hat, Inc.\n"


def replay(outputs):
    def runner(argv):
        out = outputs.get(tuple(argv))
        return CommandResult(tuple(argv), 0 if out is not None else 127, out or "")
    return runner


def test_parsers():
    assert parse_pveversion(PVEVERSION) == "8.2.4"
    assert parse_corosync_version(COROSYNC) == "3.1.7"
    assert parse_pveversion("garbage") is None


@pytest.mark.skipif(not shutil.which("corosync"), reason="corosync is not installed")
def test_the_real_corosync_binary_is_parsed():
    printed = subprocess.run(["corosync", "-v"], capture_output=True, text=True).stdout
    from pvestrap.system import run_command
    got = local_versions(run_command)
    assert got["corosync"] and got["corosync"] in printed
    assert got["corosync"].startswith("3.")


def test_major_mismatch_fails_minor_is_noted_equal_passes():
    found = compare_versions({"a": {"pve": "8.2.4", "corosync": "3.1.7"},
                              "b": {"pve": "9.0.1", "corosync": "3.1.7"},
                              "c": {"pve": "8.1.0", "corosync": "3.1.9"}})
    assert [(f.code, f.subject) for f in found] == [("version-mismatch", "pve"),
                                                    ("version-minor-differs", "corosync")]
    assert found[0].payload["versions"] == {"a": "8.2.4", "b": "9.0.1", "c": "8.1.0"}
    assert found[0].severity is Severity.FAIL
    same = compare_versions({"a": {"corosync": "3.1.7"}, "b": {"corosync": "3.1.7"}})
    assert [f.code for f in same] == ["versions-match"]


def test_corosync_2_and_3_cannot_be_mixed():
    found = compare_versions({"a": {"corosync": "2.4.4"}, "b": {"corosync": "3.1.7"}})
    assert [f.code for f in found] == ["version-mismatch"]


def test_check_reports_its_own_versions_and_compares_with_the_runners():
    src = Sources(machine=Machine("pve1"), runner=replay({("pveversion",): PVEVERSION,
                                                          ("corosync", "-v"): COROSYNC}))
    alone = VersionsCheck(src).run(Context(node="pve1"))
    assert [f.code for f in alone] == ["versions-local", "versions-single"]
    assert alone[0].payload == {"node": "pve1", "pve": "8.2.4", "corosync": "3.1.7"}
    found = VersionsCheck(src).run(Context(node="pve1", options={"versions": {
        "pve2": {"pve": "7.4.3", "corosync": "3.1.7"}}}))
    assert [f.code for f in found] == ["versions-local", "version-mismatch", "versions-match"]


def test_missing_corosync_is_a_warning():
    src = Sources(machine=Machine("deb1"), runner=replay({}))
    found = VersionsCheck(src).run(Context())
    assert [f.code for f in found] == ["versions-local", "corosync-missing", "versions-single"]
    assert found[0].subject == "deb1"
