"""Daemons inside lab nodes: corosync, chronyd (NTP server only, -x), sshd, and corosync-qnetd
on the qnetd host.

Each runs in its node's namespaces (nsenter into the holder), under libfaketime when the node
has a clock offset, detached from the caller, with its output in the node's /var/log. `start`
returns once the daemon listens on its port, so a test can use it right away.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pvestrap.errors import OperationFailed, UserError
from pvestrap.lab import effects, files, impair, names, proc, state

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    proto: str  # the socket table that shows it is up: tcp | udp
    port: int
    # A command in the node that succeeds once the daemon serves, where its port is no sign:
    # corosync of a one-node cluster has no link to open a knet socket for.
    answers: tuple[str, ...] = ()


SERVICES = {
    "corosync": Service("corosync", ("corosync", "-f"), "udp", 5405,
                        ("corosync-cmapctl", "-g", "totem.cluster_name")),
    "chrony": Service("chrony", ("chronyd", "-x", "-d", "-f", "/run/chrony-lab.conf"), "udp", 123),
    "sshd": Service("sshd", ("/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/sshd_config"),
                    "tcp", 22),
    # Debian's corosync-qnetd (the unit runs `corosync-qnetd -f`), on the qnetd host only.
    "qnetd": Service("qnetd", ("corosync-qnetd", "-f"), "tcp", 5403),
}
# Restarted when their node's clock offset changes: they hold no cluster state, and sessions
# already open keep running. corosync and qnetd are left alone (a restart is a membership
# change); `lab status` lists them, and every other process with the old clock, as stale.
CLOCK_RESTART = ("sshd", "chrony")
# What an SSH session in a node runs with: the directory of the Python running the lab (a
# venv's bin holds its pvestrap, the one `lab exec` finds) before Debian's default PATH.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
QNETD_DB = "etc/corosync/qnetd/nssdb"
# What the package's postinst does once: the qnetd CA (corosync-qnetd-certutil -i -G), its
# database readable by the coroqnetd group.
QNETD_INIT = ("sh", "-c", "corosync-qnetd-certutil -i -G >/dev/null && "
              "chgrp coroqnetd /etc/corosync/qnetd/nssdb /etc/corosync/qnetd/nssdb/cert9.db "
              "/etc/corosync/qnetd/nssdb/key4.db")


def service(name: str) -> Service:
    try:
        return SERVICES[name]
    except KeyError:
        raise UserError(f"unknown lab service {name!r}", code="lab-service-unknown",
                        remedy=f"use one of {', '.join(SERVICES)}") from None


def node_command(st: state.LabState, index: int, argv: list[str], net_only: bool = False) -> \
        tuple[list[str], dict[str, str]]:
    """(argv, extra environment) that run ARGV inside node INDEX."""
    spaces = ["-n"] if net_only else ["-n", "-m", "-u"]
    env = effects.faketime_env(impair.clock_offset(st.impairments, index))
    return ["nsenter", "-t", str(st.holders[index]), *spaces, *argv], env


def _prepare(st: state.LabState, index: int, svc: Service, env: dict[str, str]) -> None:
    root = st.root(index)
    if svc.name == "corosync" and not (root / "etc/corosync/corosync.conf").exists():
        raise UserError(f"{st.layout.node_name(index)} has no /etc/corosync/corosync.conf",
                        code="lab-corosync-unconfigured",
                        remedy="write one into the node first (e.g. `pvestrap lab corosync config"
                               f" --name {st.prefix}`)")
    if svc.name == "chrony":
        (root / "run/chrony-lab.conf").write_text(files.chrony_conf(st.links))
        # chronyd (no longer root) cannot remove its pid file; ours is not running (start()
        # checked), so a pid left there, maybe an unreaped zombie's, would only block it.
        (root / files.CHRONY_PID).unlink(missing_ok=True)
    if svc.name == "sshd":
        session = {"PATH": f"{os.path.dirname(sys.executable)}:{SYSTEM_PATH}", **env}
        keys = [k for k in ("ed25519", "rsa") if (root / f"etc/ssh/ssh_host_{k}_key").exists()]
        (root / "etc/ssh/sshd_config").write_text(files.sshd_config(session, keys))
    if svc.name == "qnetd":
        _prepare_qnetd(st, index)
    if shutil.which(svc.argv[0]) is None:
        raise UserError(f"{svc.argv[0]} is not installed", code="lab-tool-missing",
                        remedy=f"install the package that provides {svc.argv[0]}")


def _prepare_qnetd(st: state.LabState, index: int) -> None:
    if index != names.QNETD:
        raise UserError(f"{st.layout.node_name(index)} is a cluster node, not the qnetd host",
                        code="lab-qnetd-node", remedy="start qnetd on the lab's qnetd host "
                        "(`pvestrap lab up --qnetd`)")
    if shutil.which("corosync-qnetd-certutil") is None:
        raise UserError("corosync-qnetd is not installed", code="lab-tool-missing",
                        remedy="apt-get install corosync-qnetd")
    if not (st.root(index) / QNETD_DB / "cert9.db").exists():
        argv, env = node_command(st, index, list(QNETD_INIT))
        proc.run(argv)


def listening(pid: int, svc: Service) -> bool:
    """Whether PID's network namespace has a socket bound to the service's port (IPv4 or
    IPv6: corosync-qnetd listens on an IPv6 socket that takes both)."""
    lines = []
    for table in (svc.proto, svc.proto + "6"):
        try:
            lines += Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
    want = f":{svc.port:04X}"
    listen_state = "0A" if svc.proto == "tcp" else "07"
    return any(line.split()[1].endswith(want) and line.split()[3] == listen_state
               for line in lines if len(line.split()) > 3)


def start(st: state.LabState, index: int, name: str) -> state.LabState:
    svc = service(name)
    current = st.services.get(index, {}).get(name)
    node_net = st.netns.get(st.layout.node_name(index))
    if current and proc.alive(current, node_net):
        return st
    argv, env = node_command(st, index, list(svc.argv))
    _prepare(st, index, svc, env)
    log = st.layout.node_dir(index) / f"var/log/{name}.out"
    pid = proc.spawn(argv, log, env)
    # sshd's process title overwrites its /proc/PID/environ: the clock it got is kept here
    _clock_file(st, index, pid).write_text(env.get("FAKETIME", ""))
    deadline = time.monotonic() + START_TIMEOUT
    while not listening(pid, svc) and not _answers(st, index, svc):
        if not proc.alive(pid) or time.monotonic() > deadline:
            proc.kill([pid])
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise OperationFailed(f"{name} did not start on {st.layout.node_name(index)}"
                                  + ("".join(f"\n  {line}" for line in tail)),
                                  code="lab-service-failed")
        time.sleep(0.02)
    return st.with_service(index, name, pid)


def _answers(st: state.LabState, index: int, svc: Service) -> bool:
    if not svc.answers:
        return False
    argv, _ = node_command(st, index, list(svc.answers))
    return proc.run(argv, check=False, timeout=5).returncode == 0


def stop(st: state.LabState, index: int, name: str) -> state.LabState:
    service(name)
    pid = st.services.get(index, {}).get(name)
    if pid and proc.alive(pid, st.netns.get(st.layout.node_name(index))):
        left = proc.kill([pid], timeout=STOP_TIMEOUT, sig=signal.SIGTERM)
        proc.kill(left)
    return st.with_service(index, name, None)


def running(st: state.LabState) -> dict[int, dict[str, int]]:
    """The services that are really alive, per node."""
    out: dict[int, dict[str, int]] = {}
    for index, mine in st.services.items():
        net = st.netns.get(st.layout.node_name(index))
        alive = {n: pid for n, pid in mine.items() if proc.alive(pid, net)}
        if alive:
            out[index] = alive
    return out


def refresh(st: state.LabState, old: tuple[impair.Impairment, ...]) -> state.LabState:
    """Restart sshd and chronyd on every node whose clock offset differs between OLD and the
    state's impairments, so SSH sessions and NTP answers from now on carry the new clock."""
    for index, alive in running(st).items():
        if impair.clock_offset(old, index) == impair.clock_offset(st.impairments, index):
            continue
        for name in CLOCK_RESTART:
            if name in alive:
                st = start(stop(st, index, name), index, name)
    return st


def stale(st: state.LabState) -> dict[int, list[dict[str, str | int]]]:
    """Per node, the processes whose clock is not the node's setting (started before the last
    `lab impair --clock`): pid, command and the offset they run with. One pass over /proc."""
    nodes = {st.netns.get(st.layout.node_name(index)): index for index in st.hosts}
    nodes.pop(None, None)
    out: dict[int, list[dict[str, str | int]]] = {index: [] for index in st.hosts}
    for found in proc.processes():
        index = nodes.get(found.net)
        if index is None or found.pid == st.holders.get(index):
            continue
        want = effects.faketime_env(impair.clock_offset(st.impairments, index)).get("FAKETIME")
        have = _faketime(st, index, found.pid)
        if have != want:
            out[index].append({"pid": found.pid, "command": found.cmdline[:80],
                               "clock": have or "+0"})
    return out


def _clock_file(st: state.LabState, index: int, pid: int) -> Path:
    return st.root(index) / f"run/lab-clock.{pid}"


def _faketime(st: state.LabState, index: int, pid: int) -> str | None:
    try:
        return _clock_file(st, index, pid).read_text() or None
    except OSError:
        pass
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for item in raw.split(b"\0"):
        if item.startswith(b"FAKETIME="):
            return item[len(b"FAKETIME="):].decode(errors="replace")
    return None
