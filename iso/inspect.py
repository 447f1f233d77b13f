"""What a prepared ISO carries, read back with xorriso: the installer mode, answer.toml (its
password hash and other secrets masked), and the first-boot hook with the cluster answer file
and manifest inside it (the hook is a zip behind a shebang line, so zipfile reads it as is).
The hook's first-boot secret is never read here: only whether the hook carries one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pvestrap.iso import hook_main
from pvestrap.iso import xorriso
from pvestrap.iso.installer_answer import mask_secrets
from pvestrap.iso.prepare import ANSWER, CAPABLE, HOOK, MODE


@dataclass(frozen=True)
class HookInfo:
    size: int
    sha256: str
    pvestrap_hook: bool           # a zipapp built by pvestrap (has the manifest)
    manifest: dict[str, Any] | None
    cluster_answers: str | None


@dataclass(frozen=True)
class Inspection:
    iso: str
    volume_id: str | None
    uuid: str | None
    bootable: bool
    capable_flag: bool
    mode: str | None
    answer: str | None            # masked
    hook: HookInfo | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect(iso: str | os.PathLike[str]) -> Inspection:
    info = xorriso.describe(iso)
    with tempfile.TemporaryDirectory(prefix="pvestrap-inspect.") as tmp:
        got = {p: _read(info, p, Path(tmp)) for p in (MODE, ANSWER, HOOK)}
    answer = got[ANSWER]
    return Inspection(
        iso=str(iso), volume_id=info.volume_id, uuid=info.uuid, bootable=info.bootable,
        capable_flag=CAPABLE in info.files,
        mode=got[MODE].decode("utf-8", "replace") if got[MODE] is not None else None,
        answer=mask_secrets(answer.decode("utf-8", "replace")) if answer is not None else None,
        hook=hook_info(got[HOOK]) if got[HOOK] is not None else None)


def _read(info: xorriso.IsoInfo, iso_path: str, tmp: Path) -> bytes | None:
    if iso_path not in info.files:
        return None
    copy = tmp / iso_path.strip("/")
    return copy.read_bytes() if xorriso.extract(info.path, iso_path, str(copy)) else None


def hook_info(data: bytes) -> HookInfo:
    digest = hashlib.sha256(data).hexdigest()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            manifest = json.loads(zf.read(hook_main.MANIFEST_MEMBER))
            answers = zf.read(hook_main.ANSWERS_MEMBER).decode("utf-8", "replace")
    except (zipfile.BadZipFile, KeyError, ValueError):
        return HookInfo(len(data), digest, False, None, None)
    return HookInfo(len(data), digest, True, manifest, answers)


def render_text(result: Inspection) -> str:
    lines = [f"ISO:            {result.iso}",
             f"volume id:      {result.volume_id}",
             f"volume UUID:    {result.uuid}",
             f"bootable:       {'yes' if result.bootable else 'no'}",
             f"auto-install:   {'capable' if result.capable_flag else f'no {CAPABLE}'}",
             f"mode ({MODE}): " + (result.mode.strip() if result.mode else "not prepared")]
    hook = result.hook
    if hook is None:
        lines.append(f"hook ({HOOK}): none")
    else:
        lines.append(f"hook ({HOOK}): {hook.size} bytes, sha256 {hook.sha256}")
        if hook.manifest:
            m = hook.manifest
            deps = ", ".join(f"{k} {v}" for k, v in sorted(m.get("dependencies", {}).items()))
            lines.append(f"  pvestrap {m.get('pvestrap')}, {len(m.get('modules', []))} modules, "
                         f"first-boot flow {'present' if m.get('entry_present') else 'MISSING'}"
                         f"; carries {deps}")
            lines.append("  first-boot secret: " + (
                "carried (never shown; written 0600 beside the answer file at first boot)"
                if m.get("firstboot_secret") else
                "NONE: first boot refuses to run unless the node has the cluster's secret"))
        else:
            lines.append("  not a pvestrap hook")
    if result.answer is not None:
        lines += ["", f"{ANSWER} (secrets masked):", result.answer.rstrip("\n")]
    if hook is not None and hook.cluster_answers is not None:
        lines += ["", "cluster answer file inside the hook:", hook.cluster_answers.rstrip("\n")]
    return "\n".join(lines) + "\n"
