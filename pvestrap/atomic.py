"""The project's one way to write a file: a reader sees the old file or the new one, never half of
either, and nobody else ever reads a byte they should not.

The new content goes to a temporary file in the target's folder (so the rename stays on one
filesystem), created with O_EXCL|O_NOFOLLOW under a random name (a name planted beforehand is
never opened, nor followed if it is a symlink). Owner and mode are set before the first byte is
written (a secret is never readable by others, not even for a moment), the file is fsynced,
renamed over the target, and the folder is fsynced so the rename survives a power cut. The
previous content is kept as PATH.bak the same way (as `pvecm` keeps corosync.conf.bak); a
symlink at PATH.bak is replaced, never followed. A symlink or anything but a regular file at
PATH is refused: the caller resolves a link it means to follow. Mode (when not given) and owner
are carried over from the current file; nothing is touched when content and mode are already
right, so applying twice writes nothing the second time.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from pvestrap.errors import OperationFailed, PvestrapError

DEFAULT_MODE = 0o644
TEMP_TRIES = 16
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int | None = None,
                 backup: bool = True, error: type[PvestrapError] = OperationFailed) -> bool:
    """Replace PATH with DATA (text is written as UTF-8); return whether anything changed.

    mode None keeps the current file's mode (0644 for a new file). With backup, the old content
    is kept as PATH.bak. On any failure the temporary file is removed, PATH is left as it was,
    and ERROR (code write-failed, naming the path) is raised: OperationFailed for the system's
    files, UserError (exit 2) for a path the user gave.
    """
    target = Path(path)
    content = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _failed(error, target, exc) from exc
    try:
        return _write_in(folder, target, content, mode, backup)
    except OSError as exc:
        raise _failed(error, target, exc) from exc
    except _NotRegular:
        raise error(f"cannot write {target}: it is a symlink or not a regular file; nothing "
                    "was written", code="write-target-not-regular",
                    remedy="give the path of the file itself (resolve the link)") from None
    finally:
        os.close(folder)


class _NotRegular(Exception):
    pass


def _failed(error: type[PvestrapError], target: Path, exc: OSError) -> PvestrapError:
    return error(f"cannot write {target}: {exc.strerror or exc}", code="write-failed",
                 remedy="check that the folder exists, is writable and has free space")


def _write_in(folder: int, target: Path, content: bytes, mode: int | None, backup: bool) -> bool:
    name = target.name
    old = _current(folder, target)
    if old is None:
        _replace(folder, name, content, DEFAULT_MODE if mode is None else mode, None)
        _fsync_dir(folder)
        return True
    fd, before = old
    try:
        st = os.fstat(fd)
        want = stat.S_IMODE(st.st_mode) if mode is None else mode
        if before == content:
            if stat.S_IMODE(st.st_mode) == want:
                return False
            os.fchmod(fd, want)
            return True
    finally:
        os.close(fd)
    if backup:
        _replace(folder, name + ".bak", before, stat.S_IMODE(st.st_mode), st)
    _replace(folder, name, content, want, st)
    _fsync_dir(folder)
    return True


def _current(folder: int, target: Path) -> tuple[int, bytes] | None:
    """The open target and its content, None when there is none; a symlink, a folder or a
    device at PATH is refused rather than followed or replaced."""
    try:
        fd = os.open(target.name, _READ, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise
        fd = -1
    if fd < 0 or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd >= 0:
            os.close(fd)
        raise _NotRegular()
    try:
        return fd, _read_all(fd)
    except BaseException:
        os.close(fd)
        raise


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _replace(folder: int, name: str, data: bytes, mode: int,
             owner: os.stat_result | None) -> None:
    """Write DATA to a new temp file beside NAME (owner and mode first), then rename it over."""
    tmp, fd = _create_temp(folder, name)
    try:
        try:
            if owner is not None:
                _keep_owner(fd, owner)
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        _unlink_quietly(folder, tmp)
        raise


def _create_temp(folder: int, name: str) -> tuple[str, int]:
    """A new file only we opened: O_EXCL under a random name, 0600 until its mode is set."""
    for _ in range(TEMP_TRIES):
        tmp = f".{name[:200]}.{secrets.token_hex(8)}.tmp"
        try:
            return tmp, os.open(tmp, _NEW, 0o600, dir_fd=folder)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {name} after {TEMP_TRIES} tries")


def _keep_owner(fd: int, owner: os.stat_result) -> None:
    """Files like /etc/pve/datacenter.cfg are root:www-data; a rewrite must not reset that."""
    try:
        os.fchown(fd, owner.st_uid, owner.st_gid)
    except PermissionError:
        pass  # not root: the file can only end up ours, which is what the caller can do anyway


def _unlink_quietly(folder: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def _fsync_dir(folder: int) -> None:
    try:
        os.fsync(folder)
    except OSError:
        pass  # some filesystems (FUSE like /etc/pve) refuse fsync on folders; rename is done
