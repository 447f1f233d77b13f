"""`pvestrap iso hook`: the first-boot hook zipapp, run with plain python3 interpreters that
have no pvestrap (and no jinja2) installed, in an empty environment."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import zipfile

import pytest

from pvestrap.answers import load
from pvestrap.cli import main
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.iso import hook as iso_hook
from pvestrap.iso.hook_modules import closure, imports_of
from pvestrap.render import render_corosync_conf

DATA = pathlib.Path(__file__).parent / "data" / "iso"
CLUSTER = DATA / "cluster.toml"
def _interpreter(version: str) -> str:
    """A python3.X outside this virtualenv: the system's, else a pyenv build."""
    candidates = [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}",
                  *sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))]
    return next((c for c in candidates if os.access(c, os.X_OK)), candidates[0])


PYTHONS = {v: _interpreter(v) for v in ("3.10", "3.11", "3.12", "3.13")}


@pytest.fixture(scope="module")
def hook_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("hook") / "proxmox-first-boot"
    assert main(["iso", "hook", "--answers", str(CLUSTER), "--out", str(out),
                 "--secret-file", str(secret_of(out))]) == 0
    return out


def secret_of(hook: pathlib.Path) -> pathlib.Path:
    """The cluster's first-boot secret the hook at HOOK was built with (made beside it)."""
    return hook.with_name("cluster.firstboot-secret")


def _run(argv, cwd, env=None, timeout=120):
    return subprocess.run(argv, cwd=cwd, env=env or {}, capture_output=True, text=True,
                          timeout=timeout)


def test_hook_size_and_what_it_carries(hook_file, record_property, capsys):
    data = hook_file.read_bytes()
    size = len(data)
    record_property("hook_bytes", size)
    print(f"hook size: {size} bytes ({size / iso_hook.MAX_BYTES:.1%} of the 1 MiB limit)")
    assert size <= iso_hook.MAX_BYTES
    assert data.startswith(b"#!/usr/bin/env python3\n")
    assert hook_file.stat().st_mode & 0o777 == 0o700  # it carries the first-boot secret
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    for wanted in ("__main__.py", "pvestrap/__init__.py", "pvestrap/answers.py",
                   "pvestrap/templates/datacenter.cfg.j2", "pvestrap/checks/responder.py",
                   "jinja2/__init__.py", "markupsafe/_native.py", "ntplib.py",
                   "ping3/__init__.py", "pvestrap-hook/answers.toml",
                   "pvestrap-hook/firstboot.secret", "pvestrap/firstboot/secret.py",
                   "pvestrap-hook/manifest.json", "pvestrap-hook/licenses/Jinja2/LICENSE.txt"):
        assert wanted in names, wanted
    tops = {n.split("/")[0] for n in names}
    assert tops == {"__main__.py", "pvestrap", "pvestrap-hook", "jinja2", "markupsafe",
                    "ntplib.py", "ping3"}
    assert not [n for n in names if n.endswith((".so", ".pyc", ".c"))]
    assert not [n for n in names if n.startswith(("pvestrap/commands", "pvestrap/lab/",
                                                  "pvestrap/cli.py"))]
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.read("pvestrap-hook/answers.toml") == CLUSTER.read_bytes()
    manifest = json.loads(zf.read("pvestrap-hook/manifest.json"))
    assert manifest["entry"] == "pvestrap.firstboot.entry"
    assert manifest["entry_present"] is True
    assert "pvestrap/firstboot/flow.py" in names and "pvestrap/preflight.py" in names
    assert set(manifest["dependencies"]) == {"jinja2", "markupsafe", "ntplib", "ping3"}
    assert manifest["answers"]["sha256"] == hashlib.sha256(CLUSTER.read_bytes()).hexdigest()
    assert manifest["firstboot_secret"] == {"member": "pvestrap-hook/firstboot.secret"}
    assert zf.read("pvestrap-hook/firstboot.secret") == secret_of(hook_file).read_bytes()
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())


def test_the_build_is_reproducible(hook_file):
    secret = firstboot_secret.read(secret_of(hook_file))
    assert iso_hook.build(CLUSTER, secret=secret).data == hook_file.read_bytes()
    other = iso_hook.build(CLUSTER, secret=bytes(32))
    assert other.data != hook_file.read_bytes()


def test_the_hook_writes_the_secret_root_only_and_makes_itself_root_only(hook_file, tmp_path):
    """The installer may leave /var/lib/proxmox-first-boot/proxmox-first-boot readable by all
    (chmod +x): the first run writes the secret 0600 beside the answers and takes group and
    others' rights off the hook. Nothing the hook prints shows the secret."""
    loose = tmp_path / "proxmox-first-boot"
    loose.write_bytes(hook_file.read_bytes())
    loose.chmod(0o755)
    state = tmp_path / "state"
    done = _run([PYTHONS["3.11"], str(loose), "--selftest", "--state-dir", str(state)],
                tmp_path)
    assert done.returncode == 0, done.stderr
    written = state / "answers.firstboot-secret"
    assert written.read_bytes() == secret_of(hook_file).read_bytes()
    assert written.stat().st_mode & 0o777 == 0o600
    assert loose.stat().st_mode & 0o777 == 0o700
    assert (state / "answers.toml").stat().st_mode & 0o777 == 0o644  # no secret in it
    hexed = secret_of(hook_file).read_text().strip()
    printed = [_run([PYTHONS["3.11"], str(loose), flag], tmp_path)
               for flag in ("--print-answers", "--manifest", "--help")]
    for out in [done, *printed]:
        assert hexed not in out.stdout + out.stderr
        assert bytes.fromhex(hexed).hex().upper() not in out.stdout + out.stderr



# On a read-only tmpfs in a private mount namespace (gone when sh exits): the hook, left 0755 as
# the installer may leave it, is run through its shebang; then the fix it names is done and it
# is run again.
READ_ONLY_RUN = """set -u
ro=$1 hook=$1/proxmox-first-boot state=$3
mount -t tmpfs -o size=4m,mode=0755 tmpfs "$ro" || exit 90
cp "$2" "$hook" && chmod 0755 "$hook" && mount -o remount,ro "$ro" || exit 91
"$hook" --selftest --state-dir "$state" >/dev/null 2>"$4"
echo "first $? $(stat -c %a "$hook")"
mount -o remount,rw "$ro" && chmod go= "$hook" || exit 92
"$hook" --selftest --state-dir "$state" >/dev/null 2>&1
echo "again $? $(stat -c %a "$hook")"
"""


def test_a_hook_that_cannot_chmod_itself_says_so_and_how_to_fix_it(hook_file, tmp_path):
    """Before, a failed self-chmod read 'cannot write the answer file under STATE', which the
    hook had written."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a read-only mount in a private mount namespace)")
    ro, state, err = tmp_path / "ro", tmp_path / "state", tmp_path / "stderr"
    ro.mkdir()
    done = _run(["unshare", "-m", "--propagation", "private", "sh", "-c", READ_ONLY_RUN, "sh",
                 str(ro), str(hook_file), str(state), str(err)], tmp_path,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    hook = ro / "proxmox-first-boot"
    assert done.stdout.splitlines() == ["first 1 755", "again 0 700"], done.stdout + done.stderr
    message = err.read_text()
    assert message.startswith("pvestrap first-boot hook: the answer file and the first-boot "
                              f"secret are written ({state}), but the hook cannot make itself "
                              f"root's alone: chmod 0700 {hook} failed: Read-only file system")
    assert f"Fix: make its filesystem writable (`mount -o remount,rw {ro}`), then " \
           f"`chmod go= {hook}`, then run the hook again" in message
    assert "cannot write the answer file" not in message
    assert secret_of(hook_file).read_text().strip() not in message
    assert (state / "answers.firstboot-secret").read_bytes() == \
        secret_of(hook_file).read_bytes()
    assert not hook.exists()  # the mount was the namespace's own


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_selftest_on_a_plain_python_without_pvestrap(hook_file, tmp_path, version):
    python = PYTHONS[version]
    if not os.access(python, os.X_OK):
        pytest.skip(f"python {version} is not installed here ({python})")
    bare = _run([python, "-c", "import pvestrap"], tmp_path)
    assert bare.returncode != 0, f"{python} has pvestrap installed: the test would prove nothing"
    done = _run([python, str(hook_file), "--selftest", "--state-dir", str(tmp_path / "state")],
                tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["python"].startswith(version + ".")
    assert report["failed"] == {}
    assert report["outside_archive"] == []
    manifest = json.loads(_run([python, str(hook_file), "--manifest"], tmp_path).stdout)
    assert report["imported"] == len(manifest["modules"]) + len(manifest["dependencies"])
    assert report["markupsafe_backend"] == "markupsafe._native"
    assert report["markupsafe_escape"] == "&lt;a &amp; b&gt;"
    assert report["nodes"] == ["pve1", "pve2", "pve3"]
    assert report["firstboot_present"] is True
    same = hashlib.sha256(render_corosync_conf(load(CLUSTER)).encode()).hexdigest()
    assert report["corosync_conf_sha256"] == same
    assert (tmp_path / "state" / "answers.toml").read_bytes() == CLUSTER.read_bytes()


def test_runs_as_an_executable_through_its_shebang(hook_file, tmp_path):
    done = _run([str(hook_file), "--selftest", "--state-dir", str(tmp_path)], tmp_path,
                env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["failed"] == {}


def test_extraction_is_idempotent_and_print_answers_shows_the_file(hook_file, tmp_path):
    python = PYTHONS["3.11"]
    state = tmp_path / "state"
    assert _run([python, str(hook_file), "--selftest", "--state-dir", str(state)],
                tmp_path).returncode == 0
    before = (state / "answers.toml").stat()
    assert _run([python, str(hook_file), "--selftest", "--state-dir", str(state)],
                tmp_path).returncode == 0
    after = (state / "answers.toml").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert oct(after.st_mode & 0o777) == "0o644"
    printed = _run([python, str(hook_file), "--print-answers"], tmp_path)
    assert printed.stdout == CLUSTER.read_text()


def test_the_real_entry_runs_the_first_boot_flow_from_the_archive(hook_file, tmp_path):
    """Outside a lab this host is no node of the file: the flow must refuse (exit 2, bad
    input) before it changes anything. That it says so proves the flow ran from the hook."""
    assert socket.gethostname().split(".")[0] not in ("pve1", "pve2", "pve3")
    state = tmp_path / "state"
    done = _run([PYTHONS["3.11"], str(hook_file), "network-online", "--state-dir", str(state)],
                tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "stage network-online" in done.stdout
    assert "is not in the answer file" in done.stderr
    assert "Traceback" not in done.stderr


def test_too_old_python_gets_a_clear_message(hook_file, tmp_path):
    python = PYTHONS["3.10"]
    if not os.access(python, os.X_OK):
        pytest.skip("python 3.10 is not installed here")
    done = _run([python, str(hook_file), "--selftest"], tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == ("pvestrap first-boot hook: needs python3 >= 3.11, this is "
                                   + done.stderr.strip().rsplit(" ", 1)[1])
    assert " 3.10." in done.stderr


# -- refusals: nothing is written ----------------------------------------------------------------

def test_a_cluster_file_with_a_password_is_refused(tmp_path, capsys):
    bad = tmp_path / "cluster.toml"
    bad.write_text(CLUSTER.read_text().replace('[join]\n', '[join]\nroot_password = "x"\n'))
    out = tmp_path / "hook"
    assert main(["iso", "hook", "--answers", str(bad), "--out", str(out)]) == 2
    assert "[answer-secret-refused]" in capsys.readouterr().err
    assert not out.exists()


def test_the_second_look_for_secrets_catches_what_the_loader_allows(tmp_path):
    """password_file and password_env name a place, not a password: allowed. Anything else
    that looks like a password is refused by the hook's own scan as well."""
    found = list(iso_hook._secret_keys({"join": {"password_env": "X", "passwd": "y"},
                                        "nodes": [{"x": {"root-password": 1}}]}, ""))
    assert found == ["join.passwd", "nodes[0].x.root-password"]


def test_a_hook_over_1_mib_is_refused(tmp_path, capsys):
    big = tmp_path / "cluster.toml"
    noise = secrets.token_urlsafe(735_000)  # ~980 kB that deflate cannot shrink much
    lines = "\n".join(noise[i:i + 100] for i in range(0, len(noise), 100))
    big.write_text(CLUSTER.read_text().replace(
        '[datacenter]\n', f'[datacenter]\ndescription = """\n{lines}"""\n'))
    load(big)
    out = tmp_path / "hook"
    assert main(["iso", "hook", "--answers", str(big), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "over the installer's limit of 1048576 bytes" in err and "[" not in err.split(":")[0]
    assert not out.exists()
    assert not list(tmp_path.glob(".hook*"))
    assert not (tmp_path / "cluster.firstboot-secret").exists()  # no secret for a failed build


def test_an_invalid_cluster_file_is_refused(tmp_path, capsys):
    bad = tmp_path / "cluster.toml"
    bad.write_text(CLUSTER.read_text().replace('name = "rack1"', 'name = "rack 1"'))
    out = tmp_path / "hook"
    assert main(["iso", "hook", "--answers", str(bad), "--out", str(out)]) == 2
    assert "cluster.name" in capsys.readouterr().err
    assert not out.exists()


# -- which modules -------------------------------------------------------------------------------

def test_start_up_imports_of_front_end_libraries_make_a_module_unsafe():
    found = closure(("pvestrap.cli",))
    assert found.modules == ()
    (entry, why), = found.unsafe
    assert entry == "pvestrap.cli" and "typer" in why


def test_lazy_imports_and_resource_packages_are_followed():
    found = closure(("pvestrap.render",))
    assert "pvestrap.templates" in found.modules      # resources.files("pvestrap.templates")
    assert "pvestrap.interfaces" in found.modules     # imported inside a function
    assert found.dependencies == ("jinja2",)


def test_type_checking_imports_are_not_followed():
    names = {i.module for i in imports_of("pvestrap.errors")}
    assert "pvestrap.findings" not in names


def test_options_after_a_double_dash_go_to_the_flow(hook_file, tmp_path):
    done = _run([PYTHONS["3.11"], str(hook_file), "fully-up", "--state-dir", str(tmp_path),
                 "--", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: pvestrap firstboot" in done.stdout and "--corosync-start" in done.stdout
    own = _run([PYTHONS["3.11"], str(hook_file), "--help"], tmp_path)
    assert own.returncode == 0 and "usage: proxmox-first-boot" in own.stdout


def test_extra_modules_are_carried_when_asked(hook_file):
    """A build asks for modules the first-boot flow does not import (the Ansible collection's
    status module imports pvestrap.verify, which first boot now carries anyway: it verifies a
    QDevice; pvestrap.report.junit it never imports)."""
    plain = iso_hook.build(CLUSTER)
    assert not plain.carries_secret and iso_hook.mode(plain) == 0o755
    more = iso_hook.build(CLUSTER, extra=("pvestrap.verify", "pvestrap.report.junit"))
    assert "pvestrap.verify" in plain.modules and "pvestrap.verify" in more.modules
    assert "pvestrap.report.junit" not in plain.modules
    assert "pvestrap.report.junit" in more.modules
    assert more.size <= iso_hook.MAX_BYTES
