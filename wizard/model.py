"""The question model's values: a Question, its Choices, and the State it looks at.

A `Question` carries everything the prompts and the answer files both need: the prompt and
help shown to a person, its type, the default computed from the machine and the answers so far,
the choices, the validator (which returns the RULE when it rejects, so the prompt can show it
as the user types), whether it is a secret, when it applies, and the answer-file keys the answer
ends up in (`keys`; the first one is where an unattended run reads it from, and the one named
when it is missing). The questions themselves are in wizard.questions; the rules, choices and
defaults they use in wizard.rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pvestrap import joininfo
from pvestrap.plan import MAX_LINK
from pvestrap.wizard.detect import Detected

TEXT, SELECT, CONFIRM, PASSWORD = "text", "select", "confirm", "password"
OTHER = "other"
NIC = "nic:"
NONE = ""
CREATE, JOIN = "create", "join"
PREFERRED_PRIORITY, OTHER_PRIORITY = 20, 10



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
    def join_host(self) -> str | None:
        """The cluster node a joiner talks to: the pasted information's, else the typed one."""
        info = self.join_info
        return info.address if info is not None else self.get("join.address")

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
                used[normal_address(addr)] = qid
        return used


def _always(_state: State) -> bool:
    return True


@dataclass(frozen=True)
class Question:
    id: str
    prompt: str | Callable[[State], str]
    help: str | Callable[[State], str]
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

    def help_for(self, state: State) -> str:
        return self.help(state) if callable(self.help) else self.help

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


def normal_address(address: str) -> str:
    """One spelling per address (::1 and 0:0::1 are the same), for comparisons."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def parse_links(text: str) -> tuple[int, ...]:
    return tuple(sorted({int(p) for p in text.replace(",", " ").split()}))
