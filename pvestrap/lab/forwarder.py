"""The lab's delay line (run as a script in the switch namespace: `forwarder.py CONFIG`).

There is no netem here, so delay and jitter come from user space. A delayed NIC's switch-side
veth peer is taken off its bridge; this process moves every frame between that peer and a relay
veth that sits on the bridge instead, holding each frame until its due time, in both directions.
The node's own NIC never changes, so impairments can change while corosync runs.

Accuracy (1 ms each way must show as 2.0 +- 0.2 ms in ping): a frame's due time counts from the
kernel's receive timestamp, not from when this process woke up; the process sleeps in select() until
shortly before the next due time and then spins, starts each send as much early as a send takes, and
runs with a real-time priority so a busy machine does not make it late. Frames are read and sent
with a virtio-net header (PACKET_VNET_HDR) so checksum-offloaded and GSO frames cross the relay
intact.

Standard library only: this file runs with `-E -s -S` (lab.proc.script), outside the package.
"""

import heapq
import json
import os
import random
import resource
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
FRAME_MAX = 65536 + 64
SPIN_MIN, SPIN_MAX = 0.00003, 0.0004  # spin for as long as select() tends to wake up late
LEAD_MAX = 0.0001  # a send itself takes ~10-20 us; start it that much early
RT_PRIORITY = 10
RT_TIME_LIMIT_US = (500_000, 1_000_000)  # never block for this long at real-time priority
QUEUE_MAX = 100_000


def open_port(ifname):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    try:
        sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernels: outgoing frames are skipped by their packet type below
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


class Relay:
    """All delayed NICs of one lab: sockets, the heap of frames in flight, the send lead."""

    def __init__(self, ports):
        self.peer = {}
        self.delay = {}
        for port in ports:
            a, b = open_port(port["a"]), open_port(port["b"])
            spec = (port["delay_ms"] / 1000.0, port["jitter_ms"] / 1000.0)
            self.peer[a], self.peer[b] = b, a
            self.delay[a] = self.delay[b] = spec
        self.heap = []
        self.seq = 0
        self.lead = 0.0
        self.late = SPIN_MAX  # how late select() woke up, learned
        self.ports = list(self.peer)

    def receive(self, sock):
        while True:
            try:
                data, anc, _flags, addr = sock.recvmsg(FRAME_MAX, 64)
            except BlockingIOError:
                return
            except OSError:
                self.close(sock)  # its interface is gone (the lab is being removed)
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            now = time.time()
            stamp = now
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", payload[:16])
                    stamp = sec + nsec * 1e-9
            if not now - 1.0 < stamp <= now:
                stamp = now
            delay, jitter = self.delay[sock]
            hold = max(0.0, delay + (random.uniform(-jitter, jitter) if jitter else 0.0))
            if len(self.heap) < QUEUE_MAX:
                self.seq += 1
                heapq.heappush(self.heap, (stamp + hold, self.seq, self.peer[sock], data))

    def send_due(self):
        while self.heap and self.heap[0][0] - self.lead <= time.time():
            due, _seq, out, data = heapq.heappop(self.heap)
            start = time.time()
            try:
                out.send(data)
            except OSError:
                continue
            cost = time.time() - start
            self.lead = min(LEAD_MAX, 0.9 * self.lead + 0.1 * cost)

    def close(self, sock):
        peer = self.peer[sock]
        self.ports = [s for s in self.ports if s not in (sock, peer)]
        self.heap = [item for item in self.heap if item[2] not in (sock, peer)]
        heapq.heapify(self.heap)

    def spin(self):
        return min(SPIN_MAX, max(SPIN_MIN, 1.5 * self.late + SPIN_MIN))

    def wait(self):
        """select()'s timeout: until shortly before the next send (None: nothing queued)."""
        if not self.heap:
            return None
        left = self.heap[0][0] - self.lead - time.time()
        return left - self.spin() if left > self.spin() else 0.0

    def run(self):
        while self.ports:
            self.send_due()
            timeout = self.wait()
            start = time.time()
            ready, _, _ = select.select(self.ports, [], [], timeout)
            if not ready and timeout:
                late = max(0.0, time.time() - start - timeout)
                self.late = 0.9 * self.late + 0.1 * late
            for sock in ready:
                self.receive(sock)


def demote(_signum, _frame):
    """Busy for too long without sleeping (a flood of frames): go on at normal priority."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def realtime():
    """Other work on a busy 2-core machine must not make frames late. A frame's hold is short
    and the spin before a send is bounded; RLIMIT_RTTIME turns a flood into SIGXCPU, which
    drops back to normal priority, so the machine is never starved."""
    try:
        signal.signal(signal.SIGXCPU, demote)
        resource.setrlimit(resource.RLIMIT_RTTIME, RT_TIME_LIMIT_US)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except (OSError, AttributeError, ValueError):
        pass


def main():
    with open(sys.argv[1], encoding="utf-8") as fh:
        config = json.load(fh)
    relay = Relay(config["ports"])
    realtime()
    fd = os.environ.get("PVESTRAP_READY_FD")
    if fd:
        os.write(int(fd), b"ready")
        os.close(int(fd))
    relay.run()


if __name__ == "__main__":
    main()
