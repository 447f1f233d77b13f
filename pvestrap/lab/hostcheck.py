"""Whether labs can run on this machine, fresh lab names, and what a lab left behind: what the
lab tests (tests/support/labtesting.py), the benchmarks and the demo's checks share. No pytest
here: the test fixtures live under tests/."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import string
import subprocess
from typing import Iterable

from pvestrap.lab import names, proc
from pvestrap.lab.lab import Lab

TOOLS = ("ip", "nsenter", "nft", "unshare")
_ALPHABET = string.ascii_lowercase + string.digits


def new_prefix(head: str = "lt") -> str:
    """A lab name nobody else uses: 'lt' and six random characters."""
    return head + "".join(secrets.choice(_ALPHABET) for _ in range(6))


def unavailable() -> str | None:
    """Why labs cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network and mount namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"lab tests need {', '.join(missing)}"
    probe = subprocess.run(["unshare", "--net", "--mount", "--uts", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine cannot create namespaces: {probe.stderr.strip()}"
    return None


def pve_unavailable(release: str) -> str | None:
    """Why a `lab up --pve RELEASE` cannot run here (no root, or Proxmox's sources absent)."""
    from pvestrap.lab import pvestack

    return unavailable() or pvestack.unavailable(release)


def diagnose(prefix: str, lines: int = 15) -> str:
    """A lab's status and the tails of its logs, for the report of a failed test."""
    layout = names.Layout(prefix)
    out = [f"--- lab {prefix} (removed after this test) ---"]
    try:
        out.append(json.dumps(Lab(prefix).status(), indent=1))
    except Exception as exc:  # a broken lab is what is being diagnosed
        out.append(f"status unavailable: {exc}")
    logs = sorted(layout.state_dir.glob("n*/var/log/*.out")) + \
        sorted(layout.state_dir.glob("qnetd/var/log/*.out")) + \
        sorted(layout.state_dir.glob("n*/var/log/corosync/corosync.log")) + \
        sorted(layout.state_dir.glob("*.log"))
    for log in logs:
        try:
            tail = log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        out.append(f"--- {log.relative_to(layout.state_dir)} ---")
        out.extend(tail)
    return "\n".join(out)


def leftovers(prefix: str, inodes: Iterable[int] = ()) -> dict[str, list]:
    """What is left of lab PREFIX on this machine: namespaces (`ip netns list`), interfaces in
    the root namespace (`ip -o link`), processes (in one of its namespaces INODES, or naming it
    on their command line) and its state folder. Empty lists after `down`."""
    layout = names.Layout(prefix)
    inodes = set(inodes)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return {
        "netns": [line.split()[0] for line in listed.splitlines()
                  if line.split() and line.split()[0].startswith(f"{prefix}-")],
        "links": [line for line in links.splitlines() if prefix in line],
        "processes": [f"{p.pid} {p.cmdline}" for p in proc.processes()
                      if (p.net is not None and p.net in inodes) or prefix in p.cmdline],
        "state": [str(layout.state_dir)] if layout.state_dir.exists() else [],
    }
