"""Reading a file the user names: the one bounded reader for every input file.

Answer files, corosync.conf files, installer answers and password files all come through
`read_input`: the path must name a regular file (a FIFO would block forever, /dev/zero never
ends), at most MAX_INPUT_BYTES long (1 MiB: the largest real input, a corosync.conf of a large
cluster, is a few KiB). Anything else is a UserError naming the path, the reason and the limit
(exit 2), raised before anything changes. The file is opened non-blocking and checked on the
open descriptor, so nothing can swap it between the check and the read.
"""

from __future__ import annotations

import os
import stat

from pvestrap.errors import UserError

MAX_INPUT_BYTES = 1 << 20


def read_limited(path: str | os.PathLike[str], limit: int) -> tuple[bytes, os.stat_result]:
    """(at most limit + 1 bytes, fstat of the same open file); nothing is read of anything but a
    regular file. Opened without blocking (a FIFO); OSError passes up."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        chunks: list[bytes] = []
        left = limit + 1
        while regular and left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks), info


def read_input(path: str | os.PathLike[str], what: str, limit: int = MAX_INPUT_BYTES,
               code: str = "input-unreadable") -> bytes:
    """The bytes of the file at PATH, or a UserError (exit 2) saying why it cannot be WHAT."""
    try:
        data, info = read_limited(path, limit)
    except FileNotFoundError:
        raise UserError(f"cannot read {path}: no such file", code=code,
                        remedy=f"give the path of the {what}") from None
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}", code=code,
                        remedy=f"give the path of a readable {what}") from None
    except ValueError:  # a NUL byte in the path: no file can have that name
        raise UserError(f"cannot read {path!r}: a path cannot contain a NUL byte", code=code,
                        remedy=f"give the path of the {what}") from None
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"cannot read {path}: not a regular file", code=code,
                        remedy=f"give the path of the {what} itself (not a device, FIFO or "
                               "folder)")
    if len(data) > limit:
        raise UserError(f"cannot read {path}: larger than {limit} bytes ({limit // 1024} KiB), "
                        f"the limit for a {what}", code=code,
                        remedy=f"is this really a {what}? it is far larger than one")
    return data
