"""TEST STAND-IN support for the fake `pvecm` and `pvesh` beside this file. NOT PROXMOX.

Proxmox VE's pvecm/pvesh cannot run on this machine (they need pmxcfs, pveproxy and a real
cluster). These stand-ins let pvestrap's pve backend be tested through a real subprocess: they
enforce the documented contract (pve-facts.md; pve-cluster's pvecm.pm, ClusterConfig.pm,
Cluster/Setup.pm; pve-common's JSONSchema.pm and PTY.pm; pve-apiclient's LWP.pm) and print the
messages those sources print, but everything else is simulated:

- all files live under $PVESTRAP_STANDIN_ROOT (required; they never touch the real /);
- the "remote cluster" a joiner talks to is $ROOT/standin/cluster.json (name, nodes, links,
  fingerprint, sha256 of the root password, quorate, hang_on_quorum);
- a lock file $ROOT/standin/cluster.lock makes joins fail the way a cluster locked by another
  join does (content N: the next N joins fail; empty: all fail until it is removed);
- every call is appended to $ROOT/standin/calls.log (JSON lines), the password never.

Standard library only: the stand-ins run under whatever python3 is on PATH.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path

BANNER = ("THIS IS A TEST STAND-IN for Proxmox VE's {tool}, used by pvestrap's tests because the "
          "real one cannot run here. It simulates a cluster under $PVESTRAP_STANDIN_ROOT. "
          "It is NOT Proxmox VE and does not create or join real clusters.")

NAME_RE = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
FINGERPRINT_RE = re.compile(r"^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$")
DNS_RE = re.compile(r"^(([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)\.)*"
                    r"([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)$")
MAX_LINK = 7
LOCK_ERROR = ("An error occurred on the cluster node: cfs-lock 'file-corosync_conf' error: "
              "got lock request timeout\nCluster join aborted!")
BOOL_WORDS = {"1": True, "0": False, "yes": True, "no": False, "true": True, "false": False,
              "on": True, "off": False}


class Die(Exception):
    """What `die "...\\n"` is in the Perl originals: message on stderr, exit 255."""


class WorkerDied(Die):
    """A `die` inside pvecm add's worker (CLI/pvecm.pm runs the join in fork_worker and ignores
    its result): the message is printed, yet pvecm exits 0, as the real one does."""


def pve_cluster_version() -> tuple[int, ...]:
    """The pve-cluster release this stand-in plays: $PVESTRAP_STANDIN_PVE_CLUSTER (e.g. 8.1.3,
    9.1.6); default 9.1.6."""
    text = os.environ.get("PVESTRAP_STANDIN_PVE_CLUSTER") or "9.1.6"
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def root() -> Path:
    value = os.environ.get("PVESTRAP_STANDIN_ROOT")
    if not value:
        raise Die("stand-in: PVESTRAP_STANDIN_ROOT is not set; refusing to touch the real /")
    return Path(value)


def under(path: str) -> Path:
    return root() / path.lstrip("/")


def nodename() -> str:
    return os.environ.get("PVESTRAP_STANDIN_NODENAME") or os.uname().nodename.split(".")[0]


def log_call(tool: str, argv: list[str], stdin: str | None) -> None:
    """Record the call with any --password value masked; stdin is only ever '<secret>'."""
    shown, hide = [], False
    for arg in argv:
        shown.append("<secret>" if hide else re.sub(r"^(--?password=).*", r"\1<secret>", arg))
        hide = arg in ("--password", "-password")
    entry = {"tool": tool, "argv": shown, "stdin": stdin, "time": time.time()}
    path = under("/standin/calls.log")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(entry) + "\n")


def encode_text(line: str) -> str:
    """pve-common's encode_text (datacenter.cfg comments): %XX for control bytes, non-ASCII,
    ':' and '%'."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E and b not in (0x25, 0x3A) else f"%{b:02X}"
                   for b in line.encode("utf-8"))


def decode_text(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text, errors="replace")


# -- arguments -------------------------------------------------------------------------------------

def parse_options(args: list[str], spec: dict[str, str], positional: list[str]) -> dict:
    """PVE's CLI: `--opt value`, `-opt value`, `--opt=value`; booleans may stand alone.
    spec maps option -> 'str' | 'int' | 'bool'. Errors are collected like PVE's
    "Parameter verification failed" (one line per property)."""
    out: dict = {}
    errors: dict[str, str] = {}
    pos: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            pos.append(arg)
            i += 1
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        kind = spec.get(name)
        if kind is None:
            errors[name] = "property is not defined in schema and the schema does not allow " \
                           "additional properties"
            i += 1 + (not eq and i + 1 < len(args) and not args[i + 1].startswith("-"))
            continue
        if name in out:
            errors[name] = "duplicate parameter (only one value allowed)"
        if kind == "bool":
            if not eq and i + 1 < len(args) and args[i + 1].lower() in BOOL_WORDS:
                value, i = args[i + 1], i + 1
            out[name] = BOOL_WORDS.get(value.lower(), None) if (eq or value) else True
            if out[name] is None:
                errors[name] = f"type check ('boolean') failed - got '{value}'"
        else:
            if not eq:
                if i + 1 >= len(args):
                    errors[name] = "missing value"
                    break
                value, i = args[i + 1], i + 1
            if kind == "int" and not re.fullmatch(r"-?\d+", value):
                errors[name] = f"type check ('integer') failed - got '{value}'"
            out[name] = int(value) if kind == "int" and re.fullmatch(r"-?\d+", value) else value
        i += 1
    for want, got in zip(positional, pos):
        out[want] = got
    for want in positional[len(pos):]:
        errors[want] = "property is missing and it is not optional"
    if len(pos) > len(positional):
        raise Die("400 too many arguments\nusage: see --help")
    if errors:
        raise Die("400 Parameter verification failed.\n" +
                  "\n".join(f"{k}: {v}" for k, v in sorted(errors.items())))
    return out


def link_spec() -> dict[str, str]:
    return {f"link{n}": "str" for n in range(MAX_LINK + 1)}


def parse_links(opts: dict) -> dict[int, dict]:
    """`--linkN ADDR[,priority=P]` (address is the default key); N is 0..7 by the schema."""
    links: dict[int, dict] = {}
    errors = []
    for n in range(MAX_LINK + 1):
        value = opts.get(f"link{n}")
        if value is None:
            continue
        link: dict = {}
        for part in value.split(","):
            key, eq, val = part.partition("=")
            if not eq:
                key, val = "address", part
            if key in link:
                errors.append(f"link{n}: duplicate key in comma-separated list property: {key}")
            link[key] = val
        addr = link.get("address")
        if not addr or not (_is_ip(addr) or DNS_RE.match(addr)):
            errors.append(f"link{n}: invalid format - format error\n"
                          f"link{n}.address: value does not look like a valid address: {addr}")
        extra = set(link) - {"address", "priority"}
        if extra:
            errors.append(f"link{n}: invalid format - property is not defined in schema: "
                          f"{sorted(extra)[0]}")
        if "priority" in link:
            p = link["priority"]
            if not p.isdigit() or not 0 <= int(p) <= 255:
                errors.append(f"link{n}.priority: value must be an integer 0..255, got '{p}'")
            else:
                link["priority"] = int(p)
        links[n] = link
    if errors:
        raise Die("400 Parameter verification failed.\n" + "\n".join(errors))
    return links


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def check_name(name: str, prop: str = "clustername") -> None:
    if not NAME_RE.match(name) or len(name) > 15:
        raise Die(f"400 Parameter verification failed.\n{prop}: value does not match the regex "
                  "pattern" if NAME_RE.match(name) is None else
                  f"400 Parameter verification failed.\n{prop}: value may only be 15 characters "
                  "long")


def check_fingerprint(fp: str | None) -> None:
    if fp is not None and not FINGERPRINT_RE.match(fp):
        raise Die("400 Parameter verification failed.\nfingerprint: value does not match the "
                  "regex pattern")


def read_password(host: str) -> str:
    """pve-common PTY::read_password: one line from stdin when it is not a terminal."""
    if sys.stdin.isatty():
        import getpass
        return getpass.getpass(f"Please enter superuser (root) password for '{host}': ")
    line = sys.stdin.readline()
    if not line:
        raise Die("EOF while reading password")
    return line.rstrip("\n")


# -- the simulated cluster -------------------------------------------------------------------------

def load_cluster() -> dict | None:
    path = under("/standin/cluster.json")
    return json.loads(path.read_text()) if path.exists() else None


def save_cluster(cluster: dict) -> None:
    path = under("/standin/cluster.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cluster, indent=2, sort_keys=True) + "\n")


def render_conf(cluster: dict) -> str:
    """corosync.conf the way pve-cluster's Corosync.pm lays it out (sorted sections/keys)."""
    out = ["logging {", "  debug: off", "  to_syslog: yes", "}", "", "nodelist {"]
    for node in sorted(cluster["nodes"], key=lambda n: n["name"]):
        out += ["  node {", f"    name: {node['name']}", f"    nodeid: {node['nodeid']}",
                *([f"    quorum_votes: {node['votes']}"] if node.get("votes", 1) else [])]
        out += [f"    ring{n}_addr: {a}" for n, a in sorted(node["addresses"].items())]
        out.append("  }")
    out += ["}", "", "quorum {"] + _device(cluster.get("qdevice")) + [
        "  provider: corosync_votequorum", "}", "", "totem {",
            f"  cluster_name: {cluster['cluster_name']}",
            f"  config_version: {cluster['config_version']}"]
    for n, prio in sorted(cluster["links"].items()):
        out.append("  interface {")
        if prio:
            out.append(f"    knet_link_priority: {prio}")
        out += [f"    linknumber: {n}", "  }"]
    out += ["  ip_version: ipv4-6", "  link_mode: passive", "  secauth: on"]
    if cluster.get("token_coefficient") is not None:
        out.append(f"  token_coefficient: {cluster['token_coefficient']}")
    out += ["  version: 2", "}", "", ""]  # pvecm ends the file with a blank line
    return "\n".join(out)


def _device(qdevice: dict | None) -> list[str]:
    """pvecm's quorum.device section (sorted keys; votes only for ffsplit)."""
    if not qdevice:
        return []
    votes = ["    votes: 1"] if qdevice["algorithm"] == "ffsplit" else []
    return ["  device {", "    model: net", "    net {", f"      algorithm: {qdevice['algorithm']}",
            f"      host: {qdevice['host']}", "      tls: on", "    }", *votes, "  }"]


def qdevice_votes(cluster: dict) -> int:
    q, n = cluster.get("qdevice"), len(cluster["nodes"])
    return 0 if not q else (1 if q["algorithm"] == "ffsplit" else max(1, n - 1))


def write_node_files(cluster: dict, authkey: bytes) -> None:
    """What create/finish_join leave on the node: authkey (0400) and both corosync.conf."""
    conf = render_conf(cluster)
    for path in ("/etc/corosync/corosync.conf", "/etc/pve/corosync.conf"):
        p = under(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(conf)
    key = under("/etc/corosync/authkey")
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_bytes(authkey)
    key.chmod(0o400)


def new_fingerprint() -> str:
    return ":".join(f"{b:02X}" for b in secrets.token_bytes(32))


def take_cluster_lock() -> bool:
    """True when the simulated cluster is locked by another join (see module docstring)."""
    lock = under("/standin/cluster.lock")
    if not lock.exists():
        return False
    text = lock.read_text().strip()
    if text.isdigit():
        left = int(text) - 1
        if left <= 0:
            lock.unlink()
        else:
            lock.write_text(f"{left}\n")
        return int(text) > 0
    return True


def password_ok(cluster: dict, password: str) -> bool:
    want = cluster.get("password_sha256")
    return want is not None and hashlib.sha256(password.encode()).hexdigest() == want


def status_text(cluster: dict, local: str) -> tuple[str, int]:
    """`pvecm status`: the Cluster information block, then corosync-quorumtool -siH."""
    members = sorted(cluster["nodes"], key=lambda n: n["nodeid"])
    me = next(n for n in members if n["name"] == local)
    quorate = bool(cluster.get("quorate", True))
    qv = qdevice_votes(cluster)  # SIMULATED: a configured QDevice always votes
    votes = (cluster.get("expected") or sum(n.get("votes", 1) for n in members)) + qv
    online = cluster.get("online")  # names of the nodes up (tests set it); else all or me
    seen = [n for n in members if n["name"] in online] if online is not None else \
        members if quorate else [me]
    total = sum(n.get("votes", 1) for n in seen) + qv
    needed = votes // 2 + 1
    lines = ["Cluster information", "-------------------",
             f"{'Name:':<17} {cluster['cluster_name']}",
             f"{'Config Version:':<17} {cluster['config_version']}",
             f"{'Transport:':<17} knet", f"{'Secure auth:':<17} on", "",
             "Quorum information", "------------------",
             f"Date:             {time.ctime()}", "Quorum provider:  corosync_votequorum",
             f"Nodes:            {len(seen)}", f"Node ID:          0x{me['nodeid']:08x}",
             f"Ring ID:          {members[0]['nodeid']}.{cluster['config_version']:x}",
             f"Quorate:          {'Yes' if quorate else 'No'}", "",
             "Votequorum information", "----------------------",
             f"Expected votes:   {votes}", f"Highest expected: {votes}",
             f"Total votes:      {total}",
             f"Quorum:           {needed} {' ' if quorate else 'Activity blocked'}",
             f"Flags:            {'Quorate ' if quorate else ''}{'Qdevice ' if qv else ''}",
             "", "Membership information", "----------------------",
             "    Nodeid      Votes    Qdevice Name" if qv else "    Nodeid      Votes Name"]
    for n in seen:
        addr = n["addresses"][min(n["addresses"], key=int)]
        flags = "    A,V,NMW" if qv else ""
        lines.append(f"0x{n['nodeid']:08x} {n.get('votes', 1):>10}{flags} {addr}"
                     + (" (local)" if n["name"] == local else ""))
    if qv:
        lines.append(f"0x00000000 {qv:>10}            Qdevice")
    return "\n".join(lines) + "\n", 0 if quorate else 2


def nodes_text(cluster: dict, local: str) -> str:
    lines = ["", "Membership information", "----------------------",
             "    Nodeid      Votes Name"]
    for n in sorted(cluster["nodes"], key=lambda n: n["nodeid"]):
        lines.append(f"{n['nodeid']:>10} {n.get('votes', 1):>10} {n['name']}"
                     + (" (local)" if n["name"] == local else ""))
    return "\n".join(lines) + "\n"


def assert_joinable(force: bool) -> None:
    """Cluster/Setup.pm assert_joinable, for what the stand-in can see under its root."""
    errors = []
    if under("/etc/corosync/authkey").exists():
        errors.append("authentication key '/etc/corosync/authkey' already exists")
    if under("/etc/pve/corosync.conf").exists():
        errors.append("cluster config '/etc/pve/corosync.conf' already exists")
    guests = [p for d in ("qemu-server", "lxc") for p in under(f"/etc/pve/{d}").glob("*.conf")]
    if guests:
        errors.append("this host already contains virtual guests")
    if not errors:
        return
    print("detected the following error(s):\n" + "".join(f"* {e}\n" for e in errors),
          file=sys.stderr)
    if not force:
        raise WorkerDied("Check if node may join a cluster failed!")
    print("\nWARNING : detected error but forced to continue!\n", file=sys.stderr)


def cluster_side_add(cluster: dict, name: str, links: dict[int, dict], opts: dict) -> dict:
    """ClusterConfig.pm addnode, as the joiner sees its refusals."""
    def refuse(msg: str) -> Die:
        return Die(f"An error occurred on the cluster node: {msg}\nCluster join aborted!")

    if take_cluster_lock():
        raise Die(LOCK_ERROR)
    if not cluster.get("quorate", True):
        raise refuse("cluster not ready - no quorum?")
    have = {int(n) for n in cluster["links"]}
    for n in range(MAX_LINK + 1):
        if n in have and n not in links:
            raise refuse(f"corosync: link {n} exists in cluster config but wasn't specified "
                         "for new node")
        if n not in have and n in links:
            raise refuse(f"corosync: link {n} specified for new node doesn't exist in "
                         "cluster config")
    for node in cluster["nodes"]:
        if node["name"] == name:
            continue
        for link in links.values():
            for k, addr in node["addresses"].items():
                if addr == link["address"]:
                    raise refuse(f"corosync: address '{addr}' already used on link "
                                 f"ring{k}_addr by node '{node['name']}'")
    if any(node["name"] == name for node in cluster["nodes"]):
        raise refuse(f"can't add existing node '{name}'")
    used = {node["nodeid"] for node in cluster["nodes"]}
    nodeid = opts.get("nodeid")
    if nodeid is None:
        nodeid = 1
        while nodeid in used:
            nodeid += 1
    # an explicit --nodeid is never checked against the cluster (API2/ClusterConfig.pm addnode)
    node = {"name": name, "nodeid": nodeid, "votes": opts.get("votes", 1),
            "addresses": {str(n): link["address"] for n, link in links.items()}}
    cluster["nodes"].append(node)
    cluster["config_version"] += 1
    return cluster


def join(host: str, opts: dict, password: str) -> int:
    """Setup.pm join + finish_join, against the simulated cluster."""
    links = parse_links(opts)
    check_fingerprint(opts.get("fingerprint"))
    if opts.get("nodeid") is not None and opts["nodeid"] < 1:
        raise Die("400 Parameter verification failed.\nnodeid: value must have a minimum "
                  "value of 1")
    assert_joinable(bool(opts.get("force")))
    print(f"Establishing API connection with host '{host}'", flush=True)
    cluster = load_cluster()
    if cluster is None:
        raise Die(f"500 Can't connect to {host}:8006 (Connection refused)")
    fp = opts.get("fingerprint")
    if fp is None:
        print(f"The authenticity of host '{host}' can't be established.\n"
              f"X509 SHA256 key fingerprint is {cluster['fingerprint']}.\n"
              "Are you sure you want to continue connecting (yes/no)? ", end="", flush=True)
        if sys.stdin.readline().strip().lower() != "yes":
            raise Die("Fingerprint not verified, abort!")
    elif fp.upper() != cluster["fingerprint"].upper():
        raise Die(f"fingerprint '{cluster['fingerprint']}' not verified, abort!")
    if not password or not password_ok(cluster, password):
        raise Die("401 authentication failure")
    print("Login succeeded.\ncheck cluster join API version\nRequest addition of this node",
          flush=True)
    name = nodename()
    cluster = cluster_side_add(cluster, name, links, opts)
    print("Join request OK, finishing setup locally", flush=True)
    cluster["local"] = name
    save_cluster(cluster)
    write_node_files(cluster, bytes.fromhex(cluster.get("authkey_hex") or "00" * 256))
    print("stopping pve-cluster service\nbackup old database to "
          "'/var/lib/pve-cluster/backup/config-0.sql.gz'", flush=True)
    print("waiting for quorum...", end="", flush=True)
    while cluster.get("hang_on_quorum"):
        time.sleep(3600)  # pvecm add waits for quorum with no timeout
    print("OK\n(re)generate node files\ngenerate new node certificate\n"
          f"merge authorized SSH keys\nsuccessfully added node '{name}' to cluster.")
    return 0


def main_wrapper(tool: str, handler) -> None:
    try:
        code = handler(sys.argv[1:])
    except Die as exc:
        print(str(exc), file=sys.stderr)
        code = 0 if isinstance(exc, WorkerDied) else 255
    sys.stdout.flush()
    sys.exit(code or 0)
