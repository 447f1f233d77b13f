"""Proxmox VE's real cluster stack for `lab up --pve`: pmxcfs, PVE::IPCC and the Perl `pvecm`,
built from Proxmox's public source once per machine and cached.

Where the sources are is ONE setting: $PVESTRAP_PVE_SOURCES (or `lab up --pve-sources DIR`), a
folder holding `git archive` tarballs (`pve-cluster-*.tar.gz`, `pve-common-*`,
`pve-access-control-*`, `pve-apiclient-*`) or unpacked checkouts of Proxmox's repositories
(git.proxmox.com: pve-cluster, pve-common, pve-access-control, pve-apiclient). Without it, the
folder `shared/oracle/proxmox` beside the project checkout is looked at (where the project's
development machines keep them); nothing else depends on that place. Which Proxmox VE release a
source is for is read from its debian/changelog (pve-cluster 8.x = PVE 8, 9.x = PVE 9), so any
set of tarballs works.

The build (pmxcfs and the IPCC XS module with make, the Perl modules copied, stubs for the three
Rust-built Perl bindings that nothing on the create/join paths calls) goes to
/var/cache/pvestrap-lab/pve-<pve-cluster version>/usr ($PVESTRAP_PVE_CACHE overrides the root),
which each lab node lays over its /usr. Build dependencies: `.ci/debian-packages`.
The built code is Proxmox's (AGPL-3.0), used as a test oracle; none of it is in this project.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator

from pvestrap.errors import OperationFailed, UserError

SOURCES_ENV = "PVESTRAP_PVE_SOURCES"
CACHE_ENV = "PVESTRAP_PVE_CACHE"
CACHE_ROOT = Path("/var/cache/pvestrap-lab")
REPOS = ("pve-cluster", "pve-common", "pve-access-control", "pve-apiclient")
# Repositories whose major version follows the PVE release; pve-apiclient does not.
VERSIONED = ("pve-cluster", "pve-common", "pve-access-control")
_CHANGELOG = re.compile(r"^(?P<package>\S+) \((?P<version>[^)]+)\) (?P<dist>[a-z-]+);")
# Perl modules built in Rust (proxmox-perl-rs) that pve-common/-access-control/-cluster import
# at load time; the create and add --use_ssh paths never call them.
RUST_STUBS = ("PVE::RS::TFA", "PVE::RS::OpenId", "Proxmox::RS::CalendarEvent",
              "Proxmox::RS::Notify")
# g_string_free_and_steal() is GLib 2.76+ (Debian 13); pmxcfs of PVE 9 uses it.
GLIB_COMPAT = "#define g_string_free_and_steal(s) g_string_free((s), FALSE)\n"
BUILD_FORMAT = 1


@dataclass(frozen=True)
class Source:
    repo: str
    path: Path
    version: str

    @property
    def major(self) -> str:
        return self.version.split(".")[0]


def default_sources() -> Path:
    """shared/oracle/proxmox beside the checkout (the project root's parent folder)."""
    return Path(__file__).resolve().parents[3] / "shared" / "oracle" / "proxmox"


def sources_dir(given: str | os.PathLike[str] | None = None) -> Path:
    value = given or os.environ.get(SOURCES_ENV)
    return Path(value) if value else default_sources()


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or CACHE_ROOT)


def _changelog(entry: Path) -> str | None:
    """The first line of the source's debian/changelog (tarball or folder)."""
    try:
        if entry.is_dir():
            with (entry / "debian/changelog").open(encoding="utf-8") as fh:
                return fh.readline()
        if entry.name.endswith(".tar.gz"):
            with tarfile.open(entry) as tar:
                for member in tar:
                    if member.name.endswith("debian/changelog") and member.name.count("/") <= 2:
                        data = tar.extractfile(member)
                        return data.readline().decode() if data else None
    except (OSError, tarfile.TarError):
        return None
    return None


def scan(folder: Path) -> list[Source]:
    found = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        repo = next((r for r in REPOS if entry.name == r or entry.name.startswith(r + "-")),
                    None)
        line = _changelog(entry) if repo else None
        match = _CHANGELOG.match(line or "")
        if repo and match:
            found.append(Source(repo, entry, match["version"]))
    return found


def releases(folder: Path) -> dict[str, dict[str, Source]]:
    """PVE major release -> repo -> source, for every release with all four repositories."""
    found = scan(folder)
    out = {}
    for cluster in (s for s in found if s.repo == "pve-cluster"):
        major = cluster.major
        pick = {"pve-cluster": cluster}
        for repo in REPOS[1:]:
            same = [s for s in found if s.repo == repo
                    and (s.major == major or repo not in VERSIONED)]
            if same:
                pick[repo] = max(same, key=lambda s: _vkey(s.version))
        if len(pick) == len(REPOS):
            out[major] = pick
    return out


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def unavailable(release: str, folder: Path | None = None) -> str | None:
    """Why PVE RELEASE's stack cannot be built here, or None."""
    folder = folder or sources_dir()
    if release not in releases(folder):
        have = ", ".join(sorted(releases(folder))) or "none"
        return (f"Proxmox VE {release} sources (pve-cluster {release}.x, pve-common, "
                f"pve-access-control, pve-apiclient) are not in {folder} (found: {have}); "
                f"point ${SOURCES_ENV} at a folder that has them")
    missing = [t for t in ("make", "cc", "pkg-config", "perl", "corosync", "fusermount")
               if shutil.which(t) is None]
    if missing:
        return f"building the PVE stack needs {', '.join(missing)} (see .ci/debian-packages)"
    return None


# -- building ----------------------------------------------------------------------------------

def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=600, check=False)
    if result.returncode != 0:
        tail = "\n  ".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise OperationFailed(f"building the PVE stack: `{' '.join(argv)}` in {cwd} failed:\n"
                              f"  {tail}", code="lab-pve-build-failed",
                              remedy="install the build dependencies (.ci/debian-packages)")


def _unpack(source: Source, into: Path) -> Path:
    target = into / source.repo
    if source.path.is_dir():
        shutil.copytree(source.path, target, symlinks=True)
        return target
    target.mkdir(parents=True)
    with tarfile.open(source.path) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1] or member.islnk() or ".." in parts[1].split("/"):
                continue
            member.name = parts[1]
            tar.extract(member, target, filter="data")
    return target


def _glib_is_old() -> bool:
    result = subprocess.run(["pkg-config", "--modversion", "glib-2.0"], capture_output=True,
                            text=True, check=False)
    return result.returncode == 0 and _vkey(result.stdout) < (2, 76)


def _perl_vendorarch() -> str:
    return subprocess.run(["perl", "-MConfig", "-e", "print $Config{vendorarch}"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _copy_modules(src: Path, perl: Path) -> None:
    for module in src.rglob("*.pm"):
        if "test" in module.relative_to(src).parts:
            continue
        target = perl / module.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, target)


def _compile(work: Path, usr: Path) -> None:
    cluster = work / "pve-cluster/src"
    env = {}
    if _glib_is_old():
        (work / "glib-compat.h").write_text(GLIB_COMPAT)
        env["CFLAGS"] = f"-include {work / 'glib-compat.h'}"
    _run(["make", "-j2", "pmxcfs"], cluster / "pmxcfs", env)
    _run(["make", "IPCC.so"], cluster / "PVE")
    _run(["make", "IPCConst.pm"], cluster / "PVE/Cluster")
    (usr / "bin").mkdir(parents=True)
    shutil.copy2(cluster / "pmxcfs/pmxcfs", usr / "bin/pmxcfs")
    shutil.copy2(cluster / "PVE/pvecm", usr / "bin/pvecm")
    arch = usr / _perl_vendorarch().removeprefix("/usr/") / "auto/PVE/IPCC"
    arch.mkdir(parents=True)
    shutil.copy2(cluster / "PVE/IPCC.so", arch / "IPCC.so")


def _install_perl(work: Path, usr: Path) -> None:
    perl = usr / "share/perl5"
    for repo in ("pve-common", "pve-access-control", "pve-apiclient", "pve-cluster"):
        _copy_modules(work / repo / "src", perl)
    for package in RUST_STUBS:
        path = perl / (package.replace("::", "/") + ".pm")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"package {package};\n# pvestrap lab: stand-in for a Rust-built binding "
                        f"(not on plain Debian); dies when called\nsub new {{ die "
                        f"\"{package} is not available in the pvestrap lab\\n\" }}\n1;\n")


def manifest(picked: dict[str, Source]) -> dict:
    return {"format": BUILD_FORMAT,
            "sources": {r: {"version": s.version, "path": str(s.path),
                            "mtime": int(s.path.stat().st_mtime)} for r, s in picked.items()}}


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_built(release: str, folder: Path | None = None) -> Path:
    """The cached build of PVE RELEASE ("8", "9"): a folder with usr/ inside. Built on first
    use (about 10 s) under a lock, so parallel labs build it once."""
    folder = folder or sources_dir()
    why = unavailable(release, folder)
    if why:
        raise UserError(why, code="lab-pve-sources-missing",
                        remedy=f"set {SOURCES_ENV} to a folder with Proxmox's sources")
    picked = releases(folder)[release]
    target = cache_root() / f"pve-{picked['pve-cluster'].version}"
    want = manifest(picked)
    with _locked(cache_root()):
        if _read_manifest(target) == want:
            return target
        with tempfile.TemporaryDirectory(dir=cache_root(), prefix=".build-") as tmp:
            work = Path(tmp) / "src"
            for source in picked.values():
                _unpack(source, work)
            staged = Path(tmp) / "out"
            _compile(work, staged / "usr")
            _install_perl(work, staged / "usr")
            (staged / "manifest.json").write_text(json.dumps(want, indent=1))
            if target.exists():
                shutil.rmtree(target)
            os.rename(staged, target)
    return target


def _read_manifest(target: Path) -> dict | None:
    try:
        return json.loads((target / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def installed_version(stack: Path) -> str:
    """The pve-cluster version a cached build is of."""
    found = _read_manifest(stack)
    if not found:
        raise OperationFailed(f"{stack} is not a pvestrap build of the PVE stack",
                              code="lab-pve-build-missing", remedy="run `pvestrap lab up --pve` "
                              "again (it rebuilds)")
    return str(found["sources"]["pve-cluster"]["version"])
