"""What a check is, and what it is given.

A check is a small frozen value with a stable id; `run(ctx)` returns findings and never prints,
prompts or exits (kubeadm's Checker). The runner decides what to run and how to report it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    from pvestrap.findings import Finding
    from pvestrap.plan import ClusterPlan


@dataclass(frozen=True)
class Context:
    """Everything a check may read. Checks must not reach for global state beyond this.

    plan: the cluster plan (None when checking a machine without a plan).
    node: the name of the node the checks run on (None: not part of the plan).
    root: filesystem root to read /etc and friends from ("/" on a real node; a folder in tests).
    probes: results of the network probe phase, keyed by the prober (see checks.prober);
            checks that need them return SKIP findings when they are absent.
    options: free-form extras from the CLI (e.g. {"peers": {...}, "duration": 3.0}).
    """

    plan: "ClusterPlan | None" = None
    node: str | None = None
    root: str = "/"
    probes: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Check(Protocol):
    # Read-only members, so that a check may give them as class variables (ClassVar) or not.
    @property
    def id(self) -> str:  # stable, kebab-case; what --ignore names
        ...

    @property
    def family(self) -> str:  # report section: identity, timesync, nics, ports, latency, mtu, ...
        ...

    @property
    def title(self) -> str:  # one line for --help and reports
        ...

    def run(self, ctx: Context) -> "Sequence[Finding]": ...
