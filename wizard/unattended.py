"""Unattended mode: the wizard's questions answered from an answer file, never guessed.

`answers_from_plan` turns this node's part of a plan into question answers (by question id),
`facts_from_plan` carries what the file holds beyond them (the pinned fingerprint, link
networks and priorities, nodeids), and `UnattendedAsker` answers the flow from those: a
question that applies but has no value is an error naming its answer-file key when it is
required or destructive; only optional questions take their default.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pvestrap.checks.localsys import Resolver, resolve
from pvestrap.errors import UserError
from pvestrap.plan import ClusterPlan, JoinTarget
from pvestrap.wizard import questions
from pvestrap.wizard.detect import Detected


def answers_from_plan(plan: ClusterPlan, detected: Detected, resolver: Resolver = resolve
                      ) -> dict[str, Any]:
    """The question answers an answer file gives for this node (unattended mode's source).

    Only values the file really holds are returned; a required question it does not answer
    stays missing, and the unattended asker names its key. The node to join: the file's
    join.address, else the creator as this node (RESOLVER, its name lookup) reaches it.
    """
    me = plan.node(detected.hostname)
    joining = plan.role_of(me.name) == questions.JOIN
    out: dict[str, Any] = {"role": questions.JOIN if joining else questions.CREATE}
    if joining:
        out.update({"join.method": "address", "join.address": plan.join_address(resolver),
                    "join.links": ",".join(str(n) for n in plan.link_numbers),
                    "cluster.name": plan.cluster_name, "node.nodeid": str(me.nodeid)})
    else:
        out["cluster.name"] = plan.cluster_name
    stanzas = {str(ipaddress.ip_interface(s.address).ip): s for s in me.interfaces if s.address}
    local = {a.address for a in detected.addresses}
    for i, n in enumerate(plan.link_numbers):
        addr = me.addresses[n]
        if addr in local:  # also a stanza's address once the apply configured it
            out[f"link{n}.address"] = addr
        elif addr in stanzas:
            out[f"link{n}.address"] = questions.NIC + stanzas[addr].name
            out[f"link{n}.static"] = stanzas[addr].address
        else:
            out.update({f"link{n}.address": questions.OTHER, f"link{n}.other": addr})
        if i:
            out[f"links.add{n}"] = True
    out[f"links.add{max(plan.link_numbers) + 1}"] = False
    top = max(plan.links, key=lambda link: link.priority)
    if not joining and len(plan.links) > 1:
        out["links.preferred"] = top.number if top.priority else questions.NONE
    others = [n for n in plan.nodes if n.name != me.name]
    if joining:
        others.sort(key=lambda n: n.name != plan.creator.name)
    for i, node in enumerate(others, 1):
        out[f"peer{i}.name"] = node.name
        out.update({f"peer{i}.link{n}": a for n, a in node.addresses.items()})
        theirs = {str(ipaddress.ip_interface(s.address).ip): s.name
                  for s in node.interfaces if s.address}
        out.update({f"peer{i}.nic{n}": theirs.get(a, "") for n, a in node.addresses.items()})
    out[f"peer{len(others) + 1}.name"] = ""
    out.update(_password_ref(plan.join))
    dc = plan.datacenter
    out.update({"migration.network": dc.migration_network or questions.NONE,
                "migration.type": dc.migration_type or "secure",
                "keyboard": dc.keyboard or questions.NONE})
    return out


def _password_ref(join: JoinTarget) -> Mapping[str, Any]:
    if join.password_env:
        return {"join.password_ref": "env", "join.password_env": join.password_env}
    if join.password_file:
        return {"join.password_ref": "file", "join.password_file": join.password_file}
    return {"join.password_ref": questions.NONE}


def facts_from_plan(plan: ClusterPlan) -> dict[str, Any]:
    """What an answer file holds beyond the questions' answers: the fingerprint it pins (the
    conversation would have the user confirm it), the link networks and priorities, the
    nodeids, the backend and the other nodes' interface stanzas; so the plan built from the
    answers is the file's plan."""
    out: dict[str, Any] = {
        "link_networks": {link.number: link.network for link in plan.links if link.network},
        "link_priorities": {link.number: link.priority for link in plan.links},
        "nodeids": {node.name: node.nodeid for node in plan.nodes}, "backend": plan.backend,
        "interfaces": {node.name: node.interfaces for node in plan.nodes}}
    if plan.join.fingerprint:
        out["planned_fingerprint"] = plan.join.fingerprint
    return out


@dataclass(frozen=True)
class UnattendedAsker:
    """Answers from a mapping (question id -> value); never guesses.

    A question that applies but has no value is an error naming its answer-file key when it is
    required or destructive; only optional questions fall back to their default. Secrets come
    from `secrets` (resolved from password_env / password_file), never from the mapping.
    """

    values: Mapping[str, Any]
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    say_to: Callable[[str], None] = lambda _text: None
    interactive: bool = False

    def ask(self, question: questions.Question, state: questions.State, default: Any) -> Any:
        if question.secret:
            if question.id in self.secrets:
                return self.secrets[question.id]
            raise UserError(f"{' or '.join(question.keys)}: required to answer "
                            f"{question.id!r} unattended", code="answer-key-missing",
                            remedy="name where the password is (join.password_env or "
                                   "join.password_file); never the password itself")
        if question.id in self.values:
            return self.values[question.id]
        if question.required or question.destructive:
            key = question.key or question.id
            raise UserError(f"{key}: required answer is missing (unattended mode never "
                            "guesses)", code="answer-key-missing",
                            remedy=f"add {key} to the answer file"
                            + (" or pass --yes" if question.destructive else ""))
        return default

    def say(self, text: str) -> None:
        self.say_to(text)
