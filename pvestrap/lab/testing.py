"""The `lab` pytest fixture: a factory of labs with unique names, always torn down.

    @pytest.mark.lab
    def test_something(lab):
        two = lab(nodes=2, links=1, delay="n2:eth0=1ms")
        two.exec("n1", ["ping", "-c1", two.node(2).name])

Each lab gets a fresh random prefix, so parallel runs and leftovers of killed runs never collide.
Everything the test built is removed when it ends, passed or failed. Without root or without
namespaces the test is skipped with the reason; as root (CI) lab tests run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import string
import subprocess

import pytest

from pvestrap.lab import teardown
from pvestrap.lab.lab import Lab

TOOLS = ("ip", "nsenter", "nft", "unshare")
_ALPHABET = string.ascii_lowercase + string.digits


def new_prefix(head: str = "lt") -> str:
    """A lab name nobody else uses: 'lt' and six random characters."""
    return head + "".join(secrets.choice(_ALPHABET) for _ in range(6))


def unavailable() -> str | None:
    """Why labs cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network and mount namespaces)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"lab tests need {', '.join(missing)}"
    probe = subprocess.run(["unshare", "--net", "--mount", "--uts", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine cannot create namespaces: {probe.stderr.strip()}"
    return None


@pytest.fixture
def lab(request):
    """Factory: lab(nodes=3, links=1, **impairment flags) -> Lab; all removed afterwards."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    made: list[str] = []

    def factory(nodes: int = 3, links: int = 1, prefix: str | None = None, **flags) -> Lab:
        name = prefix or new_prefix()
        made.append(name)
        return Lab.up(name, nodes, links, **flags)

    yield factory
    for name in reversed(made):
        teardown.down(name)
