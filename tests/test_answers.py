"""Answer files: every loader rule with its TOML path and line, join info, passwords.

Export, schema and the hypothesis properties are in test_answer_export.py.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import tomllib

import pytest

from pvestrap import answers, joininfo, toml_lines
from pvestrap.errors import UserError, ValidationFailed

DATA = pathlib.Path(__file__).parent / "data" / "answers"
FP = ":".join(f"{i * 7 % 256:02X}" for i in range(32))


def problems(text: str, source: str = "answers.toml") -> list[tuple[str, str | None, int | None]]:
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text, source)
    return [(f.code, f.subject, f.payload["line"]) for f in info.value.findings]


def edit(old: str, new: str, text: str | None = None) -> str:
    text = answers.example() if text is None else text
    assert old in text, old
    return text.replace(old, new, 1)


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.split("\n"), 1) if needle in line)


# -- the example and the basics --------------------------------------------------------------------

def test_example_is_a_valid_three_node_two_link_plan():
    plan = answers.loads(answers.example())
    assert [n.name for n in plan.nodes] == ["pve1", "pve2", "pve3"]
    assert plan.link_numbers == (0, 1)
    assert plan.node("pve2").addresses == {0: "10.10.10.2", 1: "10.10.20.2"}
    assert plan.creator.name == "pve1" and plan.role_of("pve3") == "join"
    assert plan.datacenter.migration_network == "10.10.20.0/24"
    assert plan.datacenter.bwlimit == {"default": 102400, "migration": 512000}
    assert plan.join.password_env == "PVE_ROOT_PASSWORD"
    assert plan.token_coefficient == 125


def test_many_problems_are_all_reported_at_once_with_paths_and_lines():
    path = DATA / "many-problems.toml"
    with pytest.raises(ValidationFailed) as info:
        answers.load(path)
    got = {(f.code, f.subject, f.payload["line"]) for f in info.value.findings}
    assert got == {
        ("cluster-name-invalid", "cluster.name", 3),
        ("create-node-unknown", "cluster.create_node", 4),
        ("backend-invalid", "cluster.backend", 5),
        ("answer-type-invalid", "cluster.pve_version", 6),
        ("link-priority-out-of-range", "links[0].priority", 11),
        ("link-network-invalid", "links[1].network", 15),
        ("answer-type-invalid", "nodes[0].nodeid", 21),
        ("address-outside-network", "nodes[1].link0", 25),
        ("address-duplicate", "nodes[1].link1", 26),
        ("answer-key-unknown", "nodes[1].lnik2", 27),
        ("node-link-set-mismatch", "nodes[2]", 29),
        ("interface-mtu-invalid", "nodes[2].interfaces[0].mtu", 34),
        ("interface-kind-invalid", "nodes[2].interfaces[0].kind", 35),
        ("fingerprint-invalid", "join.fingerprint", 38),
        ("answer-secret-refused", "join.password", 39),
        ("keyboard-invalid", "datacenter.keyboard", 42),
        ("migration-type-invalid", "datacenter.migration.type", 43),
        ("migration-network-invalid", "datacenter.migration.network", 43),
        ("next-id-invalid", "datacenter.next_id.lower", 44),
        ("http-proxy-invalid", "datacenter.http_proxy", 45),
        ("threshold-invalid", "preflight.latency_fail_ms", 48),
        ("answer-type-invalid", "preflight.ignore_checks[1]", 49),
        ("ignore-all-refused", "preflight.ignore_checks", 49),
    }
    err = info.value
    assert err.source == str(path) and len(err.findings) == 23
    for f in err.findings:
        assert f.message.startswith(f"{path}:{f.payload['line']}: ")
    assert "hunter2" not in err.render() and "hunter2" not in repr(err.findings)
    assert f"{path}:27: nodes[1].lnik2: unknown key 'lnik2'" in err.render()


# -- the loader's own rules ------------------------------------------------------------------------

@pytest.mark.parametrize("old,new,code,subject,suggestion", [
    ('name = "prod"', 'nmae = "prod"', "answer-key-unknown", "cluster.nmae", "name"),
    ('create_node = "pve1"', 'create-node = "pve1"', "answer-key-unknown", "cluster.create-node",
     "create_node"),
    ('link1 = "10.10.20.2"', 'lnik1 = "10.10.20.2"', "answer-key-unknown", "nodes[1].lnik1",
     "link1"),
    ("console = ", "consle = ", "answer-key-unknown", "datacenter.consle", "console"),
    ("[preflight]", "[preflite]", "answer-key-unknown", "preflite", "preflight"),
])
def test_unknown_keys_name_the_path_and_a_close_key(old, new, code, subject, suggestion):
    text = edit(old, new)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    unknown = [f for f in info.value.findings if f.code == code]
    assert [(f.subject, f.payload["suggestion"], f.payload["line"]) for f in unknown] == [
        (subject, suggestion, line_of(text, new))]
    assert f"did you mean {suggestion!r}" in unknown[0].remedy


def test_link_numbers_over_seven_are_unknown_keys_with_the_link_range_as_fix():
    text = edit('link1 = "10.10.20.3"', 'link1 = "10.10.20.3"\nlink8 = "10.10.80.3"')
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    [f] = info.value.findings
    assert (f.code, f.subject, f.payload["line"]) == ("answer-key-unknown", "nodes[2].link8",
                                                      line_of(text, "link8"))
    assert "0..7" in f.remedy


@pytest.mark.parametrize("old,new,subject", [
    ('name = "prod"\n', "", "cluster.name"),
    ("number = 1\n", "", "links[1].number"),
    ('name = "pve3"\n', "", "nodes[2].name"),
    ('  name = "eno3"\n', "", "nodes[0].interfaces[1].name"),
])
def test_missing_required_keys_are_reported_once_at_the_enclosing_table(old, new, subject):
    text = edit(old, new)
    got = problems(text)
    assert [(c, s) for c, s, _ in got] == [("answer-key-missing", subject)]
    table = {"cluster.name": "[cluster]", "links[1].number": "[[links]]",
             "nodes[2].name": "[[nodes]]", "nodes[0].interfaces[1].name": "[[nodes.interfaces]]"}
    header_lines = [i for i, line in enumerate(text.split("\n"), 1)
                    if line.strip() == table[subject]]
    assert got[0][2] in header_lines


def test_missing_top_level_tables():
    got = problems('[cluster]\nname = "prod"\n')
    assert sorted((c, s) for c, s, _ in got) == [("answer-key-missing", "links"),
                                                 ("answer-key-missing", "nodes")]
    assert problems("")[0][:2] == ("answer-key-missing", "cluster")


@pytest.mark.parametrize("old,new,subject,expected,got", [
    ("nodeid = 2", 'nodeid = "2"', "nodes[1].nodeid", "integer", "string"),
    ('link0 = "10.10.10.3"', "link0 = 10", "nodes[2].link0", "string", "integer"),
    ('pve_version = "9.2"', "pve_version = 9.2", "cluster.pve_version", "string", "float"),
    ("priority = 20", "priority = true", "links[0].priority", "integer", "boolean"),
    ('language = "en"', "language = 1979-05-27", "datacenter.language", "string", "date-time"),
    ("latency_fail_ms = 2.0", 'latency_fail_ms = "2"', "preflight.latency_fail_ms", "number",
     "string"),
    ('ntp_servers = ["0.debian.pool.ntp.org"]', 'ntp_servers = "0.debian.pool.ntp.org"',
     "preflight.ntp_servers", "strings", "string"),
    ("bwlimit = { default = 102400, migration = 512000 }", "bwlimit = [1, 2]",
     "datacenter.bwlimit", "table", "array"),
    ('migration = { type = "secure", network = "10.10.20.0/24" }', 'migration = "secure"',
     "datacenter.migration", "table", "string"),
])
def test_type_errors_name_the_expected_and_the_given_type(old, new, subject, expected, got):
    text = edit(old, new)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    typed = [f for f in info.value.findings if f.code == "answer-type-invalid"]
    assert [(f.subject, f.payload["expected"], f.payload["got"], f.payload["line"])
            for f in typed] == [(subject, expected, got, line_of(text, new.split("\n")[0]))]


@pytest.mark.parametrize("old,new,subject", [
    ("latency_fail_ms = 2.0", "latency_fail_ms = 1" + "0" * 400, "preflight.latency_fail_ms"),
    ("latency_fail_ms = 2.0", "latency_fail_ms = nan", "preflight.latency_fail_ms"),
    ("clock_warn_s = 0.1", "clock_warn_s = +inf", "preflight.clock_warn_s"),
    ("nodeid = 3", "nodeid = 9223372036854775808", "nodes[2].nodeid"),
])
def test_numbers_toml_cannot_hold_or_that_are_not_finite_are_refused(old, new, subject):
    text = edit(old, new)
    assert problems(text) == [("answer-number-out-of-range", subject, line_of(text, new))]


def test_a_single_table_where_an_array_of_tables_belongs_says_how_to_write_it():
    text = '[cluster]\nname = "a"\n[links]\nnumber = 0\n[[nodes]]\nname = "n"\nlink0 = "10.0.0.1"\n'
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    [f] = info.value.findings
    assert (f.code, f.subject, f.payload["line"]) == ("answer-type-invalid", "links", 3)
    assert "[[links]]" in f.remedy


@pytest.mark.parametrize("old,new,subject", [
    ("[cluster]", '[cluster]\nroot_password = "s3cret-value"', "cluster.root_password"),
    ("[join]", '[join]\npassword = "s3cret-value"', "join.password"),
    ("[preflight]", '[global]\nkeyboard = "de"\nroot-password = "s3cret-value"\n[preflight]',
     "global.root-password"),
    ('management = "192.168.1.13/24"',
     'management = "192.168.1.13/24"\n[nodes.creds]\nRootPassword = "s3cret-value"',
     "nodes[2].creds.RootPassword"),
])
def test_passwords_in_the_file_are_refused_and_never_repeated(old, new, subject):
    text = edit(old, new)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    secret = [f for f in info.value.findings if f.code == "answer-secret-refused"]
    assert [(f.subject, f.payload["line"]) for f in secret] == [
        (subject, line_of(text, "s3cret-value"))]
    assert "password_file" in secret[0].remedy and "password_env" in secret[0].remedy
    assert "s3cret-value" not in info.value.render()
    assert "s3cret-value" not in json.dumps([f.as_dict() for f in info.value.findings])


@pytest.mark.parametrize("old,new,code,subject", [
    ('password_env = "PVE_ROOT_PASSWORD"', 'password_env = "my secret pw"', "password-env-invalid",
     "join.password_env"),
    ('password_env = "PVE_ROOT_PASSWORD"', 'password_file = "pw.txt"', "password-file-invalid",
     "join.password_file"),
    ('password_env = "PVE_ROOT_PASSWORD"',
     'password_env = "PVE_ROOT_PASSWORD"\npassword_file = "/root/pw"',
     "password-source-ambiguous", "join"),
])
def test_password_references_must_be_references(old, new, code, subject):
    text = edit(old, new)
    [(got_code, got_subject, line)] = problems(text)
    assert (got_code, got_subject) == (code, subject)
    assert line == line_of(text, "[join]" if subject == "join" else new.split("\n")[-1])


# -- plan.validate() findings arrive as TOML paths -------------------------------------------------

@pytest.mark.parametrize("old,new,code,subject", [
    ('name = "prod"', 'name = "this-name-is-too-long"', "cluster-name-invalid", "cluster.name"),
    ('create_node = "pve1"', 'create_node = "pve1{"', "value-forbidden-character",
     "cluster.create_node"),
    ('pve_version = "9.2"', 'pve_version = "nine"', "pve-version-invalid", "cluster.pve_version"),
    ('link1 = "10.10.20.2"', 'link1 = "pve2.example"', "address-not-ip", "nodes[1].link1"),
    ('link1 = "10.10.20.2"', 'link1 = "10.10.20.2}"', "value-forbidden-character",
     "nodes[1].link1"),
    ('link0 = "10.10.10.3"', 'link0 = "fd10::3"', "address-outside-network", "nodes[2].link0"),
    ("nodeid = 3", "nodeid = 0", "nodeid-invalid", "nodes[2].nodeid"),
    ('name = "pve3"', 'name = "pve2"  # twice', "node-name-duplicate", "nodes[2].name"),
    ("number = 1", "number = 9", "link-number-out-of-range", "links[1].number"),
    ('management = "192.168.1.12/24"', 'management = "192.168.1.12"', "management-invalid",
     "nodes[1].management"),
    ('console = "html5"', 'console = "vnc"', "console-invalid", "datacenter.console"),
    ('ha_shutdown_policy = "conditional"', 'ha_shutdown_policy = "never"', "ha-policy-invalid",
     "datacenter.ha_shutdown_policy"),
    ('network = "10.10.20.0/24" }', 'network = "10.10.20.0/24\\n" }',
     "value-forbidden-character", "datacenter.migration.network"),
    ("lower = 1000, upper = 9999", "lower = 9999, upper = 1000", "next-id-invalid",
     "datacenter.next_id"),
    ('email_from = "pve@example.com"', 'email_from = "pve"', "email-invalid",
     "datacenter.email_from"),
    ('[datacenter]', '[datacenter]\nmac_prefix = "BD:24:11"', "mac-prefix-invalid",
     "datacenter.mac_prefix"),
    ('[datacenter]', '[datacenter]\nmax_workers = 0', "max-workers-invalid",
     "datacenter.max_workers"),
    ("migration = 512000 }", "clone = -1 }", "bwlimit-invalid", "datacenter.bwlimit.clone"),
    ("clock_warn_s = 0.1", "clock_warn_s = 0", "threshold-invalid", "preflight.clock_warn_s"),
    ("ignore_checks = []", 'ignore_checks = ["all"]', "ignore-all-refused",
     "preflight.ignore_checks"),
    ('ntp_servers = ["0.debian.pool.ntp.org"]', 'ntp_servers = ["a{b"]',
     "value-forbidden-character", "preflight.ntp_servers[0]"),
])
def test_plan_rules_are_reported_with_toml_paths_and_lines(old, new, code, subject):
    text = edit(old, new)
    got = problems(text)
    want_line = line_of(text, new.split("\n")[-1])
    assert (code, subject, want_line) in got, got


def test_a_mistyped_address_is_not_also_reported_as_a_link_set_mismatch():
    got = problems(edit('link1 = "10.10.20.2"', "link1 = 2"))
    assert [c for c, _, _ in got] == ["answer-type-invalid"]


def test_toml_path_maps_every_plan_field_path():
    assert answers.toml_path("cluster_name") == "cluster.name"
    assert answers.toml_path("backend") == "cluster.backend"
    assert answers.toml_path("nodes[3].addresses.7") == "nodes[3].link7"
    assert answers.toml_path("preflight.thresholds.duration_s") == "preflight.duration_s"
    assert answers.toml_path("datacenter.replication_type") == "datacenter.replication.type"
    assert answers.toml_path("datacenter.next_id_upper") == "datacenter.next_id.upper"
    assert answers.toml_path("cluster.backend") == "cluster.backend"


# -- values the loader fills in --------------------------------------------------------------------

def test_nodes_without_nodeid_get_the_lowest_free_ids_in_file_order():
    text = ('[cluster]\nname = "c"\n[[links]]\nnumber = 0\n'
            + "".join(f'[[nodes]]\nname = "n{i}"\nlink0 = "10.0.0.{i}"\n{extra}'
                      for i, extra in enumerate(["", "nodeid = 1\n", "", "nodeid = 3\n", ""])))
    plan = answers.loads(text)
    assert [(n.name, n.nodeid) for n in plan.nodes] == [("n0", 2), ("n1", 1), ("n2", 4),
                                                         ("n3", 3), ("n4", 5)]
    assert plan.creator.name == "n1" and plan.node("n0").votes == 1


@pytest.mark.parametrize("installer,pve", [("dk", "da"), ("jp", "ja"), ("se", "sv"),
                                           ("si", "sl"), ("de-ch", "de-ch")])
def test_installer_keyboard_spellings_are_mapped(installer, pve):
    plan = answers.loads(edit('keyboard = "en-us"', f'keyboard = "{installer}"'))
    assert plan.datacenter.keyboard == pve


# -- TOML syntax and unreadable files --------------------------------------------------------------

@pytest.mark.parametrize("text,line", [
    ('[cluster]\nname = "prod"\nnodes = = 3\n', 3),
    ('[cluster]\nname = "prod"\nname = "again"\n', 3),
    ('[cluster]\nname = "x"\n[cluster]\n', 3),
    ('a = 1\nb = """never closed\n\nc = 2\n', 2),
    ("x = " + "9" * 5000 + "\n", None),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", None),
])
def test_toml_syntax_errors_are_user_errors_naming_the_line(text, line):
    with pytest.raises(UserError) as info:
        answers.loads(text, "site.toml")
    assert not isinstance(info.value, ValidationFailed)
    assert info.value.code == "answer-toml-invalid" and info.value.exit_code == 2
    prefix = f"site.toml:{line}: " if line else "site.toml: "
    assert info.value.message.startswith(prefix + "not valid TOML")


def test_load_reports_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(UserError, match="cannot read") as info:
        answers.load(tmp_path / "missing.toml")
    assert info.value.code == "answer-file-unreadable"
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[cluster]\nname = "prod"\nlanguage = "fran\xe7ais"\n')
    with pytest.raises(UserError, match=rf"^{re.escape(str(bad))}:3: not UTF-8"):
        answers.load(bad)
    with pytest.raises(UserError, match="cannot read"):
        answers.load(tmp_path)


def test_load_accepts_a_byte_order_mark(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + answers.example().encode())
    assert answers.load(path) == answers.loads(answers.example())


# -- key_lines: where a key is in the text ---------------------------------------------------------

def test_key_lines_understands_quoted_dotted_inline_and_multiline_values():
    text = "\n".join([
        "[cluster]",                                   # 1
        'name = "x"  # the = in a comment',            # 2
        '"quoted.key" = 1',                            # 3
        "a.b = 2",                                     # 4
        "text = '''",                                  # 5
        "name = not a key",                            # 6
        "'''",                                         # 7
        "list = [",                                    # 8
        "  { z = 1 },",                                # 9
        "]",                                           # 10
        "[[nodes]]",                                   # 11
        "[[nodes]]",                                   # 12
        "  [[nodes.interfaces]]",                      # 13
        "  [[nodes.interfaces]]",                      # 14
        '  name = "eno2"',                             # 15
        "[nodes.extra]",                               # 16
        "k = { m = { n = 1 } }",                       # 17
    ])
    tomllib.loads(text)
    where = toml_lines.key_lines(text)
    assert where["cluster.name"] == 2 and where['cluster."quoted.key"'] == 3
    assert where["cluster.a.b"] == 4 and where["cluster.text"] == 5
    assert where["cluster.list[0].z"] == 8
    assert where["nodes[0]"] == 11 and where["nodes[1]"] == 12
    assert where["nodes[1].interfaces[1].name"] == 15
    assert where["nodes[1].extra.k.m.n"] == 17
    assert "nodes[0].interfaces" not in where
    assert toml_lines.line_of(where, "nodes[1].interfaces[1].mtu") == 14
    assert toml_lines.line_of(where, 'cluster."quoted.key".x') == 3
    assert toml_lines.line_of(where, "links[0]") is None


# -- select_node -----------------------------------------------------------------------------------

def test_select_node_by_name_and_by_short_hostname(monkeypatch):
    plan = answers.loads(answers.example())
    assert answers.select_node(plan, "pve3").nodeid == 3
    monkeypatch.setattr(answers.socket, "gethostname", lambda: "pve2.example.com")
    assert answers.select_node(plan).name == "pve2"
    monkeypatch.setattr(answers.socket, "gethostname", lambda: "laptop")
    with pytest.raises(UserError) as info:
        answers.select_node(plan)
    assert info.value.code == "node-not-in-answers"
    assert "pve1, pve2, pve3" in info.value.message and "'laptop'" in info.value.message
    assert "--node" in info.value.remedy
    with pytest.raises(UserError, match="'pve9' is not in the answer file"):
        answers.select_node(plan, "pve9")


# -- join information ------------------------------------------------------------------------------

def gui_blob(address="10.10.10.1", fingerprint=FP, links=(0, 1), name="prod", **extra) -> str:
    """Built the way pve-manager's ClusterInfoWindow does: base64 of the JSON object."""
    info = {
        "ipAddress": address,
        "fingerprint": fingerprint,
        "peerLinks": {str(n): f"10.10.{(n + 1) * 10}.1" for n in links},
        "ring_addr": [f"10.10.{(n + 1) * 10}.1" for n in links],
        "totem": {"cluster_name": name, "config_version": "3", "ip_version": "ipv4-6",
                  "interface": {str(n): {"linknumber": str(n)} for n in links},
                  "link_mode": "passive", "secauth": "on", "version": "2"},
        **extra,
    }
    return base64.b64encode(json.dumps(info).encode()).decode()


def test_joininfo_decodes_the_gui_blob():
    info = joininfo.decode(gui_blob())
    assert (info.address, info.fingerprint) == ("10.10.10.1", FP)
    assert info.peer_links == {0: "10.10.10.1", 1: "10.10.20.1"}
    assert (info.cluster_name, info.link_numbers) == ("prod", (0, 1))
    wrapped = "\n".join(re.findall(".{1,60}", gui_blob().rstrip("=")))
    assert joininfo.decode(wrapped) == info
    assert joininfo.decode(gui_blob(peerLinks=None)).peer_links == {}


@pytest.mark.parametrize("blob", [
    "", "not base64 at all!", base64.b64encode(b"\xff\xfe").decode(),
    base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'{"ipAddress": 1}').decode(),
    gui_blob(fingerprint="AA:BB"), gui_blob(totem=None), gui_blob(peerLinks=[1]),
    gui_blob(peerLinks={"zero": "10.0.0.1"}), gui_blob(address=""),
    base64.b64encode(b"[" * 100000).decode(),
])
def test_joininfo_garbage_is_a_user_error(blob):
    with pytest.raises(UserError) as info:
        joininfo.decode(blob)
    assert info.value.code == "join-info-invalid" and "Join Information" in info.value.remedy


def join_with(snippet: str) -> str:
    return edit('address = "10.10.10.1"\n', snippet + "\n")


def test_join_info_fills_address_and_fingerprint():
    plan = answers.loads(join_with(f'join_info = "{gui_blob(address="10.10.10.5")}"'))
    assert (plan.join.address, plan.join.fingerprint) == ("10.10.10.5", FP)
    assert plan.join_address(lambda name: ("192.168.7.1",)) == "10.10.10.5"  # explicit wins


@pytest.mark.parametrize("snippet,code,subject", [
    ('join_info = "Zm9v"', "join-info-invalid", "join.join_info"),
    ('address = "10.10.10.2"\njoin_info = "{blob}"', "join-info-conflict", "join.address"),
    (f'fingerprint = "{FP.replace("00", "01")}"\njoin_info = "{{blob}}"', "join-info-conflict",
     "join.fingerprint"),
    ('join_info = "{other_name}"', "join-info-cluster-mismatch", "join.join_info"),
    ('join_info = "{one_link}"', "join-info-links-mismatch", "join.join_info"),
])
def test_join_info_that_disagrees_with_the_file_is_reported(snippet, code, subject):
    text = join_with(snippet.format(blob=gui_blob(), other_name=gui_blob(name="test"),
                                    one_link=gui_blob(links=(0,))))
    [(got_code, got_subject, line)] = problems(text)
    assert (got_code, got_subject) == (code, subject)
    needle = "join_info" if subject == "join.join_info" else snippet.split("\n")[0]
    assert line == line_of(text, needle)


def test_a_matching_explicit_fingerprint_in_other_case_is_no_conflict():
    plan = answers.loads(join_with(f'fingerprint = "{FP.lower()}"\njoin_info = "{gui_blob()}"'))
    assert plan.join.fingerprint == FP.lower()


# -- [installer]: the automated installer's settings in the same file ------------------------------

def with_installer(text: str | None = None) -> str:
    """The example with its commented [installer] section switched on."""
    head, tail = (answers.example() if text is None else text).split("# [installer]\n")
    lines = [line[2:] if line.startswith("# ") else "" if line == "#" else line
             for line in tail.split("\n")]
    return head + "[installer]\n" + "\n".join(lines)


def test_the_commented_installer_section_of_the_example_is_valid_when_switched_on():
    plan = answers.loads(with_installer())
    assert answers.loads(answers.example()).installer is None
    inst = plan.installer
    assert (inst["country"], inst["domain"], inst["reboot_on_error"]) == ("at", "example.com",
                                                                          False)
    assert inst["network_filter"] == {"ID_NET_NAME": "eno1"}
    assert inst["disk"]["zfs"] == {"raid": "raid1", "ashift": 12, "compress": "lz4"}
    assert inst["nodes"]["pve3"]["disk"]["lvm"] == {"hdsize": 100.0, "swapsize": 8.0}
    with pytest.raises(TypeError):
        inst["disk"]["filesystem"] = "xfs"  # read-only, like the rest of the plan


_INST = with_installer()
_LONG = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 58])  # 250: too long with any node


_INSTALLER_CASES = [
    ('country = "at"', 'country = "AT"', "installer-country-invalid", "installer.country"),
    ('timezone = "Europe/Vienna"', 'timezone = "CET"', "installer-timezone-invalid",
     "installer.timezone"),
    ('timezone = "Europe/Vienna"', 'timezone = "Europe/Vienn"', "installer-timezone-invalid",
     "installer.timezone"),
    ('keyboard = "en-us"              #', 'keyboard = "us"  #',
     "installer-settings-value-invalid", "installer.keyboard"),
    ('mailto = "ops@example.com"', 'mailto = "mail@example.invalid"', "installer-mailto-invalid",
     "installer.mailto"),
    ('mailto = "ops@example.com"', 'mailto = "ops"', "installer-mailto-invalid",
     "installer.mailto"),
    ('domain = "example.com"', 'domain = "exa_mple.com"', "installer-fqdn-invalid",
     "installer.domain"),
    ('domain = "example.com"', f'domain = "{_LONG}"', "installer-fqdn-invalid",
     "installer.domain"),
    ('domain = "example.com"', 'domain = ""', "installer-settings-value-empty",
     "installer.domain"),
    ('network_source = "from-answer"', 'network_source = "static"',
     "installer-settings-value-invalid", "installer.network_source"),
    ('gateway = "192.168.1.1"', 'gateway = "192.168.1"', "installer-address-invalid",
     "installer.gateway"),
    ('dns = "192.168.1.2"', 'dns = "ns1.example.com"', "installer-address-invalid",
     "installer.dns"),
    ('gateway = "192.168.1.1"', 'gateway = "192.168.1.1\\t"', "installer-settings-value-invalid",
     "installer.gateway"),
    ('network_filter = { ID_NET_NAME = "eno1" }', "network_filter = {}",
     "installer-settings-value-empty", "installer.network_filter"),
    ('network_filter = { ID_NET_NAME = "eno1" }', "network_filter = { ID_NET_NAME = 1 }",
     "answer-type-invalid", "installer.network_filter.ID_NET_NAME"),
    ("reboot_on_error = false", 'reboot_on_error = "no"', "answer-type-invalid",
     "installer.reboot_on_error"),
    ('first_boot_ordering = "fully-up"', 'first_boot_ordering = "late"',
     "installer-settings-value-invalid", "installer.first_boot_ordering"),
    ('filesystem = "zfs"', 'filesystem = "ntfs"', "installer-settings-value-invalid",
     "installer.disk.filesystem"),
    ('disk_list = ["sda", "sdb"]', 'disk_list = ["sda", "sdb"]\nfilter = { ID_MODEL = "*" }',
     "installer-disks-conflict", "installer.disk.filter"),
    ('disk_list = ["sda", "sdb"]', 'disk_list = ["sda", "sda"]', "installer-disk-duplicate",
     "installer.disk.disk_list[1]"),
    ('raid = "raid1"', 'raid = "raid5"', "installer-settings-value-invalid",
     "installer.disk.zfs.raid"),
    ('raid = "raid1"', 'raid = "raidz-2"', "installer-disks-too-few",
     "installer.disk.disk_list", "disk_list ="),
    ("ashift = 12", "ashift = -1", "installer-settings-value-out-of-range",  # u32
     "installer.disk.zfs.ashift"),
    ('compress = "lz4"', 'compress = "brotli"', "installer-settings-value-invalid",
     "installer.disk.zfs.compress"),
    ("lvm = { hdsize = 100, swapsize = 8 }", "lvm = { hdsize = 100, swapsize = 60 }",
     "installer-swapsize-too-large", "installer.nodes.pve3.disk.lvm.swapsize"),
    ("lvm = { hdsize = 100, swapsize = 8 }", 'lvm = { hdsize = 100, maxroot = "1" }',
     "answer-type-invalid", "installer.nodes.pve3.disk.lvm.maxroot"),
    ("lvm = { hdsize = 100, swapsize = 8 }", 'lvm = { hdsize = 100 }\nzfs = { raid = "raid1" }',
     "installer-fs-options-conflict", "installer.nodes.pve3.disk.zfs"),
    ("[installer.nodes.pve3.disk]", '[installer.nodes.pve9]\ncountry = "de"\n'
     "[installer.nodes.pve3.disk]", "installer-settings-node-unknown", "installer.nodes.pve9",
     "pve9"),
    ("[installer.nodes.pve3.disk]", '[installer.nodes.pve2]\ncountry = "Danmark"\n'
     "[installer.nodes.pve3.disk]", "installer-country-invalid", "installer.nodes.pve2.country",
     "Danmark"),
    ('dns = "192.168.1.2"', 'dns = "192.168.1.2"\nnetwork-filter = { A = "b" }',
     "answer-key-unknown", "installer.network-filter"),
]


@pytest.mark.parametrize("old,new,code,subject,needle",
                         [case + (None,) * (5 - len(case)) for case in _INSTALLER_CASES])
def test_installer_settings_are_checked_by_the_installer_rules_with_key_and_line(
        old, new, code, subject, needle):
    text = edit(old, new, _INST)
    got = problems(text)
    assert got == [(code, subject, line_of(text, needle or new.split("\n")[-1]))], got


def test_a_problem_only_some_nodes_have_says_which():
    domain = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 54])  # 248: fits "pve1."
    text = edit('domain = "example.com"', f'domain = "{domain}"', _INST)
    text = text.replace('name = "pve3"', 'name = "pve3-long-name"').replace(
        "installer.nodes.pve3", "installer.nodes.pve3-long-name")
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    [f] = info.value.findings
    assert (f.code, f.subject, f.payload["nodes"]) == ("installer-fqdn-invalid",
                                                        "installer.domain", ["pve3-long-name"])
    assert f.message.endswith("(node pve3-long-name)")
    short = edit('domain = "example.com"', f'domain = "{_LONG}"', _INST)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(short)
    [f] = info.value.findings
    assert f.payload["nodes"] == ["pve1", "pve2", "pve3"] and "(node" not in f.message


def test_a_shared_value_every_node_overrides_is_still_checked():
    text = edit("[installer.nodes.pve3.disk]", "".join(
        f'[installer.nodes.{n}]\ncountry = "de"\n' for n in ("pve1", "pve2", "pve3"))
        + "[installer.nodes.pve3.disk]", _INST)
    assert answers.loads(text).installer["nodes"]["pve1"]["country"] == "de"
    text = edit('country = "at"', 'country = "Austria"', text)
    assert problems(text) == [("installer-country-invalid", "installer.country",
                               line_of(text, "Austria"))]


@pytest.mark.parametrize("old,new,subject", [
    ("[installer]", '[installer]\nroot_password_hashed = "$6$salt$hash-s3cret-value"',
     "installer.root_password_hashed"),
    ('filesystem = "ext4"', 'filesystem = "ext4"\nroot-password = "s3cret-value"',
     "installer.nodes.pve3.disk.root-password"),
])
def test_no_installer_password_may_be_in_the_file_it_is_a_build_option(old, new, subject):
    text = edit(old, new, _INST)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(text)
    [f] = info.value.findings
    assert (f.code, f.subject, f.payload["line"]) == ("answer-secret-refused", subject,
                                                      line_of(text, "s3cret-value"))
    assert "--root-password-file" in f.remedy and "--root-password-env" in f.remedy
    assert "s3cret-value" not in info.value.render()


def test_a_node_named_like_a_password_key_may_have_installer_settings():
    """A node's name under [installer.nodes] is data, not a field (hypothesis found one named
    aPASSWDa refused as a secret); a password key inside its table is still refused."""
    text = _INST.replace("pve3", "passwd3")
    assert "installer.nodes.passwd3" in text
    answers.loads(text)
    with pytest.raises(ValidationFailed) as info:
        answers.loads(edit('filesystem = "ext4"', 'filesystem = "ext4"\npasswd = "s3cret"', text))
    assert [(f.code, f.subject) for f in info.value.findings] == [
        ("answer-secret-refused", "installer.nodes.passwd3.disk.passwd")]


def test_nodes_installed_from_the_answer_need_their_management_address():
    text = edit('management = "192.168.1.12/24"\n', "", _INST)
    assert problems(text) == [("installer-management-missing", "nodes[1].management",
                               line_of(text, 'name = "pve2"') - 1)]
    dhcp = edit("[installer.nodes.pve3.disk]",
                '[installer.nodes.pve2]\nnetwork_source = "from-dhcp"\n'
                "[installer.nodes.pve3.disk]", text)
    assert answers.loads(dhcp).node("pve2").management is None
    # without [installer] the cluster file does not ask for it
    assert answers.loads(edit('management = "192.168.1.12/24"\n', "")).installer is None


def test_plans_built_in_code_get_the_same_installer_checks():
    """answers.problems_of: plan.validate's problems and the installer settings' (which the
    model below cannot check: the installer's rules build on it)."""
    from dataclasses import replace

    plan = answers.loads(answers.example())
    bad = replace(plan, installer={"country": 7, "root_password_hashed": "$6$x$y",
                                   "disk": {"filesystem": "zfs", "zfs": {"copies": -1}},
                                   "nodes": {"pve2": {"mailto": "x"}}})
    assert sorted((f.code, f.subject) for f in answers.problems_of(bad)) == [
        ("installer-mailto-invalid", "installer.nodes.pve2.mailto"),
        ("installer-settings-key-unknown", "installer.root_password_hashed"),
        ("installer-settings-type-invalid", "installer.country"),
        ("installer-settings-value-out-of-range", "installer.disk.zfs.copies"),
    ]
    assert answers.problems_of(replace(plan, installer=[1])) != []
