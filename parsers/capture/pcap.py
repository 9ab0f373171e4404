"""Classic libpcap files (draft-ietf-opsawg-pcap): file header and record scan.

How this works: the 24-byte file header fixes the byte order (from the magic
number), the timestamp unit (µs or ns) and the link type for the whole file.
After it come records, each a 16-byte header (ts_sec, ts_usec-or-nsec, caplen,
len) followed by caplen bytes. ``scan_pcap_records`` walks as many whole records
as one buffer holds in a compiled loop; a record cut by the end of the buffer is
left for the next read.

A record's length field is the only way to find the next record, so a caplen we
cannot believe (over 256 KiB, or over the snaplen *and* over the wire length)
ends the scan with an anomaly instead of reading garbage.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..jitload import kernel
from ..prefetch import prefetch
from ._scan import (
    CAPLEN_TOO_LARGE,
    FATAL_CODES,
    MAX_CAPLEN,
    NEED_MORE,
    NS_PER_S,
    OUT_FULL,
    PREFETCH_BYTES,
    ChunkNotes,
    PacketColumns,
    rd_u32,
)

# --- magic numbers (as read big-endian from the first 4 bytes) ---------------------
MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
MAGIC_USEC_MODIFIED = 0xA1B2CD34  # Alexey Kuznetzov's patched libpcap: 24-byte records

# (magic as it appears in the file) -> (big_endian, ns_per_tick, record header length)
MAGICS: dict[bytes, tuple[bool, int, int]] = {
    MAGIC_USEC.to_bytes(4, "big"): (True, 1000, 16),
    MAGIC_USEC.to_bytes(4, "little"): (False, 1000, 16),
    MAGIC_NSEC.to_bytes(4, "big"): (True, 1, 16),
    MAGIC_NSEC.to_bytes(4, "little"): (False, 1, 16),
    MAGIC_USEC_MODIFIED.to_bytes(4, "big"): (True, 1000, 24),
    MAGIC_USEC_MODIFIED.to_bytes(4, "little"): (False, 1000, 24),
}

FILE_HEADER_LEN = 24
LINKTYPE_MASK = 0x03FFFFFF  # upper bits of the LinkType field carry the FCS length


@dataclass(frozen=True, slots=True, kw_only=True)
class PcapFileHeader:
    """The pcap file header, fields in wire order."""

    magic_number: int
    major_version: int
    minor_version: int
    thiszone: int  # always 0 in practice; ignored like libpcap does
    sigfigs: int
    snaplen: int
    linktype: int
    big_endian: bool
    ns_per_tick: int  # 1000 for µs files, 1 for ns files
    record_header_len: int


def parse_file_header(head: bytes) -> PcapFileHeader:
    """Decode the 24-byte header; ``head[:4]`` must be a key of ``MAGICS``."""
    big, ns_per_tick, rec_len = MAGICS[head[:4]]
    fields = struct.unpack((">" if big else "<") + "IHHiIII", head[:FILE_HEADER_LEN])
    return PcapFileHeader(
        magic_number=fields[0],
        major_version=fields[1],
        minor_version=fields[2],
        thiszone=fields[3],
        sigfigs=fields[4],
        snaplen=fields[5],
        linktype=fields[6] & LINKTYPE_MASK,
        big_endian=big,
        ns_per_tick=ns_per_tick,
        record_header_len=rec_len,
    )


@kernel(cache=True, nogil=True)
def scan_pcap_records(
    buf: np.ndarray,
    pos: int,
    end: int,
    big: bool,
    hdr_len: int,
    ns_per_tick: int,
    snaplen: int,
    n: int,
    data_off: np.ndarray,
    caplen_out: np.ndarray,
    wirelen_out: np.ndarray,
    ts_out: np.ndarray,
    iface_out: np.ndarray,
    rec_out: np.ndarray,
) -> tuple[int, int, int, int, int]:
    """Walk whole records in ``buf[pos:end]``; return (pos, n, status, aux, oversnap).

    ``oversnap`` is the position of the first record accepted although caplen >
    snaplen (plausible: caplen <= MAX_CAPLEN and <= the wire length), or -1.
    """
    cap = ts_out.shape[0]
    oversnap = -1
    while True:
        # the next records' headers: each one's place is known only from the one
        # before, so without this every record waits for memory (``parsers.prefetch``)
        prefetch(buf, pos + PREFETCH_BYTES)
        if end - pos < hdr_len:
            return pos, n, NEED_MORE, hdr_len, oversnap
        caplen = rd_u32(buf, pos + 8, big)
        wirelen = rd_u32(buf, pos + 12, big)
        if caplen > MAX_CAPLEN:
            return pos, n, CAPLEN_TOO_LARGE, caplen, oversnap
        if caplen > snaplen:
            if caplen > wirelen:
                return pos, n, CAPLEN_TOO_LARGE, caplen, oversnap
            if oversnap < 0:
                oversnap = pos
        if end - pos < hdr_len + caplen:
            return pos, n, NEED_MORE, hdr_len + caplen, oversnap
        if n == cap:
            return pos, n, OUT_FULL, 0, oversnap
        # ts_sec is unsigned 32-bit (good to 2106); int64 ns holds it.
        ts_out[n] = rd_u32(buf, pos, big) * NS_PER_S + rd_u32(buf, pos + 4, big) * ns_per_tick
        data_off[n] = pos + hdr_len
        caplen_out[n] = caplen
        wirelen_out[n] = wirelen
        iface_out[n] = 0
        rec_out[n] = pos
        n += 1
        pos += hdr_len + caplen


class PcapScanner:
    """Scans the records of a classic pcap file, one buffer at a time."""

    format = "pcap"

    def __init__(self, header: PcapFileHeader) -> None:
        self.header = header
        # snaplen 0 (seen from some writers) means "no limit" below MAX_CAPLEN
        self._snaplen = header.snaplen if header.snaplen else MAX_CAPLEN
        self._oversnap_reported = False
        tsresol = 9 if header.ns_per_tick == 1 else 6
        self.interfaces: list[dict[str, object]] = [
            {
                "id": 0,
                "section": 0,
                "linktype": header.linktype,
                "snaplen": header.snaplen,
                "tsresol": tsresol,
                "tsoffset": 0,
                "name": None,
            }
        ]
        self.if_linktype = np.array([header.linktype], np.int32)
        self.secrets_seen = False

    def scan(
        self, buf: np.ndarray, pos: int, end: int, cols: PacketColumns, notes: ChunkNotes
    ) -> tuple[int, int, bool]:
        """Scan ``buf[pos:end]``; return (pos, bytes needed from pos, stopped)."""
        h = self.header
        while True:
            pos, cols.n, status, aux, oversnap = scan_pcap_records(
                buf, pos, end, h.big_endian, h.record_header_len, h.ns_per_tick,
                self._snaplen, cols.n, cols.data_off, cols.caplen, cols.wirelen,
                cols.ts_ns, cols.interface, cols.rec_pos,
            )  # fmt: skip
            if oversnap >= 0 and not self._oversnap_reported:
                self._oversnap_reported = True
                notes.anomaly(
                    "caplen_exceeds_snaplen", cols, oversnap,
                    f"a record's caplen exceeds the file snaplen {h.snaplen} (kept)",
                )  # fmt: skip
            if status == OUT_FULL:
                cols.grow()
                continue
            if status == NEED_MORE:
                return pos, aux, False
            detail = f"record caplen {aux} (snaplen {h.snaplen}, limit {MAX_CAPLEN})"
            notes.anomaly(FATAL_CODES[status], cols, pos, detail)
            return pos, 0, True
