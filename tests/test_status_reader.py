"""The one quorum reader (pvestrap.corosync.status.read_quorum) over the one read-only command
seam (System.query, run_command): every reader of `corosync-quorumtool -s` / `pvecm status`."""

from __future__ import annotations

import pathlib

from pvestrap.apply import corosync as corosync_backend
from pvestrap.apply import pve
from pvestrap.corosync.status import PVECM_STATUS, QUORUMTOOL, read_quorum
from pvestrap.firstboot import membership
from pvestrap.recorded import DryRunSystem, RecordedCommand, RecordingSystem
from pvestrap.system import CommandResult, RealSystem, run_command

DATA = pathlib.Path(__file__).parent / "data" / "status"
QUORATE = (DATA / "quorumtool-s-2node-quorate.txt").read_text()
NOT_QUORATE = (DATA / "quorumtool-s-not-quorate.txt").read_text()
PVECM = (DATA / "pvecm-status-4node.txt").read_text()


def test_the_output_decides_not_the_exit_code():
    for rc, text, quorate in ((0, QUORATE, True), (2, NOT_QUORATE, False)):
        node = RecordingSystem().on(QUORUMTOOL, (rc, text, ""))
        assert read_quorum(node.query).quorate is quorate


def test_no_answer_or_a_foreign_format_is_none_with_the_reason():
    errors: dict[str, str] = {}
    down = RecordingSystem().on(QUORUMTOOL, (1, "", "Cannot initialize QUORUM service\n"))
    assert read_quorum(down.query, errors=errors) is None
    assert errors == {"corosync-quorumtool -s": "Cannot initialize QUORUM service"}
    odd = RecordingSystem().on(QUORUMTOOL, (0, "something else entirely\n", ""))
    assert read_quorum(odd.query, errors=errors) is None
    assert "cannot read corosync-quorumtool -s output" in errors["corosync-quorumtool -s"]


def test_every_reader_goes_through_the_same_reader_and_seam():
    node = RecordingSystem().on(QUORUMTOOL, (0, QUORATE, "")).on(PVECM_STATUS, (0, PVECM, ""))
    assert corosync_backend.quorum_status(node).quorate
    assert pve.quorum_status(node).quorate
    asked = [r for r in node.records if isinstance(r, RecordedCommand)]
    assert [(r.argv, r.mutates) for r in asked] == [(QUORUMTOOL, False), (PVECM_STATUS, False)]
    seen = []

    def query(argv):
        seen.append(tuple(argv))
        return CommandResult(tuple(argv), 0, QUORATE)

    assert membership.quorum_status(query).quorate and seen == [QUORUMTOOL]


def test_a_dry_run_still_reads():
    inner = RecordingSystem().on(QUORUMTOOL, (0, QUORATE, ""))
    assert read_quorum(DryRunSystem(inner).query).quorate


def test_the_seam_never_raises_a_missing_tool_or_a_hang(tmp_path):
    missing = RealSystem().query(["pvestrap-no-such-tool"])
    assert missing.rc == 127 and not missing.ok
    hang = RealSystem().query(["sleep", "30"], timeout=0.2)
    assert hang.rc == 124
    assert read_quorum(lambda argv: missing) is None
    assert run_command(["sh", "-c", "echo $LC_ALL"]).stdout == "C\n"
