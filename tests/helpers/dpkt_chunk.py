"""Test helper: build a ``PacketChunk`` from dpkt's reading of a capture.

dpkt is the independent oracle here: records come from dpkt's reader (not ours),
so header decoding can be checked on its own.
"""

from __future__ import annotations

import dpkt
import numpy as np
from pcapflow.parsers.capture.chunk import PacketChunk


def _ns(ts: float) -> int:
    ns = round(float(ts) * 1e9)
    return ns if -(1 << 63) <= ns < (1 << 63) else 0


def records(path: str) -> tuple[list[tuple[int, bytes]], int]:
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(0)
        r = dpkt.pcapng.Reader(f) if head == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        recs = [(_ns(ts), bytes(buf)) for ts, buf in r]
        return recs, r.datalink()


def chunk_of(recs: list[tuple[int, bytes]], linktype: int) -> PacketChunk:
    lens = np.array([len(b) for _, b in recs], np.int64)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if recs else lens
    data = np.frombuffer(b"".join(b for _, b in recs), np.uint8) if recs else np.zeros(0, np.uint8)
    n = len(recs)
    return PacketChunk(
        data=data, offset=offs, caplen=lens, wirelen=lens.copy(),
        ts_ns=np.array([t for t, _ in recs], np.int64), linktype=np.full(n, linktype, np.int32),
        interface=np.zeros(n, np.int32), index=np.arange(n, dtype=np.int64),
        file_offset=np.zeros(n, np.int64),
    )
