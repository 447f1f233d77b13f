"""A corosync.conf against the plan: does it place a node as planned?

One rule for render (a node whose corosync.conf already places it needs no corosync.conf from
its own apply) and for the backends (such a node is a member: its apply only checks that
corosync runs and is quorate; a joiner found already listed resumes its join).
"""

from __future__ import annotations

from pvestrap.corosync.facade import CorosyncConf
from pvestrap.findings import Finding, fail
from pvestrap.plan import ClusterPlan


def node_differences(plan: ClusterPlan, node_name: str, conf: CorosyncConf) -> list[Finding]:
    """How NODE's entry (and the link set) in CONF differ from the plan; [] when they agree."""
    planned = plan.node(node_name)
    entry = next((n for n in conf.nodes if n.name == node_name), None)
    if entry is None:
        return [fail("node-not-in-conf", f"{node_name} is not in the cluster's corosync.conf",
                     node_name)]
    out = []
    if entry.nodeid != planned.nodeid:
        out.append(fail("nodeid-differs", f"{node_name} has nodeid {entry.nodeid}, the plan "
                        f"{planned.nodeid}", node_name,
                        payload={"conf": entry.nodeid, "plan": planned.nodeid}))
    if dict(entry.addresses) != dict(planned.addresses):
        out.append(fail("addresses-differ", f"{node_name} has addresses {entry.addresses}, the "
                        f"plan {dict(planned.addresses)}", node_name,
                        payload={"conf": entry.addresses, "plan": dict(planned.addresses)}))
    if tuple(conf.link_numbers) != plan.link_numbers:
        out.append(fail("links-differ", f"the cluster has links {list(conf.link_numbers)}, the "
                        f"plan {list(plan.link_numbers)}", "links",
                        payload={"conf": list(conf.link_numbers),
                                 "plan": list(plan.link_numbers)}))
    return out


def is_listed_as_planned(plan: ClusterPlan, node_name: str, conf: CorosyncConf) -> bool:
    """CONF has this node with the planned nodeid, addresses and link set."""
    return (any(n.name == node_name for n in conf.nodes)
            and not node_differences(plan, node_name, conf))


def places_node(plan: ClusterPlan, node_name: str, conf: CorosyncConf) -> bool:
    """CONF is a stage of the planned cluster with NODE in it as planned: the right cluster
    name, this node's entry and the link set as the plan says (the other members' joins change
    the rest)."""
    return conf.cluster_name == plan.cluster_name and is_listed_as_planned(plan, node_name, conf)
