"""The size limits of product code (DESIGN: modules of at most 500 lines, functions of at most
60): read from the source with ast, so nothing is imported or run.

KNOWN holds what exceeded a limit when this test came in (issue 10), at the size it had then: such
an entry may shrink or go, never grow, and a module or function not listed must keep the limits.
An entry that is back within the limit fails too, so the list only ever gets shorter."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("pvestrap", "checks", "wizard", "iso")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60

# path -> lines, or "path:function" -> lines (issue 10: split these along their jobs).
KNOWN = {
}


def sizes() -> dict[str, int]:
    """Every product module's line count and every function's (qualified by module path)."""
    found = {}
    for folder in PRODUCT:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text(encoding="utf-8")
            found[rel] = len(text.splitlines())
            for node in ast.walk(ast.parse(text, rel)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    key = f"{rel}:{node.name}"
                    found[key] = max(found.get(key, 0), node.end_lineno - node.lineno + 1)
    return found


def limit(key: str) -> int:
    return MAX_FUNCTION_LINES if ":" in key else MAX_MODULE_LINES


def test_product_modules_and_functions_keep_the_size_limits():
    found = sizes()
    over = {key: size for key, size in found.items()
            if size > max(limit(key), KNOWN.get(key, 0))}
    assert not over, f"over the limit (modules {MAX_MODULE_LINES}, functions " \
                     f"{MAX_FUNCTION_LINES} lines): {over}; split along their jobs"


def test_known_exceptions_only_shrink_away():
    found = sizes()
    stale = sorted(key for key in KNOWN if found.get(key, 0) <= limit(key))
    assert not stale, f"{stale} now keep the limit: remove them from KNOWN"

