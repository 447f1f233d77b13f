"""datacenter.cfg values, checked exactly as Proxmox VE's schema checks them.

Source: pve-cluster, src/PVE/DataCenterConfig.pm (`$datacenter_schema`, `$next_id_format`,
`pve_verify_mac_prefix`, `write_datacenter_config`), read at pve-cluster 8.1.3 and 9.1.6; the
keyboard list is pve-common's PVE::Tools::kvmkeymaplist. A value PVE refuses is refused here with
the rule that refuses it; a value PVE takes is never refused.
"""

from __future__ import annotations

import re

# `language` enum (identical in 8.1.3 and 9.1.6). PVE drops any other value with a warning on
# every read of the file.
LANGUAGES = ("ar", "ca", "da", "de", "en", "es", "eu", "fa", "fr", "hr", "he", "it", "ja", "ka",
             "kr", "nb", "nl", "nn", "pl", "pt_BR", "ru", "sl", "sv", "tr", "ukr", "zh_CN",
             "zh_TW")
# `mac-prefix` format: a unicast prefix (second hex digit even) of up to three octets; since
# pve-cluster 9.1.2 ("fix #2685: allow 4-bit suffix") a fourth half octet, before that an
# optional trailing colon only.
_HEX = "[A-Fa-f0-9]"
MAC_PREFIX = re.compile(rf"^{_HEX}[02468aceACE](?::{_HEX}{{2}}){{0,2}}(?::{_HEX}?)?$")
MAC_PREFIX_PVE8 = re.compile(rf"^{_HEX}[02468aceACE](?::{_HEX}{{2}}){{0,2}}:?$")
# `next-id` property string: lower is inclusive, upper exclusive; each has its own bounds and
# default, and writing refuses lower > upper after the defaults are filled in (so lower = upper
# is allowed, and a lower above the default upper needs an upper too).
NEXT_ID_LOWER = (100, 1000 * 1000 * 1000 - 1, 100)        # minimum, maximum, default
NEXT_ID_UPPER = (100, 1000 * 1000 * 1000, 1000 * 1000)


def mac_prefix_problem(value: str, pve_major: int | None = None) -> str | None:
    """Why PVE refuses VALUE as mac_prefix (PVE 8's rule when the plan targets PVE 8)."""
    rule = MAC_PREFIX_PVE8 if pve_major is not None and pve_major < 9 else MAC_PREFIX
    if rule.match(value):
        return None
    if re.match(rf"^{_HEX}[13579bdfBDF]", value):
        return "is a multicast prefix (the first octet must be even)"
    half = "" if rule is MAC_PREFIX_PVE8 else " plus an optional half octet (BC:24:11:A)"
    return f"is not a prefix of up to three octets{half}"


def next_id_problems(lower: int | None, upper: int | None) -> list[tuple[str, str]]:
    """(key, problem) for each next-id bound PVE refuses; key "" for the pair."""
    out = []
    for key, value, (low, high, _) in (("lower", lower, NEXT_ID_LOWER),
                                       ("upper", upper, NEXT_ID_UPPER)):
        if value is not None and not low <= value <= high:
            out.append((key, f"next-id {key} {value} is not {low}..{high}"))
    if out or (lower is None and upper is None):
        return out
    low = NEXT_ID_LOWER[2] if lower is None else lower
    high = NEXT_ID_UPPER[2] if upper is None else upper
    if low > high:
        given = "" if lower is not None and upper is not None else " (the default)"
        out.append(("", f"next-id lower {low} is above upper {high}{given}"))
    return out
