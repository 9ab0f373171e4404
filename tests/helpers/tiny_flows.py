"""Write a capture of many tiny TCP connections, fast (NumPy, no per-packet loop).

How this works: every frame is an Ethernet/IPv4/TCP frame padded to Ethernet's
60-byte minimum, so every pcap record (16-byte header + 60 bytes) has the same
size and the whole capture is one NumPy structured array per block of flows.
Flow ``k``: client 10.x.y.z (a new address every ``PORTS`` flows), ephemeral
port ``20000 + k % PORTS``, one of four servers (192.0.2.1-4, port 443 or 80).
It sends SYN, gets SYN/ACK, ACKs, sends one data byte; then four flows in five
close with FIN (server FIN/ACK, client FIN/ACK, server ACK: 7 packets) and the
fifth is reset by the server (RST/ACK: 5 packets). Flow ``k`` is the ``k``-th
to appear, so its flow id (and tshark's ``tcp.stream``) is ``k``. Flows start ``START_NS``
apart and last ``7 * STEP_NS``, so about ``7 * STEP_NS / START_NS`` overlap.

Usable as a script for the benchmarks: ``python tests/helpers/tiny_flows.py N out.pcap``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
PORTS = 40_000  # client ports per client address
START_NS = 20_000  # between two flows' SYNs
STEP_NS = 30_000  # between two packets of one flow
BLOCK = 100_000  # flows generated (and sorted by time) at once
T0_NS = 1_717_421_400_000_000_000

REC = np.dtype([
    ("ts_sec", "<u4"), ("ts_nsec", "<u4"), ("caplen", "<u4"), ("len", "<u4"),
    ("eth_dst", "V6"), ("eth_src", "V6"), ("eth_type", ">u2"),
    ("ver_ihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("ip_id", ">u2"),
    ("frag", ">u2"), ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"),
    ("src", ">u4"), ("dst", ">u4"),
    ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
    ("off_flags", ">u2"), ("window", ">u2"), ("tcp_csum", ">u2"), ("urg", ">u2"),
    ("payload", "u1"), ("pad", "V5"),
])
assert REC.itemsize == 16 + 60

# Sequence and ACK numbers are relative to the sender's and the peer's ISN.
_FIN_CLOSE = [  # (from client, flags, seq rel, ack rel, payload length)
    (True, SYN, 0, -1, 0),
    (False, SYN | ACK, 0, 1, 0),
    (True, ACK, 1, 1, 0),
    (True, PSH | ACK, 1, 1, 1),
    (False, FIN | ACK, 1, 2, 0),
    (True, FIN | ACK, 2, 2, 0),
    (False, ACK, 2, 3, 0),
]
_RST_CLOSE = [*_FIN_CLOSE[:4], (False, RST | ACK, 1, 2, 0)]
RST_EVERY = 5  # flow k is reset when k % RST_EVERY == RST_EVERY - 1
SERVERS = np.array([0xC0000201, 0xC0000202, 0xC0000203, 0xC0000204], np.uint32)


def packets_per_flow(k: np.ndarray, *, close: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Packets (client to server, server to client) of each flow ``k``."""
    if not close:
        return np.full(k.size, 3), np.full(k.size, 1)
    rst = k % RST_EVERY == RST_EVERY - 1
    return np.where(rst, 3, 4), np.where(rst, 2, 3)


def _block(k0: int, k1: int, close: bool) -> np.ndarray:
    k = np.arange(k0, k1, dtype=np.int64)
    rst = k % RST_EVERY == RST_EVERY - 1
    parts = [(k, _FIN_CLOSE[j], j) for j in range(len(_RST_CLOSE) - 1)]
    j = len(_RST_CLOSE) - 1  # the server's FIN/ACK, or its RST/ACK
    if close:
        parts += [(k[~rst], _FIN_CLOSE[j], j), (k[rst], _RST_CLOSE[j], j)]
        parts += [(k[~rst], _FIN_CLOSE[j], j) for j in range(len(_RST_CLOSE), len(_FIN_CLOSE))]
    recs = []
    for kk, (from_client, flags, seq_rel, ack_rel, plen), j in parts:
        r = np.zeros(kk.size, REC)
        # a block starts after the previous one's last packet: capture order is time order
        t = T0_NS + kk * START_NS + (kk // BLOCK) * len(_FIN_CLOSE) * STEP_NS + j * STEP_NS
        r["ts_sec"], r["ts_nsec"] = t // 1_000_000_000, t % 1_000_000_000
        r["caplen"] = r["len"] = 60
        r["eth_type"] = 0x0800
        r["ver_ihl"], r["tot_len"], r["frag"], r["ttl"], r["proto"] = 0x45, 40 + plen, 0x4000, 64, 6
        client = (0x0A000000 + 1 + kk // PORTS).astype(np.uint32)
        server = SERVERS[kk % SERVERS.size]
        cport = (20000 + kk % PORTS).astype(np.uint16)
        sport = np.where(kk % 2 == 0, 443, 80).astype(np.uint16)
        isn_c = ((kk * 2654435761) & 0xFFFFFFFF).astype(np.uint32)
        isn_s = ((kk * 40503 + 12345) & 0xFFFFFFFF).astype(np.uint32)
        own, peer = (isn_c, isn_s) if from_client else (isn_s, isn_c)
        r["src"], r["dst"] = (client, server) if from_client else (server, client)
        r["sport"], r["dport"] = (cport, sport) if from_client else (sport, cport)
        r["seq"] = own + np.uint32(seq_rel)
        r["ack"] = (peer + np.uint32(ack_rel)) if ack_rel >= 0 else 0
        r["off_flags"] = (5 << 12) | flags
        r["window"] = 65535
        r["payload"] = ord("x") if plen else 0
        recs.append((t, r))
    t = np.concatenate([x[0] for x in recs])
    r = np.empty(t.size, REC)  # (np.concatenate would make the fields native-endian)
    at = 0
    for _t, part in recs:
        r[at : at + part.size] = part
        at += part.size
    return r[np.argsort(t, kind="stable")]


def write(path: Path, n_flows: int, *, close: bool = True) -> int:
    """Write ``n_flows`` tiny connections to ``path`` (pcap, ns); returns packets written.

    ``close=False``: no connection is closed (each stops after its data byte).
    """
    n = 0
    with open(path, "wb") as fh:
        hdr = np.zeros(1, np.dtype([("magic", "<u4"), ("major", "<u2"), ("minor", "<u2"),
                                    ("thiszone", "<i4"), ("sigfigs", "<u4"),
                                    ("snaplen", "<u4"), ("linktype", "<u4")]))
        hdr[0] = (0xA1B23C4D, 2, 4, 0, 0, 65535, 1)
        fh.write(hdr.tobytes())
        for k0 in range(0, n_flows, BLOCK):
            r = _block(k0, min(n_flows, k0 + BLOCK), close)
            fh.write(r.tobytes())
            n += r.size
    return n


if __name__ == "__main__":
    count = write(Path(sys.argv[2]), int(sys.argv[1]))
    print(f"{count} packets")
