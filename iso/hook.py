"""The first-boot hook: one executable file, at most 1 MiB, that clusters a freshly installed node.

It is a Python zipapp (`#!/usr/bin/env python3`, then a deflated zip) holding the pvestrap
modules the unattended path can reach (hook_modules), the pure-Python dependencies they need
copied from this environment (jinja2, markupsafe without its C speedups, ntplib, ping3, with
their licence files), the cluster answer file, the cluster's first-boot secret (when built for
a first boot: pvestrap.firstboot.secret) and a manifest. The build is reproducible: fixed
timestamps and sorted members, so the same inputs give the same bytes, and the hook embedded in
an ISO can be compared with a fresh `pvestrap iso hook` (given the same secret file).

A hook with the secret is root's alone: written 0700 here, staged 0700 on the ISO, and on its
first run it writes the secret beside the answer file (0600) and takes group and others' rights
off itself (hook_main).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import re
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pvestrap import __version__
from pvestrap.answers import load as load_answers
from pvestrap.atomic import atomic_write
from pvestrap.errors import OperationFailed, UserError
from pvestrap.firstboot import secret as firstboot_secret
from pvestrap.iso import hook_main
from pvestrap.iso.hook_modules import DEPENDENCIES, closure
from pvestrap.toml_schema import is_secret, join_path

MAX_BYTES = 1024 * 1024  # proxmox-installer-common FIRST_BOOT_EXEC_MAX_SIZE
SHEBANG = b"#!/usr/bin/env python3\n"
ENTRY = "pvestrap.firstboot.entry"
SELFTEST = ("pvestrap.answers", "pvestrap.plan", "pvestrap.render")
_DATE = (1980, 1, 1, 0, 0, 0)
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd", ".c", ".h", ".pyi")
_LICENCE = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE)[^/]*$", re.IGNORECASE)
_DISTRIBUTIONS = {"jinja2": "Jinja2", "markupsafe": "MarkupSafe", "ntplib": "ntplib",
                  "ping3": "ping3"}


@dataclass(frozen=True)
class Hook:
    data: bytes
    modules: tuple[str, ...]
    dependencies: dict[str, str]          # import name -> version
    left_out: tuple[tuple[str, str], ...]
    entry_present: bool
    answers_sha256: str
    carries_secret: bool = False

    @property
    def size(self) -> int:
        return len(self.data)


def build(answers_path: str | os.PathLike[str], *, secret: bytes | None = None,
          limit: int = MAX_BYTES, extra: tuple[str, ...] = ()) -> Hook:
    """Build the hook for a cluster answer file; refuses secrets in it and anything over LIMIT.
    SECRET, the cluster's first-boot secret, is carried apart from the answer file (a hook
    without it is no first-boot hook: the Ansible collection's single-file pvestrap). EXTRA
    modules are carried too (the Ansible collection's modules import pvestrap.verify)."""
    answers = _cluster_answers(answers_path)
    found = closure((ENTRY,) + SELFTEST + tuple(extra))
    if found.unsafe:
        raise UserError("the hook cannot carry " + "; ".join(f"{e}: {why}"
                                                             for e, why in found.unsafe),
                        code="hook-module-unsafe",
                        remedy="move that import into the function that needs it")
    deps = _dependencies(found.dependencies)
    members = dict(_module_files(found.modules))
    for name in sorted(deps):
        members.update(_dependency_files(name))
    entry_present = ENTRY in found.modules
    manifest = {
        "format": 1, "pvestrap": __version__, "python_requires": ">=3.11", "entry": ENTRY,
        "entry_present": entry_present, "modules": list(found.modules),
        "dependencies": deps, "left_out": [list(p) for p in found.left_out],
        "answers": {"member": hook_main.ANSWERS_MEMBER,
                    "sha256": hashlib.sha256(answers).hexdigest()},
        "firstboot_secret": {"member": hook_main.SECRET_MEMBER} if secret else None,
    }
    members["__main__.py"] = Path(hook_main.__file__).read_bytes()
    members[hook_main.ANSWERS_MEMBER] = answers
    if secret:
        members[hook_main.SECRET_MEMBER] = firstboot_secret.encode(secret)
    members[hook_main.MANIFEST_MEMBER] = (json.dumps(manifest, indent=2, sort_keys=True)
                                          + "\n").encode()
    data = pack(members)
    if len(data) > limit:
        raise UserError(f"the hook would be {len(data)} bytes, over the installer's limit of "
                        f"{limit} bytes (1 MiB); nothing was written", code="hook-too-large",
                        remedy="shorten the answer file (the datacenter description?)")
    return Hook(data=data, modules=found.modules, dependencies=deps,
                left_out=found.left_out, entry_present=entry_present,
                answers_sha256=manifest["answers"]["sha256"], carries_secret=bool(secret))


def pack(members: dict[str, bytes]) -> bytes:
    """Shebang + zip, members sorted, fixed dates and modes: same input, same bytes."""
    buf = io.BytesIO()
    buf.write(SHEBANG)
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, members[name], compresslevel=9)
    return buf.getvalue()


def write(hook: Hook, out: str | os.PathLike[str]) -> None:
    """Write the hook executable atomically: the old file or the new, never half; 0700 when it
    carries the first-boot secret, else 0755."""
    atomic_write(out, hook.data, mode(hook), backup=False, error=UserError)


def mode(hook: Hook) -> int:
    return 0o700 if hook.carries_secret else 0o755


# -- what goes in --------------------------------------------------------------------------------

def _cluster_answers(path: str | os.PathLike[str]) -> bytes:
    """The cluster file as written, after the loader accepted it and a second look for
    password-like keys (the hook is copied to every node and kept on disk)."""
    load_answers(path)
    data = Path(path).read_bytes()
    secrets = list(_secret_keys(tomllib.loads(data.decode("utf-8-sig")), ""))
    if secrets:
        raise UserError(f"{path}: password-like keys {', '.join(secrets)} must not go into the "
                        "hook", code="hook-secret-refused",
                        remedy="remove them; the hook is readable on every node")
    return data


def _secret_keys(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for name, sub in value.items():
            sub_path = join_path(path, name)
            if is_secret(name):
                yield sub_path
            else:
                yield from _secret_keys(sub, sub_path)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _secret_keys(sub, f"{path}[{i}]")


def _dependencies(direct: tuple[str, ...]) -> dict[str, str]:
    """The direct dependencies and what they require in turn (jinja2 needs markupsafe); each
    must be one of the pure-Python packages the hook may carry."""
    names, todo = set(), list(direct)
    while todo:
        name = todo.pop()
        if name in names:
            continue
        if name not in DEPENDENCIES:
            raise UserError(f"the hook would need {name}, which it does not carry",
                            code="hook-dependency-refused")
        names.add(name)
        for req in importlib.metadata.requires(_DISTRIBUTIONS[name]) or ():
            if "extra ==" in req:
                continue
            dist = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0].lower()
            todo.append(dist.replace("-", "_"))
    return {n: importlib.metadata.version(_DISTRIBUTIONS[n]) for n in sorted(names)}


def _module_files(modules: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """Each module at its import path (checks/ becomes pvestrap/checks/), plus the data files
    of the packages carried (templates)."""
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin)
        is_package = spec.submodule_search_locations is not None
        arc = name.replace(".", "/") + ("/__init__.py" if is_package else ".py")
        yield arc, origin.read_bytes()
        if is_package:
            for data in sorted(origin.parent.iterdir()):
                if data.is_file() and not data.name.endswith(".py") and \
                        not data.name.startswith(".") and not data.name.endswith(_SKIP_SUFFIXES):
                    yield f"{name.replace('.', '/')}/{data.name}", data.read_bytes()


def _dependency_files(name: str) -> Iterator[tuple[str, bytes]]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise OperationFailed(f"{name} is not installed here; cannot build the hook",
                              code="hook-dependency-missing")
    origin = Path(spec.origin)
    if spec.submodule_search_locations is None:
        yield origin.name, origin.read_bytes()
    else:
        for path in sorted(origin.parent.rglob("*")):
            rel = path.relative_to(origin.parent.parent).as_posix()
            if path.is_file() and "__pycache__" not in rel and not rel.endswith(_SKIP_SUFFIXES):
                yield rel, path.read_bytes()
    dist = importlib.metadata.distribution(_DISTRIBUTIONS[name])
    for file in dist.files or ():
        if _LICENCE.search(str(file)):
            yield f"pvestrap-hook/licenses/{_DISTRIBUTIONS[name]}/{Path(str(file)).name}", \
                file.read_binary()
