"""The real ifupdown2 as the oracle: every edited interfaces file parses to exactly the intended
stanzas, and the user's stanzas parse exactly as before.

`ifquery -i FILE -o json` only reads: it parses FILE and asks the kernel (netlink GET requests)
about the current state. To be sure it can configure nothing here even by mistake, it runs in a
fresh network namespace (an empty one: nothing of this machine's network is reachable) and a
private mount namespace where /etc/network/interfaces.d is an empty folder (so only FILE counts);
both die with the command. A test traces it with strace and asserts it sends no netlink request
that changes anything and runs nothing that could. Never ifup/ifreload.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings

from pvestrap.interfaces import edit_interfaces, parse_interfaces
from pvestrap.plan import InterfaceStanza as Stanza

TESTS = pathlib.Path(__file__).resolve().parents[1]
GOLDEN = TESTS / "golden"
PVE1 = (Stanza("eno2", "10.10.10.1/24", 9000), Stanza("eno3", "10.10.20.1/24"),
        Stanza("vmbr1", "10.10.30.1/24", kind="bridge", bridge_ports="eno4"))


def _cases():
    """The random installer files and stanza sets of tests/test_interfaces.py, reused as is."""
    spec = importlib.util.spec_from_file_location("interfaces_cases",
                                                  TESTS / "test_interfaces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = _cases()


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: ifquery runs in private network and mount namespaces"
    for tool in ("ifquery", "unshare"):
        if not shutil.which(tool):
            return f"{tool} is not installed (ifupdown2, util-linux)"
    return None


pytestmark = [pytest.mark.lab, pytest.mark.skipif(_skip_reason() is not None,
                                                  reason=str(_skip_reason()))]


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("interfaces.d")


def ifquery_cmd(path: pathlib.Path, args: list[str], empty: pathlib.Path) -> list[str]:
    script = 'mount --bind "$1" /etc/network/interfaces.d && shift && exec "$@"'
    return ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(empty), shutil.which("ifquery"), *args, "-i", str(path), "-o", "json"]


# ifupdown2 tries `modprobe bonding` through PATH; without the sbin folders it cannot load a
# kernel module (a change outside any namespace). Its other helpers have absolute paths.
QUERY_ENV = dict(os.environ, PATH="/usr/bin:/bin")


def ifquery(text: str, tmp_path: pathlib.Path, empty: pathlib.Path,
            auto_only: bool = False) -> dict[tuple[str, str], dict]:
    """FILE as ifupdown2 reads it: (name, family) -> the stanza's JSON."""
    path = tmp_path / "interfaces"
    path.write_text(text)
    names = sorted({b.name for b in parse_interfaces(text) if b.kind == "iface"})
    args = ["-a"] if auto_only else names
    if not args:
        return {}
    proc = subprocess.run(ifquery_cmd(path, args, empty), capture_output=True, text=True,
                          timeout=120, env=QUERY_ENV)
    assert proc.returncode == 0, proc.stderr
    return {(item["name"], item["addr_family"]): item for item in json.loads(proc.stdout)}


def expected_config(stanza: Stanza, before: dict | None) -> dict:
    """The user's options the plan does not own, plus the plan's own options."""
    config = {k: v for k, v in (before or {}).get("config", {}).items()
              if k not in CASES.owned_keys(stanza)}
    if stanza.address:
        config["address"] = stanza.address
    if stanza.gateway:
        config["gateway"] = stanza.gateway
    if stanza.kind == "bridge":
        config.update({"bridge-ports": stanza.bridge_ports or "none", "bridge-stp": "off",
                       "bridge-fd": "0"})
    if stanza.mtu:
        config["mtu"] = str(stanza.mtu)
    return config


def check_edit(before_text: str, stanzas, tmp_path: pathlib.Path, empty: pathlib.Path) -> None:
    after_text = edit_interfaces(before_text, stanzas)
    before = ifquery(before_text, tmp_path, empty)
    after = ifquery(after_text, tmp_path, empty)
    planned = {(s.name, CASES.family(s)) for s in stanzas}
    for stanza in stanzas:
        key = (stanza.name, CASES.family(stanza))
        got = after[key]
        method = "static" if stanza.address else (before.get(key) or {}).get("addr_method",
                                                                           "manual")
        assert (got["addr_method"], got["auto"]) == (method, True), got
        assert got["config"] == expected_config(stanza, before.get(key)), got
    users = {key: item for key, item in before.items() if key not in planned}
    assert {key: after[key] for key in users} == users
    assert set(after) == set(before) | planned


def test_golden_edit_parses_to_the_intended_stanzas(tmp_path, empty_dir):
    before_text = (GOLDEN / "interfaces-installer").read_text()
    assert edit_interfaces(before_text, PVE1) == (GOLDEN / "interfaces-pve1").read_text()
    check_edit(before_text, PVE1, tmp_path, empty_dir)
    after = ifquery((GOLDEN / "interfaces-pve1").read_text(), tmp_path, empty_dir)
    assert after[("eno2", "inet")]["config"] == {"address": "10.10.10.1/24", "mtu": "9000"}
    assert after[("eno3", "inet")]["config"] == {"address": "10.10.20.1/24",
                                                 "post-up": "ethtool -K eno3 gro off"}
    assert after[("vmbr1", "inet")]["config"] == {"address": "10.10.30.1/24",
                                                  "bridge-ports": "eno4", "bridge-stp": "off",
                                                  "bridge-fd": "0"}
    auto = ifquery((GOLDEN / "interfaces-pve1").read_text(), tmp_path, empty_dir, auto_only=True)
    assert sorted(name for name, _ in auto) == ["eno2", "eno3", "lo", "vmbr0", "vmbr1"]


def test_the_oracle_can_fail(tmp_path, empty_dir):
    """An `auto` line after its stanza is ignored by ifupdown2: a naive editor would be caught."""
    naive = "iface eno2 inet static\n\taddress 10.10.10.1/24\n\nauto eno2\n"
    assert ifquery(naive, tmp_path, empty_dir)[("eno2", "inet")]["auto"] is False
    fixed = edit_interfaces(naive, [Stanza("eno2", "10.10.10.1/24")])
    assert ifquery(fixed, tmp_path, empty_dir)[("eno2", "inet")]["auto"] is True


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(CASES.edits())
def test_random_edits_parse_to_the_intended_stanzas(tmp_path, empty_dir, case):
    text, stanzas = case
    check_edit(text, stanzas, tmp_path, empty_dir)


_NLMSG_TYPE = re.compile(r"nlmsg_type=(RTM_\w+|0x[0-9a-f]+)")


def _is_get_request(nlmsg_type: str) -> bool:
    """rtnetlink types come in fours from 16: NEW, DEL, GET, SET (strace shows the number when
    the socket lives in another network namespace, as here)."""
    if nlmsg_type.startswith("RTM_"):
        return nlmsg_type.startswith("RTM_GET")
    value = int(nlmsg_type, 16)
    return value >= 16 and value % 4 == 2


READ_ONLY = {"unshare", "sh", "mount", "ifquery", "python3", "sysctl", "ip"}


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_ifquery_changes_nothing(tmp_path, empty_dir):
    """Traced: ifquery sends only netlink GET requests and runs only read-only helpers."""
    path = tmp_path / "interfaces"
    path.write_text((GOLDEN / "interfaces-pve1").read_text())
    trace = tmp_path / "trace"
    cmd = ["strace", "-f", "-qq", "-s", "256", "-e", "trace=execve,sendto,sendmsg",
           "-e", "status=successful", "-o", str(trace)] + ifquery_cmd(path, ["-a"], empty_dir)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=QUERY_ENV)
    assert proc.returncode == 0, proc.stderr
    text = trace.read_text()
    requests = _NLMSG_TYPE.findall(text)
    assert len(requests) >= 3  # the trace did see ifquery's netlink traffic
    assert [t for t in requests if not _is_get_request(t)] == []
    ran = re.findall(r'execve\("([^"]+)", \[([^\]]*)\]', text)
    assert {program.rsplit("/", 1)[-1] for program, _ in ran} <= READ_ONLY, ran
    for program, argv in ran:
        name = program.rsplit("/", 1)[-1]
        if name == "ip":
            assert not re.search(r'"(add|del|delete|set|change|replace|flush|exec)"', argv), argv
        if name == "sysctl":
            assert '"-w"' not in argv and "=" not in argv, argv
        if name == "mount":
            assert argv.endswith('"/etc/network/interfaces.d"'), argv
