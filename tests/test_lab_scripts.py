"""The lab's standalone scripts (holder.py, detach.py, forwarder.py) as lab.proc.script runs them:
no site, no PYTHON* variables, their own folder first on sys.path, so holder.py imports
detach.py beside it by name. The lab tests (tests/lab/, every `lab up`) run them for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pvestrap.lab import proc
from pvestrap.lab.names import SCRIPTS

LAB = Path(proc.__file__).parent


def test_the_holder_imports_detach_beside_it_and_nothing_from_the_environment(tmp_path):
    """A detach.py on PYTHONPATH or in the working folder is not the one the holder gets."""
    (tmp_path / "detach.py").write_text("raise SystemExit('the wrong detach.py')\n")
    argv = proc.script("holder.py") + [json.dumps([])]  # no nodes: start nothing, print []
    done = subprocess.run(argv, cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "[]\n", "")
    assert "sys.path.append" not in (LAB / "holder.py").read_text()


def test_no_module_beside_the_scripts_takes_a_standard_library_name():
    """The scripts' folder comes before the standard library on their sys.path."""
    names = {p.stem for p in LAB.glob("*.py")}
    assert set(SCRIPTS) <= {n + ".py" for n in names}
    assert sorted(names & sys.stdlib_module_names) == []


def test_the_scripts_run_without_site_or_environment():
    argv = proc.script("holder.py")
    assert argv[0] == sys.executable and argv[-1] == str(LAB / "holder.py")
    flags = argv[1:-1]
    assert {"-E", "-s", "-S"} <= set(flags) and "-I" not in flags
