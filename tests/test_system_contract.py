"""Every System offers the whole contract callers use, and nothing asks a system for more."""

from __future__ import annotations

import pathlib
import re

import pytest

from pvestrap.recorded import DryRunSystem, RecordingSystem
from pvestrap.system import RealSystem, System

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONTRACT = sorted({n for n in vars(System) if not n.startswith("_")} |
                  set(System.__annotations__))


@pytest.mark.parametrize("system", [RealSystem(), RealSystem(root="/tmp", dry_run=True),
                                    DryRunSystem(RealSystem()), RecordingSystem()],
                         ids=["real", "real-dry", "dry-run", "recording"])
def test_every_system_offers_the_whole_contract(system):
    assert {"root", "dry_run", "spawn", "read_owned", "run", "write_bytes"} <= set(CONTRACT)
    assert [name for name in CONTRACT if not hasattr(system, name)] == []
    assert isinstance(system.root, str)


def test_only_a_real_system_that_acts_can_hold_a_session():
    for system in (RealSystem(dry_run=True), DryRunSystem(RealSystem()), RecordingSystem()):
        with pytest.raises(TypeError):
            system.spawn(["true"])
    proc = RealSystem().spawn(["true"])
    assert proc.wait(timeout=30) == 0


def test_no_product_code_duck_types_a_system():
    pattern = re.compile(r"\b(getattr|hasattr)\(\s*(self\.)?system\b")
    found = [f"{path.relative_to(ROOT)}:{n}" for folder in ("pvestrap", "checks", "wizard", "iso")
             for path in (ROOT / folder).rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
