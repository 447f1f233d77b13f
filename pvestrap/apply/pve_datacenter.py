"""datacenter.cfg on Proxmox VE: written the way Proxmox's own API writes it.

pve-manager's PUT /cluster/options (`pvesh set /cluster/options --KEY VALUE ...`, PVE/API2/
Cluster.pm) validates every value against DataCenterConfig.pm's schema and writes the file
under pmxcfs's lock (cfs_lock_file), so two writers never lose each other's options. That is
the path here whenever the node has pvesh. A node without pve-manager (pvecm and pmxcfs only,
as in `lab up --pve`) gets the file written straight into /etc/pve, through pmxcfs but not
under its lock; either way no `datacenter.cfg.bak` is left in the cluster-wide /etc/pve.
"""

from __future__ import annotations

from dataclasses import dataclass

from pvestrap.apply.engine import PlannedCommand
from pvestrap.plan import ClusterPlan
from pvestrap.render import (DATACENTER_CFG, MODES, Change, datacenter_options,
                             render_datacenter_cfg)
from pvestrap.system import System

PVESH = "/usr/bin/pvesh"


def pvesh_argv(options: dict[str, str]) -> tuple[str, ...]:
    argv = ["pvesh", "set", "/cluster/options"]
    for key, value in options.items():
        argv += [f"--{key}", value]
    return tuple(argv)


@dataclass(frozen=True)
class PveDatacenterStep:
    cluster: ClusterPlan
    id: str = "pve-datacenter-cfg"

    @property
    def description(self) -> str:
        return f"set the cluster-wide options in {DATACENTER_CFG}"

    def _wanted(self, system: System) -> tuple[str | None, str]:
        existing = system.read_text(DATACENTER_CFG)
        return existing, render_datacenter_cfg(self.cluster, existing)

    def plan(self, system: System) -> list:
        existing, text = self._wanted(system)
        if text == existing:
            return []
        if system.exists(PVESH):
            return [PlannedCommand(pvesh_argv(datacenter_options(self.cluster, existing)))]
        mode = system.file_mode(DATACENTER_CFG) or MODES[DATACENTER_CFG]
        return [Change(DATACENTER_CFG, existing, text, mode)]

    def apply(self, system: System) -> str | None:
        existing, text = self._wanted(system)
        if text == existing:
            return existing
        if system.exists(PVESH):
            system.run(pvesh_argv(datacenter_options(self.cluster, existing)), timeout=120)
        else:
            system.write_text(DATACENTER_CFG, text, MODES[DATACENTER_CFG], backup=False)
        return existing

    def undo(self, system: System, memo: str | None) -> None:
        """The previous file, written back through pmxcfs (no backup beside it either)."""
        if memo is None:
            system.remove(DATACENTER_CFG)
        else:
            system.write_text(DATACENTER_CFG, memo, MODES[DATACENTER_CFG], backup=False)
