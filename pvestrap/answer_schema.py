"""The cluster answer file's format, defined once (as keys of pvestrap.toml_schema).

The loader's type checks, its unknown-key and missing-key findings and the JSON Schema for editors
(written by pvestrap.answer_export) are all derived from the `FORMAT` tree below, so they cannot
drift apart. Value rules that need more than a type (name regex, CIDRs, link sets) belong to
`pvestrap.plan.validate`; the schema repeats the simple ones (patterns, ranges, enums) so editors
can flag them early.

The optional [installer] table (settings for Proxmox's automated installer) names, for each key,
the answer.toml key it becomes (`target`); its enum and range are the installer's own, taken from
that key of `pvestrap.installer.rules.FORMAT` (pvestrap.installer.validate checks the values).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pvestrap import plan
from pvestrap.datacenter_schema import LANGUAGES, MAC_PREFIX, NEXT_ID_LOWER, NEXT_ID_UPPER
from pvestrap.findings import Finding, fail
from pvestrap.installer.rules import rules_at
from pvestrap.toml_schema import (BOOL, INT, MAP, NUM, STR, STRS, TABLE, TABLES, UNKNOWN, Key,
                                  Style, check, rules)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LINK_KEY = r"^link[0-7]$"

_NAME = rules(pattern=plan.NAME_RE.pattern, maxLength=plan.NAME_MAX)
_TRANSFER = (
    Key("type", STR, "secure (over SSH, default) or insecure (plain TCP)",
        rules=rules(enum=list(plan.TRANSFER_TYPES))),
    Key("network", STR, "CIDR of the network to use, e.g. 10.10.20.0/24"),
)
_THRESHOLD_DOCS = {
    "latency_fail_ms": "round-trip time (ms) from which a link FAILs",
    "jitter_warn_ms": "jitter (ms) from which a link WARNs",
    "loss_warn_pct": "packet loss (%) from which a link WARNs",
    "loss_fail_pct": "packet loss (%) from which a link FAILs",
    "clock_warn_s": "clock offset (s) from which a pair of nodes WARNs",
    "clock_fail_s": "clock offset (s) from which a pair of nodes FAILs",
    "duration_s": "how long each link is measured (s)",
}


def _setting(name: str, kind: str, doc: str, target: str, *,
             own: tuple[tuple[str, Any], ...] = (), children: tuple[Key, ...] = ()) -> Key:
    """An installer setting: the enum and range of its answer.toml key TARGET, then its own
    rules (which win)."""
    return Key(name, kind, doc, target=target, children=children,
               rules=tuple({**dict(rules_at(target)), **dict(own)}.items()))


def _options(fs: str, keys: tuple[tuple[str, str, str], ...]) -> Key:
    """[installer.disk.FS]: each key becomes disk-setup.FS.key (kebab-case) in answer.toml."""
    return _setting(fs, TABLE, f"{fs} options", f"disk-setup.{fs}", children=tuple(
        _setting(n, kind, doc, f"disk-setup.{fs}.{n.replace('_', '-')}")
        for n, kind, doc in keys))


_KEYBOARDS = rules(enum=sorted(plan.KEYBOARDS | set(plan.INSTALLER_KEYBOARDS)))
INSTALLER_KEYS: tuple[Key, ...] = (
    _setting("country", STR, "ISO 3166-1 alpha-2 country code, lower case, e.g. at",
             "global.country", own=rules(pattern="^[a-z]{2}$")),
    _setting("timezone", STR, "UTC or Area/Location, e.g. Europe/Vienna", "global.timezone",
             own=rules(pattern="^(UTC|[A-Za-z]+/.+)$")),
    _setting("keyboard", STR, "keyboard layout (default: datacenter.keyboard)",
             "global.keyboard", own=_KEYBOARDS),
    _setting("mailto", STR, "root's mail address", "global.mailto",
             own=rules(pattern=r"^[^@\s]+@[^@\s]+$",
                       **{"not": {"const": "mail@example.invalid"}})),
    _setting("domain", STR, "DNS domain; a node's FQDN is NAME.domain (at most 253 characters)",
             "global.fqdn", own=rules(pattern=plan.HOST_RE.pattern)),
    _setting("network_source", STR, "from-answer (management address, default) or from-dhcp",
             "network.source"),
    _setting("gateway", STR, "default gateway's IP address (from-answer)", "network.gateway"),
    _setting("dns", STR, "DNS server's IP address (from-answer)", "network.dns"),
    _setting("network_filter", MAP, "udev property -> glob picking the management NIC",
             "network.filter"),
    _setting("root_ssh_keys", STRS, "OpenSSH public keys for root", "global.root-ssh-keys"),
    _setting("reboot_on_error", BOOL, "reboot when installing fails", "global.reboot-on-error"),
    _setting("first_boot_ordering", STR, "when the first-boot hook runs (default fully-up)",
             "first-boot.ordering"),
    _setting("disk", TABLE, "disk setup", "disk-setup", children=(
        _setting("filesystem", STR, "root filesystem", "disk-setup.filesystem"),
        _setting("disk_list", STRS, "disks to install on (or filter)", "disk-setup.disk-list"),
        _setting("filter", MAP, "udev property -> glob choosing the disks", "disk-setup.filter"),
        _setting("filter_match", STR, "whether any or all filters must match",
                 "disk-setup.filter-match"),
        _options("zfs", (("raid", STR, "RAID level"), ("ashift", INT, "sector size, 2^ashift"),
                         ("arc_max", INT, "ARC size (MiB)"), ("checksum", STR, "algorithm"),
                         ("compress", STR, "algorithm"), ("copies", INT, "copies of data"),
                         ("hdsize", NUM, "GiB to use"))),
        _options("lvm", (("hdsize", NUM, "GiB to use"), ("swapsize", NUM, "GiB, <= hdsize / 2"),
                         ("maxroot", NUM, "GiB for root"), ("maxvz", NUM, "GiB for data"),
                         ("minfree", NUM, "GiB left free"))),
        _options("btrfs", (("raid", STR, "RAID level"), ("compress", STR, "algorithm"),
                           ("hdsize", NUM, "GiB to use"))),
    )),
)
_INSTALLER = Key("installer", TABLE, "Proxmox automated-installer settings for pvestrap iso "
                 "answer/prepare (never a password)", children=INSTALLER_KEYS + (
                     Key("nodes", TABLE, "per-node overrides", children=(
                         Key("NAME", TABLE, "one node's settings, winning over the shared ones",
                             pattern=plan.NAME_RE.pattern, children=INSTALLER_KEYS),)),))


FORMAT: tuple[Key, ...] = (
    Key("cluster", TABLE, "The cluster as a whole.", required=True, children=(
        Key("name", STR, "cluster name; cannot be changed later", required=True, rules=_NAME),
        Key("create_node", STR, "node that creates the cluster (default: lowest nodeid)",
            rules=_NAME),
        Key("pve_version", STR, 'target PVE release, e.g. "9.2" (>= 9.2 writes '
            "token_coefficient: 125)", rules=rules(pattern=r"^[0-9]+")),
        Key("backend", STR, "auto, pve (pvecm) or corosync (plain Debian)",
            rules=rules(enum=list(plan.BACKENDS))),
    )),
    Key("links", TABLES, "corosync knet links, link0..link7", required=True,
        rules=rules(minItems=1, maxItems=plan.MAX_LINK + 1), children=(
            Key("number", INT, "link number 0..7 (UDP port 5405 + number)", required=True,
                rules=rules(minimum=0, maximum=plan.MAX_LINK)),
            Key("network", STR, "the link's network in CIDR notation"),
            Key("priority", INT, "0..255; the higher number is preferred",
                rules=rules(minimum=0, maximum=255)),
        )),
    Key("nodes", TABLES, "every node of the cluster", required=True,
        rules=rules(minItems=1), children=(
            Key("name", STR, "the node's hostname (short)", required=True, rules=_NAME),
            Key("nodeid", INT, "corosync nodeid (default: lowest free id in file order)",
                rules=rules(minimum=1)),
            Key("votes", INT, "quorum votes (default 1)", rules=rules(minimum=0)),
            Key("linkN", STR, "the node's IP address on link N", pattern=LINK_KEY,
                family=tuple(f"link{n}" for n in range(plan.MAX_LINK + 1)),
                near=(r"link[0-9]+", "corosync has links 0..7 only: use link0 .. link7")),
            Key("management", STR, "management address in CIDR notation"),
            Key("interfaces", TABLES, "/etc/network/interfaces stanzas the plan owns", children=(
                Key("name", STR, "interface name, e.g. eno2", required=True,
                    rules=rules(pattern=plan.IFACE_RE.pattern)),
                Key("address", STR, "static address in CIDR notation"),
                Key("mtu", INT, "MTU 576..65535", rules=rules(minimum=576, maximum=65535)),
                Key("kind", STR, "nic (default) or bridge", rules=rules(enum=["nic", "bridge"])),
                Key("bridge_ports", STR, "ports of a bridge, e.g. eno1"),
                Key("gateway", STR, "gateway address (bridges)"),
            )),
        )),
    Key("join", TABLE, "how joining nodes reach the cluster; never the password itself",
        children=(
            Key("address", STR, "address or name joiners contact (default: the create "
                "node's name where it resolves on the joiner to non-loopback addresses, else "
                "its link0 address)"),
            Key("fingerprint", STR, "SHA-256 fingerprint of the cluster node's certificate",
                rules=rules(pattern=plan.FINGERPRINT_RE.pattern)),
            Key("join_info", STR, "the GUI's base64 Join Information (fills address and "
                "fingerprint)"),
            Key("password_file", STR, "absolute path of a file holding root's password "
                "(not world-readable)", rules=rules(pattern="^/")),
            Key("password_env", STR, "name of an environment variable holding root's password",
                rules=rules(pattern=ENV_NAME.pattern)),
        )),
    Key("datacenter", TABLE, "datacenter.cfg options (written on the create node)", children=(
        Key("keyboard", STR, "keyboard layout (installer spellings dk/jp/se/si accepted)",
            rules=_KEYBOARDS),
        Key("language", STR, "default GUI language, e.g. en or pt_BR",
            rules=rules(enum=list(LANGUAGES))),
        Key("console", STR, "default console viewer", rules=rules(enum=list(plan.CONSOLES))),
        Key("ha_shutdown_policy", STR, "HA policy on node shutdown",
            rules=rules(enum=list(plan.HA_POLICIES))),
        Key("migration", TABLE, "migration settings", children=_TRANSFER),
        Key("replication", TABLE, "replication settings", children=_TRANSFER),
        Key("bwlimit", TABLE, "bandwidth limits in KiB/s", children=tuple(
            Key(k, INT, f"{k} limit (KiB/s)", rules=rules(minimum=0)) for k in plan.BWLIMIT_KEYS)),
        Key("mac_prefix", STR, "unicast MAC prefix for new NICs (default BC:24:11)",
            rules=rules(pattern=MAC_PREFIX.pattern)),
        Key("next_id", TABLE, "range for new guest ids (PVE: lower <= upper)", children=(
            Key("lower", INT, "lowest id (inclusive, default 100)",
                rules=rules(minimum=NEXT_ID_LOWER[0], maximum=NEXT_ID_LOWER[1])),
            Key("upper", INT, "upper bound (exclusive, default 1000000)",
                rules=rules(minimum=NEXT_ID_UPPER[0], maximum=NEXT_ID_UPPER[1])))),
        Key("email_from", STR, "sender address of notification mails",
            rules=rules(pattern=r"^[^@\s]+@[^@\s]+$")),
        Key("http_proxy", STR, "proxy for downloads (http://...)",
            rules=rules(pattern=r"^http://\S+$")),
        Key("max_workers", INT, "parallel workers for bulk actions", rules=rules(minimum=1)),
        Key("description", STR, "datacenter notes (multi-line)"),
    )),
    Key("preflight", TABLE, "preflight thresholds and overrides", children=tuple(
        Key(f.name, NUM, _THRESHOLD_DOCS.get(f.name, f.name),
            rules=rules(exclusiveMinimum=0, default=f.default))
        for f in dataclasses.fields(plan.Thresholds)
    ) + (
        Key("ignore_checks", STRS, "check ids whose FAIL is downgraded to WARN (never \"all\")",
            rules=rules(items={"type": "string", "not": {"const": "all"}})),
        Key("ntp_servers", STRS, "NTP servers the clocks are compared with"),
        Key("qdevice", STR, "address of a corosync-qnetd host (older spelling of "
            "[qdevice] host)"),
    )),
    Key("qdevice", TABLE, "an external vote: corosync-qnetd on a host outside the cluster, "
        "corosync-qdevice on every node (set up after the last node joined)", children=(
            Key("host", STR, "the qnetd host's IP address (TCP 5403 from every node)",
                required=True),
            Key("algorithm", STR, "ffsplit (even node counts) or lms; default: as pvecm picks "
                "by node count", rules=rules(enum=["ffsplit", "lms"])),
            Key("tie_breaker", STR, "lowest (default), highest or a node id"),
            Key("network", STR, "CIDR the nodes reach the qnetd host from (pvecm --network)"),
        )),
    _INSTALLER,
)




# -- checking a parsed file ------------------------------------------------------------------------

def _secret(path: str) -> Finding:
    if path == "installer" or path.startswith(("installer.", "installer[")):
        remedy = ("remove it: the hook copies this file to every node; give the installer's "
                  "root password when the ISO is built (pvestrap iso answer/prepare "
                  "--root-password-file FILE or --root-password-env NAME)")
    else:
        remedy = ("remove it; put the password in a file only root can read and set "
                  "join.password_file, or name an environment variable in join.password_env")
    return fail("answer-secret-refused", "a password may not be written in the answer file", path,
                remedy=remedy)


# Value rules are plan.validate's (with their own codes); a file passed around never holds a
# password; a kebab-case key is unknown, with its snake_case spelling suggested.
STYLE = Style(prefix="answer", separator="_", values=False, respelled=UNKNOWN, secret=_secret)


def check_file(raw: dict[str, Any]) -> tuple[dict[str, Any], list[Finding]]:
    """Type-check a parsed answer file against FORMAT.

    Returns only the well-typed known values (so the plan can still be built and validated for
    the remaining problems) and a finding for every key that is unknown, missing, mistyped or a
    secret.
    """
    return check(raw, FORMAT, STYLE)
