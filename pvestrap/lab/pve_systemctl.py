"""LAB STAND-IN for `systemctl` inside a `lab up --pve` node (there is no systemd in a node).

Proxmox's pvecm starts and stops units with systemctl; in a lab node this script answers
instead (it is laid over /usr/bin/systemctl inside the node only, never on the machine). It
knows the units pvecm touches, as their Debian/Proxmox unit files run them:

- pve-cluster: `pmxcfs` (Type=forking, PIDFile=/run/pve-cluster.pid; pve-cluster's
  debian/pve-cluster.service); stopping also lazily unmounts /etc/pve if pmxcfs left it;
- corosync: `corosync` when /etc/corosync/corosync.conf exists (the unit's
  ConditionPathExists), pid in /run/corosync.pid;
- ssh/sshd: reload = SIGHUP to /run/sshd.pid (the lab's sshd);
- corosync-qdevice: `corosync-qdevice` (it forks and writes
  /run/corosync-qdevice/corosync-qdevice.pid; Debian's unit runs it with -f, Type=notify,
  RuntimeDirectory=corosync-qdevice), only while corosync runs (Requires=corosync.service);
- every other unit (pveproxy, pvedaemon, ...) is accepted and does nothing.

pve-cluster is ordered before corosync (its unit says Before=corosync.service), so
`restart corosync pve-cluster` stops corosync first and starts pmxcfs first. Every call is
logged to /var/log/pvestrap-lab-systemctl.log. Standard library only; runs as `python3 -IS`.
"""

import os
import signal
import subprocess
import sys
import time

LOG = "/var/log/pvestrap-lab-systemctl.log"
PIDFILES = {"pve-cluster": "/run/pve-cluster.pid", "corosync": "/run/corosync.pid",
            "ssh": "/run/sshd.pid",
            "corosync-qdevice": "/run/corosync-qdevice/corosync-qdevice.pid"}
COMMANDS = {"pve-cluster": ["pmxcfs"], "corosync": ["corosync"],
            "corosync-qdevice": ["corosync-qdevice"]}
WAIT = 10.0


def unit(name):
    name = name.removesuffix(".service")
    return "ssh" if name in ("ssh", "sshd") else name


def pid_of(name):
    try:
        with open(PIDFILES[name], encoding="ascii") as fh:
            pid = int(fh.read().strip())
        os.kill(pid, 0)
        return pid
    except (KeyError, OSError, ValueError):
        return None


def is_mounted(path):
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return any(line.split()[1] == path for line in fh)


def wait_for(check, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def stop(name):
    pid = pid_of(name)
    if pid is not None and name != "ssh":
        os.kill(pid, signal.SIGTERM)
        if not wait_for(lambda: pid_of(name) is None):
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: pid_of(name) is None, 2.0)
        try:
            os.unlink(PIDFILES[name])
        except OSError:
            pass
    if name == "pve-cluster" and is_mounted("/etc/pve"):
        subprocess.run(["fusermount", "-u", "-z", "/etc/pve"], check=False)
    return 0


def start(name):
    if name == "ssh":
        return reload(name)
    if name not in COMMANDS or pid_of(name) is not None:
        return 0
    if name == "corosync" and not os.path.exists("/etc/corosync/corosync.conf"):
        return 0  # ConditionPathExists=/etc/corosync/corosync.conf: skipped, not failed
    if name == "corosync-qdevice" and pid_of("corosync") is None:
        print("A dependency job for corosync-qdevice.service failed.", file=sys.stderr)
        return 1
    os.makedirs("/var/log/corosync", exist_ok=True)
    os.makedirs("/run/corosync-qdevice", exist_ok=True)
    with open(f"/var/log/pvestrap-lab-{name}.out", "ab") as out:
        code = subprocess.run(COMMANDS[name], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              check=False).returncode
    if code != 0:
        print(f"Job for {name}.service failed (exit {code}).", file=sys.stderr)
        return 1
    ready = (lambda: is_mounted("/etc/pve")) if name == "pve-cluster" else \
        (lambda: pid_of(name) is not None)
    return 0 if wait_for(ready) else 1


def reload(name):
    pid = pid_of(name)
    if name == "ssh" and pid is not None:
        os.kill(pid, signal.SIGHUP)
    return 0


def ordered(names):
    """pve-cluster first (Before=corosync.service)."""
    return sorted(names, key=lambda n: n != "pve-cluster")


def main(argv):
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%H:%M:%S')} systemctl {' '.join(argv)}\n")
    args = [a for a in argv if not a.startswith("-")]
    if not args:
        return 0
    action, names = args[0], ordered([unit(n) for n in args[1:]])
    code = 0
    if action in ("stop", "restart", "try-restart"):
        for name in reversed(names):
            stop(name)
    if action in ("start", "restart", "try-restart"):
        for name in names:
            code |= start(name)
    elif action in ("reload", "reload-or-restart", "try-reload-or-restart"):
        for name in names:
            reload(name)
    elif action == "is-active":
        code = 0 if all(pid_of(n) is not None for n in names) else 3
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
