"""Time checks against real chronyd NTP servers in network namespaces this test creates.

Two namespaces joined by a veth pair: `srv` runs chronyd as an NTP server (local stratum 8),
`cli` asks it with ntplib through the real check, once with the real clock and once under
`faketime -f +3s` (the clock 3 s ahead: the check must report about -3 s as ntp-offset-high).
A second chronyd in `cli` syncs from the server for the local sync-state check. Every chronyd
runs with -x (never touches the clock) and its own config, pid, socket and drift files; the
namespaces, the processes and the files are removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import Sources
from pvestrap.checks.timesync import LocalSyncCheck
from pvestrap.findings import Severity
from pvestrap.system import run_command

NET = "10.254.211"
SERVER = f"{NET}.1"
NOBODY = f"{NET}.99"  # in the link's network, never configured: requests go unanswered


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool, pkg in (("ip", "iproute2"), ("chronyd", "chrony"), ("chronyc", "chrony"),
                      ("faketime", "faketime")):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package: {pkg})"
    return None


pytestmark = [pytest.mark.lab, pytest.mark.skipif(_skip_reason() is not None,
                                                  reason=str(_skip_reason()))]


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


class Chronyd:
    """One chronyd -x in a namespace, with every path of its own under `folder`."""

    def __init__(self, ns: str, folder: Path, name: str, lines: list[str]):
        self.socket = folder / f"{name}.sock"
        conf = folder / f"{name}.conf"
        conf.write_text("\n".join(lines + [
            "cmdport 0", f"bindcmdaddress {self.socket}", f"pidfile {folder / name}.pid",
            f"driftfile {folder / name}.drift"]) + "\n")
        self.log = open(folder / f"{name}.log", "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "chronyd", "-x", "-d", "-u",
                                      "root", "-f", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tag = secrets.token_hex(3)
    srv, cli = f"pvt{tag}s", f"pvt{tag}c"
    folder = tmp_path_factory.mktemp("chrony")
    folder.chmod(0o700)  # chronyd refuses a command socket in a folder others can write
    daemons: list[Chronyd] = []
    made: list[str] = []
    try:
        for ns in (srv, cli):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", srv, "link", "add", "ntp0", "type", "veth", "peer", "name", "ntp0",
           "netns", cli)
        for ns, host in ((srv, 1), (cli, 2)):
            sh("ip", "-n", ns, "addr", "add", f"{NET}.{host}/24", "dev", "ntp0")
            sh("ip", "-n", ns, "link", "set", "ntp0", "up")
        daemons.append(Chronyd(srv, folder, "server", ["port 123", "allow all",
                                                        "local stratum 8"]))
        yield {"srv": srv, "cli": cli, "folder": folder, "daemons": daemons}
    finally:
        for d in daemons:
            d.stop()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def check_in(ns: str, servers: list[str], faketime: str | None = None) -> list[dict]:
    """Run the real NtpOffsetCheck in a process inside `ns` (optionally under libfaketime)."""
    code = ("import json,sys\n"
            "from pvestrap.checks.base import Context\n"
            "from pvestrap.checks.timesync import NtpOffsetCheck\n"
            "found = NtpOffsetCheck(timeout_s=1.0).run(Context(node='n1', "
            "options={'ntp_servers': json.loads(sys.argv[1])}))\n"
            "print(json.dumps([f.as_dict() for f in found]))\n")
    argv = ["ip", "netns", "exec", ns]
    if faketime:
        argv += ["faketime", "-f", faketime]
    argv += [sys.executable, "-c", code, json.dumps(servers)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for_server(ns: str) -> None:
    """chronyd answers once it runs; ask until it does (no sleeping on a guess)."""
    for _ in range(50):
        if check_in(ns, [SERVER])[0]["code"] != "ntp-unreachable":
            return
        time.sleep(0.1)
    raise AssertionError("the lab's chronyd never answered")


def test_offset_to_a_real_chronyd_is_ok(lab):
    wait_for_server(lab["cli"])
    [f] = check_in(lab["cli"], [SERVER])
    assert f["code"] == "ntp-offset-ok" and f["severity"] == "pass"
    assert abs(f["payload"]["offset_s"]) < 0.05
    assert f["payload"]["stratum"] == 8 and f["subject"] == f"n1/{SERVER}"


def test_a_clock_3_s_ahead_is_reported_high(lab):
    wait_for_server(lab["cli"])
    [f] = check_in(lab["cli"], [SERVER], faketime="+3s")
    assert f["code"] == "ntp-offset-high" and f["severity"] == "fail"
    assert f["payload"]["offset_s"] == pytest.approx(-3.0, abs=0.2)
    assert f["payload"]["fail_s"] == 1.0


def test_a_silent_server_is_unreachable_and_the_others_still_answer(lab):
    wait_for_server(lab["cli"])
    found = check_in(lab["cli"], [NOBODY, SERVER])
    assert [(f["code"], f["payload"]["server"]) for f in found] == [
        ("ntp-unreachable", NOBODY), ("ntp-offset-ok", SERVER)]


def _sync_state(sock: Path, want: str, seconds: float = 15.0) -> list:
    """Run the check until it reports `want` (chrony needs a few exchanges to select)."""
    check = LocalSyncCheck(Sources(runner=run_command), chronyc_host=str(sock))
    deadline = time.monotonic() + seconds
    while True:
        found = check.run(Context(node="n1"))
        if found[0].code == want or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_local_chrony_synced_to_the_lab_server(lab):
    client = Chronyd(lab["cli"], lab["folder"], "client",
                     [f"server {SERVER} iburst minpoll -4 maxpoll -4", "port 0"])
    lab["daemons"].append(client)
    [f] = _sync_state(client.socket, "time-synced")
    assert (f.code, f.severity) == ("time-synced", Severity.PASS)
    assert f.payload["daemon"] == "chrony" and f.payload["leap_status"] == "Normal"
    assert SERVER in f.payload["reference"] and f.payload["servers"] == [SERVER]


def test_local_chrony_without_a_reachable_server_is_unsynced(lab):
    lonely = Chronyd(lab["cli"], lab["folder"], "lonely", [f"server {NOBODY} iburst", "port 0"])
    lab["daemons"].append(lonely)
    for _ in range(50):  # until chronyd's command socket answers
        [f] = LocalSyncCheck(Sources(runner=run_command),
                             chronyc_host=str(lonely.socket)).run(Context())
        if f.payload["daemon"] == "chrony":
            break
        time.sleep(0.1)
    assert (f.code, f.severity) == ("time-unsynced", Severity.WARN)
    assert f.payload["leap_status"] == "Not synchronised"
