"""`pvestrap answer init|validate|schema` through pvestrap.cli.main, and once as a real process."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from pvestrap import answers
from pvestrap.cli import main

DATA = pathlib.Path(__file__).parent / "data" / "answers"
PVESTRAP = pathlib.Path(sys.executable).parent / "pvestrap"


def test_init_writes_the_example_and_refuses_to_overwrite(tmp_path, capsys):
    target = tmp_path / "answers.toml"
    assert main(["answer", "init", str(target)]) == 0
    assert target.read_text() == answers.example()
    assert f"pvestrap answer validate {target}" in capsys.readouterr().out
    target.write_text("# mine\n")
    assert main(["answer", "init", str(target)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err
    assert target.read_text() == "# mine\n"
    assert main(["answer", "init", str(target), "--force"]) == 0
    assert target.read_text() == answers.example()


def test_init_and_secret_make_the_clusters_first_boot_secret_once(tmp_path, capsys):
    """Answers prepared for a first boot without an ISO come with the cluster's first-boot
    secret beside them (0600); `answer secret` makes or checks it; nothing prints it."""
    target = tmp_path / "answers.toml"
    assert main(["answer", "init", str(target)]) == 0
    made = tmp_path / "answers.firstboot-secret"
    out = capsys.readouterr().out
    assert f"first-boot secret of this cluster: {made}, made" in out
    assert "install -m 600" in out and "/etc/pvestrap/answers.firstboot-secret" in out
    assert made.stat().st_mode & 0o777 == 0o600
    value = made.read_text().strip()
    assert len(bytes.fromhex(value)) == 32 and value not in out
    assert main(["answer", "secret", str(target)]) == 0
    again = capsys.readouterr()
    assert "present, checked" in again.out and value not in again.out + again.err
    assert made.read_text().strip() == value
    assert value not in target.read_text()
    other = tmp_path / "other.firstboot-secret"
    assert main(["answer", "secret", str(target), "--secret-file", str(other)]) == 0
    assert other.read_text() != made.read_text()
    made.chmod(0o640)
    assert main(["answer", "secret", str(target)]) == 2
    assert "fix: chmod 600" in capsys.readouterr().err


def test_secret_of_an_invalid_answer_file_makes_nothing(tmp_path, capsys):
    bad = tmp_path / "answers.toml"
    bad.write_text("[cluster]\nname = 'a b'\n")
    assert main(["answer", "secret", str(bad)]) == 2
    assert not (tmp_path / "answers.firstboot-secret").exists()


def test_init_without_a_file_prints_the_example(capsys):
    assert main(["answer", "init"]) == 0
    assert capsys.readouterr().out == answers.example()


def test_init_into_a_missing_folder_is_a_user_error(tmp_path, capsys):
    assert main(["answer", "init", str(tmp_path / "no" / "such" / "a.toml")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_validate_a_good_file_prints_a_summary(tmp_path, capsys):
    target = tmp_path / "answers.toml"
    target.write_text(answers.example())
    assert main(["answer", "validate", str(target)]) == 0
    assert capsys.readouterr().out == f"{target}: valid, 3 nodes, 2 links\n"
    assert main(["answer", "validate", str(target), "--node", "pve2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "node pve2: nodeid 2, join (create node: pve1)"


def test_validate_with_an_unknown_node_names_the_known_ones(tmp_path, capsys):
    target = tmp_path / "answers.toml"
    target.write_text(answers.example())
    assert main(["answer", "validate", str(target), "--node", "pve7"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "pve1, pve2, pve3" in captured.err and "--node" in captured.err


def test_validate_prints_every_problem_with_its_line(capsys):
    path = DATA / "many-problems.toml"
    assert main(["answer", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: 23 problems found\n")
    for line, subject, code in [(3, "cluster.name", "cluster-name-invalid"),
                                (21, "nodes[0].nodeid", "answer-type-invalid"),
                                (27, "nodes[1].lnik2", "answer-key-unknown"),
                                (39, "join.password", "answer-secret-refused"),
                                (43, "datacenter.migration.network", "migration-network-invalid"),
                                (49, "preflight.ignore_checks", "ignore-all-refused")]:
        assert any(ln.startswith(f"  {path}:{line}: {subject}: ") and ln.endswith(f"[{code}]")
                   for ln in err.splitlines()), (line, subject)
    assert "hunter2" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,needle", [
    ('[cluster]\nname = "a"\nname = = 2\n', ":3: not valid TOML"),
    (b'[cluster]\nname = "\xff"\n', ":2: not UTF-8"),
])
def test_validate_reports_unparsable_files_with_their_line(tmp_path, capsys, content, needle):
    target = tmp_path / "broken.toml"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    assert main(["answer", "validate", str(target)]) == 2
    assert f"{target}{needle}" in capsys.readouterr().err


def test_validate_a_missing_file(tmp_path, capsys):
    assert main(["answer", "validate", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_schema_prints_the_json_schema(capsys):
    assert main(["answer", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == answers.schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(printed["properties"]) == {"cluster", "links", "nodes", "join", "datacenter",
                                          "preflight", "installer", "qdevice"}


def test_the_installed_command_exits_2_without_a_traceback(tmp_path):
    assert PVESTRAP.exists(), PVESTRAP
    proc = subprocess.run([str(PVESTRAP), "answer", "validate",
                           str(DATA / "many-problems.toml")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert ":39: join.password: " in proc.stderr


def test_debug_adds_a_traceback_but_keeps_the_exit_code(tmp_path, capsys):
    """--debug is for reading a failure, not for changing what a script sees: bad input stays 2."""
    from pvestrap.cli import main

    missing = str(tmp_path / "missing.toml")
    assert main(["answer", "validate", missing]) == 2
    plain = capsys.readouterr().err
    assert main(["--debug", "answer", "validate", missing]) == 2
    with_debug = capsys.readouterr().err
    assert "Traceback" not in plain and "Traceback" in with_debug


def test_a_misspelled_ignore_is_refused_naming_the_closest_check(capsys):
    from pvestrap.cli import main

    assert main(["preflight", "--ignore", "link-portz"]) == 2
    err = capsys.readouterr().err
    assert "link-portz" in err and "did you mean 'link-ports'" in err
    assert main(["doctor", "--ignore", "authkeys"]) == 2
    assert "did you mean 'authkey'" in capsys.readouterr().err


def test_apply_offers_the_lock_timeout_its_lock_error_suggests(tmp_path, capsys):
    from pvestrap.apply.lock import apply_lock
    from pvestrap.cli import main
    from pvestrap import answers

    path = tmp_path / "cluster.toml"
    path.write_text(answers.example())
    assert main(["apply", "--answers", str(path), "--node", "pve1", "--dry-run",
                 "--lock-timeout", "nan"]) == 2
    assert "--lock-timeout" in capsys.readouterr().err
    with apply_lock(str(tmp_path)):
        assert main(["apply", "--answers", str(path), "--node", "pve1", "--yes",
                     "--root", str(tmp_path), "--lock-timeout", "0.2"]) == 1
    err = capsys.readouterr().err
    assert "after waiting 0.2 s" in err and "--lock-timeout" in err


def test_a_nul_byte_in_an_argument_is_bad_input_not_a_crash(capsys):
    """Found by the CLI fuzz test: click's path check raised ValueError (exit 70)."""
    from pvestrap.cli import main

    for argv in (["answer", "validate", "a\x00b"], ["render", "--answers", "x\x00", "--node",
                                                   "n1"], ["iso", "validate-answer", "\x00"]):
        assert main(argv) == 2
        assert "NUL byte" in capsys.readouterr().err
