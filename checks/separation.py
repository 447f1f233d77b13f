"""Before this node separates from its cluster: shared storage it would keep reaching, guests on
it, and whether the others keep quorum without it.

The admin guide ("Separate A Node Without Reinstalling"): a separated node still reaches the
cluster's shared storages; a Proxmox VE cluster cannot share the exact same storage with another
cluster (storage locking does not work across cluster boundaries) and VMIDs may collide, so the
shared resources must be separated first (a new export or pool only this node uses).

Storage types that are shared by nature come from pve-storage's plugins (`shared` in their
plugindata: NFS, CIFS, GlusterFS, iSCSI, iSCSI direct, RBD, CephFS, ZFS over iSCSI); LVM, LVM-thin,
directory and btrfs storages are shared when their `shared 1` option says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from pvestrap.checks.removal import VotePlan
from pvestrap.findings import Finding, fail, passed, warn

CHECK_STORAGE = "separate-shared-storage"
CHECK_GUESTS = "separate-guests"
CHECK_QUORUM = "separate-quorum"
CHECKS = {
    CHECK_STORAGE: "(Proxmox) no shared storage stays reachable from the separated node",
    CHECK_GUESTS: "(Proxmox) none of the node's guests uses a shared storage",
    CHECK_QUORUM: "the other nodes stay quorate without this node",
}
SHARED_TYPES = {"nfs", "cifs", "glusterfs", "iscsi", "iscsidirect", "rbd", "cephfs", "zfs"}
FLAG_TYPES = {"lvm", "lvmthin", "dir", "btrfs"}
_HEADER = re.compile(r"^([a-z][a-z0-9]*):\s*(\S+)\s*$")
_DISK_KEY = re.compile(r"^(?:ide|sata|scsi|virtio|efidisk|tpmstate|unused|mp)\d+$|^rootfs$")


@dataclass(frozen=True)
class Storage:
    id: str
    type: str
    options: Mapping[str, str]

    @property
    def shared(self) -> bool:
        return self.type in SHARED_TYPES or (self.type in FLAG_TYPES and
                                             self.options.get("shared") == "1")

    def reached_by(self, node: str) -> bool:
        nodes = self.options.get("nodes")
        return nodes is None or node in [n.strip() for n in nodes.split(",")]


def parse_storage_cfg(text: str) -> list[Storage]:
    """/etc/pve/storage.cfg: `TYPE: ID` then indented `key value` lines (section config)."""
    out: list[Storage] = []
    current: tuple[str, str, dict[str, str]] | None = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        header = _HEADER.match(line)
        if header and not line[0].isspace():
            if current:
                out.append(Storage(current[1], current[0], current[2]))
            current = (header.group(1), header.group(2), {})
        elif current and line[0].isspace():
            key, _, value = line.strip().partition(" ")
            current[2][key] = value.strip() or "1"
    if current:
        out.append(Storage(current[1], current[0], current[2]))
    return out


def storage_findings(node: str, storages: Sequence[Storage]) -> list[Finding]:
    out = []
    for s in storages:
        if not (s.shared and s.reached_by(node)):
            continue
        out.append(fail("shared-storage-kept", f"{s.type} storage {s.id} is shared and "
                        f"{node} would keep reaching it after the separation", s.id,
                        check=CHECK_STORAGE, payload={"storage": s.id, "type": s.type,
                                                      "disabled": "disable" in s.options},
                        remedy="a cluster cannot share the exact same storage with another "
                               "(storage locking does not work across clusters; VMIDs "
                               f"collide): give {node} a storage only it uses (a new NFS "
                               "export, a new Ceph pool), move its data there, then restrict "
                               f"{s.id} to the other nodes (`nodes` in storage.cfg)"))
    if not out:
        out.append(passed("no-shared-storage", f"no shared storage reachable from {node}",
                          node, CHECK_STORAGE))
    return out


def guest_storage_findings(node: str, storages: Sequence[Storage],
                           guests: Mapping[str, str]) -> list[Finding]:
    """GUESTS: 'qemu-server/100' -> config text. A disk on a shared storage is a FAIL."""
    shared = {s.id for s in storages if s.shared}
    out = []
    for guest, text in sorted(guests.items()):
        used = sorted({value.split(":", 1)[0].strip() for key, _, value in
                       (line.partition(":") for line in text.splitlines())
                       if _DISK_KEY.match(key.strip()) and ":" in value} & shared)
        if used:
            out.append(fail("guest-on-shared-storage", f"{guest} on {node} uses shared "
                            f"storage {', '.join(used)}", guest, check=CHECK_GUESTS,
                            payload={"guest": guest, "storages": used},
                            remedy="move its disks to a storage only this node uses first"))
    if not out:
        out.append(passed("guests-local", f"no guest of {node} uses a shared storage", node,
                          CHECK_GUESTS))
    return out


def quorum_findings(votes: VotePlan, quorate: bool, expected_override: int | None,
                    node: str) -> list[Finding]:
    """Whether the others stay quorate once this node is gone (while they still expect it,
    and after they dropped it)."""
    needed_now = (votes.expected_now or 0) // 2 + 1
    payload = {**votes.as_dict(), "needed_now": needed_now,
               "expected_override": expected_override}
    if not quorate:
        return [fail("cluster-not-quorate", "this node's cluster is not quorate now", "cluster",
                     check=CHECK_QUORUM, payload=payload,
                     remedy="bring the cluster back to quorum first")]
    if votes.present >= needed_now and votes.quorate_after:
        return [passed("others-stay-quorate", f"without {node}: {votes.present} vote(s), "
                       f"{needed_now} needed now and {votes.quorum_after} after", "cluster",
                       CHECK_QUORUM, payload=payload)]
    if expected_override is not None:
        return [warn("expected-votes-lowered", f"the staying nodes would lose quorum without "
                     f"{node}: their expected votes are lowered to {expected_override}",
                     "cluster", check=CHECK_QUORUM, payload=payload)]
    return [fail("separation-loses-quorum", f"without {node} the others have {votes.present} "
                 f"vote(s) of the {needed_now} they need", "cluster", check=CHECK_QUORUM,
                 payload=payload,
                 remedy=f"pass --expected-votes {max(votes.present, 1)} (the guide's `pvecm "
                        "expected 1` for the nodes that stay), or bring more nodes first")]
