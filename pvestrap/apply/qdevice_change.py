"""A QDevice change planned on a running cluster (setup or remove), and the ways its steps
reach the members (this node by sh, the others over SSH) and the qnetd host (root SSH).

The steps are in pvestrap.apply.qdevice_certs (certificates) and pvestrap.apply.qdevice
(corosync.conf, the daemons, the verification, the whole change).
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, replace
from typing import Any

from pvestrap import qdevice as model
from pvestrap.apply import links
from pvestrap.apply.links import Cluster, LinkTimeouts, MemberHost
from pvestrap.apply.remote import Remote
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed, PvestrapError, UserError
from pvestrap.paths import COROSYNC_CONF
from pvestrap.render import Change
from pvestrap.system import System

QDEVICE_CERTUTIL = "corosync-qdevice-net-certutil"
QNETD_CERTUTIL = "corosync-qnetd-certutil"
# systemd where it runs (pvecm: systemctl start + enable); else the daemon itself, which
# forks into the background, and its own tool to shut it down.
START = ("if [ -d /run/systemd/system ]; then systemctl enable --now corosync-qdevice; "
         "elif ! corosync-qdevice-tool -s >/dev/null 2>&1; then "
         "corosync-qdevice </dev/null >/dev/null 2>&1; fi")
STOP = ("if [ -d /run/systemd/system ]; then systemctl disable --now corosync-qdevice; "
        "else corosync-qdevice-tool -H >/dev/null 2>&1 || :; i=0; "
        "while corosync-qdevice-tool -s >/dev/null 2>&1 && [ $i -lt 50 ]; do sleep 0.1; "
        "i=$((i+1)); done; fi")


@dataclass(frozen=True)
class QdeviceChange:
    """A QDevice change planned on this cluster: setup (`math` set) or remove (`math` None)."""

    cluster: Cluster
    qdevice: model.QDevice | None
    before: CorosyncConf
    after: CorosyncConf
    math: model.VoteMath | None

    @property
    def name(self) -> str:
        return str(self.before.cluster_name)

    @property
    def host(self) -> str:
        """The qnetd host of a setup (a removal's change may name no QDevice)."""
        assert self.qdevice is not None
        return self.qdevice.host

    def qnetd(self, system: System, control_path: str | None = None) -> Remote:
        t = self.cluster.timeouts
        return Remote(system, self.host, timeout=t.remote, connect_timeout=t.connect,
                      control_path=control_path)

    def diff(self) -> Change:
        """The corosync.conf edit every member gets (what the user reviews)."""
        return Change(COROSYNC_CONF, self.cluster.text, self.after.text(), 0o644)

    @property
    def local(self) -> MemberHost:
        return self.cluster.local

    @property
    def others(self) -> tuple[MemberHost, ...]:
        return tuple(m for m in self.cluster.members if not m.local)


def node_votes(conf: CorosyncConf) -> list[int]:
    return [v if isinstance(v, int) else 1 for v in (n.votes for n in conf.nodes)]


def read_setup(system: System, q: model.QDevice,
               timeouts: LinkTimeouts = LinkTimeouts()) -> QdeviceChange:
    """The cluster here and the setup planned on it. Bad input raises UserError (exit 2); a
    configured QDevice raises OperationFailed (exit 1), both before any change."""
    cluster = links.read_cluster(system, None, timeouts)
    conf = cluster.conf
    addresses = [a for n in conf.nodes for a in n.addresses.values()]
    model.check(q, addresses, [n.nodeid for n in conf.nodes if isinstance(n.nodeid, int)])
    if model.configured(conf) is not None:
        raise OperationFailed("QDevice already configured!", code="qdevice-configured",
                              remedy="remove it first: pvestrap qdevice remove")
    count = len(conf.nodes)  # an odd count is the preflight's to refuse (qdevice-odd-nodes)
    algorithm = q.resolved(count)
    if algorithm == "ffsplit" and count % 2:
        raise UserError(f"algorithm ffsplit needs an even node count, this cluster has {count}",
                        code="qdevice-algorithm-parity", remedy="use lms (the default here)")
    q = replace(q, algorithm=algorithm)
    after = model.with_device(conf, q)
    return QdeviceChange(cluster, q, conf, after, model.vote_math(node_votes(conf), algorithm))


def read_remove(system: System, timeouts: LinkTimeouts = LinkTimeouts()) -> QdeviceChange:
    cluster = links.read_cluster(system, None, timeouts)
    device = model.configured(cluster.conf)
    if device is None:
        raise OperationFailed("No QDevice configured!", code="qdevice-not-configured",
                              remedy="nothing to remove")
    host = device.get("host") or ""
    q = model.QDevice(host, device.get("algorithm"), device.get("tie_breaker", "lowest"))
    return QdeviceChange(cluster, q, cluster.conf, model.without_device(cluster.conf), None)


# -- running scripts on the members and the qnetd host ---------------------------------------------

def run_on(change: QdeviceChange, system: System, member: MemberHost, script: str, what: str,
           control_path: str | None = None, **kw) -> str:
    return change.cluster.access(system, member, control_path).run(script, what, **kw).stdout


each_member = links.each_safely  # a member's PvestrapError is its result, not a crash


def raise_errors(results: dict[str, Any], what: str, code: str) -> None:
    errors = [f"{name}: {r.message}" for name, r in results.items()
              if isinstance(r, PvestrapError)]
    if errors:
        raise OperationFailed(f"{what} failed on: " + "; ".join(errors), code=code)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode() + "\n"


def with_file(command: str) -> str:
    """A script that stores stdin's base64 in a temporary file $f, runs COMMAND, removes $f."""
    return (f"set -e; f=$(mktemp); trap 'rm -f \"$f\"' EXIT; base64 -d > \"$f\"; {command}")


def dir_snapshot_script(path: str) -> str:
    """Print `dir BASE64-TAR` or `none`: PATH as it is, for putting it back later."""
    parent, name = shlex.quote(path.rsplit("/", 1)[0]), shlex.quote(path.rsplit("/", 1)[1])
    return (f"if [ -d {shlex.quote(path)} ]; then printf 'dir '; tar -C {parent} -cf - {name} "
            "| base64 -w0; echo; else echo none; fi")


def dir_restore_script(path: str, snapshot: str | None) -> tuple[str, str]:
    """(script, stdin) making PATH what SNAPSHOT (a tar in base64, or None: absent) says."""
    parent = shlex.quote(path.rsplit("/", 1)[0])
    script = f"set -e; rm -rf {shlex.quote(path)}"
    if snapshot is None:
        return script, ""
    return script + f"; mkdir -p {parent}; base64 -d | tar -C {parent} -xf -", snapshot + "\n"


def parse_snapshot(out: str) -> str | None:
    line = out.strip().splitlines()[-1] if out.strip() else ""
    if line.startswith("dir "):
        return line[4:]
    if line == "none":
        return None
    raise OperationFailed(f"unexpected answer while saving a folder: {line[:80]!r}",
                          code="qdevice-snapshot-failed")
