"""Answer files: one TOML file describes the whole cluster; each node picks its own part.

`loads()` collects every problem at once (type errors, unknown and missing keys, secrets, and
everything `plan.validate()` finds), names each by its TOML key path and line, and raises once.
The root password never lives in the file: only a reference to a file or an environment
variable, resolved by pvestrap.password at the moment of joining.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import tomllib
from dataclasses import fields, replace
from types import MappingProxyType
from typing import Any

from pvestrap.answer_schema import ENV_NAME, LINK_KEY, check_file
from pvestrap import joininfo
from pvestrap.answer_export import dumps, example, json_schema
from pvestrap.errors import AnswerFileInvalid, UserError, located
from pvestrap.findings import Finding, fail
from pvestrap.inputs import read_input
from pvestrap.plan import (ClusterPlan, Datacenter, InterfaceStanza, JoinTarget, Link, Node,
                           Preflight, Thresholds, normalize_keyboard, validate)
from pvestrap.qdevice import QDevice
from pvestrap.toml_lines import key_lines, line_of

__all__ = ["AnswerFileInvalid", "dumps", "example", "load", "loads", "schema", "select_node"]

MAX_CHARS = 1_000_000


def schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the answer file format."""
    return json_schema()


def load(path: str | os.PathLike[str]) -> ClusterPlan:
    """Read and validate an answer file; problems are reported as `path:line:`."""
    source = str(path)
    data = read_input(path, "answer file", MAX_CHARS, code="answer-file-unreadable")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"{source}:{line}: not UTF-8 text", code="answer-toml-invalid",
                        remedy="save the file as UTF-8") from None
    return loads(text, source=source)


def loads(text: str, source: str = "answers.toml") -> ClusterPlan:
    """Parse and validate answer-file text; raise AnswerFileInvalid with every problem found."""
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        raise UserError(f"{source}: not an answer file (expected TOML text under "
                        f"{MAX_CHARS} characters)", code="answer-file-unreadable")
    raw = _parse(text, source)
    clean, problems = check_file(raw)
    plan, more = _build(clean)
    problems += more
    findings = _merge(problems, problems_of(plan))
    if findings:
        raise AnswerFileInvalid(_locate(findings, key_lines(text), source), source=source)
    return plan


def problems_of(plan: ClusterPlan) -> list[Finding]:
    """Every problem of a plan, however it was made: plan.validate's and its installer
    settings'."""
    if plan.installer is None:
        return validate(plan)
    from pvestrap.installer.validate import plan_problems  # ~3 ms to load: [installer] only

    return validate(plan) + plan_problems(plan)


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _error_line(text, str(exc))
        problem = str(exc)
    except (ValueError, RecursionError) as exc:  # 4300-digit integers, very deep nesting
        line, problem = None, f"{type(exc).__name__}: {str(exc)[:80]}"
    raise UserError(f"{located(source, line)}not valid TOML: {problem}",
                    code="answer-toml-invalid",
                    remedy="fix the syntax at that line (`pvestrap answer init` writes a "
                           "commented example)")


def _error_line(text: str, message: str) -> int:
    """tomllib says "at line N" except for errors it meets at the end of the document (a
    duplicate key in the last statement, an unterminated string): for those, the shortest
    prefix of the file that already fails the same way ends at the line to blame."""
    found = re.search(r"at line (\d+)", message)
    if found:
        return int(found.group(1))
    lines = text.split("\n")
    lo, hi = 1, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if _fails_with(lines[:mid], message):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _fails_with(lines: list[str], message: str) -> bool:
    try:
        tomllib.loads("\n".join(lines))
    except (ValueError, RecursionError) as exc:
        return str(exc) == message
    return False


# -- from checked values to a plan -----------------------------------------------------------------

def _build(clean: dict[str, Any]) -> tuple[ClusterPlan, list[Finding]]:
    cluster = clean.get("cluster", {})
    links = tuple(Link(number=raw.get("number", -1), network=raw.get("network"),
                       priority=raw.get("priority", 0)) for raw in clean.get("links", ()))
    join, problems = _join(clean.get("join", {}), cluster.get("name"),
                           {link.number for link in links})
    plan = ClusterPlan(
        cluster_name=cluster.get("name", ""),
        nodes=_nodes(clean.get("nodes", ())),
        links=links,
        create_node=cluster.get("create_node"),
        join=join,
        datacenter=_datacenter(clean.get("datacenter", {})),
        preflight=_preflight(clean.get("preflight", {})),
        pve_version=cluster.get("pve_version"),
        backend=cluster.get("backend", "auto"),
        installer=_frozen(clean["installer"]) if "installer" in clean else None,
        qdevice=_qdevice(clean.get("qdevice"), clean.get("preflight", {}).get("qdevice")),
    )
    return plan, problems


def _frozen(value: Any) -> Any:
    """[installer] as read, made read-only all the way down (the plan is immutable)."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def _nodes(raws: list[dict[str, Any]]) -> tuple[Node, ...]:
    """Nodes without a nodeid get the lowest ids not given explicitly, in file order."""
    taken = {raw["nodeid"] for raw in raws if "nodeid" in raw}
    free = (i for i in itertools.count(1) if i not in taken)
    nodes = []
    for raw in raws:
        addresses = {int(k[4:]): v for k, v in raw.items() if re.fullmatch(LINK_KEY, k)}
        stanzas = tuple(InterfaceStanza(name=s.get("name", ""), address=s.get("address"),
                                        mtu=s.get("mtu"), kind=s.get("kind", "nic"),
                                        bridge_ports=s.get("bridge_ports"),
                                        gateway=s.get("gateway"))
                        for s in raw.get("interfaces", ()))
        nodes.append(Node(name=raw.get("name", ""),
                          nodeid=raw["nodeid"] if "nodeid" in raw else next(free),
                          addresses=addresses, votes=raw.get("votes", 1), interfaces=stanzas,
                          management=raw.get("management")))
    return tuple(nodes)


def _join(raw: dict[str, Any], cluster_name: str | None,
          link_numbers: set[int]) -> tuple[JoinTarget, list[Finding]]:
    out: list[Finding] = []
    address, fingerprint = raw.get("address"), raw.get("fingerprint")
    if "join_info" in raw:
        try:
            info = joininfo.decode(raw["join_info"])
        except UserError as exc:
            out.append(fail(exc.code, exc.message, "join.join_info", remedy=exc.remedy))
        else:
            out += _join_info_conflicts(info, address, fingerprint, cluster_name, link_numbers)
            address = address or info.address
            fingerprint = fingerprint or info.fingerprint
    env, path = raw.get("password_env"), raw.get("password_file")
    if env is not None and not ENV_NAME.match(env):
        out.append(fail("password-env-invalid", "password_env must be the NAME of an "
                        "environment variable", "join.password_env",
                        remedy="e.g. password_env = \"PVE_ROOT_PASSWORD\"; never the password"))
    if path is not None and not path.startswith("/"):
        out.append(fail("password-file-invalid", "password_file must be an absolute path",
                        "join.password_file", remedy="e.g. /root/.pve-root-pw (mode 0600)"))
    return JoinTarget(address=address, fingerprint=fingerprint, password_file=path,
                      password_env=env), out


def _join_info_conflicts(info: joininfo.JoinInfo, address: str | None, fingerprint: str | None,
                         cluster_name: str | None, link_numbers: set[int]) -> list[Finding]:
    """The blob comes from the running cluster: where the file disagrees, the file is wrong."""
    out = []
    if address is not None and address != info.address:
        out.append(fail("join-info-conflict", f"join.address {address} differs from the join "
                        f"information's {info.address}", "join.address",
                        payload={"file": address, "join_info": info.address},
                        remedy="drop join.address or make it match"))
    if fingerprint is not None and fingerprint.upper() != info.fingerprint.upper():
        out.append(fail("join-info-conflict", "join.fingerprint differs from the join "
                        "information's", "join.fingerprint",
                        remedy="drop join.fingerprint or make it match"))
    if info.cluster_name and cluster_name and info.cluster_name != cluster_name:
        out.append(fail("join-info-cluster-mismatch", f"the join information is for cluster "
                        f"{info.cluster_name!r}, the file plans {cluster_name!r}",
                        "join.join_info",
                        payload={"join_info": info.cluster_name, "file": cluster_name}))
    if info.link_numbers and set(info.link_numbers) != link_numbers:
        out.append(fail("join-info-links-mismatch", f"the cluster has links "
                        f"{list(info.link_numbers)}, the file plans {sorted(link_numbers)}",
                        "join.join_info",
                        payload={"join_info": list(info.link_numbers),
                                 "file": sorted(link_numbers)},
                        remedy="a joining node must give exactly the cluster's links"))
    return out


def _datacenter(raw: dict[str, Any]) -> Datacenter:
    migration, replication = raw.get("migration", {}), raw.get("replication", {})
    next_id = raw.get("next_id", {})
    keyboard = raw.get("keyboard")
    return Datacenter(
        keyboard=normalize_keyboard(keyboard) if keyboard is not None else None,
        language=raw.get("language"), console=raw.get("console"),
        migration_type=migration.get("type"), migration_network=migration.get("network"),
        replication_type=replication.get("type"),
        replication_network=replication.get("network"),
        ha_shutdown_policy=raw.get("ha_shutdown_policy"), bwlimit=dict(raw.get("bwlimit", {})),
        mac_prefix=raw.get("mac_prefix"), next_id_lower=next_id.get("lower"),
        next_id_upper=next_id.get("upper"), email_from=raw.get("email_from"),
        http_proxy=raw.get("http_proxy"), max_workers=raw.get("max_workers"),
        description=raw.get("description"),
    )


def _preflight(raw: dict[str, Any]) -> Preflight:
    thresholds = Thresholds(**{f.name: raw[f.name] for f in fields(Thresholds) if f.name in raw})
    return Preflight(thresholds=thresholds, ignore_checks=raw.get("ignore_checks", ()),
                     ntp_servers=raw.get("ntp_servers", ()))


def _qdevice(raw: dict[str, Any] | None, older: str | None) -> QDevice | None:
    """[qdevice], or the older `[preflight] qdevice = "HOST"` (the host alone)."""
    if raw is None:
        return QDevice(older) if older else None
    return QDevice(raw.get("host", ""), raw.get("algorithm"), raw.get("tie_breaker", "lowest"),
                   raw.get("network"))


# -- findings: plan paths to TOML paths, lines -----------------------------------------------------

_PLAN_PATHS = (
    (re.compile(r"^cluster_name"), "cluster.name"),
    (re.compile(r"^(create_node|pve_version|backend)\b"), r"cluster.\1"),
    (re.compile(r"^preflight\.thresholds\."), "preflight."),
    (re.compile(r"\.addresses\.(\d+)"), r".link\1"),
    (re.compile(r"^datacenter\.(migration|replication)_(type|network)"), r"datacenter.\1.\2"),
    (re.compile(r"^datacenter\.next_id_(lower|upper)"), r"datacenter.next_id.\1"),
)


def toml_path(subject: str | None) -> str | None:
    """plan.validate() names fields after the dataclasses; the file nests some differently."""
    if subject is None:
        return None
    for pattern, repl in _PLAN_PATHS:
        subject = pattern.sub(repl, subject)
    return subject


def _merge(loader: list[Finding], planned: list[Finding]) -> list[Finding]:
    """Add the plan's findings, minus those that only echo a problem the loader reported
    (a missing name is not also an invalid name; a mistyped link0 is not also a link-set
    mismatch)."""
    paths = [f.subject for f in loader if f.subject is not None]
    links_broken = any(p == "links" or p.startswith("links[") for p in paths)
    out = list(loader)
    for f in planned:
        subject = toml_path(f.subject)
        if subject is not None and any(subject == p or subject.startswith((p + ".", p + "["))
                                       for p in paths):
            continue
        if f.code == "node-link-set-mismatch" and (
                links_broken or any(p.startswith(f"{subject}.link") for p in paths)):
            continue
        out.append(replace(f, subject=subject))
    return out


def _locate(findings: list[Finding], where: dict[str, int], source: str) -> list[Finding]:
    out = []
    for f in findings:
        line = line_of(where, f.subject)
        out.append(replace(f, message=f"{located(source, line)}{f.message}",
                           payload={**f.payload, "line": line}))
    return sorted(out, key=lambda f: (f.payload["line"] is None, f.payload["line"] or 0))


# -- using a plan ----------------------------------------------------------------------------------

def select_node(plan: ClusterPlan, name: str | None = None) -> Node:
    """This machine's part of the plan: `name` (--node), else the short hostname."""
    wanted = name or socket.gethostname().split(".")[0]
    if plan.has_node(wanted):
        return plan.node(wanted)
    known = ", ".join(n.name for n in plan.nodes) or "none"
    origin = "" if name else " (this host's name)"
    raise UserError(f"node {wanted!r}{origin} is not in the answer file; its nodes: {known}",
                    code="node-not-in-answers",
                    remedy="pass --node NAME to choose one, or add this host to [[nodes]]")
