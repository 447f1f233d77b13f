"""atomic_write: the old or the new file, never half; mode and owner kept; .bak kept; no-op when same."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_is_created_with_default_mode_and_no_backup(tmp_path):
    target = tmp_path / "corosync.conf"
    assert atomic_write(target, "totem {\n}\n") is True
    assert target.read_text() == "totem {\n}\n"
    assert _mode(target) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corosync.conf"]


def test_rewrite_keeps_mode_and_keeps_the_old_content_as_bak(tmp_path):
    target = tmp_path / "interfaces"
    target.write_text("old\n")
    os.chmod(target, 0o600)
    assert atomic_write(target, "new\n") is True
    assert target.read_text() == "new\n"
    assert _mode(target) == 0o600
    bak = tmp_path / "interfaces.bak"
    assert bak.read_text() == "old\n"
    assert _mode(bak) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interfaces", "interfaces.bak"]


def test_second_rewrite_replaces_the_bak_with_the_previous_version(tmp_path):
    target = tmp_path / "f"
    target.write_text("one\n")
    atomic_write(target, "two\n")
    atomic_write(target, "three\n")
    assert (tmp_path / "f.bak").read_text() == "two\n"


def test_explicit_mode_is_applied(tmp_path):
    target = tmp_path / "f"
    target.write_text("x\n")
    os.chmod(target, 0o600)
    atomic_write(target, "y\n", mode=0o640)
    assert _mode(target) == 0o640


def test_unchanged_content_writes_nothing(tmp_path):
    target = tmp_path / "f"
    target.write_text("same\n")
    before = os.stat(target)
    assert atomic_write(target, "same\n") is False
    after = os.stat(target)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_same_content_with_another_mode_only_fixes_the_mode(tmp_path):
    target = tmp_path / "f"
    target.write_text("same\n")
    os.chmod(target, 0o600)
    inode = os.stat(target).st_ino
    assert atomic_write(target, "same\n", mode=0o644) is True
    assert _mode(target) == 0o644
    assert os.stat(target).st_ino == inode
    assert not (tmp_path / "f.bak").exists()


def test_backup_false_keeps_no_bak(tmp_path):
    target = tmp_path / "f"
    target.write_text("old\n")
    atomic_write(target, "new\n", backup=False)
    assert not (tmp_path / "f.bak").exists()


def test_failed_rename_leaves_original_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "f"
    target.write_text("original\n")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OperationFailed) as err:
        atomic_write(target, "new\n", backup=False)
    assert err.value.code == "write-failed"
    assert target.read_text() == "original\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_missing_folder_is_an_operation_failure(tmp_path):
    with pytest.raises(OperationFailed) as err:
        atomic_write(tmp_path / "nope" / "f", "x\n")
    assert err.value.code == "write-failed"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_is_kept(tmp_path):
    target = tmp_path / "datacenter.cfg"
    target.write_text("keyboard: de\n")
    os.chown(target, 0, 33)  # root:www-data, as on /etc/pve
    atomic_write(target, "keyboard: fr\n")
    st = os.stat(target)
    assert (st.st_uid, st.st_gid) == (0, 33)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a private tmpfs needs root and unshare")
def test_disk_full_leaves_original_and_no_temp_file(tmp_path):
    """A real ENOSPC: an 8 KiB tmpfs in a private mount namespace (gone when it exits)."""
    mount = tmp_path / "small"
    mount.mkdir()
    script = textwrap.dedent(f"""
        import json, os
        from pvestrap.atomic import atomic_write
        from pvestrap.errors import OperationFailed
        target = os.path.join({str(mount)!r}, "interfaces")
        with open(target, "w") as fh:
            fh.write("original\\n")
        result = {{"code": None}}
        try:
            atomic_write(target, "x" * 65536)
        except OperationFailed as exc:
            result["code"] = exc.code
        result["content"] = open(target).read()
        result["files"] = sorted(os.listdir({str(mount)!r}))
        print(json.dumps(result))
    """)
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
           f'mount -t tmpfs -o size=8k tmpfs "$1" && exec "$2" -c "$3"', "sh", str(mount),
           sys.executable, script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"code": "write-failed", "content": "original\n",
                      "files": ["interfaces", "interfaces.bak"]}
    assert list(mount.iterdir()) == []  # the tmpfs lived only in the private namespace
