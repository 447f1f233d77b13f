"""`corosync-running` against a real corosync: a 1-node knet cluster in a network namespace.

corosync's IPC sockets are abstract (per network namespace), so `corosync-quorumtool -l` run by
the check inside the namespace talks to that corosync and no other. corosync gets its own
config, authkey and state folder, and a private tmpfs /run (its pid lock file), so it cannot
meet another test's corosync. It is stopped by pid and the namespace deleted, also on failure.
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

import pytest

ADDRESS = "10.254.231.1"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool, pkg in (("corosync", "corosync"), ("corosync-quorumtool", "corosync"),
                      ("unshare", "util-linux")):
        if not shutil.which(tool):
            return f"{tool} is not installed (Debian package: {pkg})"
    return None


pytestmark = [pytest.mark.lab, pytest.mark.skipif(_skip_reason() is not None,
                                                  reason=str(_skip_reason()))]

CONF = """\
logging {{
  to_stderr: yes
  to_syslog: no
}}
nodelist {{
  node {{
    name: n1
    nodeid: 1
    quorum_votes: 1
    ring0_addr: {address}
  }}
}}
quorum {{
  provider: corosync_votequorum
}}
system {{
  state_dir: {state}
}}
totem {{
  cluster_name: lab
  config_version: 1
  interface {{
    linknumber: 0
  }}
  ip_version: ipv4-6
  keyfile: {key}
  link_mode: passive
  secauth: on
  version: 2
}}
"""

RUNNER = """
import json
from pvestrap.checks.base import Context
from pvestrap.checks.joinable import CorosyncRunningCheck
print(json.dumps([f.as_dict() for f in CorosyncRunningCheck().run(Context(node="n2"))]))
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def namespace():
    ns = f"pvj{secrets.token_hex(3)}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "link", "add", "c0", "type", "veth", "peer", "name", "c1")
        for dev in ("c0", "c1"):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", ns, "addr", "add", f"{ADDRESS}/24", "dev", "c0")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def check_in(ns: str) -> dict:
    done = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", RUNNER],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [finding] = json.loads(done.stdout)
    return finding


def test_corosync_stopped_then_running(namespace, tmp_path):
    assert check_in(namespace)["code"] == "corosync-stopped"
    key = tmp_path / "authkey"
    key.write_bytes(os.urandom(256))
    key.chmod(0o400)
    (tmp_path / "state").mkdir()
    conf = tmp_path / "corosync.conf"
    conf.write_text(CONF.format(address=ADDRESS, state=tmp_path / "state", key=key))
    log = open(tmp_path / "corosync.log", "w")
    script = 'mount -t tmpfs tmpfs /run && exec corosync -f -c "$1"'
    proc = subprocess.Popen(["ip", "netns", "exec", namespace, "unshare", "--mount",
                             "--propagation", "private", "sh", "-c", script, "sh", str(conf)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            found = check_in(namespace)
            if found["code"] == "corosync-running" or time.monotonic() > deadline:
                break
            assert proc.poll() is None, (tmp_path / "corosync.log").read_text()
            time.sleep(0.2)
        assert (found["code"], found["severity"]) == ("corosync-running", "fail")
        assert any("n1" in line for line in found["payload"]["output"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert check_in(namespace)["code"] == "corosync-stopped"
