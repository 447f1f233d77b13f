"""remote.replaced: the one reader of a replace_script's reply (links' member ops and the join's
MembersStep both use it), run for real with sh on this machine."""

from __future__ import annotations

import base64

from pvestrap.apply.links import LocalShell
from pvestrap.apply.remote import RemoteFile, replace_script, replaced
from pvestrap.system import RealSystem


def test_a_replace_reports_the_files_as_they_were(tmp_path):
    conf = tmp_path / "corosync.conf"
    conf.write_text("old\n")
    conf.chmod(0o640)
    shell, stdin = LocalShell(RealSystem()), base64.b64encode(b"new\n").decode() + "\n"
    states, error = replaced(str(conf), lambda: shell.run(replace_script(str(conf)), "write",
                                                          input=stdin))
    assert error is None and conf.read_text() == "new\n"
    assert states == (RemoteFile(str(conf), b"old\n", 0o640),
                      RemoteFile(str(conf) + ".bak", None, None))


def test_a_failed_replace_still_reports_what_it_showed_and_the_error(tmp_path):
    conf = tmp_path / "corosync.conf"
    conf.write_text("old\n")
    shell = LocalShell(RealSystem())
    states, error = replaced(str(conf), lambda: shell.run(replace_script(str(conf)), "write",
                                                          input="not base64!\n"))
    assert error is not None and "'write' failed on this node" in error
    assert states is not None and states[0].data == b"old\n"  # enough to put it back


def test_no_reply_is_no_states_and_the_error(tmp_path):
    shell = LocalShell(RealSystem(), timeout=0.5)
    states, error = replaced(str(tmp_path / "x"), lambda: shell.run("sleep 5", "write"))
    assert states is None and error is not None and "did not finish 'write'" in error
