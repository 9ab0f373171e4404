"""Split a capture file into parts by packet index, by hand (``struct``, not our reader).

pcap: each part is the file header plus its records. pcapng: each part starts with
the Section Header Block and every Interface Description Block seen so far (as a
rotating writer repeats them), then the blocks in its range of packets; any other
block (a Decryption Secrets Block, statistics) stays where it was, in the part it
falls in. ``editcap`` refuses files with a Decryption Secrets Block, so this is
the splitter for those; for the others tests use ``editcap`` as well.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
PCAPNG_PACKET_BLOCKS = {0x00000006, 0x00000003, 0x00000002}  # EPB, SPB, obsolete PB
SHB, IDB = 0x0A0D0D0A, 0x00000001


def _pcap_records(raw: bytes) -> tuple[bytes, list[bytes]]:
    order = PCAP_MAGICS[raw[:4]]
    pos, recs = 24, []
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from(order + "I", raw, pos + 8)[0]
        recs.append(raw[pos : pos + 16 + caplen])
        pos += 16 + caplen
    return raw[:24], recs


def _pcapng_blocks(raw: bytes) -> list[tuple[int, bytes]]:
    order = "<" if raw[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    pos, blocks = 0, []
    while pos + 12 <= len(raw):
        btype, blen = struct.unpack_from(order + "II", raw, pos)
        blocks.append((btype, raw[pos : pos + blen]))
        pos += blen
    return blocks


def split(src: Path, cuts: list[int], out_dir: Path, stem: str = "part",
          compress: bool = False) -> list[Path]:
    """Write ``src``'s packets ``[0, cuts[0])``, ``[cuts[0], cuts[1])``, ... to
    ``out_dir/<stem><k>.<ext>`` (gzip'd: ``.gz`` added); returns the paths."""
    raw = src.read_bytes()
    ext = src.suffix
    parts: list[bytearray] = []
    bounds = [*cuts, 1 << 62]
    if raw[:4] in PCAP_MAGICS:
        head, recs = _pcap_records(raw)
        parts = [bytearray(head) for _ in bounds]
        k = 0
        for i, rec in enumerate(recs):
            while i >= bounds[k]:
                k += 1
            parts[k] += rec
    else:
        shb, idbs = b"", []
        parts = []
        k, i = 0, 0
        cur = bytearray()
        for btype, block in _pcapng_blocks(raw):
            if btype == SHB:
                shb, idbs = block, []
                cur += block
                continue
            if btype == IDB:
                idbs.append(block)
                cur += block
                continue
            if btype in PCAPNG_PACKET_BLOCKS:
                while i >= bounds[k]:
                    parts.append(cur)
                    cur = bytearray(shb + b"".join(idbs))
                    k += 1
                i += 1
            cur += block
        parts.append(cur)
        while len(parts) < len(bounds):
            parts.append(bytearray(shb + b"".join(idbs)))
    out = []
    for k, data in enumerate(parts):
        p = out_dir / f"{stem}{k:05d}{ext}"  # numbered as editcap and dumpcap do
        if compress:
            p = p.with_name(p.name + ".gz")
            p.write_bytes(gzip.compress(bytes(data), mtime=0))
        else:
            p.write_bytes(bytes(data))
        out.append(p)
    return out
