"""Hostile and careless input through the real CLI entry (pvestrap.cli.main): answer files,
corosync.conf files, installer answers and arguments. Every run ends in 0, 1 or 2 with no
traceback, writes nothing but its own output, and `conf fmt`'s output always parses again for
`conf lint`. Bounded in examples (hypothesis), not in wall-clock time."""

from __future__ import annotations

import contextlib
import io
import pathlib
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pvestrap import answers
from pvestrap.cli import main

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
CONF_LINES = st.sampled_from(["totem {", "}", "nodelist {", "node {", "quorum {",
                              "  name: pve1", "nodeid: 1", "ring0_addr: 10.0.0.1", "# comment",
                              "config_version: 3", "cluster_name: prod", "", "\t", "a: b: c",
                              "interface {", "linknumber: 0", "x" * 505, "{", ": x", "k:"])
ANSWER_EDITS = st.sampled_from([("", ""), ('"10.10.10.1"', '"not-an-ip"'), ("prod", "p r o d"),
                                ("nodeid = 1", "nodeid = -1"), ("nodeid = 1", "nodeid = 1.5"),
                                ("[cluster]", "[cluster"), ('name = "', 'name = """'),
                                ("link0", "link9"), ("=", "=="), ("\n", "\n\n[x]\n")])


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


def _snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@FUZZ
@given(st.lists(CONF_LINES, max_size=30), st.integers(0, 3))
def test_corosync_conf_files(lines, seed):
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        conf = folder / "corosync.conf"
        conf.write_text("\n".join(lines) + "\n" * (seed % 2))
        before = _snapshot(folder)
        for argv in (["conf", "lint", str(conf)], ["conf", "fmt", str(conf)]):
            code, err = _run(argv)
            assert code in (0, 1, 2) and "Traceback" not in err, (argv, err)
        assert _snapshot(folder) == before  # neither command wrote anything
        formatted = folder / "fmt.conf"
        code, _ = _run(["conf", "fmt", str(conf)])
        if code == 0:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                main(["conf", "fmt", str(conf)])
            formatted.write_text(out.getvalue())
            code, err = _run(["conf", "lint", str(formatted)])
            assert code in (0, 1), err  # fmt's output always parses again


@FUZZ
@given(st.lists(ANSWER_EDITS, max_size=4), st.binary(max_size=40))
def test_answer_files(edits, junk):
    text = answers.example()
    for old, new in edits:
        text = text.replace(old, new, 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        path = folder / "cluster.toml"
        path.write_bytes(text.encode() + junk)
        before = _snapshot(folder)
        for argv in (["answer", "validate", str(path)],
                     ["render", "--answers", str(path), "--node", "pve1"],
                     ["apply", "--answers", str(path), "--node", "pve1", "--dry-run",
                      "--root", tmp],
                     ["iso", "validate-answer", str(path)]):
            code, err = _run(argv)
            assert code in (0, 1, 2) and "Traceback" not in err, (argv, err)
        assert _snapshot(folder) == before


@FUZZ
@given(st.lists(st.sampled_from(["--ignore", "link-ports", "nan", "inf", "-1", "--ttl",
                                 "--rate", "--json", "--node", "\x00", "../..", "--strict",
                                 "--answers", "/dev/zero", "--lock-timeout", "--root", "/"]),
                max_size=6),
       st.sampled_from([["preflight", "--list-checks"], ["answer", "validate"], ["render"],
                        ["conf", "lint"], ["doctor", "--list-checks"], ["responder", "-p", "0"],
                        ["apply", "--dry-run"], ["status", "--json"]]))
def test_cli_arguments(args, command):
    code, err = _run(command + args)
    assert code in (0, 1, 2, 3) and "Traceback" not in err and "internal error" not in err, err
