"""answer.toml files on the ISO side: `pvestrap iso validate-answer` (any answer.toml, by the
installer's rules in pvestrap.installer.rules), `pvestrap iso answer` (a node's answer.toml from
the cluster answer file and the settings, with the root password hashed at build time) and the
masking `pvestrap iso inspect` shows files with.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from dataclasses import replace
from typing import Mapping

from pvestrap.answer_schema import ENV_NAME
from pvestrap.answers import load, select_node
from pvestrap.errors import AnswerFileInvalid, OperationFailed, UserError
from pvestrap.findings import Finding, Severity
from pvestrap.inputs import read_input
from pvestrap.installer import rules
from pvestrap.installer.answer import Rendered, render
from pvestrap.installer.settings import Settings
from pvestrap.installer.validate import load as load_settings
from pvestrap.password import resolve_password
from pvestrap.plan import JoinTarget
from pvestrap.toml_lines import key_lines

MAX_BYTES = 1_000_000


# -- any answer.toml -----------------------------------------------------------------------------

def validate_file(path: str | os.PathLike[str]) -> list[Finding]:
    """Check an answer.toml; raise AnswerFileInvalid listing every FAIL with key and line,
    else return the warnings."""
    source = str(path)
    data = read_input(path, "installer answer file", MAX_BYTES,
                      code="installer-answer-unreadable")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{source}: not UTF-8 text", code="installer-toml-invalid") from None
    findings = [_with_place(f, source) for f in rules.check_text(text, source)]
    failed = [f for f in findings if f.severity is Severity.FAIL]
    if failed:
        raise AnswerFileInvalid(failed, source=source)
    return findings


def _with_place(f: Finding, source: str) -> Finding:
    line = f.payload.get("line")
    return replace(f, message=f"{source}:{line}: {f.message}" if line else
                   f"{source}: {f.message}")


def mask_secrets(text: str) -> str:
    """answer.toml with the password (hash), subscription key and webhook token replaced by
    "<redacted>", everything else (comments, order) left as written."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "<not valid TOML: not shown>\n"
    where = key_lines(text)
    lines = text.split("\n")
    secrets = []
    for section, key in rules.SECRET_KEYS:
        table = raw.get(section) if isinstance(raw.get(section), dict) else {}
        for name in (key, key.replace("-", "_")):
            if name not in table:
                continue
            secrets.append(str(table[name]))
            line = where.get(f"{section}.{name}")
            if line and lines[line - 1].lstrip().startswith(name):
                head = lines[line - 1].split("=", 1)[0]
                lines[line - 1] = f'{head}= "<redacted>"'
    masked = "\n".join(lines)
    for secret in secrets:
        if secret:
            masked = masked.replace(secret, "<redacted>")
    return masked


def render_for(answers_path: str | os.PathLike[str], node: str,
               installer_path: str | os.PathLike[str] | None = None, *,
               password_file: str | None = None, password_env: str | None = None) -> Rendered:
    """Load the cluster file and the settings, resolve the root password hash, render."""
    plan = load(answers_path)
    select_node(plan, node)
    settings = load_settings(installer_path, plan, node)
    password_hash, _ = root_password_hash(
        settings, password_file=password_file, password_env=password_env)
    return render(plan, node, settings, password_hash)


# -- the root password ---------------------------------------------------------------------------

def root_password_hash(settings: Settings, *, password_file: str | None = None,
                       password_env: str | None = None,
                       environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(crypt hash or None, where it came from). Options win over the settings file; two
    sources at the same level are refused rather than guessed between."""
    given = {k: v for k, v in (("--root-password-file", password_file),
                               ("--root-password-env", password_env)) if v}
    level, where = (given, "option") if given else (dict(settings.password), settings.source)
    if len(level) > 1:
        raise UserError(f"{where}: give one root password source, not {', '.join(level)}",
                        code="installer-password-conflict")
    if not level:
        return None, "none"
    (key, value), = level.items()
    if key == "root_password_hashed":
        return value, f"{settings.source}: installer.root_password_hashed"
    from_file = key.replace("-", "_").endswith("_file")
    if not from_file and not ENV_NAME.match(value):
        raise UserError(f"{key} must be the NAME of an environment variable",
                        code="installer-password-env-invalid")
    target = JoinTarget(password_file=value) if from_file else JoinTarget(password_env=value)
    try:
        secret = resolve_password(target, environ)
    except UserError as exc:  # it names the join key it reads for joining; name ours
        told = "(join.password_file)" if from_file else "(join.password_env)"
        raise UserError(exc.message.replace(told, f"({key})"), code=exc.code,
                        remedy=exc.remedy) from None
    clear = secret.value if secret is not None else ""  # a source is named: never None
    if len(clear) < rules.PASSWORD_MIN:
        raise UserError(f"the root password from {key} {value} must be at least "
                        f"{rules.PASSWORD_MIN} characters (the installer's rule)",
                        code="installer-password-length")
    return hash_password(clear), f"{key} {value} (hashed)"


def hash_password(clear: str) -> str:
    """SHA-512 crypt via `openssl passwd -6`; the password goes through stdin, never argv."""
    try:
        done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=clear + "\n",
                              capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        raise OperationFailed("openssl is not installed; cannot hash the root password",
                              code="openssl-missing",
                              remedy="install openssl, or give root_password_hashed") from None
    hashed = done.stdout.strip()
    if done.returncode != 0 or not hashed.startswith("$6$"):
        raise OperationFailed(f"openssl passwd failed: {done.stderr.strip()[:200]}",
                              code="openssl-failed")
    return hashed
