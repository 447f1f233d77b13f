"""The preflight: which checks run where, and one Report out of them.

Local checks read this machine; network checks read the measurements the prober made against
the peers' responders (checks.prober). The CLI (`pvestrap preflight`), `apply` and the wizard
all come through here, so the three can never disagree about what "preflight passed" means.
"""

from __future__ import annotations

import socket
import time
import dataclasses
from typing import Any, Callable, Mapping, Sequence

from pvestrap import __version__
from pvestrap.checks.base import Check, Context
from pvestrap.checks.runner import run_checks
from pvestrap.plan import ClusterPlan
from pvestrap.report.model import Report


def local_checks() -> tuple[Check, ...]:
    """Checks that need only this machine (and the plan)."""
    from pvestrap.checks import identity, joinable, nics, quorum, timesync, versions

    return (*identity.checks(), *timesync.checks(), *nics.checks(), *joinable.checks(),
            *versions.checks(), *quorum.checks())


def network_checks() -> tuple[Check, ...]:
    """Checks that read the probe measurements (ports, latency, MTU, clock offset, TCP, DAD)."""
    from pvestrap.checks.addresses import AddressCheck
    from pvestrap.checks.clockpair import ClockPairCheck
    from pvestrap.checks.latency import LatencyCheck
    from pvestrap.checks.mtu import MtuCheck
    from pvestrap.checks.ports import PortsCheck
    from pvestrap.checks.tcp import TcpCheck

    return (PortsCheck(), LatencyCheck(), MtuCheck(), ClockPairCheck(), TcpCheck(),
            AddressCheck())


def all_checks() -> tuple[Check, ...]:
    return local_checks() + network_checks()


def check_catalogue() -> list[tuple[str, str, str]]:
    """(id, family, title) of every check, for `preflight --help` and `--list-checks`."""
    return [(c.id, c.family, c.title) for c in all_checks()]


def run_local(plan: ClusterPlan | None, node: str | None, root: str = "/",
              ignore: Sequence[str] = (), on_progress: Callable[[Check], None] | None = None,
              options: Mapping[str, Any] | None = None) -> Report:
    """Local checks only: what `apply` runs as its gate on a node, before the first change."""
    return _run(local_checks(), plan, node, root, ignore, on_progress,
                _with_machine(options, root), {})


def run_with_probes(plan: ClusterPlan | None, node: str | None, probes: Mapping[str, Any],
                    root: str = "/", ignore: Sequence[str] = (),
                    on_progress: Callable[[Check], None] | None = None,
                    options: Mapping[str, Any] | None = None,
                    matrices: Mapping[str, Any] | None = None) -> Report:
    return _run(all_checks(), plan, node, root, ignore, on_progress,
                _with_machine(options, root), probes, matrices)


def run_network(plan: ClusterPlan | None, node: str | None, probes: Mapping[str, Any],
                root: str = "/", ignore: Sequence[str] = ()) -> Report:
    """Only the checks that read probe measurements (the mesh agent runs the local ones first,
    before probing starts, so their CPU work does not disturb the timing of the probes)."""
    return _run(network_checks(), plan, node, root, ignore, None, {}, probes)


def combine(first: Report, second: Report) -> Report:
    """One report out of two runs over disjoint check families, sections in report order."""
    from pvestrap.report.model import section_rank

    sections = tuple(sorted(first.sections + second.sections,
                            key=lambda section: section_rank(section.name)))
    return dataclasses.replace(first, sections=sections,
                               matrices={**first.matrices, **second.matrices})


def _with_machine(options: Mapping[str, Any] | None, root: str) -> dict[str, Any]:
    """One read of the machine, shared by every local check (the network checks need none)."""
    from pvestrap.checks.localsys import read_machine

    opts = dict(options or {})
    if "machine" not in opts:
        opts["machine"] = read_machine(root)
    return opts


def _run(checks, plan, node, root, ignore, on_progress, options, probes, matrices=None) -> Report:
    started = time.monotonic()
    opts = dict(options)
    if plan is not None and plan.preflight.ntp_servers and "ntp_servers" not in opts:
        opts["ntp_servers"] = list(plan.preflight.ntp_servers)
    ctx = Context(plan=plan, node=node, root=root, probes=dict(probes), options=opts)
    ignored = tuple(ignore) + (plan.preflight.ignore_checks if plan else ())
    meta = {
        "cluster": plan.cluster_name if plan else None,
        "node": node,
        "host": socket.gethostname(),
        "pvestrap": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "latency_fail_ms": plan.preflight.thresholds.latency_fail_ms if plan else 2.0,
    }
    report = run_checks(checks, ctx, ignore=ignored, meta=meta, matrices=matrices,
                        on_progress=on_progress)
    meta["duration_s"] = round(time.monotonic() - started, 3)
    return dataclasses.replace(report, meta=meta)
