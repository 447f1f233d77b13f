"""An in-memory node whose NICs follow its /etc/network/interfaces the way ifupdown2 does, for
the network phase's fast tests: `ifreload -a` puts every static stanza's address on its NIC and
takes the addresses of stanzas that left the file away; `ip -j addr show` reports them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from pvestrap.apply.network_phase import NetworkTimeouts
from pvestrap.plan import ClusterPlan, InterfaceStanza, Link, Node
from pvestrap.recorded import RecordingSystem

INTERFACES = "/etc/network/interfaces"
FILE = ("auto lo\niface lo inet loopback\n\n# management, the installer's\nauto eth0\n"
        "iface eth0 inet static\n\taddress 10.254.0.1/24\n\nsource /etc/network/interfaces.d/*\n")
FAST = NetworkTimeouts(carrier=2.0, address=2.0, restore=2.0, interval=0.5)
STANZA = re.compile(r"^iface (\S+) inet6? static\n(?:\s+.*\n)*?\s+address (\S+)", re.M)


@dataclass
class FakeNet:
    """The NICs of the in-memory node; `ifreload -a` applies the file to them."""

    system: RecordingSystem
    up: dict = field(default_factory=lambda: {"lo": True, "eth0": True, "eth9": False})
    carrier: dict = field(default_factory=lambda: {"lo": True, "eth0": True, "eth9": True})
    addresses: dict = field(default_factory=lambda: {"lo": {"127.0.0.1/8"},
                                                     "eth0": {"10.254.0.1/24"}, "eth9": set()})
    reject: bool = False
    dadfailed: set = field(default_factory=set)
    keep_after_restore: bool = False

    def ip(self, system, argv, stdin):
        out = []
        for name in self.up:
            flags = ["BROADCAST", "MULTICAST"] + (["UP"] if self.up[name] else [])
            if self.up[name]:
                flags.append("LOWER_UP" if self.carrier[name] else "NO-CARRIER")
            info = [{"family": "inet6" if ":" in a else "inet", "local": a.split("/")[0],
                     "prefixlen": int(a.split("/")[1]), "scope": "global",
                     **({"dadfailed": True, "tentative": True} if a in self.dadfailed else {})}
                    for a in sorted(self.addresses[name])]
            out.append({"ifname": name, "flags": flags, "addr_info": info})
        return 0, json.dumps(out), ""

    def ifreload(self, system, argv, stdin):
        text = system.read_text(INTERFACES)
        if self.reject and "iface eth9" in text:
            return 1, "", "error: eth9: cmd 'ip route replace default via 10.9.9.9' failed"
        wanted = {name: addr for name, addr in STANZA.findall(text)}
        for name in self.up:
            if name == "lo":
                continue
            if name in wanted:
                self.addresses[name] = {wanted[name]}
                self.up[name] = True
            elif not (self.keep_after_restore and name == "eth9"):
                self.addresses[name] = set()
                self.up[name] = name == "eth0" and self.up[name]
        return 0, "", ""

    def link_set(self, system, argv, stdin):
        self.up[argv[4]] = argv[5] == "up"
        return 0, "", ""


def node(files=None, tools=("/usr/sbin/ifreload",)):
    system = RecordingSystem({INTERFACES: FILE, **{t: "" for t in tools}, **(files or {})})
    net = FakeNet(system)
    system.on(["ip", "-j", "addr"], net.ip).on(["ifreload", "-a"], net.ifreload)
    system.on(["ip", "link", "set"], net.link_set)
    return system, net


def plan(address="10.254.77.1/24", nic="eth9") -> ClusterPlan:
    me = Node("n1", 1, {0: address.split("/")[0]}, interfaces=(InterfaceStanza(nic, address),))
    return ClusterPlan("lab", (me, Node("n2", 2, {0: "10.254.77.2"})),
                       (Link(0, "10.254.77.0/24"),), backend="corosync")


def no_conflict(nic, address):
    return None
