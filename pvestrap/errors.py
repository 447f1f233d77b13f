"""One exception root. User errors (bad input, exit 2) are kept apart from operational failures.

The CLI maps these to exit codes and prints one message; tracebacks only with --debug.
Anything that is not a PvestrapError is a bug and is shown as such.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from pvestrap.findings import Finding


class PvestrapError(Exception):
    """Root of every error pvestrap raises on purpose."""

    code = "error"
    exit_code = 1

    def __init__(self, message: str, *, code: str | None = None, remedy: str | None = None):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.remedy = remedy

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.remedy:
            text += f"\n  fix: {self.remedy}"
        return text


class UserError(PvestrapError):
    """Bad input: a file, a flag, an answer. Nothing has been changed. Exit 2."""

    code = "bad-input"
    exit_code = 2


class ValidationFailed(UserError):
    """Validation collected one or more problems; all of them are carried, not just the first."""

    code = "invalid"

    def __init__(self, findings: Iterable[Finding], *, source: str | None = None):
        self.findings = tuple(findings)
        self.source = source
        what = f"{source}: " if source else ""
        n = len(self.findings)
        super().__init__(f"{what}{n} problem{'s' if n != 1 else ''} found")

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        for f in self.findings:
            where = f"{f.subject}: " if f.subject else ""
            lines.append(f"  - {where}{f.message} [{f.code}]")
            if f.remedy:
                lines.append(f"    fix: {f.remedy}")
        return "\n".join(lines)


class AnswerFileInvalid(ValidationFailed):
    """ValidationFailed whose findings carry `line` (payload); rendered like a compiler's
    diagnostics: `file:line: key: message [code]`."""

    def render(self) -> str:
        lines = [f"error: {self.message}"]
        for f in self.findings:
            where = located(self.source, f.payload.get("line"))
            text = f.message.removeprefix(where)
            subject = f"{f.subject}: " if f.subject else ""
            lines.append(f"  {where}{subject}{text} [{f.code}]")
            if f.remedy:
                lines.append(f"      fix: {f.remedy}")
        return "\n".join(lines)


def located(source: str | None, line: object) -> str:
    """The `file:line: ` prefix of a message (`file: ` without a line)."""
    return f"{source}:{line}: " if line else (f"{source}: " if source else "")


class OperationFailed(PvestrapError):
    """The environment refused: a command failed, a peer did not answer, a timeout. Exit 1."""

    code = "failed"
    exit_code = 1
