"""The rules, choices and defaults the wizard's questions use.

Validators return None for an acceptable answer and otherwise the RULE the answer broke, so a
terminal can show it as the user types and an unattended run can name it with the key. Choices
and defaults are computed from what the machine told (wizard.detect) and the answers so far.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Callable

from pvestrap import joininfo
from pvestrap.errors import UserError
from pvestrap.plan import (HOST_RE, IFACE_RE, KEYBOARDS, MAX_LINK, NAME_RULE, NODEID_MAX,
                           name_problem)
from pvestrap.wizard.model import NIC, NONE, OTHER, Choice, State, normal_address

IP_RULE = "an IP address such as 10.10.10.1 (not a host name, not loopback)"
CIDR_RULE = "an address with its prefix length, such as 10.10.10.1/24"
NIC_RULE = "an interface name such as eth9 or enp2s0 (up to 15 letters, digits, '_.:-')"

def check_name(value: str, what: str = "cluster name") -> str | None:
    if name_problem(value) is None:
        return None
    return f"not a valid {what}: use {NAME_RULE}, e.g. pve-prod1"


def check_ip(value: str) -> str | None:
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        return f"not an IP address: use {IP_RULE}"
    if addr.is_loopback or addr.is_unspecified or addr.is_multicast:
        return f"{addr} cannot carry a corosync link: use {IP_RULE}"
    return None


def _unused(value: str, state: State, qid: str) -> str | None:
    other = state.addresses_in_use(qid).get(normal_address(value.split("/")[0]))
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


def link_address_rule(value: str, state: State, qid: str) -> str | None:
    return check_ip(value) or _unused(value, state, qid)


def static_rule(n: int) -> Callable[[str, State], str | None]:
    def rule(value: str, state: State) -> str | None:
        try:
            iface = ipaddress.ip_interface(value.strip())
        except ValueError:
            return f"not an address with prefix length: use {CIDR_RULE}"
        if "/" not in value or iface.network.prefixlen == iface.max_prefixlen:
            return f"give the prefix length too: use {CIDR_RULE}"
        return check_ip(str(iface.ip)) or _unused(value, state, f"link{n}.address")
    return rule


def chosen_nic(state: State, n: int) -> str | None:
    """The free NIC this node's link N goes on (a new static stanza), else None."""
    value = state.get(f"link{n}.address")
    return value[len(NIC):] if isinstance(value, str) and value.startswith(NIC) else None


def nic_rule(value: str, _state: State) -> str | None:
    value = value.strip()
    return None if not value or IFACE_RE.match(value) else f"not an interface name: {NIC_RULE}"


def peer_name_rule(value: str, state: State, i: int) -> str | None:
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


def nodeid_rule(value: str, state: State) -> str | None:
    if not value.strip().isdigit() or not 1 <= int(value) <= NODEID_MAX:
        return f"use a whole number 1..{NODEID_MAX}"
    return None


def join_info_rule(value: str, _state: State) -> str | None:
    try:
        joininfo.decode(value)
    except UserError as exc:
        return f"{exc.message}; {exc.remedy}" if exc.remedy else exc.message
    return None


def join_address_rule(value: str, _state: State) -> str | None:
    text = value.strip()
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    return None if HOST_RE.match(text) else "use the cluster node's IP address or host name"


def links_rule(value: str, _state: State) -> str | None:
    parts = value.replace(",", " ").split()
    if not parts or not all(p.isdigit() and int(p) <= MAX_LINK for p in parts):
        return "list the cluster's link numbers 0..7, e.g. 0 or 0,1"
    return None


def env_rule(value: str, _state: State) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return "the NAME of an environment variable (letters, digits, _), never the password"


def path_rule(value: str, _state: State) -> str | None:
    return None if value.startswith("/") else "an absolute path, e.g. /root/.pve-root-pw"


def save_rule(value: str, _state: State) -> str | None:
    return None if not value or value.startswith("/") or not value.startswith("-") else \
        "a file name (empty: do not save)"


# -- choices and defaults computed from the machine ------------------------------------------------

def link_choices(n: int) -> Callable[[State], tuple[Choice, ...]]:
    def choices(state: State) -> tuple[Choice, ...]:
        qid = f"link{n}.address"
        used = state.addresses_in_use(qid)
        taken_nics = {state.get(f"link{m}.address") for m in range(MAX_LINK + 1) if m != n}
        out = []
        for addr in state.detected.addresses:
            if normal_address(addr.address) in used:
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


def link_default(n: int) -> Callable[[State], Any]:
    def default(state: State) -> Any:
        choices = [c.value for c in link_choices(n)(state)]
        peer = _cluster_peer_address(state, n)
        if peer is not None:
            for addr in state.detected.addresses:
                if addr.address in choices and same_network(addr.cidr, peer):
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


def same_network(cidr: str, address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in ipaddress.ip_interface(cidr).network
    except ValueError:
        return False


def preferred_choices(state: State) -> tuple[Choice, ...]:
    out = [Choice(n, f"link{n} ({state.link_address(n)})") for n in state.link_numbers()]
    return tuple(out) + (Choice(NONE, "no preference (all priority 0)"),)


def migration_choices(state: State) -> tuple[Choice, ...]:
    seen, out = set(), [Choice(NONE, "not set: the management network")]
    for n in state.link_numbers():
        net = state.link_network(n)
        if net and net not in seen:
            seen.add(net)
            out.append(Choice(net, f"{net} (link{n})"))
    return tuple(out)


def keyboard_choices(_state: State) -> tuple[Choice, ...]:
    return (Choice(NONE, "not set (the GUI's default)"),) + tuple(
        Choice(k, k) for k in sorted(KEYBOARDS))


def peer_link_default(i: int, n: int) -> Callable[[State], Any]:
    def default(state: State) -> Any:
        if i == 1 and state.joining:
            return _cluster_peer_address(state, n) if n in _peer_links(state) else \
                (state.get("join.address") if n == 0 else None)
        return None
    return default


def _peer_links(state: State) -> dict[int, str]:
    info = state.join_info
    return dict(info.peer_links) if info is not None else {}


def nodeid_default(state: State) -> str:
    return str(len(state.peer_indexes()) + 1)
