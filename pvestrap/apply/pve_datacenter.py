"""datacenter.cfg on Proxmox VE: written the way Proxmox's own API writes it.

pve-manager's PUT /cluster/options (`pvesh set /cluster/options --KEY VALUE ...`, PVE/API2/
Cluster.pm) validates every value against DataCenterConfig.pm's schema and writes the file
under pmxcfs's lock (cfs_lock_file), so two writers never lose each other's options. That is
the path here whenever the node has pvesh. A node without pve-manager (pvecm and pmxcfs only,
as in `lab up --pve`) gets the file written straight into /etc/pve, through pmxcfs but not
under its lock; either way no `datacenter.cfg.bak` is left in the cluster-wide /etc/pve.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pvestrap.apply.engine import PlannedCommand
from pvestrap.plan import ClusterPlan
from pvestrap.paths import DATACENTER_CFG
from pvestrap.render import (MODES, Change, datacenter_options, node_change, node_changes,
                             system_reader)
from pvestrap.system import System

PVESH = "/usr/bin/pvesh"


def pvesh_argv(options: dict[str, str]) -> tuple[str, ...]:
    argv = ["pvesh", "set", "/cluster/options"]
    for key, value in options.items():
        argv += [f"--{key}", value]
    return tuple(argv)


@dataclass(frozen=True)
class PveDatacenterStep:
    """datacenter.cfg as render has it for the creating node; through pvesh where it exists
    (the plan shows both the command and the file it leads to)."""

    cluster: ClusterPlan
    node_name: str
    id: str = "pve-datacenter-cfg"

    @property
    def description(self) -> str:
        return f"set the cluster-wide options in {DATACENTER_CFG}"

    def _change(self, system: System) -> Change | None:
        changes = node_changes(self.cluster, self.node_name, system_reader(system), "pve")
        return node_change(changes, DATACENTER_CFG)

    def plan(self, system: System) -> list:
        change = self._change(system)
        if change is None:
            return []
        if system.exists(PVESH):
            options = datacenter_options(self.cluster, change.before)
            return [PlannedCommand(pvesh_argv(options)), replace(change, writer="pvesh")]
        return [change]

    def apply(self, system: System) -> str | None:
        change = self._change(system)
        if change is None:
            return system.read_text(DATACENTER_CFG)
        if system.exists(PVESH):
            system.run(pvesh_argv(datacenter_options(self.cluster, change.before)), timeout=120)
        else:
            system.write_text(DATACENTER_CFG, change.after, MODES[DATACENTER_CFG], backup=False)
        return change.before

    def undo(self, system: System, memo: str | None) -> None:
        """The previous file, written back through pmxcfs (no backup beside it either)."""
        if memo is None:
            system.remove(DATACENTER_CFG)
        else:
            system.write_text(DATACENTER_CFG, memo, MODES[DATACENTER_CFG], backup=False)
