"""The cluster plan: the one model everything reads (answers, wizard, render, preflight, apply).

Plain frozen dataclasses. The value rules (names, addresses, the datacenter.cfg choices) live in
pvestrap.plan_rules and the validation in pvestrap.plan_validation; both are importable from here.
`validate(plan)` collects EVERY problem as a finding with a field path (`nodes[2].link1`,
`datacenter.keyboard`); `plan.check()` raises once with all (nothing runs after).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from pvestrap import pvecm_versions, reach
from pvestrap.errors import ValidationFailed
from pvestrap.plan_rules import (BACKENDS, BWLIMIT_KEYS, CONSOLES, DEFAULT_MAC_PREFIX,
                                 FINGERPRINT_RE, FORBIDDEN_CHARS, HA_POLICIES, HOST_RE, IFACE_RE,
                                 INSTALLER_KEYBOARDS, KEYBOARDS, MAX_LINK, NAME_MAX, NAME_RE,
                                 NAME_RULE, NODEID_MAX, TRANSFER_TYPES, ip_or_none,
                                 link_address_problem, name_problem, normalize_keyboard)
from pvestrap.plan_validation import validate
from pvestrap.qdevice import QDevice

__all__ = [  # the model, and the rules and validation it re-exports for `from pvestrap.plan import`
    "Link", "InterfaceStanza", "Node", "JoinTarget", "Datacenter", "Thresholds", "Preflight",
    "ClusterPlan", "validate", "BACKENDS", "BWLIMIT_KEYS", "CONSOLES", "DEFAULT_MAC_PREFIX",
    "FINGERPRINT_RE", "FORBIDDEN_CHARS", "HA_POLICIES", "HOST_RE", "IFACE_RE",
    "INSTALLER_KEYBOARDS", "KEYBOARDS", "MAX_LINK", "NAME_MAX", "NAME_RE", "NAME_RULE",
    "NODEID_MAX", "TRANSFER_TYPES", "ip_or_none", "link_address_problem", "name_problem",
    "normalize_keyboard",
]


@dataclass(frozen=True)
class Link:
    """A corosync knet link: number 0..7, its network, and its priority (higher is preferred)."""

    number: int
    network: str | None = None
    priority: int = 0

    @property
    def port(self) -> int:
        return 5405 + self.number


@dataclass(frozen=True)
class InterfaceStanza:
    """An /etc/network/interfaces stanza the plan owns (a dedicated NIC, or a bridge)."""

    name: str
    address: str | None = None
    mtu: int | None = None
    kind: str = "nic"  # nic | bridge
    bridge_ports: str | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class Node:
    name: str
    nodeid: int
    addresses: Mapping[int, str]  # link number -> address
    votes: int = 1
    interfaces: tuple[InterfaceStanza, ...] = ()
    management: str | None = None  # management address as CIDR (installer, wizard)

    def address(self, link: int) -> str:
        return self.addresses[link]

    @property
    def counted_votes(self) -> int:
        """The votes corosync counts: a node written without quorum_votes (pvecm addnode does
        that for 0 votes) counts as 1."""
        return self.votes or 1


@dataclass(frozen=True)
class JoinTarget:
    """Where joiners join and how they prove who the cluster is.

    The password is never held here: only a reference (file or environment variable), resolved
    at the moment of joining and never written to logs, reports or answer files.
    """

    address: str | None = None
    fingerprint: str | None = None
    password_file: str | None = None
    password_env: str | None = None

    @property
    def names_password(self) -> bool:
        """Whether the plan can give the root password: the API join (pvecm add, TCP 8006) is
        possible; without it a Proxmox VE node joins with pvecm add --use_ssh (TCP 22)."""
        return bool(self.password_file or self.password_env)


@dataclass(frozen=True)
class Datacenter:
    """The datacenter.cfg options the wizard handles (None = not set, so not written)."""

    keyboard: str | None = None
    language: str | None = None
    console: str | None = None
    migration_type: str | None = None
    migration_network: str | None = None
    replication_type: str | None = None
    replication_network: str | None = None
    ha_shutdown_policy: str | None = None
    bwlimit: Mapping[str, int] = field(default_factory=dict)
    mac_prefix: str | None = None
    next_id_lower: int | None = None
    next_id_upper: int | None = None
    email_from: str | None = None
    http_proxy: str | None = None
    max_workers: int | None = None
    description: str | None = None


@dataclass(frozen=True)
class Thresholds:
    latency_fail_ms: float = 2.0
    jitter_warn_ms: float = 0.5
    loss_warn_pct: float = 1.0
    loss_fail_pct: float = 10.0
    clock_warn_s: float = 0.1
    clock_fail_s: float = 1.0
    duration_s: float = 3.0


@dataclass(frozen=True)
class Preflight:
    thresholds: Thresholds = field(default_factory=Thresholds)
    ignore_checks: tuple[str, ...] = ()
    ntp_servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterPlan:
    cluster_name: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    create_node: str | None = None  # defaults to the node with the lowest nodeid
    join: JoinTarget = field(default_factory=JoinTarget)
    datacenter: Datacenter = field(default_factory=Datacenter)
    preflight: Preflight = field(default_factory=Preflight)
    pve_version: str | None = None  # target PVE release, e.g. "9.2" (token_coefficient: 125)
    backend: str = "auto"
    # [installer] for `pvestrap iso answer/prepare`, as read: a read-only mapping of the answer
    # file's snake_case keys, per-node overrides under "nodes". Checked by pvestrap.iso.
    installer: Mapping[str, Any] | None = None
    # The pve-cluster version installed on the node this plan is applied on (pvestrap.nodefacts
    # fills it in from dpkg; never read from an answer file). It outranks pve_version.
    pve_cluster: str | None = None
    qdevice: QDevice | None = None  # [qdevice]: an external vote

    # -- lookups -------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def has_node(self, name: str) -> bool:
        return any(n.name == name for n in self.nodes)

    @property
    def creator(self) -> Node:
        if self.create_node:
            return self.node(self.create_node)
        return min(self.nodes, key=lambda n: n.nodeid)

    def role_of(self, name: str) -> str:
        return "create" if self.creator.name == name else "join"

    def link(self, number: int) -> Link:
        for link in self.links:
            if link.number == number:
                return link
        raise KeyError(number)

    @property
    def link_numbers(self) -> tuple[int, ...]:
        return tuple(sorted(link.number for link in self.links if isinstance(link.number, int)))

    @property
    def pvecm_version(self) -> str | None:
        """The pve-cluster version whose pvecm behaviour applies (pvestrap.pvecm_versions): the
        node's installed one, else the one the answer file's pve_version plans ahead for."""
        if self.pve_cluster:
            return self.pve_cluster
        return pvecm_versions.pve_cluster_for_release(self.pve_version) if self.pve_version \
            else None

    @property
    def token_coefficient(self) -> int | None:
        """What pvecm create writes: token_coefficient: 125 from pve-cluster 9.1.0 (PVE 9.2)."""
        version = self.pvecm_version
        if version and pvecm_versions.has(version, pvecm_versions.TOKEN_COEFFICIENT):
            return pvecm_versions.DEFAULT_TOKEN_COEFFICIENT
        return None

    def join_address(self, resolver: reach.Resolver) -> str:
        """Where a joiner contacts the cluster: the explicit join.address, else the creator as
        the joiner reaches it (pvestrap.reach: its node name when RESOLVER, the joiner's name
        lookup, finds non-loopback addresses only for it, else its link0 address)."""
        if self.join.address:
            return self.join.address
        creator = self.creator
        return reach.by_name(creator.name, creator.addresses[min(creator.addresses)],
                             resolver(creator.name))

    def check(self, source: str | None = None) -> "ClusterPlan":
        problems = validate(self)
        if problems:
            raise ValidationFailed(problems, source=source)
        return self
