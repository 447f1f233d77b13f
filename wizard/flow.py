"""The create/join conversation as plain functions over an `Asker`.

The flow asks the questions of wizard.questions in order (loops over links and other nodes
included), builds the ClusterPlan from the answers, runs the preflight, maps each FAIL back to
the question that set the value (so the user can go back and change exactly that answer), shows
the plan of the apply, asks, applies with progress, shows the status, and saves the
whole-cluster answer file. It never prints, never touches questionary and never reads the
machine itself: an `Asker` renders questions (the terminal, a script in tests, or an answer file
in unattended mode) and `Services` do the work (preflight, fingerprint, apply, status).

Answers are kept by question id. Going back re-asks the chosen questions with the old answers
as defaults and keeps every other answer, so later questions that still apply are not asked
again.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from pvestrap import joininfo
from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Finding, Severity
from pvestrap.plan import (MAX_LINK, NODEID_MAX, ClusterPlan, Datacenter, InterfaceStanza,
                           JoinTarget, Link, Node)
from pvestrap.report.model import Report
from pvestrap.system import Secret
from pvestrap.wizard import questions as Q
from pvestrap.wizard.detect import Detected


class Asker(Protocol):
    """Renders one question and returns the answer (raises KeyboardInterrupt on Ctrl-C)."""

    interactive: bool

    def ask(self, question: Q.Question, state: Q.State, default: Any) -> Any: ...

    def say(self, text: str) -> None: ...


Confirm = Callable[[str], bool]
Out = Callable[[str], None]


class Services(Protocol):
    """The work the flow asks for; the live machine (wizard.services) or a test's fake.

    preflight(plan, node, pending_links): pending_links are links whose address only exists
    after the apply (a new interfaces stanza), so they cannot be probed yet.
    apply(...): shows the plan (diffs, commands) through `out`, asks `confirm`, applies with a
    progress line per step; False when the user declined (nothing changed).
    """

    def fetch_fingerprint(self, host: str) -> str: ...

    def preflight(self, plan: ClusterPlan, node: str, pending: frozenset[int]) -> Report: ...

    def apply(self, plan: ClusterPlan, node: str, password: Secret | None, report: Report,
              confirm: Confirm, out: Out) -> bool: ...

    def status(self, plan: ClusterPlan, node: str) -> Report | None: ...

    def save(self, path: str, text: str) -> None: ...

    def render_report(self, report: Report) -> str: ...


@dataclass(frozen=True)
class Result:
    plan: ClusterPlan
    applied: bool
    saved: str | None = None


# -- the conversation ------------------------------------------------------------------------------

@dataclass
class Talk:
    """One conversation's mutable state (local to a run; never shared)."""

    detected: Detected
    asker: Asker
    services: Services | None = None
    answers: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    keep: dict[str, Any] = field(default_factory=dict)
    reask: set[str] = field(default_factory=set)
    defaults: dict[str, Any] = field(default_factory=dict)

    def state(self) -> Q.State:
        return Q.State(self.detected, dict(self.answers), dict(self.facts))

    def ask(self, q: Q.Question) -> Any:
        state = self.state()
        if not q.when(state):
            self.answers.pop(q.id, None)
            return None
        if q.id in self.keep and q.id not in self.reask and \
                q.check(self.keep[q.id], state) is None:
            self.answers[q.id] = self.keep[q.id]
            return self.answers[q.id]
        default = self.keep.get(q.id, self.defaults.get(q.id, q.default_for(state)))
        while True:
            raw = self.asker.ask(q, state, default)
            problem = q.check(raw, state)
            if problem is None:
                value = q.convert(raw)
                break
            if not self.asker.interactive:
                raise UserError(f"{q.key or q.id}: {problem}", code="answer-invalid",
                                remedy="fix this value in the answer file")
            self.asker.say(f"  {problem}")
        if not q.secret:
            self.answers[q.id] = value
        return value


def converse(talk: Talk) -> None:
    """Every question, in order, for the answers so far (the first run and each go-back)."""
    talk.ask(Q.ROLE)
    if talk.state().joining:
        _join_target(talk)
    talk.ask(Q.CLUSTER_NAME)
    _links(talk)
    _peers(talk)
    talk.ask(Q.NODEID)
    for q in (Q.PASSWORD_REF, Q.PASSWORD_ENV, Q.PASSWORD_FILE, Q.MIGRATION_NETWORK):
        talk.ask(q)
    if talk.ask(Q.MIGRATION_TYPE) == "insecure":
        talk.asker.say("  WARNING: insecure migration sends guest memory unencrypted; use it "
                       "only on a network nobody else can reach.")
    talk.ask(Q.KEYBOARD)


def _join_target(talk: Talk) -> None:
    talk.ask(Q.JOIN_METHOD)
    blob = talk.ask(Q.JOIN_INFO)
    if blob:
        talk.facts["join_info"] = joininfo.decode(blob)
        talk.answers.pop("join.links", None)
    else:
        talk.facts.pop("join_info", None)
    talk.ask(Q.JOIN_ADDRESS)
    talk.ask(Q.JOIN_LINKS)
    if talk.detected.is_pve:
        _fingerprint(talk)
        if not talk.facts.get("save_only"):
            secret = talk.ask(Q.PASSWORD_Q) if "password" not in talk.facts else None
            if secret is not None:
                talk.facts["password"] = Secret(secret)


def join_host(state: Q.State) -> str | None:
    info = state.join_info
    return info.address if info is not None else state.get("join.address")


def _fingerprint(talk: Talk) -> None:
    """Fetch the node's certificate fingerprint and have the user confirm it (or, unattended,
    compare it with the answer file's)."""
    host = join_host(talk.state())
    assert talk.services is not None
    seen = talk.services.fetch_fingerprint(host).upper()
    info = talk.state().join_info
    talk.facts.update(fingerprint_host=host, fingerprint_seen=seen,
                      fingerprint_matches=bool(info and info.fingerprint.upper() == seen))
    if info is not None and info.fingerprint.upper() != seen:
        talk.asker.say(f"  WARNING: the Join Information says {info.fingerprint}, but {host} "
                       f"presents {seen}.")
    planned = talk.facts.get("planned_fingerprint")
    if planned:
        if planned.upper() != seen:
            raise UserError(f"{host}:8006 presents fingerprint {seen}, the answer file says "
                            f"{planned}", code="fingerprint-mismatch",
                            remedy="check that join.address is the cluster node and copy its "
                                   "fingerprint again (`pvenode cert info` there)")
        talk.facts["fingerprint_accepted"] = seen
        return
    if talk.facts.get("fingerprint_accepted") != seen:
        talk.reask.add(Q.FINGERPRINT.id)
    if talk.ask(Q.FINGERPRINT) is False:
        raise UserError(f"the fingerprint of {host} was not confirmed: nothing changed",
                        code="fingerprint-not-confirmed",
                        remedy="compare it with `pvenode cert info` on the cluster node")
    talk.facts["fingerprint_accepted"] = seen


def _links(talk: Talk) -> None:
    state = talk.state()
    numbers = state.cluster_links if state.joining else None
    for n in range(MAX_LINK + 1):
        if numbers is not None and n not in numbers:
            _drop(talk, f"link{n}.")
    if numbers is not None:
        for n in numbers:
            _link(talk, n)
        return
    _link(talk, 0)
    n = 1
    while n <= MAX_LINK and talk.ask(Q.more_links(n)):
        _link(talk, n)
        n += 1
    for m in range(n, MAX_LINK + 1):
        _drop(talk, f"link{m}.")
        if m > n:
            _drop(talk, f"links.add{m}")
    talk.ask(Q.PREFERRED)


def _link(talk: Talk, n: int) -> None:
    for q in (Q.link_address(n), Q.link_other(n), Q.link_static(n)):
        talk.ask(q)


def _drop(talk: Talk, prefix: str) -> None:
    for qid in [k for k in talk.answers if k.startswith(prefix)]:
        del talk.answers[qid]


def _peers(talk: Talk) -> None:
    i = 1
    while talk.ask(Q.peer_name(i)):
        numbers = talk.state().link_numbers()
        for n in numbers:
            talk.ask(Q.peer_link(i, n))
        _drop_matching(talk, lambda k: k.startswith(f"peer{i}.link")
                       and int(k[k.index(".link") + 5:]) not in numbers)
        i += 1
    _drop_matching(talk, lambda k: _peer_number(k) is not None and _peer_number(k) > i)


def _peer_number(qid: str) -> int | None:
    found = re.match(r"^peer(\d+)\.", qid)
    return int(found.group(1)) if found else None


def _drop_matching(talk: Talk, doomed: Callable[[str], bool]) -> None:
    for qid in [k for k in talk.answers if doomed(k)]:
        del talk.answers[qid]


# -- from answers to a plan ------------------------------------------------------------------------

def to_plan(state: Q.State) -> ClusterPlan:
    """The ClusterPlan the answers describe (validated: a wizard bug, not the user, is to blame
    when this raises, since every answer was checked as it was given)."""
    me = state.detected.hostname
    numbers = state.link_numbers()
    links = tuple(Link(n, state.link_network(n), _priority(state, n)) for n in numbers)
    peers = [(state.get(f"peer{i}.name"), {n: state.get(f"peer{i}.link{n}") for n in numbers})
             for i in state.peer_indexes()]
    known = dict(state.facts.get("nodeids", {}))
    mine = Node(me, int(state.get("node.nodeid") or known.get(me, 1)),
                {n: state.link_address(n) for n in numbers}, interfaces=_stanzas(state))
    taken = {mine.nodeid} | {known[name] for name, _ in peers if name in known}
    free_ids = (i for i in range(1, NODEID_LIMIT) if i not in taken)
    others = [Node(name, known[name] if name in known else next(free_ids), addrs)
              for name, addrs in peers]
    nodes = tuple(sorted([mine, *others], key=lambda node: node.nodeid))
    return ClusterPlan(
        cluster_name=_cluster_name(state), nodes=nodes, links=links,
        backend=state.detected.backend,
        create_node=others[0].name if state.joining else me,
        join=_join(state), datacenter=_datacenter(state)).check(source="the wizard's answers")


def _priority(state: Q.State, n: int) -> int:
    """The preferred link gets the higher priority; a joiner keeps the cluster's."""
    if state.joining:
        return dict(state.facts.get("link_priorities", {})).get(n, 0)
    preferred = state.get("links.preferred")
    if len(state.link_numbers()) < 2 or preferred in (None, Q.NONE):
        return 0
    return Q.PREFERRED_PRIORITY if n == preferred else Q.OTHER_PRIORITY


def _cluster_name(state: Q.State) -> str:
    info = state.join_info
    if state.joining and info is not None and info.cluster_name:
        return info.cluster_name
    return state.get("cluster.name") or ""


def _stanzas(state: Q.State) -> tuple[InterfaceStanza, ...]:
    out = []
    for n in state.link_numbers():
        value = str(state.get(f"link{n}.address"))
        if value.startswith(Q.NIC):
            out.append(InterfaceStanza(value[len(Q.NIC):], state.get(f"link{n}.static")))
    return tuple(out)


def _join(state: Q.State) -> JoinTarget:
    ref = state.get("join.password_ref")
    env = state.get("join.password_env") if ref == "env" else None
    path = state.get("join.password_file") if ref == "file" else None
    if not state.joining:
        return JoinTarget(password_env=env, password_file=path)
    accepted = state.facts.get("fingerprint_accepted")
    return JoinTarget(address=join_host(state), fingerprint=accepted, password_env=env,
                      password_file=path)


def _datacenter(state: Q.State) -> Datacenter:
    if state.joining:
        return Datacenter()
    network = state.get("migration.network") or None
    kind = state.get("migration.type")
    return Datacenter(
        keyboard=state.get("keyboard") or None,
        migration_type=kind if (network or kind == "insecure") else None,
        migration_network=network)


def pending_links(plan: ClusterPlan, node: str) -> frozenset[int]:
    """Links whose address comes from a stanza the apply will write (not configured yet)."""
    me = plan.node(node)
    new = {str(ipaddress.ip_interface(s.address).ip) for s in me.interfaces if s.address}
    return frozenset(n for n, addr in me.addresses.items() if addr in new)


# -- preflight findings back to the questions ------------------------------------------------------

NODEID_LIMIT = NODEID_MAX + 1
_LINK_SUBJECT = re.compile(r"^(?P<a>[^/\s>-][^/\s]*?)(?:->(?P<b>[^/\s]+))?/link(?P<n>\d+)")
JOIN_TARGET = ("join.method", "join.info", "join.address", "join.fingerprint")


def targets_for(finding: Finding, state: Q.State) -> tuple[str, ...]:
    """The question ids (go-back targets) that set the value a finding is about."""
    me = state.detected.hostname
    subject = finding.subject or ""
    found = _LINK_SUBJECT.match(subject)
    out: list[str] = []
    if found and found.group("a") == me:
        n = int(found.group("n"))
        out.append(f"link{n}")
        peer = _peer_index(state, found.group("b"))
        if peer is not None:
            out.append(f"peer{peer}.link{n}")
    elif finding.code.startswith("cluster-name"):
        out.append("cluster.name")
    elif finding.check in ("join-fingerprint", "tcp-services") and state.joining:
        out.append("join")
    elif finding.code == "link-set-mismatch" and state.joining:
        out.append("join")
    return tuple(out)


def _peer_index(state: Q.State, name: str | None) -> int | None:
    for i in state.peer_indexes():
        if state.get(f"peer{i}.name") == name:
            return i
    return None


def reask_set(target: str, state: Q.State) -> set[str]:
    """Question ids re-asked when going back to TARGET (a link re-asks all its questions)."""
    if target == "join":
        return set(JOIN_TARGET)
    if re.fullmatch(r"link\d", target):
        return {f"{target}.address", f"{target}.other", f"{target}.static"}
    return {target}


def describe_target(target: str, state: Q.State) -> str:
    if re.fullmatch(r"link\d", target):
        n = int(target[4:])
        return f"this node's link{n} address (now {state.link_address(n)})"
    if target.startswith("peer"):
        i, link = target[4:].split(".")
        return f"{state.get(f'peer{i}.name')}'s {link} address (now {state.get(target)})"
    if target == "join":
        return f"the cluster node to join (now {join_host(state)})"
    return f"{target} (now {state.get(target)})"


def go_back_question(fails: Iterable[Finding], state: Q.State) -> Q.Question:
    targets: list[str] = []
    for f in fails:
        for t in targets_for(f, state):
            if t not in targets:
                targets.append(t)
    choices = tuple(Q.Choice(t, f"go back: change {describe_target(t, state)}")
                    for t in targets)
    choices += (Q.Choice("again", "run the preflight again (after fixing it outside)"),
                Q.Choice("abort", "stop here: nothing has been changed"))
    return Q.Question("preflight.next", "The preflight found problems. What now?",
                      "Each FAIL above says how to fix it.", Q.SELECT,
                      default=lambda s: choices[0].value, choices=lambda s: choices)


# -- the whole run ---------------------------------------------------------------------------------

def gather(detected: Detected, asker: Asker, services: Services | None,
           save_only: bool = False, facts: Mapping[str, Any] | None = None,
           defaults: Mapping[str, Any] | None = None) -> Talk:
    """Detect-first checks, then every question; returns the conversation."""
    if detected.cluster is not None:
        name = f" {detected.cluster.name}" if detected.cluster.name else ""
        raise UserError(f"this node is already in cluster{name} ({detected.cluster.config})",
                        code="already-clustered",
                        remedy="`pvestrap status` shows it; to rebuild, separate the node "
                               "first (admin guide)")
    talk = Talk(detected, asker, services, facts={**(facts or {}), "save_only": save_only},
                defaults=dict(defaults or {}))
    converse(talk)
    return talk


def preflight_until_clean(talk: Talk) -> tuple[ClusterPlan, Report]:
    """Preflight; on FAIL let the user go back to the answer that caused it, and repeat."""
    assert talk.services is not None
    while True:
        plan = to_plan(talk.state())
        me = talk.detected.hostname
        report = talk.services.preflight(plan, me, pending_links(plan, me))
        talk.asker.say(talk.services.render_report(report))
        fails = [f for f in report.findings if f.severity is Severity.FAIL]
        if not fails:
            return plan, report
        if not talk.asker.interactive:
            raise OperationFailed(f"the preflight found {len(fails)} problem(s): nothing "
                                  "changed", code="preflight-failed",
                                  remedy="fix them, or ignore a check by id in the answer file")
        q = go_back_question(fails, talk.state())
        choice = talk.ask(q)
        talk.answers.pop(q.id, None)
        if choice == "abort":
            raise UserError("stopped after the preflight: nothing changed",
                            code="preflight-aborted")
        if choice != "again":
            state = talk.state()
            talk.keep = dict(talk.answers)
            talk.reask = reask_set(choice, state)
            converse(talk)
            talk.keep, talk.reask = {}, set()


def run(detected: Detected, asker: Asker, services: Services,
        facts: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None) -> Result:
    """The full run: questions, preflight, plan, apply, status, save."""
    talk = gather(detected, asker, services, facts=facts, defaults=defaults)
    plan, report = preflight_until_clean(talk)
    me = detected.hostname

    def confirm(_text: str) -> bool:
        return bool(talk.ask(Q.APPLY))

    applied = services.apply(plan, me, talk.facts.get("password"), report, confirm,
                             lambda line: asker.say(line))
    if not applied:
        asker.say("Not applied: nothing changed.")
        return Result(plan, applied=False, saved=_offer_save(talk, plan))
    status = services.status(plan, me)
    if status is not None:
        asker.say(services.render_report(status))
    return Result(plan, applied=True, saved=_offer_save(talk, with_own_fingerprint(talk, plan)))


def with_own_fingerprint(talk: Talk, plan: ClusterPlan) -> ClusterPlan:
    """After creating a Proxmox VE cluster, pin its fingerprint for the joiners' answer file."""
    if talk.state().joining or not talk.detected.is_pve or talk.services is None:
        return plan
    from dataclasses import replace

    address = plan.node(talk.detected.hostname).addresses[min(plan.link_numbers)]
    try:
        seen = talk.services.fetch_fingerprint(address).upper()
    except OperationFailed:
        return plan
    return replace(plan, join=replace(plan.join, address=address, fingerprint=seen))


def _offer_save(talk: Talk, plan: ClusterPlan) -> str | None:
    path = talk.ask(Q.SAVE)
    if not path:
        return None
    save_answers(talk, plan, path)
    return path


def save_answers(talk: Talk, plan: ClusterPlan, path: str) -> None:
    from pvestrap.answers import dumps

    assert talk.services is not None
    talk.services.save(path, dumps(plan))
    talk.asker.say(f"Saved the answer file for the whole cluster to {path}.")


def answers_from_plan(plan: ClusterPlan, detected: Detected) -> dict[str, Any]:
    """The question answers an answer file gives for this node (unattended mode's source).

    Only values the file really holds are returned; a required question it does not answer
    stays missing, and the unattended asker names its key.
    """
    me = plan.node(detected.hostname)
    joining = plan.role_of(me.name) == Q.JOIN
    out: dict[str, Any] = {"role": Q.JOIN if joining else Q.CREATE}
    if joining:
        out.update({"join.method": "address", "join.address": plan.join_address(),
                    "join.links": ",".join(str(n) for n in plan.link_numbers),
                    "cluster.name": plan.cluster_name, "node.nodeid": str(me.nodeid)})
    else:
        out["cluster.name"] = plan.cluster_name
    stanzas = {str(ipaddress.ip_interface(s.address).ip): s for s in me.interfaces if s.address}
    local = {a.address for a in detected.addresses}
    for i, n in enumerate(plan.link_numbers):
        addr = me.addresses[n]
        if addr in stanzas:
            out[f"link{n}.address"] = Q.NIC + stanzas[addr].name
            out[f"link{n}.static"] = stanzas[addr].address
        elif addr in local:
            out[f"link{n}.address"] = addr
        else:
            out.update({f"link{n}.address": Q.OTHER, f"link{n}.other": addr})
        if i:
            out[f"links.add{n}"] = True
    out[f"links.add{max(plan.link_numbers) + 1}"] = False
    top = max(plan.links, key=lambda link: link.priority)
    if not joining and len(plan.links) > 1:
        out["links.preferred"] = top.number if top.priority else Q.NONE
    others = [n for n in plan.nodes if n.name != me.name]
    if joining:
        others.sort(key=lambda n: n.name != plan.creator.name)
    for i, node in enumerate(others, 1):
        out[f"peer{i}.name"] = node.name
        out.update({f"peer{i}.link{n}": a for n, a in node.addresses.items()})
    out[f"peer{len(others) + 1}.name"] = ""
    out.update(_password_ref(plan.join))
    dc = plan.datacenter
    out.update({"migration.network": dc.migration_network or Q.NONE,
                "migration.type": dc.migration_type or "secure", "keyboard": dc.keyboard or Q.NONE})
    return out


def _password_ref(join: JoinTarget) -> Mapping[str, Any]:
    if join.password_env:
        return {"join.password_ref": "env", "join.password_env": join.password_env}
    if join.password_file:
        return {"join.password_ref": "file", "join.password_file": join.password_file}
    return {"join.password_ref": Q.NONE}


def facts_from_plan(plan: ClusterPlan) -> dict[str, Any]:
    """What an answer file holds beyond the questions' answers: the fingerprint it pins (the
    conversation would have the user confirm it), the link networks and priorities, and the
    nodeids, so the plan built from the answers is the file's plan."""
    out: dict[str, Any] = {
        "link_networks": {link.number: link.network for link in plan.links if link.network},
        "link_priorities": {link.number: link.priority for link in plan.links},
        "nodeids": {node.name: node.nodeid for node in plan.nodes}}
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

    def ask(self, question: Q.Question, state: Q.State, default: Any) -> Any:
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
