"""How a Proxmox VE node joins, and why: the API join (pvecm add with the root password on stdin,
or pvesh), or `pvecm add --use_ssh 1` (root key login to the cluster node).

pve-cluster's CLI/pvecm.pm: `pvecm add` talks to the cluster node's API (pveproxy, TCP 8006)
unless `--use_ssh` is given, then it logs in as root over SSH and runs `pvecm addnode` there.
The choice follows what the plan names (a root password or not) and what the node can reach.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from typing import Callable

from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.errors import UserError
from pvestrap.fingerprint import API_PORT
from pvestrap.plan import ClusterPlan
from pvestrap.system import CommandFailed, System

SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=5")


@dataclass(frozen=True)
class JoinMethod:
    """How this node joins: "api" (pvecm add, the root password on stdin; needs pveproxy on the
    cluster node), "pvesh" (the API join with the password on the command line) or "ssh"
    (pvecm add --use_ssh 1; needs root key login to the cluster node)."""

    kind: str
    why: str

    def describe(self) -> str:
        how = {"api": "the API join (pvecm add, password on stdin)",
               "pvesh": "the API join (pvesh create /cluster/config/join)",
               "ssh": "pvecm add --use_ssh 1 (root key login)"}[self.kind]
        return f"{how}: {self.why}"


def ssh_argv(host: str, *command: str) -> list[str]:
    return ["ssh", *SSH_OPTIONS, f"root@{host}", "--", shlex.join(command)]


def key_login(system: System, host: str) -> bool:
    try:
        result = system.run(ssh_argv(host, "true"), timeout=30, check=False, mutates=False)
    except CommandFailed:
        return False
    return result.returncode == 0


def choose_join_method(system: System, plan: ClusterPlan, has_pveproxy: Callable[[str], bool],
                       resolver: Resolver = resolve) -> JoinMethod:
    """The API join when the plan names the root password and the cluster node serves the API;
    otherwise pvecm's SSH join when root key login to it works. The cluster node: the join
    target as this node (RESOLVER, its name lookup) reaches it (plan.join_address)."""
    host = plan.join_address(resolver)
    password = plan.join.names_password
    if password and has_pveproxy(host):
        return JoinMethod("api", f"the plan names the root password and {host}:8006 answers")
    if key_login(system, host):
        reason = (f"{host}:8006 does not answer" if password
                  else "the plan names no root password")
        return JoinMethod("ssh", f"{reason}; root key login to {host} works")
    raise UserError(f"{host}: no way to join: "
                    + ("its API (TCP 8006) does not answer" if password
                       else "the plan names no root password (join.password_file or "
                            "join.password_env)")
                    + f" and root key login to {host} fails",
                    code="join-no-method",
                    remedy="set join.password_file (API join, needs pveproxy on the cluster "
                           "node) or let this node's root log in there with its key "
                           "(ssh-copy-id root@" + host + ")")


def pveproxy_answers(host: str, port: int = API_PORT, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
