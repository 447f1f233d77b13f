"""xorriso, the only tool that reads and rewrites the ISOs here.

`describe()` reads what must survive a rewrite: the volume id, the volume date UUID (the
installer's GRUB finds its ISO by it, which is why Proxmox's prepare-iso passes `-volume_date
uuid` on), Joliet, and the boot setup as `-report_el_torito as_mkisofs` prints it. `boot_setup()`
normalizes that report (block addresses move when files are added; sizes, types, paths and flags
must not), so before and after can be compared line by line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pvestrap.errors import OperationFailed, UserError

SECTOR = 2048
TIMEOUT_S = 600.0
_INTERVAL = re.compile(r"--interval:(\w+):(\d+)([sd])-(\d+)([sd])")
_START = re.compile(r"_start_\d+s_")
# MBR geometry that xorriso's report infers from the written image: with a GRUB2 hybrid MBR the
# heads per cylinder and the cylinder alignment follow the image size (passing the source's
# values explicitly does not change the outcome), so they are not part of the boot setup.
SIZE_DERIVED = ("-partition_hd_cyl ", "-partition_cyl_align ")
_UUID = re.compile(r"^-volume_date uuid '?([0-9]{16})'?$", re.MULTILINE)
_VOLID = re.compile(r"^-volid '(.*)'$", re.MULTILINE)


@dataclass(frozen=True)
class IsoInfo:
    path: str
    volume_id: str | None
    uuid: str | None
    joliet: bool
    boot: tuple[str, ...]          # normalized `-report_el_torito as_mkisofs`
    files: frozenset[str]          # top-level entries, as /name

    @property
    def bootable(self) -> bool:
        return any(line.startswith(("-b ", "-e ", "-eltorito-boot ")) for line in self.boot)

    def el_torito(self) -> tuple[str, ...]:
        """The El Torito catalogue entries only (what any rewrite must keep)."""
        start = next((i for i, line in enumerate(self.boot) if line.startswith("-c ")), None)
        return () if start is None else self.boot[start:]


def run(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    if shutil.which("xorriso") is None:
        raise OperationFailed("xorriso is not installed", code="xorriso-missing",
                              remedy="apt install xorriso")
    try:
        return subprocess.run(["xorriso", *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"xorriso did not finish within {timeout:.0f} s",
                              code="xorriso-timeout") from None


def check_is_iso(path: str | os.PathLike[str], what: str = "--iso") -> None:
    """Refuse a missing file, a folder or a file without the ISO 9660 signature (xorriso would
    treat it as a blank medium and happily write to it)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} {p}: no such file", code="iso-missing")
    if not p.is_file():
        raise UserError(f"{what} {p}: not a regular file", code="iso-invalid")
    try:
        with open(p, "rb") as fh:
            fh.seek(16 * SECTOR + 1)
            magic = fh.read(5)
    except OSError as exc:
        raise UserError(f"{what} {p}: cannot read: {exc.strerror or exc}",
                        code="iso-unreadable") from None
    if magic != b"CD001":
        raise UserError(f"{what} {p}: not an ISO 9660 image (no CD001 volume descriptor)",
                        code="iso-invalid", remedy="give the Proxmox VE installer ISO")


def describe(path: str | os.PathLike[str]) -> IsoInfo:
    check_is_iso(path)
    iso = str(path)
    report = _ok(run(["-indev", iso, "-report_el_torito", "as_mkisofs"]), iso)
    area = _ok(run(["-indev", iso, "-report_system_area", "cmd"]), iso)
    listing = _ok(run(["-indev", iso, "-ls", "/"]), iso)
    uuid, volid = _UUID.search(area), _VOLID.search(area)
    return IsoInfo(path=iso, volume_id=volid.group(1) if volid else None,
                   uuid=uuid.group(1) if uuid else None, joliet=has_joliet(iso),
                   boot=boot_setup(report, iso),
                   files=frozenset("/" + n for n in re.findall(r"^'(.*)'$", listing,
                                                                  re.MULTILINE)))


def boot_setup(report: str, iso: str) -> tuple[str, ...]:
    """The as_mkisofs report with addresses and the image's own path taken out."""
    lines = []
    for line in report.splitlines():
        if line.startswith(SIZE_DERIVED):
            continue
        line = line.replace(f"'{iso}'", "'ISO'")
        line = _INTERVAL.sub(lambda m: f"--interval:{m[1]}:"
                             f"{int(m[4]) - int(m[2]) + 1}{m[3]}", line)
        lines.append(_START.sub("_start_*_", line))
    return tuple(lines)


def has_joliet(path: str) -> bool:
    """A supplementary volume descriptor with a UCS-2 escape sequence is Joliet; xorriso only
    writes one again when told to."""
    with open(path, "rb") as fh:
        for sector in range(16, 64):
            fh.seek(sector * SECTOR)
            vd = fh.read(SECTOR)
            if len(vd) < SECTOR or vd[1:6] != b"CD001" or vd[0] == 255:
                return False
            if vd[0] == 2 and vd[88:91] in (b"%/@", b"%/C", b"%/E"):
                return True
    return False


def rewrite(source: IsoInfo, out: str, files: dict[str, str]) -> None:
    """A new image at OUT: SOURCE's tree plus FILES (ISO path -> local file), boot setup
    replayed, volume id, date UUID and Joliet kept. No emulated TOC, so it starts at block 0
    like the original."""
    args = ["-indev", source.path, "-outdev", out, "-compliance", "no_emul_toc",
            "-boot_image", "any", "replay"]
    if source.joliet:
        args += ["-joliet", "on"]
    if source.uuid:
        args += ["-volume_date", "uuid", source.uuid]
    for iso_path, local in sorted(files.items()):
        args += ["-map", local, iso_path]
    _ok(run(args), source.path)


def extract(iso: str, iso_path: str, dest: str) -> bool:
    """Copy one file out of the image; False when it is not there."""
    done = run(["-osirrox", "on", "-indev", iso, "-extract", iso_path, dest])
    if done.returncode != 0:
        if "Cannot determine attributes of (ISO) source file" in done.stderr:
            return False
        _ok(done, iso)
    return Path(dest).is_file()


def _ok(done: subprocess.CompletedProcess[str], iso: str) -> str:
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-3:])
        raise OperationFailed(f"xorriso failed on {iso} (exit {done.returncode}): {tail}",
                              code="xorriso-failed")
    return done.stdout
