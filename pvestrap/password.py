"""root's password for joining an existing Proxmox VE cluster: the one resolver (apply's pve
backend, the wizard, first boot and the ISO builder all call it).

The answer file only names where the password is, never the password: join.password_env, an
environment variable, or join.password_file, a file read at the moment of use. The file must be
a regular file (a symlink to one is followed, e.g. the wizard's /proc/self/fd/N), owned by root
(or by the user running pvestrap, who could not read a root-only file otherwise), not readable,
writable or searchable by group or others, at most 1 MiB, UTF-8, with the password on its first
line. Anything else is refused with the path and the reason (exit 2), before any change.
"""

from __future__ import annotations

import os
from typing import Mapping

from pvestrap.errors import UserError
from pvestrap.plan import JoinTarget
from pvestrap.system import OwnedFile, RealSystem, Secret, System

MAX_BYTES = 1 << 20


def resolve_password(join: JoinTarget, environ: Mapping[str, str] | None = None,
                     system: System | None = None) -> Secret | None:
    """The password join names (its file is read through SYSTEM, this machine by default);
    None when it names no source: the caller must then ask, or refuse an unattended join."""
    if join.password_env:
        value = (os.environ if environ is None else environ).get(join.password_env)
        if not value:
            raise UserError(f"environment variable {join.password_env} (join.password_env) is "
                            "not set or empty", code="password-missing",
                            remedy=f"export {join.password_env} before running pvestrap")
        return Secret(value)
    if join.password_file:
        return read_password_file(join.password_file, system or RealSystem())
    return None


def read_password_file(path: str, system: System) -> Secret:
    """The first line of PATH, after every check above (UserError naming PATH otherwise)."""
    try:
        found = system.read_owned(path, MAX_BYTES)
    except OSError as exc:
        raise UserError(f"cannot read password file {path}: {exc.strerror or exc}",
                        code="password-file-unreadable",
                        remedy="run pvestrap as root, or fix the path") from None
    if found is None:
        raise UserError(f"password file {path} does not exist", code="password-missing",
                        remedy="write root's password on the first line of that file "
                               "(mode 0600), or set join.password_env instead")
    refused = _refusal(path, found)
    if refused:
        code, problem, remedy = refused
        raise UserError(f"password file {path} {problem}", code=code, remedy=remedy)
    try:
        first = found.data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise UserError(f"password file {path} is not UTF-8 text", code="password-file-invalid",
                        remedy="write root's password on its first line") from None
    if not first:
        raise UserError(f"password file {path} has an empty first line",
                        code="password-missing", remedy="write root's password on the first line")
    return Secret(first)


def _refusal(path: str, found: OwnedFile) -> tuple[str, str, str] | None:
    """(code, what is wrong, the fix) when PATH may not hold root's password."""
    refused = private_file_refusal(path, found, MAX_BYTES)
    if refused is None:
        return None
    kind, problem, remedy = refused
    if problem.startswith("is larger"):
        remedy = "a password file holds one line: root's password"
    return f"password-file-{kind}", problem, remedy


def private_file_refusal(path: str, found: OwnedFile, limit: int
                         ) -> tuple[str, str, str] | None:
    """("invalid" | "insecure", what is wrong, the fix) when PATH may not hold a secret: not a
    regular file, owned by someone other than root (or this user), readable or writable by
    group or others, or over LIMIT bytes. Password files and the first-boot secret share it."""
    if not found.regular:
        return "invalid", "is not a regular file", "give the path of a file"
    if found.uid not in (0, os.geteuid()):
        return "insecure", f"is owned by uid {found.uid}, not root", f"chown root {path}"
    if found.mode & 0o077:
        return ("insecure", "can be read or changed by other users (mode "
                f"{found.mode:04o})", f"chmod 600 {path}")
    if len(found.data) > limit:
        return "invalid", f"is larger than {limit} bytes", f"give the right file for {path}"
    return None
