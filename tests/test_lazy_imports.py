"""Every `from pvestrap... import NAME` in product code names something that exists, also the
ones inside functions (lazy imports run only when their command does: `node remove` once broke
on a helper another module had renamed, and only a lab run saw it)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"pvestrap": "pvestrap", "checks": "pvestrap.checks", "wizard": "pvestrap.wizard",
           "iso": "pvestrap.iso"}


def _imports():
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and \
                        (node.module or "").startswith("pvestrap"):
                    for alias in node.names:
                        yield f"{path.relative_to(ROOT)}:{node.lineno}", node.module, alias.name


@pytest.mark.parametrize("where, module, name", list(_imports()), ids=lambda v: str(v))
def test_every_imported_name_exists(where, module, name):
    if module.startswith("pvestrap.apply.standin"):
        pytest.fail(f"{where}: the stand-in lives under tests/")
    loaded = importlib.import_module(module)
    if not hasattr(loaded, name):
        importlib.import_module(f"{module}.{name}")  # a submodule
