"""A tiny dpkt-based in-order TCP extractor for tests (the real reassembly lives in
``parsers/tcp``): ``tcp_pieces(path)`` gives each TCP direction's bytes in order,
with the holes it could not fill, as an independent reference."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path


def _packets(path: Path) -> Iterator[tuple[int, int, bytes]]:
    import dpkt

    with path.open("rb") as f:
        magic = f.read(4)
        f.seek(0)
        reader = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        linktype = reader.datalink()
        for ts, buf in reader:
            yield int(float(ts) * 1e9), linktype, buf


def _ip(linktype: int, buf: bytes) -> object:
    import dpkt

    try:
        if linktype == dpkt.pcap.DLT_EN10MB:
            return dpkt.ethernet.Ethernet(buf).data
        if linktype == dpkt.pcap.DLT_LINUX_SLL:
            return dpkt.sll.SLL(buf).data
        if linktype == dpkt.pcap.DLT_NULL:
            return dpkt.loopback.Loopback(buf).data
        if linktype in (dpkt.pcap.DLT_RAW, 101):
            return dpkt.ip.IP(buf) if buf[0] >> 4 == 4 else dpkt.ip6.IP6(buf)
    except (dpkt.UnpackError, IndexError):
        return None
    return None


def tcp_pieces(path: Path) -> dict[tuple[bytes, int, bytes, int], list[tuple[str, int, int]]]:
    """Per TCP direction ``(src, sport, dst, dport)``: in-order ``("data", bytes, ts)``
    and ``("gap", length, ts)`` items. First copy of a byte wins; sequence numbers
    are relative to SYN + 1, or to the first data segment without a SYN."""
    import dpkt

    segments: dict[tuple[bytes, int, bytes, int], list[tuple[int, bytes, int]]] = defaultdict(list)
    isn: dict[tuple[bytes, int, bytes, int], int] = {}
    for ts, linktype, buf in _packets(path):
        ip = _ip(linktype, buf)
        tcp = getattr(ip, "data", None)
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        key = (bytes(ip.src), tcp.sport, bytes(ip.dst), tcp.dport)  # type: ignore[attr-defined]
        if tcp.flags & dpkt.tcp.TH_SYN:
            isn[key] = (tcp.seq + 1) & 0xFFFFFFFF
        if tcp.data:
            segments[key].append((tcp.seq, bytes(tcp.data), ts))
    return {key: _in_order(isn.get(key, segs[0][0]), segs) for key, segs in segments.items()}


def _in_order(base: int, segs: list[tuple[int, bytes, int]]) -> list[tuple[str, object, int]]:
    pending: dict[int, tuple[bytes, int]] = {}
    out: list[tuple[str, object, int]] = []
    nxt = 0
    for seq, data, ts in segs:
        rel = (seq - base) & 0xFFFFFFFF
        if rel < 1 << 31:
            pending.setdefault(rel, (data, ts))
        nxt = _deliver(pending, nxt, out)
    for rel in sorted(pending):  # what is left sits behind holes
        data, ts = pending.pop(rel)
        if rel + len(data) <= nxt:
            continue
        if rel > nxt:
            out.append(("gap", rel - nxt, ts))
            nxt = rel
        out.append(("data", data[nxt - rel :], ts))
        nxt = rel + len(data)
    return out  # type: ignore[return-value]


def _deliver(pending: dict[int, tuple[bytes, int]], nxt: int, out: list) -> int:
    while True:
        ready = [r for r in pending if r <= nxt < r + len(pending[r][0])]
        for r in [r for r in pending if r + len(pending[r][0]) <= nxt]:
            del pending[r]  # all old bytes: a retransmission
        if not ready:
            return nxt
        rel = min(ready)
        data, ts = pending.pop(rel)
        out.append(("data", data[nxt - rel :], ts))
        nxt = rel + len(data)
