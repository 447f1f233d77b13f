"""No question, help text, choice, finding or remedy ever shows an unfilled `{placeholder}`.

Two halves: every wizard question rendered over create, join and free-NIC states (what a person
reads), and a scan of the source of every product module (pvestrap/, checks/, wizard/, iso/) for the
two ways a placeholder reaches the screen unfilled: a doubled brace in an f-string
(`f"iface {{nic}}"` prints `iface {nic}`) and a plain string with `{name}` that is never
`.format`ted (a forgotten `f`). The one legitimate form, a template filled by `.format`, must be the
receiver of a `.format(...)` call or a name that is.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from wizard_support import machine

from pvestrap.plan import MAX_LINK
from pvestrap.system import CommandResult
from pvestrap.wizard import questions
from pvestrap.wizard.detect import detect



ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("pvestrap", "checks", "wizard", "iso")
# Not product, but it prints what users of the tests read: the pvecm/pvesh TEST STAND-IN.
STANDIN = "tests/standin"
# {name}, {name!r}, {name:>8}: what str.format and f-strings fill. CSS blocks ({color:var(..)}),
# dpkg-query's ${Package} and Perl's $Config{x} are not placeholders.
PLACEHOLDER = re.compile(r"(?<![${\w])\{[A-Za-z_]\w*(?:![rsa])?(?::[<>^=+\- #0-9.,_a-z%]*)?\}")


def _states(det):
    links = {f"link{n}.address": f"nic:eth{n + 2}" for n in range(MAX_LINK + 1)}
    links |= {f"link{n}.static": f"10.{n + 3}.0.1/24" for n in range(MAX_LINK + 1)}
    peers = {f"peer{i}.name": f"pve{i + 1}" for i in (1, 2)}
    peers |= {f"peer{i}.link{n}": f"10.{n + 3}.0.{i + 1}" for i in (1, 2)
              for n in range(MAX_LINK + 1)}
    facts = {"fingerprint_host": "10.1.0.9", "fingerprint_seen": "AA:BB",
             "fingerprint_matches": True}
    return [questions.State(det),
            questions.State(det, {"role": "create", **links, **peers}),
            questions.State(det, {"role": "join", "join.method": "address"}, facts),
            questions.State(det, {"role": "join", "link0.address": "other",
                                  "link0.other": "10.1.0.7"}, facts)]


@pytest.fixture
def det(tmp_path):
    return detect(str(tmp_path), machine=machine(), resolver=lambda n: ("10.1.0.1",),
                  runner=lambda argv: CommandResult(tuple(argv), 127))


def test_every_question_help_and_choice_is_filled(det):
    seen = 0
    for state in _states(det):
        for q in questions.all_questions():
            texts = [q.message(state), q.help_for(state)]
            texts += [c.title for c in q.choices_for(state)]
            for text in texts:
                assert not PLACEHOLDER.search(text), f"{q.id}: unfilled in {text!r}"
                seen += 1
    assert seen > 400
    nic = questions.link_static(1)
    state = _states(det)[1]
    assert "`iface eth3 inet static`" in nic.help_for(state)


def test_the_odd_count_note_is_filled_where_it_is_said():
    text = questions.QDEVICE_ODD_NOTE.format(n=3, votes=2)
    assert not PLACEHOLDER.search(text) and "3 nodes" in text


def _format_receivers(tree: ast.AST) -> tuple[set[str], set[int]]:
    """Names used as `NAME.format(...)`/`obj.NAME.format(...)`, and ids of string constants that
    are a `.format` receiver themselves."""
    names, direct = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "format":
            target = node.value
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
            elif isinstance(target, ast.Constant):
                direct.add(id(target))
    return names, direct


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def _assigned(tree: ast.AST) -> dict[int, str]:
    """id(constant) -> the name it is assigned to (NAME = "..." or NAME = ("..." "...")))."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Constant):
                    out[id(sub)] = node.targets[0].id
    return out


def _problems(trees: dict[str, ast.AST]) -> list[str]:
    receivers: set[str] = set()
    for tree in trees.values():
        receivers |= _format_receivers(tree)[0]
    out = []
    for path, tree in trees.items():
        direct = _format_receivers(tree)[1]
        docs, assigned = _docstrings(tree), _assigned(tree)
        # a constant inside an f-string carries no reliable line of its own: its f-string's
        in_fstring = {id(v): n.lineno for n in ast.walk(tree) if isinstance(n, ast.JoinedStr)
                      for v in n.values}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            found = PLACEHOLDER.search(node.value)
            if not found:
                continue
            where = f"{path}:{in_fstring.get(id(node), node.lineno)}: {found.group()}"
            if id(node) in in_fstring:
                out.append(f"{where} (a doubled brace in an f-string prints it literally)")
            elif not (id(node) in docs or id(node) in direct
                      or assigned.get(id(node)) in receivers):
                out.append(f"{where} (a plain string never .format()ted: a missing f?)")
    return sorted(out)


def _python_files(folder: Path) -> list[Path]:
    """*.py, and the stand-in scripts without a suffix (pvecm, pvesh) that start python."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and (
        p.suffix == ".py" or (not p.suffix and p.read_bytes()[:40].startswith(b"#!")
                              and b"python" in p.read_bytes()[:40])))


def test_no_product_string_carries_an_unfilled_placeholder():
    trees = {str(p.relative_to(ROOT)): ast.parse(p.read_text(), str(p)) for d in (*PRODUCT, STANDIN)
             for p in _python_files(ROOT / d)}
    assert len(trees) > 100
    assert _problems(trees) == []


def test_the_scan_finds_both_mistakes_and_passes_templates_and_docstrings():
    sample = ast.parse('"""Doc: {key: value}."""\nx = f"iface {{nic}} inet static"\n'
                       'y = "on {nic}"\nT = "{n} nodes"\nprint(T.format(n=1))\n'
                       'z = "{a}".format(a=1)\ncss = "a{color:var(--x)}"\nd = "${Package}"\n')
    problems = _problems({"m.py": sample})
    assert problems == ["m.py:2: {nic} (a doubled brace in an f-string prints it literally)",
                        "m.py:3: {nic} (a plain string never .format()ted: a missing f?)"]
