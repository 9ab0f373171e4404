"""Test-only TCP stream extractor built on dpkt (an oracle, not the product's reassembly).

Groups packets by 4-tuple (a new SYN on a used tuple starts a new connection),
orders each direction by sequence number, drops retransmitted and duplicate
bytes (first copy wins) and returns in-order pieces *in capture order*, so a
session parser sees both directions interleaved as they happened. Good enough
for the clean public captures; bytes after a hole that never fills are left out
(no gap is reported: the product's reassembly in ``parsers/tcp`` does that).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

import dpkt

Piece = tuple[str, bytes, int]  # (direction "out"/"in", data, ts_ns) or ("gap-out", b"", length)

_AF_INET6 = {10, 24, 28, 30}  # Linux, BSDs, macOS loopback AF_INET6 values


@dataclass
class _Half:
    next_seq: int | None = None
    pending: dict[int, tuple[bytes, int]] = field(default_factory=dict)


@dataclass
class TcpStream:
    """One TCP connection: endpoints and the in-order pieces of both directions."""

    client: tuple[str, int]
    server: tuple[str, int]
    syn_seen: bool
    pieces: list[Piece] = field(default_factory=list)
    halves: dict[str, _Half] = field(default_factory=lambda: {"out": _Half(), "in": _Half()})

    def data(self, direction: str) -> bytes:
        return b"".join(p[1] for p in self.pieces if p[0] == direction)


def _ip_from_link(linktype: int, buf: bytes) -> dpkt.Packet | None:
    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            ip = dpkt.ethernet.Ethernet(buf).data
        elif linktype in (dpkt.pcap.DLT_NULL, dpkt.pcap.DLT_LOOP):
            family = struct.unpack("<I" if linktype == dpkt.pcap.DLT_NULL else ">I", buf[:4])[0]
            if family > 0xFFFF:
                family = struct.unpack(">I", buf[:4])[0]
            ip = dpkt.ip6.IP6(buf[4:]) if family in _AF_INET6 else dpkt.ip.IP(buf[4:])
        elif linktype == 113:  # Linux SLL
            ip = dpkt.sll.SLL(buf).data
        elif linktype == 276:  # Linux SLL2: protocol at 0, header 20 bytes
            proto = struct.unpack(">H", buf[:2])[0]
            ip = dpkt.ip6.IP6(buf[20:]) if proto == 0x86DD else dpkt.ip.IP(buf[20:])
        elif linktype in (12, 14, 101, 228, 229):  # raw IP
            ip = dpkt.ip6.IP6(buf) if buf[0] >> 4 == 6 else dpkt.ip.IP(buf)
        else:
            return None
    except (dpkt.UnpackError, struct.error, IndexError):
        return None
    return ip if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) else None


def _addr(ip: dpkt.Packet, src: bool) -> str:
    raw = ip.src if src else ip.dst
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _reader(fh):  # type: ignore[no-untyped-def]
    magic = fh.read(4)
    fh.seek(0)
    if magic == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(fh)
    return (
        dpkt.pcap.UniversalReader(fh)
        if hasattr(dpkt.pcap, "UniversalReader")
        else dpkt.pcap.Reader(fh)
    )


def read_tcp_streams(path: str) -> list[TcpStream]:
    """Every TCP connection in the capture, in order of first packet."""
    streams: list[TcpStream] = []
    by_tuple: dict[tuple, TcpStream] = {}
    with open(path, "rb") as fh:
        reader = _reader(fh)
        linktype = reader.datalink()
        for ts, buf in reader:
            ip = _ip_from_link(linktype, buf)
            if ip is None or not isinstance(ip.data, dpkt.tcp.TCP):
                continue
            _on_segment(ip, ip.data, round(float(ts) * 1e9), streams, by_tuple)
    return streams


def _on_segment(ip, tcp, ts_ns: int, streams: list[TcpStream], by_tuple: dict) -> None:  # type: ignore[no-untyped-def]
    src, dst = (_addr(ip, True), tcp.sport), (_addr(ip, False), tcp.dport)
    key = frozenset((src, dst))
    syn = bool(tcp.flags & dpkt.tcp.TH_SYN)
    ack = bool(tcp.flags & dpkt.tcp.TH_ACK)
    stream = by_tuple.get(key)
    if syn and not ack and (stream is None or stream.pieces or stream.client != src):
        stream = None  # a fresh connection (or port reuse)
    if stream is None:
        if syn and not ack:
            client, server = src, dst
        elif syn:
            client, server = dst, src
        else:  # no SYN seen: the ephemeral (higher) port is the client
            client, server = (src, dst) if src[1] > dst[1] else (dst, src)
        stream = TcpStream(client=client, server=server, syn_seen=syn)
        streams.append(stream)
        by_tuple[key] = stream
    direction = "out" if src == stream.client else "in"
    half = stream.halves[direction]
    if syn:
        half.next_seq = (tcp.seq + 1) & 0xFFFFFFFF
        return
    payload = bytes(tcp.data)
    if not payload:
        return
    if half.next_seq is None:
        half.next_seq = tcp.seq
    half.pending.setdefault(tcp.seq, (payload, ts_ns))
    _drain(stream, direction, half)


def _drain(stream: TcpStream, direction: str, half: _Half) -> None:
    progressed = True
    while progressed and half.pending:
        progressed = False
        assert half.next_seq is not None
        for seq in list(half.pending):
            data, ts = half.pending[seq]
            rel = (seq - half.next_seq) & 0xFFFFFFFF
            if rel >= 0x80000000:  # starts before next_seq
                behind = 0x100000000 - rel
                del half.pending[seq]
                if behind < len(data):
                    stream.pieces.append((direction, data[behind:], ts))
                    half.next_seq = (half.next_seq + len(data) - behind) & 0xFFFFFFFF
                    progressed = True
            elif rel == 0:
                del half.pending[seq]
                stream.pieces.append((direction, data, ts))
                half.next_seq = (half.next_seq + len(data)) & 0xFFFFFFFF
                progressed = True
