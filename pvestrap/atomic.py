"""Atomic file replacement: a reader sees the old file or the new one, never half of either.

The new text goes to a temporary file in the same folder (so the final rename stays on one
filesystem), is flushed to disk, and only then renamed over the target; the folder is fsynced so
the rename itself survives a power cut. The previous content is kept as PATH.bak, the way
`pvecm` keeps corosync.conf.bak, and mode and owner are carried over. Nothing is touched when the
content and mode are already right, so applying twice writes nothing the second time.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from pvestrap.errors import OperationFailed

DEFAULT_MODE = 0o644


def atomic_write(path: str | os.PathLike[str], text: str, mode: int | None = None,
                 backup: bool = True) -> bool:
    """Replace PATH with TEXT atomically; return whether anything on disk changed.

    mode None keeps the current file's mode (0644 for a new file). With backup, the old
    content is kept as PATH.bak (itself replaced atomically). On any failure the temporary
    file is removed and PATH is left as it was.
    """
    target = Path(path)
    data = text.encode("utf-8")
    old = _stat_or_none(target)
    want_mode = mode if mode is not None else (stat.S_IMODE(old.st_mode) if old else DEFAULT_MODE)
    try:
        if old is not None and target.read_bytes() == data:
            if stat.S_IMODE(old.st_mode) == want_mode:
                return False
            os.chmod(target, want_mode)
            return True
        if backup and old is not None:
            _replace_with(target.with_name(target.name + ".bak"), target.read_bytes(),
                          stat.S_IMODE(old.st_mode), old)
        _replace_with(target, data, want_mode, old)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise OperationFailed(f"cannot write {target}: {exc.strerror or exc}",
                              code="write-failed",
                              remedy="check that the folder exists, is writable and has "
                                     "free space") from exc
    return True


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _replace_with(target: Path, data: bytes, mode: int, owner: os.stat_result | None) -> None:
    """Write DATA to a temp file beside TARGET, then rename it over TARGET."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            if owner is not None:
                _keep_owner(fh.fileno(), owner)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _keep_owner(fd: int, owner: os.stat_result) -> None:
    """Files like /etc/pve/datacenter.cfg are root:www-data; a rewrite must not reset that."""
    try:
        os.fchown(fd, owner.st_uid, owner.st_gid)
    except PermissionError:
        pass  # not root: the file can only end up ours, which is what the caller can do anyway


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (FUSE like /etc/pve) refuse fsync on folders; rename is done
    finally:
        os.close(fd)
