"""Put answer.toml, the installer mode, the first-boot hook and the auto-install flag into a copy of
the Proxmox VE installer ISO, or write answer.toml for a labelled partition instead.

Everything is checked before the first byte is written (the caller renders and validates the
answer, builds the hook within 1 MiB; here the ISO is read and the output path checked). The new
image is built in a private folder beside the output, verified with xorriso (the four files hold
exactly the bytes meant, the volume id, the volume date UUID and the boot setup are those of the
source) and only then renamed into place: a failed run leaves no half-written ISO.

Engines: `xorriso` (default here) rewrites with `-boot_image any replay`; `assistant` runs
Proxmox's own `proxmox-auto-install-assistant prepare-iso` (chosen by `auto` when installed and
the ISO carries /auto-installer-capable, which that tool requires).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed, UserError
from pvestrap.iso import xorriso
from pvestrap.iso.hook import Hook

ANSWER, MODE, HOOK, CAPABLE = ("/answer.toml", "/auto-installer-mode.toml",
                               "/proxmox-first-boot", "/auto-installer-capable")
ASSISTANT = "proxmox-auto-install-assistant"
PARTITION_LABEL = "PROXMOX-AIS"  # the installer looks for proxmox-ais in any of these cases
ENGINES = ("auto", "xorriso", "assistant")
# Only `mode`: PVE 8.2's installer refuses any other key in this file (partition_label came
# with 8.3), and the defaults of the rest are what is wanted.
MODE_TEXT = {"iso": 'mode = "iso"\n', "partition": 'mode = "partition"\n'}


@dataclass(frozen=True)
class Prepared:
    out: str
    engine: str
    mode: str
    files: dict[str, int]        # ISO path -> size written
    capable_flag: str            # "kept" (the ISO had it) or "added"
    volume_id: str | None
    uuid: str | None
    warnings: tuple[str, ...]


def prepare_iso(iso: str | os.PathLike[str], out: str | os.PathLike[str], hook: Hook,
                answer_text: str | None, engine: str = "auto") -> Prepared:
    """answer_text None prepares a partition-mode ISO (the answer comes from a USB stick)."""
    source = xorriso.describe(iso)
    if not source.bootable:
        raise UserError(f"--iso {iso}: has no El Torito boot record; not an installer ISO",
                        code="iso-not-bootable", remedy="give the Proxmox VE installer ISO")
    target = _check_out(Path(out), Path(iso))
    mode = "iso" if answer_text is not None else "partition"
    chosen = _engine(engine, source)
    warnings = list(_release_warnings(source))
    if CAPABLE not in source.files:
        warnings.append(f"{iso} has no {CAPABLE}: Proxmox VE ISOs before 8.2 cannot install "
                        "unattended; the flag was added, but only an 8.3+ ISO runs the hook")
    work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        staged = _stage(work, hook, answer_text, mode, CAPABLE not in source.files)
        sizes = {iso_path: os.path.getsize(local) for iso_path, local in staged.items()}
        built = str(work / target.name)
        if chosen == "assistant":
            _assistant(source.path, built, staged, mode, work)
        else:
            xorriso.rewrite(source, built, staged)
        _verify(built, source, staged, chosen, work)
        os.chmod(built, 0o600)  # the root password hash, the hook's first-boot secret
        os.replace(built, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Prepared(out=str(target), engine=chosen, mode=mode,
                    files=sizes, capable_flag="added" if CAPABLE in sizes else "kept",
                    volume_id=source.volume_id, uuid=source.uuid, warnings=tuple(warnings))


def write_partition(folder: str | os.PathLike[str], answer_text: str) -> list[str]:
    """answer.toml at the root of what goes on the partition labelled PROXMOX-AIS."""
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise UserError(f"--partition {root}: exists and is not a folder",
                        code="partition-dir-invalid")
    target = root / "answer.toml"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write into {root}: {exc.strerror or exc}",
                        code="file-unwritable") from None
    atomic_write(target, answer_text, 0o600, backup=False, error=UserError)  # root's hash
    return [str(target)]


def _check_out(out: Path, iso: Path) -> Path:
    if out.exists() and not out.is_file():
        raise UserError(f"--out {out}: exists and is not a file", code="out-invalid")
    if out.resolve() == iso.resolve():
        raise UserError("--out must differ from --iso (the source stays untouched)",
                        code="out-invalid")
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: folder {out.parent} does not exist or is not writable",
                        code="out-invalid")
    return out


def _engine(engine: str, source: xorriso.IsoInfo) -> str:
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: use one of {', '.join(ENGINES)}",
                        code="engine-invalid")
    installed = shutil.which(ASSISTANT) is not None
    if engine == "assistant" and not installed:
        raise UserError(f"{ASSISTANT} is not installed", code="engine-missing",
                        remedy="install it from Proxmox's repository, or use --engine xorriso")
    if engine == "auto":
        return "assistant" if installed and CAPABLE in source.files else "xorriso"
    return engine


def _stage(work: Path, hook: Hook, answer_text: str | None, mode: str,
           add_flag: bool) -> dict[str, str]:
    """The files to embed, written into WORK: ISO path -> local path."""
    staged = {}
    content = {MODE: MODE_TEXT[mode].encode(), HOOK: hook.data}
    if answer_text is not None:
        content[ANSWER] = answer_text.encode("utf-8")
    if add_flag:
        content[CAPABLE] = b""
    for iso_path, data in content.items():
        local = work / ("stage" + iso_path.replace("/", "_"))
        local.write_bytes(data)
        os.chmod(local, 0o700 if iso_path == HOOK else 0o644)  # the hook holds the secret
        staged[iso_path] = str(local)
    return staged


def _assistant(iso: str, out: str, staged: dict[str, str], mode: str, work: Path) -> None:
    args = [ASSISTANT, "prepare-iso", iso, "--fetch-from", mode, "--output", out,
            "--tmp", str(work), "--on-first-boot", staged[HOOK]]
    if ANSWER in staged:
        args += ["--answer-file", staged[ANSWER]]
    done = subprocess.run(args, capture_output=True, text=True, timeout=xorriso.TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise OperationFailed(f"{ASSISTANT} prepare-iso failed: "
                              f"{done.stderr.strip()[-400:]}", code="assistant-failed")


def _verify(built: str, source: xorriso.IsoInfo, staged: dict[str, str], engine: str,
            work: Path) -> None:
    """The new image must carry exactly the staged files and the source's identity and boot
    setup; any difference is an error and the image is thrown away."""
    after = xorriso.describe(built)
    problems = []
    if (after.volume_id, after.uuid) != (source.volume_id, source.uuid):
        problems.append(f"volume id/UUID {after.volume_id}/{after.uuid} instead of "
                        f"{source.volume_id}/{source.uuid}")
    same_boot = (after.boot == source.boot if engine == "xorriso"
                 else after.el_torito() == source.el_torito())
    if not same_boot:
        changed = sorted(set(after.boot) ^ set(source.boot))
        problems.append("boot setup changed: " + "; ".join(changed[:6]))
    for iso_path, local in staged.items():
        copy = work / ("check" + iso_path.replace("/", "_"))
        if not xorriso.extract(built, iso_path, str(copy)):
            problems.append(f"{iso_path} is missing")
        elif not _same(iso_path, copy.read_bytes(), Path(local).read_bytes(), engine):
            problems.append(f"{iso_path} differs from what was meant")
    if problems:
        raise OperationFailed("the prepared ISO failed its check, nothing was written: "
                              + "; ".join(problems), code="iso-verify-failed")


def _same(iso_path: str, got: bytes, meant: bytes, engine: str) -> bool:
    """Proxmox's tool writes its own mode file: there, only the mode must match."""
    if iso_path == MODE and engine == "assistant":
        try:
            return tomllib.loads(got.decode())["mode"] == tomllib.loads(meant.decode())["mode"]
        except (ValueError, KeyError):
            return False
    return got == meant


def _release_warnings(source: xorriso.IsoInfo) -> list[str]:
    """/.cd-info names the release: the first-boot hook needs 8.3, kebab-case keys 8.4."""
    if "/.cd-info" not in source.files:
        return [f"{source.path} has no /.cd-info: not a Proxmox installer ISO?"]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "cd-info"
        if not xorriso.extract(source.path, "/.cd-info", str(copy)):
            return []
        info = dict(re.findall(r"^(\w+)=['\"]?(.*?)['\"]?$", copy.read_text(errors="replace"),
                               re.MULTILINE))
    release = re.match(r"(\d+)\.(\d+)", info.get("RELEASE", ""))
    if release and (int(release[1]), int(release[2])) < (8, 4):
        return [f"{info.get('PRODUCTLONG', 'the ISO')} {info['RELEASE']}: answer files with "
                "kebab-case keys need 8.4 or later (the first-boot hook 8.3)"]
    return []
