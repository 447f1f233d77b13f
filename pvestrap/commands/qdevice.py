"""`pvestrap qdevice setup HOST | remove | status`: an external vote for the cluster, checked
first, shown as a plan, confirmed, undone on failure."""

from __future__ import annotations

from typing import List, Optional

import typer

from pvestrap.commands import change_options, group

app = group("Set up, remove or show a QDevice (corosync-qnetd on an external host).")

OPTION = change_options()


@app.command("setup")
def setup(host: str = typer.Argument(..., help="The qnetd host's IP address."),
          algorithm: Optional[str] = typer.Option(None, "--algorithm", help="ffsplit or lms "
                                                  "(default: ffsplit for an even node count, "
                                                  "lms for an odd one, as pvecm picks)."),
          tie_breaker: str = typer.Option("lowest", "--tie-breaker",
                                          help="lowest, highest or a node id."),
          network: Optional[str] = typer.Option(None, "--network", help="CIDR the nodes "
                                                "reach the qnetd host from (pvecm --network)."),
          force: bool = typer.Option(False, "--force", help="Set up with an odd node count "
                                     "(lms), or replace existing certificate stores."),
          dry_run: bool = OPTION.dry_run, yes: bool = OPTION.yes, json_out: bool = OPTION.json,
          ignore: List[str] = OPTION.ignore, timeout: float = OPTION.timeout) -> int:
    """Set up a QDevice (run on one member; reaches the others and HOST as root over SSH).

    Preflight (check ids: qdevice-host, qdevice-port, qdevice-qnetd, qdevice-package,
    qdevice-votes, qdevice-configured), the plan (corosync.conf diff on every member, the
    certificate steps, the commands), confirmation, apply (`pvecm qdevice setup` on Proxmox VE;
    else what it does, step by step), rollback on failure, verification on every member.
    Exit 0 done, 1 refused by the preflight or rolled back, 2 bad input.
    """
    from pvestrap.qdevice import QDevice

    q = QDevice(host, algorithm, tie_breaker, network)
    return _change("setup", q, force, dry_run, yes, json_out, ignore, timeout)


@app.command("remove")
def remove(dry_run: bool = OPTION.dry_run, yes: bool = OPTION.yes, json_out: bool = OPTION.json,
           timeout: float = OPTION.timeout) -> int:
    """Remove the QDevice: the section leaves corosync.conf on every member (config_version + 1,
    reload), corosync-qdevice stops, the certificate stores go. Exit codes as for setup."""
    return _change("remove", None, False, dry_run, yes, json_out, [], timeout)


@app.command("status")
def status(json_out: bool = OPTION.json, junit: Optional[str] = typer.Option(None, "--junit"),
           html: Optional[str] = typer.Option(None, "--html")) -> int:
    """The QDevice as corosync and corosync-qdevice-tool see it: connected, votes, flags
    (A/V/NMW/NR per node), algorithm. Same formats as `pvestrap status`."""
    from pvestrap.commands.status import emit
    from pvestrap.report.model import Report, ReportSection
    from pvestrap.system import RealSystem
    from pvestrap.verify import observe
    from pvestrap.verify_qdevice import CHECK, qdevice_findings

    found = qdevice_findings(observe(RealSystem()), RealSystem())
    report = Report("pvestrap qdevice status", (ReportSection(CHECK, "QDEVICE", tuple(found)),), {})
    emit(report, json_out=json_out, junit=junit, html=html)
    return report.exit_code()


def _change(action: str, q, force: bool, dry_run: bool, yes: bool, json_out: bool,
            ignore: List[str], timeout: float) -> int:
    from pvestrap.apply import qdevice as qd
    from pvestrap.apply.links import LinkTimeouts
    from pvestrap.apply.pve import is_pve
    from pvestrap.commands.link import confirm_or_abort
    from pvestrap.commands.node import Output, run_and_report
    from pvestrap.system import RealSystem

    system = RealSystem()
    out = Output(json_out)
    if is_pve(system):
        return _pvecm(system, out, action, q, force, dry_run, yes, ignore, timeout)
    timeouts = LinkTimeouts(verify=timeout)
    change = qd.read_setup(system, q, timeouts) if q else qd.read_remove(system, timeouts)
    found = []
    if action == "setup":
        from pvestrap.apply.qdevice_preflight import preflight

        found = preflight(system, change, force)
    report = preflight_report(action, found, ignore, {
        "cluster": change.name, "node": change.local.name, "qnetd": change.qdevice.host,
        **({"votes": change.math.as_dict()} if change.math else {})})
    if report.exit_code():
        return out.refused(report, change.qdevice.host)
    step_list = qd.steps(system, change, force=force)
    out.plan(report, change.diff(), step_list, system)
    if dry_run:
        return out.finish("dry-run", "dry run: nothing was changed")
    confirm_or_abort(yes, f"{action} the QDevice on {change.qdevice.host} for "
                     f"{len(change.cluster.members)} members?")
    outcome = run_and_report(out, lambda progress: qd.run_change(system, change, force,
                                                                 progress))
    if outcome is None:
        return 1
    votes = change.math.expected if change.math else sum(qd.node_votes(change.after))
    return out.finish("done", f"done: QDevice {'set up' if q else 'removed'}; every member "
                      f"runs config_version {change.after.config_version} with {votes} "
                      "expected votes",
                      {"applied": list(outcome), "expected_votes": votes,
                       "config_version": change.after.config_version})


def _pvecm(system, out, action: str, q, force: bool, dry_run: bool, yes: bool,
           ignore: List[str], timeout: float) -> int:
    """Proxmox VE: pvecm qdevice setup/remove does the work (pvestrap.apply.qdevice_pve)."""
    from pvestrap.apply import qdevice_pve as pve
    from pvestrap.apply.engine import run_steps
    from pvestrap.checks import qdevice as checks
    from pvestrap.commands.link import confirm_or_abort
    from pvestrap.commands.node import run_and_report

    change = pve.read_setup(system, q, force, timeout) if q else pve.read_remove(system, timeout)
    found = checks.vote_findings(change.math, force) if change.math else []
    report = preflight_report(action, found, ignore, {
        "backend": "pve", "qnetd": change.qdevice.host,
        **({"votes": change.math.as_dict()} if change.math else {})})
    if report.exit_code():
        return out.refused(report, change.qdevice.host)
    step_list = pve.steps(change)
    out.plan(report, change.diff(), step_list, system)
    if dry_run:
        return out.finish("dry-run", "dry run: nothing was changed")
    confirm_or_abort(yes, f"{action} the QDevice on {change.qdevice.host} with pvecm?")
    outcome = run_and_report(out, lambda progress: run_steps(step_list, system, progress))
    if outcome is None:
        return 1
    return out.finish("done", f"done: QDevice {'set up' if q else 'removed'} with pvecm; "
                      f"{change.expected_votes} expected votes",
                      {"applied": list(outcome), "expected_votes": change.expected_votes,
                       "config_version": change.after.config_version})


def preflight_report(action: str, found, ignore: List[str], meta=None):
    from pvestrap.findings import apply_ignores
    from pvestrap.report.model import Report, ReportSection

    found = apply_ignores(found, ignore)
    sections = (ReportSection("qdevice", "QDEVICE", tuple(found)),) if found else ()
    return Report(f"pvestrap qdevice {action} (preflight)", sections, dict(meta or {}))
