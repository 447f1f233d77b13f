"""Which of pvestrap's modules the first-boot hook must carry, found by reading their imports.

Every import statement of a module is read from its syntax tree, those inside functions too
(pvestrap imports heavy things lazily), and so are packages named by string where resources are
read (`resources.files("pvestrap.templates")`), so the set is what the unattended path can
reach, not only what happens to be imported at start-up.

A module whose start-up imports need something the hook cannot carry (typer, rich, questionary,
pydantic, scapy, a module Python 3.13 dropped) is unsafe. Lazy imports of unsafe modules are
left out and listed; start-up imports of them make the importer unsafe too, up to the entry
point, which then refuses to build.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = "pvestrap"
DEPENDENCIES = ("jinja2", "markupsafe", "ntplib", "ping3")
# Removed from the standard library in Python 3.13 (PEP 594, lib2to3): PVE 9's python3 lacks them.
GONE_IN_313 = frozenset("aifc audioop cgi cgitb chunk crypt imghdr lib2to3 mailcap msilib nis "
                        "nntplib ossaudiodev pipes sndhdr spwd sunau telnetlib uu xdrlib".split())


@dataclass(frozen=True)
class Import:
    module: str
    at_start: bool  # runs when the importing module is imported (not in a function)


@dataclass(frozen=True)
class Closure:
    modules: tuple[str, ...]                 # pvestrap modules to carry, parents included
    dependencies: tuple[str, ...]            # third-party top-level names needed
    left_out: tuple[tuple[str, str], ...]    # (importer, lazily imported module not carried)
    unsafe: tuple[tuple[str, str], ...]      # (entry, why it cannot be carried)


def closure(entries: tuple[str, ...]) -> Closure:
    """The modules ENTRIES can reach. Entries that do not exist are reported as unsafe."""
    graph: dict[str, tuple[Import, ...]] = {}
    todo = [m for e in entries for m in _with_parents(e)]
    while todo:
        name = todo.pop()
        if name in graph or not _exists(name):
            continue
        graph[name] = imports_of(name)
        todo += [p for i in graph[name] if _is_ours(i.module) for p in _with_parents(i.module)]
    why = _unsafe_reasons(graph)
    keep: set[str] = set()
    deps: set[str] = set()
    left_out: set[tuple[str, str]] = set()
    todo = [e for e in entries if e not in why and e in graph]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo += [p for p in _with_parents(name) if p not in keep]
        for imp in graph[name]:
            top = imp.module.split(".")[0]
            if _is_ours(imp.module):
                if imp.module in why:
                    left_out.add((name, imp.module))
                else:
                    todo.append(imp.module)
            elif top in DEPENDENCIES:
                deps.add(top)
            elif not _is_stdlib(imp.module):
                left_out.add((name, imp.module))
    unsafe = tuple((e, why.get(e, "no such module")) for e in entries
                   if e in why or e not in graph)
    return Closure(tuple(sorted(keep)), tuple(sorted(deps)), tuple(sorted(left_out)), unsafe)


def imports_of(name: str) -> tuple[Import, ...]:
    """Absolute module names imported anywhere in module NAME, `if TYPE_CHECKING:` left out."""
    spec = importlib.util.find_spec(name)
    source = Path(spec.origin).read_text(encoding="utf-8")
    package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    found: list[Import] = []
    _walk(ast.parse(source, spec.origin), package, True, found)
    return tuple(dict.fromkeys(found))


def _walk(node: ast.AST, package: str, at_start: bool, found: list[Import]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                _walk_one(other, package, at_start, found)
            continue
        _walk_one(child, package, at_start, found)


def _walk_one(node: ast.AST, package: str, at_start: bool, found: list[Import]) -> None:
    if isinstance(node, ast.Import):
        found += [Import(alias.name, at_start) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(node, package)
        found.append(Import(base, at_start))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and _is_ours(sub) and _exists(sub):
                found.append(Import(sub, at_start))
    elif isinstance(node, ast.Call) and _call_name(node) in _BY_NAME:
        found += [Import(arg.value, False) for arg in node.args[:1]
                  if isinstance(arg, ast.Constant) and isinstance(arg.value, str)
                  and _is_ours(arg.value) and _exists(arg.value)]
    elif isinstance(node, ast.Try) and at_start and _catches_import_error(node):
        for part in node.body:
            _walk_one(part, package, False, found)
        for part in node.handlers + node.orelse + node.finalbody:
            _walk_one(part, package, at_start, found)
        return
    inner = at_start and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda))
    _walk(node, package, inner, found)


_BY_NAME = frozenset({"files", "import_module", "PackageLoader", "find_spec", "read_text",
                      "read_binary", "open_text", "open_binary", "contents", "as_file"})


def _call_name(node: ast.Call) -> str | None:
    """Modules named by string: resources.files("pvestrap.templates"), import_module(...)."""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = ".".join(parts[:len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _catches_import_error(node: ast.Try) -> bool:
    """`try: import x / except ImportError:` is an optional import: not needed to start."""
    names = {"ImportError", "ModuleNotFoundError", "Exception"}
    for handler in node.handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if handler.type is None or any(isinstance(k, ast.Name) and k.id in names for k in kinds):
            return True
    return False


def _unsafe_reasons(graph: dict[str, tuple[Import, ...]]) -> dict[str, str]:
    """A module is unsafe when a start-up import is: a fixpoint over the import graph."""
    why: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, imports in graph.items():
            if name in why:
                continue
            for imp in imports:
                reason = _start_up_problem(imp, graph, why)
                if reason:
                    why[name] = f"imports {imp.module} at start-up: {reason}"
                    changed = True
                    break
    return why


def _start_up_problem(imp: Import, graph: dict[str, tuple[Import, ...]],
                      why: dict[str, str]) -> str | None:
    if not imp.at_start:
        return None
    top = imp.module.split(".")[0]
    if _is_ours(imp.module):
        if imp.module not in graph:
            return "no such module"
        return why.get(imp.module)
    if top in DEPENDENCIES:
        return None
    if top in GONE_IN_313:
        return "removed in Python 3.13"
    if _is_stdlib(imp.module):
        return None
    return "not carried by the hook"


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _is_ours(name: str) -> bool:
    return name == ROOT or name.startswith(ROOT + ".")


def _is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top == "__future__"


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
