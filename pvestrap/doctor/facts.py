"""What `pvestrap doctor` reads on one node: files, corosync's runtime view, a knet window.

Everything here is read-only. The result is a plain JSON-able dict, so the mesh agent can
send it to the orchestrator, which runs the checks over every node's facts at once; parsing
happens in the checks (pvestrap.doctor.view), in one place, whichever node gathered.

Secrets never leave the node: the authkey is hashed here (SHA-256) and only the hash is kept.
Files are read as size-bounded regular files; a missing file is None, not an error.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from pvestrap.checks import link_senders
from pvestrap.checks.base import Context
from pvestrap.checks.localsys import LIVE, Sources, short_hostname
from pvestrap.checks.timesync import read_sync_state
from pvestrap.checks.versions import parse_corosync_version, parse_pveversion
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.corosync.status import QUORUMTOOL
from pvestrap.corosync.tree import ConfParseError, as_int
from pvestrap.paths import (AUTHKEY, COROSYNC_CONF, DATACENTER_CFG, PVE_COROSYNC_CONF,
                            PVE_KNOWN_HOSTS, PVE_NODES)

MAX_FILE_BYTES = 1 << 20
STORAGE_CFG = "/etc/pve/storage.cfg"

QUORUM = QUORUMTOOL
RUNTIME_VERSION = ("corosync-cmapctl", "-g", "totem.config_version")
VOTEQUORUM = ("corosync-cmapctl", "runtime.votequorum.")
RUNTIME_TOTEM = ("corosync-cmapctl", "runtime.config.totem.")
KNET_STATS = ("corosync-cmapctl", "-m", "stats", "stats.knet.")
CFGTOOL = ("corosync-cfgtool", "-s")
PACKAGES = ("corosync", "pve-manager", "pve-cluster")


def read_file(root: str, path: str) -> str | None:
    """A regular file under ROOT as text (at most MAX_FILE_BYTES), or None when absent."""
    full = os.path.join(root, path.lstrip("/"))
    try:
        info = os.stat(full)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    with open(full, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return None
    return data.decode("utf-8", errors="replace")


def file_sha256(root: str, path: str) -> str | None:
    full = os.path.join(root, path.lstrip("/"))
    try:
        if not stat.S_ISREG(os.stat(full).st_mode):
            return None
        with open(full, "rb") as fh:
            return hashlib.sha256(fh.read(MAX_FILE_BYTES)).hexdigest()
    except OSError:
        return None


def list_dirs(root: str, path: str) -> list[str] | None:
    full = os.path.join(root, path.lstrip("/"))
    try:
        return sorted(e.name for e in os.scandir(full) if e.is_dir(follow_symlinks=False))
    except OSError:
        return None


def _output(sources: Sources, argv: tuple[str, ...]) -> dict[str, Any]:
    res = sources.runner(list(argv))
    return {"rc": res.rc, "stdout": res.stdout, "stderr": res.stderr.strip()[-400:]}


def snapshot(root: str = "/", sources: Sources = LIVE) -> dict[str, Any]:
    """The node's static facts: files, corosync's runtime answers, versions, names, time."""
    machine = sources.machine_for(Context(root=root))
    conf = read_file(root, COROSYNC_CONF)
    facts: dict[str, Any] = {
        "hostname": short_hostname(machine.hostname),
        "root": root,
        "files": {p: read_file(root, p) for p in (COROSYNC_CONF, PVE_COROSYNC_CONF,
                                                  DATACENTER_CFG, STORAGE_CFG, PVE_KNOWN_HOSTS)},
        "authkey_sha256": file_sha256(root, AUTHKEY),
        "pve_nodes": list_dirs(root, PVE_NODES),
        "commands": {" ".join(a): _output(sources, a) for a in (QUORUM, RUNTIME_VERSION,
                                                                VOTEQUORUM, RUNTIME_TOTEM)},
        "machine": machine.to_dict(),
        "versions": versions(sources),
        "resolved": resolve_names(conf, sources.resolver),
        "hostname_addresses": list(sources.resolver(machine.hostname)),
    }
    sync = read_sync_state(sources.runner)
    facts["time"] = {"daemon": sync.daemon, "synced": sync.synced,
                     "servers": list(sync.servers)}
    return facts


def versions(sources: Sources) -> dict[str, str | None]:
    """corosync, pve-manager, pve-cluster (dpkg-query) and the running kernel."""
    out: dict[str, str | None] = {}
    for package in PACKAGES:
        res = sources.runner(["dpkg-query", "-W", "-f", "${Version}", package])
        out[package] = res.stdout.strip() or None if res.ok else None
    if out["corosync"] is None:  # not a Debian package (a source build): ask the binary
        res = sources.runner(["corosync", "-v"])
        out["corosync"] = parse_corosync_version(res.stdout) if res.ok else None
    if out["pve-manager"] is None:
        res = sources.runner(["pveversion"])
        out["pve-manager"] = parse_pveversion(res.stdout) if res.ok else None
    out["kernel"] = os.uname().release
    return out


def conf_addresses(text: str | None) -> list[str]:
    """Every link address of the nodelist (empty when the file is absent or unreadable)."""
    try:
        conf = CorosyncConf.parse(text) if text else None
    except ConfParseError:
        return []
    return [a for node in (conf.nodes if conf else ()) for a in node.addresses.values()]


def resolve_names(conf_text: str | None, resolver: Callable[[str], tuple[str, ...]]) -> \
        dict[str, list[str]]:
    """name -> addresses for every link address in corosync.conf that is not an IP address:
    what getaddrinfo gives on THIS node (corosync resolves them once, at start)."""
    out: dict[str, list[str]] = {}
    for address in conf_addresses(conf_text):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            out[address] = list(resolver(address))
    return out


def link_ports(conf_text: str | None) -> list[int]:
    """The UDP ports knet listens on: totem.interface.N.mcastport, else 5405 + N."""
    try:
        conf = CorosyncConf.parse(conf_text or "")
    except ConfParseError:
        return []
    totem = conf.tree.section("totem")
    given = {}
    for iface in (totem.sections("interface") if totem else ()):
        number, port = as_int(iface.get("linknumber", iface.get("ringnumber", "0"))), \
            as_int(iface.get("mcastport"))
        if isinstance(number, int) and isinstance(port, int):
            given[number] = port
    return sorted({given.get(n, 5405 + n) for n in conf.link_numbers})


def watch_window(window_s: float, ports: Sequence[int], sources: Sources = LIVE) -> \
        tuple[list[dict[str, Any]], dict[str, Any]]:
    """The knet window, and meanwhile who sends to the link PORTS (checks.link_senders)."""
    box: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: box.update(
        senders=link_senders.listen(ports, window_s).to_dict()), daemon=True)
    thread.start()
    samples = sample_window(window_s, sources=sources)
    thread.join(timeout=window_s + 5)
    return samples, box.get("senders") or {"error": "the listener did not finish"}


def sample_window(window_s: float, interval_s: float = 0.5, sources: Sources = LIVE,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """knet's own statistics and link states, sampled every INTERVAL_S over WINDOW_S seconds
    (at least two samples: the first and the last bound the window)."""
    samples = []
    start = clock()
    while True:
        now = clock()
        samples.append({"t": round(now - start, 3),
                        "knet": _output(sources, KNET_STATS),
                        "links": _output(sources, CFGTOOL)})
        if now - start >= window_s and len(samples) >= 2:
            return samples
        sleep(max(0.0, min(interval_s, window_s - (clock() - start))) or 0.05)


def add_window(facts: dict[str, Any], window_s: float, sources: Sources = LIVE) -> None:
    """facts["window"] and facts["senders"], measured now over WINDOW_S seconds."""
    ports = link_ports((facts.get("files") or {}).get(COROSYNC_CONF))
    facts["window"], facts["senders"] = watch_window(window_s, ports, sources)
