"""A lossy Ethernet relay between two veth ends, for captures with real TCP trouble.

How this works: the kernel here has no netem, so the lossy scenario runs client and
server in two namespaces whose veth peers (`rly-c`, `rly-s`) both sit in a third,
relay namespace. This process bridges the two peers at layer 2 with raw AF_PACKET
sockets: every frame read on one side is written to the other after a fixed delay
(DELAY_S). IPv4 TCP frames other than SYNs are impaired with a seeded RNG:
dropped (DROP_P), sent twice (DUP_P) or held back by REORDER_EXTRA_S so later
segments overtake them (REORDER_P). ARP and everything else pass untouched.

veth leaves checksums to "offload", so frames read here may carry a partial TCP
checksum; the relay recomputes the IPv4 header and TCP checksums before
forwarding, or the receiving stack would drop them. The loop is bounded: it stops
on SIGTERM or after MAX_RUN_S, and the pending queue never exceeds MAX_PENDING.
"""

from __future__ import annotations

import heapq
import random
import select
import signal
import socket
import struct
import time
from array import array

CLIENT_SIDE = "rly-c"
SERVER_SIDE = "rly-s"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sll_pkttype of frames this host itself sent
SNAPLEN = 65_535  # largest frame read from a veth (MTU 1500, so ample)
DELAY_S = 0.001  # one-way delay added to every frame
DROP_P = 0.02
DUP_P = 0.01
REORDER_P = 0.02
REORDER_EXTRA_S = 0.003  # a reordered segment waits this much longer
MAX_PENDING = 10_000  # cap on frames waiting in the delay queue
MAX_RUN_S = 600.0  # hard stop, in case nobody sends SIGTERM

ETH_HDR = struct.Struct("!6s6sH")  # dst, src, ethertype
ETHERTYPE_IPV4 = 0x0800
IPPROTO_TCP = 6
TCP_SYN = 0x02


def _ones_complement_sum(data: bytes) -> int:
    """RFC 1071 sum, computed on native-endian 16-bit words (the sum is order-free)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(array("H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _checksum(data: bytes) -> bytes:
    return struct.pack("=H", ~_ones_complement_sum(data) & 0xFFFF)


def fix_checksums(frame: bytearray) -> None:
    """Recompute the IPv4 header and TCP checksums of an Ethernet/IPv4/TCP frame."""
    ihl = (frame[14] & 0x0F) * 4
    total_len = struct.unpack_from("!H", frame, 16)[0]
    ip = 14
    frame[ip + 10:ip + 12] = b"\0\0"
    frame[ip + 10:ip + 12] = _checksum(bytes(frame[ip:ip + ihl]))
    tcp = ip + ihl
    seg_len = total_len - ihl
    pseudo = bytes(frame[ip + 12:ip + 20]) + struct.pack("!BBH", 0, IPPROTO_TCP, seg_len)
    frame[tcp + 16:tcp + 18] = b"\0\0"
    frame[tcp + 16:tcp + 18] = _checksum(pseudo + bytes(frame[tcp:tcp + seg_len]))


def tcp_flags(frame: bytes) -> int | None:
    """TCP flags of an Ethernet/IPv4/TCP frame, None for anything else."""
    if len(frame) < 54 or ETH_HDR.unpack_from(frame)[2] != ETHERTYPE_IPV4:
        return None
    if frame[23] != IPPROTO_TCP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    return frame[14 + ihl + 13]


class Relay:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.socks = {name: self._open(name) for name in (CLIENT_SIDE, SERVER_SIDE)}
        self.peer = {CLIENT_SIDE: SERVER_SIDE, SERVER_SIDE: CLIENT_SIDE}
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.counter = 0
        self.stats = {"forwarded": 0, "dropped": 0, "duplicated": 0, "reordered": 0}
        self.running = True

    @staticmethod
    def _open(name: str) -> socket.socket:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((name, 0))
        sock.setblocking(False)
        return sock

    def _schedule(self, due: float, out: str, frame: bytes) -> None:
        if len(self.queue) >= MAX_PENDING:
            self.stats["dropped"] += 1
            return
        self.counter += 1
        heapq.heappush(self.queue, (due, self.counter, out, frame))

    def on_frame(self, came_from: str, frame: bytes) -> None:
        out, now = self.peer[came_from], time.monotonic()
        flags = tcp_flags(frame)
        if flags is None:
            self._schedule(now + DELAY_S, out, frame)
            return
        buf = bytearray(frame)
        fix_checksums(buf)
        fixed = bytes(buf)
        roll = self.rng.random() if not flags & TCP_SYN else 1.0
        if roll < DROP_P:
            self.stats["dropped"] += 1
            return
        if roll < DROP_P + DUP_P:
            self.stats["duplicated"] += 1
            self._schedule(now + DELAY_S + 0.0002, out, fixed)
        elif roll < DROP_P + DUP_P + REORDER_P:
            self.stats["reordered"] += 1
            self._schedule(now + DELAY_S + REORDER_EXTRA_S, out, fixed)
            return
        self._schedule(now + DELAY_S, out, fixed)

    def flush_due(self) -> None:
        now = time.monotonic()
        while self.queue and self.queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(self.queue)
            self.socks[out].send(frame)
            self.stats["forwarded"] += 1

    def read_ready(self, timeout: float) -> None:
        by_fd = {s.fileno(): name for name, s in self.socks.items()}
        ready, _, _ = select.select(list(self.socks.values()), [], [], timeout)
        for sock in ready:
            name = by_fd[sock.fileno()]
            for _ in range(64):  # bounded burst per wake-up
                try:
                    frame, addr = sock.recvfrom(SNAPLEN)
                except BlockingIOError:
                    break
                if addr[2] != PACKET_OUTGOING:
                    self.on_frame(name, frame)

    def run(self) -> None:
        deadline = time.monotonic() + MAX_RUN_S
        while self.running and time.monotonic() < deadline:
            wait = 0.05
            if self.queue:
                wait = max(0.0, min(wait, self.queue[0][0] - time.monotonic()))
            self.read_ready(wait)
            self.flush_due()


def main(seed: int) -> None:
    relay = Relay(seed)

    def stop(signum: int, frame: object) -> None:
        relay.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("READY", flush=True)
    relay.run()
    print(f"relay stats: {relay.stats}", flush=True)
