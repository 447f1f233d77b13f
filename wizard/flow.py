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
from typing import Any, Callable, Mapping, Protocol

from pvestrap import joininfo
from pvestrap.apply.engine import ApplyDeclined
from pvestrap.errors import OperationFailed, UserError
from pvestrap.findings import Severity
from pvestrap.firstboot.secret import path_for as secret_path
from pvestrap.plan import (MAX_LINK, NODEID_MAX, ClusterPlan, Datacenter, InterfaceStanza,
                           JoinTarget, Link, Node)
from pvestrap.qdevice import QDevice
from pvestrap.report.model import Report
from pvestrap.system import Secret
from pvestrap.wizard import questions
from pvestrap.wizard.detect import Detected, describe
from pvestrap.wizard.goback import go_back_question, reask_set


class Asker(Protocol):
    """Renders one question and returns the answer (raises KeyboardInterrupt on Ctrl-C)."""

    interactive: bool

    def ask(self, question: questions.Question, state: questions.State, default: Any) -> Any: ...

    def say(self, text: str) -> None: ...


Confirm = Callable[[str], bool]
Out = Callable[[str], None]


class Services(Protocol):
    """The work the flow asks for; the live machine (wizard.services) or a test's fake.

    preflight(plan, node): the preflight of the planned machine; a link whose address only
    exists after the apply (a new interfaces stanza) is not probed yet (pvestrap.preflight).
    apply(...): shows the plan (diffs, commands) through `out`, asks `confirm`, applies with a
    progress line per step; raises ApplyDeclined when the user said no (its `done`: what a
    phase confirmed before that no changed, e.g. the network phase; None: nothing).
    """

    def fetch_fingerprint(self, host: str) -> str: ...

    def preflight(self, plan: ClusterPlan, node: str) -> Report: ...

    def apply(self, plan: ClusterPlan, node: str, password: Secret | None, report: Report,
              confirm: Confirm, out: Out) -> None: ...

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

    def state(self) -> questions.State:
        return questions.State(self.detected, dict(self.answers), dict(self.facts))

    def ask(self, q: questions.Question) -> Any:
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
    talk.ask(questions.ROLE)
    if talk.state().joining:
        _join_target(talk)
    talk.ask(questions.CLUSTER_NAME)
    _links(talk)
    _peers(talk)
    talk.ask(questions.NODEID)
    for q in (questions.PASSWORD_REF, questions.PASSWORD_ENV, questions.PASSWORD_FILE,
              questions.MIGRATION_NETWORK):
        talk.ask(q)
    if talk.ask(questions.MIGRATION_TYPE) == "insecure":
        talk.asker.say("  WARNING: insecure migration sends guest memory unencrypted; use it "
                       "only on a network nobody else can reach.")
    talk.ask(questions.KEYBOARD)
    _qdevice(talk)


def _qdevice(talk: Talk) -> None:
    """Asked for an even node count; with an odd one the wizard says why it does not ask."""
    state = talk.state()
    if state.joining:
        return
    n = questions.node_count(state)
    if n % 2 and n > 1:
        talk.asker.say("  " + questions.QDEVICE_ODD_NOTE.format(n=n, votes=n - 1))
    talk.ask(questions.QDEVICE)


def _join_target(talk: Talk) -> None:
    talk.ask(questions.JOIN_METHOD)
    blob = talk.ask(questions.JOIN_INFO)
    if blob:
        talk.facts["join_info"] = joininfo.decode(blob)
        talk.answers.pop("join.links", None)
    else:
        talk.facts.pop("join_info", None)
    talk.ask(questions.JOIN_ADDRESS)
    talk.ask(questions.JOIN_LINKS)
    if talk.detected.is_pve:
        _fingerprint(talk)
        if not talk.facts.get("save_only"):
            again = "password" not in talk.facts or questions.PASSWORD_Q.id in talk.reask
            secret = talk.ask(questions.PASSWORD_Q) if again else None
            if secret is not None:
                talk.facts["password"] = Secret(secret)


def _fingerprint(talk: Talk) -> None:
    """Fetch the node's certificate fingerprint and have the user confirm it (or, unattended,
    compare it with the answer file's)."""
    host = talk.state().join_host
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
        talk.reask.add(questions.FINGERPRINT.id)
    if talk.ask(questions.FINGERPRINT) is False:
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
    while n <= MAX_LINK and talk.ask(questions.more_links(n)):
        _link(talk, n)
        n += 1
    for m in range(n, MAX_LINK + 1):
        _drop(talk, f"link{m}.")
        if m > n:
            _drop(talk, f"links.add{m}")
    talk.ask(questions.PREFERRED)


def _link(talk: Talk, n: int) -> None:
    for q in (questions.link_address(n), questions.link_other(n), questions.link_static(n)):
        talk.ask(q)


def _drop(talk: Talk, prefix: str) -> None:
    for qid in [k for k in talk.answers if k.startswith(prefix)]:
        del talk.answers[qid]


def _peers(talk: Talk) -> None:
    i = 1
    while talk.ask(questions.peer_name(i)):
        numbers = talk.state().link_numbers()
        for n in numbers:
            talk.ask(questions.peer_link(i, n))
            talk.ask(questions.peer_nic(i, n))
        _drop_matching(talk, lambda k, i=i, numbers=numbers: _peer_link_number(k, i)
                       not in (None, *numbers))
        i += 1
    _drop_matching(talk, lambda k: _peer_number(k) is not None and _peer_number(k) > i)


def _peer_link_number(qid: str, i: int) -> int | None:
    """N of peer I's questions about link N (peerI.linkN, peerI.nicN); else None."""
    found = re.match(rf"^peer{i}\.(?:link|nic)(\d+)$", qid)
    return int(found.group(1)) if found else None


def _peer_number(qid: str) -> int | None:
    found = re.match(r"^peer(\d+)\.", qid)
    return int(found.group(1)) if found else None


def _drop_matching(talk: Talk, doomed: Callable[[str], bool]) -> None:
    for qid in [k for k in talk.answers if doomed(k)]:
        del talk.answers[qid]


# -- from answers to a plan ------------------------------------------------------------------------

NODEID_LIMIT = NODEID_MAX + 1


def to_plan(state: questions.State) -> ClusterPlan:
    """The ClusterPlan the answers describe (validated: a wizard bug, not the user, is to blame
    when this raises, since every answer was checked as it was given)."""
    me = state.detected.hostname
    numbers = state.link_numbers()
    links = tuple(Link(n, state.link_network(n), _priority(state, n)) for n in numbers)
    peers = [(state.get(f"peer{i}.name"), {n: state.get(f"peer{i}.link{n}") for n in numbers})
             for i in state.peer_indexes()]
    known = dict(state.facts.get("nodeids", {}))
    stanzas = dict(state.facts.get("interfaces", {}))
    mine = Node(me, int(state.get("node.nodeid") or known.get(me, 1)),
                {n: state.link_address(n) for n in numbers},
                interfaces=_stanzas(state, stanzas.get(me, ())))
    taken = {mine.nodeid} | {known[name] for name, _ in peers if name in known}
    free_ids = (i for i in range(1, NODEID_LIMIT) if i not in taken)
    others = [Node(name, known[name] if name in known else next(free_ids), addrs,
                   interfaces=_peer_stanzas(state, i, addrs, stanzas.get(name, ())))
              for i, (name, addrs) in zip(state.peer_indexes(), peers)]
    nodes = tuple(sorted([mine, *others], key=lambda node: node.nodeid))
    return ClusterPlan(
        cluster_name=_cluster_name(state), nodes=nodes, links=links,
        backend=state.facts.get("backend") or state.detected.backend,
        create_node=others[0].name if state.joining else me,
        join=_join(state), datacenter=_datacenter(state),
        qdevice=QDevice(state.get("qdevice.host")) if state.get("qdevice.host") else None,
    ).check(source="the wizard's answers")


def _priority(state: questions.State, n: int) -> int:
    """The preferred link gets the higher priority; a joiner keeps the cluster's."""
    if state.joining:
        return dict(state.facts.get("link_priorities", {})).get(n, 0)
    preferred = state.get("links.preferred")
    if len(state.link_numbers()) < 2 or preferred in (None, questions.NONE):
        return 0
    return questions.PREFERRED_PRIORITY if n == preferred else questions.OTHER_PRIORITY


def _cluster_name(state: questions.State) -> str:
    info = state.join_info
    if state.joining and info is not None and info.cluster_name:
        return info.cluster_name
    return state.get("cluster.name") or ""


def _stanzas(state: questions.State, planned: tuple[InterfaceStanza, ...]
             ) -> tuple[InterfaceStanza, ...]:
    """New stanzas for the free NICs chosen; an answer file's own stanzas (PLANNED) stay,
    replaced where a NIC got a new address."""
    chosen = {}
    for n in state.link_numbers():
        value = str(state.get(f"link{n}.address"))
        if value.startswith(questions.NIC):
            name = value[len(questions.NIC):]
            chosen[name] = InterfaceStanza(name, state.get(f"link{n}.static"))
    kept = [chosen.pop(s.name, None) or s for s in planned]
    return tuple(kept + list(chosen.values()))


def _peer_stanzas(state: questions.State, i: int, addresses: Mapping[int, str],
                  planned: tuple[InterfaceStanza, ...]) -> tuple[InterfaceStanza, ...]:
    """Peer I's stanzas: for each link on a new network (this node's free NIC), its address
    with that network's prefix length on the NIC the user named for it; an answer file's own
    stanzas (PLANNED) stay, replaced where the NIC was named again."""
    chosen = {}
    for n, address in addresses.items():
        nic = state.get(f"peer{i}.nic{n}") if questions.peer_nic(i, n).when(state) else None
        network = state.link_network(n)
        if nic and network:
            prefix = ipaddress.ip_network(network).prefixlen
            chosen[nic] = InterfaceStanza(nic, f"{address}/{prefix}")
    taken = {ipaddress.ip_interface(s.address).ip for s in chosen.values() if s.address}
    out = []
    for s in planned:
        if s.name in chosen:
            out.append(chosen.pop(s.name))
        elif not (s.address and ipaddress.ip_interface(s.address).ip in taken):
            out.append(s)
    return tuple(out + list(chosen.values()))


def _join(state: questions.State) -> JoinTarget:
    ref = state.get("join.password_ref")
    env = state.get("join.password_env") if ref == "env" else None
    path = state.get("join.password_file") if ref == "file" else None
    if not state.joining:
        return JoinTarget(password_env=env, password_file=path)
    accepted = state.facts.get("fingerprint_accepted")
    return JoinTarget(address=state.join_host, fingerprint=accepted, password_env=env,
                      password_file=path)


def _datacenter(state: questions.State) -> Datacenter:
    if state.joining:
        return Datacenter()
    network = state.get("migration.network") or None
    kind = state.get("migration.type")
    return Datacenter(
        keyboard=state.get("keyboard") or None,
        migration_type=kind if (network or kind == "insecure") else None,
        migration_network=network)


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
    asker.say(describe(detected))
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
        report = talk.services.preflight(plan, me)
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


def declined_text(declined: ApplyDeclined) -> str:
    if declined.done is None:
        return "Not applied: nothing changed."
    return (f"The cluster steps were not applied; {declined.done}. Running the wizard again, or "
            "`pvestrap apply --answers FILE` with the saved answers, continues from there.")


def run(detected: Detected, asker: Asker, services: Services,
        facts: Mapping[str, Any] | None = None,
        defaults: Mapping[str, Any] | None = None) -> Result:
    """The full run: questions, preflight, plan, apply, status, save."""
    talk = gather(detected, asker, services, facts=facts, defaults=defaults)
    plan, report = preflight_until_clean(talk)
    me = detected.hostname

    def confirm(_text: str) -> bool:
        return bool(talk.ask(questions.APPLY))

    try:
        services.apply(plan, me, talk.facts.get("password"), report, confirm,
                       lambda line: asker.say(line))
    except ApplyDeclined as declined:
        asker.say(declined_text(declined))
        return Result(plan, applied=False, saved=_offer_save(talk, plan))
    status = services.status(plan, me)
    if status is not None:
        asker.say(services.render_report(status))
    return Result(plan, applied=True, saved=_offer_save(talk, with_own_fingerprint(talk, plan)))


def with_own_fingerprint(talk: Talk, plan: ClusterPlan) -> ClusterPlan:
    """After creating a Proxmox VE cluster, pin its fingerprint for the joiners' answer file.
    No join.address: each joiner contacts this node at the default target (plan.join_address:
    its name where that resolves there, else its link0 address)."""
    if talk.state().joining or not talk.detected.is_pve or talk.services is None:
        return plan
    from dataclasses import replace

    address = plan.node(talk.detected.hostname).addresses[min(plan.link_numbers)]
    try:
        seen = talk.services.fetch_fingerprint(address).upper()
    except OperationFailed:
        return plan
    return replace(plan, join=replace(plan.join, fingerprint=seen))


def _offer_save(talk: Talk, plan: ClusterPlan) -> str | None:
    path = talk.ask(questions.SAVE)
    if not path:
        return None
    save_answers(talk, plan, path)
    return path


def save_answers(talk: Talk, plan: ClusterPlan, path: str) -> None:
    from pvestrap.answers import dumps

    assert talk.services is not None
    talk.services.save(path, dumps(plan))
    talk.asker.say(f"Saved the answer file for the whole cluster to {path}, and the cluster's "
                   f"first-boot secret beside it ({secret_path(path)}, mode 0600): an "
                   "unattended first boot needs both on every node.")
