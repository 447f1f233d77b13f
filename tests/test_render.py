"""Rendering: corosync.conf as pvecm writes it, datacenter.cfg as PVE writes it, node changes."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvestrap.cli import main
from pvestrap.corosync.tree import canonical, parse
from pvestrap.errors import UserError, ValidationFailed
from pvestrap.paths import COROSYNC_CONF, DATACENTER_CFG, INTERFACES
from pvestrap.plan import ClusterPlan, Datacenter, InterfaceStanza, Link, Node
from pvestrap.render import (Change, node_changes, render_corosync_conf, render_datacenter_cfg,
                             render_node, unified_diff, write_changes)

GOLDEN = pathlib.Path(__file__).parent / "golden"


def prod_plan(**overrides) -> ClusterPlan:
    """The example: cluster "prod", pve1..pve3, link0 10.10.10.N and link1 10.10.20.N.

    link0 is the dedicated corosync network and gets priority 20; link1 is the fallback and
    keeps the default 0. In knet's passive mode the HIGHER priority carries the traffic
    (corosync.conf(5)), so link0 is used while it is up and link1 only when it fails; and the
    pair shows both writer rules: a non-zero priority is written, a zero one is not.
    """
    nodes = tuple(Node(f"pve{i}", i, {0: f"10.10.10.{i}", 1: f"10.10.20.{i}"}) for i in (1, 2, 3))
    links = (Link(0, "10.10.10.0/24", 20), Link(1, "10.10.20.0/24", 0))
    return ClusterPlan("prod", nodes, links, **overrides)


# Built by hand from pve-facts.md and pve-cluster's PVE::Corosync (create_conf + write_conf).
# write_conf sorts the keys of every hash and prints nested hashes as `key {` ... `}` with two
# more spaces of indent; after a top-level section (and only there) it adds one blank line.
EXPECTED_PROD = (
    "logging {\n"                    # top-level sections sorted: logging, nodelist, quorum, totem
    "  debug: off\n"                 # create_conf: logging.debug = off ...
    "  to_syslog: yes\n"             # ... and to_syslog = yes; keys sorted (d < t)
    "}\n"
    "\n"                             # blank line after every top-level section
    "nodelist {\n"
    "  node {\n"                     # node entries are keyed by name, dumped in sorted-name order
    "    name: pve1\n"               # node keys sorted: name < nodeid < quorum_votes < ringN_addr
    "    nodeid: 1\n"                # the creator gets nodeid 1 (create_conf's default)
    "    quorum_votes: 1\n"          # votes default 1
    "    ring0_addr: 10.10.10.1\n"   # the link0 address, verbatim (an IP, not a hostname)
    "    ring1_addr: 10.10.20.1\n"   # link1; pvecm still names the keys ringN_addr
    "  }\n"                          # no blank line between repeated sections below top level
    "  node {\n"
    "    name: pve2\n"
    "    nodeid: 2\n"                # joiners take the lowest free nodeid: 2, then 3
    "    quorum_votes: 1\n"
    "    ring0_addr: 10.10.10.2\n"
    "    ring1_addr: 10.10.20.2\n"
    "  }\n"
    "  node {\n"
    "    name: pve3\n"
    "    nodeid: 3\n"
    "    quorum_votes: 1\n"
    "    ring0_addr: 10.10.10.3\n"
    "    ring1_addr: 10.10.20.3\n"
    "  }\n"
    "}\n"
    "\n"
    "quorum {\n"
    "  provider: corosync_votequorum\n"  # no two_node, no expected_votes
    "}\n"
    "\n"
    "totem {\n"
    "  cluster_name: prod\n"         # totem keys sorted: cluster_name < config_version < interface
    "  config_version: 3\n"          # pvecm starts at 0, +1 per write: create 1, 2 joins 3
    "  interface {\n"                # one interface section per link, sorted by link number
    "    knet_link_priority: 20\n"   # only because link0's priority is non-zero; k < l
    "    linknumber: 0\n"
    "  }\n"
    "  interface {\n"
    "    linknumber: 1\n"            # priority 0 is not written at all
    "  }\n"
    "  ip_version: ipv4-6\n"         # ... < ip_version < link_mode < secauth < version
    "  link_mode: passive\n"
    "  secauth: on\n"
    "  version: 2\n"                 # no token_coefficient: the plan does not target PVE >= 9.2
    "}\n"
    "\n"                             # the blank line after the last section ends the file too
)


def test_golden_corosync_conf_is_byte_identical():
    assert (GOLDEN / "corosync-prod-3node-2link.conf").read_text() == EXPECTED_PROD
    assert render_corosync_conf(prod_plan()) == EXPECTED_PROD


def test_pve_9_2_adds_token_coefficient_between_secauth_and_version():
    expected = EXPECTED_PROD.replace("  secauth: on\n", "  secauth: on\n  token_coefficient: 125\n")
    assert (GOLDEN / "corosync-prod-pve92.conf").read_text() == expected
    assert render_corosync_conf(prod_plan(pve_version="9.2")) == expected
    assert "token_coefficient" not in render_corosync_conf(prod_plan(pve_version="9.1"))


def test_nodes_are_ordered_by_name_as_strings_and_links_by_number():
    """pvecm keys the nodelist by name and dumps it sorted: pve10 before pve2, whatever the ids."""
    nodes = (Node("pve2", 1, {1: "10.0.1.2", 0: "10.0.0.2"}),
             Node("pve10", 2, {1: "10.0.1.10", 0: "10.0.0.10"}))
    plan = ClusterPlan("lab", nodes, (Link(1, priority=5), Link(0)))
    text = render_corosync_conf(plan)
    assert text.index("name: pve10") < text.index("name: pve2")
    assert text.index("ring0_addr: 10.0.0.10") < text.index("ring1_addr: 10.0.1.10")
    assert ("  interface {\n    linknumber: 0\n  }\n"
            "  interface {\n    knet_link_priority: 5\n    linknumber: 1\n  }\n") in text


def test_ipv6_addresses_and_votes_are_written_verbatim():
    nodes = (Node("a", 1, {0: "fd42:1::1"}, votes=2), Node("b", 2, {0: "fd42:1::2"}))
    text = render_corosync_conf(ClusterPlan("v6", nodes, (Link(0),)))
    assert "    quorum_votes: 2\n    ring0_addr: fd42:1::1\n" in text


@pytest.mark.parametrize("mutate, code", [
    (lambda p: ClusterPlan(p.cluster_name, p.nodes, p.links + (Link(8),)),
     "link-number-out-of-range"),
    (lambda p: ClusterPlan(p.cluster_name, (p.nodes[0], Node("pve9", 1, p.nodes[1].addresses)),
                           p.links), "nodeid-duplicate"),
    (lambda p: ClusterPlan("prod}\nx {", p.nodes, p.links), "value-forbidden-character"),
])
def test_invalid_plans_never_render(tmp_path, mutate, code):
    plan = mutate(prod_plan())
    with pytest.raises(ValidationFailed) as err:
        render_corosync_conf(plan)
    assert code in {f.code for f in err.value.findings}
    with pytest.raises(ValidationFailed):
        render_node(plan, "pve1", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- round trip: random valid plans ----------------------------------------------------------------

def _parse_conf(text: str) -> dict:
    """A deliberately small reader: sections become dicts, node/interface lists of dicts."""
    root: dict = {}
    stack = [root]
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.endswith("{"):
            child: dict = {}
            name = line[:-1].strip()
            if name in ("node", "interface"):
                stack[-1].setdefault(name, []).append(child)
            else:
                stack[-1][name] = child
            stack.append(child)
        elif line == "}":
            stack.pop()
        else:
            key, value = line.split(":", 1)
            stack[-1][key] = value.strip()
    assert stack == [root]
    return root


def _plan_from_conf(conf: dict, plan: ClusterPlan) -> ClusterPlan:
    nodes = tuple(
        Node(n["name"], int(n["nodeid"]),
             {int(k[4:-5]): v for k, v in n.items() if k.startswith("ring")},
             votes=int(n.get("quorum_votes", 0)))
        for n in conf["nodelist"]["node"])
    links = tuple(Link(int(i["linknumber"]), priority=int(i.get("knet_link_priority", 0)))
                  for i in conf["totem"]["interface"])
    return ClusterPlan(conf["totem"]["cluster_name"], nodes, links)


def _comparable(plan: ClusterPlan) -> tuple:
    nodes = sorted((n.name, n.nodeid, n.votes, tuple(sorted(n.addresses.items())))
                   for n in plan.nodes)
    links = sorted((link.number, link.priority) for link in plan.links)
    return plan.cluster_name, nodes, links


NAME = st.from_regex(r"\A[a-z][a-z0-9-]{0,13}[a-z0-9]\Z")


@st.composite
def plans(draw) -> ClusterPlan:
    link_numbers = draw(st.sets(st.integers(0, 7), min_size=1, max_size=8))
    v6 = {n: draw(st.booleans()) for n in link_numbers}
    names = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    ids = draw(st.lists(st.integers(1, 64), min_size=len(names), max_size=len(names), unique=True))
    nodes = []
    for i, (name, nodeid) in enumerate(zip(names, ids), start=1):
        addresses = {n: (f"fd42:{n}::{i:x}" if v6[n] else f"10.254.{n}.{i}") for n in link_numbers}
        nodes.append(Node(name, nodeid, addresses, votes=draw(st.integers(0, 3))))
    links = tuple(Link(n, priority=draw(st.integers(0, 255))) for n in sorted(link_numbers))
    links = tuple(draw(st.permutations(links)))
    plan = ClusterPlan(draw(NAME), tuple(nodes), links,
                       pve_version=draw(st.sampled_from([None, "8.4", "9.2", "9.3"])))
    return plan.check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_random_plans_render_and_parse_back(plan):
    text = render_corosync_conf(plan)
    conf = _parse_conf(text)
    assert _comparable(_plan_from_conf(conf, plan)) == _comparable(plan)
    assert conf["totem"].get("token_coefficient") == (
        "125" if plan.token_coefficient else None)
    assert text.endswith("}\n\n") and "\n\n\n" not in text and "\t" not in text


@settings(max_examples=60, deadline=None)
@given(plans())
def test_render_is_a_fixed_point_of_parse_and_canonical_layout(plan):
    """The rendered file parses back into a tree whose canonical (pvecm) layout is the same
    bytes."""
    text = render_corosync_conf(plan)
    assert canonical(parse(text)) == text


# -- datacenter.cfg --------------------------------------------------------------------------------

def _prod_datacenter() -> Datacenter:
    return Datacenter(keyboard="de", console="xtermjs", migration_network="10.10.10.0/24",
                      ha_shutdown_policy="failover",
                      bwlimit={"migration": 100000, "default": 50000},
                      next_id_lower=1000, next_id_upper=2000, mac_prefix="02:AB:CD",
                      email_from="pve@example.com", description="Production cluster\nRack 4: row B")


def test_golden_datacenter_cfg():
    """Expected file built by hand from PVE::DataCenterConfig::write_datacenter_config:
    description lines as '#' + encode_text (':' becomes %3A), one blank line, then keys sorted;
    migration's default key `type` printed bare and filled in (secure) because network needs it;
    crs and fencing come from the existing file (the plan does not set them) and are kept."""
    existing = (GOLDEN / "datacenter-installer.cfg").read_text()
    out = render_datacenter_cfg(prod_plan(datacenter=_prod_datacenter()), existing)
    assert out == (GOLDEN / "datacenter-prod.cfg").read_text()
    assert render_datacenter_cfg(prod_plan(datacenter=_prod_datacenter()), out) == out


def test_same_meaning_keeps_the_existing_text():
    """The installer writes a bare `keyboard: en-us`: asking for en-us changes nothing."""
    plan = prod_plan(datacenter=Datacenter(keyboard="en-us"))
    assert render_datacenter_cfg(plan, "keyboard: en-us\n") == "keyboard: en-us\n"
    old_style = "migration: type=secure,network=10.10.10.0/24\nmac_prefix: BC:24:11\n"
    plan = prod_plan(datacenter=Datacenter(migration_type="secure",
                                           migration_network="10.10.10.0/24"))
    assert render_datacenter_cfg(plan, old_style) == old_style


def test_changed_value_is_rewritten_in_pve_layout():
    plan = prod_plan(datacenter=Datacenter(keyboard="fr"))
    assert render_datacenter_cfg(plan, "keyboard: en-us\n") == "\nkeyboard: fr\n"


@pytest.mark.parametrize("dc, line", [
    (Datacenter(mac_prefix="bc:24:11", keyboard="de"), "keyboard: de"),
    (Datacenter(console="applet"), "console: html5"),
    (Datacenter(migration_type="insecure"), "migration: insecure"),
    (Datacenter(replication_network="10.1.0.0/16"), "replication: secure,network=10.1.0.0/16"),
    (Datacenter(next_id_upper=5000), "next-id: upper=5000"),
    (Datacenter(max_workers=4), "max_workers: 4"),
    (Datacenter(http_proxy="http://proxy:3128"), "http_proxy: http://proxy:3128"),
    (Datacenter(ha_shutdown_policy="migrate"), "ha: shutdown_policy=migrate"),
])
def test_datacenter_values(dc, line):
    out = render_datacenter_cfg(prod_plan(datacenter=dc), None)
    assert out.splitlines()[1:] == [line]
    assert out.startswith("\n")


@pytest.mark.parametrize("existing, dc, line", [
    ("migration: insecure", Datacenter(migration_network="10.9.0.0/16"),
     "migration: insecure,network=10.9.0.0/16"),
    ("next-id: lower=200", Datacenter(next_id_upper=5000), "next-id: lower=200,upper=5000"),
    ("bwlimit: restore=10", Datacenter(bwlimit={"migration": 5}),
     "bwlimit: migration=5,restore=10"),
])
def test_plan_changes_only_its_own_sub_keys(existing, dc, line):
    assert render_datacenter_cfg(prod_plan(datacenter=dc), existing + "\n") == f"\n{line}\n"


def test_default_mac_prefix_from_an_existing_file_is_dropped():
    out = render_datacenter_cfg(prod_plan(datacenter=Datacenter(keyboard="de")),
                                "mac_prefix: BC:24:11\nkeyboard: en-us\n")
    assert out == "\nkeyboard: de\n"


def test_description_encoding_and_existing_description_kept():
    dc = Datacenter(description="50% off: ß\n\nend\n\n")
    out = render_datacenter_cfg(prod_plan(datacenter=dc), None)
    assert out == "#50%25 off%3A %C3%9F\n#\n#end\n\n"
    kept = render_datacenter_cfg(prod_plan(datacenter=Datacenter(keyboard="de")),
                                 "#Our notes%3A rack 4\nkeyboard: en-us\n")
    assert kept == "#Our notes%3A rack 4\n\nkeyboard: de\n"


def test_broken_existing_line_is_refused_with_its_line_number():
    with pytest.raises(UserError) as err:
        render_datacenter_cfg(prod_plan(datacenter=Datacenter(keyboard="de")),
                              "keyboard: en-us\nthis is not a key value line\n")
    assert err.value.code == "datacenter-cfg-invalid"
    assert "line 2" in err.value.message


# -- a node's changes ------------------------------------------------------------------------------

PVE1_STANZAS = (InterfaceStanza("eno2", "10.10.10.1/24", 9000),
                InterfaceStanza("eno3", "10.10.20.1/24"),
                InterfaceStanza("vmbr1", "10.10.30.1/24", kind="bridge", bridge_ports="eno4"))

_NODE = ("  node {{\n    name: pve{0}\n    nodeid: {0}\n    quorum_votes: 1\n"
         "    ring0_addr: 10.10.10.{0}\n    ring1_addr: 10.10.20.{0}\n  }}\n")
# The cluster as each node's apply leaves it: pvecm create starts it with the creator alone
# (config_version 1), each join adds its node and one version.
EXPECTED_CREATED = EXPECTED_PROD.replace(_NODE.format(2) + _NODE.format(3), "") \
    .replace("config_version: 3", "config_version: 1")
EXPECTED_TWO = EXPECTED_PROD.replace(_NODE.format(3), "") \
    .replace("config_version: 3", "config_version: 2")


def _full_plan() -> ClusterPlan:
    plan = prod_plan(datacenter=_prod_datacenter())
    nodes = (Node("pve1", 1, plan.nodes[0].addresses, interfaces=PVE1_STANZAS),) + plan.nodes[1:]
    return ClusterPlan(plan.cluster_name, nodes, plan.links, datacenter=plan.datacenter)


def _node_root(tmp_path: pathlib.Path) -> pathlib.Path:
    """A node fresh from the installer: its interfaces file and datacenter.cfg."""
    for path, golden, mode in ((INTERFACES, "interfaces-installer", 0o644),
                               (DATACENTER_CFG, "datacenter-installer.cfg", 0o640)):
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text((GOLDEN / golden).read_text())
        os.chmod(target, mode)
    return tmp_path


def test_creator_gets_three_files_then_nothing(tmp_path):
    root = _node_root(tmp_path)
    changes = render_node(_full_plan(), "pve1", root=root)
    by_path = {c.path: c for c in changes}
    assert list(by_path) == [COROSYNC_CONF, DATACENTER_CFG, INTERFACES]
    assert by_path[COROSYNC_CONF] == Change(COROSYNC_CONF, None, EXPECTED_CREATED, 0o644)
    assert by_path[DATACENTER_CFG].after == (GOLDEN / "datacenter-prod.cfg").read_text()
    assert by_path[DATACENTER_CFG].mode == 0o640
    assert by_path[INTERFACES].before == (GOLDEN / "interfaces-installer").read_text()
    assert by_path[INTERFACES].after == (GOLDEN / "interfaces-pve1").read_text()
    assert list(tmp_path.joinpath("etc").rglob("*.bak")) == []  # rendering wrote nothing

    written = write_changes(changes, root)
    assert sorted(written) == sorted(str(root / c.path.lstrip("/")) for c in changes)
    assert (root / "etc/corosync/corosync.conf").read_text() == EXPECTED_CREATED
    assert (root / "etc/network/interfaces.bak").read_text() == by_path[INTERFACES].before
    assert render_node(_full_plan(), "pve1", root=root) == []
    assert write_changes([], root) == []


def test_joiner_gets_no_datacenter_cfg(tmp_path):
    root = _node_root(tmp_path)
    assert [c.path for c in render_node(_full_plan(), "pve2", root=root)] == [COROSYNC_CONF]


def test_each_node_gets_the_cluster_as_its_own_apply_leaves_it(tmp_path):
    """Offline, a joiner's corosync.conf is predicted from the plan's order (the creator, then
    the joiners before it, each join one config_version); the last joiner's is the whole
    cluster. Given the cluster's real file (what apply reads from its join target), that wins."""
    plan = prod_plan()
    assert render_node(plan, "pve2", root=tmp_path)[0].after == EXPECTED_TWO
    assert render_node(plan, "pve3", root=tmp_path)[0].after == EXPECTED_PROD
    read = lambda path: (None, None)  # noqa: E731
    (alone,) = node_changes(plan, "pve3", read, "corosync", cluster=EXPECTED_CREATED)
    assert alone.after == EXPECTED_PROD.replace(_NODE.format(2), "").replace(
        "config_version: 3", "config_version: 2")
    (resumed,) = node_changes(plan, "pve2", read, "corosync", cluster=EXPECTED_TWO)
    assert resumed.after == EXPECTED_TWO  # the cluster lists pve2 already: taken as it is


@pytest.mark.parametrize("node,stage", [("pve1", EXPECTED_CREATED), ("pve1", EXPECTED_TWO),
                                        ("pve1", EXPECTED_PROD), ("pve2", EXPECTED_TWO),
                                        ("pve2", EXPECTED_PROD), ("pve3", EXPECTED_PROD)])
def test_a_member_at_any_stage_of_the_cluster_needs_no_corosync_conf(tmp_path, node, stage):
    target = tmp_path / COROSYNC_CONF.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_text(stage)
    assert render_node(prod_plan(), node, root=tmp_path) == []


def test_a_file_of_another_cluster_or_other_addresses_is_replaced(tmp_path):
    target = tmp_path / COROSYNC_CONF.lstrip("/")
    target.parent.mkdir(parents=True)
    for other in (EXPECTED_PROD.replace("cluster_name: prod", "cluster_name: test"),
                  EXPECTED_PROD.replace("10.10.10.2", "10.10.10.9")):
        target.write_text(other)
        (change,) = render_node(prod_plan(), "pve2", root=tmp_path)
        assert change.before == other and change.after == EXPECTED_TWO


def test_datacenter_cfg_only_where_the_node_writes_it(tmp_path):
    """On Proxmox VE the creator sets the cluster-wide options; plain corosync has none."""
    root = _node_root(tmp_path)
    paths = [c.path for c in render_node(_full_plan(), "pve1", root=root, backend="corosync")]
    assert paths == [COROSYNC_CONF, INTERFACES]
    paths = [c.path for c in render_node(_full_plan(), "pve1", root=root, backend="pve")]
    assert paths == [COROSYNC_CONF, DATACENTER_CFG, INTERFACES]


def test_unknown_node_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as err:
        render_node(_full_plan(), "pve7", root=tmp_path)
    assert err.value.code == "node-unknown"


def test_existing_mode_is_carried_into_the_change(tmp_path):
    target = tmp_path / "etc/corosync/corosync.conf"
    target.parent.mkdir(parents=True)
    target.write_text("totem {\n}\n")
    os.chmod(target, 0o600)
    (change,) = render_node(prod_plan(), "pve2", root=tmp_path)
    assert change.mode == 0o600


def test_non_utf8_file_is_refused(tmp_path):
    target = tmp_path / "etc/corosync/corosync.conf"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"totem {\xff\n")
    with pytest.raises(UserError) as err:
        render_node(prod_plan(), "pve1", root=tmp_path)
    assert err.value.code == "file-not-text"


def test_unified_diff_of_new_and_changed_files():
    new = unified_diff(Change("/etc/x", None, "a\nb\n", 0o644))
    assert new.splitlines()[:3] == ["--- /dev/null", "+++ b/etc/x", "@@ -0,0 +1,2 @@"]
    changed = unified_diff(Change("/etc/x", "a\nb", "a\nc\n", 0o644))
    assert changed.splitlines() == ["--- a/etc/x", "+++ b/etc/x", "@@ -1,2 +1,2 @@", " a",
                                    "-b", "\\ No newline at end of file", "+c"]


# -- the command line ------------------------------------------------------------------------------

ANSWERS = (GOLDEN / "prod.toml").read_text()  # the prod example as an answer file


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_under_root_then_nothing(tmp_path, capsys):
    answers = tmp_path / "prod.toml"
    answers.write_text(ANSWERS)
    root = _node_root(tmp_path / "node")
    code, out, _ = _cli(["render", "--answers", str(answers), "--node", "pve1", "--root",
                         str(root)], capsys)
    assert code == 0 and out == ""
    assert (root / "etc/corosync/corosync.conf").read_text() == EXPECTED_CREATED
    assert (root / "etc/network/interfaces").read_text() == (GOLDEN / "interfaces-pve1").read_text()
    # the answer file sets no datacenter options: datacenter.cfg is left alone
    assert (root / "etc/pve/datacenter.cfg").read_text() == (
        GOLDEN / "datacenter-installer.cfg").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    code, out, _ = _cli(["render", "--answers", str(answers), "--node", "pve1", "--root",
                         str(root), "--diff"], capsys)
    assert code == 0 and out == ""
    assert mtimes == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_cli_prints_files_and_diffs_without_writing(tmp_path, capsys):
    answers = tmp_path / "prod.toml"
    answers.write_text(ANSWERS)
    code, out, _ = _cli(["render", "--answers", str(answers), "--node", "pve3"], capsys)
    assert code == 0 and f"==> {COROSYNC_CONF} (mode " in out and EXPECTED_PROD in out
    root = _node_root(tmp_path / "node")
    code, out, _ = _cli(["render", "--answers", str(answers), "--node", "pve1", "--root",
                         str(root), "--diff"], capsys)
    assert code == 0 and "-iface eno2 inet manual\n+auto eno2\n" in out
    assert "--- /dev/null\n+++ b/etc/corosync/corosync.conf\n" in out


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    answers = tmp_path / "bad.toml"
    answers.write_text(ANSWERS.replace("number = 1", "number = 8").replace("link1", "link8"))
    root = tmp_path / "node"
    code, _, err = _cli(["render", "--answers", str(answers), "--node", "pve1", "--root",
                         str(root)], capsys)
    assert code == 2 and "Traceback" not in err
    assert not root.exists()
    answers.write_text(ANSWERS)
    code, _, err = _cli(["render", "--answers", str(answers), "--node", "nope"], capsys)
    assert code == 2 and "Traceback" not in err


# -- the real corosync as the oracle ---------------------------------------------------------------

def _corosync_accepts(text: str, hostname: str, local: list[str],
                      tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """`corosync -t` in private network, mount and UTS namespaces: LOCAL on the loopback,
    HOSTNAME as the host name (corosync finds its own node by ring0_addr, else by name).

    The namespaces die with the command: nothing remains, the root namespace gets no address.
    """
    conf = tmp_path / "corosync.conf"
    conf.write_text(text)
    keys = tmp_path / "etc-corosync"
    keys.mkdir(exist_ok=True)
    if not (keys / "authkey").exists():
        subprocess.run(["corosync-keygen", "-k", str(keys / "authkey")], check=True,
                       capture_output=True, timeout=60)
    script = ('keys=$1; conf=$2; name=$3; shift 3; mount --bind "$keys" /etc/corosync && '
              'hostname "$name" && ip link set lo up && '
              'for a in "$@"; do ip addr add "$a" dev lo || exit 9; done && '
              'exec corosync -t -c "$conf"')
    return subprocess.run(["unshare", "--net", "--mount", "--uts", "--propagation", "private",
                           "sh", "-c", script, "sh", str(keys), str(conf), hostname, *local],
                          capture_output=True, text=True, timeout=60)


def _lab_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network and mount namespaces)"
    for tool in ("corosync", "corosync-keygen", "unshare", "ip"):
        if not shutil.which(tool):
            return f"{tool} is not installed"
    return None


@pytest.mark.lab
@pytest.mark.skipif(_lab_ready() is not None, reason=str(_lab_ready()))
def test_corosync_accepts_the_golden_file_only_where_a_node_address_is_local(tmp_path):
    ok = _corosync_accepts(EXPECTED_PROD, "pve1", ["10.10.10.1/32"], tmp_path)
    assert ok.returncode == 0, ok.stderr
    elsewhere = _corosync_accepts(EXPECTED_PROD, "other", ["10.254.99.1/32"], tmp_path)
    assert elsewhere.returncode != 0  # the oracle can fail: no node address is local


@pytest.mark.lab
@pytest.mark.skipif(_lab_ready() is not None, reason=str(_lab_ready()))
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans())
def test_corosync_accepts_random_rendered_plans(tmp_path, plan):
    node = plan.nodes[0]
    local = [f"{a}/{128 if ipaddress.ip_address(a).version == 6 else 32}"
             for a in node.addresses.values()]
    result = _corosync_accepts(render_corosync_conf(plan), node.name, local, tmp_path)
    assert result.returncode == 0, result.stderr


# -- writing under --root: never the live /, all or nothing, never out through a symlink ---------

def test_a_root_that_resolves_to_slash_is_refused_before_anything(tmp_path):
    link = tmp_path / "looks-like-a-copy"
    link.symlink_to("/")
    changes = [Change(COROSYNC_CONF, None, "totem {\n}\n", 0o644)]
    for root in ("/", str(link), str(tmp_path / ".." / ".." / ".." / "..")):
        with pytest.raises(UserError) as err:
            write_changes(changes, root)
        assert err.value.code == "render-root-live" and err.value.exit_code == 2


def test_render_root_slash_through_the_cli_exits_2_and_writes_nothing(tmp_path):
    answers_file = tmp_path / "cluster.toml"
    from pvestrap import answers

    answers_file.write_text(answers.example())
    proc = subprocess.run([sys.executable, "-c", "import sys; from pvestrap.cli import main; "
                           "sys.exit(main())", "render", "--answers", str(answers_file),
                           "--node", "pve1", "--root", "/"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "render never writes the live system" in proc.stderr


def test_a_failing_write_leaves_no_file_changed(tmp_path):
    root = _node_root(tmp_path)
    changes = render_node(_full_plan(), "pve1", root=root)
    assert [c.path for c in changes] == [COROSYNC_CONF, DATACENTER_CFG, INTERFACES]
    interfaces = root / INTERFACES.lstrip("/")
    interfaces.rename(interfaces.with_name("interfaces.real"))
    interfaces.symlink_to("interfaces.real")  # the last of three writes refuses a symlink
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(UserError) as err:
        write_changes(changes, root)
    assert err.value.code == "write-target-not-regular"
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # corosync.conf and datacenter.cfg, written first, were taken back


def test_a_symlink_out_of_the_root_is_never_followed(tmp_path):
    root = _node_root(tmp_path / "node")
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "etc/corosync").symlink_to(outside)
    changes = [Change(COROSYNC_CONF, None, "totem {\n}\n", 0o644)]
    with pytest.raises(UserError) as err:
        write_changes(changes, root)
    assert err.value.code == "render-root-escape"
    assert list(outside.iterdir()) == []
    with pytest.raises(UserError):
        render_node(_full_plan(), "pve1", root=root)  # nor read through
