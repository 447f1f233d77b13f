"""`pvestrap conf lint|fmt`: exit codes, output, and in-place rewrites that are safe."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvestrap.cli import main
from pvestrap.corosync.tree import canonical, parse

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "corosync"
PVESTRAP = ROOT / ".venv" / "bin" / "pvestrap"
GOOD = (DATA / "pve-3node-2link.conf").read_text()


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["conf", *args])
    out, err = capsys.readouterr()
    return code, out, err


def lint_json(capsys, path) -> tuple[int, list[dict]]:
    code, out, _ = run(capsys, "lint", "--json", str(path))
    return code, json.loads(out)


@pytest.fixture
def conf(tmp_path):
    def write(text: str, name: str = "corosync.conf") -> pathlib.Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


# -- lint ------------------------------------------------------------------------------------------

def test_lint_clean_file_exits_0(capsys):
    code, out, _ = run(capsys, "lint", str(DATA / "pve-3node-2link.conf"))
    assert code == 0 and "pve-3node-2link.conf" in out
    assert lint_json(capsys, DATA / "pve-3node-2link.conf") == (0, [])


def test_lint_warnings_only_exit_0(capsys):
    code, found = lint_json(capsys, DATA / "pve-upgraded-commented.conf")
    assert code == 0
    assert {f["severity"] for f in found} == {"warn", "info"}


def test_lint_fail_exits_1_with_codes_subjects_and_lines(capsys, conf):
    path = conf(GOOD.replace("nodeid: 3", "nodeid: 2"))
    code, found = lint_json(capsys, path)
    assert code == 1
    dup = [f for f in found if f["code"] == "nodeid-duplicate"]
    assert [(f["subject"], f["payload"]["nodeid"]) for f in dup] == [
        ("nodelist.node[2].nodeid", 2)]
    assert GOOD.splitlines()[dup[0]["payload"]["line"] - 1] == "    nodeid: 3"
    code, out, _ = run(capsys, "lint", str(path))
    assert code == 1 and "[nodeid-duplicate]" in out


def test_lint_parse_error_exits_2_naming_the_line(capsys, conf):
    path = conf(GOOD.replace("  secauth: on\n", "  secauth on\n"))
    code, out, err = run(capsys, "lint", str(path))
    line = GOOD.splitlines().index("  secauth: on") + 1
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}:{line}: ")
    code, found = lint_json(capsys, path)
    assert code == 2 and [(f["code"], f["payload"]["line"]) for f in found] == [
        ("conf-parse-error", line)]


@pytest.mark.parametrize("command", ["lint", "fmt"])
def test_unreadable_files_exit_2(capsys, tmp_path, command):
    for target in (tmp_path / "missing.conf", tmp_path):
        code, out, err = run(capsys, command, str(target))
        assert code == 2 and out == "" and err.startswith(f"error: cannot read {target}")
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"totem {\n  cluster_name: \xff\xfe\n}\n")
    code, _, err = run(capsys, command, str(binary))
    assert code == 2 and err.startswith(f"error: {binary}:2: ")


# -- fmt -------------------------------------------------------------------------------------------

SCRAMBLED = """totem {
  version: 2
  secauth: on
  interface {
    linknumber: 0
  }
  cluster_name: c
  config_version: 2
}
# the nodes
nodelist {

  node {
    ring0_addr: 10.1.0.2
    name: b
    nodeid: 2
  }

  node {
    name: a
    nodeid: 1
    ring0_addr: 10.1.0.1
  }
}
"""


def test_fmt_prints_canonical_and_leaves_the_file(capsys, conf):
    path = conf(SCRAMBLED)
    code, out, _ = run(capsys, "fmt", str(path))
    assert code == 0 and out == canonical(parse(SCRAMBLED))
    assert out.index("name: a") < out.index("name: b")
    assert out.startswith("# the nodes\nnodelist {\n  node {\n    name: a\n")
    assert path.read_text() == SCRAMBLED
    assert not path.with_name(path.name + ".bak").exists()


def test_fmt_in_place_keeps_backup_and_mode_and_is_idempotent(capsys, conf):
    path = conf(SCRAMBLED)
    os.chmod(path, 0o640)
    code, out, _ = run(capsys, "fmt", "--in-place", str(path))
    backup = path.with_name(path.name + ".bak")
    assert code == 0 and out == ""
    assert path.read_text() == canonical(parse(SCRAMBLED))
    assert backup.read_text() == SCRAMBLED
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    backup.unlink()
    before = path.stat()
    code, _, _ = run(capsys, "fmt", "-i", str(path))
    after = path.stat()
    assert code == 0 and not backup.exists()  # unchanged: nothing written at all
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_fmt_in_place_through_a_symlink_rewrites_the_target(capsys, conf, tmp_path):
    target = conf(SCRAMBLED, "real.conf")
    link = tmp_path / "corosync.conf"
    link.symlink_to(target)
    assert run(capsys, "fmt", "-i", str(link))[0] == 0
    assert link.is_symlink() and target.read_text() == canonical(parse(SCRAMBLED))


def test_fmt_in_place_refuses_a_broken_file_and_writes_nothing(capsys, conf):
    path = conf(SCRAMBLED + "}\n")
    code, _, err = run(capsys, "fmt", "--in-place", str(path))
    assert code == 2 and err.startswith(f"error: {path}:{len(SCRAMBLED.splitlines()) + 1}: ")
    assert path.read_text() == SCRAMBLED + "}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["corosync.conf"]


# -- no tracebacks, whatever the input -----------------------------------------------------------

GARBAGE = [
    b"",
    b"\x00\x01\x02\xff" * 100,
    b"{}{}{}\n",
    b"totem {\n" * 50,
    b"}\n" * 5,
    b"a" * 5000,
    b"nodelist {\n  node {\n    nodeid: -1\n    ring9_addr: ::::\n  }\n}\ntotem {\n  interface {"
    b"\n    linknumber: x\n    knet_link_priority: 999999999999999999999\n  }\n}\n",
    b"# only a comment",
    b"key: value\r\nother: \xc3\xa9t\xc3\xa9\r\n",
]


@pytest.mark.skipif(not PVESTRAP.exists(), reason=f"{PVESTRAP} is not installed")
@pytest.mark.parametrize("data", GARBAGE, ids=range(len(GARBAGE)))
@pytest.mark.parametrize("command", [["lint"], ["fmt", "-i"]])
def test_garbage_never_tracebacks(tmp_path, data, command):
    path = tmp_path / "corosync.conf"
    path.write_bytes(data)
    done = subprocess.run([str(PVESTRAP), "conf", *command, str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode in (0, 1, 2), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    if done.returncode == 2:
        assert done.stderr.startswith("error: ")


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="{}:# \t\nabz019_.\r\u00a0", max_size=200))
def test_random_text_gives_only_project_errors(tmp_path, capsys, text):
    path = tmp_path / "fuzz.conf"
    path.write_text(text, newline="")
    for args in (["lint", str(path)], ["fmt", str(path)]):
        assert main(["conf", *args]) in (0, 1, 2)
    capsys.readouterr()


@pytest.mark.skipif(not PVESTRAP.exists(), reason=f"{PVESTRAP} is not installed")
def test_help_lists_the_commands():
    done = subprocess.run([str(PVESTRAP), "conf", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert "lint" in done.stdout and "fmt" in done.stdout




TOKENS = ["}", "{", "x", "-1", "::::", "10.40.0.11", "node {", "interface {", "totem {",
          "linknumber: q", "linknumber: 99", "ring9_addr: a", "nodeid: 1", "nodeid:",
          "secauth: off", "name:", "quorum_votes: x", "knet_link_priority: 1e9", "# c", "",
          "crypto_cipher: none", "transport: udpu", "config_version: -3", "a" * 600]
MUTATIONS = ["drop", "dup", "insert", "replace", "replace", "swap"]
EDITS = st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 60),
                           st.sampled_from(TOKENS)), max_size=6)


def mutate(text: str, edits) -> str:
    lines = text.split("\n")
    for op, at, token in edits:
        at %= len(lines) or 1
        if op == "drop" and lines:
            del lines[at]
        elif op == "dup" and lines:
            lines.insert(at, lines[at])
        elif op == "insert":
            lines.insert(at, token)
        elif op == "replace" and lines:
            key = lines[at].split(":")[0]
            lines[at] = f"{key}: {token.split(': ')[-1]}" if ":" in lines[at] else token
        elif op == "swap" and len(lines) > 1:
            lines[at - 1], lines[at] = lines[at], lines[at - 1]
    return "\n".join(lines)


@settings(max_examples=600, deadline=None)
@given(EDITS)
def test_mutated_confs_lint_without_crashing(edits):
    """Random line edits of a good file: lint finds something or nothing, but never crashes,
    and whatever parses also formats, re-parses and edits through the facade."""
    from pvestrap.corosync.facade import CorosyncConf
    from pvestrap.corosync.lint import lint
    from pvestrap.errors import UserError

    text = mutate(GOOD, edits)
    found = lint(text)
    assert all(f.check == "corosync-conf" for f in found)
    if any(f.code == "conf-parse-error" for f in found):
        return
    assert canonical(parse(canonical(parse(text)))) == canonical(parse(text))
    conf = CorosyncConf.parse(text)
    for edit in (lambda c: c.bump_version(), lambda c: c.set_priority(0, 3),
                 lambda c: c.add_node("new", {n: f"10.9.9.{n}" for n in c.link_numbers}),
                 lambda c: c.to_plan()):
        try:
            edit(conf)
        except UserError:
            pass


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(EDITS)
def test_mutated_confs_give_only_project_errors(tmp_path, capsys, edits):
    """The same through the CLI: lint and fmt answer 0/1/2, never a crash (70)."""
    path = tmp_path / "mutated.conf"
    path.write_text(mutate(GOOD, edits))
    for args in (["lint", str(path)], ["lint", "--json", str(path)], ["fmt", str(path)]):
        assert main(["conf", *args]) in (0, 1, 2)
    capsys.readouterr()


def test_deep_nesting_is_a_parse_error_not_a_crash(capsys, tmp_path):
    deep = tmp_path / "deep.conf"
    deep.write_text("a {\n" * 1000 + "}\n" * 1000)
    for command in ("lint", "fmt"):
        code, _, err = run(capsys, command, str(deep))
        assert code == 2 and "nest deeper than 16 levels" in err and "Traceback" not in err
