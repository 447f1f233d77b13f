"""Export and schema: dumps() round-trips, the JSON Schema agrees with the loader, and random
mutations of answer files raise nothing but pvestrap's own errors (hypothesis)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import tomllib

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from pvestrap import answers
from pvestrap.datacenter_schema import LANGUAGES
from pvestrap.errors import PvestrapError, ValidationFailed
from pvestrap.plan import (BACKENDS, BWLIMIT_KEYS, CONSOLES, FORBIDDEN_CHARS, HA_POLICIES,
                           INSTALLER_KEYBOARDS, KEYBOARDS, TRANSFER_TYPES, ClusterPlan, Datacenter,
                           InterfaceStanza, JoinTarget, Link, Node, Preflight, Thresholds)
from pvestrap.qdevice import QDevice

DATA = pathlib.Path(__file__).parent / "data" / "answers"
MUTATIONS = int(os.environ.get("PVESTRAP_MUTATIONS", "400"))  # more for a long local hunt

# -- a tiny JSON Schema validator for exactly the keywords the schema uses -------------------------

ANNOTATIONS = {"$schema", "title", "description", "default"}
ASSERTIONS = {"type", "properties", "patternProperties", "additionalProperties", "required",
              "items", "enum", "const", "not", "pattern", "minimum", "maximum",
              "exclusiveMinimum", "maxLength", "minItems", "maxItems"}
TYPES = {"object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
         "string": lambda v: isinstance(v, str),
         "boolean": lambda v: isinstance(v, bool),
         "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
         "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)}


def keywords(schema: dict) -> set[str]:
    found = set(schema)
    for sub in list(schema.get("properties", {}).values()) + list(
            schema.get("patternProperties", {}).values()):
        found |= keywords(sub)
    if isinstance(schema.get("additionalProperties"), dict):
        found |= keywords(schema["additionalProperties"])
    for key in ("items", "not"):
        if isinstance(schema.get(key), dict):
            found |= keywords(schema[key])
    return found


def errors(schema: dict, value, path: str = "$") -> list[str]:
    if "type" in schema and not TYPES[schema["type"]](value):
        return [f"{path}: not {schema['type']}"]
    out = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: not one of the enum")
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: not the const")
    if "not" in schema and not errors(schema["not"], value, path):
        out.append(f"{path}: matches 'not'")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)):
            out.append(f"{path}: too long")
    if TYPES["number"](value):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            out.append(f"{path}: out of range")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: not above the minimum")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            out.append(f"{path}: wrong number of items")
        for i, item in enumerate(value):
            out += errors(schema.get("items", {}), item, f"{path}[{i}]")
    if isinstance(value, dict):
        out += [f"{path}.{k}: required" for k in schema.get("required", ()) if k not in value]
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key) or next(
                (s for p, s in schema.get("patternProperties", {}).items() if re.search(p, key)),
                None)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is None and schema.get("additionalProperties") is False:
                out.append(f"{path}.{key}: not allowed")
            elif sub is not None:
                out += errors(sub, item, f"{path}.{key}")
    return out


def test_schema_is_draft_2020_12_using_only_keywords_checked_here():
    schema = answers.schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert keywords(schema) <= ANNOTATIONS | ASSERTIONS, keywords(schema) - ANNOTATIONS - ASSERTIONS
    assert json.loads(json.dumps(schema)) == schema
    for pattern in re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', json.dumps(schema)):
        re.compile(json.loads(f'"{pattern}"'))


def with_installer(text: str | None = None) -> str:
    """The example with its commented [installer] section switched on."""
    head, tail = (answers.example() if text is None else text).split("# [installer]\n")
    lines = [line[2:] if line.startswith("# ") else "" if line == "#" else line
             for line in tail.split("\n")]
    return head + "[installer]\n" + "\n".join(lines)


@pytest.mark.parametrize("text", [answers.example(), with_installer()])
def test_the_example_and_its_export_satisfy_the_schema(text):
    schema = answers.schema()
    assert errors(schema, tomllib.loads(text)) == []
    assert errors(schema, tomllib.loads(answers.dumps(answers.loads(text)))) == []


@pytest.mark.parametrize("old,new,expect", [
    ('name = "prod"', 'name = "prod"\ncolour = "red"', "$.cluster.colour: not allowed"),
    ("nodeid = 2", 'nodeid = "2"', "$.nodes[1].nodeid: not integer"),
    ('link1 = "10.10.20.3"', 'link1 = "10.10.20.3"\nlink8 = "10.10.80.3"',
     "$.nodes[2].link8: not allowed"),
    ("priority = 20", "priority = 256", "$.links[0].priority: out of range"),
    ('console = "html5"', 'console = "vnc"', "$.datacenter.console: not one of the enum"),
    ('language = "en"', 'language = "pt-br"', "$.datacenter.language: not one of the enum"),
    ('[datacenter]', '[datacenter]\nmac_prefix = "BC:24:11:A:"',
     "$.datacenter.mac_prefix: does not match"),
    ("lower = 1000, upper = 9999", "lower = 1000, upper = 1000000001",
     "$.datacenter.next_id.upper: out of range"),
    ("ignore_checks = []", 'ignore_checks = ["all"]',
     "$.preflight.ignore_checks[0]: matches 'not'"),
    ('country = "at"', 'country = "AT"', "$.installer.country: does not match ^[a-z]{2}$"),
    ('mailto = "ops@example.com"', 'mailto = "mail@example.invalid"',
     "$.installer.mailto: matches 'not'"),
    ('domain = "example.com"', 'domain = "exa_mple.com"', "$.installer.domain: does not match"),
    ('timezone = "Europe/Vienna"', 'timezone = "CET"', "$.installer.timezone: does not match"),
    ("reboot_on_error = false", 'reboot_on_error = "no"',
     "$.installer.reboot_on_error: not boolean"),
    ('network_source = "from-answer"', 'network_source = "static"',
     "$.installer.network_source: not one of the enum"),
    ('filesystem = "zfs"', 'filesystem = "ntfs"',
     "$.installer.disk.filesystem: not one of the enum"),
    ("ashift = 12", "ashift = -1", "$.installer.disk.zfs.ashift: out of range"),  # u32
    ("lvm = { hdsize = 100, swapsize = 8 }", 'lvm = { hdsize = "1" }',
     "$.installer.nodes.pve3.disk.lvm.hdsize: not number"),
    ('ID_NET_NAME = "eno1"', "ID_NET_NAME = 1", "$.installer.network_filter.ID_NET_NAME: not "
     "string"),
    ("[installer.nodes.pve3.disk]", "[installer.nodes.pve_3]\n[installer.nodes.pve3.disk]",
     "$.installer.nodes.pve_3: not allowed"),
    ("reboot_on_error = false", 'reboot_on_error = false\nroot_password = "x"',
     "$.installer.root_password: not allowed"),
])
def test_files_the_loader_refuses_for_these_reasons_also_fail_the_schema(old, new, expect):
    base = with_installer() if expect.startswith("$.installer") else answers.example()
    text = base.replace(old, new, 1)
    with pytest.raises(ValidationFailed):
        answers.loads(text)
    assert any(e.startswith(expect) for e in errors(answers.schema(), tomllib.loads(text)))


# -- dumps -----------------------------------------------------------------------------------------

def test_dumps_round_trips_the_example_and_writes_only_password_references():
    plan = answers.loads(answers.example())
    text = answers.dumps(plan)
    assert answers.loads(text) == plan
    raw = tomllib.loads(text)
    assert raw["join"] == {"address": "10.10.10.1", "password_env": "PVE_ROOT_PASSWORD"}
    assert "[[nodes.interfaces]]" in text and 'description = """' in text


def test_dumps_escapes_what_toml_needs_escaped():
    plan = answers.loads(answers.example())
    tricky = 'quote " back \\ tab\t bell \x07 del \x7f crlf \r\n {braces} ü 日本'
    odd = ClusterPlan(**{**plan.__dict__, "datacenter": Datacenter(description=tricky)})
    text = answers.dumps(odd)
    assert answers.loads(text).datacenter.description == tricky


# -- property tests --------------------------------------------------------------------------------

SAFE = st.characters(blacklist_characters=FORBIDDEN_CHARS, blacklist_categories=("Cs",))
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"
names = st.sampled_from(ALNUM) | st.tuples(
    st.sampled_from(ALNUM), st.text(ALNUM + "-", max_size=13), st.sampled_from(ALNUM)).map("".join)
words = st.text(SAFE, min_size=1, max_size=12)
# join.address: a host name or an IP address (any other text is refused, and the plan with it)
hosts = st.lists(names, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["10.10.10.1", "fd12:3456::1"])
maybe = lambda s: st.none() | s  # noqa: E731
ids = st.lists(st.text(LOWER, min_size=1, max_size=6), min_size=1, max_size=3).map(
    "-".join).filter(lambda s: s != "all")
fingerprints = st.lists(st.integers(0, 255), min_size=32, max_size=32).map(
    lambda octets: ":".join(f"{o:02X}" for o in octets))
env_names = st.tuples(st.sampled_from("ABCXYZ_"), st.text("ABCXYZ_0123", max_size=20)).map(
    "".join)
versions = st.lists(st.integers(0, 99), min_size=1, max_size=3).map(
    lambda parts: ".".join(map(str, parts)))
emails = st.tuples(st.text(LOWER + ".+", min_size=1, max_size=8),
                   st.text(LOWER + ".", min_size=1, max_size=8)).map("@".join)
proxies = st.text(LOWER + ".:/", min_size=1, max_size=20).map("http://".__add__)
ifnames = st.tuples(st.sampled_from(ALNUM), st.text(ALNUM + "_.:-", max_size=14)).map("".join)


def network(number: int, v6: bool) -> str:
    return f"fd{number:02x}::/64" if v6 else f"10.254.{number}.0/24"


def address(number: int, v6: bool, host: int) -> str:
    return f"fd{number:02x}::{host:x}" if v6 else f"10.254.{number}.{host}"


@st.composite
def stanzas(draw):
    return InterfaceStanza(
        name=draw(ifnames),
        address=draw(maybe(st.just("10.254.9.1/24"))), mtu=draw(maybe(st.integers(576, 65535))),
        kind=draw(st.sampled_from(["nic", "bridge"])), bridge_ports=draw(maybe(words)),
        gateway=draw(maybe(st.just("10.254.9.254"))))


@st.composite
def datacenters(draw):
    lower = draw(maybe(st.integers(100, 999_999_998)))
    return Datacenter(
        keyboard=draw(maybe(st.sampled_from(sorted(KEYBOARDS)))),
        language=draw(maybe(st.sampled_from(LANGUAGES))),
        console=draw(maybe(st.sampled_from(CONSOLES))),
        migration_type=draw(maybe(st.sampled_from(TRANSFER_TYPES))),
        migration_network=draw(maybe(st.just("10.254.1.0/24"))),
        replication_type=draw(maybe(st.sampled_from(TRANSFER_TYPES))),
        replication_network=draw(maybe(st.just("fd01::/64"))),
        ha_shutdown_policy=draw(maybe(st.sampled_from(HA_POLICIES))),
        bwlimit=draw(st.dictionaries(st.sampled_from(BWLIMIT_KEYS), st.integers(0, 2**40))),
        mac_prefix=draw(maybe(st.sampled_from(["BC:24:11", "02:00", "bc:24:11:a"]))),
        next_id_lower=lower,
        next_id_upper=None if lower is None else draw(st.integers(lower, 1_000_000_000)),
        email_from=draw(maybe(emails)), http_proxy=draw(maybe(proxies)),
        max_workers=draw(maybe(st.integers(1, 64))),
        description=draw(maybe(st.text(st.characters(blacklist_categories=("Cs",)))) ))


labels = st.tuples(st.sampled_from(ALNUM), st.text(ALNUM + "-", max_size=20),
                   st.sampled_from(ALNUM)).map("".join)
globs = st.text(st.sampled_from(ALNUM + "*?[]-_.:/") | st.characters(
    whitelist_categories=("L", "N")), min_size=1, max_size=16)
udev_keys = st.sampled_from(["ID_NET_NAME", "ID_PATH", "ID_SERIAL", "ID_MODEL", "odd key.é"])
disk_names = st.lists(st.sampled_from(["sda", "sdb", "sdc", "sdd", "nvme0n1", "nvme1n1"]),
                      min_size=1, max_size=6, unique=True).map(tuple)
ZFS_MIN = {"raid0": 1, "raid1": 2, "raid10": 4, "raidz-1": 3, "raidz-2": 4, "raidz-3": 5}


def some(draw, options: dict) -> dict:
    """A random subset of OPTIONS (key -> strategy), drawn."""
    return {k: draw(v) for k, v in options.items() if draw(st.booleans())}


@st.composite
def disks(draw):
    """A disk setup the installer accepts on its own: one disk for ext4/xfs, enough for the
    RAID level, free-form filters."""
    fs = draw(st.sampled_from(["ext4", "xfs", "zfs", "btrfs"]))
    chosen = draw(disk_names) if draw(st.booleans()) else None
    hdsize = draw(st.floats(2, 1e5))
    if fs in ("ext4", "xfs"):
        chosen = chosen[:1] if chosen else None
        options = ("lvm", some(draw, {
            "hdsize": st.just(hdsize), "swapsize": st.floats(0, hdsize / 2),
            "maxroot": st.floats(2, 1e4), "maxvz": st.floats(0, 1e4),
            "minfree": st.floats(0, 1e4)}))
    else:
        levels = ZFS_MIN if fs == "zfs" else {k: ZFS_MIN[k] for k in ("raid0", "raid1", "raid10")}
        fit = [k for k, need in levels.items() if chosen is None or need <= len(chosen)]
        extra = ({"ashift": st.integers(9, 16), "arc_max": st.integers(64, 2**40),
                  "checksum": st.sampled_from(["on", "fletcher4", "sha256"]),
                  "compress": st.sampled_from(["on", "off", "lz4", "zstd"]),
                  "copies": st.integers(1, 3)} if fs == "zfs" else
                 {"compress": st.sampled_from(["on", "off", "zlib", "lzo", "zstd"])})
        options = (fs, {"raid": draw(st.sampled_from(fit)),
                        **some(draw, {"hdsize": st.floats(2, 1e5), **extra})})
    out = {"filesystem": fs}
    if chosen:
        out["disk_list"] = chosen
    else:
        out["filter"] = draw(st.dictionaries(udev_keys, globs, min_size=1, max_size=2))
        out.update(some(draw, {"filter_match": st.sampled_from(["any", "all"])}))
    if draw(st.booleans()):
        out[options[0]] = options[1]
    return out


def installer_values(draw) -> dict:
    """The settings a shared [installer] or a node's override may hold, each maybe."""
    return some(draw, {
        "country": st.sampled_from(["at", "dk", "us", "jp"]),
        "timezone": st.sampled_from(["UTC", "Europe/Vienna", "America/Argentina/Salta"]),
        "keyboard": st.sampled_from(sorted(KEYBOARDS | set(INSTALLER_KEYBOARDS))),
        "mailto": st.tuples(st.text(LOWER + ".+_-", min_size=1, max_size=8),
                            st.lists(labels, min_size=1, max_size=2).map(".".join)).map(
                                "@".join),
        "domain": st.lists(labels, min_size=1, max_size=3).map(".".join),
        "network_source": st.sampled_from(["from-answer", "from-dhcp"]),
        "gateway": st.sampled_from(["192.168.77.254", "fd77::1"]),
        "dns": st.sampled_from(["192.168.77.53", "fd77::53"]),
        "network_filter": st.dictionaries(udev_keys, globs, min_size=1, max_size=2),
        "root_ssh_keys": st.lists(st.text(ALNUM + " +/=@.-", min_size=1, max_size=30),
                                  max_size=2).map(tuple),
        "reboot_on_error": st.booleans(),
        "first_boot_ordering": st.sampled_from(["before-network", "network-online", "fully-up"]),
        "disk": disks(),
    })


@st.composite
def installers(draw, node_names: list[str]):
    table = installer_values(draw)
    own = draw(st.lists(st.sampled_from(node_names), unique=True, max_size=len(node_names)))
    if own or draw(st.booleans()):
        table["nodes"] = {name: installer_values(draw) for name in own}
    return table


@st.composite
def plans(draw):
    numbers = sorted(draw(st.sets(st.integers(0, 7), min_size=1, max_size=3)))
    v6 = {n: draw(st.booleans()) for n in numbers}
    links = tuple(Link(n, draw(maybe(st.just(network(n, v6[n])))), draw(st.integers(0, 255)))
                  for n in numbers)
    node_names = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    installer = draw(maybe(installers(node_names)))
    nodeids = draw(st.lists(st.integers(1, 2**31), min_size=len(node_names),
                            max_size=len(node_names), unique=True))
    nodes = tuple(Node(name, nodeid, {n: address(n, v6[n], i + 1) for n in numbers},
                       votes=draw(st.integers(0, 3)),
                       interfaces=tuple(draw(st.lists(stanzas(), max_size=2))),
                       management=f"192.168.77.{i + 1}/24" if installer is not None
                       else draw(maybe(st.just(f"192.168.77.{i + 1}/24"))))
                  for i, (name, nodeid) in enumerate(zip(node_names, nodeids)))
    password = draw(st.sampled_from(["none", "file", "env"]))
    thresholds = Thresholds(**{name: draw(st.floats(1e-3, 1e4)) for name in draw(
        st.sets(st.sampled_from(list(Thresholds.__dataclass_fields__))))})
    plan = ClusterPlan(
        cluster_name=draw(names), nodes=nodes, links=links,
        create_node=draw(maybe(st.sampled_from(node_names))),
        join=JoinTarget(
            address=draw(maybe(hosts)),
            fingerprint=draw(maybe(fingerprints)),
            password_file=("/" + draw(words)) if password == "file" else None,
            password_env=draw(env_names) if password == "env" else None),
        datacenter=draw(datacenters()),
        preflight=Preflight(thresholds, tuple(draw(st.lists(ids, max_size=3))),
                            tuple(draw(st.lists(words, max_size=2)))),
        pve_version=draw(maybe(versions)),
        backend=draw(st.sampled_from(BACKENDS)),
        installer=installer,
        qdevice=draw(maybe(st.builds(
            QDevice, st.sampled_from(["172.31.255.1", "fd9e::53"]),
            maybe(st.sampled_from(["ffsplit", "lms"])), st.sampled_from(["lowest", "highest"]),
            maybe(st.sampled_from(["172.31.255.0/24", "fd9e::/64"]))))),
    )
    assume(not answers.problems_of(plan))
    return plan


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_random_valid_plans_round_trip_through_dumps(plan):
    event("with [installer]" if plan.installer is not None else "without [installer]")
    if plan.installer is not None:
        event(f"{len(plan.installer.get('nodes', {}))} node overrides")
    text = answers.dumps(plan)
    assert answers.loads(text) == plan
    assert errors(answers.schema(), tomllib.loads(text)) == []


VALUES = ["1", '"x"', "1.5", "true", "[]", "{}", "1979-05-27T07:32:00Z", "[[1]]", "{ a = 1 }",
          '"""\nmulti\n"""', "-0", "nan", "-inf", '"10.254.0.1"', "[\"a\", 2]", "1" + "0" * 400,
          "9223372036854775807", "0x7fffffffffffffff1", "1e400"]


@st.composite
def mutated(draw):
    base = draw(st.sampled_from([answers.example(), with_installer(),
                                 (DATA / "many-problems.toml").read_text()]))
    lines = base.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "retype", "garbage", "duplicate", "unicode"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "retype" and " = " in lines[i]:
            lines[i] = lines[i].split(" = ")[0] + " = " + draw(st.sampled_from(VALUES))
        elif kind == "garbage":
            lines.insert(i, draw(st.text(max_size=30) | st.binary(max_size=20).map(
                lambda b: b.decode("latin-1"))))
        elif kind == "duplicate":
            lines.insert(i, draw(st.sampled_from([ln for ln in lines if ln.strip()] or [""])))
        elif kind == "unicode" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            lines[i] = lines[i][:j] + draw(st.characters()) + lines[i][j + 1:]
        if not lines:
            lines = [""]
    return "\n".join(lines)


@settings(max_examples=MUTATIONS, deadline=None)
@given(mutated())
def test_mutated_answer_files_raise_only_pvestrap_errors(text):
    try:
        plan = answers.loads(text, "m.toml")
    except ValidationFailed as exc:
        event("invalid plan")
        n_lines = text.count("\n") + 1
        for f in exc.findings:
            line = f.payload["line"]
            assert line is None or 1 <= line <= n_lines
            assert f.message.startswith(f"m.toml:{line}: " if line else "m.toml: ")
        exc.render()
    except PvestrapError as exc:
        event(f"user error {exc.code}")
        assert exc.exit_code == 2
        exc.render()
    else:
        event("still valid")
        assert isinstance(plan, ClusterPlan) and not answers.problems_of(plan)
