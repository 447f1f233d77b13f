"""`down`: remove a lab completely, also what a killed or half-built run left behind.

Leftovers are found three ways, so a missing or stale state file does not matter: the state
file's namespaces and pids, the namespaces named `<prefix>-sw` / `<prefix>-nK`, and every
process that lives in one of those namespaces or carries the lab's tag or state path on its
command line. Processes go first (a namespace dies with its last process and its name), then
the names, then the state folder.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from pvestrap.errors import UserError
from pvestrap.lab import names, proc, state

SWEEPS = 5


@dataclass(frozen=True)
class Removed:
    prefix: str
    processes: int
    namespaces: int
    survivors: tuple[int, ...] = ()


def lab_processes(layout: names.Layout, inodes: set[int]) -> list[int]:
    return [p.pid for p in proc.processes()
            if (p.net is not None and p.net in inodes) or layout.owns_cmdline(p.cmdline)]


def down(prefix: str, lock: bool = True) -> Removed:
    """Remove lab PREFIX. With LOCK, wait for a running `up`/`impair` of it to finish first (a
    killed one holds no lock)."""
    layout = names.Layout(names.check_prefix(prefix))
    if lock and layout.state_dir.exists():
        try:
            with state.locked(prefix):
                return _down(layout)
        except UserError:
            pass  # removed meanwhile: sweep by name below
    return _down(layout)


def _down(layout: names.Layout) -> Removed:
    st = state.try_load(layout.prefix)
    namespaces = [n for n in proc.netns_names() if layout.owns_netns(n)]
    inodes = {i for i in (proc.netns_inode(n) for n in namespaces) if i}
    if st is not None:
        inodes |= {i for i in st.netns.values() if i}
    killed: set[int] = set()
    survivors: list[int] = []
    for _ in range(SWEEPS):  # a half-started holder may still fork after the first sweep
        pids = [p for p in lab_processes(layout, inodes) if p not in killed]
        if not pids:
            break
        killed.update(pids)
        survivors = proc.kill(pids)
    if namespaces:
        proc.run_all([proc.ip_batch(f"netns delete {n}" for n in namespaces)], check=False)
    for name in [n for n in proc.netns_names() if layout.owns_netns(n)]:
        proc.run(["ip", "netns", "delete", name], check=False)  # a batch stops at its first error
    shutil.rmtree(layout.state_dir, ignore_errors=True)
    return Removed(layout.prefix, len(killed), len(namespaces), tuple(survivors))


def all_prefixes() -> list[str]:
    """Every lab on this machine: by state folder, and by the tag of any surviving holder."""
    found = set(state.prefixes())
    for p in proc.processes():
        prefix = names.prefix_of_tag(p.cmdline)
        if prefix:
            found.add(prefix)
    return sorted(found)
