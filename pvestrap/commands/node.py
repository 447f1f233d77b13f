"""`pvestrap node remove|separate`: a node leaves the cluster, checked first and reversible."""

from __future__ import annotations

from typing import List, Optional

import typer

from pvestrap.commands import change_options, group

app = group("Remove a node from the cluster, or separate this node from it.")

OPTION = change_options()
EXPECTED = typer.Option(None, "--expected-votes", min=1,
                        help="When the remaining nodes lost quorum: lower expected votes to N "
                             "for the removal only (the admin guide's `pvecm expected 1`); N "
                             "must be a majority-making count of the votes online.")


@app.command("remove")
def remove(name: str = typer.Argument(..., help="The node to remove (powered off)."),
           expected_votes: Optional[int] = EXPECTED, dry_run: bool = OPTION.dry_run,
           yes: bool = OPTION.yes, json_out: bool = OPTION.json,
           ignore: List[str] = OPTION.ignore, timeout: float = OPTION.timeout) -> int:
    """Remove a powered-off node from the cluster (run on a remaining member).

    Preflight (check ids: remove-member, remove-offline, remove-votes, remove-members,
    remove-guests), then the plan (corosync.conf diff on every member, commands), confirmation,
    apply (pvecm delnode on Proxmox VE; else the nodelist edited on every member and corosync
    reloaded), rollback on failure, verification on every member. Exit 0 done, 1 refused by
    the preflight or rolled back, 2 bad input.
    """
    from pvestrap.apply import removal as rm
    from pvestrap.apply.links import LinkTimeouts
    from pvestrap.system import RealSystem

    system = RealSystem()
    out = Output(json_out)
    found_removal, early = rm.read_removal(system, name, expected_votes,
                                           LinkTimeouts(verify=timeout))
    if found_removal is None:
        return out.refused(preflight_report("remove", early, ignore), name)
    removal = found_removal
    report = preflight_report("remove", early + rm.preflight(system, removal), ignore,
                              {"cluster": removal.cluster.conf.cluster_name,
                               "node": removal.cluster.local.name, "removing": name})
    if report.exit_code():
        return out.refused(report, name)
    step_list = rm.steps(system, removal)
    out.plan(report, removal.change(), step_list, system)
    if dry_run:
        return out.finish("dry-run", "dry run: nothing was changed")
    from pvestrap.commands.link import confirm_or_abort

    confirm_or_abort(yes, f"remove {name} from the cluster "
                     f"({len(removal.cluster.members)} members stay)?")
    outcome = run_and_report(out, lambda progress: rm.run_removal(system, removal, progress),
                             lambda failure: rollback_note(system, removal, failure))
    if outcome is None:
        return 1
    note = (f"; expected votes were lowered to {expected_votes} for the removal"
            if expected_votes is not None and any(s == "expected-votes" for s in outcome)
            else "")
    aside = f"; {rm.PVE_NODES}/{name} is now {removal.aside}" if "nodes-dir-aside" in outcome \
        else ""
    return out.finish("done", f"done: {name} removed; every member runs config_version "
                      f"{removal.after.config_version} with {removal.votes.expected_after} "
                      f"expected votes{note}{aside}",
                      {"applied": list(outcome), "expected_votes": removal.votes.expected_after,
                       "config_version": removal.after.config_version,
                       "aside": removal.aside if aside else None})


@app.command("separate")
def separate(expected_votes: Optional[int] = EXPECTED, dry_run: bool = OPTION.dry_run,
             yes: bool = OPTION.yes, json_out: bool = OPTION.json,
             ignore: List[str] = OPTION.ignore, timeout: float = OPTION.timeout) -> int:
    """Separate THIS node from its cluster without reinstalling it (run on the leaving node).

    Preflight (check ids: separate-quorum, remove-members, and on Proxmox VE
    separate-shared-storage, separate-guests), the plan, confirmation, then: corosync stops
    here, its files are kept aside under /var/lib/pvestrap/separated/, the staying members drop
    this node (over SSH) and are verified; undone in reverse on a failure. On Proxmox VE the
    admin guide's sequence: pve-cluster and corosync stop, pmxcfs -l, /etc/pve/corosync.conf and
    /etc/corosync/* kept aside, pve-cluster starts standalone, /var/lib/corosync/* kept aside,
    then on a staying member over SSH: /etc/pve/nodes/NAME kept aside there, this node's keys
    out of the members' known_hosts, `pvecm delnode`. The node can join a cluster again with
    `pvestrap apply`. Exit codes as for remove.
    """
    from pvestrap.apply import separate as sp
    from pvestrap.apply.corosync_service import default_service
    from pvestrap.apply.links import LinkTimeouts
    from pvestrap.system import RealSystem

    system = RealSystem()
    out = Output(json_out)
    sep = sp.read_separation(system, default_service(system), expected_votes,
                             LinkTimeouts(verify=timeout))
    name = sep.name
    report = preflight_report("separate", sp.preflight(system, sep), ignore,
                              {"cluster": sep.removal.cluster.conf.cluster_name, "node": name})
    if report.exit_code():
        return out.refused(report, name)
    step_list = sp.steps(system, sep)
    out.plan(report, None if sep.dropped_by else sep.removal.change(), step_list, system)
    if dry_run:
        return out.finish("dry-run", "dry run: nothing was changed")
    from pvestrap.commands.link import confirm_or_abort

    confirm_or_abort(yes, f"separate {name} from {sep.removal.cluster.conf.cluster_name}?")
    outcome = run_and_report(out, lambda progress: sp.run_separation(system, sep, progress))
    if outcome is None:
        return 1
    others = (f"{sep.dropped_by} had dropped it already" if sep.dropped_by else
              f"the {len(sep.removal.cluster.members)} other members run config_version "
              f"{sep.removal.after.config_version}")
    kept = None
    if "nodes-dir-aside" in outcome:
        from pvestrap.apply.removal import PVE_NODES

        kept = f"{sep.removal.cluster.writer.name}:{sep.removal.aside}"
        others += f"; {PVE_NODES}/{name} of the cluster is now {kept}"
    return out.finish("done", f"done: {name} is standalone; its old files are in {sep.aside}; "
                      f"{others}",
                      {"applied": list(outcome), "aside": sep.aside, "nodes_dir_aside": kept,
                       "config_version": sep.removal.after.config_version})


# -- shared by remove and separate -----------------------------------------------------------------

def preflight_report(what: str, found, ignore: List[str], meta=None):
    from pvestrap.findings import apply_ignores
    from pvestrap.report.model import Report, ReportSection

    found = apply_ignores(found, ignore)
    return Report(f"pvestrap node {what} (preflight)",
                  (ReportSection("node", f"NODE {what.upper()}", tuple(found)),), dict(meta or {}))


class Output:
    """Text as it happens, or one JSON document at the end (--json)."""

    def __init__(self, json_out: bool):
        self.json_out = json_out
        self.doc: dict = {}

    def refused(self, report, name: str) -> int:
        import sys

        self.report(report)
        if self.json_out:
            self._dump({"status": "refused", "node": name})
        else:
            print("refused by the preflight: nothing was changed", file=sys.stderr)
        return 1

    def report(self, report) -> None:
        if self.json_out:
            from pvestrap.report.jsonout import report_dict

            self.doc["preflight"] = report_dict(report)
        else:
            from pvestrap.commands.status import emit

            emit(report)

    def plan(self, report, change, step_list, system) -> None:
        from pvestrap.render import unified_diff

        self.report(report)
        plans = {s.id: [str(getattr(a, "path", None) or a) for a in s.plan(system)]
                 for s in step_list}
        diff = unified_diff(change) if change is not None else ""
        if self.json_out:
            self.doc["diff"] = diff
            self.doc["plan"] = [{"step": s.id, "description": s.description,
                                 "actions": plans[s.id]} for s in step_list]
            return
        print(diff, end="")
        for step in step_list:
            print(f"\n{step.id}: {step.description}")
            for line in plans[step.id]:
                print(f"  {line}")

    def finish(self, status: str, message: str, extra=None) -> int:
        if self.json_out:
            self._dump({"status": status, "message": message, **(extra or {})})
        else:
            print(f"\n{message}")
        return 0

    def failed(self, failure, note: str | None = None) -> None:
        import sys

        if self.json_out:
            self._dump({"status": "rolled-back", "failure": failure.as_dict(),
                        **({"note": note} if note else {})})
        else:
            print(failure.render(), file=sys.stderr)
            if note:
                print(f"\n{note}", file=sys.stderr)

    def _dump(self, extra: dict) -> None:
        import json

        from pvestrap.report.jsonout import plain

        print(json.dumps(plain({**self.doc, **extra}), indent=2))


def run_and_report(out: Output, run, note=None):
    """Run the steps with progress on stderr; the applied step ids, or None after a rollback
    (reported, with NOTE(failure) when it has one)."""
    from pvestrap.apply.engine import StepFailed
    from pvestrap.commands.link import step_progress

    try:
        outcome = run(step_progress())
    except StepFailed as failure:
        out.failed(failure, note(failure) if note else None)
        return None
    return tuple(outcome.applied)


def rollback_note(system, removal, failure) -> str | None:
    """What to do with the powered-off node after a rollback that reached `pvecm delnode`.
    Undone, NAME is back in the nodelist ABOVE delnode's config_version (removal.undo_delnode),
    while NAME's own corosync.conf still has the version it was powered off with: joining, a
    corosync whose config_version is not the highest of the members' terminates (corosync.conf(5),
    config_version). Not undone, NAME stays removed: the admin guide's "Remove a Cluster Node"
    says never to power it on in the cluster network as it is (reinstall, then join)."""
    from pvestrap.corosync.facade import CorosyncConf
    from pvestrap.errors import PvestrapError
    from pvestrap.paths import COROSYNC_CONF

    name, old = removal.name, removal.cluster.conf.config_version
    if "delnode" in {f.step_id for f in failure.undo_failures}:
        return (f"note: pvecm delnode {name} took effect and could not be undone: {name} is out "
                "of the nodelist. Never power it on in the cluster network as it is (the admin "
                "guide, \"Remove a Cluster Node\"): reinstall it, then join it again")
    if "delnode" not in failure.undone:
        return None
    try:
        now = CorosyncConf.parse(system.read_text(COROSYNC_CONF) or "").config_version
    except PvestrapError:
        now = None
    member = removal.cluster.writer.name
    return (f"note: {name} is in the nodelist again, at config_version "
            f"{now if now is not None else 'above ' + str(removal.after.config_version)}, but "
            f"{name} itself, powered off, still has config_version {old or 0} (or older) in its "
            f"{COROSYNC_CONF}: booted as it is, its corosync terminates on joining (corosync "
            f"needs the members' config_version, corosync.conf(5)). To keep it a member: before "
            "its corosync starts (boot it off the cluster network, or with corosync disabled), "
            f"copy {member}:{COROSYNC_CONF} over its own, then let it join. To remove it: fix "
            f"what failed, run `pvestrap node remove {name}` again, and never boot it into the "
            "cluster as it is (reinstall it first)")
