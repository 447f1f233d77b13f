"""The question model: one definition per question serves the prompts AND the answer files.

A `Question` carries everything both sides need: the prompt and help shown to a person, its
type, the default computed from the machine and the answers so far, the choices, the validator
(which returns the RULE when it rejects, so the prompt can show it as the user types), whether
it is a secret, when it applies, and the answer-file keys the answer ends up in (`keys`; the
first one is where an unattended run reads it from, and the one named when it is missing).

The conversation itself (the order, the loops over links and nodes) is in wizard.flow; the
questionary front-end in wizard.tui only renders these values. Secrets have no answer-file key:
only a reference to them (password_env / password_file) can be saved.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pvestrap import joininfo
from pvestrap.errors import UserError
from pvestrap.plan import (FINGERPRINT_RE, HOST_RE, KEYBOARDS, MAX_LINK, NAME_MAX, NAME_RE,
                           NODEID_MAX)
from pvestrap.wizard.detect import Detected

TEXT, SELECT, CONFIRM, PASSWORD = "text", "select", "confirm", "password"
OTHER = "other"
NIC = "nic:"
NONE = ""
CREATE, JOIN = "create", "join"
PREFERRED_PRIORITY, OTHER_PRIORITY = 20, 10

NAME_RULE = ("letters, digits and inner hyphens (not first or last), at most "
             f"{NAME_MAX} characters, e.g. pve-prod1")
IP_RULE = "an IP address such as 10.10.10.1 (not a host name, not loopback)"
CIDR_RULE = "an address with its prefix length, such as 10.10.10.1/24"


@dataclass(frozen=True)
class Choice:
    value: Any
    title: str


@dataclass(frozen=True)
class State:
    """What a question can look at: the machine, the answers so far (question id -> value) and
    facts learned on the way (the decoded join information, the fingerprint the node showed)."""

    detected: Detected
    answers: Mapping[str, Any] = field(default_factory=dict)
    facts: Mapping[str, Any] = field(default_factory=dict)

    def get(self, qid: str, default: Any = None) -> Any:
        return self.answers.get(qid, default)

    @property
    def joining(self) -> bool:
        return self.get("role") == JOIN

    @property
    def join_info(self) -> joininfo.JoinInfo | None:
        return self.facts.get("join_info")

    @property
    def cluster_links(self) -> tuple[int, ...] | None:
        """The existing cluster's link numbers when joining (None until known)."""
        info = self.join_info
        if info is not None and info.link_numbers:
            return info.link_numbers
        given = self.get("join.links")
        return parse_links(given) if given else None

    def link_numbers(self) -> tuple[int, ...]:
        """This node's links answered so far, in order."""
        return tuple(n for n in range(MAX_LINK + 1) if f"link{n}.address" in self.answers)

    def link_address(self, n: int) -> str | None:
        value = self.get(f"link{n}.address")
        if value == OTHER:
            return self.get(f"link{n}.other")
        if isinstance(value, str) and value.startswith(NIC):
            cidr = self.get(f"link{n}.static")
            return cidr.split("/")[0] if cidr else None
        return value

    def link_network(self, n: int) -> str | None:
        value = self.get(f"link{n}.address")
        if isinstance(value, str) and value.startswith(NIC):
            cidr = self.get(f"link{n}.static")
            return str(ipaddress.ip_interface(cidr).network) if cidr else None
        found = self.detected.address_info(self.link_address(n) or "")
        if found is not None:
            return found.network
        return dict(self.facts.get("link_networks", {})).get(n)

    def peer_indexes(self) -> tuple[int, ...]:
        out, i = [], 1
        while self.get(f"peer{i}.name"):
            out.append(i)
            i += 1
        return tuple(out)

    def addresses_in_use(self, but: str) -> dict[str, str]:
        """address -> question id, over every address answer except question BUT."""
        used = {}
        for qid in self.answers:
            if qid == but:
                continue
            if qid.endswith(".address") and qid.startswith("link"):
                addr = self.link_address(int(qid[4:qid.index(".")]))
            elif qid.startswith("peer") and ".link" in qid:
                addr = self.answers[qid]
            else:
                continue
            if addr:
                used[_normal(addr)] = qid
        return used


def _always(_state: State) -> bool:
    return True


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str | Callable[[State], str]
    help: str
    type: str
    keys: tuple[str, ...] = ()
    default: Callable[[State], Any] | None = None
    choices: Callable[[State], tuple[Choice, ...]] | None = None
    validate: Callable[[str, State], str | None] | None = None
    parse: Callable[[str], Any] | None = None
    secret: bool = False
    when: Callable[[State], bool] = _always
    required: bool = True
    destructive: bool = False

    @property
    def key(self) -> str | None:
        return self.keys[0] if self.keys else None

    def message(self, state: State) -> str:
        return self.prompt(state) if callable(self.prompt) else self.prompt

    def default_for(self, state: State) -> Any:
        return self.default(state) if self.default else None

    def choices_for(self, state: State) -> tuple[Choice, ...]:
        return self.choices(state) if self.choices else ()

    def check(self, value: Any, state: State) -> str | None:
        """None when VALUE is acceptable, else what the rule is (shown to the user)."""
        if self.type == SELECT:
            allowed = [c.value for c in self.choices_for(state)]
            if value not in allowed:
                return f"choose one of: {', '.join(str(v) or '(none)' for v in allowed)}"
            return None
        if self.type == CONFIRM:
            return None if isinstance(value, bool) else "answer yes or no"
        if not isinstance(value, str):
            if self.parse is None:
                return "expected text"
            value = str(value)  # an answer kept from before, already converted
        if self.validate is not None:
            return self.validate(value, state)
        return None

    def convert(self, value: Any) -> Any:
        return self.parse(value) if self.parse and isinstance(value, str) else value


# -- validators: each returns the rule when it rejects ---------------------------------------------

def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def check_name(value: str, what: str = "cluster name") -> str | None:
    if NAME_RE.match(value) and len(value) <= NAME_MAX:
        return None
    return f"not a valid {what}: use {NAME_RULE}"


def check_ip(value: str) -> str | None:
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return f"not an IP address: use {IP_RULE}"
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return f"{addr} cannot carry a corosync link: use {IP_RULE}"
    return None


def _unused(value: str, state: State, qid: str) -> str | None:
    other = state.addresses_in_use(qid).get(_normal(value.split("/")[0]))
    if other:
        return f"{value.split('/')[0]} is already given for {describe_question(other)}: every " \
               "address may be used once"
    return None


def describe_question(qid: str) -> str:
    """A short human name for a question id (used in rejections and in go-back offers)."""
    if qid.startswith("link") and "." in qid:
        return f"this node's {qid.split('.')[0]}"
    if qid.startswith("peer") and ".link" in qid:
        peer, link = qid.split(".")
        return f"node #{peer[4:]}'s {link}"
    return qid


def _link_address_rule(value: str, state: State, qid: str) -> str | None:
    return check_ip(value) or _unused(value, state, qid)


def _static_rule(n: int) -> Callable[[str, State], str | None]:
    def rule(value: str, state: State) -> str | None:
        try:
            iface = ipaddress.ip_interface(value.strip())
        except ValueError:
            return f"not an address with prefix length: use {CIDR_RULE}"
        if "/" not in value or iface.network.prefixlen == iface.max_prefixlen:
            return f"give the prefix length too: use {CIDR_RULE}"
        return check_ip(str(iface.ip)) or _unused(value, state, f"link{n}.address")
    return rule


def _peer_name_rule(value: str, state: State, i: int) -> str | None:
    if not value:
        return None if not (i == 1 and state.joining) else \
            "name the cluster node you join (its host name): the answer file needs it"
    problem = check_name(value, "node name")
    if problem:
        return problem
    taken = {state.detected.hostname} | {state.get(f"peer{j}.name") for j in range(1, i)}
    if value in taken:
        return f"{value} is already a node of this plan: every node name must be unique"
    return None


def _nodeid_rule(value: str, state: State) -> str | None:
    if not value.strip().isdigit() or not 1 <= int(value) <= NODEID_MAX:
        return f"use a whole number 1..{NODEID_MAX}"
    return None


def _join_info_rule(value: str, _state: State) -> str | None:
    try:
        joininfo.decode(value)
    except UserError as exc:
        return f"{exc.message}; {exc.remedy}" if exc.remedy else exc.message
    return None


def _join_address_rule(value: str, _state: State) -> str | None:
    text = value.strip()
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    return None if HOST_RE.match(text) else "use the cluster node's IP address or host name"


def parse_links(text: str) -> tuple[int, ...]:
    numbers = sorted({int(p) for p in text.replace(",", " ").split()})
    return tuple(numbers)


def _links_rule(value: str, _state: State) -> str | None:
    parts = value.replace(",", " ").split()
    if not parts or not all(p.isdigit() and int(p) <= MAX_LINK for p in parts):
        return "list the cluster's link numbers 0..7, e.g. 0 or 0,1"
    return None


def _env_rule(value: str, _state: State) -> str | None:
    import re

    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "the NAME of an environment variable (letters, digits, _), never the password"


def _path_rule(value: str, _state: State) -> str | None:
    return None if value.startswith("/") else "an absolute path, e.g. /root/.pve-root-pw"


def _save_rule(value: str, _state: State) -> str | None:
    return None if not value or value.startswith("/") or not value.startswith("-") else \
        "a file name (empty: do not save)"


# -- choices and defaults computed from the machine ------------------------------------------------

def _role_default(state: State) -> str:
    return CREATE


def _link_choices(n: int) -> Callable[[State], tuple[Choice, ...]]:
    def choices(state: State) -> tuple[Choice, ...]:
        qid = f"link{n}.address"
        used = state.addresses_in_use(qid)
        taken_nics = {state.get(f"link{m}.address") for m in range(MAX_LINK + 1) if m != n}
        out = []
        for addr in state.detected.addresses:
            if _normal(addr.address) in used:
                continue
            note = " (management network)" if addr.management else ""
            out.append(Choice(addr.address, f"{addr.cidr} on {addr.interface}{note}"))
        for nic in state.detected.free_nics:
            if NIC + nic.name in taken_nics:
                continue
            out.append(Choice(NIC + nic.name, f"{nic.name}: free NIC, give it a static address "
                                              "(a dedicated cluster network)"))
        out.append(Choice(OTHER, "type another address"))
        return tuple(out)
    return choices


def _link_default(n: int) -> Callable[[State], Any]:
    def default(state: State) -> Any:
        choices = [c.value for c in _link_choices(n)(state)]
        peer = _cluster_peer_address(state, n)
        if peer is not None:
            for addr in state.detected.addresses:
                if addr.address in choices and _same_network(addr.cidr, peer):
                    return addr.address
        host = state.detected.host_address
        if n == 0 and host in choices:
            return host
        return choices[0]
    return default


def _cluster_peer_address(state: State, n: int) -> str | None:
    info = state.join_info
    if info is not None and n in info.peer_links:
        return info.peer_links[n]
    return state.get(f"peer1.link{n}")


def _same_network(cidr: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_interface(cidr).network
    except ValueError:
        return False


def _preferred_choices(state: State) -> tuple[Choice, ...]:
    out = [Choice(n, f"link{n} ({state.link_address(n)})") for n in state.link_numbers()]
    return tuple(out) + (Choice(NONE, "no preference (all priority 0)"),)


def _migration_choices(state: State) -> tuple[Choice, ...]:
    seen, out = set(), [Choice(NONE, "not set: the management network")]
    for n in state.link_numbers():
        net = state.link_network(n)
        if net and net not in seen:
            seen.add(net)
            out.append(Choice(net, f"{net} (link{n})"))
    return tuple(out)


def _keyboard_choices(_state: State) -> tuple[Choice, ...]:
    return (Choice(NONE, "not set (the GUI's default)"),) + tuple(
        Choice(k, k) for k in sorted(KEYBOARDS))


def _peer_link_default(i: int, n: int) -> Callable[[State], Any]:
    def default(state: State) -> Any:
        if i == 1 and state.joining:
            return _cluster_peer_address(state, n) if n in _peer_links(state) else \
                (state.get("join.address") if n == 0 else None)
        return None
    return default


def _peer_links(state: State) -> dict[int, str]:
    info = state.join_info
    return dict(info.peer_links) if info is not None else {}


def _nodeid_default(state: State) -> str:
    return str(len(state.peer_indexes()) + 1)


# -- the questions ---------------------------------------------------------------------------------

def _pve_join(state: State) -> bool:
    return state.joining and state.detected.is_pve


def _saves_password_ref(state: State) -> bool:
    return state.detected.is_pve and (state.joining or bool(state.peer_indexes()))


ROLE = Question(
    "role", "Create a new cluster, or join an existing one?",
    "The node that creates the cluster runs `pvecm create` (or starts corosync); every other "
    "node joins it, one at a time.",
    SELECT, keys=("cluster.create_node",), default=_role_default,
    choices=lambda s: (Choice(CREATE, "create a new cluster on this node"),
                       Choice(JOIN, "join an existing cluster")))

CLUSTER_NAME = Question(
    "cluster.name", "Cluster name",
    f"It cannot be changed later. Rule: {NAME_RULE}.", TEXT, keys=("cluster.name",),
    validate=lambda v, s: check_name(v),
    when=lambda s: not s.joining or s.join_info is None or not s.join_info.cluster_name)

JOIN_METHOD = Question(
    "join.method", "How do you want to name the cluster?",
    "On a cluster node: Datacenter > Cluster > Join Information > Copy Information.",
    SELECT, default=lambda s: "info", required=False, when=lambda s: s.joining,
    choices=lambda s: (Choice("info", "paste the Join Information (address, fingerprint, links)"),
                       Choice("address", "type the cluster node's address")))

JOIN_INFO = Question(
    "join.info", "Paste the Join Information",
    "The base64 text from the cluster node's GUI; line breaks are ignored.", TEXT,
    keys=("join.join_info",), validate=_join_info_rule,
    when=lambda s: s.joining and s.get("join.method") == "info")

JOIN_ADDRESS = Question(
    "join.address", "Address of a node already in the cluster",
    "Joining talks to this node: TCP 8006 (Proxmox VE) or 22 (plain corosync).", TEXT,
    keys=("join.address",), validate=_join_address_rule,
    when=lambda s: s.joining and s.get("join.method") != "info")

JOIN_LINKS = Question(
    "join.links", "Which links does the cluster have?",
    "The link numbers in the cluster's corosync.conf (totem > interface > linknumber); a "
    "joining node needs exactly one address on each.", TEXT, keys=("links[].number",),
    default=lambda s: "0", validate=_links_rule,
    when=lambda s: s.joining and s.join_info is None)

FINGERPRINT = Question(
    "join.fingerprint",
    lambda s: (f"{s.facts.get('fingerprint_host')} presents the certificate fingerprint\n  "
               f"{s.facts.get('fingerprint_seen')}\n  "
               + ("It matches the Join Information. " if s.facts.get("fingerprint_matches")
                  else "") + "Trust it?"),
    "Compare it with the cluster node's (Datacenter > Cluster, or `pvenode cert info`): "
    "a different one means you are not talking to that node.", CONFIRM,
    keys=("join.fingerprint",), default=lambda s: bool(s.facts.get("fingerprint_matches")),
    when=_pve_join)

PASSWORD_Q = Question(
    "join.password", "Root password of the cluster node",
    "Used once for `pvecm add`; never stored, logged or written to the answer file.", PASSWORD,
    keys=("join.password_env", "join.password_file"), secret=True, when=_pve_join)

PASSWORD_REF = Question(
    "join.password_ref", "For unattended joins, where may the answer file say the password is?",
    "Only a reference is saved: the name of an environment variable or the path of a file "
    "(mode 0600) that holds it on the joining node. Never the password.", SELECT,
    default=lambda s: NONE, required=False, when=_saves_password_ref,
    choices=lambda s: (Choice(NONE, "nowhere: save no reference"),
                       Choice("env", "an environment variable"),
                       Choice("file", "a file on the node")))

PASSWORD_ENV = Question(
    "join.password_env", "Name of the environment variable", "e.g. PVE_ROOT_PASSWORD", TEXT,
    keys=("join.password_env",), default=lambda s: "PVE_ROOT_PASSWORD", validate=_env_rule,
    when=lambda s: _saves_password_ref(s) and s.get("join.password_ref") == "env")

PASSWORD_FILE = Question(
    "join.password_file", "Path of the password file", "An absolute path, mode 0600.", TEXT,
    keys=("join.password_file",), default=lambda s: "/root/.pve-root-pw", validate=_path_rule,
    when=lambda s: _saves_password_ref(s) and s.get("join.password_ref") == "file")


def link_address(n: int) -> Question:
    return Question(
        f"link{n}.address", f"link{n}: this node's address",
        f"corosync link {n} uses UDP port {5405 + n}. A NIC of its own keeps backups and "
        "migrations from delaying the cluster's token; a free NIC gets a static address in "
        "/etc/network/interfaces.", SELECT,
        keys=(f"nodes[].link{n}", "links[].number", "links[].network"),
        default=_link_default(n), choices=_link_choices(n))


def link_other(n: int) -> Question:
    return Question(
        f"link{n}.other", f"link{n}: address", f"Rule: {IP_RULE}.", TEXT,
        keys=(f"nodes[].link{n}",),
        validate=lambda v, s: _link_address_rule(v, s, f"link{n}.address"),
        parse=str.strip, when=lambda s: s.get(f"link{n}.address") == OTHER)


def link_static(n: int) -> Question:
    def nic(state: State) -> str:
        return str(state.get(f"link{n}.address", ""))[len(NIC):]

    return Question(
        f"link{n}.static", lambda s: f"link{n}: static address for {nic(s)}",
        f"Written as a new `iface {{nic}} inet static` stanza; rule: {CIDR_RULE}.", TEXT,
        keys=("nodes[].interfaces[].address", "nodes[].interfaces[].name", f"nodes[].link{n}"),
        validate=_static_rule(n), parse=str.strip,
        when=lambda s: str(s.get(f"link{n}.address", "")).startswith(NIC))


def more_links(n: int) -> Question:
    return Question(
        f"links.add{n}", f"Add link{n} for redundancy?",
        "With two links on separate switches the cluster survives one network failing.",
        CONFIRM, default=lambda s: False, required=False,
        when=lambda s: not s.joining and n <= MAX_LINK)


PREFERRED = Question(
    "links.preferred", "Preferred link",
    "knet sends over the up link with the highest priority (passive mode); the others take "
    "over when it fails.", SELECT, keys=("links[].priority",),
    default=lambda s: s.link_numbers()[0] if s.link_numbers() else None, required=False,
    choices=_preferred_choices, when=lambda s: not s.joining and len(s.link_numbers()) > 1)


def peer_name(i: int) -> Question:
    def prompt(state: State) -> str:
        if i == 1 and state.joining:
            return "Host name of the cluster node you join"
        return "Name of another node of the cluster (empty: no more)"

    return Question(
        f"peer{i}.name", prompt,
        "The whole-cluster answer file lists every node, so the others can run `pvestrap "
        f"apply --answers FILE` unattended. Rule: {NAME_RULE}.", TEXT, keys=("nodes[].name",),
        default=lambda s: "", validate=lambda v, s: _peer_name_rule(v, s, i), parse=str.strip,
        required=False)


def _peer_link_rule(i: int, n: int) -> Callable[[str, State], str | None]:
    def rule(value: str, state: State) -> str | None:
        problem = _link_address_rule(value, state, f"peer{i}.link{n}")
        network = state.link_network(n)
        if problem is None and network and not _same_network(network, value):
            return f"{value} is not in link{n}'s network {network}: every node's link{n} " \
                   "address must be on the same network"
        return problem
    return rule


def peer_link(i: int, n: int) -> Question:
    return Question(
        f"peer{i}.link{n}", lambda s: f"{s.get(f'peer{i}.name')}: address on link{n}",
        f"Rule: {IP_RULE}.", TEXT, keys=(f"nodes[].link{n}",),
        default=_peer_link_default(i, n), validate=_peer_link_rule(i, n), parse=str.strip)


NODEID = Question(
    "node.nodeid", "This node's nodeid",
    "The cluster gives a joining node the lowest free id; name it here so the answer file "
    "matches the cluster.", TEXT, keys=("nodes[].nodeid",), default=_nodeid_default,
    validate=_nodeid_rule, parse=lambda v: int(v.strip()), when=lambda s: s.joining)

MIGRATION_NETWORK = Question(
    "migration.network", "Migration network",
    "Live migration copies guest memory over this network; a link network keeps it off the "
    "management network (but shares it with corosync).", SELECT,
    keys=("datacenter.migration.network",), default=lambda s: NONE, required=False,
    choices=_migration_choices, when=lambda s: not s.joining)

MIGRATION_TYPE = Question(
    "migration.type", "Migration transport",
    "secure tunnels migrations through SSH; insecure sends guest memory unencrypted (faster).",
    SELECT, keys=("datacenter.migration.type",), default=lambda s: "secure", required=False,
    choices=lambda s: (Choice("secure", "secure (encrypted, the default)"),
                       Choice("insecure", "insecure: UNENCRYPTED guest memory; only on a "
                                          "trusted, isolated network")),
    when=lambda s: not s.joining)

KEYBOARD = Question(
    "keyboard", "Keyboard layout for the GUI's consoles",
    "Written to datacenter.cfg; the default is this machine's console layout.", SELECT,
    keys=("datacenter.keyboard",), default=lambda s: s.detected.keyboard or NONE,
    required=False, choices=_keyboard_choices, when=lambda s: not s.joining)

APPLY = Question(
    "apply", "Apply this plan now?", "Nothing has been changed so far.", CONFIRM,
    default=lambda s: False, destructive=True)

SAVE = Question(
    "save", "Save the whole-cluster answer file (empty: do not save)",
    "The other nodes can then run `pvestrap apply --answers FILE` unattended. Passwords are "
    "never written.", TEXT, default=lambda s: "/root/pvestrap-answers.toml",
    validate=_save_rule, required=False, parse=str.strip)


def fingerprint_valid(text: str) -> bool:
    return bool(FINGERPRINT_RE.match(text))


def all_questions(peers: int = 2) -> tuple[Question, ...]:
    """Every question the wizard can ask (links 0..7, PEERS other nodes): for the model's
    consistency tests and the documentation."""
    out = [ROLE, CLUSTER_NAME, JOIN_METHOD, JOIN_INFO, JOIN_ADDRESS, JOIN_LINKS, FINGERPRINT,
           PASSWORD_Q, PASSWORD_REF, PASSWORD_ENV, PASSWORD_FILE]
    for n in range(MAX_LINK + 1):
        out += [link_address(n), link_other(n), link_static(n)]
        if n:
            out.append(more_links(n))
    out.append(PREFERRED)
    for i in range(1, peers + 1):
        out.append(peer_name(i))
        out += [peer_link(i, n) for n in range(MAX_LINK + 1)]
    out += [NODEID, MIGRATION_NETWORK, MIGRATION_TYPE, KEYBOARD, APPLY, SAVE]
    return tuple(out)
