"""Node facts: what is really installed on a node (pve-manager, pve-cluster, corosync, the
kernel), read with dpkg-query and uname, and the plan resolved against them.

The installed pve-cluster decides how pvecm behaves (pvestrap.pvecm_versions): the preview,
the plan and pvecm's argv follow it. The answer file's pve_version only plans ahead for a node
not installed yet; on an installed node it is checked against what is there, and the node wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from collections.abc import Callable

from pvestrap import pvecm_versions
from pvestrap.plan import ClusterPlan
from pvestrap.system import CommandFailed, System

PACKAGES = ("pve-manager", "pve-cluster", "corosync")
# Proxmox VE is installed when pvecm or the cluster filesystem's folder is there.
PVE_MARKERS = ("/usr/bin/pvecm", "/etc/pve")
QUERY_FORMAT = "${Package}\\t${Version}\\t${db:Status-Abbrev}\\n"


@dataclass(frozen=True)
class NodeFacts:
    packages: tuple[tuple[str, str], ...] = ()  # installed (package, version)
    kernel: str | None = None

    def version(self, package: str) -> str | None:
        return dict(self.packages).get(package)

    def describe(self) -> str:
        found = ", ".join(f"{p} {v}" for p, v in self.packages) or "no pve-manager, pve-cluster " \
            "or corosync package"
        return f"installed: {found}" + (f"; kernel {self.kernel}" if self.kernel else "")

    @property
    def pve_cluster(self) -> str | None:
        return self.version("pve-cluster")

    @property
    def pve_release(self) -> str | None:
        """The Proxmox VE release (pve-manager's major.minor), when pve-manager is installed."""
        version = pvecm_versions.version_tuple(self.version("pve-manager"))
        return ".".join(map(str, version[:2])) if len(version) >= 2 else None


def runs_pve(exists: Callable[[str], bool]) -> bool:
    """Proxmox VE is installed on the node whose paths EXISTS answers for."""
    return any(exists(path) for path in PVE_MARKERS)


def backend_for(plan: ClusterPlan, exists: Callable[[str], bool]) -> str:
    """The plan's backend, or on "auto" the node's: pve where Proxmox VE is, else corosync."""
    if plan.backend in ("pve", "corosync"):
        return plan.backend
    return "pve" if runs_pve(exists) else "corosync"


def parse_dpkg_query(text: str) -> tuple[tuple[str, str], ...]:
    """Lines of QUERY_FORMAT -> the packages that are installed ('ii' and the like)."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 3 and fields[1] and fields[2].strip()[1:2] in ("i", "U", "F", "W", "t"):
            out.append((fields[0], fields[1]))
    return tuple(sorted(out))


def read_facts(system: System, root: str = "/") -> NodeFacts:
    """The facts of the node SYSTEM runs on (with ROOT other than /: its dpkg database)."""
    argv = ["dpkg-query", "-W", "-f", QUERY_FORMAT]
    if root != "/":
        argv.append(f"--admindir={root.rstrip('/')}/var/lib/dpkg")
    packages = parse_dpkg_query(_output(system, [*argv, *PACKAGES]))
    kernel = _output(system, ["uname", "-r"]).strip() or None if root == "/" else None
    return NodeFacts(packages, kernel)


def _output(system: System, argv: list[str]) -> str:
    """stdout of a query; dpkg-query exits 1 when some package is unknown but prints the rest."""
    try:
        return system.run(argv, timeout=30, check=False, mutates=False).stdout
    except CommandFailed:  # the tool is missing: nothing is known
        return ""


def resolve(plan: ClusterPlan, facts: NodeFacts, note: Callable[[str], None] = lambda _: None
            ) -> ClusterPlan:
    """PLAN as it applies on the node with FACTS: pvecm's behaviour from the installed
    pve-cluster. NOTE gets one line when the answer file planned for another release."""
    installed = facts.pve_cluster
    if installed is None:
        return plan
    resolved = replace(plan, pve_cluster=installed)
    if plan.pve_version and _differs(plan, resolved):
        token = resolved.token_coefficient
        note(f"the answer file plans for Proxmox VE {plan.pve_version}, but this node has "
             f"pve-cluster {installed}"
             + (f" (Proxmox VE {facts.pve_release})" if facts.pve_release else "")
             + ": following the node (token_coefficient "
             + (f"{token}" if token else "not written") + ")")
    return resolved


def _differs(plan: ClusterPlan, resolved: ClusterPlan) -> bool:
    return plan.token_coefficient != resolved.token_coefficient
