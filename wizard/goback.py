"""Preflight findings back to the questions that set the values they are about.

A finding about a link carries its number in its payload (`link`, and `peer` when it is about
the path to a peer: the checks' own measured data, never parsed back out of the subject text);
its code tells a cluster name problem, its check a join target problem (fingerprint, TCP
8006/22). From that the wizard offers to go back to exactly those answers: a link re-asks all
of its questions (choice, typed address, static address), the join target re-asks how the
cluster is named.
"""

from __future__ import annotations

import re
from typing import Iterable

from pvestrap.findings import Finding
from pvestrap.wizard import questions

JOIN_TARGET = ("join.method", "join.info", "join.address", "join.fingerprint", "join.password")


def targets_for(finding: Finding, state: questions.State) -> tuple[str, ...]:
    """The question ids (go-back targets) that set the value a finding is about."""
    link = finding.payload.get("link")
    out: list[str] = []
    if isinstance(link, int) and not isinstance(link, bool):
        out.append(f"link{link}")
        peer = _peer_index(state, finding.payload.get("peer"))
        if peer is not None:
            out.append(f"peer{peer}.link{link}")
    elif finding.code.startswith("cluster-name"):
        out.append("cluster.name")
    elif finding.check in ("join-fingerprint", "tcp-services") and state.joining:
        out.append("join")
    elif finding.code == "link-set-mismatch" and state.joining:
        out.append("join")
    return tuple(out)


def _peer_index(state: questions.State, name: str | None) -> int | None:
    for i in state.peer_indexes():
        if state.get(f"peer{i}.name") == name:
            return i
    return None


def reask_set(target: str, state: questions.State) -> set[str]:
    """Question ids re-asked when going back to TARGET (a link re-asks all its questions)."""
    if target == "join":
        return set(JOIN_TARGET)
    if re.fullmatch(r"link\d", target):
        return {f"{target}.address", f"{target}.other", f"{target}.static"}
    return {target}


def describe_target(target: str, state: questions.State) -> str:
    if re.fullmatch(r"link\d", target):
        n = int(target[4:])
        return f"this node's link{n} address (now {state.link_address(n)})"
    if target.startswith("peer"):
        i, link = target[4:].split(".")
        return f"{state.get(f'peer{i}.name')}'s {link} address (now {state.get(target)})"
    if target == "join":
        return f"the cluster node to join (now {state.join_host})"
    return f"{target} (now {state.get(target)})"


def go_back_question(fails: Iterable[Finding], state: questions.State) -> questions.Question:
    targets: list[str] = []
    for f in fails:
        for t in targets_for(f, state):
            if t not in targets:
                targets.append(t)
    choices = tuple(questions.Choice(t, f"go back: change {describe_target(t, state)}")
                    for t in targets)
    choices += (questions.Choice("again", "run the preflight again (after fixing it outside)"),
                questions.Choice("abort", "stop here: nothing has been changed"))
    return questions.Question("preflight.next", "The preflight found problems. What now?",
                              "Each FAIL above says how to fix it.", questions.SELECT,
                              default=lambda s: choices[0].value, choices=lambda s: choices)
