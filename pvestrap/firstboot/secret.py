"""The cluster's first-boot secret: where the probe tokens come from, and nothing else does.

Every node of a cluster proves to the others that it belongs by probe tokens (tokens.py): "I
am here", "my preflight passed", "I am a member". They are HMACs of this secret, 32 random
bytes (secrets.token_bytes) made once per cluster when its answers are prepared (`pvestrap iso
prepare`, `pvestrap iso hook`, `pvestrap answer secret`) and kept beside the answer file as
NAME.firstboot-secret, mode 0600, one line of hex. Every node gets the same secret: the ISO's
hook carries it and writes it, root-only, beside the answer file it extracts
(/var/lib/pvestrap/answers.firstboot-secret); for the systemd unit the admin copies it to
/etc/pvestrap/answers.firstboot-secret with the answer file.

The answer file is not secret (the hook extracts it world-readable, anyone may read it), so
nothing is ever derived from it: first boot refuses to run without the secret file (exit 2,
naming the file and the fix). The secret is never printed, logged, reported or written into an
answer file; only this module reads or writes it.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pvestrap.atomic import atomic_write
from pvestrap.errors import UserError
from pvestrap.password import private_file_refusal
from pvestrap.system import RealSystem

SECRET_BYTES = 32
SUFFIX = ".firstboot-secret"
MAX_BYTES = 4096


@dataclass(frozen=True)
class Secret:
    path: str
    created: bool
    value: bytes = field(repr=False)


def path_for(answers: str | os.PathLike[str]) -> Path:
    """Beside the answer file: answers.toml -> answers.firstboot-secret."""
    return Path(answers).with_suffix(SUFFIX)


def encode(value: bytes) -> bytes:
    """The file's content: one line of hex."""
    return value.hex().encode("ascii") + b"\n"


def load_or_new(path: str | os.PathLike[str]) -> Secret:
    """The secret at PATH (checked as `read` checks it), or a new random one for PATH when
    nothing is there: once per cluster, the same for all its nodes. Nothing is written yet:
    `keep` it once everything that needs it was checked."""
    if os.path.lexists(path):
        return Secret(str(path), False, read(path))
    return Secret(str(path), True, secrets.token_bytes(SECRET_BYTES))


def keep(found: Secret) -> None:
    """Write a new secret, mode 0600 (never over one that appeared meanwhile: that would give
    one cluster two secrets)."""
    if not found.created:
        return
    if os.path.lexists(found.path):
        raise UserError(f"the first-boot secret {found.path} appeared while this ran; nothing "
                        "was written", code="firstboot-secret-raced",
                        remedy="run the command again: it uses that secret")
    atomic_write(found.path, encode(found.value), 0o600, backup=False, error=UserError)


def ensure(path: str | os.PathLike[str]) -> Secret:
    """The secret at PATH, made there first when missing (load_or_new, then keep)."""
    found = load_or_new(path)
    keep(found)
    return found


def read(path: str | os.PathLike[str]) -> bytes:
    """The secret in PATH, or a UserError (exit 2) naming PATH, what is wrong and the fix:
    missing, not a regular file, not root's, readable by others, not >= 32 bytes of hex."""
    try:
        found = RealSystem().read_owned(str(path), MAX_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read the first-boot secret {path}: {exc.strerror or exc}",
                        code="firstboot-secret-unreadable",
                        remedy="run pvestrap as root, or fix the path") from None
    if found is None:
        raise UserError(f"the first-boot secret {path} does not exist: first boot does not "
                        "run without it (the nodes' probe tokens come from it, never from the "
                        "answer file)", code="firstboot-secret-missing",
                        remedy=f"copy the cluster's secret file (NAME{SUFFIX} beside the answer "
                               "file it was prepared with: `pvestrap iso prepare`, `pvestrap "
                               f"answer secret`) here: install -m 600 FILE {path}; or give "
                               "--secret-file")
    refused = private_file_refusal(str(path), found, MAX_BYTES)
    if refused:
        kind, problem, remedy = refused
        raise UserError(f"the first-boot secret {path} {problem}",
                        code=f"firstboot-secret-{kind}", remedy=remedy)
    return _decode(path, found.data)


def _decode(path: str | os.PathLike[str], data: bytes) -> bytes:
    try:
        value = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        value = b""
    if len(value) < SECRET_BYTES:
        raise UserError(f"the first-boot secret {path} is not one line of at least "
                        f"{2 * SECRET_BYTES} hex digits", code="firstboot-secret-invalid",
                        remedy="use the file pvestrap made for the cluster (remove this one "
                               "and prepare the whole cluster again to make a new one)")
    return value
