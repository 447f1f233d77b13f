"""The Proxmox GUI's "Join Information": base64 of a JSON object the cluster node shows.

pve-manager builds it as `{ipAddress, fingerprint, peerLinks, ring_addr, totem}`: the preferred
node's API address and certificate fingerprint, that node's address on each link (`peerLinks`,
keyed by link number), the same addresses as a list (`ring_addr`), and the totem section of
corosync.conf (cluster_name, interface -> linknumber). Accepting the blob saves typing the
fingerprint, and its totem tells us which links the existing cluster really has.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from pvestrap.errors import UserError
from pvestrap.plan import FINGERPRINT_RE

_REMEDY = ("copy it again from the cluster node: Datacenter > Cluster > Join Information > "
           "Copy Information")


@dataclass(frozen=True)
class JoinInfo:
    address: str
    fingerprint: str
    peer_links: Mapping[int, str] = field(default_factory=dict)  # link number -> peer address
    cluster_name: str | None = None
    link_numbers: tuple[int, ...] = ()  # the links the cluster's totem section declares


def decode(blob: str) -> JoinInfo:
    """Decode a pasted Join Information blob; garbage raises UserError, never anything else."""
    data = _json_object(blob)
    address = data.get("ipAddress")
    if not isinstance(address, str) or not address.strip():
        raise _bad("it has no ipAddress")
    fingerprint = data.get("fingerprint")
    if not isinstance(fingerprint, str) or not FINGERPRINT_RE.match(fingerprint):
        raise _bad("its fingerprint is not 32 colon-separated hex pairs")
    totem = data.get("totem")
    if not isinstance(totem, dict):
        raise _bad("it has no totem section")
    name = totem.get("cluster_name")
    return JoinInfo(
        address=address.strip(),
        fingerprint=fingerprint,
        peer_links=_peer_links(data.get("peerLinks")),
        cluster_name=name if isinstance(name, str) else None,
        link_numbers=_link_numbers(totem.get("interface")),
    )


def _bad(why: str) -> UserError:
    return UserError(f"the join information is not usable: {why}", code="join-info-invalid",
                     remedy=_REMEDY)


def _json_object(blob: str) -> dict[str, Any]:
    if not isinstance(blob, str):
        raise _bad("it is not text")
    text = "".join(blob.split())  # pasted blobs get wrapped
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("it is not base64") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("it does not decode to JSON") from None
    if not isinstance(data, dict):
        raise _bad("it does not decode to a JSON object")
    return data


def _number(value: Any) -> int | None:
    """Link numbers arrive as strings from the API ("0") or as numbers; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 3:
        return int(value)
    return None


def _peer_links(value: Any) -> dict[int, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad("peerLinks is not an object")
    out: dict[int, str] = {}
    for key, address in value.items():
        number = _number(key)
        if number is None or not isinstance(address, str):
            raise _bad(f"peerLinks has an entry that is not link number -> address "
                       f"({str(key)[:20]!r})")
        out[number] = address
    return out


def _link_numbers(interfaces: Any) -> tuple[int, ...]:
    if interfaces is None:
        return ()
    if not isinstance(interfaces, dict):
        raise _bad("totem.interface is not an object")
    numbers = set()
    for key, iface in interfaces.items():
        raw = iface.get("linknumber", iface.get("ringnumber", key)) if isinstance(iface, dict) \
            else key
        number = _number(raw)
        if number is None:
            raise _bad(f"totem.interface has an entry without a link number ({str(key)[:20]!r})")
        numbers.add(number)
    return tuple(sorted(numbers))
