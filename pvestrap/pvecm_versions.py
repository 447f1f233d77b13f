"""What Proxmox's pvecm does, by pve-cluster version: the one table of version-dependent behaviour.

Every row names the pve-cluster release that first shipped the behaviour and the commit in
Proxmox's public pve-cluster repository (git.proxmox.com/?p=pve-cluster.git) that introduced it.
What is not in the table is the same in every supported release (checked against pve-cluster
8.1.3 and 9.1.6, e.g. `pvecm addnode` leaving quorum_votes out for 0 votes, src/PVE/API2/
ClusterConfig.pm; `pvecm create` writing quorum_votes = votes || 1, src/PVE/Corosync.pm).

A node's installed pve-cluster decides (pvestrap.nodefacts reads it); for a node not installed
yet, the answer file's pve_version (the Proxmox VE release) plans ahead through RELEASES.
Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    key: str
    since: str  # first pve-cluster version with it
    commit: str  # pve-cluster commit that introduced it
    source: str  # file in pve-cluster
    what: str


TOKEN_COEFFICIENT = "create-token-coefficient"
DEFAULT_TOKEN_COEFFICIENT = 125

BEHAVIOURS = (
    Behaviour(TOKEN_COEFFICIENT, "9.1.0", "a7b1c765", "src/PVE/API2/ClusterConfig.pm",
              "`pvecm create` accepts --token-coefficient and, without it, writes "
              f"token_coefficient: {DEFAULT_TOKEN_COEFFICIENT} into the new corosync.conf "
              "(older pvecm refuses the option: 'Unknown option: token-coefficient', exit 255)"),
)

# Proxmox VE release -> the oldest pve-cluster it ships (only where the table above changes):
# PVE 9.2 is the first release with pve-cluster >= 9.1.0; 8.x, 9.0 and 9.1 ship older ones.
RELEASES = (((9, 2), "9.1.0"),)


def version_tuple(text: str | None) -> tuple[int, ...]:
    """'9.1.6' -> (9, 1, 6); Debian revisions and suffixes end the tuple
    ('8.1.3-1' -> (8, 1, 3))."""
    parts = []
    for piece in re.split(r"[.\-+~]", text or ""):
        digits = re.fullmatch(r"\d+", piece)
        if not digits:
            break
        parts.append(int(piece))
    return tuple(parts)


def behaviour(key: str) -> Behaviour:
    return next(b for b in BEHAVIOURS if b.key == key)


def has(pve_cluster: str, key: str) -> bool:
    """Whether pve-cluster version PVE_CLUSTER has behaviour KEY."""
    return version_tuple(pve_cluster) >= version_tuple(behaviour(key).since)


def pve_cluster_for_release(pve_version: str) -> str:
    """The pve-cluster behaviour a Proxmox VE release (e.g. '9.2') plans for: '0' = before every
    row of the table."""
    found = "0"
    for release, cluster in RELEASES:
        if version_tuple(pve_version) >= release:
            found = cluster
    return found
