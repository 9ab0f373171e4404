"""Helpers for the capture-reader tests: crafted files and independent readers.

Two independent ways to make files: scapy's ``PcapWriter`` / ``PcapNgWriter``
(µs/ns, both byte orders, one or more interfaces), and ``PcapngBuilder`` which
packs pcapng blocks with ``struct`` for what scapy cannot write (if_tsresol,
if_tsoffset, SPB, obsolete PB, DSB, unknown blocks, big-endian and several
sections). Each builder keeps the records it wrote as ``Expected`` so tests
compare against what was written, and ``dpkt_records`` re-reads a file with
dpkt's own header classes as a third opinion.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO

import dpkt
import numpy as np
from pcapflow.parsers.capture import CaptureReader, open_capture
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Expected:
    """One packet as written: what the reader must give back."""

    ts_ns: int
    caplen: int
    wirelen: int
    data: bytes
    interface: int = 0
    linktype: int = 1


@dataclass
class ReadResult:
    """Everything a full read produced, columns concatenated across chunks."""

    reader: CaptureReader
    chunks: int
    ts_ns: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    interface: np.ndarray
    linktype: np.ndarray
    index: np.ndarray
    file_offset: np.ndarray
    data: list[bytes]
    secrets: list[tuple[int, bytes]]
    anomalies: list

    def as_expected(self) -> list[Expected]:
        return [
            Expected(int(t), int(c), int(w), d, int(i), int(lt))
            for t, c, w, d, i, lt in zip(
                self.ts_ns, self.caplen, self.wirelen, self.data, self.interface,
                self.linktype, strict=True,
            )
        ]  # fmt: skip


def read_all(source: str | Path | BinaryIO, **kw: int) -> ReadResult:
    """Read a whole capture with ``open_capture`` and concatenate every chunk."""
    cols: dict[str, list[np.ndarray]] = {
        k: [] for k in ("ts_ns", "caplen", "wirelen", "interface", "linktype", "index",
                        "file_offset")
    }  # fmt: skip
    data: list[bytes] = []
    secrets: list[tuple[int, bytes]] = []
    anomalies: list = []
    chunks = 0
    with open_capture(source, **kw) as cap:
        for chunk in cap:
            chunks += 1
            assert chunk.offset.shape == chunk.caplen.shape == chunk.ts_ns.shape
            for k in cols:
                cols[k].append(getattr(chunk, k))
            data.extend(chunk.packet(i) for i in range(len(chunk)))
            secrets.extend(chunk.secrets)
            anomalies.extend(chunk.anomalies)
    cat = {k: np.concatenate(v) if v else np.zeros(0, np.int64) for k, v in cols.items()}
    return ReadResult(reader=cap, chunks=chunks, data=data, secrets=secrets,
                      anomalies=anomalies, **cat)  # fmt: skip


# --- packets -------------------------------------------------------------------------
def sample_packets(n: int, seed: int = 1) -> list[Ether]:
    """``n`` Ethernet/IPv4 TCP and UDP packets of varied payload sizes (0..1400)."""
    rng = np.random.default_rng(seed)
    pkts = []
    for i in range(n):
        size = int(rng.choice([0, 1, 7, 60, 200, 1400]))
        payload = Raw(bytes(rng.integers(0, 256, size, dtype=np.uint8)))
        l4 = TCP(sport=40000 + i, dport=443, seq=i) if i % 3 else UDP(sport=5000, dport=53)
        pkts.append(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / l4 / payload)
    return pkts


def times_ns(n: int, start_s: int = 1_700_000_000, seed: int = 2) -> list[int]:
    """Timestamps with sub-µs digits, and one step back (capture order != time order)."""
    rng = np.random.default_rng(seed)
    t = start_s * NS + np.cumsum(rng.integers(1, 5_000_000, n))
    t = [int(x) for x in t]
    if n > 3:
        t[2], t[3] = t[3], t[2]
    return t


def write_pcap_scapy(
    path: Path, pkts: list[Ether], ts: list[int], *, nano: bool, endianness: str,
    snaplen: int = 65535,
) -> list[Expected]:  # fmt: skip
    """Write with scapy's PcapWriter; return what the file holds."""
    unit = 1 if nano else 1000
    out = []
    with PcapWriter(str(path), nano=nano, endianness=endianness, snaplen=snaplen, sync=True) as w:
        for p, t in zip(pkts, ts, strict=True):
            p.time = Decimal(t // unit * unit) / NS  # what the file can hold
            raw = bytes(p)
            w.write(p)
            out.append(Expected(t // unit * unit, len(raw), len(raw), raw))
    return out


def write_pcapng_scapy(path: Path, pkts: list[Ether], ts: list[int]) -> list[Expected]:
    """Write with scapy's PcapNgWriter (µs, one IDB per interface name)."""
    out = []
    with PcapNgWriter(str(path)) as w:
        for i, (p, t) in enumerate(zip(pkts, ts, strict=True)):
            p.time = Decimal(t // 1000) / 1_000_000
            p.sniffed_on = name = "eth1" if i % 4 == 3 else "eth0"
            raw = bytes(p)
            w.write(p)
            # scapy numbers interfaces itself (its first IDB may be unnamed)
            iface = w.interfaces2id[name.encode()]
            out.append(Expected(t // 1000 * 1000, len(raw), len(raw), raw, iface))
    return out


# --- pcapng by hand --------------------------------------------------------------------
class PcapngBuilder:
    """Packs pcapng blocks with struct and records the expected packets."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.expected: list[Expected] = []
        self.secrets: list[tuple[int, bytes]] = []
        self.e = "<"
        self._ifs: list[tuple[int, int, Decimal, int, int]] = []  # per section
        self._n_global = 0
        self._last_ts = 0

    def block(self, btype: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        total = 12 + len(body)
        blk = struct.pack(self.e + "II", btype, total) + body + struct.pack(self.e + "I", total)
        self.parts.append(blk)
        return blk

    def option(self, code: int, value: bytes) -> bytes:
        return struct.pack(self.e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)

    def shb(self, *, big: bool = False) -> None:
        self.e = ">" if big else "<"
        body = struct.pack(self.e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
        body += self.option(4, b"pcapflow tests") + self.option(0, b"")
        self.block(0x0A0D0D0A, body)
        self._ifs = []

    def idb(self, linktype: int, *, snaplen: int = 0, tsresol: int | None = None,
            tsoffset: int = 0, name: str | None = None) -> int:  # fmt: skip
        opts = b""
        if name is not None:
            opts += self.option(2, name.encode())
        if tsresol is not None:
            opts += self.option(9, bytes([tsresol]))
        if tsoffset:
            opts += self.option(14, struct.pack(self.e + "q", tsoffset))
        if opts:
            opts += self.option(0, b"")
        self.block(1, struct.pack(self.e + "HHI", linktype, 0, snaplen) + opts)
        res = 6 if tsresol is None else tsresol
        unit = Decimal(2) ** -(res & 0x7F) if res & 0x80 else Decimal(10) ** -(res & 0x7F)
        self._ifs.append((linktype, snaplen, unit, tsoffset, self._n_global))
        self._n_global += 1
        return len(self._ifs) - 1

    def _ts(self, iface: int, ticks: int) -> int:
        _, _, unit, off, _ = self._ifs[iface]
        # exact: floor(ticks * unit * 1e9) + offset seconds
        exact = Decimal(ticks) * unit * NS
        return int(exact.to_integral_value(rounding="ROUND_FLOOR")) + off * NS

    def epb(self, iface: int, ticks: int, data: bytes, *, wirelen: int | None = None,
            btype: int = 6) -> None:  # fmt: skip
        wl = len(data) if wirelen is None else wirelen
        hi, lo = ticks >> 32, ticks & 0xFFFFFFFF
        if btype == 6:
            head = struct.pack(self.e + "IIIII", iface, hi, lo, len(data), wl)
        else:  # obsolete Packet Block: 16-bit interface id + drops count
            head = struct.pack(self.e + "HHIIII", iface, 0, hi, lo, len(data), wl)
        self.block(btype, head + data + self.option(1, b"comment") + self.option(0, b""))
        lt, _, _, _, gid = self._ifs[iface]
        self._last_ts = self._ts(iface, ticks)
        self.expected.append(Expected(self._last_ts, len(data), wl, data, gid, lt))

    def spb(self, data: bytes, *, wirelen: int | None = None) -> None:
        wl = len(data) if wirelen is None else wirelen
        self.block(3, struct.pack(self.e + "I", wl) + data)
        lt, snap, _, _, gid = self._ifs[0]
        cap = min(wl, len(data), snap or len(data))
        self.expected.append(Expected(self._last_ts, cap, wl, data[:cap], gid, lt))

    def dsb(self, stype: int, secret: bytes) -> None:
        self.block(0x0A, struct.pack(self.e + "II", stype, len(secret)) + secret)
        self.secrets.append((stype, secret))

    def bytes(self) -> bytes:
        return b"".join(self.parts)


# --- an independent reader -------------------------------------------------------------
def dpkt_records(path: Path) -> list[Expected]:
    """Walk a pcap or pcapng file with dpkt's header classes.

    Exact integer times (dpkt's Reader gives floats, and reads only the first
    pcapng interface); pcap records and EPBs only (no SPB or obsolete PB).
    """
    buf = path.read_bytes()
    if buf[:4] == b"\x0a\x0d\x0d\x0a":
        return _dpkt_pcapng(buf)
    fh = dpkt.pcap.FileHdr(buf[:24])
    le = fh.magic in (dpkt.pcap.PMUDPCT_MAGIC, dpkt.pcap.PMUDPCT_MAGIC_NANO)
    if le:
        fh = dpkt.pcap.LEFileHdr(buf[:24])
    unit = 1 if fh.magic in (dpkt.pcap.TCPDUMP_MAGIC_NANO, dpkt.pcap.PMUDPCT_MAGIC_NANO) else 1000
    hdr_cls = dpkt.pcap.LEPktHdr if le else dpkt.pcap.PktHdr
    pos, out = 24, []
    while pos + 16 <= len(buf):
        h = hdr_cls(buf[pos : pos + 16])
        data = buf[pos + 16 : pos + 16 + h.caplen]
        out.append(Expected(h.tv_sec * NS + h.tv_usec * unit, h.caplen, h.len, data, 0,
                            fh.linktype))  # fmt: skip
        pos += 16 + h.caplen
    return out


def _dpkt_pcapng(buf: bytes) -> list[Expected]:
    ifs: list[tuple[int, int, int, int]] = []  # (linktype, tsresol byte, offset s, global id)
    n_global = 0
    pos, out = 0, []
    while pos + 12 <= len(buf):
        if buf[pos : pos + 4] == b"\x0a\x0d\x0d\x0a":  # new section: byte order, interfaces
            le = buf[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a"
            e = "<" if le else ">"
            ifs = []
        btype, blen = struct.unpack_from(e + "II", buf, pos)
        blk = buf[pos : pos + blen]
        if btype == 1:
            idb = (dpkt.pcapng.InterfaceDescriptionBlockLE if le
                   else dpkt.pcapng.InterfaceDescriptionBlock)(blk)  # fmt: skip
            res, off = 6, 0
            for opt in idb.opts:
                if opt.code == 9:
                    res = opt.data[0]
                elif opt.code == 14:
                    off = struct.unpack(e + "q", opt.data)[0]
            ifs.append((idb.linktype, res, off, n_global))
            n_global += 1
        elif btype == 6:
            epb = (dpkt.pcapng.EnhancedPacketBlockLE if le
                   else dpkt.pcapng.EnhancedPacketBlock)(blk)  # fmt: skip
            lt, res, off, gid = ifs[epb.iface_id]
            ticks = (epb.ts_high << 32) | epb.ts_low
            ts = (ticks * NS >> (res & 0x7F)) if res & 0x80 else ticks * NS // 10 ** res
            out.append(Expected(ts + off * NS, epb.caplen, epb.pkt_len, bytes(epb.pkt_data),
                                gid, lt))  # fmt: skip
        pos += blen
    return out


# --- cutting a capture -------------------------------------------------------------
_PCAP_MAGICS_LE = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_PACKET_BLOCKS = (2, 3, 6)  # obsolete PB, SPB, EPB


def drop_first_packets(src: Path, dst: Path, k: int) -> None:
    """Write ``src`` without its first ``k`` packets, as if the capture began there.

    pcap: the file header, then the records from packet ``k`` on. pcapng: every
    non-packet block (section and interface descriptions, Decryption Secrets
    Blocks) is kept where it was; packet blocks are dropped until ``k`` are gone.
    """
    buf = src.read_bytes()
    out: list[bytes] = []
    n = 0
    if buf[:4] == _PCAPNG_SHB:
        order = "<" if buf[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        pos = 0
        while pos < len(buf):
            btype, blen = struct.unpack_from(order + "II", buf, pos)
            block, pos = buf[pos : pos + blen], pos + blen
            if btype in _PCAPNG_PACKET_BLOCKS:
                n += 1
                if n <= k:
                    continue
            out.append(block)
    else:
        order = "<" if buf[:4] in _PCAP_MAGICS_LE else ">"
        out.append(buf[:24])
        pos = 24
        while pos < len(buf):
            incl = struct.unpack_from(order + "I", buf, pos + 8)[0]
            record, pos = buf[pos : pos + 16 + incl], pos + 16 + incl
            n += 1
            if n > k:
                out.append(record)
    dst.write_bytes(b"".join(out))
