"""The wizard's live services (the parts that need no lab) and its command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pvestrap.answers import dumps, load
from pvestrap.checks.localsys import IfAddress, Interface, Machine
from pvestrap.errors import OperationFailed
from pvestrap.password import resolve_password
from pvestrap.plan import ClusterPlan, InterfaceStanza, Link, Node
from pvestrap.system import RealSystem, Secret
from pvestrap import preflight
from pvestrap.wizard import services

PLAN = ClusterPlan(
    cluster_name="prod",
    nodes=(Node("pve1", 1, {0: "10.99.0.1", 1: "10.98.0.1"}),
           Node("pve2", 2, {0: "10.99.0.2", 1: "10.98.0.2"},
                interfaces=(InterfaceStanza("eth2", "10.98.0.2/24"),))),
    links=(Link(0, "10.99.0.0/24", 20), Link(1, "10.98.0.0/24", 10)), create_node="pve1",
    backend="corosync")


def test_planned_machine_puts_new_stanza_addresses_on_their_nics():
    up = ("UP", "LOWER_UP")
    machine = Machine("pve1", (Interface("eth0", "physical", flags=up,
                                         addresses=(IfAddress("10.99.0.1", 24),)),
                               Interface("eth2", "physical", flags=up)))
    planned = preflight.planned_machine(machine, PLAN, "pve2")
    assert [i.name for i in planned.carrying("10.98.0.2")] == ["eth2"]
    assert planned.interface("eth2").addresses == (IfAddress("10.98.0.2", 24, planned=True),)
    assert planned.interface("eth0") == machine.interface("eth0")
    assert preflight.planned_machine(machine, PLAN, "pve1") is machine


def test_only_the_node_joined_is_probed():
    assert services.probe_peers(PLAN, "pve1") == frozenset()  # nobody runs yet
    assert services.probe_peers(PLAN, "pve2") == frozenset({"pve1"})


def test_the_typed_password_reaches_the_join_only_through_an_in_memory_file():
    with services._password_reference(PLAN, Secret("pa ss\tword")) as usable:
        path = usable.join.password_file
        assert path.startswith("/proc/self/fd/") and usable.join.password_env is None
        assert resolve_password(usable.join, {}, RealSystem()).value == "pa ss\tword"
        fd = int(path.rsplit("/", 1)[1])
        assert os.readlink(path).startswith("/memfd:")  # never a file on a disk
    with pytest.raises(OSError):
        os.fstat(fd)
    with services._password_reference(PLAN, None) as same:
        assert same is PLAN


def test_save_writes_the_file_and_reports_an_unwritable_folder(tmp_path):
    live = services.LiveServices()
    live.save(str(tmp_path / "a.toml"), dumps(PLAN))
    assert load(tmp_path / "a.toml") == PLAN
    assert oct((tmp_path / "a.toml").stat().st_mode & 0o777) == "0o644"
    made = tmp_path / "a.firstboot-secret"  # the cluster's first-boot secret, made once
    assert made.stat().st_mode & 0o777 == 0o600 and len(made.read_text().strip()) == 64
    before = made.read_bytes()
    live.save(str(tmp_path / "a.toml"), dumps(PLAN))
    assert made.read_bytes() == before  # kept: every node of the cluster has this one
    with pytest.raises(OperationFailed) as err:
        live.save(str(tmp_path / "missing" / "a.toml"), "x")
    assert err.value.code == "write-failed" and "missing" in err.value.message


def _pvestrap(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pvestrap", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, **kw)


def test_without_a_terminal_the_wizard_refuses_and_says_how_to_run_unattended():
    done = _pvestrap("wizard")
    assert done.returncode == 2
    assert "no terminal to ask on" in done.stderr and "--answers FILE --yes" in done.stderr
    done = _pvestrap("wizard", "--yes")
    assert done.returncode == 2 and "give --answers FILE" in done.stderr


def test_unattended_save_answers_rewrites_the_same_plan(tmp_path):
    """`--answers F --yes --save-answers G`: every answer from F, nothing applied, G == F."""
    source, target = tmp_path / "in.toml", tmp_path / "out.toml"
    source.write_text(dumps(PLAN))
    done = _pvestrap("wizard", "--answers", str(source), "--yes", "--node", "pve1",
                     "--save-answers", str(target))
    assert done.returncode == 0, done.stderr
    assert "Nothing was applied." in done.stdout
    assert load(target) == PLAN


def test_unattended_refuses_a_nic_this_machine_does_not_have_free(tmp_path):
    """pve2's link1 is a new stanza on eth2: on a machine without a free eth2 the answer is
    refused, naming the key, and nothing is written."""
    source, target = tmp_path / "in.toml", tmp_path / "out.toml"
    source.write_text(dumps(PLAN))
    done = _pvestrap("wizard", "--answers", str(source), "--yes", "--node", "pve2",
                     "--save-answers", str(target))
    assert done.returncode == 2 and not target.exists()
    assert done.stderr.startswith("error: nodes[].link1: choose one of:")


def test_the_wizards_apply_rechecks_as_the_cli_does():
    """After the network phase the wizard's apply probes the member the same way `pvestrap
    apply` does: with its token through its own probe; without one through a responder apply
    starts on the member over ssh (pvestrap.apply.remote_responders), never "not probed"."""
    from pvestrap.checks.probe import Token
    from pvestrap.report.model import Report

    report = Report("the wizard's preflight", ())
    live = services.LiveServices()
    ctx = live.apply_context(report, lambda q: True, print)
    assert ctx.recheck is None and ctx.responders is not None
    assert ctx.responders.__qualname__ == "ssh_starter.<locals>.start"
    assert ctx.preflight is not None and ctx.preflight(PLAN, "pve2") is report
    with_token = services.LiveServices(token=Token(b"t" * 32))
    ctx = with_token.apply_context(report, lambda q: True, print)
    assert ctx.recheck == with_token.probe
