"""The wizard's questions: one definition per question serves the prompts AND the answer files.

Each question (wizard.model.Question) names the answer-file keys its answer ends up in, so the
terminal prompts, the unattended mode (answers read from an answer file) and the file the
wizard saves cannot drift apart; tests/test_wizard_questions.py holds every key against the
answer-file format (pvestrap.answer_schema). The conversation itself (the order, the loops over
links and nodes) is in wizard.flow; the questionary front-end in wizard.tui only renders these
values. Secrets have no answer-file key: only a reference to them (password_env /
password_file) can be saved.
"""

from __future__ import annotations

from typing import Callable

from pvestrap.plan import MAX_LINK
from pvestrap.wizard import rules
from pvestrap.wizard.model import (CONFIRM, CREATE, JOIN, NIC, NONE, OTHER, OTHER_PRIORITY,
                                   PASSWORD, PREFERRED_PRIORITY, SELECT, TEXT, Choice, Question,
                                   State)
from pvestrap.wizard.rules import CIDR_RULE, IP_RULE, NAME_RULE

__all__ = ["CIDR_RULE", "CONFIRM", "CREATE", "Choice", "IP_RULE", "JOIN", "NAME_RULE", "NIC",
           "NONE", "OTHER", "OTHER_PRIORITY", "PASSWORD", "PREFERRED_PRIORITY", "Question",
           "SELECT", "State", "TEXT", "all_questions"]

# -- the questions ---------------------------------------------------------------------------------

def _pve_join(state: State) -> bool:
    return state.joining and state.detected.is_pve


def _saves_password_ref(state: State) -> bool:
    return state.detected.is_pve and (state.joining or bool(state.peer_indexes()))


ROLE = Question(
    "role", "Create a new cluster, or join an existing one?",
    "The node that creates the cluster runs `pvecm create` (or starts corosync); every other "
    "node joins it, one at a time.",
    SELECT, keys=("cluster.create_node",), default=lambda s: CREATE,
    choices=lambda s: (Choice(CREATE, "create a new cluster on this node"),
                       Choice(JOIN, "join an existing cluster")))

CLUSTER_NAME = Question(
    "cluster.name", "Cluster name",
    f"It cannot be changed later. Rule: {NAME_RULE}.", TEXT, keys=("cluster.name",),
    validate=lambda v, s: rules.check_name(v),
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
    keys=("join.join_info",), validate=rules.join_info_rule,
    when=lambda s: s.joining and s.get("join.method") == "info")

JOIN_ADDRESS = Question(
    "join.address", "Address of a node already in the cluster",
    "Joining talks to this node: TCP 8006 (Proxmox VE) or 22 (plain corosync).", TEXT,
    keys=("join.address",), validate=rules.join_address_rule,
    when=lambda s: s.joining and s.get("join.method") != "info")

JOIN_LINKS = Question(
    "join.links", "Which links does the cluster have?",
    "The link numbers in the cluster's corosync.conf (totem > interface > linknumber); a "
    "joining node needs exactly one address on each.", TEXT, keys=("links[].number",),
    default=lambda s: "0", validate=rules.links_rule,
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
    keys=("join.password_env",), default=lambda s: "PVE_ROOT_PASSWORD", validate=rules.env_rule,
    when=lambda s: _saves_password_ref(s) and s.get("join.password_ref") == "env")

PASSWORD_FILE = Question(
    "join.password_file", "Path of the password file", "An absolute path, mode 0600.", TEXT,
    keys=("join.password_file",), default=lambda s: "/root/.pve-root-pw", validate=rules.path_rule,
    when=lambda s: _saves_password_ref(s) and s.get("join.password_ref") == "file")


def link_address(n: int) -> Question:
    return Question(
        f"link{n}.address", f"link{n}: this node's address",
        f"corosync link {n} uses UDP port {5405 + n}. A NIC of its own keeps backups and "
        "migrations from delaying the cluster's token; a free NIC gets a static address in "
        "/etc/network/interfaces.", SELECT,
        keys=(f"nodes[].link{n}", "links[].number", "links[].network"),
        default=rules.link_default(n), choices=rules.link_choices(n))


def link_other(n: int) -> Question:
    return Question(
        f"link{n}.other", f"link{n}: address", f"Rule: {IP_RULE}.", TEXT,
        keys=(f"nodes[].link{n}",),
        validate=lambda v, s: rules.link_address_rule(v, s, f"link{n}.address"),
        parse=str.strip, when=lambda s: s.get(f"link{n}.address") == OTHER)


def link_static(n: int) -> Question:
    return Question(
        f"link{n}.static", lambda s: f"link{n}: static address for {rules.chosen_nic(s, n)}",
        lambda s: f"Written as a new `iface {rules.chosen_nic(s, n)} inet static` stanza in "
                  f"/etc/network/interfaces; rule: {CIDR_RULE}.", TEXT,
        keys=("nodes[].interfaces[].address", "nodes[].interfaces[].name", f"nodes[].link{n}"),
        validate=rules.static_rule(n), parse=str.strip,
        when=lambda s: rules.chosen_nic(s, n) is not None)


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
    choices=rules.preferred_choices, when=lambda s: not s.joining and len(s.link_numbers()) > 1)


def peer_name(i: int) -> Question:
    def prompt(state: State) -> str:
        if i == 1 and state.joining:
            return "Host name of the cluster node you join"
        return "Name of another node of the cluster (empty: no more)"

    return Question(
        f"peer{i}.name", prompt,
        "The whole-cluster answer file lists every node, so the others can run `pvestrap "
        f"apply --answers FILE` unattended. Rule: {NAME_RULE}.", TEXT, keys=("nodes[].name",),
        default=lambda s: "", validate=lambda v, s: rules.peer_name_rule(v, s, i), parse=str.strip,
        required=False)


def _peer_link_rule(i: int, n: int) -> Callable[[str, State], str | None]:
    def rule(value: str, state: State) -> str | None:
        problem = rules.link_address_rule(value, state, f"peer{i}.link{n}")
        network = state.link_network(n)
        if problem is None and network and not rules.same_network(network, value):
            return f"{value} is not in link{n}'s network {network}: every node's link{n} " \
                   "address must be on the same network"
        return problem
    return rule


def peer_link(i: int, n: int) -> Question:
    return Question(
        f"peer{i}.link{n}", lambda s: f"{s.get(f'peer{i}.name')}: address on link{n}",
        f"Rule: {IP_RULE}.", TEXT, keys=(f"nodes[].link{n}",),
        default=rules.peer_link_default(i, n), validate=_peer_link_rule(i, n), parse=str.strip)


def peer_nic(i: int, n: int) -> Question:
    """This node's link N is a new network on a free NIC: the other node needs its address
    there too, on a NIC of its own, which only the user knows (never guessed)."""
    return Question(
        f"peer{i}.nic{n}",
        lambda s: f"{s.get(f'peer{i}.name')}: its NIC for {s.get(f'peer{i}.link{n}')} "
                  f"(empty: configured there already)",
        lambda s: f"link{n} is a new network on this node's free {rules.chosen_nic(s, n)}: "
                  f"`pvestrap apply` on {s.get(f'peer{i}.name')} writes a new `iface NIC inet "
                  "static` stanza for this NIC in its /etc/network/interfaces and brings it "
                  f"up. Rule: {rules.NIC_RULE}.", TEXT,
        keys=("nodes[].interfaces[].name", "nodes[].interfaces[].address"),
        default=lambda s: rules.chosen_nic(s, n), required=False, validate=rules.nic_rule,
        parse=str.strip, when=lambda s: not s.joining and rules.chosen_nic(s, n) is not None)


NODEID = Question(
    "node.nodeid", "This node's nodeid",
    "The cluster gives a joining node the lowest free id; name it here so the answer file "
    "matches the cluster.", TEXT, keys=("nodes[].nodeid",), default=rules.nodeid_default,
    validate=rules.nodeid_rule, parse=lambda v: int(v.strip()), when=lambda s: s.joining)

MIGRATION_NETWORK = Question(
    "migration.network", "Migration network",
    "Live migration copies guest memory over this network; a link network keeps it off the "
    "management network (but shares it with corosync).", SELECT,
    keys=("datacenter.migration.network",), default=lambda s: NONE, required=False,
    choices=rules.migration_choices, when=lambda s: not s.joining)

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
    required=False, choices=rules.keyboard_choices, when=lambda s: not s.joining)

def node_count(state: State) -> int:
    return 1 + len(state.peer_indexes())


def _qdevice_rule(value: str, state: State) -> str | None:
    value = value.strip()
    if not value:
        return None
    mine = {state.link_address(n) for n in state.link_numbers()}
    theirs = {state.get(f"peer{i}.link{n}") for i in state.peer_indexes()
              for n in state.link_numbers()}
    if value in mine | theirs:
        return "that is a cluster node's address: the qnetd host must be outside the cluster"
    return rules.check_ip(value)


QDEVICE = Question(
    "qdevice.host", lambda s: f"QDevice for the {node_count(s)} nodes: the qnetd host's IP "
    "address (empty: none)",
    "With an even node count, half the nodes failing leaves the other half without quorum; a "
    "QDevice (corosync-qnetd on a host outside the cluster, TCP 5403 from every node, root SSH "
    "from one) adds the tie-breaking vote. It is set up after the last node joined.", TEXT,
    keys=("qdevice.host",), default=lambda s: "", required=False, validate=_qdevice_rule,
    parse=str.strip, when=lambda s: not s.joining and node_count(s) % 2 == 0)

# What the wizard says instead of asking, with an odd node count (the admin guide's reasoning).
QDEVICE_ODD_NOTE = ("No QDevice: with {n} nodes (an odd count) the admin guide discourages one: "
                    "it would carry {votes} votes, and once it fails no single node may fail.")

APPLY = Question(
    "apply", "Apply this plan now?", "Nothing has been changed so far.", CONFIRM,
    default=lambda s: False, destructive=True)

SAVE = Question(
    "save", "Save the whole-cluster answer file (empty: do not save)",
    "The other nodes can then run `pvestrap apply --answers FILE` unattended. Passwords are "
    "never written.", TEXT, default=lambda s: "/root/pvestrap-answers.toml",
    validate=rules.save_rule, required=False, parse=str.strip)


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
        out += [q for n in range(MAX_LINK + 1) for q in (peer_link(i, n), peer_nic(i, n))]
    out += [NODEID, MIGRATION_NETWORK, MIGRATION_TYPE, KEYBOARD, QDEVICE, APPLY, SAVE]
    return tuple(out)
