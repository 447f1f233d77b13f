"""Impairments: the flags `--delay n2:eth0=3ms` ... parsed once into plain values.

A lab's impairments are one tuple of `Impairment` items, each keyed by (kind, node, target), so a
later flag for the same key replaces the earlier one and a zero value removes it. Everything a
lab does to realise them (nftables rules, the forwarder's ports, /etc/hosts, MTUs, libfaketime)
is derived from that tuple, which is what the state file stores.

Where each one acts:
- delay/jitter: the frames leaving and entering that NIC, held by the user-space forwarder (so
  1 ms on n2:eth0 adds 2 ms to a ping round trip through it);
- loss: packets the node sends on that NIC (nftables `numgen random`, one direction, so the
  loss a ping sees is the configured one);
- drop/reject: packets arriving at the node for that port (filtered vs. closed);
- clock: programs started in the node run under libfaketime with that offset;
- hosts: the node's own name in its /etc/hosts; mtu: the NIC's MTU inside the node;
- carrier: off sets the NIC's switch-side port down, so the node sees its NIC without carrier
  (NO-CARRIER, /sys/class/net/IF/carrier 0), as with a pulled cable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from pvestrap.errors import UserError
from pvestrap.lab import names

KINDS = ("delay", "jitter", "loss", "drop", "reject", "clock", "hosts", "mtu", "carrier")
NIC_KINDS = ("delay", "jitter", "loss", "mtu", "carrier")
CARRIER = ("off", "on")
PORT_KINDS = ("drop", "reject")
HOSTS_MODES = ("loopback", "missing", "normal")
NFT_TABLE = "pvestrap_lab"
_DURATION = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>us|ms|s)$")
_OFFSET = re.compile(r"^(?P<sign>[+-]?)(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>ms|s|m|h)$")
_PERCENT = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]{1,2})?)%$")
_PORT = re.compile(r"^(?P<proto>udp|tcp)/(?P<port>[0-9]{1,5})$")
_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_EXAMPLES = {
    "delay": "n2:eth0=3ms", "jitter": "n2:eth0=0.5ms", "loss": "n2:eth0=5%",
    "drop": "n2:udp/5405", "reject": "n2:udp/5405", "clock": "n2=+2s",
    "hosts": "n2=loopback", "mtu": "n2:eth0=1200", "carrier": "n2:eth9=off",
}


@dataclass(frozen=True)
class Impairment:
    """One impairment. `target` is the NIC (`eth0`), the port (`udp/5405`) or "" (clock, hosts);
    `value` is in ms (delay, jitter), percent (loss), seconds (clock), bytes (mtu), a mode (hosts)
    or the action itself (drop, reject)."""

    kind: str
    node: int
    target: str
    value: float | int | str

    @property
    def key(self) -> tuple[str, int, str]:
        return ("port" if self.kind in PORT_KINDS else self.kind, self.node, self.target)

    @property
    def is_noop(self) -> bool:
        """A zero delay, loss or clock, or hosts=normal, means "no impairment"."""
        if self.kind in ("delay", "jitter", "loss", "clock"):
            return float(self.value) == 0.0
        return (self.kind, self.value) in (("hosts", "normal"), ("carrier", "on"))

    def flag(self, prefix: str) -> str:
        """The flag that sets this impairment (for `status` and error messages)."""
        node = names.Layout(prefix).node_name(self.node)
        if self.kind in PORT_KINDS:
            return f"--{self.kind} {node}:{self.target}"
        if self.kind in ("delay", "jitter"):
            return f"--{self.kind} {node}:{self.target}={_num(self.value)}ms"
        if self.kind == "loss":
            return f"--loss {node}:{self.target}={_num(self.value)}%"
        if self.kind in ("mtu", "carrier"):
            return f"--{self.kind} {node}:{self.target}={self.value}"
        if self.kind == "clock":
            return f"--clock {node}={float(self.value):+g}s"
        return f"--hosts {node}={self.value}"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "node": self.node, "target": self.target, "value": self.value}


def _num(value: float | int | str) -> str:
    return f"{float(value):g}"


def _bad(kind: str, text: str, why: str) -> UserError:
    return UserError(f"--{kind} {text!r}: {why}", code="lab-flag-invalid",
                     remedy=f"write it as --{kind} {_EXAMPLES[kind]}")


def parse(kind: str, text: str, prefix: str, nodes: int, links: int,
          qnetd: bool = False) -> Impairment:
    """One flag value -> an Impairment, or a UserError naming the flag and showing the syntax."""
    if kind not in KINDS:
        raise UserError(f"unknown impairment {kind!r}", code="lab-flag-invalid",
                        remedy=f"use one of {', '.join(KINDS)}")
    if not isinstance(text, str):
        raise _bad(kind, str(text), "is not text")
    if kind in PORT_KINDS:
        node_text, sep, target = text.partition(":")
        match = _PORT.match(target)
        if not sep or not match or not 1 <= int(match.group("port")) <= 65535:
            raise _bad(kind, text, "expected NODE:udp/PORT or NODE:tcp/PORT (port 1..65535)")
        index = names.node_index(node_text, prefix, nodes, f"--{kind}", qnetd)
        return Impairment(kind, index, f"{match.group('proto')}/{int(match.group('port'))}", kind)
    head, sep, value = text.partition("=")
    if not sep:
        raise _bad(kind, text, "expected NODE:IF=VALUE" if kind in NIC_KINDS else
                   "expected NODE=VALUE")
    if kind in NIC_KINDS:
        node_text, colon, iface = head.partition(":")
        if not colon:
            raise _bad(kind, text, "the NIC is missing (NODE:IF=VALUE)")
        allowed = [names.nic(link) for link in range(links)]
        if kind in ("mtu", "carrier"):
            allowed.append(names.SPARE_NIC)
        if iface not in allowed:
            raise _bad(kind, text, f"{iface!r} is not a lab NIC (this lab has "
                                   f"{', '.join(allowed)})")
        index = names.node_index(node_text, prefix, nodes, f"--{kind}", qnetd)
        return Impairment(kind, index, iface, _nic_value(kind, text, value))
    index = names.node_index(head, prefix, nodes, f"--{kind}", qnetd)
    if kind == "clock":
        match = _OFFSET.match(value)
        if not match:
            raise _bad(kind, text, "expected an offset like +2s, -1.5s or +500ms")
        seconds = float(match.group("num")) * _SECONDS[match.group("unit")]
        seconds = -seconds if match.group("sign") == "-" else seconds
        if abs(seconds) > 10 * 365 * 86400:
            raise _bad(kind, text, "the offset is more than ten years")
        return Impairment(kind, index, "", seconds)
    if value not in HOSTS_MODES:
        raise _bad(kind, text, f"expected one of {', '.join(HOSTS_MODES)}")
    return Impairment(kind, index, "", value)


def _nic_value(kind: str, text: str, value: str) -> float | int | str:
    if kind in ("delay", "jitter"):
        match = _DURATION.match(value)
        if not match:
            raise _bad(kind, text, "expected a duration with a unit, like 3ms, 0.5ms or 250us")
        ms = float(match.group("num")) * _MS[match.group("unit")]
        if ms > 10_000:
            raise _bad(kind, text, "more than 10 s is not a network delay")
        return ms
    if kind == "loss":
        match = _PERCENT.match(value)
        if not match or float(match.group("num")) > 100:
            raise _bad(kind, text, "expected a percentage 0..100 like 5% or 0.5%")
        return float(match.group("num"))
    if kind == "carrier":
        if value not in CARRIER:
            raise _bad(kind, text, "expected off (no carrier) or on")
        return value
    if not value.isdigit() or not 68 <= int(value) <= 65535:
        raise _bad(kind, text, "expected an MTU in bytes, 68..65535 (knet needs >= 576)")
    return int(value)


def parse_flags(flags: Mapping[str, str | Iterable[str] | None], prefix: str, nodes: int,
                links: int, qnetd: bool = False) -> tuple[Impairment, ...]:
    """{"delay": ["n2:eth0=1ms"], "loss": "n3:eth1=5%", ...} -> impairments; every problem is
    found before anything is changed (the first one is raised)."""
    out = []
    for kind, values in flags.items():
        if values is None:
            continue
        for text in [values] if isinstance(values, str) else values:
            out.append(parse(kind, text, prefix, nodes, links, qnetd))
    return tuple(out)


def merge(current: Iterable[Impairment], new: Iterable[Impairment]) -> tuple[Impairment, ...]:
    """Later items replace earlier ones with the same key; no-op values remove the key."""
    table: dict[tuple[str, int, str], Impairment] = {}
    for item in (*current, *new):
        table.pop(item.key, None)
        if not item.is_noop:
            table[item.key] = item
    return tuple(sorted(table.values(), key=lambda i: (i.node, KINDS.index(i.kind), i.target)))


def from_json(items: Iterable[Mapping]) -> tuple[Impairment, ...]:
    return tuple(Impairment(i["kind"], int(i["node"]), i["target"], i["value"]) for i in items)


def of_node(items: Iterable[Impairment], node: int, kind: str) -> list[Impairment]:
    return [i for i in items if i.node == node and i.kind == kind]


def clock_offset(items: Iterable[Impairment], node: int) -> float:
    found = of_node(items, node, "clock")
    return float(found[0].value) if found else 0.0


def hosts_mode(items: Iterable[Impairment], node: int) -> str:
    found = of_node(items, node, "hosts")
    return str(found[0].value) if found else "normal"


def relayed(items: Iterable[Impairment]) -> dict[tuple[int, str], tuple[float, float]]:
    """(node, NIC) -> (delay ms, jitter ms) for every NIC whose frames go through the forwarder."""
    out: dict[tuple[int, str], tuple[float, float]] = {}
    for item in items:
        if item.kind in ("delay", "jitter"):
            delay, jitter = out.get((item.node, item.target), (0.0, 0.0))
            if item.kind == "delay":
                delay = float(item.value)
            else:
                jitter = float(item.value)
            out[(item.node, item.target)] = (delay, jitter)
    return out


def nft_ruleset(items: Iterable[Impairment], node: int) -> str:
    """The node's lab table (loss, drop, reject), replaced as a whole; empty rules delete it."""
    items = list(items)
    inbound = []
    for item in of_node(items, node, "drop") + of_node(items, node, "reject"):
        proto, port = item.target.split("/")
        verdict = "drop" if item.kind == "drop" else (
            "reject with tcp reset" if proto == "tcp" else "reject")
        inbound.append(f"{proto} dport {port} {verdict}")
    outbound = [f'oifname "{i.target}" numgen random mod 10000 < {round(float(i.value) * 100)} '
                "drop" for i in of_node(items, node, "loss")]
    text = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
    if not inbound and not outbound:
        return text
    text += f"table inet {NFT_TABLE} {{\n"
    for chain, rules in (("input", inbound), ("output", outbound)):
        if not rules:
            continue
        text += (f"  chain {chain} {{\n    type filter hook {chain} priority filter; "
                 "policy accept;\n")
        text += "".join(f"    {rule}\n" for rule in rules)
        text += "  }\n"
    return text + "}\n"
