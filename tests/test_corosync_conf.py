"""corosync.conf: parser, writers, facade and lint (fast, no root).

The admin guide's own examples are the round-trip oracle; the layout facts come from
pve-cluster's writer (src/PVE/Corosync.pm write_conf: keys sorted, two-space indent, a blank line
after each top-level section, nodes ordered by name and interfaces by link number).
"""

from __future__ import annotations

from dataclasses import replace

import difflib
import ipaddress
import pathlib
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.lint import lint
from pvestrap.corosync.tree import ConfParseError, Item, Section, canonical, format_tree, parse
from pvestrap.errors import UserError, ValidationFailed
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node

DATA = pathlib.Path(__file__).parent / "data" / "corosync"
GUIDE = pathlib.Path("/work/shared/reference/pvecm-admin-guide.adoc")
if not GUIDE.exists():  # the checkout's sibling folder, wherever the checkout lives
    GUIDE = pathlib.Path(__file__).resolve().parents[2] / "shared/reference/pvecm-admin-guide.adoc"
SAMPLES = sorted(DATA.glob("*.conf"))


def guide_examples() -> list[tuple[int, str]]:
    """The `----` listing blocks of the admin guide that hold a corosync.conf.

    A `----` line opens a listing only after a blank line or a block attribute; otherwise it is
    the underline of a one-word title (`NAME` / `----`).
    """
    lines = GUIDE.read_text().split("\n")
    blocks, body, start, prev = [], None, 0, ""
    for number, line in enumerate(lines, 1):
        if line == "----" and body is not None:
            text = "\n".join(body) + "\n"
            if "totem {" in text or "nodelist {" in text:
                blocks.append((start, text))
            body = None
        elif line == "----" and (not prev.strip() or prev.startswith(("[", "."))):
            body, start = [], number + 1
        elif body is not None:
            body.append(line)
        prev = line
    return blocks


def content(node: Section) -> tuple:
    """What corosync reads, independent of order: order of keys, sections and repeated
    sections carries no meaning for corosync (nodes are matched by nodeid/address)."""
    out = []
    for child in node.children:
        out.append((child.key, child.value) if isinstance(child, Item)
                   else (child.name, content(child)))
    return tuple(sorted(out, key=repr))


def codes(findings) -> set[str]:
    return {f.code for f in findings}


def by_code(findings, code):
    found = [f for f in findings if f.code == code]
    assert found, f"no {code} in {[f.code for f in findings]}"
    return found


# -- the admin guide's examples -------------------------------------------------------------------

def test_the_guide_has_the_three_known_examples():
    starts = [start for start, _ in guide_examples()]
    assert len(starts) == 3, starts


@pytest.mark.parametrize("start,text", guide_examples(), ids=lambda v: str(v)[:12])
def test_guide_example_round_trips(start, text):
    tree = parse(text, f"guide:{start}")
    assert format_tree(tree) == text  # same bytes, blank lines and all
    assert parse(format_tree(tree)) == tree
    pvecm = canonical(tree)
    assert content(parse(pvecm)) == content(tree)
    assert canonical(parse(pvecm)) == pvecm
    assert pvecm.endswith("}\n\n")


def test_guide_example_in_pvecm_order_sorts_nodes_by_name():
    _, text = guide_examples()[-1]
    out = canonical(parse(text))
    assert [line.split(": ")[1] for line in out.splitlines() if "name:" in line and
            "cluster" not in line] == ["due", "tre", "uno"]
    assert "\n\n  node" not in out and "  }\n\n}" not in out  # pvecm's layout drops those


# -- parsing ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,line,problem", [
    ("totem {\n  version: 2\n}\n}\n", 4, "unmatched '}'"),
    ("totem {\n  version 2\n}\n", 2, "missing ':'"),
    ("totem { version: 2 }\n", 1, "after '{'"),
    ("logging {\n}\ntotem {\n  version: 2\n", 3, "never closed"),
    ("{\n}\n", 1, "missing section name"),
    ("totem {\n  : 2\n}\n", 2, "missing key name"),
    ("totem {\n  version: 2\n} # end\n", 3, "'}'"),
    ("totem {\n  cluster_name: " + "x" * 600 + "\n}\n", 2, "longer than"),
])
def test_parse_errors_name_the_line(text, line, problem):
    with pytest.raises(ConfParseError) as err:
        parse(text, "corosync.conf")
    assert err.value.line == line
    assert err.value.code == "conf-parse-error"
    assert isinstance(err.value, UserError) and err.value.exit_code == 2
    assert str(err.value).startswith(f"corosync.conf:{line}: ")
    assert problem in str(err.value)


def test_grammar_is_corosyncs():
    tree = parse("totem{\n\tcluster_name:  a b \n  addr: fe80::1\n  token:\n  x: a}b\n}\n")
    totem = tree.section("totem")
    assert [(i.key, i.value) for i in totem.items()] == [
        ("cluster_name", "a b"), ("addr", "fe80::1"), ("token", ""), ("x", "a}b")]
    assert totem.line == 1 and totem.items()[1].line == 3


def test_comments_attach_to_the_next_item_and_survive():
    text = "# head\n\ntotem {\n  # the name\n  cluster_name: a\n  # dangling\n}\n# tail\n"
    tree = parse(text)
    totem = tree.section("totem")
    assert totem.comments == ("# head", "")
    assert totem.items("cluster_name")[0].comments == ("# the name",)
    assert totem.trailing == ("# dangling",) and tree.trailing == ("# tail",)
    assert format_tree(tree) == text
    assert canonical(tree) == ("# head\ntotem {\n  # the name\n  cluster_name: a\n"
                               "  # dangling\n}\n\n# tail\n")


def test_repeated_sections_and_keys_are_kept_in_order():
    tree = parse("a {\n  k: 1\n  k: 2\n}\na {\n  n {\n  }\n  n {\n  }\n}\n")
    assert len(tree.sections("a")) == 2
    first = tree.sections("a")[0]
    assert [i.value for i in first.items("k")] == ["1", "2"] and first.get("k") == "2"
    assert len(tree.sections("a")[1].sections("n")) == 2


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_parse_write_and_reformat(path):
    text = path.read_text()
    tree = parse(text, path.name)
    if "\t" not in text and "\n    version" not in text:  # two-space samples keep every byte
        assert format_tree(tree) == text
    assert parse(format_tree(tree)) == tree
    assert content(parse(canonical(tree))) == content(tree)
    assert canonical(parse(canonical(tree))) == canonical(tree)


def test_the_pvecm_sample_is_already_canonical_whatever_order_it_was_in():
    text = (DATA / "pve-3node-2link.conf").read_text()
    rng = random.Random(7)

    def shuffle(section: Section) -> Section:
        children = [shuffle(c) if isinstance(c, Section) else c for c in section.children]
        rng.shuffle(children)
        return section.with_children(children)

    for _ in range(5):
        scrambled = shuffle(parse(text))
        assert format_tree(scrambled) != text
        assert canonical(scrambled) == text


# -- the facade ------------------------------------------------------------------------------------

def plan_3x2(pve_version: str | None = None) -> ClusterPlan:
    return ClusterPlan(
        "lab-one",
        (Node("alpha", 1, {0: "10.40.0.11", 1: "10.41.0.11"}),
         Node("bravo", 2, {0: "10.40.0.12", 1: "10.41.0.12"}),
         Node("charlie", 3, {0: "10.40.0.13", 1: "10.41.0.13"})),
        (Link(0, "10.40.0.0/24", 20), Link(1, "10.41.0.0/24", 10)),
        pve_version=pve_version)


def test_create_writes_what_pvecm_writes():
    # pve-3node-2link.conf was written by hand from pve-cluster's create_conf/write_conf:
    # logging {debug off, to_syslog yes}; node {name, nodeid, quorum_votes, ringN_addr};
    # quorum {provider corosync_votequorum}; totem keys sorted with the interface sections
    # between config_version and ip_version, knet_link_priority before linknumber and only when
    # non-zero; token_coefficient 125 for PVE >= 9.2; a blank line after each section.
    expected = (DATA / "pve-3node-2link.conf").read_text().replace("config_version: 7",
                                                                   "config_version: 1")
    conf = CorosyncConf.create(plan_3x2("9.2"))
    assert conf.text() == expected
    assert conf.canonical() == expected
    older = CorosyncConf.create(plan_3x2("9.1")).text()
    assert older == expected.replace("  token_coefficient: 125\n", "")


def test_create_leaves_out_zero_priorities():
    plan = ClusterPlan("c", (Node("n1", 1, {0: "10.1.0.1"}),), (Link(0),))
    totem = CorosyncConf.create(plan).tree.section("totem")
    assert totem.section("interface").plain() == (("linknumber", "0"),)


def test_create_refuses_an_invalid_plan():
    plan = ClusterPlan("c", (Node("n1", 1, {8: "10.1.0.1"}),), (Link(8),))
    with pytest.raises(ValidationFailed) as err:
        CorosyncConf.create(plan)
    assert "link-number-out-of-range" in codes(err.value.findings)


def test_reading_the_domain():
    conf = CorosyncConf.parse((DATA / "pve-upgraded-commented.conf").read_text())
    assert conf.cluster_name == "sky" and conf.config_version == 23
    assert conf.link_numbers == (0, 1) and conf.priorities == {0: 0, 1: 5}
    assert conf.nodes[1] == ("moon", 2, 2, {0: "moon", 1: "10.90.1.2"})
    plan = conf.to_plan()
    assert [n.nodeid for n in plan.nodes] == [1, 2, 4]
    assert plan.link(1).priority == 5


def three_nodes() -> CorosyncConf:
    return CorosyncConf.create(plan_3x2())


def test_add_node_takes_the_lowest_free_nodeid():
    conf = three_nodes().remove_node("bravo")
    conf = conf.add_node("delta", {0: "10.40.0.14", 1: "10.41.0.14"})
    assert {n.name: n.nodeid for n in conf.nodes}["delta"] == 2
    conf = conf.add_node("echo", {0: "10.40.0.15", 1: "10.41.0.15"}, votes=0)
    # pvecm addnode writes no quorum_votes for 0 votes; corosync (and the facade) count 1
    assert conf.nodes[-1] == ("echo", 4, 1, {0: "10.40.0.15", 1: "10.41.0.15"})
    assert "quorum_votes" not in conf.text().split("name: echo")[1].split("}")[0]
    assert lint(conf.text()) == []


def test_add_node_refuses_everything_wrong_at_once():
    conf = three_nodes()
    with pytest.raises(ValidationFailed) as err:
        conf.add_node("alpha", {0: "10.40.0.12", 2: "pve9"}, nodeid=3, votes=-1)
    assert codes(err.value.findings) == {"node-name-duplicate", "nodeid-duplicate",
                                         "votes-invalid", "node-link-set-mismatch",
                                         "address-duplicate", "address-not-ip"}
    dup = by_code(err.value.findings, "address-duplicate")[0]
    assert dup.payload == {"address": "10.40.0.12", "link": 0}
    with pytest.raises(ValidationFailed) as err:
        conf.add_node("bad_name", {0: "10.40.0.20", 1: "10.41.0.20"}, nodeid=0)
    assert codes(err.value.findings) == {"node-name-invalid", "nodeid-invalid"}


@pytest.mark.parametrize("edit", [
    lambda c: c.add_node("x{", {0: "10.40.0.20", 1: "10.41.0.20"}),
    lambda c: c.add_node("x", {0: "10.40.0.20\n}\nnode {", 1: "10.41.0.20"}),
    lambda c: c.add_link(2, {"alpha": "10.0.0.1\r", "bravo": "10.0.0.2",
                             "charlie": "10.0.0.3"}),
    lambda c: c.set_link_addresses(0, {"alpha": "}"}),
])
def test_forbidden_characters_are_refused(edit):
    with pytest.raises(UserError) as err:
        edit(three_nodes())
    assert err.value.code == "conf-forbidden-character"


def test_remove_node():
    conf = three_nodes().remove_node("alpha")
    assert [n.name for n in conf.nodes] == ["bravo", "charlie"]
    with pytest.raises(UserError) as err:
        conf.remove_node("alpha")
    assert err.value.code == "node-unknown"
    with pytest.raises(UserError) as err:
        conf.remove_node("bravo").remove_node("charlie")
    assert err.value.code == "node-last"


def test_add_link_adds_the_interface_and_every_nodes_address_in_pvecm_order():
    conf = three_nodes().add_link(
        2, {"alpha": "fd42:0:0:2::1", "bravo": "fd42:0:0:2::2", "charlie": "fd42:0:0:2::3"}, 7)
    assert conf.link_numbers == (0, 1, 2) and conf.priorities == {0: 20, 1: 10, 2: 7}
    assert conf.nodes[0].addresses[2] == "fd42:0:0:2::1"
    assert conf.text() == conf.canonical()  # inserted where pvecm would write them
    assert conf.to_plan().check() is not None


def test_add_link_refusals():
    conf = three_nodes()
    with pytest.raises(ValidationFailed) as err:
        conf.add_link(1, {"alpha": "10.50.0.1", "ghost": "10.50.0.9"}, priority=300)
    assert codes(err.value.findings) == {"link-exists", "link-priority-out-of-range",
                                         "link-address-missing", "node-unknown"}
    assert {f.subject for f in by_code(err.value.findings, "link-address-missing")} == {
        "bravo/link1", "charlie/link1"}
    with pytest.raises(ValidationFailed) as err:
        conf.add_link(8, {"alpha": "10.50.0.1", "bravo": "10.50.0.2", "charlie": "10.40.0.11"})
    assert codes(err.value.findings) == {"link-number-out-of-range", "address-duplicate"}


def test_set_link_addresses_and_priority():
    conf = three_nodes().set_link_addresses(0, {"alpha": "10.40.0.12", "bravo": "10.40.0.11"})
    assert conf.nodes[0].addresses[0] == "10.40.0.12"  # a swap is not a duplicate
    with pytest.raises(ValidationFailed) as err:
        conf.set_link_addresses(5, {"alpha": "10.40.0.13"})
    assert codes(err.value.findings) == {"link-unknown", "address-duplicate"}
    conf = conf.set_priority(1, 0).set_priority(0, 255)
    assert conf.priorities == {0: 255, 1: 0}
    assert conf.text() == conf.canonical()
    with pytest.raises(ValidationFailed):
        conf.set_priority(0, -1)


def test_bump_version():
    conf = three_nodes()
    assert conf.bump_version().bump_version().config_version == 3
    assert conf.config_version == 1  # immutable: edits return a new conf
    bare = CorosyncConf.parse("totem {\n  cluster_name: a\n}\nnodelist {\n}\n")
    with pytest.raises(UserError) as err:
        bare.bump_version()
    assert err.value.code == "conf-config-version-missing"


def test_edits_keep_the_users_comments_and_layout():
    text = (DATA / "pve-upgraded-commented.conf").read_text()
    conf = CorosyncConf.parse(text)
    edited = conf.add_node("comet", {0: "10.90.0.5", 1: "10.90.1.5"}).bump_version()
    diff = [line for line in difflib.unified_diff(text.splitlines(), edited.text().splitlines(),
                                                  lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert [line for line in diff if line.startswith("-")] == ["-  config_version: 23"]
    assert [line for line in diff if line.startswith("+")] == [
        "+  node {", "+    name: comet", "+    nodeid: 3", "+    quorum_votes: 1",
        "+    ring0_addr: 10.90.0.5", "+    ring1_addr: 10.90.1.5", "+  }", "+",
        "+  config_version: 24"]


def test_priority_on_a_file_without_interface_sections_adds_them_for_all_links():
    conf = CorosyncConf.parse("nodelist {\n  node {\n    name: a\n    nodeid: 1\n"
                              "    ring0_addr: 10.1.0.1\n    ring1_addr: 10.2.0.1\n  }\n}\n"
                              "totem {\n  cluster_name: c\n  config_version: 1\n}\n")
    conf = conf.set_priority(1, 9)
    assert [s.plain() for s in conf.tree.section("totem").sections("interface")] == [
        (("linknumber", "0"),), (("knet_link_priority", "9"), ("linknumber", "1"))]


# -- property: plan -> conf -> text -> parse -> plan is the identity ------------------------------

NAMES = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,13}[a-zA-Z0-9])?", fullmatch=True)


@st.composite
def valid_plans(draw) -> ClusterPlan:
    count = draw(st.integers(1, 16))
    names = draw(st.lists(NAMES, min_size=count, max_size=count, unique=True))
    nodeids = draw(st.lists(st.integers(1, 2**31), min_size=count, max_size=count, unique=True))
    numbers = sorted(draw(st.sets(st.integers(0, 7), min_size=1, max_size=8)))
    links, addresses = [], [dict() for _ in range(count)]
    for number in numbers:
        hosts = draw(st.lists(st.integers(1, 65534), min_size=count, max_size=count,
                              unique=True))
        if draw(st.booleans()):
            base = int(ipaddress.IPv4Address(f"10.{number}.0.0"))
            made = [str(ipaddress.IPv4Address(base + h)) for h in hosts]
        else:
            base = int(ipaddress.IPv6Address(f"fd42:0:0:{number}::"))
            made = [str(ipaddress.IPv6Address(base + h)) for h in hosts]
        for i, address in enumerate(made):
            addresses[i][number] = address
        links.append(Link(number, None, draw(st.integers(0, 255))))
    nodes = tuple(Node(names[i], nodeids[i], addresses[i], draw(st.integers(0, 3)))
                  for i in range(count))
    plan = ClusterPlan(draw(NAMES), nodes, tuple(draw(st.permutations(links))),
                       pve_version=draw(st.sampled_from([None, "9.2"])))
    return plan.check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans())
def test_plan_to_conf_to_plan_is_the_identity(plan):
    text = CorosyncConf.create(plan).text()
    back = CorosyncConf.parse(text).to_plan()
    # pvecm orders nodes by name and links by number; 0 votes are written as none (counted 1)
    assert back.nodes == tuple(sorted((replace(n, votes=n.counted_votes) for n in plan.nodes),
                                      key=lambda n: n.name))
    assert back.links == tuple(sorted(plan.links, key=lambda link: link.number))
    assert (back.cluster_name, back.token_coefficient) == (plan.cluster_name,
                                                           plan.token_coefficient)
    assert canonical(parse(text)) == text
    assert lint(text) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans(), st.data())
def test_edits_of_valid_confs_stay_valid(plan, data):
    assume(not plan.has_node("zz-new"))
    conf = CorosyncConf.create(plan)
    free = data.draw(st.sampled_from([n for n in range(8) if n not in conf.link_numbers] or [None]))
    if free is not None:
        addresses = {n.name: f"10.200.0.{i + 1}" for i, n in enumerate(conf.nodes)}
        conf = conf.add_link(free, addresses, data.draw(st.integers(0, 255)))
    new = {n: f"172.31.{n}.1" for n in conf.link_numbers}
    taken = {n.nodeid for n in conf.nodes}
    conf = conf.add_node("zz-new", new).bump_version()
    assert conf.nodes[-1].nodeid == min(set(range(1, len(taken) + 2)) - taken)
    assert conf.config_version == 2
    assert lint(conf.text()) == []
    assert conf.to_plan().check()


# -- lint ------------------------------------------------------------------------------------------

GOOD = (DATA / "pve-3node-2link.conf").read_text()


def test_a_pvecm_file_lints_clean():
    assert lint(GOOD) == []


def test_duplicate_nodeid():
    text = GOOD.replace("nodeid: 3", "nodeid: 1")
    dup = by_code(lint(text), "nodeid-duplicate")[0]
    assert dup.severity is Severity.FAIL
    assert dup.subject == "nodelist.node[2].nodeid"
    assert dup.payload["line"] == text.splitlines().index("    nodeid: 1", 20) + 1
    assert dup.payload["nodeid"] == 1 and dup.check == "corosync-conf"


def test_missing_name_and_nodeid():
    text = GOOD.replace("    name: bravo\n", "").replace("    nodeid: 3\n", "")
    found = lint(text)
    assert by_code(found, "conf-node-name-missing")[0].subject == "nodelist.node[1]"
    assert by_code(found, "conf-nodeid-missing")[0].subject == "nodelist.node[2]"
    assert not codes(found) & {"node-name-invalid", "nodeid-invalid"}


def test_inconsistent_link_sets():
    text = GOOD.replace("    ring1_addr: 10.41.0.12\n", "")
    bad = by_code(lint(text), "node-link-set-mismatch")
    assert [(f.subject, f.payload["node"], f.payload["cluster"]) for f in bad] == [
        ("nodelist.node[1]", [0], [0, 1])]


def test_hostnames_are_warnings():
    found = lint(GOOD.replace("ring1_addr: 10.41.0.13", "ring1_addr: charlie-ring1"))
    warn = by_code(found, "address-not-ip")[0]
    assert (warn.severity, warn.subject) == (Severity.WARN, "nodelist.node[2].ring1_addr")
    assert not [f for f in found if f.severity is Severity.FAIL]


@pytest.mark.parametrize("old,new,subject", [
    ("ring1_addr: 10.41.0.11", "ring8_addr: 10.41.0.11", "nodelist.node[0].ring8_addr"),
    ("linknumber: 1", "linknumber: 9", "totem.interface[1].linknumber"),
])
def test_link_numbers_over_7(old, new, subject):
    found = by_code(lint(GOOD.replace(old, new)), "link-number-out-of-range")
    assert subject in {f.subject for f in found}


@pytest.mark.parametrize("totem_lines,off", [
    ("secauth: off", True),
    ("secauth: on\n  crypto_cipher: none", True),
    ("secauth: on\n  crypto_hash: none", True),
    ("version: 2", True),
    ("crypto_cipher: aes256\n  crypto_hash: sha256", False),
    ("secauth: on", False),
])
def test_crypto_off(totem_lines, off):
    text = GOOD.replace("secauth: on", totem_lines)
    assert ("conf-crypto-off" in codes(lint(text))) is off


def test_config_version_missing_or_invalid():
    missing = by_code(lint(GOOD.replace("  config_version: 7\n", "")),
                      "conf-config-version-missing")[0]
    assert missing.severity is Severity.WARN
    invalid = by_code(lint(GOOD.replace("config_version: 7", "config_version: seven")),
                      "conf-config-version-invalid")[0]
    assert invalid.severity is Severity.FAIL
    assert invalid.payload["line"] == GOOD.splitlines().index("  config_version: 7") + 1


def test_legacy_transport_and_quorum_options_are_noted():
    text = GOOD.replace("  version: 2\n", "  version: 2\n  transport: udpu\n").replace(
        "provider: corosync_votequorum", "provider: corosync_votequorum\n  two_node: 1\n"
        "  expected_votes: 2")
    found = lint(text)
    transport = by_code(found, "conf-transport-legacy")[0]
    assert transport.severity is Severity.INFO and transport.payload["ports"] == [5404, 5405]
    assert by_code(found, "conf-two-node")[0].payload["value"] == "1"
    assert by_code(found, "conf-expected-votes")[0].payload["value"] == "2"


def test_repeated_sections_and_keys():
    text = GOOD + "totem {\n  token: 3000\n}\n"
    text = text.replace("  secauth: on\n", "  secauth: on\n  secauth: on\n")
    found = lint(text)
    lines = text.splitlines()
    first, second = (i + 1 for i, line in enumerate(lines) if line == "totem {")
    assert by_code(found, "conf-section-repeated")[0].payload["lines"] == [first, second]
    assert by_code(found, "conf-key-duplicate")[0].subject == "totem.secauth"


def test_cluster_name_and_families():
    found = lint(GOOD.replace("  cluster_name: lab-one\n", "").replace(
        "ring0_addr: 10.40.0.13", "ring0_addr: fd42::13"))
    assert {"conf-cluster-name-missing", "link-mixed-family"} <= codes(found)
    assert by_code(lint(GOOD.replace("lab-one", "a-very-long-cluster-name")),
                   "cluster-name-invalid")


def test_parse_errors_are_one_finding():
    assert [(f.code, f.payload["line"]) for f in lint(GOOD + "}\n")] == [
        ("conf-parse-error", len(GOOD.splitlines()) + 1)]


EXPECTED = {
    "pcs-knet.conf": {"conf-config-version-missing"},
    "pve-3node-2link.conf": set(),
    "pve-qdevice.conf": set(),
    "pve-upgraded-commented.conf": {"address-not-ip", "conf-legacy-key"},
    "udpu-corosync2.conf": {"conf-crypto-off", "conf-transport-legacy", "conf-legacy-key",
                            "conf-node-name-missing", "address-not-ip", "conf-two-node",
                            "conf-expected-votes"},
}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_real_world_samples_lint_as_expected(path):
    assert codes(lint(path.read_text(), path.name)) == EXPECTED[path.name]


def test_values_corosync_cannot_read():
    text = GOOD.replace("ring1_addr: 10.41.0.12", "ring1_addr: 10.41.0.12::x").replace(
        "linknumber: 1", "linknumber: one")
    found = lint(text)
    assert by_code(found, "address-invalid")[0].subject == "nodelist.node[1].ring1_addr"
    bad = by_code(found, "conf-linknumber-invalid")[0]
    assert (bad.subject, bad.payload["value"]) == ("totem.interface[1].linknumber", "one")


SYSTEM_CONF = pathlib.Path("/etc/corosync/corosync.conf")


@pytest.mark.skipif(not SYSTEM_CONF.exists(), reason="no /etc/corosync/corosync.conf here")
def test_this_machines_corosync_conf():
    """Whatever the installed package shipped (Debian's is mostly comments): parse, keep every
    comment through both writers, and lint without a parse error."""
    text = SYSTEM_CONF.read_text()
    tree = parse(text, str(SYSTEM_CONF))
    assert content(parse(canonical(tree))) == content(tree)
    comments = sorted(line.strip() for line in text.splitlines() if line.strip().startswith("#"))
    for written in (format_tree(tree), canonical(tree)):
        assert sorted(line.strip() for line in written.splitlines()
                      if line.strip().startswith("#")) == comments
    assert "conf-parse-error" not in codes(lint(text))


def test_nodeid_bounds_on_add():
    conf = three_nodes().add_node("big", {0: "10.40.0.30", 1: "10.41.0.30"}, nodeid=2**32 - 1)
    assert conf.nodes[-1].nodeid == 2**32 - 1 and lint(conf.text()) == []
    with pytest.raises(ValidationFailed) as err:
        three_nodes().add_node("huge", {0: "10.40.0.31", 1: "10.41.0.31"}, nodeid=2**32)
    assert codes(err.value.findings) == {"nodeid-invalid"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_plans(), st.integers(1, 2**32 - 1))
def test_the_one_writer_changes_only_config_version_for_another_version(plan, version):
    """CorosyncConf.create is the only writer of a new file (render.py returns its text)."""
    first, later = CorosyncConf.create(plan).text(), CorosyncConf.create(plan, version).text()
    assert CorosyncConf.parse(later).config_version == version
    assert later == first.replace("  config_version: 1\n", f"  config_version: {version}\n", 1)


def test_link_add_and_move_refuse_a_hostile_or_non_unicast_address():
    """The facade behind `link add` / `link move` applies the same link-address rule."""
    conf = three_nodes()
    hostile = {"alpha": "fe80::1%x;touch PWNED;true", "bravo": "fe80::2", "charlie": "127.0.0.1"}
    with pytest.raises(ValidationFailed) as err:
        conf.add_link(2, hostile)
    assert {f.code: f.subject for f in err.value.findings
            if f.code.startswith("address-")} == {"address-scope-invalid": "alpha/link2",
                                                  "address-not-unicast": "charlie/link2"}
