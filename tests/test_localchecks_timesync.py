"""Time sync state from recorded daemon outputs, and offset thresholds with a table NTP source.

The chronyc outputs were recorded from real chronyd 4.3 instances (-x) on the project machine.
ntpsec and systemd are not installed here (no systemd as PID 1): their outputs are written in
the tools' documented formats. The real ntplib exchange is in tests/lab/.
"""

from __future__ import annotations

import pytest

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import Sources
from pvestrap.checks.timesync import (LocalSyncCheck, NtpOffsetCheck, NtpSample, SharedSyncState,
                                      checks, parse_chrony_sources, parse_chrony_tracking,
                                      parse_ntpq_peers, read_sync_state, split_server)
from pvestrap.findings import Severity
from pvestrap.plan import ClusterPlan, Link, Node, Preflight, Thresholds
from pvestrap.system import CommandResult

CHRONY_SYNCED = """\
Reference ID    : 7F000001 (127.0.0.1)
Stratum         : 9
Ref time (UTC)  : Wed Nov 25 16:33:16 2026
System time     : 0.000002258 seconds fast of NTP time
Last offset     : -0.000000058 seconds
RMS offset      : 0.000000456 seconds
Frequency       : 0.664 ppm slow
Residual freq   : -0.774 ppm
Skew            : 2.646 ppm
Root delay      : 0.000007890 seconds
Root dispersion : 0.000002163 seconds
Update interval : 0.1 seconds
Leap status     : Normal
"""
CHRONY_SOURCES = """\
MS Name/IP address         Stratum Poll Reach LastRx Last sample               
===============================================================================
^* 127.0.0.1                     8  -4   377     0    -16ns[  -74ns] +/- 4180ns
^? 127.0.0.2                     8   6     3     1   +266ns[ -204ns] +/- 5516ns
"""  # noqa: W291 (chronyc's own trailing blanks)
CHRONY_UNSYNCED = """\
Reference ID    : 00000000 ()
Stratum         : 0
Ref time (UTC)  : Thu Jan 01 00:00:00 1970
System time     : 0.000000000 seconds fast of NTP time
Last offset     : +0.000000000 seconds
RMS offset      : 0.000000000 seconds
Frequency       : 0.000 ppm slow
Residual freq   : +0.000 ppm
Skew            : 0.000 ppm
Root delay      : 1.000000000 seconds
Root dispersion : 1.000000000 seconds
Update interval : 0.0 seconds
Leap status     : Not synchronised
"""
NTPQ = """\
     remote                                   refid      st t when poll reach   delay   offset   jitter
=======================================================================================================
 0.debian.pool.ntp.org                   .POOL.          16 p    -  256    0   0.0000   0.0000   0.0001
*10.1.2.3                                .GPS.            1 u   33   64  377   0.3812  -0.0212   0.0231
+10.1.2.4                                10.1.2.3         2 u   12   64  377   0.4410   0.1102   0.0310
"""  # noqa: E501 (ntpq's own line width)
TIMEDATECTL = "Timezone=Europe/Vienna\nLocalRTC=no\nCanNTP=yes\nNTP=yes\nNTPSynchronized={}\n"
NO = CommandResult((), 1, "", "not there")


def replay(outputs):
    """A Runner that answers from a table of argv tuples; anything else fails like a missing
    daemon."""
    def runner(argv):
        out = outputs.get(tuple(argv))
        return CommandResult(tuple(argv), 0, out) if out is not None else NO
    return runner


CHRONY = {("chronyc", "-n", "tracking"): CHRONY_SYNCED,
          ("chronyc", "-n", "sources"): CHRONY_SOURCES}


def test_parse_chrony_tracking_signs_the_system_time():
    got = parse_chrony_tracking(CHRONY_SYNCED)
    assert got == {"leap_status": "Normal", "reference": "7F000001 (127.0.0.1)", "stratum": 9,
                   "system_time_s": pytest.approx(2.258e-6)}
    slow = parse_chrony_tracking(CHRONY_SYNCED.replace("fast of", "slow of"))
    assert slow["system_time_s"] == pytest.approx(-2.258e-6)


def test_parse_chrony_sources_and_ntpq():
    assert parse_chrony_sources(CHRONY_SOURCES) == ("127.0.0.1", "127.0.0.2")
    synced, peers = parse_ntpq_peers(NTPQ)
    assert synced is True
    assert [(p["remote"], p["tally"], p["offset_ms"]) for p in peers] == [
        ("0.debian.pool.ntp.org", "", 0.0), ("10.1.2.3", "*", -0.0212), ("10.1.2.4", "+", 0.1102)]
    assert parse_ntpq_peers(NTPQ.replace("*10.1", " 10.1"))[0] is False


def test_chrony_synced_passes():
    [f] = LocalSyncCheck(Sources(runner=replay(CHRONY))).run(Context(node="pve1"))
    assert (f.code, f.severity) == ("time-synced", Severity.PASS)
    assert f.payload["daemon"] == "chrony" and f.payload["stratum"] == 9
    assert f.payload["servers"] == ["127.0.0.1", "127.0.0.2"]


def test_chrony_not_synchronised_warns():
    runner = replay({("chronyc", "-n", "tracking"): CHRONY_UNSYNCED})
    [f] = LocalSyncCheck(Sources(runner=runner)).run(Context())
    assert (f.code, f.severity, f.payload["daemon"]) == ("time-unsynced", Severity.WARN, "chrony")


def test_chronyc_host_is_passed_through():
    runner = replay({("chronyc", "-n", "-h", "/run/x.sock", "tracking"): CHRONY_SYNCED})
    state = read_sync_state(runner, "/run/x.sock")
    assert state.daemon == "chrony" and state.synced


def test_ntpsec_with_a_system_peer_passes_and_lists_servers_without_pools():
    state = read_sync_state(replay({("ntpq", "-pn"): NTPQ}))
    assert (state.daemon, state.synced, state.servers) == ("ntpsec", True,
                                                           ("10.1.2.3", "10.1.2.4"))
    [f] = LocalSyncCheck(Sources(runner=replay({("ntpq", "-pn"): NTPQ}))).run(Context())
    assert f.code == "time-synced"


@pytest.mark.parametrize("synced,code", [("yes", "time-sync-weak"), ("no", "time-unsynced")])
def test_timesyncd_is_weak_or_unsynced(synced, code):
    runner = replay({("timedatectl", "show"): TIMEDATECTL.format(synced),
                     ("timedatectl", "show-timesync", "-p", "ServerAddress", "--value"):
                         "10.1.2.3\n"})
    [f] = LocalSyncCheck(Sources(runner=runner)).run(Context())
    assert (f.code, f.severity, f.payload["daemon"]) == (code, Severity.WARN, "timesyncd")
    assert f.payload["servers"] == ["10.1.2.3"]


def test_no_daemon_warns():
    runner = replay({("timedatectl", "show"): TIMEDATECTL.format("no").replace("NTP=yes",
                                                                                "NTP=no")})
    [f] = LocalSyncCheck(Sources(runner=runner)).run(Context())
    assert (f.code, f.severity, f.payload["daemon"]) == ("time-no-daemon", Severity.WARN, None)
    [g] = LocalSyncCheck(Sources(runner=replay({}))).run(Context())
    assert g.code == "time-no-daemon"


def table_query(samples):
    def query(server, timeout):
        value = samples[server]
        if isinstance(value, Exception):
            raise value
        return NtpSample(server, value, 0.0004, 2, 0)
    return query


def plan_with(servers, warn=0.1, fail=1.0):
    return ClusterPlan("lab", (Node("pve1", 1, {0: "10.254.0.1"}),), (Link(0),),
                       preflight=Preflight(Thresholds(clock_warn_s=warn, clock_fail_s=fail),
                                           ntp_servers=tuple(servers)))


def test_offsets_are_judged_by_magnitude_against_the_plans_thresholds():
    servers = {"a": 0.01, "b": -0.5, "c": 3.0, "d": OSError("timed out")}
    check = NtpOffsetCheck(Sources(runner=replay({})), query=table_query(servers))
    found = check.run(Context(plan=plan_with(servers), node="pve1"))
    assert [(f.subject, f.code, f.severity) for f in found] == [
        ("pve1/a", "ntp-offset-ok", Severity.PASS), ("pve1/b", "ntp-offset-warn", Severity.WARN),
        ("pve1/c", "ntp-offset-high", Severity.FAIL),
        ("pve1/d", "ntp-unreachable", Severity.WARN)]
    assert found[1].payload["offset_s"] == -0.5 and found[1].payload["warn_s"] == 0.1
    assert "OSError" in found[3].payload["error"]


def test_custom_thresholds_move_the_verdict():
    servers = {"a": -0.5}
    check = NtpOffsetCheck(Sources(runner=replay({})), query=table_query(servers))
    [f] = check.run(Context(plan=plan_with(servers, warn=0.6, fail=2.0)))
    assert f.code == "ntp-offset-ok"


def test_servers_fall_back_to_options_then_the_daemons_sources():
    seen = []

    def query(server, timeout):
        seen.append(server)
        return NtpSample(server, 0.0, 0.001, 3, 0)

    NtpOffsetCheck(Sources(runner=replay({})), query=query).run(
        Context(options={"ntp_servers": ["x.example"]}))
    NtpOffsetCheck(Sources(runner=replay(CHRONY)), query=query).run(Context())
    assert seen[0] == "x.example" and sorted(seen[1:]) == ["127.0.0.1", "127.0.0.2"]


def test_one_run_reads_the_time_daemon_once():
    """time-sync and ntp-offset (no servers given) share one chronyc reading per run; a new
    run (new checks) reads again."""
    asked = []
    answer = replay(CHRONY)

    def runner(argv):
        asked.append(tuple(argv))
        return answer(argv)

    def query(server, timeout):
        return NtpSample(server, 0.0, 0.001, 3, 0)

    for _run in range(2):
        sync, offset = checks(Sources(runner=runner))
        offset = NtpOffsetCheck(offset.sources, query=query, shared=offset.shared)
        [f] = sync.run(Context(node="pve1"))
        found = offset.run(Context(node="pve1"))
        assert f.code == "time-synced" and f.payload["servers"] == ["127.0.0.1", "127.0.0.2"]
        assert sorted(g.subject for g in found) == ["pve1/127.0.0.1", "pve1/127.0.0.2"]
    assert asked == [("chronyc", "-n", "tracking"), ("chronyc", "-n", "sources")] * 2


def test_a_shared_reading_is_not_reused_for_another_chronyc_host():
    """Checks sharing one reading but asking different chronyc hosts each get their own."""
    shared = SharedSyncState()
    local = replay(CHRONY)
    remote = replay({("chronyc", "-n", "-h", "/run/x.sock", "tracking"): CHRONY_UNSYNCED})
    [here] = LocalSyncCheck(Sources(runner=local), shared=shared).run(Context())
    [there] = LocalSyncCheck(Sources(runner=remote), chronyc_host="/run/x.sock",
                             shared=shared).run(Context())
    assert (here.code, there.code) == ("time-synced", "time-unsynced")


def test_no_servers_is_a_skip():
    [f] = NtpOffsetCheck(Sources(runner=replay({}))).run(Context())
    assert (f.code, f.severity) == ("ntp-no-servers", Severity.SKIP)


def test_an_unsynchronized_server_is_not_trusted():
    def query(server, timeout):
        return NtpSample(server, 0.0, 0.001, 16, 3)
    [f] = NtpOffsetCheck(Sources(runner=replay({})), query=query).run(
        Context(options={"ntp_servers": ["s"]}))
    assert f.code == "ntp-server-unsynced"


@pytest.mark.parametrize("spec,expected", [("ntp1", ("ntp1", 123)), ("10.0.0.1:1123",
                                           ("10.0.0.1", 1123)), ("[fd12::1]:124", ("fd12::1", 124)),
                                           ("fd12::1", ("fd12::1", 123))])
def test_split_server(spec, expected):
    assert split_server(spec) == expected
