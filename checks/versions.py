"""Versions: every node runs the same major PVE and corosync release.

Corosync 2 and 3 do not talk to each other at all, and PVE supports mixing major releases only
during an upgrade. Minor differences are normal in a rolling update and only noted.
Each node reports its own versions (INFO `versions-local`); the runner collects them into
ctx.options["versions"] = {node: {"pve": "8.2.4", "corosync": "3.1.7"}} for the comparison.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pvestrap.checks.base import Context
from pvestrap.checks.localsys import LIVE, Sources, short_hostname
from pvestrap.system import Runner

from pvestrap.findings import Finding, Severity, fail, warn

FAMILY = "versions"
PRODUCTS = ("pve", "corosync")


def parse_pveversion(text: str) -> str | None:
    """`pveversion` prints e.g. `pve-manager/8.2.4/faa83925c9641325 (running kernel: ...)`."""
    m = re.search(r"pve-manager/(\d+(?:\.\d+)*)", text)
    return m.group(1) if m else None


def parse_corosync_version(text: str) -> str | None:
    """`corosync -v` prints `Corosync Cluster Engine, version '3.1.7'`."""
    m = re.search(r"version '?(\d+(?:\.\d+)*)", text)
    return m.group(1) if m else None


def local_versions(runner: Runner) -> dict[str, str | None]:
    pve = runner(["pveversion"])
    coro = runner(["corosync", "-v"])
    return {"pve": parse_pveversion(pve.stdout) if pve.ok else None,
            "corosync": parse_corosync_version(coro.stdout) if coro.ok else None}


def major(version: str) -> int:
    """The major release of "8.2.4", "3.1.7-pve3" or a Debian "1:2.3-4" (epoch skipped)."""
    m = re.match(r"(?:\d+:)?(\d+)", version)
    return int(m.group(1)) if m else 0


def compare_versions(versions: Mapping[str, Mapping[str, str | None]],
                     check: str = "versions", products: Sequence[str] = PRODUCTS) -> list[Finding]:
    """Findings comparing {node: {product: version}} across nodes, per product."""
    out: list[Finding] = []
    for product in products:
        seen = {node: v[product] for node, v in sorted(versions.items()) if v.get(product)}
        if len(seen) < 2:
            continue
        majors = {node: major(v) for node, v in seen.items()}  # type: ignore[arg-type]
        payload = {"product": product, "versions": seen}
        if len(set(majors.values())) > 1:
            out.append(fail("version-mismatch", f"{product} major versions differ: "
                            + ", ".join(f"{n} {v}" for n, v in seen.items()), product,
                            check=check, payload=payload,
                            remedy=f"upgrade every node to the same {product} major release "
                                   "before clustering them"))
        elif len(set(seen.values())) > 1:
            out.append(Finding("version-minor-differs", Severity.INFO, f"{product} versions "
                               "differ in minor releases: " + ", ".join(f"{n} {v}" for n, v
                                                                        in seen.items()),
                               product, check, payload=payload,
                               remedy="apt full-upgrade on the older nodes when convenient"))
        else:
            version = next(iter(seen.values()))
            out.append(Finding("versions-match", Severity.PASS,
                               f"{product} {version} on {len(seen)} nodes", product, check,
                               payload=payload))
    return out


@dataclass(frozen=True)
class VersionsCheck:
    id: ClassVar[str] = "versions"
    family: ClassVar[str] = FAMILY
    title: ClassVar[str] = "PVE and corosync major versions match across nodes"
    sources: Sources = LIVE

    def run(self, ctx: Context) -> list[Finding]:
        mine = local_versions(self.sources.runner)
        me = ctx.node or short_hostname(self.sources.machine_for(ctx).hostname)
        text = ", ".join(f"{p} {v}" for p, v in mine.items() if v) or "neither PVE nor corosync"
        out = [Finding("versions-local", Severity.INFO, f"{me} runs {text}", me, self.id,
                       payload={"node": me, **mine})]
        if not mine["corosync"]:
            out.append(warn("corosync-missing", "corosync is not installed", me, check=self.id,
                            remedy="apt install corosync (PVE ships it)"))
        views = {k: dict(v) for k, v in (ctx.options.get("versions") or {}).items()}
        views[me] = mine
        if len(views) < 2:
            out.append(Finding("versions-single", Severity.SKIP, "only this node's versions are "
                               "known", me, self.id))
            return out
        return out + compare_versions(views, self.id)


def checks(sources: Sources = LIVE) -> tuple[VersionsCheck]:
    return (VersionsCheck(sources),)
