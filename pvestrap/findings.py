"""Findings: the one result type of validation, checks and verification.

A finding has a stable kebab-case code, a severity, the subject it is about (a field path like
`nodes[2].link1`, or a node/link like `pve2/link0`), a payload of measured values, and a remedy.
Tests assert codes and payloads; prose is rendered at the edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Iterable, Mapping

_CODE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class Severity(str, Enum):
    PASS = "pass"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"

    @property
    def label(self) -> str:
        return self.value.upper()


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    subject: str | None = None
    check: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    remedy: str | None = None
    ignored: bool = False

    def __post_init__(self) -> None:
        if not _CODE.match(self.code):
            raise ValueError(f"finding code must be kebab-case: {self.code!r}")
        object.__setattr__(self, "payload", MappingProxyType(dict(self.payload)))

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "subject": self.subject,
            "check": self.check,
            "payload": dict(self.payload),
            "remedy": self.remedy,
            "ignored": self.ignored,
        }


def fail(code: str, message: str, subject: str | None = None, **kw: Any) -> Finding:
    return Finding(code, Severity.FAIL, message, subject, **kw)


def warn(code: str, message: str, subject: str | None = None, **kw: Any) -> Finding:
    return Finding(code, Severity.WARN, message, subject, **kw)


def passed(code: str, message: str, subject: str | None = None, check: str | None = None,
           **kw: Any) -> Finding:
    return Finding(code, Severity.PASS, message, subject, check, **kw)


def info(code: str, message: str, subject: str | None = None, check: str | None = None,
         **kw: Any) -> Finding:
    return Finding(code, Severity.INFO, message, subject, check, **kw)


def failures(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.FAIL]


def apply_ignores(findings: Iterable[Finding], ignored_checks: Iterable[str]) -> list[Finding]:
    """Downgrade FAILs of the named checks (or codes) to WARN, marking them as ignored.

    This is kubeadm's --ignore-preflight-errors: the user takes responsibility by name, and the
    report says so. "all" is refused by the callers that read files.
    """
    names = set(ignored_checks)
    out = []
    for f in findings:
        if f.severity is Severity.FAIL and (f.check in names or f.code in names or "all" in names):
            out.append(
                Finding(f.code, Severity.WARN, f"{f.message} (FAIL ignored by request)", f.subject,
                        f.check, f.payload, f.remedy, ignored=True)
            )
        else:
            out.append(f)
    return out
