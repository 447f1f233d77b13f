"""Undoing `pvecm delnode NAME` (node remove on Proxmox VE, and node separate's cluster side)
against tests/test_links.py's model of corosync and pmxcfs: pmxcfs hands a changed
/etc/pve/corosync.conf to a member only when its config_version is not below the member's own
(pve-cluster src/pmxcfs/dcdb.c, dcdb_sync_corosync_conf), so the undo puts the old nodelist back
ABOVE the version delnode wrote, members' files first, then pmxcfs's copy."""

from __future__ import annotations

import dataclasses

import pytest

from pvestrap.apply import removal as rm
from pvestrap.apply.engine import PlannedWait, StepFailed, run_steps
from pvestrap.checks.removal import vote_plan
from pvestrap.corosync.facade import CorosyncConf
from pvestrap.errors import OperationFailed
from pvestrap.paths import PVE_COROSYNC_CONF
from pvestrap.recorded import RecordingSystem
from tests.test_links import COROSYNC_CONF, NAMES, PveModel, cluster_of, start_conf


@dataclasses.dataclass(frozen=True)
class Fails:
    """The step after delnode (the removal's verify), failing."""

    id: str = "verify"
    description: str = "every member settles"

    def plan(self, system):
        return [PlannedWait(self.description, 1.0)]

    def apply(self, system):
        raise OperationFailed("the members did not settle as planned", code="removal-verify-failed")

    def undo(self, system, memo):
        return None


def removal_of(conf: CorosyncConf, name: str = "pve3") -> rm.Removal:
    cluster = cluster_of(conf, pve=True)
    staying = tuple(m for m in cluster.members if m.name != name)
    target = next(n for n in conf.nodes if n.name == name)
    return rm.Removal(name, dataclasses.replace(cluster, members=staying), target,
                      conf.remove_node(name).bump_version(), vote_plan(conf, name, None), "pve")


def delnode_system(model: PveModel, removal: rm.Removal) -> RecordingSystem:
    """`pvecm delnode` as pve-cluster does it: the nodelist without NAME, config_version + 1,
    written to /etc/pve/corosync.conf, which pmxcfs copies to every member and reloads."""
    system = RecordingSystem(files={PVE_COROSYNC_CONF: model.shared})

    def delnode(sys_, argv, stdin):
        text = removal.after.text()
        model._pmxcfs(text)
        sys_.files[PVE_COROSYNC_CONF] = (text.encode(), 0o640)
        return 0, "", ""

    return system.on(("pvecm", "delnode"), delnode)


def delnode_then_a_failure(fail_write: str | None = None):
    """pve3 removed with `pvecm delnode` from start_conf's cluster, then the step after it
    failing: (conf, model, removal, system, the StepFailed after the undo). FAIL_WRITE: a
    member whose files cannot be written (so the undo fails)."""
    conf = start_conf()
    model = PveModel(conf)
    removal = removal_of(conf)
    system = delnode_system(model, removal)
    if fail_write:
        model.fail_write.add(fail_write)
    with pytest.raises(StepFailed) as err:
        run_steps([rm.DelnodeStep(removal, model), Fails()], system)
    return conf, model, removal, system, err.value


def test_undoing_delnode_puts_the_old_nodelist_back_above_delnodes_config_version():
    conf, model, removal, system, err = delnode_then_a_failure()
    assert err.step_id == "verify" and err.undone == ("delnode",)
    assert err.undo_failures == ()
    after = removal.after.config_version
    assert after == conf.config_version + 1
    back = CorosyncConf.parse(model.shared)
    assert back.config_version == after + 1          # above delnode's: pmxcfs accepts it
    assert back.nodes == conf.nodes                   # the old nodelist, pve3 in it again
    assert back.text() == conf.at_version(after + 1).text()
    for name in ("pve1", "pve2"):                     # the staying members run it
        assert model.files[name][COROSYNC_CONF] == model.shared
        assert model.running[name] == back
    # pmxcfs copied delnode's file to the staying members, and not the undo's (it found that
    # on each already); the model also copies to pve3, which in truth is powered off
    assert sorted(c for c in model.pmxcfs_copies if c != "pve3") == ["pve1", "pve2"]
    written = [c for c in model.calls if c.startswith("replace")]
    assert written[-1] == "replace shared" and len(written) == 3


def test_the_old_file_written_back_as_it_was_would_not_reach_the_members():
    """Why the undo does not simply write the old bytes back: pmxcfs refuses the lower
    config_version and the members keep running delnode's nodelist."""
    conf = start_conf()
    model = PveModel(conf)
    removal = removal_of(conf)
    model._pmxcfs(removal.after.text())
    model._pmxcfs(conf.text())
    assert model.shared == conf.text()
    assert all(model.files[n][COROSYNC_CONF] == removal.after.text() for n in NAMES)


def test_an_undo_that_does_not_converge_leaves_delnodes_file_and_says_so():
    conf, model, removal, system, err = delnode_then_a_failure(fail_write="pve2")
    assert [f.step_id for f in err.undo_failures] == ["delnode"]
    assert "could not be written" in err.undo_failures[0].cause
    assert model.shared == removal.after.text()       # pmxcfs's copy left alone
    assert all(model.files[n][COROSYNC_CONF] == removal.after.text() for n in ("pve1", "pve2"))


def test_node_separates_undo_gives_the_leaving_nodes_kept_files_the_put_back_file_too():
    """node separate: delnode ran on pve1 for this node (pve3), whose own files are kept aside;
    they get the file put back, else pve3's corosync, started again with the older
    config_version, would be terminated on joining (corosync.conf(5), config_version)."""
    from pvestrap.apply.separate_pve import RemoteDelnodeStep

    conf = start_conf()
    model = PveModel(conf)
    removal = removal_of(conf)
    system = delnode_system(model, removal)
    aside = "/var/lib/pvestrap/separated/x"
    for path in (PVE_COROSYNC_CONF, COROSYNC_CONF):
        system.files[aside + path] = (conf.text().encode(), 0o640)

    def delnode_over_ssh(sys_, argv, stdin):
        assert argv[-1].endswith("pvecm delnode pve3")
        model._pmxcfs(removal.after.text())
        return 0, "", ""

    system.on(("ssh",), delnode_over_ssh)
    pve2 = removal.cluster.members[1]
    assert not pve2.local
    step = RemoteDelnodeStep(removal, pve2, None, aside, model)
    with pytest.raises(StepFailed) as err:
        run_steps([step, Fails()], system)
    assert err.value.undone == ("delnode",) and err.value.undo_failures == ()
    assert "pve2" in model.pmxcfs_copies  # delnode's file reached the members
    back = CorosyncConf.parse(model.shared)
    assert back.config_version == removal.after.config_version + 1 and back.nodes == conf.nodes
    for path in (PVE_COROSYNC_CONF, COROSYNC_CONF):
        assert system.read_text(aside + path) == model.shared
        assert system.file_mode(aside + path) == 0o640    # as it was kept


def test_after_delnode_is_undone_the_note_says_what_to_do_with_the_powered_off_node():
    """`node remove`'s rollback note (commands/node.py): the members run the put-back nodelist
    above delnode's config_version, the removed node still has the old one."""
    from pvestrap.commands.node import rollback_note

    conf, model, removal, system, err = delnode_then_a_failure()
    system.files[COROSYNC_CONF] = (model.files["pve1"][COROSYNC_CONF].encode(), 0o644)
    note = rollback_note(system, removal, err)
    now, old = conf.config_version + 2, conf.config_version
    assert note is not None and note.startswith(
        f"note: pve3 is in the nodelist again, at config_version {now}, but pve3 itself, "
        f"powered off, still has config_version {old} (or older) in its {COROSYNC_CONF}: "
        "booted as it is, its corosync terminates on joining")
    assert ("before its corosync starts (boot it off the cluster network, or with corosync "
            f"disabled), copy pve1:{COROSYNC_CONF} over its own, then let it join") in note
    assert "run `pvestrap node remove pve3` again, and never boot it into the cluster" in note


def test_when_delnode_cannot_be_undone_the_note_says_never_to_boot_the_node_as_it_is(capsys):
    import json

    from pvestrap.commands.node import Output, rollback_note

    conf, model, removal, system, err = delnode_then_a_failure(fail_write="pve2")
    note = rollback_note(system, removal, err)
    assert note is not None and "pvecm delnode pve3 took effect and could not be undone" in note
    assert "Never power it on in the cluster network as it is" in note
    Output(json_out=True).failed(err, note)
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "rolled-back" and shown["note"] == note
    Output(json_out=False).failed(err, note)
    assert capsys.readouterr().err.endswith(f"\n\n{note}\n")
    with pytest.raises(StepFailed) as before_delnode:
        run_steps([Fails()], RecordingSystem())
    assert rollback_note(RecordingSystem(), removal, before_delnode.value) is None
