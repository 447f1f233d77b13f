"""Fixtures shared by every test folder: the `lab` factory (tests/support/labtesting.py), the
hook that lets it print a failed test's lab status and logs before tearing the lab down, and the
Ansible collection built and installed for the tests that run ansible-playbook."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labtesting import lab, pytest_runtest_makereport  # noqa: F401  (registered here)


@pytest.fixture(scope="session")
def ansible_collection(tmp_path_factory):
    """The collection in ansible/, built with `ansible-galaxy collection build` and installed
    from that file into a temporary collections path (nothing is downloaded); the environment
    ansible-playbook runs with. Skipped without ansible-core (pip install -e '.[test]')."""
    bindir = Path(sys.executable).parent
    if not (bindir / "ansible-galaxy").exists():
        pytest.skip("ansible-core is not installed (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("ansible")
    source = Path(__file__).resolve().parent.parent / "ansible"
    subprocess.run([str(bindir / "ansible-galaxy"), "collection", "build", str(source),
                     "--output-path", str(work)], check=True, capture_output=True, text=True)
    built = next(work.glob("pvestrap-cluster-*.tar.gz"))
    subprocess.run([str(bindir / "ansible-galaxy"), "collection", "install", str(built),
                     "-p", str(work / "collections"), "--offline"],
                    check=True, capture_output=True, text=True)
    env = {"PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(work),
           "ANSIBLE_COLLECTIONS_PATH": str(work / "collections"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORKS": "20", "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
           "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "LANG": "C.UTF-8"}
    playbook = str(bindir / "ansible-playbook")

    def play(inventory, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """ansible-playbook -i INVENTORY pvestrap.cluster.site ARGS (build dir in WORK)."""
        return subprocess.run([playbook, "-i", str(inventory), "pvestrap.cluster.site",
                               "-e", f"pvestrap_build_dir={work}/build", *args],
                              capture_output=True, text=True, env=env, timeout=timeout)

    yield {"playbook": playbook, "env": env, "built": built, "work": work, "play": play,
           "recap": recap}
    shutil.rmtree(work, ignore_errors=True)


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP of ansible-playbook's output: host -> ok, changed, unreachable, failed."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+"
                         r"failed=(\d+)", stdout, re.M):
        out[m.group(1)] = dict(zip(("ok", "changed", "unreachable", "failed"),
                                   map(int, m.groups()[1:])))
    return out
