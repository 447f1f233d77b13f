"""atomic_write: the old or the new file, never half; mode and owner kept; .bak kept; no-op when
same; no symlink followed (target, backup, temp name); a secret never readable by others."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from typing import Callable

import pytest

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed, UserError


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

    def refuse(*args, **kwargs):
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
           'mount -t tmpfs -o size=8k tmpfs "$1" && exec "$2" -c "$3"', "sh", str(mount),
           sys.executable, script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"code": "write-failed", "content": "original\n",
                      "files": ["interfaces", "interfaces.bak"]}
    assert list(mount.iterdir()) == []  # the tmpfs lived only in the private namespace


# -- nothing followed, nothing exposed -------------------------------------------------------------
# Python's audit hooks (PEP 578) run just before each os.open / os.chmod / os.chown / os.rename:
# a watcher sees every step of a real write, or plants a file in the instant before an open.
# A hook cannot be removed, so one is installed per process and dispatches to the current test.

_WATCH: list[Callable[[str, tuple], None]] = []


@pytest.fixture
def audit():
    if not getattr(sys, "_pvestrap_atomic_hook", False):
        def dispatch(event: str, args: tuple) -> None:
            for watcher in list(_WATCH):
                _WATCH.remove(watcher)  # a watcher's own os calls do not re-enter it
                try:
                    watcher(event, args)
                finally:
                    _WATCH.append(watcher)
        sys.addaudithook(dispatch)
        sys._pvestrap_atomic_hook = True
    yield _WATCH.append
    _WATCH.clear()


def _temps(folder, name: str) -> list:
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}.")]


@pytest.mark.parametrize("planted_kind", ["symlink", "file"])
def test_a_temp_name_planted_just_before_the_open_is_never_opened_or_followed(tmp_path, audit,
                                                                               planted_kind):
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    planted = []

    def plant(event: str, args: tuple) -> None:
        name = args[0] if event == "open" and args else None
        if not planted and isinstance(name, str) and name.startswith(".f."):
            path = tmp_path / name  # the write opens it relative to the folder
            if planted_kind == "symlink":
                path.symlink_to(victim)
            else:
                path.write_text("planted\n")
            planted.append(path)

    audit(plant)
    assert atomic_write(tmp_path / "f", "new\n") is True
    assert (tmp_path / "f").read_text() == "new\n" and victim.read_text() == "victim\n"
    (path,) = planted
    if planted_kind == "symlink":
        assert path.is_symlink() and os.readlink(path) == str(victim)
    else:
        assert path.read_text() == "planted\n"
    assert _temps(tmp_path, "f") == [path]


def test_every_temp_file_is_opened_exclusively_without_following(tmp_path, audit):
    opened = []
    audit(lambda event, args: opened.append(args) if event == "open" and isinstance(
        args[0], str) and args[0].startswith(".f.") else None)
    (tmp_path / "f").write_text("old\n")
    atomic_write(tmp_path / "f", "new\n")  # the .bak and the file: two temp files
    assert len(opened) == 2
    for _name, _mode, flags in opened:
        assert flags & os.O_EXCL and flags & os.O_NOFOLLOW and flags & os.O_CREAT


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlinked_target_is_refused_and_nothing_changes(tmp_path, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_text("victim\n")
    link = tmp_path / "f"
    link.symlink_to(victim)
    with pytest.raises(OperationFailed) as err:
        atomic_write(link, "new\n")
    assert err.value.code == "write-target-not-regular" and str(link) in err.value.message
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_text() == "victim\n" if not dangling else not victim.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"] + ["victim"] * (not dangling)


def test_a_fifo_or_folder_at_the_target_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "folder"):
        with pytest.raises(OperationFailed) as err:
            atomic_write(tmp_path / name, "x\n")
        assert err.value.code == "write-target-not-regular"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder"]


def test_a_symlinked_backup_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    target = tmp_path / "f"
    target.write_text("old\n")
    (tmp_path / "f.bak").symlink_to(victim)
    assert atomic_write(target, "new\n") is True
    assert victim.read_text() == "victim\n"
    assert not (tmp_path / "f.bak").is_symlink() and (tmp_path / "f.bak").read_text() == "old\n"
    assert target.read_text() == "new\n"


def test_a_user_path_failure_is_the_error_class_asked_for(tmp_path):
    with pytest.raises(UserError) as err:
        atomic_write(tmp_path / "nope" / "f", "x\n", error=UserError)
    assert err.value.code == "write-failed" and err.value.exit_code == 2


def _watch_temps(folder, name: str, seen: list) -> Callable[[str, tuple], None]:
    """At every audited step, each temp file's (size, mode, uid, gid)."""
    def watch(event: str, args: tuple) -> None:
        for path in _temps(folder, name):
            st = os.lstat(path)
            seen.append((event, st.st_size, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    return watch


def test_a_secret_is_never_readable_by_others_at_any_step(tmp_path, audit):
    """Rewriting a world-readable file as a 0600 secret with umask 0: no temp file ever holds a
    byte while group or others may read it, and the result is 0600 from its first byte."""
    target = tmp_path / "authkey"
    target.write_text("public\n")
    os.chmod(target, 0o644)
    seen: list = []
    audit(_watch_temps(tmp_path, "authkey", seen))
    old_umask = os.umask(0)
    try:
        atomic_write(target, "s3cret\n", 0o600, backup=False)
    finally:
        os.umask(old_umask)
    assert seen and any(size for _e, size, *_ in seen)  # it saw the temp file full
    assert all(mode & 0o077 == 0 for _e, _size, mode, *_ in seen)
    assert [mode for _e, size, mode, *_ in seen if size] == [0o600] * len([s for s in seen if s[1]])
    assert _mode(target) == 0o600 and target.read_text() == "s3cret\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_and_mode_are_set_before_the_first_byte(tmp_path, audit):
    target = tmp_path / "datacenter.cfg"
    target.write_text("keyboard: de\n")
    os.chown(target, 0, 33)
    os.chmod(target, 0o640)
    seen: list = []
    audit(_watch_temps(tmp_path, "datacenter.cfg", seen))
    atomic_write(target, "keyboard: fr\n", backup=False)
    full = [(mode, uid, gid) for _e, size, mode, uid, gid in seen if size]
    assert full and set(full) == {(0o640, 0, 33)}
