"""Entry point of the first-boot hook: this file is the zipapp's __main__.py.

Proxmox's proxmox-first-boot unit runs the hook as `/var/lib/proxmox-first-boot/proxmox-first-boot
STAGE` once per boot until it exits 0 (options after `--` go to the flow, for manual runs and
the lab). The hook writes its embedded cluster answer file to
/var/lib/pvestrap/answers.toml and runs pvestrap's unattended first-boot flow on it. It runs on
the node's own python3 (3.11 on PVE 8, 3.13 on PVE 9) with only what the archive carries, so this
file imports nothing but the standard library until the flow starts, and keeps to syntax an old
python3 can still parse, to say clearly that it is too old.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import sys
import zipfile

ANSWERS_MEMBER = "pvestrap-hook/answers.toml"
MANIFEST_MEMBER = "pvestrap-hook/manifest.json"
SECRET_MEMBER = "pvestrap-hook/firstboot.secret"
STATE_DIR = "/var/lib/pvestrap"
MIN_PYTHON = (3, 11)
FIRSTBOOT = "pvestrap.firstboot.entry"


def main(argv=None) -> int:
    if sys.version_info < MIN_PYTHON:
        print("pvestrap first-boot hook: needs python3 >= %d.%d, this is %s"
              % (MIN_PYTHON + (sys.version.split()[0],)), file=sys.stderr)
        return 1
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = _parser().parse_args(argv[:len(argv) - len(extra) - 1] if "--" in argv else argv)
    archive = os.path.dirname(os.path.abspath(__file__))
    if args.print_answers:
        sys.stdout.write(read_member(archive, ANSWERS_MEMBER).decode("utf-8"))
        return 0
    if args.manifest:
        sys.stdout.write(read_member(archive, MANIFEST_MEMBER).decode("utf-8"))
        return 0
    from pvestrap.errors import OperationFailed

    try:
        path = extract_answers(archive, args.state_dir)
    except SelfChmodFailed as exc:
        print("pvestrap first-boot hook: %s" % exc, file=sys.stderr)
        return 1
    except (OSError, OperationFailed) as exc:
        print("pvestrap first-boot hook: cannot write the answer file under %s: %s"
              % (args.state_dir, getattr(exc, "strerror", None) or exc), file=sys.stderr)
        return 1
    if args.selftest:
        return selftest(archive, path)
    try:
        from pvestrap.firstboot import entry
    except ImportError as exc:
        print("pvestrap first-boot hook: this hook carries no first-boot flow (%s); "
              "rebuild it with a pvestrap that has %s" % (exc, FIRSTBOOT), file=sys.stderr)
        return 1
    print("pvestrap first-boot hook (stage %s): running the first-boot flow on %s"
          % (args.stage or "-", path), flush=True)
    flow_args = ["--answers", path]
    if args.state_dir != STATE_DIR:
        flow_args += ["--state-dir", args.state_dir]
    return entry.main(flow_args + extra)


# What the units of pve-installer's proxmox-first-boot/etc/ pass to the hook (ExecStart):
# -network-pre.service "before-network", -network-online.service "network-online",
# -multi-user.service "fully-up" (pvestrap.installer.rules.ORDERINGS; standard library only here).
STAGES = ("before-network", "network-online", "fully-up")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="proxmox-first-boot", allow_abbrev=False,
                                usage="%(prog)s [STAGE] [options] [-- FLOW OPTIONS]",
                                description="pvestrap's first-boot hook: joins this node to "
                                            "the cluster of its embedded answer file.",
                                epilog="Options after -- go to the first-boot flow (see "
                                       "`-- --help`); the proxmox-first-boot unit gives none.")
    p.add_argument("stage", nargs="?", help="the [first-boot] ordering of answer.toml, "
                   "which the proxmox-first-boot-* unit that runs the hook passes: "
                   + ", ".join(STAGES))
    p.add_argument("--state-dir", default=STATE_DIR, help="where answers.toml is written "
                   "and the flow keeps its state (default %(default)s)")
    p.add_argument("--selftest", action="store_true", help="extract, import and render, "
                   "change nothing else, print a JSON report")
    p.add_argument("--print-answers", action="store_true",
                   help="print the embedded cluster answer file")
    p.add_argument("--manifest", action="store_true", help="print what the hook carries")
    return p


def read_member(archive: str, name: str) -> bytes:
    with zipfile.ZipFile(archive) as zf:
        return zf.read(name)


def extract_answers(archive: str, state_dir: str) -> str:
    """Write the embedded answers to STATE_DIR/answers.toml and the first-boot secret, 0600,
    beside it (the core's one atomic write; untouched when it already holds the same bytes,
    so reruns change nothing); then make the hook itself root's alone."""
    from pvestrap.atomic import atomic_write  # stdlib only; imported after the version check

    data = read_member(archive, ANSWERS_MEMBER)
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    target = os.path.join(state_dir, "answers.toml")
    atomic_write(target, data, 0o644, backup=False)
    with zipfile.ZipFile(archive) as zf:
        secret = zf.read(SECRET_MEMBER) if SECRET_MEMBER in zf.namelist() else None
    if secret is not None:
        from pvestrap.firstboot.secret import path_for

        atomic_write(path_for(target), secret, 0o600, backup=False)
        _root_only(archive, state_dir)
    return target


class SelfChmodFailed(Exception):
    """The hook could not take group and others' rights off itself (after the answer file and
    the secret were written): the message says so, and how to fix it."""


def _root_only(archive: str, written: str) -> None:
    """The installer may leave the hook readable by all (chmod +x): it holds the secret."""
    mode = os.stat(archive).st_mode & 0o7777
    if not mode & 0o077:
        return
    try:
        os.chmod(archive, mode & 0o700)
    except OSError as exc:
        raise SelfChmodFailed(
            "the answer file and the first-boot secret are written (%s), but the hook cannot "
            "make itself root's alone: chmod %04o %s failed: %s. It carries the cluster's "
            "first-boot secret and is readable by group or others (mode %04o), so the first-boot "
            "flow does not start. Fix: %s`chmod go= %s`, then run the hook again (or reboot)"
            % (written, mode & 0o700, archive, exc.strerror or exc, mode,
               _chmod_fix(archive, exc.errno), archive)) from None


def _chmod_fix(archive: str, error: int | None) -> str:
    """What keeps root from changing the hook's mode, undone."""
    if error == errno.EROFS:
        mount = os.path.dirname(archive)
        while not os.path.ismount(mount):
            mount = os.path.dirname(mount)
        return "make its filesystem writable (`mount -o remount,rw %s`), then " % mount
    if error == errno.EPERM:
        return ("run it as root and clear an immutable flag if `lsattr %s` shows one "
                "(`chattr -i %s`), then " % (archive, archive))
    return "as root, "


def selftest(archive: str, path: str) -> int:
    """Prove the hook works on this python3 without pvestrap installed: every module it carries
    imports from the archive, the answer file loads, and every node's corosync.conf renders
    through jinja2 and the pure-Python markupsafe."""
    import importlib

    manifest = json.loads(read_member(archive, MANIFEST_MEMBER))
    failed = {}
    for name in manifest["modules"] + sorted(manifest["dependencies"]):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a selftest reports every failure, whatever it is
            failed[name] = "%s: %s" % (type(exc).__name__, exc)
    from pvestrap import answers, render

    plan = answers.load(path)
    conf = render.render_corosync_conf(plan)
    import markupsafe

    carried = manifest["modules"] + sorted(manifest["dependencies"])
    inside = archive + os.sep
    outside = sorted(name for name in carried if name in sys.modules and not
                     (getattr(sys.modules[name], "__file__", "") or "").startswith(inside))
    report = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "answers": path,
        "cluster": plan.cluster_name,
        "nodes": [n.name for n in plan.nodes],
        "corosync_conf_sha256": hashlib.sha256(conf.encode()).hexdigest(),
        "markupsafe_escape": str(markupsafe.escape("<a & b>")),
        "markupsafe_backend": markupsafe._escape_inner.__module__,
        "imported": len(carried) - len(failed),
        "failed": failed,
        "outside_archive": outside,
        "firstboot_present": FIRSTBOOT in manifest["modules"],
    }
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if not failed and not outside else 1


if __name__ == "__main__":
    sys.exit(main())
