"""CorosyncConf: domain edits (add a node or a link, move addresses, bump config_version) over
the corosync.conf tree of pvestrap.corosync.tree, and the one writer of a new cluster's file
(CorosyncConf.create, which render.render_corosync_conf returns as text).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Mapping

from pvestrap.corosync.derive import derive_plan
from pvestrap.corosync.tree import (FORBIDDEN, ConfNode, Item, Node_, Section, addr_number, as_int,
                                    canonical, canonical_tree, format_tree, interface_number,
                                    node_addresses, parse, read_node)
from pvestrap.errors import UserError, ValidationFailed
from pvestrap.findings import Finding, fail
from pvestrap.plan import (MAX_LINK, NAME_RULE, NODEID_MAX, ClusterPlan, ip_or_none,
                           link_address_problem,
                           name_problem)


# -- the facade ------------------------------------------------------------------------------------

def refuse_forbidden(*values: object) -> None:
    """`{ } \\n \\r` in a value would open, close or end sections: config injection."""
    for value in values:
        bad = sorted({c for c in str(value) if c in FORBIDDEN})
        if bad:
            raise UserError(f"value {str(value)!r} contains {', '.join(map(repr, bad))}",
                            code="conf-forbidden-character",
                            remedy="remove braces and line breaks from the value")


@dataclass(frozen=True)
class CorosyncConf:
    """Domain operations over the tree. Immutable: every operation returns a new CorosyncConf.

    An operation checks everything it is given and raises (UserError, or ValidationFailed
    carrying every problem) before anything changes, so a refused edit never reaches a file.
    """

    tree: Section

    @classmethod
    def parse(cls, text: str, source: str = "corosync.conf") -> "CorosyncConf":
        return cls(parse(text, source))

    @classmethod
    def create(cls, plan: ClusterPlan, config_version: int = 1) -> "CorosyncConf":
        """The whole cluster's file in pvecm's keys, values and layout (pve-cluster Corosync.pm
        create_conf, then the nodes `pvecm add` adds; write_conf's order: nodes sorted by name as
        strings, pve10 before pve2). The plan is validated first, so a config with e.g. link 8 or
        a duplicate nodeid is refused before any text exists. pvecm itself would be at
        config_version 1 + one per join."""
        plan.check()
        nodes = tuple(Section("node", _node_items(n.name, n.nodeid, n.votes, n.addresses))
                      for n in plan.nodes)
        totem: list[Item | Section] = [Item("cluster_name", plan.cluster_name),
                 Item("config_version", str(config_version)),
                 *(_interface(link.number, link.priority) for link in plan.links),
                 Item("ip_version", "ipv4-6"), Item("link_mode", "passive"),
                 Item("secauth", "on"), Item("version", "2")]
        if plan.token_coefficient:
            totem.append(Item("token_coefficient", str(plan.token_coefficient)))
        return cls(canonical_tree(Section("", (
            Section("logging", (Item("debug", "off"), Item("to_syslog", "yes"))),
            Section("nodelist", nodes),
            Section("quorum", (Item("provider", "corosync_votequorum"),)),
            Section("totem", tuple(totem))))))

    def text(self) -> str:
        """The file in the tree's own order: edits land beside their neighbours."""
        return format_tree(self.tree)

    def canonical(self) -> str:
        """The file as pvecm would write it."""
        return canonical(self.tree)

    # -- reading -------------------------------------------------------------------------------
    def _top(self, name: str) -> Section:
        found = self.tree.section(name)
        if found is None:
            raise UserError(f"corosync.conf has no '{name}' section",
                            code="conf-section-missing", remedy=f"add a '{name} {{' section")
        return found

    def _totem(self, key: str) -> str | None:
        totem = self.tree.section("totem")
        return totem.get(key) if totem else None

    @property
    def cluster_name(self) -> str | None:
        return self._totem("cluster_name")

    @property
    def config_version(self) -> int | None:
        value = as_int(self._totem("config_version"))
        return value if isinstance(value, int) else None

    @property
    def nodes(self) -> list[ConfNode]:
        nodelist = self.tree.section("nodelist")
        return [read_node(n) for n in nodelist.sections("node")] if nodelist else []

    def _interfaces(self) -> dict[int | str, Section]:
        totem = self.tree.section("totem")
        return {interface_number(i): i for i in totem.sections("interface")} if totem else {}

    @property
    def link_numbers(self) -> tuple[int, ...]:
        """Links named by an interface section or by any node's ringN_addr."""
        numbers = {n for n in self._interfaces() if isinstance(n, int)}
        for node in self.nodes:
            numbers |= set(node.addresses)
        return tuple(sorted(numbers))

    @property
    def priorities(self) -> dict[int, int]:
        """Link number -> knet_link_priority (0, corosync's default, when unset or unreadable)."""
        interfaces = self._interfaces()
        values = {n: as_int(interfaces[n].get("knet_link_priority", "0")) if n in interfaces
                  else 0 for n in self.link_numbers}
        return {n: v if isinstance(v, int) else 0 for n, v in values.items()}

    def to_plan(self) -> ClusterPlan:
        """The ClusterPlan this file describes; not validated (call .check() on it)."""
        return derive_plan(self.tree)[0]

    @property
    def next_free_nodeid(self) -> int:
        """The lowest nodeid >= 1 no node has (what pvecm addnode picks without --nodeid)."""
        taken = {n.nodeid for n in self.nodes}
        return min(set(range(1, len(taken) + 2)) - taken)

    # -- edits ---------------------------------------------------------------------------------
    def add_node(self, name: str, addresses: Mapping[int, str], votes: int = 1,
                 nodeid: int | None = None) -> "CorosyncConf":
        """Add a node as the cluster side of `pvecm add` does: the lowest free nodeid >= 1."""
        refuse_forbidden(name, votes, nodeid, *addresses, *addresses.values())
        nodelist, current = self._top("nodelist"), self.nodes
        taken = {n.nodeid for n in current}
        if nodeid is None:
            nodeid = self.next_free_nodeid
        problems = _check_name(name)
        if name in {n.name for n in current}:
            problems.append(fail("node-name-duplicate", f"node {name} exists already", "name"))
        if _not_int(nodeid, 1, NODEID_MAX):
            problems.append(fail("nodeid-invalid", f"nodeid {nodeid!r} is not 1..{NODEID_MAX}",
                                 "nodeid"))
        elif nodeid in taken:
            problems.append(fail("nodeid-duplicate", f"nodeid {nodeid} is taken", "nodeid",
                                 payload={"nodeid": nodeid}))
        if _not_int(votes, 0):
            problems.append(fail("votes-invalid", f"votes {votes!r} is not >= 0", "votes"))
        if current and set(addresses) != set(self.link_numbers):
            problems.append(fail(
                "node-link-set-mismatch", f"node {name} has links {sorted(addresses)}, the "
                f"cluster has {list(self.link_numbers)}", "addresses",
                payload={"node": sorted(addresses), "cluster": list(self.link_numbers)},
                remedy="give one address for every link of the cluster"))
        problems += self._check_addresses({(name, n): a for n, a in addresses.items()}, name)
        _raise(problems)
        siblings = nodelist.sections("node")
        layout = ("",) if siblings and "" in siblings[-1].comments else ()
        node = Section("node", _node_items(name, nodeid, votes, addresses), layout)
        return self._edit(nodelist, nodelist.with_children(nodelist.children + (node,)))

    def remove_node(self, name: str) -> "CorosyncConf":
        nodelist = self._top("nodelist")
        nodes = nodelist.sections("node")
        match = [n for n in nodes if n.get("name") == name]
        if not match:
            raise UserError(f"no node named {name!r} in corosync.conf", code="node-unknown")
        if len(nodes) == 1:
            raise UserError(f"{name} is the only node; corosync.conf needs one", code="node-last")
        return self._edit(nodelist, nodelist.replace(match[0], None))

    def add_link(self, number: int, addresses: Mapping[str, str], priority: int = 0,
                 network: str | None = None) -> "CorosyncConf":
        """A new knet link: an interface section, and a ringN_addr on every node (each inside
        NETWORK, a CIDR, when given)."""
        refuse_forbidden(number, priority, *addresses, *addresses.values())
        problems = _check_link(number, priority)
        if number in self.link_numbers:
            problems.append(fail("link-exists", f"link {number} exists already", "number",
                                 payload={"number": number}))
        for missing in sorted({n.name for n in self.nodes} - set(addresses), key=str):
            problems.append(fail("link-address-missing", f"no address for node {missing} on "
                                 f"link {number}", f"{missing}/link{number}",
                                 remedy="every node needs an address on every link"))
        problems += self._check_addresses({(n, number): a for n, a in addresses.items()})
        _raise(problems + _outside(number, addresses, network))
        return self._with_priority(number, priority)._set_addresses(number, addresses)

    def set_link_addresses(self, number: int, addresses: Mapping[str, str],
                           network: str | None = None) -> "CorosyncConf":
        """Move some or all nodes of a link to new addresses (inside NETWORK when given)."""
        refuse_forbidden(number, *addresses, *addresses.values())
        problems = [] if number in self.link_numbers else [
            fail("link-unknown", f"link {number} does not exist", "number",
                 payload={"number": number})]
        _raise(problems + self._check_addresses({(n, number): a for n, a in addresses.items()})
               + _outside(number, addresses, network))
        return self._set_addresses(number, addresses)

    def remove_link(self, number: int) -> "CorosyncConf":
        """Drop a link: every node's ringN_addr (or linkN_addr) and its interface section.

        corosync 3 cannot change a link's addresses on reload ("To reconfigure an interface it
        must be deleted and recreated", exec/totemconfig.c), so moving a link to another network
        is this, reloaded, then the link added again. The last link cannot go: corosync needs a
        working one at all times."""
        refuse_forbidden(number)
        problems = [] if number in self.link_numbers else [
            fail("link-unknown", f"link {number} does not exist", "number",
                 payload={"number": number})]
        if not problems and len(self.link_numbers) == 1:
            problems.append(fail("link-last", f"link {number} is the only link", "number",
                                 payload={"number": number},
                                 remedy="add another link first: corosync needs one at all "
                                        "times"))
        _raise(problems)
        nodelist, totem = self._top("nodelist"), self._top("totem")
        nodes = nodelist.with_children(
            c.with_children(x for x in c.children if addr_number(x) != number)
            if isinstance(c, Section) and c.name == "node" else c for c in nodelist.children)
        conf = self._edit(nodelist, nodes)
        totem = conf._top("totem")
        return conf._edit(totem, totem.with_children(
            c for c in totem.children if _iface_number(c) != number))

    def set_priority(self, number: int, priority: int) -> "CorosyncConf":
        """knet_link_priority (the higher is preferred); 0 drops the key, as pvecm writes it."""
        refuse_forbidden(number, priority)
        problems = _check_link(number, priority)
        if number not in self.link_numbers:
            problems.append(fail("link-unknown", f"link {number} does not exist", "number",
                                 payload={"number": number}))
        _raise(problems)
        return self._with_priority(number, priority)

    def bump_version(self) -> "CorosyncConf":
        """config_version + 1: corosync only takes a changed file whose version went up."""
        if self.config_version is None:
            raise UserError("totem.config_version is missing or not a whole number",
                            code="conf-config-version-missing",
                            remedy="add 'config_version: 1' to the totem section")
        return self.at_version(self.config_version + 1)

    def at_version(self, version: int) -> "CorosyncConf":
        """This file with config_version VERSION (e.g. an older nodelist put back above the
        version that replaced it)."""
        totem = self._top("totem")
        return self._edit(totem, totem.set("config_version", str(version)))

    # -- edit helpers --------------------------------------------------------------------------
    def _edit(self, old: Section, new: Section) -> "CorosyncConf":
        return CorosyncConf(self.tree.replace(old, new))

    def _check_addresses(self, wanted: Mapping[tuple[str, int], str],
                         new_node: str | None = None) -> list[Finding]:
        """IP addresses of known nodes, each used once in the cluster (the slots being
        replaced do not count)."""
        used = {a: n.name for n in self.nodes for k, a in n.addresses.items()
                if (n.name, k) not in wanted}
        known = {n.name for n in self.nodes} | {new_node}
        out = []
        for (name, number), address in wanted.items():
            subject = f"{name}/link{number}"
            if name not in known:
                out.append(fail("node-unknown", f"no node named {name!r}", subject))
            elif (problem := link_address_problem(address)) is not None:
                out.append(fail(problem[0], problem[1], subject, payload={"address": address},
                                remedy=problem[2]))
            elif address in used:
                out.append(fail("address-duplicate", f"{address} is used by {used[address]}",
                                subject, payload={"address": address, "link": number}))
            used.setdefault(address, name)
        return out

    def _set_addresses(self, number: int, addresses: Mapping[str, str]) -> "CorosyncConf":
        nodelist = self._top("nodelist")
        return self._edit(nodelist, nodelist.with_children(
            _with_address(c, number, addresses) for c in nodelist.children))

    def _with_priority(self, number: int, priority: int) -> "CorosyncConf":
        """Set a link's priority, first adding an interface section for every link that lacks
        one (pvecm's verify_conf wants an interface for all links or for none)."""
        totem = self._top("totem")
        for missing in sorted(set(self.link_numbers) | {number}):
            if missing not in {interface_number(i) for i in totem.sections("interface")}:
                totem = _insert_numbered(totem, _interface(missing, 0), _iface_number, missing)
        iface = next(i for i in totem.sections("interface") if interface_number(i) == number)
        changed = _set_sorted(iface, "knet_link_priority", str(priority)) if priority else \
            iface.remove("knet_link_priority")
        return self._edit(self._top("totem"), totem.replace(iface, changed))


def _raise(problems: list[Finding]) -> None:
    if problems:
        raise ValidationFailed(problems, source="corosync.conf edit")


def _not_int(value: object, low: int, high: int | None = None) -> bool:
    return (not isinstance(value, int) or isinstance(value, bool) or value < low
            or (high is not None and value > high))


def _outside(number: int, addresses: Mapping[str, str], network: str | None) -> list[Finding]:
    """Addresses outside the link's network (a CIDR) would not reach each other directly."""
    if network is None:
        return []
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return [fail("network-invalid", f"{network!r} is not a network", "network",
                     remedy="write it as a CIDR, e.g. 10.10.20.0/24")]
    return [fail("link-address-outside-network", f"{address} is not in {net}",
                 f"{name}/link{number}", payload={"address": address, "network": str(net)})
            for name, address in sorted(addresses.items())
            if ip_or_none(address) is not None and ip_or_none(address) not in net]


def _check_name(name: str) -> list[Finding]:
    if name_problem(name) is None:
        return []
    return [fail("node-name-invalid", f"node name {name!r} is not valid", "name",
                 remedy=NAME_RULE)]


def _check_link(number: int, priority: int) -> list[Finding]:
    out = []
    if _not_int(number, 0, MAX_LINK):
        out.append(fail("link-number-out-of-range", f"link number {number!r} is not 0..7",
                        "number", payload={"number": number}))
    if _not_int(priority, 0, 255):
        out.append(fail("link-priority-out-of-range", f"priority {priority!r} is not 0..255",
                        "priority", remedy="higher numbers are preferred; use 0..255"))
    return out


def _node_items(name: str, nodeid: int, votes: int,
                addresses: Mapping[int, str]) -> tuple[Item, ...]:
    """A node entry as pvecm addnode writes it: no quorum_votes for 0 votes (corosync then
    counts 1; pve-cluster's API2/ClusterConfig.pm addnode)."""
    votes_item = (Item("quorum_votes", str(votes)),) if votes else ()
    return (Item("name", name), Item("nodeid", str(nodeid)), *votes_item,
            *(Item(f"ring{n}_addr", addresses[n]) for n in sorted(addresses)))


def _interface(number: int, priority: int) -> Section:
    items = (Item("knet_link_priority", str(priority)),) if priority else ()
    return Section("interface", items + (Item("linknumber", str(number)),))


def _set_sorted(section: Section, key: str, value: str) -> Section:
    """Change the key in place, or insert it before the first key sorting after it."""
    if section.item(key) is not None:
        return section.set(key, value)
    children = list(section.children)
    at = next((i for i, c in enumerate(children) if isinstance(c, Item) and c.key > key),
              len(children))
    return section.with_children(children[:at] + [Item(key, value)] + children[at:])


def _iface_number(child: Node_) -> int | str | None:
    if isinstance(child, Section) and child.name == "interface":
        return interface_number(child)
    return None


def _insert_numbered(section: Section, new: Node_, number_of, number: int) -> Section:
    """Insert after the last numbered sibling (number_of not None) with a lower number, else
    before the first one, else at the end: edits of a pvecm-ordered file stay in its order."""
    children = list(section.children)
    numbered = [(i, number_of(c)) for i, c in enumerate(children) if number_of(c) is not None]
    lower = [i for i, n in numbered if isinstance(n, int) and n < number]
    at = lower[-1] + 1 if lower else numbered[0][0] if numbered else len(children)
    return section.with_children(children[:at] + [new] + children[at:])


def _with_address(child: Node_, number: int, addresses: Mapping[str, str]) -> Node_:
    """CHILD with its link NUMBER address set to ADDRESSES[its name], when it is a node named
    there; else CHILD as it is."""
    if not (isinstance(child, Section) and child.name == "node"):
        return child
    name = child.get("name")
    if name is None or name not in addresses:
        return child
    return _set_address(child, number, addresses[name])


def _set_address(node: Section, number: int, address: str) -> Section:
    current = node_addresses(node).get(number)
    if current:
        return node.replace(current, dataclasses.replace(current, value=address))
    return _insert_numbered(node, Item(f"ring{number}_addr", address), addr_number, number)
