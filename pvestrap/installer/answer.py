"""The installer's answer.toml for one node: rendered from the cluster plan and the installer
settings, and checked by the same rules as `pvestrap iso validate-answer`
(pvestrap.installer.rules).

The rendered file installs the node with its cluster name as host name (`fqdn` = node + domain,
so the first-boot flow finds its own [[nodes]] entry by hostname), its management address
(network from-answer) and `[first-boot] source = "from-iso"`, so the installer copies the hook
from the ISO. The default ordering is "fully-up": Proxmox's `proxmox-first-boot-multi-user`
unit runs after pveproxy (hence after pve-cluster), which `pvecm create` and `pvecm add` need;
"network-online" only waits for the network.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Mapping

from pvestrap.errors import ValidationFailed
from pvestrap.findings import Finding, Severity
from pvestrap.installer import rules
from pvestrap.installer.settings import Settings
from pvestrap.plan import INSTALLER_KEYBOARDS, ClusterPlan, Node

DEFAULT_ORDERING = "fully-up"
TO_INSTALLER_KEYBOARD = {ours: theirs for theirs, ours in INSTALLER_KEYBOARDS.items()}
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_SETTING_FOR = {
    "global.country": "country", "global.timezone": "timezone", "global.mailto": "mailto",
    "global.keyboard": "keyboard", "global.fqdn": "domain", "global.root-ssh-keys":
    "root_ssh_keys", "network.source": "network_source", "network.dns": "dns",
    "network.gateway": "gateway", "network.filter": "network_filter",
    "first-boot.ordering": "first_boot_ordering", "disk-setup": "disk",
}


@dataclass(frozen=True)
class Rendered:
    text: str
    warnings: tuple[Finding, ...]


def keyboard_for_installer(layout: str) -> str:
    """datacenter.cfg spells da/ja/sv/sl; the installer dk/jp/se/si."""
    return TO_INSTALLER_KEYBOARD.get(layout, layout)


def render(plan: ClusterPlan, node_name: str, settings: Settings,
           password_hash: str | None) -> Rendered:
    """answer.toml text for NODE; raises ValidationFailed naming the answer key and the
    setting (or cluster key) it comes from when the installer would refuse the result."""
    node = plan.node(node_name)
    doc = {
        "global": _global(plan, node, settings, password_hash),
        "network": _network(node, settings),
        "disk-setup": _disk_setup(settings.get("disk", {})),
        "first-boot": {"source": "from-iso",
                       "ordering": settings.get("first_boot_ordering", DEFAULT_ORDERING)},
    }
    text = dumps(doc, f"Proxmox VE automated installer answer for node {node.name} of "
                      f"cluster {plan.cluster_name}, written by pvestrap")
    findings = [_blame(f, plan, node, settings) for f in rules.check_text(text, "answer.toml")]
    failed = [f for f in findings if f.severity is Severity.FAIL]
    if failed:
        raise ValidationFailed(failed, source=f"answer.toml for {node.name}")
    return Rendered(text=text, warnings=tuple(findings))


def _global(plan: ClusterPlan, node: Node, s: Settings,
            password_hash: str | None) -> dict[str, Any]:
    """Keys are left out when nothing gives them: the rules then name what is missing."""
    keyboard = s.get("keyboard") or plan.datacenter.keyboard
    domain = s.get("domain")
    values = {
        "keyboard": keyboard_for_installer(keyboard) if keyboard else None,
        "country": s.get("country"),
        "fqdn": f"{node.name}.{domain}" if domain else None,
        "mailto": s.get("mailto"),
        "timezone": s.get("timezone"),
        "root-password-hashed": password_hash,
        "root-ssh-keys": list(s.get("root_ssh_keys", ())) or None,
        "reboot-on-error": s.get("reboot_on_error"),
    }
    return {k: v for k, v in values.items() if v is not None}


def _network(node: Node, s: Settings) -> dict[str, Any]:
    source = s.get("network_source", "from-answer")
    out: dict[str, Any] = {"source": source}
    if source != "from-answer":
        return out
    if node.management:
        out["cidr"] = node.management
    for key in ("dns", "gateway"):
        if s.get(key):
            out[key] = s.get(key)
    per_node = s.origins.get("network_filter", "").startswith("installer.nodes.")
    derived = management_nic_filter(node)
    nic_filter = s.get("network_filter") if per_node or not derived else derived
    if nic_filter:
        out["filter"] = dict(nic_filter)
    return out


def management_nic_filter(node: Node) -> dict[str, str] | None:
    """The bridge the plan gives the management address rides on one NIC: pick that NIC.
    It beats the shared installer.network_filter; a node's own network_filter beats it."""
    if not node.management:
        return None
    try:
        wanted = ipaddress.ip_interface(node.management)
    except ValueError:
        return None
    for stanza in node.interfaces:
        if stanza.kind != "bridge" or not stanza.address or not stanza.bridge_ports:
            continue
        ports = stanza.bridge_ports.split()
        try:
            same = ipaddress.ip_interface(stanza.address) == wanted
        except ValueError:
            continue
        if same and len(ports) == 1:
            return {"ID_NET_NAME": ports[0]}
    return None


def _disk_setup(disk: Mapping[str, Any]) -> dict[str, Any]:
    """Settings spell keys in snake_case (disk_list, arc_max); the installer in kebab-case."""
    out: dict[str, Any] = {}
    for key, value in disk.items():
        name = key.replace("_", "-")
        if isinstance(value, dict) and key != "filter":
            out[name] = {k.replace("_", "-"): v for k, v in value.items()}
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _blame(f: Finding, plan: ClusterPlan, node: Node, s: Settings) -> Finding:
    """Name where the offending value came from: the settings key, or the cluster file's.
    (Lines are left out: they would point into text the user never saw.)"""
    payload = {k: v for k, v in f.payload.items() if k != "line"}
    where = _origin(f.subject or "", f.code, plan, node, s)
    if where is None:
        return replace(f, payload=payload)
    remedy = f"set it through {where}" + (f"; {f.remedy}" if f.remedy else "")
    return replace(f, remedy=remedy, payload={**payload, "from": where})


def _origin(subject: str, code: str, plan: ClusterPlan, node: Node, s: Settings) -> str | None:
    if subject.startswith("network.cidr"):
        return f"cluster answer file: nodes[{plan.nodes.index(node)}].management"
    if subject.startswith("global.keyboard") and not s.get("keyboard"):
        return "cluster answer file: datacenter.keyboard, or installer.keyboard"
    if subject.startswith("global.root-password") or (subject == "global" and
                                                      "password" in code):
        return ("installer.root_password_hashed / root_password_file / root_password_env, "
                "or --root-password-file / --root-password-env")
    if subject.startswith("disk-setup."):
        key = "disk." + subject.split(".")[1].split("[")[0].replace("-", "_")
        if key in s.origins:
            return s.origin(key)
    setting = next((v for k, v in _SETTING_FOR.items() if subject.startswith(k)), None)
    if setting is None:
        return None
    return s.origin(setting) if setting in s.values else f"{s.source}: installer.{setting}"


# -- TOML out ------------------------------------------------------------------------------------

def dumps(doc: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """TOML in the installer's documented shape: one table per section, nested tables as
    dotted keys (filter.ID_NET_NAME = "eno1", zfs.raid = "raid1")."""
    lines = [f"# {title}", "# check it with: pvestrap iso validate-answer FILE"]
    for section, table in doc.items():
        lines += ["", f"[{section}]"]
        for key, value in table.items():
            if isinstance(value, Mapping):
                lines += [f"{_key(key)}.{_key(k)} = {_value(v)}" for k, v in value.items()]
            else:
                lines.append(f"{_key(key)} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if _BARE.match(name) else json.dumps(name, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)
