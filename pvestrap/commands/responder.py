"""`pvestrap responder`: answer preflight probes from peers until the TTL runs out."""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import List, Optional, Sequence

import typer

DEFAULT_PID_FILE = "/run/pvestrap-responder.pid"


def command(
    port: Optional[List[int]] = typer.Option(
        None, "--port", "-p", help="UDP port to answer on (repeatable). Default: 5404 and 5405, "
        "or 5404 plus every link's port (5405+N) of --answers."),
    answers: Optional[str] = typer.Option(
        None, "--answers", help="Answer file whose links decide the ports."),
    address: Optional[List[str]] = typer.Option(
        None, "--address", "-a", help="Local address to listen on (repeatable). Default: all."),
    token_file: Optional[str] = typer.Option(
        None, "--token-file", help="File whose first line is the run's probe token."),
    token: Optional[str] = typer.Option(
        None, "--token", help="The probe token itself (visible in the process list: prefer "
        "--token-file or $PVESTRAP_PROBE_TOKEN)."),
    ttl: float = typer.Option(600.0, "--ttl", help="Exit after this many seconds."),
    rate: float = typer.Option(250.0, "--rate", help="Replies per second per source address."),
    background: bool = typer.Option(
        False, "--background", help="Detach and write --pid-file; does nothing when a responder "
        "already holds the pid file."),
    pid_file: str = typer.Option(DEFAULT_PID_FILE, "--pid-file", help="Pid file for --background "
                                 "and --stop."),
    log_file: Optional[str] = typer.Option(None, "--log-file", help="Log file in the background."),
    stop: bool = typer.Option(False, "--stop", help="Stop the background responder of --pid-file."),
    agent: bool = typer.Option(False, "--agent", hidden=True),
) -> int:
    """Answer authenticated preflight probes on UDP 5404 and each link's port (5405+N).

    Unauthenticated datagrams get no answer, replies are never larger than the probe and are
    rate-limited per source; a port that corosync already owns is answered through a raw socket.
    """
    if agent:  # what apply starts over ssh on a member it probes (its job on stdin)
        from pvestrap.mesh import responder_agent_main

        return responder_agent_main()
    from pvestrap.checks import responder as rsp

    if stop:
        pid = rsp.stop_running(pid_file)
        _log(f"stopped pid {pid}" if pid else "no responder was running")
        return 0
    config = _config(port, answers, address, token, token_file, ttl, rate)
    lock = rsp.PidLock(pid_file) if background else None
    if lock is not None and not lock.acquire():
        _log(f"already running (pid {rsp.PidLock(pid_file).holder()}): nothing to do")
        return 0
    server = rsp.Responder(config, _log)
    server.open()
    if lock is not None:
        # the daemon changes to / before it opens the log file
        pid = rsp.daemonize(lock, os.path.abspath(log_file) if log_file else None)
        if pid is not None:
            _log(f"running in the background as pid {pid} for {ttl:g} s (pid file {pid_file})")
            return 0
    _serve(server)
    if lock is not None:
        os._exit(0)  # the daemon must not run the parent's exit handlers
    return 0


def _log(message: str) -> None:
    print(f"responder: {message}", file=sys.stderr, flush=True)


def _config(port: Optional[List[int]], answers: Optional[str], address: Optional[List[str]],
            token: Optional[str], token_file: Optional[str], ttl: float, rate: float):
    """The responder's settings from the options, checked (UserError on a bad one)."""
    from pvestrap.checks import responder as rsp
    from pvestrap.checks.probe import load_token

    _check_settings(ttl, rate, address or ())
    return rsp.ResponderConfig(
        token=load_token(token, token_file), ports=_ports(port, answers, rsp),
        addresses=tuple(address or ()), ttl_s=ttl, rate_pps=rate, burst=max(rate, 1.0))


def _serve(server) -> None:
    """Answer until the TTL runs out, then say what was answered and what was dropped."""
    try:
        stats = server.serve()
    finally:
        server.close()
    _log(f"answered {stats.answered}, dropped {stats.rejected} unauthenticated, "
         f"{stats.stale} stale, {stats.replayed} replayed, rate-limited {stats.rate_limited} "
         f"(per source) and {stats.over_budget} (all sources)")


def _check_settings(ttl: float, rate: float, addresses: Sequence[str]) -> None:
    """Refuse settings that would disable a safety bound (nan, inf) or make no sense."""
    from pvestrap.checks.admission import MAX_RATE_PPS, MAX_TTL_S, check_setting
    from pvestrap.errors import UserError

    for flag, value, upper, example in (("--ttl", ttl, MAX_TTL_S, "--ttl 600"),
                                        ("--rate", rate, MAX_RATE_PPS, "--rate 250")):
        problem = check_setting(flag, value, upper)
        if problem:
            raise UserError(problem, remedy=f"e.g. {example} (at most {upper:g})")
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UserError(f"--address {address!r} is not an IP address",
                            remedy="give an IPv4 or IPv6 address of this machine, e.g. "
                                   "--address 10.0.0.1") from None


def _ports(given: Optional[List[int]], answers: Optional[str], rsp) -> tuple[int, ...]:
    from pvestrap.errors import UserError

    if given and answers:
        raise UserError("give --port or --answers, not both", remedy="drop one of them")
    if given:
        bad = [p for p in given if not 0 <= p <= 65535]
        if bad:
            raise UserError(f"--port {bad[0]} is not a UDP port",
                            remedy="use 1..65535 (0: any free port, for tests)")
        return tuple(sorted({p for p in given if p})) + tuple(p for p in given if not p)
    if answers:
        from pvestrap.answers import load

        return rsp.ports_for_links(load(answers).link_numbers)
    return rsp.DEFAULT_PORTS
