"""The processes that hold lab nodes' namespaces (a script: `python -E -s -S holder.py SPECS`).

It forks one child per node; each child leaves the caller's session, unshares net, mount and UTS
namespaces, sets the hostname, lays the node's private files over /etc and /root (overlays whose
upper layers are in the node's folder, so edits inside the node stay in the node and renames work;
/root may hold the very Python this runs on), read-only overlays where asked (a `lab up --pve`
node's /usr gets Proxmox's cluster stack laid over it), binds the node's folders over /run,
/var/lib/corosync and /var/log, mounts its own /dev/shm and a sysfs that shows the node's NICs, and
then becomes `sleep infinity` named `pvestrap-lab:<prefix>-nK` (cheap, and findable by name after a
crash). The parent prints the children's pids once all are ready and exits, so they are nobody's
zombies. One Python start-up serves all nodes: on a busy 2-core machine a start-up costs ~0.1 s, and
16 of them were most of the time `up` took.

Standard library only (and detach.py beside it, imported as a sibling: the script's folder is first
on sys.path): this file runs with `-E -s -S` (lab.proc.script), outside the package.
"""

import ctypes
import json
import os
import select
import sys
import time

from detach import fork_piped

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
READY_TIMEOUT = 20.0


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc, source, target, fstype, flags, data=None):
    _check(libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None,
                      ctypes.c_ulong(flags), data.encode() if data else None),
           f"mount {source} on {target}")


def _unescape(path):
    return path.encode().decode("unicode_escape")


def _detach_namespace_files(libc):
    """Copies of other labs' /run/netns/* mounts would keep those namespaces alive after their
    `down` as long as this node lives: drop them from this mount namespace."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    targets = []
    for line in lines:
        head, _, tail = line.partition(" - ")
        if tail.split(" ")[0] == "nsfs":
            targets.append(_unescape(head.split(" ")[4]))
    for target in sorted(targets, key=len, reverse=True):
        libc.umount2(target.encode(), MNT_DETACH)


def setup(spec):
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS), "unshare")
    _mount(libc, "none", "/", None, MS_REC | MS_PRIVATE)
    name = spec["hostname"].encode()
    _check(libc.sethostname(name, len(name)), "sethostname")
    _detach_namespace_files(libc)
    for upper, work, target in spec["overlays"]:
        _mount(libc, "overlay", target, "overlay", 0,
               f"lowerdir={target},upperdir={upper},workdir={work}")
    for lowers, target in spec.get("ro_overlays", ()):
        _mount(libc, "overlay", target, "overlay", 0, f"lowerdir={lowers}")
    for source, target in spec["binds"]:
        if os.path.isdir(target):
            _mount(libc, source, target, None, MS_BIND)
    _mount(libc, "tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777")
    libc.umount2(b"/sys", MNT_DETACH)
    _mount(libc, "sysfs", "/sys", "sysfs", 0)
    # Last: the sources above live under the host's /run, which this hides.
    _mount(libc, spec["run"], "/run", None, MS_BIND)
    os.chdir("/")


def child(spec, write_fd):
    try:
        os.setsid()
        setup(spec)
    except Exception as exc:  # reported to the parent, which reports it to the lab
        os.write(write_fd, f"error: {exc}".encode())
        os._exit(1)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.write(write_fd, b"ready")
    os.close(write_fd)
    try:
        os.execvp("sleep", [spec["tag"], "infinity"])
    finally:
        os._exit(127)


def main():
    """Start every node's holder of SPEC at once (one Python start-up for all of them); print
    their pids as a JSON list, or the first error (then no holder is left running)."""
    specs = json.loads(sys.argv[1])
    started = [fork_piped(child, spec) for spec in specs]  # each fd: "ready" or the error
    messages = {fd: b"" for _, fd in started}
    pending = set(messages)
    deadline = time.monotonic() + READY_TIMEOUT
    while pending and time.monotonic() < deadline:
        ready, _, _ = select.select(list(pending), [], [], deadline - time.monotonic())
        for fd in ready:
            chunk = os.read(fd, 4096)
            messages[fd] += chunk
            if not chunk or messages[fd] == b"ready":
                pending.discard(fd)
    errors = [messages[fd].decode(errors="replace") or "error: a holder died while setting up"
              for _, fd in started if messages[fd] != b"ready"]
    if errors:
        for pid, _ in started:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
        print("timed out" if pending else errors[0], file=sys.stderr)
        return 1
    print(json.dumps([pid for pid, _ in started]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
