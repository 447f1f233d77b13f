"""The process that holds one lab node's namespaces (run as a script: `python -I -S holder.py SPEC`).

It forks; the child leaves the caller's session, unshares net, mount and UTS namespaces, sets the
hostname, lays the node's private files over /etc and /root (overlays whose upper layers are in
the node's folder, so edits inside the node stay in the node and renames work; /root may hold
the very Python this runs on), binds the node's folders over /run, /var/lib/corosync and
/var/log, mounts its own /dev/shm and a sysfs that shows
the node's NICs, and then becomes `sleep infinity` named `pvestrap-lab:<prefix>-nK` (cheap, and
findable by name after a crash). The parent prints the child's pid once the child is ready and
exits, so the child is nobody's zombie.

Standard library only: this file runs with `-I -S`, outside the package.
"""

import ctypes
import json
import os
import select
import sys

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
    spec = json.loads(sys.argv[1])
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child(spec, write_fd)
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], READY_TIMEOUT)
    message = os.read(read_fd, 4096).decode(errors="replace") if ready else "error: timed out"
    if message != "ready":
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        print(message or "error: the holder died while setting up", file=sys.stderr)
        return 1
    print(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
