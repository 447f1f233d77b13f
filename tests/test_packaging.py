"""The fixed top-level folders must be mapped into the single pvestrap.* namespace."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAPPED = {"checks": "pvestrap.checks", "wizard": "pvestrap.wizard",
          "templates": "pvestrap.templates", "iso": "pvestrap.iso"}


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_mapped_and_listed():
    cfg = _config()
    package_dir = cfg["package-dir"]
    packages = set(cfg["packages"])
    for folder, name in MAPPED.items():
        assert package_dir.get(name) == folder, f"{folder}/ is not mapped to {name}"
    for init in list(ROOT.glob("pvestrap/**/__init__.py")) + [
        p for f in MAPPED for p in (ROOT / f).glob("**/__init__.py")
    ]:
        rel = init.parent.relative_to(ROOT)
        top, *rest = rel.parts
        base = MAPPED.get(top, "pvestrap" if top == "pvestrap" else None)
        assert base, f"{rel} is outside the package folders"
        dotted = ".".join([base, *rest])
        assert dotted in packages, \
            f"package {dotted} ({rel}) missing from [tool.setuptools].packages"


def test_no_bare_top_level_modules_are_installed():
    cfg = _config()
    for name in cfg["packages"]:
        assert name == "pvestrap" or name.startswith("pvestrap."), name
    for name in cfg["package-dir"]:
        assert name == "pvestrap" or name.startswith("pvestrap."), name


def test_installed_namespace_resolves_to_the_folders():
    import pvestrap.checks
    import pvestrap.iso
    import pvestrap.templates
    import pvestrap.wizard

    for mod, folder in ((pvestrap.checks, "checks"), (pvestrap.wizard, "wizard"),
                        (pvestrap.templates, "templates"), (pvestrap.iso, "iso")):
        assert pathlib.Path(mod.__file__).parent.name == folder
    out = subprocess.run([sys.executable, "-c", "import checks"], capture_output=True,
                         cwd="/", text=True)
    assert out.returncode != 0, "a bare top-level 'checks' module is importable"


def test_help_lists_groups_without_importing_heavy_libraries():
    code = ("import sys; from pvestrap.cli import main; main(['--help']); "
            "heavy = [m for m in ('scapy', 'questionary', 'jinja2', 'ntplib') "
            "if m in sys.modules]; "
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_the_core_imports_nothing_from_the_front_ends_not_even_lazily():
    """Core modules (pvestrap/ but the CLI: cli.py and commands/) and checks/ build on nothing
    above them: every import statement counts, in functions too."""
    import ast

    above = ("pvestrap.iso", "pvestrap.wizard", "pvestrap.commands")
    core = [p for p in [*ROOT.glob("pvestrap/**/*.py"), *ROOT.glob("checks/**/*.py")]
            if p.relative_to(ROOT).parts[:2] != ("pvestrap", "commands")
            and p.relative_to(ROOT) != pathlib.Path("pvestrap/cli.py")]
    found = []
    for path in core:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            if any(n == a or n.startswith(a + ".") for n in names for a in above):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(core) > 50 and found == []



def test_the_pvecm_pvesh_test_stand_in_is_not_in_the_built_package(tmp_path):
    """The stand-in (tests/standin/) is test tooling: setuptools' build_py, the step that lays out
    what a wheel installs (packages and package data), run on a copy of the tracked files, gives
    the product and not one stand-in file, by name or by its TEST STAND-IN banner."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True,
                             check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    assert (src / "tests/standin/pvecm").is_file(), "the stand-in is not where the tests look"
    lib = tmp_path / "lib"
    out = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                          "build_py", "--build-lib", str(lib)], cwd=src, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    names = {p.relative_to(lib).as_posix() for p in lib.rglob("*") if p.is_file()}
    assert {"pvestrap/apply/pve.py", "pvestrap/templates/datacenter.cfg.j2"} <= names
    assert sorted(n for n in names if "standin" in n.lower()
                  or n.rsplit("/", 1)[-1] in ("pvecm", "pvesh")) == []
    assert sorted(n for n in names if b"TEST STAND-IN" in (lib / n).read_bytes()) == []


def test_the_mesh_agent_starts_without_the_command_line_libraries():
    """`pvestrap preflight --agent` (every node of a mesh, at once) goes straight to the agent:
    no typer/click import; its errors are still one line and an exit code, no traceback."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "pvestrap", "preflight",
                          "--agent"], input="{}\n", capture_output=True, text=True, timeout=60)
    imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines()
                if line.startswith("import time:")]
    assert "pvestrap.mesh" in imported
    assert not [m for m in imported if m.split(".")[0] in ("typer", "click", "pvestrap.cli")]
    # nor what only some runs use (each 2-4 ms of every agent's start, 32 of them on 2 cores in
    # the lab): TLS (a join target's fingerprint), the thread pool (pings, NTP servers), the
    # time zone database, the installer's validation (an answer file with [installer]) and the
    # close-match suggestions (a typo)
    assert not [m for m in imported if m in ("ssl", "concurrent.futures", "zoneinfo", "difflib",
                                             "pvestrap.installer.validate")]
    errors = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    # an empty job is bad input (exit 2, the fix named), as the CLI would say it
    assert out.returncode == 2, out.stderr[-500:]
    assert errors[0].startswith("error: the agent's job (the first line on stdin) lacks"), \
        out.stderr[-500:]
    assert errors[1].startswith("  fix: agents are started by"), out.stderr[-500:]
    assert "Traceback" not in out.stderr


def test_the_mesh_agent_keeps_its_imported_modules_out_of_the_collectors_sight():
    """launch.imported(): after the agent's imports the collector is on again, and what they
    made is frozen (never walked again); a cycle made after is still collected."""
    code = ("import gc, sys; from pvestrap import launch; gc.disable(); import pvestrap.mesh; "
            "launch.imported(); a = []; a.append(a); del a; "
            "print(gc.isenabled(), gc.get_freeze_count(), gc.collect())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    enabled, frozen, collected = out.stdout.split()
    assert enabled == "True" and int(frozen) > 5000 and int(collected) >= 1, out.stderr
