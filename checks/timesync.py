"""Time: is the local clock disciplined, and how far is it from the configured NTP servers?

PVE recommends chrony (the default since PVE 7) or ntpsec; systemd-timesyncd is an SNTP client
that only steps and slews crudely, so it is a warning, as is no daemon at all. The offset to each
NTP server is measured here with ntplib (four timestamps, NTP's offset = server - local), so a
node whose clock is ahead shows a negative offset; thresholds apply to its magnitude.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import LIVE, Sources
from pvestrap.findings import Finding, Severity, fail, warn
from pvestrap.plan import Thresholds
from pvestrap.system import Runner

FAMILY = "timesync"


@dataclass(frozen=True)
class SyncState:
    """What the local time daemon says. daemon: chrony | ntpsec | timesyncd | None."""

    daemon: str | None
    synced: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    servers: tuple[str, ...] = ()


def parse_chrony_tracking(text: str) -> dict[str, Any]:
    """`chronyc -n tracking` as a dict; system_time_s is positive when the clock is fast."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower().replace(" ", "_")] = value.strip()
    out: dict[str, Any] = {"leap_status": fields.get("leap_status"),
                           "reference": fields.get("reference_id"),
                           "stratum": _int(fields.get("stratum"))}
    m = re.match(r"([-+0-9.e]+) seconds (fast|slow)", fields.get("system_time", ""))
    if m:
        out["system_time_s"] = float(m.group(1)) * (1 if m.group(2) == "fast" else -1)
    return out


def parse_chrony_sources(text: str) -> tuple[str, ...]:
    """Server addresses from `chronyc -n sources` (lines starting with ^; = lines are peers)."""
    out = []
    for line in text.splitlines():
        if len(line) > 3 and line[0] == "^":
            out.append(line[3:].split()[0])
    return tuple(out)


def parse_ntpq_peers(text: str) -> tuple[bool, list[dict[str, Any]]]:
    """`ntpq -pn`: (synced, peers). The tally code '*' in the first column marks the system peer."""
    peers = []
    synced = False
    for line in text.splitlines():
        if not line or line.startswith(("     remote", "====")) or line[0] not in " *+-#ox.":
            continue
        parts = line[1:].split()
        if len(parts) < 10:
            continue
        synced = synced or line[0] == "*"
        peers.append({"remote": parts[0], "refid": parts[1], "tally": line[0].strip(),
                      "stratum": _int(parts[2]), "type": parts[3], "offset_ms": _float(parts[8])})
    return synced, peers


def parse_timedatectl(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def read_sync_state(runner: Runner, chronyc_host: str | None = None) -> SyncState:
    """Ask chrony, then ntpsec, then timedated, in that order: the first daemon that answers."""
    chronyc = ["chronyc", "-n"] + (["-h", chronyc_host] if chronyc_host else [])
    res = runner(chronyc + ["tracking"])
    if res.ok and "Leap status" in res.stdout:
        details = parse_chrony_tracking(res.stdout)
        srcs = runner(chronyc + ["sources"])
        servers = parse_chrony_sources(srcs.stdout) if srcs.ok else ()
        return SyncState("chrony", details["leap_status"] in ("Normal", "Insert second",
                                                              "Delete second"), details, servers)
    res = runner(["ntpq", "-pn"])
    if res.ok and res.stdout.strip():
        synced, peers = parse_ntpq_peers(res.stdout)
        return SyncState("ntpsec", synced, {"peers": peers},
                         tuple(p["remote"] for p in peers
                               if p["type"] != "p" and not p["remote"].startswith("127.")))
    res = runner(["timedatectl", "show"])
    if res.ok:
        props = parse_timedatectl(res.stdout)
        if props.get("NTP") == "yes":
            srv = runner(["timedatectl", "show-timesync", "-p", "ServerAddress", "--value"])
            servers = tuple(s for s in srv.stdout.split() if srv.ok)
            return SyncState("timesyncd", props.get("NTPSynchronized") == "yes",
                             {"ntp_synchronized": props.get("NTPSynchronized")}, servers)
    return SyncState(None)


class SharedSyncState:
    """read_sync_state once for the checks of one run: time-sync reads it, and ntp-offset too
    when neither the plan nor the options name servers. Each reading starts chronyc (and
    timedatectl where chrony does not answer); a mesh agent paid it twice, ~8 ms of CPU per
    node, all of them at once on a lab's shared cores. The reading is reused only for the same
    runner and chronyc host as the check asking (its own fields, not a copy of them here)."""

    def __init__(self) -> None:
        self._read: tuple[Runner, str | None, SyncState] | None = None

    def get(self, runner: Runner, chronyc_host: str | None) -> SyncState:
        read = self._read
        if read is None or read[0] is not runner or read[1] != chronyc_host:
            read = self._read = (runner, chronyc_host, read_sync_state(runner, chronyc_host))
        return read[2]


def _sync_state(shared: SharedSyncState | None, sources: Sources,
                chronyc_host: str | None) -> SyncState:
    if shared is None:
        return read_sync_state(sources.runner, chronyc_host)
    return shared.get(sources.runner, chronyc_host)


@dataclass(frozen=True)
class LocalSyncCheck:
    """The local clock is disciplined by chrony or ntpsec and synchronized."""

    id: ClassVar[str] = "time-sync"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "local clock synchronized by chrony or ntpsec"
    sources: Sources = LIVE
    chronyc_host: str | None = None  # chronyc -h: a socket path or host (tests, containers)
    shared: SharedSyncState | None = field(default=None, compare=False, repr=False)

    def run(self, ctx: Context) -> list[Finding]:
        state = _sync_state(self.shared, self.sources, self.chronyc_host)
        payload = {"daemon": state.daemon, "synced": state.synced, **state.details,
                   "servers": list(state.servers)}
        subject = ctx.node
        if state.daemon is None:
            return [warn("time-no-daemon", "no time daemon found (chrony, ntpsec or "
                         "systemd-timesyncd)", subject, check=self.id, payload=payload,
                         remedy="apt install chrony (PVE's default) and point it at your NTP "
                                "servers")]
        if not state.synced:
            return [warn("time-unsynced", f"{state.daemon} runs but the clock is not "
                         "synchronized", subject, check=self.id, payload=payload,
                         remedy=_unsynced_remedy(state.daemon))]
        if state.daemon == "timesyncd":
            return [warn("time-sync-weak", "the clock is synchronized by systemd-timesyncd, an "
                         "SNTP client without filtering", subject, check=self.id, payload=payload,
                         remedy="apt install chrony (it replaces systemd-timesyncd)")]
        return [Finding("time-synced", Severity.PASS,
                        f"the clock is synchronized by {state.daemon}", subject, self.id,
                        payload=payload)]


def _unsynced_remedy(daemon: str) -> str:
    return {"chrony": "check `chronyc sources -v`: are the servers reachable (UDP 123)?",
            "ntpsec": "check `ntpq -p`: are the servers reachable (UDP 123)?",
            }.get(daemon, "install chrony, or check `timedatectl timesync-status`")


@dataclass(frozen=True)
class NtpSample:
    server: str
    offset_s: float
    delay_s: float
    stratum: int
    leap: int


NtpQuery = Callable[[str, float], NtpSample]


def split_server(spec: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (host, port)."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 123
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 123


def ntplib_query(server: str, timeout: float) -> NtpSample:
    """One NTP exchange with ntplib. Raises OSError/ntplib.NTPException when there is no answer."""
    import ntplib

    host, port = split_server(server)
    resp = ntplib.NTPClient().request(host, version=4, port=port, timeout=timeout)
    return NtpSample(server, resp.offset, resp.delay, resp.stratum, resp.leap)


@dataclass(frozen=True)
class NtpOffsetCheck:
    """The offset of the local clock to each configured NTP server is within the thresholds.

    Servers: the plan's preflight.ntp_servers, else ctx.options["ntp_servers"], else the ones the
    local daemon uses. Queries run in parallel so unreachable servers cost one timeout, not many.
    """

    id: ClassVar[str] = "ntp-offset"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "clock offset to the configured NTP servers"
    sources: Sources = LIVE
    query: NtpQuery = ntplib_query
    timeout_s: float = 2.0
    chronyc_host: str | None = None
    shared: SharedSyncState | None = field(default=None, compare=False, repr=False)

    def run(self, ctx: Context) -> list[Finding]:
        servers = self._servers(ctx)
        if not servers:
            return [Finding("ntp-no-servers", Severity.SKIP, "no NTP servers configured or known",
                            ctx.node, self.id)]
        th = ctx.plan.preflight.thresholds if ctx.plan else Thresholds()
        from concurrent.futures import ThreadPoolExecutor  # ~3 ms to load: only with servers

        with ThreadPoolExecutor(max_workers=min(8, len(servers))) as pool:
            results = list(pool.map(self._ask, servers))
        return [self._judge(server, res, th, ctx.node) for server, res in zip(servers, results)]

    def _servers(self, ctx: Context) -> tuple[str, ...]:
        if ctx.plan and ctx.plan.preflight.ntp_servers:
            return tuple(ctx.plan.preflight.ntp_servers)
        if ctx.options.get("ntp_servers"):
            return tuple(ctx.options["ntp_servers"])
        return _sync_state(self.shared, self.sources, self.chronyc_host).servers

    def _ask(self, server: str) -> NtpSample | str:
        try:
            return self.query(server, self.timeout_s)
        except Exception as exc:  # ntplib raises NTPException, OSError, socket.gaierror ...
            return f"{type(exc).__name__}: {exc}"

    def _judge(self, server: str, res: NtpSample | str, th: Thresholds,
               node: str | None) -> Finding:
        subject = f"{node}/{server}" if node else server
        if isinstance(res, str):
            return warn("ntp-unreachable", f"NTP server {server} did not answer", subject,
                        check=self.id, payload={"server": server, "error": res},
                        remedy=f"check that {server} is reachable on UDP 123 from this node")
        payload = {"server": server, "offset_s": res.offset_s, "delay_s": res.delay_s,
                   "stratum": res.stratum, "leap": res.leap,
                   "warn_s": th.clock_warn_s, "fail_s": th.clock_fail_s}
        off = abs(res.offset_s)
        if res.leap == 3 or res.stratum == 0 or res.stratum >= 16:
            return warn("ntp-server-unsynced", f"NTP server {server} is not synchronized itself "
                        f"(stratum {res.stratum}, leap {res.leap})", subject, check=self.id,
                        payload=payload, remedy="use NTP servers that are synchronized")
        text = f"offset to {server} is {res.offset_s * 1000:+.1f} ms"
        if off > th.clock_fail_s:
            return fail("ntp-offset-high", text, subject, check=self.id, payload=payload,
                        remedy=f"the clock is more than {th.clock_fail_s:g} s off: let chrony step "
                               "it (chronyc makestep) and check that it uses this server")
        if off > th.clock_warn_s:
            return warn("ntp-offset-warn", text, subject, check=self.id, payload=payload,
                        remedy="wait for the time daemon to converge, or check its sources")
        return Finding("ntp-offset-ok", Severity.PASS, text, subject, self.id, payload=payload)


def checks(sources: Sources = LIVE) -> tuple[LocalSyncCheck, NtpOffsetCheck]:
    """Both checks, sharing one reading of the time daemon (call once per run)."""
    shared = SharedSyncState()
    return (LocalSyncCheck(sources, shared=shared), NtpOffsetCheck(sources, shared=shared))


__all__ = ["LocalSyncCheck", "NtpOffsetCheck", "NtpSample", "SharedSyncState", "SyncState",
           "checks", "ntplib_query", "parse_chrony_sources", "parse_chrony_tracking",
           "parse_ntpq_peers", "read_sync_state", "split_server"]

