"""Start a long-lived lab process detached (run as a script: `python -E -s -S detach.py SPEC`).

The process (corosync, sshd, chronyd, the forwarder) must outlive `pvestrap lab ...` and must not
become a zombie of a test process that kills it later, so it is forked from this short-lived
script, which prints its pid and exits: the process is then init's child. With "ready", the
process gets a pipe on fd 3 (PVESTRAP_READY_FD=3) and the pid is printed only after it writes
"ready" there; otherwise only after a successful exec (the pipe is close-on-exec).

Standard library only: this file runs with `-E -s -S` (lab.proc.script), outside the package.
"""

import json
import os
import select
import sys

READY_FD = 3


def child(spec, write_fd):
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    env = dict(os.environ)
    env.update(spec.get("env") or {})
    if spec.get("ready"):
        os.dup2(write_fd, READY_FD)
        env["PVESTRAP_READY_FD"] = str(READY_FD)
        write_fd = READY_FD
    os.chdir(spec.get("cwd") or "/")
    try:
        os.execvpe(spec["argv"][0], spec["argv"], env)
    except OSError as exc:
        os.write(write_fd, f"error: cannot run {spec['argv'][0]}: {exc.strerror}".encode())
    os._exit(127)


def fork_piped(child_main, spec):
    """Fork CHILD_MAIN(spec, write_fd), which never returns, with a pipe back to this process;
    return (pid, the pipe's read end). holder.py starts its holders with it too."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        child_main(spec, write_fd)
    os.close(write_fd)
    return pid, read_fd


def main():
    spec = json.loads(sys.argv[1])
    pid, read_fd = fork_piped(child, spec)
    message = b""
    timeout = float(spec.get("timeout", 20))
    while True:
        ready, _, _ = select.select([read_fd], [], [], timeout)
        chunk = os.read(read_fd, 4096) if ready else None
        if not chunk:
            break
        message += chunk
        if message.startswith(b"ready") or message.startswith(b"error"):
            break
    text = message.decode(errors="replace")
    wanted = "ready" if spec.get("ready") else ""
    if chunk is None or (spec.get("ready") and not text.startswith(wanted)) or \
            text.startswith("error"):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        reason = text if text.startswith("error") else (
            "error: timed out" if chunk is None else "error: it exited before it was ready")
        print(reason, file=sys.stderr)
        return 1
    print(pid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
