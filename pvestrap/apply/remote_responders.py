"""Responders that apply starts on the members over ssh, for the probes of its recheck.

One ssh session per member, reached as the join reaches it (pvestrap.apply.remote: root key
login, BatchMode, the member's name when it resolves here, else its link0 address), runs
`pvestrap responder --agent`: the mesh preflight's agent conversation (pvestrap.mesh) with
only its responder. The job on stdin names a fresh random token (never on a command line),
the link numbers and the member's link addresses. The responder answers from before READY
until apply hangs up, which it does when its probes end, also when they fail or are
interrupted; a session that dies ends it too (its stdin closes), and its TTL bounds it in any
case. Beside a running corosync it answers through its raw socket (pvestrap.checks.responder).

A member where that cannot run is named with the cause and the fix: ssh exits 127 when
pvestrap is not installed there, 255 when it cannot log in.
"""

from __future__ import annotations

import secrets
import shlex
from contextlib import contextmanager
from typing import Callable, Iterator

from pvestrap import mesh
from pvestrap.apply.recheck import Started, Starter, probing_preflight
from pvestrap.apply.remote import SSH_UNREACHABLE, Remote, reach_address
from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.checks.probe import Token
from pvestrap.plan import ClusterPlan
from pvestrap.system import System

AGENT = ("responder", "--agent")
TTL_S = 300.0  # the responder's own bound, past any recheck's probes
START_S = 60.0  # ssh login and pvestrap's start on the member
NOT_FOUND = 127  # the shell's exit code for a command it cannot find
Launcher = Callable[[str, list[str]], tuple[list[str], dict | None]]


def ssh_starter(system: System, *, connect_timeout: float = 5.0, resolver: Resolver = resolve,
                remote: tuple[str, ...] = ("pvestrap",), launcher: Launcher | None = None,
                start_s: float = START_S) -> Starter:
    """A recheck.Starter: responders on the members over SYSTEM's ssh. REMOTE: the pvestrap
    command on the members; LAUNCHER(member, agent argv) -> (argv, env): the seam tests use
    to run the agent some other way than ssh."""

    @contextmanager
    def start(plan: ClusterPlan, node: str, members: frozenset[str]) -> Iterator[Started]:
        token = secrets.token_hex(16)
        targets = {m: member_address(plan, m, resolver) for m in sorted(members)}
        jobs = {m: {"token": token, "links": list(plan.link_numbers), "ttl_s": TTL_S,
                    "addresses": sorted(set(plan.node(m).addresses.values()))} for m in targets}

        def over_ssh(member: str, agent: list[str]) -> tuple[list[str], dict | None]:
            ssh = Remote(system, targets[member], connect_timeout=connect_timeout)
            return list(ssh.argv(shlex.join(agent))), None

        with mesh.held_agents(targets, [*remote, *AGENT], jobs, launcher=launcher or over_ssh,
                              timeout_s=start_s) as results:
            missing = {r.node: why_not(r, targets[r.node]) for r in results if r.error}
            answering = frozenset(r.node for r in results if not r.error)
            yield Started(answering, probing_preflight(Token(token.encode()), system.root,
                                                       answering), missing)

    return start


def member_address(plan: ClusterPlan, member: str, resolver: Resolver = resolve) -> str:
    """Where ssh reaches MEMBER: as the join reaches it (reach_address)."""
    addresses = plan.node(member).addresses
    return reach_address(member, addresses[min(addresses)], plan.join_address(resolver),
                         resolver)


def why_not(result: mesh.NodeResult, address: str) -> str:
    """Why MEMBER's responder does not answer, and what to do about it."""
    member = result.node
    instead = "or pass --token-file with the token of responders you start there"
    if result.exit == NOT_FOUND:
        return f"pvestrap not found on {member} (install it, {instead})"
    if result.exit == SSH_UNREACHABLE:
        return (f"cannot log in to {member} over ssh (root@{address}: {result.error}; "
                f"`ssh root@{address} true` must work without a prompt, {instead})")
    return f"no responder on {member} ({result.error}; {instead})"
