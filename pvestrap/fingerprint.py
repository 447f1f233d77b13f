"""The SHA-256 fingerprint of the certificate a Proxmox VE node presents on its API port: the one
fetch (the join preflight, the wizard and the pve backend's join all call it).

No CA check on purpose: the fingerprint IS the check, compared with the plan's the way `pvecm
add` compares it (PVE::APIClient::LWP's cached_fingerprints). The format is what pvecm and
`pvenode cert info` print: 32 upper-case hex pairs joined by colons.
"""

from __future__ import annotations

import hashlib
import socket

from pvestrap.errors import OperationFailed

API_PORT = 8006
TIMEOUT = 10.0  # a TLS handshake with a busy pveproxy; a closed port fails at once anyway


def format_fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def fetch_fingerprint(host: str, port: int = API_PORT, timeout: float = TIMEOUT) -> str:
    """The fingerprint of the certificate HOST:PORT presents; OperationFailed
    (fingerprint-unreachable, naming host, port and the cause) when there is none to read."""
    import ssl  # here: every preflight imports this module, few fetch (ssl is ~4 ms to load)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with context.wrap_socket(sock, server_hostname=None) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:  # timeouts are OSErrors
        raise _unreachable(host, port, f"{type(exc).__name__}: {exc}") from exc
    if not der:
        raise _unreachable(host, port, "it presented no certificate")
    return format_fingerprint(der)


def _unreachable(host: str, port: int, why: str) -> OperationFailed:
    return OperationFailed(f"cannot fetch the certificate of {host}:{port}: {why}",
                           code="fingerprint-unreachable",
                           remedy=f"check that the node is up, pveproxy runs and TCP {port} is "
                                  "open from here")
