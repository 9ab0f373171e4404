"""Captures that begin after their connections opened, made from the samples.

``plain_copy`` turns a TLS sample into the same conversation over plain TCP: each
connection's streams (``tcp_stream_util``, dpkt: an oracle independent of pcapflow's
reassembly) are decrypted with the sample's key log by pcapflow's ``TlsSession``, and
every TLS record's plaintext becomes one TCP segment at that record's time (the time
its bytes became available). So the plain copy holds what the real clients and
servers said (``websockets`` frames, permessage-deflate, HTTP/1.1) with real times,
the HTTP upgrade included.

``cut`` then writes the capture from a point on: from packet ``k`` (its first ``skip``
payload bytes dropped, as when the capture starts inside a segment), with no SYN and
none of what came before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import dpkt
from pcapflow.parsers.tls import KeyLog, TlsSession
from pcapflow.parsers.tls.events import Plaintext

from helpers.tcp_stream_util import read_tcp_streams


@dataclass(frozen=True)
class Segment:
    """One packet of a plain copy: which connection, direction, payload, time."""

    conn: int
    direction: str
    data: bytes
    ts: int


def plain_copy(src: Path, keylog: Path) -> list[Segment]:
    """The TLS connections of ``src`` as plain TCP segments, in time order."""
    keys = KeyLog.from_files([keylog])
    out: list[Segment] = []
    for n, stream in enumerate(read_tcp_streams(str(src))):
        session = TlsSession(n, keys)
        events: list[object] = []
        for direction, data, ts in stream.pieces:
            if direction in ("out", "in"):
                events += session.feed(direction, data, ts, ts)
        events += session.finish(0)
        out += [Segment(n, e.direction, e.data, e.ts_last) for e in events
                if isinstance(e, Plaintext)]
    out.sort(key=lambda s: s.ts)  # stable: each direction's bytes stay in order
    return out


_CLIENT = (bytes([10, 0, 0, 1]), 40000)
_SERVER = (bytes([10, 0, 0, 2]), 9443)


def write_pcap(path: Path, segments: list[Segment], *, handshake: bool,
               skip: int = 0) -> None:
    """``segments`` as Ethernet/IPv4/TCP packets (ns pcap). Connection ``n`` uses
    client port 40000+n. ``handshake``: begin each connection with its SYN;
    ``skip``: bytes dropped from the front of the first segment."""
    seq: dict[tuple[int, str], int] = {}
    with path.open("wb") as w:
        # pcap, nanosecond magic (a float time would lose the nanoseconds)
        w.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, 1))
        for i, s in enumerate(segments):
            data = s.data[skip:] if i == 0 else s.data
            if (s.conn, "out") not in seq:
                for d in ("out", "in"):
                    seq[(s.conn, d)] = 1000 + 7919 * s.conn + (0 if d == "out" else 500000)
                if handshake:
                    out, in_ = seq[(s.conn, "out")], seq[(s.conn, "in")]
                    _write(w, s.conn, "out", b"", out - 1, 0, s.ts - 3000, dpkt.tcp.TH_SYN)
                    _write(w, s.conn, "in", b"", in_ - 1, out, s.ts - 2000,
                           dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
                    _write(w, s.conn, "out", b"", out, in_, s.ts - 1000, dpkt.tcp.TH_ACK)
                if i == 0:
                    seq[(s.conn, s.direction)] += skip
            peer = seq[(s.conn, "in" if s.direction == "out" else "out")]
            _write(w, s.conn, s.direction, data, seq[(s.conn, s.direction)], peer, s.ts,
                   dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH)
            seq[(s.conn, s.direction)] += len(data)


def _write(w: BinaryIO, conn: int, direction: str, data: bytes, seq: int, ack: int,
           ts: int, flags: int) -> None:
    client, server = (_CLIENT[0], _CLIENT[1] + conn), _SERVER
    src, dst = (client, server) if direction == "out" else (server, client)
    tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq & 0xFFFFFFFF, ack=ack, flags=flags,
                       win=65535, data=data)
    ip = dpkt.ip.IP(src=src[0], dst=dst[0], p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
    ip.len = 20 + len(bytes(tcp))
    eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6,
                                 type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
    frame = bytes(eth)
    w.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(frame), len(frame)) + frame)


def write_cut(path: Path, segments: list[Segment], start: int, skip: int = 0) -> None:
    """The capture from segment ``start`` on (``skip`` bytes of it dropped)."""
    write_pcap(path, segments[start:], handshake=start == 0, skip=skip)
