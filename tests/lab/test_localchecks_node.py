"""Identity and NIC checks on a real node: a network namespace with veths, a bridge, routes and
its own /etc/hosts and host name, read live (ip -j, /sys/class/net, getaddrinfo).

The node namespace is wired to a switch namespace (so its veths have carrier):
  vmbr0 (bridge over eth0)  10.254.220.11/24, fd54:1::11/64, default route: management
  eth1                      10.254.221.11/24 (link0)      eth2  10.254.222.11/24 (link1)
  eth3                      10.254.223.11/24, peer down: no carrier
  eth9                      up, no address: the spare NIC that must be offered
  lo and vmbr0 both carry   10.254.225.11/32 (an ambiguous address)
The checks run in a process inside the namespace (`ip netns exec` binds /etc/netns/NS/hosts
over /etc/hosts), with its own UTS namespace so `hostname` is the node's. Everything is removed
again, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HOSTS = """\
127.0.0.1 localhost
10.254.220.11 pvelab1
127.0.1.1 pvelab4
10.254.229.99 pvelab5
10.254.223.11 pvelab6
10.254.225.11 pvelab7
fd54:1::11 pvelab8
10.254.220.11 pvelab8
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (iproute2, util-linux)"
    return None


pytestmark = [pytest.mark.lab, pytest.mark.skipif(_skip_reason() is not None,
                                                  reason=str(_skip_reason()))]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _wire(node: str, switch: str) -> None:
    for i, name in enumerate(("eth0", "eth1", "eth2", "eth3", "eth9")):
        sh("ip", "-n", node, "link", "add", name, "type", "veth", "peer", "name", f"p{i}",
           "netns", switch)
        if name != "eth3":
            sh("ip", "-n", switch, "link", "set", f"p{i}", "up")
        sh("ip", "-n", node, "link", "set", name, "up")
    sh("ip", "-n", node, "link", "set", "lo", "up")
    sh("ip", "-n", node, "link", "add", "vmbr0", "type", "bridge")
    sh("ip", "-n", node, "link", "set", "eth0", "master", "vmbr0")
    sh("ip", "-n", node, "link", "set", "vmbr0", "up")
    for dev, cidr in (("vmbr0", "10.254.220.11/24"), ("eth1", "10.254.221.11/24"),
                      ("eth2", "10.254.222.11/24"), ("eth3", "10.254.223.11/24"),
                      ("lo", "10.254.225.11/32"), ("vmbr0", "10.254.225.11/32")):
        sh("ip", "-n", node, "addr", "add", cidr, "dev", dev)
    sh("ip", "-n", node, "-6", "addr", "add", "fd54:1::11/64", "dev", "vmbr0", "nodad")
    sh("ip", "-n", node, "route", "add", "default", "via", "10.254.220.1", "dev", "vmbr0",
       "onlink")


@pytest.fixture(scope="module")
def node():
    tag = secrets.token_hex(3)
    name, switch = f"pvn{tag}", f"pvw{tag}"
    etc = Path("/etc/netns") / name
    made: list[str] = []
    try:
        for ns in (name, switch):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(HOSTS)
        _wire(name, switch)
        yield name
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)


# The checks the in-namespace process may run, by name: an explicit table, no imports by string.
RUNNER = """
import json, sys
from pvestrap.checks.base import Context
from pvestrap.checks.identity import HostnameCheck, NameConsistencyCheck, NamesCheck
from pvestrap.checks.nics import InventoryCheck, LinkAddressCheck, LinkLayoutCheck
from pvestrap.plan import ClusterPlan, Link, Node
CHECKS = {"hostname": HostnameCheck, "names": NamesCheck, "consistency": NameConsistencyCheck,
          "inventory": InventoryCheck, "link-address": LinkAddressCheck,
          "link-layout": LinkLayoutCheck}
spec = json.loads(sys.argv[1])
plan = None
if spec.get("nodes"):
    nodes = tuple(Node(n, i + 1, {int(k): v for k, v in a.items()})
                  for i, (n, a) in enumerate(spec["nodes"].items()))
    links = sorted({int(k) for a in spec["nodes"].values() for k in a})
    plan = ClusterPlan("lab", nodes, tuple(Link(n) for n in links))
ctx = Context(plan=plan, node=spec.get("node"))
out = [f.as_dict() for name in spec["checks"] for f in CHECKS[name]().run(ctx)]
print(json.dumps(out))
"""


def run_in(ns: str, checks: list[str], hostname: str = "pvelab1", node: str | None = None,
           nodes: dict | None = None) -> list[dict]:
    spec = json.dumps({"checks": checks, "node": node, "nodes": nodes})
    script = 'hostname "$1" && shift && exec "$@"'
    done = subprocess.run(["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", script,
                           "sh", hostname, sys.executable, "-c", RUNNER, spec],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def by_code(found: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in found:
        out.setdefault(f["code"], []).append(f)
    return out


# -- identity --------------------------------------------------------------------------------------

def test_host_name_resolves_to_the_management_bridge(node):
    [f] = run_in(node, ["hostname"])
    assert (f["code"], f["severity"]) == ("hostname-resolves", "pass")
    assert f["payload"]["address"] == "10.254.220.11" and f["payload"]["interface"] == "vmbr0"


@pytest.mark.parametrize("host,code,severity,extra", [
    ("pvelab4", "hostname-loopback", "fail", {"address": "127.0.1.1"}),
    ("pvelab5", "hostname-address-not-local", "fail", {"interfaces": []}),
    ("pvelab6", "hostname-interface-down", "fail", {"interface": "eth3"}),
    ("pvelab7", "hostname-address-ambiguous", "warn", {"interfaces": ["lo", "vmbr0"]}),
    ("pvelab0", "hostname-unresolved", "fail", {"name": "pvelab0"}),
])
def test_host_name_problems_from_the_real_resolver(node, host, code, severity, extra):
    [f] = run_in(node, ["hostname"], hostname=host)
    assert (f["code"], f["severity"]) == (code, severity)
    for key, value in extra.items():
        assert f["payload"][key] == value


def test_ipv6_first_answer_while_links_are_ipv4(node):
    found = run_in(node, ["hostname"], hostname="pvelab8", node="pvelab8",
                   nodes={"pvelab8": {"0": "10.254.221.11"}, "pvelab2": {"0": "10.254.221.12"}})
    codes = by_code(found)
    # glibc puts the ULA address first (this node has a global IPv6 address); corosync's order
    # still picks IPv4, which is on vmbr0.
    assert codes["hostname-resolves"][0]["payload"]["address"] == "10.254.220.11"
    assert codes["hostname-ipv6-first"][0]["payload"]["first"] == "fd54:1::11"


def test_names_and_the_view_of_peer_names(node):
    nodes = {"pvelab1": {"0": "10.254.221.11"}, "pvelab5": {"0": "10.254.221.12"},
             "pvelab9": {"0": "10.254.221.13"}}
    found = by_code(run_in(node, ["names", "consistency"], hostname="debian", node="pvelab1",
                           nodes=nodes))
    assert found["hostname-node-mismatch"][0]["payload"] == {"hostname": "debian",
                                                             "node": "pvelab1"}
    assert found["names-resolved"][0]["payload"]["resolutions"] == {
        "pvelab1": "10.254.220.11", "pvelab5": "10.254.229.99", "pvelab9": None}
    assert [f["subject"] for f in found["peer-name-unresolved"]] == ["pvelab9"]


# -- NICs ------------------------------------------------------------------------------------------

PLAN = {"pvelab1": {"0": "10.254.221.11", "1": "10.254.222.11"},
        "pvelab2": {"0": "10.254.221.12", "1": "10.254.222.12"}}


def test_inventory_reads_the_namespace_and_offers_only_the_spare_veth(node):
    found = by_code(run_in(node, ["inventory"]))
    rows = {r["name"]: r for r in found["nic-inventory"][0]["payload"]["interfaces"]}
    assert {n: r["kind"] for n, r in rows.items()} == {
        "lo": "loopback", "eth0": "veth", "eth1": "veth", "eth2": "veth", "eth3": "veth",
        "eth9": "veth", "vmbr0": "bridge"}
    assert rows["eth0"]["master"] == "vmbr0"
    assert rows["eth3"]["up"] is False and rows["eth3"]["carrier"] is False
    assert rows["eth1"]["speed_mbps"] == 10000 and rows["eth1"]["mac"]
    assert rows["vmbr0"]["addresses"] == ["10.254.220.11/24", "10.254.225.11/32",
                                          "fd54:1::11/64"]
    assert [f["payload"]["name"] for f in found["nic-free"]] == ["eth9"]


def test_clean_link_layout(node):
    found = run_in(node, ["link-address", "link-layout"], node="pvelab1", nodes=PLAN)
    assert [(f["code"], f["subject"]) for f in found] == [
        ("link-address-local", "pvelab1/link0"), ("link-address-local", "pvelab1/link1"),
        ("link-layout-ok", "pvelab1")]
    assert found[0]["payload"]["interface"] == "eth1"


def test_link0_on_the_management_bridge_and_no_redundancy(node):
    nodes = {"pvelab1": {"0": "10.254.220.11"}, "pvelab2": {"0": "10.254.220.12"}}
    found = by_code(run_in(node, ["link-layout"], node="pvelab1", nodes=nodes))
    assert found["link0-shares-management"][0]["payload"] == {
        "link": 0, "interface": "vmbr0", "management": "vmbr0", "shared": ["eth0"]}
    assert "link-no-redundancy" in found


def test_link_address_on_a_dead_nic_or_absent_fails(node):
    nodes = {"pvelab1": {"0": "10.254.223.11", "1": "10.254.226.11"},
             "pvelab2": {"0": "10.254.223.12", "1": "10.254.226.12"}}
    found = run_in(node, ["link-address"], node="pvelab1", nodes=nodes)
    assert [(f["code"], f["payload"]["interface"]) for f in found] == [
        ("link-address-missing", "eth3"), ("link-address-missing", None)]
    assert found[0]["payload"]["operstate"] == "DOWN"  # a veth whose peer is down
