"""SSH's ProxyCommand into a lab node: relay stdin/stdout to a TCP port on the node's loopback.

Run inside the node's network namespace (`nsenter -t HOLDER -n python3 -I -S tunnel.py 22`), so
the connection goes from the node to its own sshd and nothing in the root namespace ever sends
to a lab address. Standalone (standard library only), like the lab's other scripts.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 65536


def relay(port: int) -> int:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, CHUNK)
                if not data:
                    sel.unregister(stdin)
                    sock.shutdown(socket.SHUT_WR)
                    open_ends -= 1
                else:
                    sock.sendall(data)
            else:
                data = sock.recv(CHUNK)
                if not data:
                    return 0
                view = memoryview(data)
                while view:
                    view = view[os.write(stdout, view):]
    return 0


if __name__ == "__main__":
    raise SystemExit(relay(int(sys.argv[1]) if len(sys.argv) > 1 else 22))
