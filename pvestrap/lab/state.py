"""A lab's state, in one place: /run/pvestrap-lab/<prefix>/state.json.

It is written before anything is created (so a killed `up` leaves a trail `down` follows) and
rewritten atomically after every change. Changes to one lab are serialised with a lock on its
state folder, so parallel `lab corosync start n1` / `n2` calls do not lose each other's pids.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed, UserError
from pvestrap.lab import impair, names

VERSION = 1
ROOT_LOCK = "/run/pvestrap-lab.lock"


@dataclass(frozen=True)
class LabState:
    prefix: str
    nodes: int
    links: int
    phase: str = "creating"  # creating | up
    holders: Mapping[int, int] = field(default_factory=dict)  # node -> pid
    netns: Mapping[str, int] = field(default_factory=dict)  # namespace name -> inode
    impairments: tuple[impair.Impairment, ...] = ()
    services: Mapping[int, Mapping[str, int]] = field(default_factory=dict)  # node -> name -> pid
    forwarder: int | None = None
    created: float = 0.0
    pve: str | None = None  # `up --pve`: the Proxmox VE release whose cluster stack nodes run
    pve_stack: str | None = None  # its cached build (a folder with usr/)
    qnetd: bool = False  # a qnetd host (names.QNETD) beside the nodes
    neighbours: int = 0  # permanent ARP entries written at up (lab.neighbours: a large lab)

    @property
    def hosts(self) -> tuple[int, ...]:
        """Every host the lab holds: the nodes, then the qnetd host if there is one."""
        return tuple(range(1, self.nodes + 1)) + ((names.QNETD,) if self.qnetd else ())

    @property
    def layout(self) -> names.Layout:
        return names.Layout(self.prefix)

    def root(self, index: int) -> Path:
        """Node INDEX's file system as the node sees it (its overlays and binds included), for
        reading and writing its files from outside, e.g. RealSystem(root=...)."""
        return Path(f"/proc/{self.holders[index]}/root")

    def with_service(self, node: int, service: str, pid: int | None) -> "LabState":
        services = {n: dict(s) for n, s in self.services.items()}
        mine = services.setdefault(node, {})
        if pid is None:
            mine.pop(service, None)
        else:
            mine[service] = pid
        return replace(self, services={n: s for n, s in services.items() if s})

    def to_json(self) -> str:
        data = asdict(self)
        data["version"] = VERSION
        data["impairments"] = [i.as_dict() for i in self.impairments]
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LabState":
        data = json.loads(text)
        return cls(
            prefix=data["prefix"], nodes=int(data["nodes"]), links=int(data["links"]),
            phase=data.get("phase", "creating"),
            holders={int(k): int(v) for k, v in data.get("holders", {}).items()},
            netns={str(k): int(v) for k, v in data.get("netns", {}).items()},
            impairments=impair.from_json(data.get("impairments", [])),
            services={int(k): {str(s): int(p) for s, p in v.items()}
                      for k, v in data.get("services", {}).items()},
            forwarder=data.get("forwarder"),
            created=float(data.get("created", 0.0)),
            pve=data.get("pve"), pve_stack=data.get("pve_stack"),
            qnetd=bool(data.get("qnetd", False)),
            neighbours=int(data.get("neighbours", 0)),
        )


def new(prefix: str, nodes: int, links: int, pve: str | None = None,
        pve_stack: str | None = None, qnetd: bool = False) -> LabState:
    return LabState(prefix=prefix, nodes=nodes, links=links, created=time.time(), pve=pve,
                    pve_stack=pve_stack, qnetd=qnetd)


def save(state: LabState) -> None:
    atomic_write(state.layout.state_file, state.to_json(), backup=False)


def load(prefix: str) -> LabState:
    path = names.Layout(prefix).state_file
    try:
        return LabState.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"there is no lab {prefix!r}", code="lab-unknown",
                        remedy=_which_labs()) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"the state of lab {prefix!r} ({path}) is unreadable: {exc}",
                        code="lab-state-broken",
                        remedy=f"remove the lab with `pvestrap lab down --name {prefix}`") from None


def try_load(prefix: str) -> LabState | None:
    try:
        return load(prefix)
    except UserError:
        return None


def prefixes() -> list[str]:
    """Labs that have a state folder (complete or not)."""
    try:
        return sorted(p.name for p in names.STATE_ROOT.iterdir()
                      if p.is_dir() and names.PREFIX_RE.match(p.name))
    except OSError:
        return []


def _which_labs() -> str:
    labs = prefixes()
    if not labs:
        return "create one with `pvestrap lab up --nodes 3`"
    return f"existing labs: {', '.join(labs)}"


def resolve(prefix: str | None) -> str:
    """--name, or the only lab there is."""
    if prefix:
        return names.check_prefix(prefix)
    labs = prefixes()
    if len(labs) == 1:
        return labs[0]
    raise UserError("there are several labs: which one?" if labs else "there is no lab",
                    code="lab-name-missing", remedy="pass --name PREFIX; " + _which_labs())


def _fstype(path: Path) -> str:
    """The file system type of the mount PATH is on."""
    best, fstype = "", ""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            head, _, tail = line.partition(" - ")
            point = head.split(" ")[4].encode().decode("unicode_escape")
            inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, fstype = point, tail.split(" ")[0]
    return fstype


def ensure_root() -> None:
    """Keep lab state on a tmpfs, as /run is on most systems: on a disk mounted with `discard`
    every removal of a lab's hundreds of files and folders costs milliseconds. Mounted once,
    under a lock and only while no lab exists, so nothing is ever hidden under it."""
    names.STATE_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    if _fstype(names.STATE_ROOT) == "tmpfs":
        return
    with open(ROOT_LOCK, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        # Never over existing labs: their state would vanish under the new mount.
        if _fstype(names.STATE_ROOT) != "tmpfs" and not os.path.ismount(names.STATE_ROOT) \
                and not any(names.STATE_ROOT.iterdir()):
            result = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=25%",
                                     "pvestrap-lab", str(names.STATE_ROOT)],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise OperationFailed(f"cannot mount a tmpfs on {names.STATE_ROOT}: "
                                      f"{result.stderr.strip()}", code="lab-state-mount")


@contextlib.contextmanager
def locked(prefix: str, create: bool = False) -> Iterator[Path]:
    """Hold the lab's lock (a flock on its state folder) for one change. With CREATE the folder
    must not exist yet: of two `up`s of one name, the second is refused, not merged."""
    folder = names.Layout(prefix).state_dir
    if create:
        ensure_root()
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            raise UserError(f"lab {prefix!r} exists already", code="lab-exists",
                            remedy=f"use it, remove it with `pvestrap lab down --name {prefix}`, "
                                   "or choose another --name") from None
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise UserError(f"there is no lab {prefix!r}", code="lab-unknown",
                        remedy=_which_labs()) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield folder
    finally:
        os.close(fd)
