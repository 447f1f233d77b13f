"""The lab's Python API: what `pvestrap lab`, the `lab` pytest fixture and the demo use.

    lab = Lab.up("demo", nodes=3, links=2, delay="n2:eth0=1ms")
    lab.exec("n1", ["ping", "-c1", "demo-n2"])
    lab.write_corosync(); lab.start("corosync")
    lab.down()

A Lab is only its prefix; everything else is read from the state file on each call, so several
processes (a test, a CLI call, a product step) can work on one lab.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from pvestrap.errors import UserError
from pvestrap.lab import (build, effects, files, impair, names, proc, pvenode, pvestack,
                          services, state, teardown)
from pvestrap.lab.state import LabState

NodeRef = int | str


@dataclass(frozen=True)
class LabNode:
    """One node as seen from outside: its name, addresses and the process holding it."""

    prefix: str
    index: int
    pid: int
    links: int

    @property
    def name(self) -> str:
        return names.Layout(self.prefix).node_name(self.index)

    @property
    def netns(self) -> str:
        return self.name

    def address(self, link: int = 0) -> str:
        return names.address(link, self.index)

    @property
    def addresses(self) -> dict[int, str]:
        return {link: self.address(link) for link in range(self.links)}

    @property
    def root(self) -> Path:
        """The node's file system from outside (/proc/PID/root): read and write its files."""
        return Path(f"/proc/{self.pid}/root")

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    @property
    def wrap(self) -> tuple[str, ...]:
        """Prefix that runs a command inside this node (for RealSystem(wrap=...))."""
        return ("nsenter", "-t", str(self.pid), "-n", "-m", "-u")


@dataclass(frozen=True)
class Lab:
    prefix: str

    # -- life cycle ----------------------------------------------------------------------------
    @classmethod
    def up(cls, prefix: str, nodes: int = 3, links: int = 1, pve: str | None = None,
           pve_sources: str | None = None, qnetd: bool = False, **flags) -> "Lab":
        """Create a lab; impairment FLAGS as in the CLI (delay="n2:eth0=1ms", loss=[...]).
        PVE ("8", "9"): every node runs that release's real cluster stack (pvestack).
        With QNETD, one more host on the link networks (not a cluster node) runs Debian's
        corosync-qnetd and sshd, as a QDevice's qnetd server."""
        names.check_prefix(prefix)
        names.check_size(nodes, links)
        _require_root()
        items = impair.merge((), impair.parse_flags(flags, prefix, nodes, links, qnetd=qnetd))
        effects.check_tools(items)
        layout = names.Layout(prefix)
        build.refuse_existing(layout)
        stack = None
        if pve is not None:
            stack = str(pvestack.ensure_built(pve, pvestack.sources_dir(pve_sources)))
        with state.locked(prefix, create=True):
            st = state.new(prefix, nodes, links, pve, stack, qnetd=qnetd)
            state.save(st)
            try:
                st = build.build(st)
                st = effects.apply(st, (), items)
                state.save(replace(st, impairments=items))
                if pve is not None:
                    st = pvenode.start(st)
                    state.save(st)
                if qnetd:
                    for service in ("sshd", "qnetd"):
                        st = services.start(st, names.QNETD, service)
                        state.save(st)
            except BaseException:
                teardown.down(prefix, lock=False)
                raise
        return cls(prefix)

    @classmethod
    def get(cls, prefix: str | None = None) -> "Lab":
        """An existing lab (the only one there is when PREFIX is None)."""
        found = cls(state.resolve(prefix))
        state.load(found.prefix)
        return found

    def down(self) -> teardown.Removed:
        return teardown.down(self.prefix)

    # -- reading -------------------------------------------------------------------------------
    @property
    def state(self) -> state.LabState:
        return state.load(self.prefix)

    @property
    def nodes(self) -> tuple[LabNode, ...]:
        st = self.state
        return tuple(LabNode(self.prefix, i, st.holders[i], st.links)
                     for i in range(1, st.nodes + 1))

    @property
    def qnetd(self) -> LabNode:
        """The qnetd host (`up(qnetd=True)`): not a cluster node; address link L .100."""
        st = self.state
        if not st.qnetd:
            raise UserError(f"lab {self.prefix} has no qnetd host", code="lab-no-qnetd",
                            remedy="create the lab with --qnetd")
        return LabNode(self.prefix, names.QNETD, st.holders[names.QNETD], st.links)

    def node(self, ref: NodeRef) -> LabNode:
        st = self.state
        index = self._index(st, ref)
        return LabNode(self.prefix, index, st.holders[index], st.links)

    def _index(self, st: LabState, ref: NodeRef) -> int:
        if isinstance(ref, int) and not isinstance(ref, bool):
            if 1 <= ref <= st.nodes:
                return ref
            ref = f"n{ref}"
        return names.node_index(str(ref), self.prefix, st.nodes, "node", qnetd=st.qnetd)

    # -- running things inside nodes -----------------------------------------------------------
    def command(self, ref: NodeRef, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """(argv, environment) running ARGV in the node, under libfaketime if it has an offset."""
        st = self.state
        cmd, extra = services.node_command(st, self._index(st, ref), list(argv))
        return cmd, {**os.environ, **extra}

    def exec(self, ref: NodeRef, argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
        """subprocess.run inside the node; output is captured as text unless told otherwise."""
        cmd, env = self.command(ref, argv)
        kw.setdefault("capture_output", "stdout" not in kw and "stderr" not in kw)
        kw.setdefault("text", True)
        return subprocess.run(cmd, env={**env, **kw.pop("env", {})}, **kw)

    def popen(self, ref: NodeRef, argv: Sequence[str], **kw) -> subprocess.Popen:
        """subprocess.Popen inside the node (the caller waits for it or kills it)."""
        cmd, env = self.command(ref, argv)
        return subprocess.Popen(cmd, env={**env, **kw.pop("env", {})}, **kw)

    # -- changing ------------------------------------------------------------------------------
    def impair(self, clear: bool = False, **flags) -> tuple[impair.Impairment, ...]:
        """Add or change impairments (CLI flag syntax); with CLEAR, start from none."""
        st = self.state
        new = impair.parse_flags(flags, self.prefix, st.nodes, st.links, qnetd=st.qnetd)
        effects.check_tools(new)
        with state.locked(self.prefix):
            st = self.state
            items = impair.merge(() if clear else st.impairments, new)
            old = st.impairments
            st = replace(effects.apply(st, old, items), impairments=items)
            state.save(st)
            state.save(services.refresh(st, old))
        return items

    def start(self, service: str, nodes: Iterable[NodeRef] | None = None) -> dict[str, int]:
        """Start SERVICE (corosync, chrony, sshd) on NODES (all by default); name -> pid."""
        return self._services(service, nodes, services.start)

    def stop(self, service: str, nodes: Iterable[NodeRef] | None = None) -> dict[str, int]:
        return self._services(service, nodes, services.stop)

    def _services(self, service: str, nodes, action) -> dict[str, int]:
        services.service(service)
        out = {}
        with state.locked(self.prefix):
            st = self.state
            indexes = [names.QNETD] if service == "qnetd" and nodes is None \
                else self._indexes(st, nodes)
            try:
                for index in indexes:
                    st = action(st, index, service)
            finally:
                state.save(st)
            for index in indexes:
                pid = st.services.get(index, {}).get(service)
                if pid:
                    out[st.layout.node_name(index)] = pid
        return out

    def _indexes(self, st: LabState, nodes) -> list[int]:
        if nodes is None:
            return list(range(1, st.nodes + 1))
        if isinstance(nodes, (str, int)):
            nodes = [nodes]
        return [self._index(st, ref) for ref in nodes]

    def write_corosync(self, nodes: Iterable[NodeRef] | None = None,
                       cluster_name: str | None = None, config_version: int = 1) -> str:
        """Write one corosync.conf and authkey into every listed node's /etc/corosync."""
        st = self.state
        indexes = self._indexes(st, nodes)
        text = files.corosync_conf(st.layout, indexes, st.links, cluster_name, config_version)
        key = os.urandom(256)
        for index in indexes:
            folder = st.root(index) / "etc/corosync"
            (folder / "corosync.conf").write_text(text)
            authkey = folder / "authkey"
            authkey.unlink(missing_ok=True)
            fd = os.open(authkey, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
        return text

    # -- describing ----------------------------------------------------------------------------
    def status(self) -> dict:
        st = self.state
        alive = services.running(st)
        stale = services.stale(st)
        layout = st.layout
        return {
            "name": self.prefix,
            "phase": st.phase,
            "links": st.links,
            "pve": st.pve,
            "nodes": [{
                "name": layout.node_name(i),
                "pid": st.holders.get(i),
                "up": proc.alive(st.holders.get(i), st.netns.get(layout.node_name(i))),
                "addresses": {f"link{link}": names.address(link, i) for link in range(st.links)},
                "services": {n: pid for n, pid in alive.get(i, {}).items()},
                "stale": stale.get(i, []),
            } for i in range(1, st.nodes + 1)],
            "qnetd": {
                "name": layout.node_name(names.QNETD), "pid": st.holders.get(names.QNETD),
                "up": proc.alive(st.holders.get(names.QNETD),
                                 st.netns.get(layout.node_name(names.QNETD))),
                "addresses": {f"link{link}": names.address(link, names.QNETD)
                              for link in range(st.links)},
                "services": dict(alive.get(names.QNETD, {})),
                "stale": stale.get(names.QNETD, []),
            } if st.qnetd else None,
            "impairments": [i.flag(self.prefix) for i in st.impairments],
            "neighbours": st.neighbours,
            "forwarder": st.forwarder if proc.alive(
                st.forwarder, st.netns.get(layout.switch_ns)) else None,
        }

    def plan(self):
        """The lab as a ClusterPlan (what `lab answers` prints)."""
        from pvestrap.lab.cluster import lab_plan

        return lab_plan(self.state)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("a lab needs root (network and mount namespaces)", code="lab-needs-root",
                        remedy="run it as root (sudo pvestrap lab up ...)")
