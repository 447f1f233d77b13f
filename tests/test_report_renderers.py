"""The four report renderers: text (pve8to9 style), JSON, JUnit XML and HTML.

They are fed one report with every severity, an ignored FAIL, hostile strings and a 4-node
matrix with every cell kind, and are read back structurally (json.loads, ElementTree, the
html.parser) rather than compared with golden strings.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvestrap.findings import Finding, Severity, apply_ignores
from pvestrap.report.html import cell_class, render_html
from pvestrap.report.jsonout import indented, render_json, report_dict
from pvestrap.report.junit import render_junit
from pvestrap.report.model import Report, ReportSection
from pvestrap.report.text import render_text, summary_counts, wants_color

EVIL = '<script>alert("x")</script> & \'q\''


def sample() -> Report:
    identity = apply_ignores([
        Finding("hostname-resolves", Severity.PASS, "pve1 resolves to 10.254.0.1 on eth1", "pve1",
                "hostname", {"address": "10.254.0.1"}),
        Finding("hostname-loopback", Severity.FAIL, "pve4 resolves to 127.0.1.1", "pve4",
                "hostname", {"address": "127.0.1.1"}, remedy="map pve4 to its address in "
                "/etc/hosts"),
        Finding("guests-exist", Severity.FAIL, "2 guests", "pve3", "join-guests",
                {"vmids": [100, 101]}, remedy="back them up"),
    ], ["join-guests"])
    return Report(
        title="pvestrap preflight",
        sections=(
            ReportSection("identity", "Identity", tuple(identity)),
            ReportSection("timesync", "Time", (
                Finding("time-sync-weak", Severity.WARN, f"timesyncd {EVIL}", f"pve2{EVIL}",
                        "time-sync", {"daemon": "timesyncd", "evil": EVIL, "nan": float("nan"),
                                      "set": {3, 1}},
                        remedy=f"apt install chrony {EVIL}"),)),
            ReportSection("ports", "Ports", (
                Finding("ports-skipped", Severity.SKIP, "no peers", None, "link-ports"),)),
            ReportSection("empty", "Nothing here", ()),
            ReportSection("quorum", "Quorum", (
                Finding("quorum-tolerance", Severity.INFO, "4 nodes, quorum 3", "cluster",
                        "quorum", {"quorum": 3, "tolerance": 1}),)),
        ),
        meta={"cluster": "lab", "node": "pve1", "time": "2026-11-25T16:00:00+00:00",
              "latency_fail_ms": 2.0},
        matrices={"link0": {
            "nodes": ["pve1", "pve2", "pve3", EVIL],
            "port": 5405,
            "rtt_ms": [[None, 0.21, None, 0.3],
                       [0.22, None, 1.5, 2.7],
                       [None, 1.4, None, None],
                       [0.31, 2.6, None, None]],
            "state": [[None, "open", "filtered", "open"],
                      ["open", None, "open", "open"],
                      ["closed", "open", None, None],
                      ["open", "open", None, None]],
        }},
    )


# -- text ------------------------------------------------------------------------------------------

def test_text_sections_lines_and_summary():
    text = render_text(sample())
    lines = text.splitlines()
    headers = [line for line in lines if re.fullmatch(r"= .+ =", line)]
    assert headers == ["= IDENTITY =", "= TIME =", "= PORTS =", "= QUORUM =",
                       "= LINK0 RTT (ms, rows from, columns to) =", "= SUMMARY ="]
    labels = [line.split(":", 1)[0] for line in lines
              if re.match(r"(PASS|WARN|FAIL|SKIP|INFO): ", line)]
    assert labels == ["PASS", "FAIL", "WARN", "WARN", "SKIP", "INFO"]
    fail_at = next(i for i, line in enumerate(lines) if line.startswith("FAIL: pve4: "))
    assert lines[fail_at].endswith("[hostname-loopback]")
    assert lines[fail_at + 1].startswith("    fix: map pve4")
    ignored = next(line for line in lines if "guests-exist" in line)
    assert ignored == "WARN: pve3: 2 guests [guests-exist, FAIL ignored]"
    summary = lines[lines.index("= SUMMARY =") + 2:]
    assert summary[:6] == ["TOTAL:    5", "PASSED:   1", "SKIPPED:  1", "WARNINGS: 2",
                           "FAILURES: 1", "IGNORED:  1 (FAILs turned into WARNs by --ignore)"]
    assert "\x1b[" not in text


def test_text_matrix_cells():
    lines = render_text(sample()).splitlines()
    start = lines.index("= LINK0 RTT (ms, rows from, columns to) =")
    row1 = lines[start + 3].split()
    row3 = lines[start + 5].split()
    assert row1 == ["pve1", ".", "0.21", "filtered", "0.30"]
    assert row3 == ["pve3", "closed", "1.40", ".", "-"]


def test_text_colours_only_when_asked_and_labels_stay_greppable():
    text = render_text(sample(), color=True)
    assert "\x1b[1;31mFAIL\x1b[0m: pve4" in text
    assert "\x1b[32mPASS\x1b[0m: pve1" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert plain == render_text(sample())


class _Tty:
    def __init__(self, tty):
        self.tty = tty

    def isatty(self):
        return self.tty


def test_wants_color():
    assert wants_color(_Tty(True), {"TERM": "xterm"})
    assert not wants_color(_Tty(False), {"TERM": "xterm"})
    assert not wants_color(_Tty(True), {"TERM": "xterm", "NO_COLOR": ""})
    assert not wants_color(_Tty(True), {"TERM": "dumb"})


def test_summary_counts_exclude_info_from_total():
    c = summary_counts(sample())
    assert c == {"total": 5, "passed": 1, "skipped": 1, "warnings": 2, "failures": 1, "info": 1,
                 "ignored": 1}


def test_all_pass_report_has_no_attention_line():
    r = Report("t", (ReportSection("a", "A", (Finding("x", Severity.PASS, "fine"),)),))
    text = render_text(r)
    assert "ATTENTION" not in text and "FAILURES: 0" in text


# -- JSON ------------------------------------------------------------------------------------------

def test_json_round_trips_with_summary_and_matrices():
    data = json.loads(render_json(sample()))
    assert data["title"] == "pvestrap preflight" and data["meta"]["cluster"] == "lab"
    assert data["summary"]["failures"] == 1 and data["summary"]["exit_code"] == 1
    assert [s["name"] for s in data["sections"]] == ["identity", "timesync", "ports", "empty",
                                                     "quorum"]
    warn = data["sections"][1]["findings"][0]
    assert warn["severity"] == "warn" and warn["payload"]["evil"] == EVIL
    assert warn["payload"]["nan"] is None and warn["payload"]["set"] == [1, 3]
    ignored = data["sections"][0]["findings"][2]
    assert ignored["ignored"] is True and ignored["severity"] == "warn"
    assert data["matrices"]["link0"]["rtt_ms"][1][3] == 2.7


def test_json_exit_codes_follow_the_model():
    only_warn = Report("t", (ReportSection("a", "A", (Finding("w", Severity.WARN, "hm"),)),))
    d = report_dict(only_warn)
    assert (d["summary"]["exit_code"], d["summary"]["exit_code_strict"]) == (0, 3)


# -- JUnit -----------------------------------------------------------------------------------------

# The parts of the common JUnit schema (junit-10.xsd as Jenkins, GitLab and others accept it)
# that the renderer uses: allowed attributes and children per element, and required attributes.
SCHEMA = {
    "testsuites": ({"name", "time", "tests", "failures", "disabled", "errors"}, set(),
                   {"testsuite"}),
    "testsuite": ({"name", "tests", "failures", "errors", "time", "disabled", "skipped",
                   "timestamp", "hostname", "id", "package"}, {"name", "tests"},
                  {"properties", "testcase", "system-out", "system-err"}),
    "testcase": ({"name", "assertions", "time", "classname", "status"}, {"name"},
                 {"skipped", "error", "failure", "system-out", "system-err"}),
    "failure": ({"type", "message"}, set(), set()),
    "skipped": ({"message"}, set(), set()),
    "system-out": (set(), set(), set()),
}


def check_schema(element):
    allowed, required, children = SCHEMA[element.tag]
    assert set(element.attrib) <= allowed, (element.tag, set(element.attrib) - allowed)
    assert required <= set(element.attrib), element.tag
    for child in element:
        assert child.tag in children, (element.tag, child.tag)
        check_schema(child)
    if element.tag == "testcase":
        order = [c.tag for c in element]
        assert order == sorted(order, key=["skipped", "error", "failure", "system-out",
                                           "system-err"].index)
    for key in ("tests", "failures", "errors", "skipped"):
        if key in element.attrib:
            assert element.attrib[key].isdigit()


@pytest.mark.parametrize("strict", [False, True])
def test_junit_structure_counts_and_payloads(strict):
    xml = render_junit(sample(), strict=strict)
    root = ET.fromstring(xml.encode())
    check_schema(root)
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["pvestrap.identity", "pvestrap.timesync",
                                               "pvestrap.ports", "pvestrap.empty",
                                               "pvestrap.quorum"]
    cases = root.findall("testsuite/testcase")
    assert len(cases) == int(root.get("tests")) == 6
    failures = root.findall("testsuite/testcase/failure")
    expected = ["hostname-loopback"] + (["guests-exist", "time-sync-weak"] if strict else [])
    assert [f.get("type") for f in failures] == expected
    assert int(root.get("failures")) == len(expected)
    assert sum(int(s.get("failures")) for s in suites) == len(expected)
    assert [c.get("name") for c in root.findall("testsuite/testcase[skipped]")] == [
        "ports-skipped"]
    assert suites[0].get("timestamp") == "2026-11-25T16:00:00"
    assert suites[0].get("hostname") == "pve1"
    loop = root.find("testsuite/testcase[@name='hostname-loopback [pve4]']")
    assert loop.get("classname") == "pvestrap.identity.hostname"
    assert loop.find("failure").text == "map pve4 to its address in /etc/hosts"
    out = loop.find("system-out").text
    payload = json.loads(out.split("payload: ", 1)[1])
    assert payload == {"address": "127.0.1.1"}
    weak = root.find("testsuite[@name='pvestrap.timesync']/testcase")
    assert EVIL in weak.get("name") and EVIL in weak.find("system-out").text


def test_junit_survives_control_characters():
    bell = Finding("x", Severity.FAIL, "bell \x07 esc \x1b[0m")
    r = Report("t", (ReportSection("a", "A", (bell,)),))
    root = ET.fromstring(render_junit(r).encode())
    assert "\ufffd" in root.find("testsuite/testcase/failure").get("message")


# -- HTML ------------------------------------------------------------------------------------------

class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.cells = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "td" and "data-from" in a:
            self.cells.append((a["data-from"], a["data-to"], a["class"]))

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text):
    p = _Collect()
    p.feed(html_text)
    return p


def test_html_matrix_cells_are_coloured_by_rtt_and_state():
    p = parse(render_html(sample()))
    cells = {(a, b): cls for a, b, cls in p.cells}
    assert cells[("pve1", "pve2")] == "ok"          # 0.21 ms
    assert cells[("pve2", "pve3")] == "slow"        # 1.5 ms, under the 2 ms threshold
    assert cells[("pve2", EVIL)] == "bad"           # 2.7 ms
    assert cells[("pve1", "pve3")] == "blocked"     # filtered
    assert cells[("pve3", "pve1")] == "blocked"     # closed
    assert cells[("pve3", EVIL)] == "none"          # unmeasured
    assert len(p.cells) == 4 * 3                    # the diagonal carries no data cell


def test_html_is_self_contained_and_escapes_everything():
    text = render_html(sample())
    p = parse(text)
    tags = {t for t, _ in p.tags}
    assert "script" not in tags and "img" not in tags and "link" not in tags
    assert "<script>" not in text
    assert not re.search(r"(src|href)\s*=", text)
    assert "url(" not in text and "@import" not in text
    assert EVIL in "".join(p.text)  # shown as text, intact
    assert any(t == "details" for t, _ in p.tags)


def test_html_summary_and_findings():
    p = parse(render_html(sample()))
    items = [a for t, a in p.tags if t == "li" and "data-code" in a]
    assert [a["data-code"] for a in items] == ["hostname-resolves", "hostname-loopback",
                                               "guests-exist", "time-sync-weak",
                                               "ports-skipped", "quorum-tolerance"]
    assert "FAIL: the cluster should not be built like this" in "".join(p.text)
    assert "FAIL ignored by request" in "".join(p.text)


@pytest.mark.parametrize("rtt,state,expected", [
    (0.99, "open", "ok"), (1.0, None, "slow"), (1.99, "open", "slow"), (2.0, "open", "bad"),
    (None, None, "none"), (float("nan"), None, "none"), (0.2, "filtered", "blocked"),
    (None, "closed", "blocked"), (True, None, "none")])
def test_cell_class_boundaries(rtt, state, expected):
    assert cell_class(rtt, state, 2.0) == expected


def test_threshold_comes_from_the_matrix_or_meta():
    r = Report("t", (), meta={"latency_fail_ms": 5.0},
               matrices={"link1": {"nodes": ["a", "b"], "rtt_ms": [[None, 3.0], [4.0, None]]}})
    assert {c for _, _, c in parse(render_html(r)).cells} == {"slow"}
    r2 = Report("t", (), matrices={"l": {"nodes": ["a", "b"], "threshold_ms": 1.5,
                                         "rtt_ms": [[None, 1.6], [1.2, None]]}})
    assert [c for _, _, c in parse(render_html(r2)).cells] == ["bad", "slow"]


def test_ragged_matrix_does_not_break_the_page():
    r = Report("t", (), matrices={"l": {"nodes": ["a", "b", "c"], "rtt_ms": [[None, 0.1]]}})
    assert [c for _, _, c in parse(render_html(r)).cells] == ["ok", "none", "none", "none",
                                                              "none", "none"]


_JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text())
_JSON = st.recursive(_JSON_LEAVES, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(), inner, max_size=4), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(_JSON, st.sampled_from([2, 4]))
def test_indented_json_is_the_standard_librarys_character_for_character(data, indent):
    assert indented(data, indent) == json.dumps(data, indent=indent, ensure_ascii=False,
                                                allow_nan=False)


def test_indented_json_refuses_what_json_refuses():
    for bad in (float("nan"), {"a": [float("inf")]}):
        with pytest.raises(ValueError):
            indented(bad)
    with pytest.raises(TypeError):
        indented({1: "an int key: plain() makes keys str first"})
    assert indented({"t": (1, "é")}) == json.dumps({"t": [1, "é"]}, indent=2, ensure_ascii=False)
