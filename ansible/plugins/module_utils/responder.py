# -*- coding: utf-8 -*-
# GNU Affero General Public License v3.0+ (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""A probe responder that outlives the task that starts it, so every node of a cluster answers
before any node probes (Ansible's next task is the barrier). It runs pvestrap's own responder
(pvestrap.checks.responder) in a fresh python3 whose command line says `pvestrap-responder`
(what the responder's stop looks for); the probe token travels on its stdin, never on a
command line, and it exits by itself after its TTL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PID_FILE = "/run/pvestrap/ansible-responder.pid"
LOG_FILE = "/run/pvestrap/ansible-responder.log"

_SERVE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[2])
from pvestrap.checks import responder as rsp
from pvestrap.checks.probe import Token
job = json.loads(sys.stdin.readline())
lock = rsp.PidLock(job["pid_file"])
if not lock.acquire():
    print("BUSY", flush=True)
    sys.exit(1)
lock.write_pid(os.getpid())
server = rsp.Responder(rsp.ResponderConfig(
    token=Token(job["token"].encode()), ports=tuple(job["ports"]),
    addresses=tuple(job["addresses"]), ttl_s=float(job["ttl"])))
server.open()
print("READY", flush=True)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
try:
    server.serve()
finally:
    server.close()
"""


def start(library_path, token, ports, addresses, ttl):
    """Start the responder (replacing one an earlier run left); returns its pid."""
    from pvestrap.checks import responder as rsp

    os.makedirs(os.path.dirname(PID_FILE), mode=0o755, exist_ok=True)
    rsp.stop_running(PID_FILE)
    with open(LOG_FILE, "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-c", _SERVE, "pvestrap-responder", library_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True)
    job = {"pid_file": PID_FILE, "token": token, "ports": list(ports),
           "addresses": list(addresses), "ttl": ttl}
    child.stdin.write(json.dumps(job) + "\n")
    child.stdin.close()
    line = child.stdout.readline().strip()
    child.stdout.close()
    if line != "READY":
        child.wait(timeout=10)
        with open(LOG_FILE, errors="replace") as fh:
            tail = fh.read().strip().splitlines()[-3:]
        raise RuntimeError("the responder did not start (%s): %s" % (line or "no answer",
                                                                     " | ".join(tail)))
    return child.pid


def stop():
    from pvestrap.checks import responder as rsp

    return rsp.stop_running(PID_FILE)
