"""The lab as a cluster plan: what `pvestrap lab answers` prints for `apply` and `preflight`.

The lab's nodes become the plan's nodes (nodeid = node number, one address per link), its link
networks the plan's links; the cluster is named after the lab. The backend is the plain
corosync one (a lab node has corosync, not Proxmox VE), or pve in a `lab up --pve` lab.
"""

from __future__ import annotations

from pvestrap.lab import names
from pvestrap.lab.state import LabState
from pvestrap.plan import ClusterPlan, Link, Node, name_problem

FALLBACK_CLUSTER_NAME = "lab"


def cluster_name(prefix: str) -> str:
    return prefix if name_problem(prefix) is None else FALLBACK_CLUSTER_NAME


def lab_plan(st: LabState) -> ClusterPlan:
    layout = st.layout
    nodes = tuple(
        Node(name=layout.node_name(index), nodeid=index,
             addresses={link: names.address(link, index) for link in range(st.links)})
        for index in range(1, st.nodes + 1))
    links = tuple(Link(number=link, network=names.network(link)) for link in range(st.links))
    plan = ClusterPlan(cluster_name=cluster_name(st.prefix), nodes=nodes, links=links,
                       backend="pve" if st.pve else "corosync")
    return plan.check(source=f"lab {st.prefix}")
