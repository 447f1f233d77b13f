"""Where `lab up --pve` finds Proxmox's sources and which release each is (fast, no root)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from pvestrap.errors import UserError
from pvestrap.lab import pvestack


def tarball(folder: Path, repo: str, commit: str, changelog_head: str) -> Path:
    path = folder / f"{repo}-{commit}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = (changelog_head + "\n\n  * entry\n").encode()
        info = tarfile.TarInfo(f"{repo}/debian/changelog")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def release_set(folder: Path, major: str, dist: str) -> None:
    tarball(folder, "pve-cluster", f"c{major}", f"pve-cluster ({major}.1.3) {dist}; urgency=medium")
    tarball(folder, "pve-common", f"m{major}",
            f"libpve-common-perl ({major}.3.8) {dist}; urgency=low")
    tarball(folder, "pve-access-control", f"a{major}",
            f"libpve-access-control ({major}.2.3) {dist}; urgency=medium")


def test_releases_are_read_from_each_sources_changelog(tmp_path: Path):
    release_set(tmp_path, "8", "bookworm")
    release_set(tmp_path, "9", "trixie")
    tarball(tmp_path, "pve-apiclient", "x", "libpve-apiclient-perl (3.4.2) trixie; urgency=medium")
    (tmp_path / "README.md").write_text("not a source")
    found = pvestack.releases(tmp_path)
    assert sorted(found) == ["8", "9"]
    assert {r: s.version for r, s in found["8"].items()} == {
        "pve-cluster": "8.1.3", "pve-common": "8.3.8", "pve-access-control": "8.2.3",
        "pve-apiclient": "3.4.2"}
    assert found["9"]["pve-common"].version == "9.3.8"


def test_an_unpacked_checkout_counts_too(tmp_path: Path):
    release_set(tmp_path, "8", "bookworm")
    checkout = tmp_path / "pve-apiclient"
    (checkout / "debian").mkdir(parents=True)
    (checkout / "debian/changelog").write_text("libpve-apiclient-perl (3.3.1) bookworm; x\n")
    assert pvestack.releases(tmp_path)["8"]["pve-apiclient"].path == checkout


def test_a_release_missing_a_repository_is_not_offered_and_says_why(tmp_path: Path):
    release_set(tmp_path, "8", "bookworm")  # no pve-apiclient
    assert pvestack.releases(tmp_path) == {}
    why = pvestack.unavailable("8", tmp_path)
    assert why and str(tmp_path) in why and pvestack.SOURCES_ENV in why
    with pytest.raises(UserError) as err:
        pvestack.ensure_built("8", tmp_path)
    assert err.value.code == "lab-pve-sources-missing"


def test_the_sources_setting_is_one_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(pvestack.SOURCES_ENV, raising=False)
    assert pvestack.sources_dir() == pvestack.default_sources()
    assert pvestack.default_sources().parts[-3:] == ("shared", "oracle", "proxmox")
    monkeypatch.setenv(pvestack.SOURCES_ENV, str(tmp_path))
    assert pvestack.sources_dir() == tmp_path
    assert pvestack.sources_dir("/elsewhere") == Path("/elsewhere")
