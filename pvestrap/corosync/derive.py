"""The ClusterPlan a corosync.conf describes, and where in the file each of its fields comes from
(so lint can report the plan's rule violations at the file's lines)."""

from __future__ import annotations

from pvestrap.corosync.tree import Item, Section, as_int, interface_number, node_addresses
from pvestrap.plan import ClusterPlan, Link, Node

Where = dict[str, tuple[str, int]]


def derive_plan(tree: Section) -> tuple[ClusterPlan, Where]:
    """The plan a corosync.conf describes, and where in the file each plan field comes from.

    Lenient on purpose: a value that is not a number stays text, a missing one becomes a value
    the plan's validation rejects, so lint can report it instead of crashing.
    """
    where: Where = {}
    totem = tree.section("totem") or Section("totem")
    nodelist = tree.section("nodelist") or Section("nodelist")
    _note(where, "cluster.name", "totem.cluster_name", totem.item("cluster_name"), totem)
    where["cluster_name"] = where["cluster.name"]
    links: list[Link] = []
    for k, iface in enumerate(totem.sections("interface")):
        path, j = f"totem.interface[{k}]", len(links)
        if not isinstance(interface_number(iface), int):
            continue  # lint reports it; the plan's link numbers must be numbers
        links.append(Link(interface_number(iface), None,
                          as_int(iface.get("knet_link_priority", "0"))))
        key = "linknumber" if iface.item("linknumber") or not iface.item("ringnumber") \
            else "ringnumber"
        where[f"links[{j}]"] = (path, iface.line)
        _note(where, f"links[{j}].number", f"{path}.{key}", iface.item(key), iface)
        _note(where, f"links[{j}].priority", f"{path}.knet_link_priority",
              iface.item("knet_link_priority"), iface)
    nodes = []
    for i, sec in enumerate(nodelist.sections("node")):
        nodes.append(_derive_node(sec, f"nodes[{i}]", f"nodelist.node[{i}]", where))
    numbers = {link.number for link in links}
    for number in sorted({n for node in nodes for n in node.addresses} - numbers):
        i, first = next((i, s) for i, s in enumerate(nodelist.sections("node"))
                        if number in node_addresses(s))
        item = node_addresses(first)[number]
        where[f"links[{len(links)}]"] = where[f"links[{len(links)}].number"] = (
            f"nodelist.node[{i}].{item.key}", item.line)
        links.append(Link(number))
    coefficient = totem.get("token_coefficient")
    plan = ClusterPlan(totem.get("cluster_name") or "", tuple(nodes), tuple(links),
                       pve_version="9.2" if coefficient == "125" else None)
    return plan, where


def _derive_node(sec: Section, plan_path: str, conf_path: str, where: Where) -> Node:
    where[plan_path] = (conf_path, sec.line)
    for field, key in (("name", "name"), ("nodeid", "nodeid"), ("votes", "quorum_votes")):
        _note(where, f"{plan_path}.{field}", f"{conf_path}.{key}", sec.item(key), sec)
    addresses = {}
    for number, item in sorted(node_addresses(sec).items()):
        addresses[number] = item.value
        for plan_key in (f"{plan_path}.link{number}", f"{plan_path}.addresses.{number}"):
            where[plan_key] = (f"{conf_path}.{item.key}", item.line)
    return Node(sec.get("name"), as_int(sec.get("nodeid")), addresses,
                as_int(sec.get("quorum_votes", "1")))


def _note(where: Where, plan_path: str, conf_path: str, item: Item | None,
          parent: Section) -> None:
    where[plan_path] = (conf_path, item.line if item else parent.line)
