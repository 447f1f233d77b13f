"""`pvestrap preflight` on this machine: exit codes, formats, check catalogue, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from pvestrap.cli import main
from pvestrap.commands.preflight import CHECK_IDS
from pvestrap.preflight import check_catalogue
from pvestrap.commands.preflight import parse_peers
from pvestrap.errors import UserError


def test_help_lists_exactly_the_check_ids_of_the_catalogue():
    listed = [c.strip() for c in CHECK_IDS.split(",")]
    assert listed == [cid for cid, _family, _title in check_catalogue()]
    assert len(set(listed)) == len(listed)


def test_json_junit_and_html_outputs_agree(tmp_path, capsys):
    junit, html = tmp_path / "r.xml", tmp_path / "r.html"
    rc = main(["preflight", "--json", "--junit", str(junit), "--html", str(html)])
    data = json.loads(capsys.readouterr().out)
    assert rc == data["summary"]["exit_code"]
    codes = {f["code"] for s in data["sections"] for f in s["findings"]}
    assert "nic-inventory" in codes
    suites = ET.parse(junit).getroot()
    cases = suites.findall(".//testcase")
    assert len(cases) == sum(len(s["findings"]) for s in data["sections"])
    assert html.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("spec", ["pve2", "=10.0.0.1", "pve2=host.example", "pve2="])
def test_bad_peer_specs_are_refused(spec):
    with pytest.raises(UserError):
        parse_peers([spec])


def test_peers_parse_to_links_by_position():
    assert parse_peers(["b=10.254.0.2,10.254.1.2"]) == {"b": {0: "10.254.0.2", 1: "10.254.1.2"}}


def test_bad_input_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "a.toml"
    bad.write_text("[cluster\nname = 1\n")
    for args in (["--peer", "nonsense"], ["--answers", str(bad)], ["--duration", "0"]):
        out = subprocess.run([sys.executable, "-m", "pvestrap", "preflight", *args],
                             capture_output=True, text=True)
        assert out.returncode == 2, (args, out.stderr)
        assert "Traceback" not in out.stderr and out.stderr.startswith("error:")


def test_peers_without_token_is_bad_input(monkeypatch, capsys):
    monkeypatch.delenv("PVESTRAP_PROBE_TOKEN", raising=False)
    assert main(["preflight", "--peer", "b=127.0.0.1"]) == 2
    assert "token" in capsys.readouterr().err
