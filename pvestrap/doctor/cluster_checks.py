"""The doctor's cluster checks: quorum, expected votes, versions, leftovers, answering nodes.

Sources: pve-docs pvecm.adoc ("Corosync External Vote Support": QDevices supported for even
node counts, discouraged for odd ones; "Remove a Cluster Node": the removed node's
/etc/pve/nodes/NAME and its SSH keys stay behind; "Requirements": no mixed major versions
outside an upgrade) and corosync's votequorum.c (runtime.votequorum.ev_barrier keeps the last
expected-votes value set by hand with `corosync-quorumtool -e` / `pvecm expected`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from pvestrap.checks.base import Context
from pvestrap.checks.link_senders import Senders
from pvestrap.checks.quorum import qdevice_votes, quorum_math
from pvestrap.checks.versions import compare_versions
from pvestrap.doctor import facts as F
from pvestrap.doctor.view import view_of
from pvestrap.findings import Finding, Severity, fail, info, passed, warn


def _votes(conf) -> list[int]:
    return [v if isinstance(v, int) else 1 for v in (n.votes for n in conf.nodes)]


@dataclass(frozen=True)
class QuorumCheck:
    id: ClassVar[str] = "quorum"
    family: ClassVar[str] = "quorum"
    title: ClassVar[str] = "quorate, every node a member; QDevice fit for the node count"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf, me = view.conf, view.me
        if conf is None or me is None:
            return []
        q = me.quorum
        if q is None:
            return [fail("quorum-unknown", f"{view.local}: corosync-quorumtool gave no status "
                         f"({me.errors.get(' '.join(F.QUORUM), 'no output')})", view.local,
                         check=self.id, remedy="is corosync running? `systemctl status corosync`")]
        qdevice = any(m.is_qdevice for m in q.members) or "Qdevice" in q.flags
        votes = _votes(conf)
        math = quorum_math(votes, qdevice)
        members = {m.nodeid for m in q.nodes_only}
        missing = sorted(n.name or str(n.nodeid) for n in conf.nodes if n.nodeid not in members)
        payload = {"nodes": len(votes), "members": len(members), "qdevice": qdevice,
                   "total_votes": math.total, "quorum": math.quorum,
                   "tolerance": math.tolerance,
                   "tolerance_without_qdevice": math.tolerance_without_qdevice}
        out = []
        if not q.quorate:
            out.append(fail("cluster-not-quorate", f"{view.local} is not quorate", "cluster",
                            check=self.id, payload=payload,
                            remedy="bring the missing nodes back; `pvecm expected` only as the "
                                   "guide's last resort, and set it back afterwards"))
        if missing:
            out.append(fail("member-missing", f"not members now: {', '.join(missing)}",
                            ", ".join(missing), check=self.id, payload={**payload,
                                                                        "missing": missing},
                            remedy="start corosync on them; check their links (knet-links)"))
        out += self._parity(len(votes), qdevice, math, payload)
        if q.quorate and not missing:
            out.append(passed("cluster-quorate", f"quorate, {len(members)}/{len(votes)} nodes, "
                              f"{math.tolerance} may fail", "cluster", self.id, payload=payload))
        return out

    def _parity(self, n: int, qdevice: bool, math, payload) -> list[Finding]:
        if qdevice and n % 2 == 1:
            return [warn("qdevice-odd-nodes", f"a QDevice with {n} nodes must carry "
                         f"{qdevice_votes(n)} votes: when it fails, no node may fail", "cluster",
                         check=self.id, payload=payload,
                         remedy="the guide discourages QDevices on odd node counts: "
                                "`pvecm qdevice remove`, or add a node")]
        if not qdevice and n == 2:
            return [warn("two-node-no-qdevice", "a 2-node cluster loses quorum when either "
                         "node fails", "cluster", check=self.id, payload=payload,
                         remedy="add a QDevice (`pvecm qdevice setup HOST`), as the guide "
                                "recommends for 2 nodes")]
        text = (f"{n} nodes{' + QDevice' if qdevice else ''}: {math.tolerance} node(s) may fail"
                + (f", {math.tolerance_without_qdevice} once the QDevice is gone" if qdevice
                   else ""))
        return [info("quorum-tolerance", text, "cluster", self.id, payload=payload)]


@dataclass(frozen=True)
class ExpectedVotesCheck:
    id: ClassVar[str] = "expected-votes"
    family: ClassVar[str] = "quorum"
    title: ClassVar[str] = "expected votes not lowered by hand (pvecm expected) and left so"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf = view.conf
        if conf is None:
            return []
        out: list[Finding] = []
        for name, node in sorted(view.nodes.items()):
            q = node.quorum
            qd = sum(m.votes or 0 for m in q.members if m.is_qdevice) if q else 0
            configured = sum(_votes(conf)) + qd
            barrier = node.runtime(F.VOTEQUORUM, "runtime.votequorum.ev_barrier")
            payload = {"node": name, "configured": configured, "barrier": barrier,
                       "expected": q.expected_votes if q else None}
            if q and q.expected_votes is not None and q.expected_votes < configured:
                out.append(fail("expected-votes-lowered", f"{name}: corosync expects "
                                f"{q.expected_votes} votes, the nodelist has {configured}: "
                                f"quorum is {q.quorum} instead of {configured // 2 + 1}", name,
                                check=self.id, payload=payload, remedy=_remedy(configured)))
            elif barrier is not None and barrier < configured:
                lower = barrier // 2 + 1 < configured // 2 + 1
                sev = Severity.FAIL if lower else Severity.WARN
                out.append(Finding("expected-votes-set-by-hand", sev, f"{name}: expected votes "
                                   f"were set to {barrier} by hand (corosync-quorumtool -e / "
                                   f"pvecm expected) and never set back to {configured}"
                                   + (": the members present then still count on quorum "
                                      f"{barrier // 2 + 1}" if lower else ""), name, self.id,
                                   payload=payload, remedy=_remedy(configured)))
        if out:
            return out
        return [passed("expected-votes-ok", "expected votes as the nodelist says", "cluster",
                       self.id)]


def _remedy(configured: int) -> str:
    return (f"once every node is a member: `pvecm expected {configured}` (or corosync-quorumtool "
            f"-e {configured}); a corosync restart also resets it")


@dataclass(frozen=True)
class VersionsCheck:
    id: ClassVar[str] = "versions"
    family: ClassVar[str] = "versions"
    title: ClassVar[str] = "corosync, pve-manager, pve-cluster major versions equal; kernels"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        seen = {n: dict(v.facts.get("versions") or {}) for n, v in sorted(view.nodes.items())}
        out = [info("versions-node", ", ".join(f"{p} {v}" for p, v in vs.items() if v),
                    n, self.id, payload={"node": n, **vs}) for n, vs in seen.items()]
        if len(seen) < 2:
            return out
        out += compare_versions(seen, self.id, ("corosync", "pve-manager", "pve-cluster"))
        kernels = {n: vs.get("kernel") for n, vs in seen.items() if vs.get("kernel")}
        if len(set(kernels.values())) > 1:
            out.append(info("kernel-differs", "kernels differ: " + ", ".join(
                f"{n} {k}" for n, k in kernels.items()), "kernel", self.id,
                payload={"kernels": kernels}, remedy="reboot into the same kernel when "
                                                     "convenient"))
        return out


@dataclass(frozen=True)
class LeftoverNodesCheck:
    id: ClassVar[str] = "leftover-nodes"
    family: ClassVar[str] = "leftovers"
    title: ClassVar[str] = "no /etc/pve/nodes/NAME or known_hosts entry of a removed node"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf, me = view.conf, view.me
        if conf is None or me is None:
            return []
        names = {n.name for n in conf.nodes if n.name}
        addresses = {a for n in conf.nodes for a in n.addresses.values()}
        out = []
        dirs = me.facts.get("pve_nodes")
        for extra in sorted(set(dirs or ()) - names):
            out.append(fail("leftover-node-dir", f"/etc/pve/nodes/{extra} belongs to no node of "
                            "the nodelist: a removed node's configuration is still there",
                            extra, check=self.id, payload={"node": extra, "nodes": sorted(names)},
                            remedy=f"after checking it holds no guest you still need "
                                   f"(qemu-server/, lxc/), remove it: rm -rf /etc/pve/nodes/"
                                   f"{extra} (the guide's Remove a Cluster Node)"))
        for host in _known_hosts(me.file(F.PVE_KNOWN_HOSTS)):
            if host not in names and host not in addresses:
                out.append(warn("leftover-known-host", f"{F.PVE_KNOWN_HOSTS} still trusts "
                                f"{host}, which is not in the nodelist", host, check=self.id,
                                payload={"host": host},
                                remedy=f"ssh-keygen -f {F.PVE_KNOWN_HOSTS} -R {host}; then "
                                       "`pvecm updatecerts` (a new node with that name or IP "
                                       "would otherwise be refused)"))
        if out:
            return out
        if dirs is None:
            return [Finding("leftover-nodes-no-pve", Severity.SKIP, "no /etc/pve/nodes (not a "
                            "Proxmox VE node, or pmxcfs is not mounted)", view.local, self.id)]
        return [passed("leftover-none", f"/etc/pve/nodes holds only the {len(names)} nodes",
                       "nodes", self.id)]


def _known_hosts(text: str | None) -> list[str]:
    out: list[str] = []
    for line in (text or "").splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(("#", "|", "@")):
            continue  # comments, hashed names and markers name no host we can compare
        for host in fields[0].split(","):
            host = host.strip("[]").split("]:", 1)[0]
            if host and host not in out:
                out.append(host)
    return out


@dataclass(frozen=True)
class LinkStrangersCheck:
    id: ClassVar[str] = "link-strangers"
    family: ClassVar[str] = "leftovers"
    title: ClassVar[str] = "no host outside the nodelist sends to the link ports"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        conf = view.conf
        if conf is None:
            return []
        known = {a for n in conf.nodes for a in n.addresses.values()}
        for node in view.nodes.values():
            known |= {a for addrs in (node.facts.get("resolved") or {}).values() for a in addrs}
        out, listened = [], 0
        for name, node in sorted(view.nodes.items()):
            heard = Senders.from_dict(node.facts.get("senders"))
            if heard.error or "senders" not in node.facts:
                out.append(Finding("link-strangers-unheard", Severity.SKIP, f"{name}: "
                                   f"{heard.error or 'not listened'}", name, self.id))
                continue
            listened += 1
            mine = node.machine
            for source, ports in sorted(heard.seen.items()):
                if source in known or ipaddress.ip_address(source).is_loopback or \
                        (mine is not None and mine.carrying(source)):
                    continue
                out.append(fail("link-stranger", f"{source} sent {sum(ports.values())} "
                                f"datagram(s) to {name}'s link port(s) "
                                f"{', '.join(map(str, sorted(ports)))} but is in no node's "
                                "link addresses", source, check=self.id,
                                payload={"node": name, "source": source,
                                         "ports": {str(p): n for p, n in ports.items()},
                                         "seconds": heard.seconds},
                                remedy="a removed node still running corosync? Power it off "
                                       "for good, or separate it (the guide's Separate a Node "
                                       "Without Reinstalling); else find what sends there"))
        if listened and not any(f.severity is Severity.FAIL for f in out):
            out.append(passed("link-strangers-none", f"only nodelist addresses sent to the link "
                              f"ports ({listened} node(s) listened)", "links", self.id))
        return out


@dataclass(frozen=True)
class AnsweredCheck:
    id: ClassVar[str] = "mesh-nodes"
    family: ClassVar[str] = "plan"
    title: ClassVar[str] = "every node of the nodelist answered (--mesh)"

    def run(self, ctx: Context) -> list[Finding]:
        view = view_of(ctx)
        if not view.mesh:
            return []
        out = [fail("node-unreachable", f"{n}: {why}", n, check=self.id,
                    remedy="check SSH root key login to the node and that pvestrap is "
                           "installed there (--remote-command); its own checks did not run")
               for n, why in sorted(view.unanswered.items())]
        return out or [passed("mesh-all-answered", f"{len(view.nodes)} nodes answered", "mesh",
                              self.id)]


def checks() -> tuple:
    return (AnsweredCheck(), QuorumCheck(), ExpectedVotesCheck(), VersionsCheck(),
            LeftoverNodesCheck(), LinkStrangersCheck())
