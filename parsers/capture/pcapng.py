"""pcapng files (draft-ietf-opsawg-pcapng): sections, interfaces, packet blocks.

How this works: a pcapng file is a sequence of blocks, each framed as
``Block Type | Block Total Length | body | Block Total Length``. Packet blocks
(Enhanced Packet Block, Simple Packet Block, the obsolete Packet Block) are
nearly all of a file, so ``scan_pcapng_blocks`` walks them in a compiled loop
and converts each timestamp to ns with its interface's if_tsresol/if_tsoffset.
Every other block type is rare; the kernel stops at it and returns control to
``PcapngScanner``, which decodes it in Python (Section Header Block: byte order,
and a new section forgets all interfaces; Interface Description Block: link
type, snaplen, options; Decryption Secrets Block: kept for TLS) or skips it
(Name Resolution, Interface Statistics, custom and unknown blocks).

Interfaces get a file-wide id (their index in ``interfaces``), equal to the
pcapng Interface ID in a single-section file; ``PacketChunk.interface`` holds it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

import numpy as np

from ..jitload import kernel
from ..prefetch import prefetch
from ._scan import (
    BAD_BLOCK_LENGTH,
    CAPLEN_TOO_LARGE,
    FATAL_CODES,
    MAX_BLOCK_LEN,
    MAX_CAPLEN,
    NEED_MORE,
    NS_PER_S,
    OTHER_BLOCK,
    OUT_FULL,
    PREFETCH_BYTES,
    UNKNOWN_INTERFACE,
    ChunkNotes,
    PacketColumns,
    rd_u16,
    rd_u32,
)

# --- block types (pcapng §4 and §11.1) ------------------------------------------
BT_SHB = 0x0A0D0D0A  # Section Header Block (a palindrome: same in both byte orders)
BT_IDB = 0x00000001  # Interface Description Block
BT_PB = 0x00000002  # Packet Block (obsolete)
BT_SPB = 0x00000003  # Simple Packet Block
BT_NRB = 0x00000004  # Name Resolution Block (skipped)
BT_ISB = 0x00000005  # Interface Statistics Block (skipped)
BT_EPB = 0x00000006  # Enhanced Packet Block
BT_DSB = 0x0000000A  # Decryption Secrets Block

BYTE_ORDER_MAGIC = 0x1A2B3C4D
SHB_MIN_LEN = 28  # type, length, BOM, major, minor, section length (8), trailing length
SHB_PREFIX_LEN = 12  # type, length, byte-order magic: what ``shb_prefix`` reads
EPB_MIN_LEN = 32  # 28 bytes of header fields + trailing length
SPB_MIN_LEN = 16  # type, length, original packet length, trailing length

# --- options (pcapng §3.5, §4.2) --------------------------------------------------------
OPT_ENDOFOPT = 0
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
DEFAULT_TSRESOL = 6  # "If the Option is missing, the timestamps are in microseconds"

# --- timestamp conversion modes (per interface, computed once from if_tsresol) -------
TS_MUL = 0  # 10^-n with n <= 9: ns = ticks * 10^(9-n)
TS_DIV = 1  # 10^-n with n > 9: ns = ticks // 10^(n-9)
TS_BIN = 2  # 2^-n: ns = floor(ticks * 10^9 / 2^n), split to stay within 64 bits


def tsresol_params(tsresol: int) -> tuple[int, int]:
    """(mode, k) for the kernel from an if_tsresol byte (MSB set: power of 2)."""
    n = tsresol & 0x7F
    if tsresol & 0x80:
        return TS_BIN, min(n, 63)
    if n <= 9:
        return TS_MUL, 10 ** (9 - n)
    if n <= 28:
        return TS_DIV, 10 ** (n - 9)
    return TS_DIV, (1 << 64) - 1  # absurd resolution: every time reads as 0


@kernel(inline="always")
def ticks_to_ns(hi: int, lo: int, mode: int, k: np.uint64) -> np.int64:
    """Timestamp (upper, lower) 32-bit halves in interface units -> ns (wraps past 2262)."""
    ticks = (np.uint64(hi) << np.uint64(32)) | np.uint64(lo)
    if mode == TS_MUL:
        return np.int64(ticks * k)
    if mode == TS_DIV:
        return np.int64(ticks // k)
    sec = ticks >> k
    frac = ticks & ((np.uint64(1) << k) - np.uint64(1))
    sh = k
    if sh > np.uint64(33):  # keep frac * 10^9 below 2^64; loses only sub-ns bits
        frac = frac >> (sh - np.uint64(33))
        sh = np.uint64(33)
    billion = np.uint64(NS_PER_S)
    return np.int64(sec * billion + ((frac * billion) >> sh))


PACKET = -1  # helper status: a good packet block, fields follow


@kernel(inline="always")
def _spb_fields(
    buf: np.ndarray, pos: int, blen: int, big: bool, n_if: int, if_snap: np.ndarray
) -> tuple[int, int, int, int, int]:
    """Simple Packet Block: (status, aux, caplen, wirelen, data start); interface 0.

    "the Captured Packet Length ... is min(Original Packet Length, SnapLen)", and
    never more than the block holds.
    """
    if blen < SPB_MIN_LEN:
        return BAD_BLOCK_LENGTH, blen, 0, 0, 0
    if n_if == 0:
        return UNKNOWN_INTERFACE, 0, 0, 0, 0
    wirelen = rd_u32(buf, pos + 8, big)
    caplen = min(wirelen, blen - SPB_MIN_LEN)
    if if_snap[0] > 0:
        caplen = min(caplen, if_snap[0])
    return PACKET, 0, caplen, wirelen, pos + 12


@kernel(inline="always")
def _epb_fields(
    buf: np.ndarray, pos: int, blen: int, big: bool, btype: int,
    if_mode: np.ndarray, if_k: np.ndarray, if_off: np.ndarray,
) -> tuple[int, int, int, int, int, int, int]:  # fmt: skip
    """EPB or obsolete PB: (status, aux, iface, caplen, wirelen, ts_ns, data start)."""
    if blen < EPB_MIN_LEN:
        return BAD_BLOCK_LENGTH, blen, 0, 0, 0, 0, 0
    # EPB: 32-bit Interface ID; obsolete PB: 16-bit Interface ID + Drops Count
    iface = rd_u32(buf, pos + 8, big) if btype == BT_EPB else rd_u16(buf, pos + 8, big)
    if iface >= if_mode.shape[0]:
        return UNKNOWN_INTERFACE, iface, 0, 0, 0, 0, 0
    caplen = rd_u32(buf, pos + 20, big)
    wirelen = rd_u32(buf, pos + 24, big)
    if caplen > MAX_CAPLEN or caplen > blen - EPB_MIN_LEN:
        return CAPLEN_TOO_LARGE, caplen, 0, 0, 0, 0, 0
    hi = rd_u32(buf, pos + 12, big)
    lo = rd_u32(buf, pos + 16, big)
    ts = ticks_to_ns(hi, lo, if_mode[iface], if_k[iface]) + if_off[iface]
    return PACKET, 0, iface, caplen, wirelen, ts, pos + 28


@kernel(cache=True, nogil=True)
def scan_pcapng_blocks(
    buf: np.ndarray, pos: int, end: int, big: bool,
    if_mode: np.ndarray, if_k: np.ndarray, if_off: np.ndarray, if_snap: np.ndarray,
    if_gid: np.ndarray, last_ts: int, n: int,
    data_off: np.ndarray, caplen_out: np.ndarray, wirelen_out: np.ndarray,
    ts_out: np.ndarray, iface_out: np.ndarray, rec_out: np.ndarray,
) -> tuple[int, int, int, int, int, int]:  # fmt: skip
    """Walk packet blocks in ``buf[pos:end]``.

    Returns (pos, n, status, aux, last_ts, first_spb), ``first_spb`` being the
    position of the first Simple Packet Block met (-1: none). On OTHER_BLOCK,
    ``pos`` is the start of a complete, length-checked block (an SHB is not
    checked: its length is only readable once its byte-order magic is known).
    """
    first_spb = -1
    while True:
        prefetch(buf, pos + PREFETCH_BYTES)  # (``_scan.PREFETCH_BYTES``)
        if end - pos < 12:
            return pos, n, NEED_MORE, 12, last_ts, first_spb
        btype = rd_u32(buf, pos, big)
        if btype == BT_SHB:
            return pos, n, OTHER_BLOCK, 0, last_ts, first_spb
        blen = rd_u32(buf, pos + 4, big)
        if blen < 12 or blen % 4 != 0 or blen > MAX_BLOCK_LEN:
            return pos, n, BAD_BLOCK_LENGTH, blen, last_ts, first_spb
        if end - pos < blen:
            return pos, n, NEED_MORE, blen, last_ts, first_spb
        if rd_u32(buf, pos + blen - 4, big) != blen:
            return pos, n, BAD_BLOCK_LENGTH, blen, last_ts, first_spb
        if btype != BT_EPB and btype != BT_SPB and btype != BT_PB:
            return pos, n, OTHER_BLOCK, 0, last_ts, first_spb
        if n == ts_out.shape[0]:
            return pos, n, OUT_FULL, 0, last_ts, first_spb
        if btype == BT_SPB:
            # no timestamp field: the packet keeps the previous packet's time
            status, aux, caplen, wirelen, start = _spb_fields(
                buf, pos, blen, big, if_mode.shape[0], if_snap
            )
            iface, ts = 0, last_ts
            if status == PACKET and first_spb < 0:
                first_spb = pos
        else:
            status, aux, iface, caplen, wirelen, ts, start = _epb_fields(
                buf, pos, blen, big, btype, if_mode, if_k, if_off
            )
        if status != PACKET:
            return pos, n, status, aux, last_ts, first_spb
        last_ts = ts
        ts_out[n] = ts
        data_off[n] = start
        caplen_out[n] = caplen
        wirelen_out[n] = wirelen
        iface_out[n] = if_gid[iface]
        rec_out[n] = pos
        n += 1
        pos += blen


def iter_options(body: bytes, big: bool) -> Iterator[tuple[int, bytes]]:
    """(code, value) of each option in ``body`` until opt_endofopt or the end.

    A malformed option list (a length running past the block) just ends early.
    """
    hdr = struct.Struct(">HH" if big else "<HH")
    p = 0
    while p + 4 <= len(body):
        code, length = hdr.unpack_from(body, p)
        if code == OPT_ENDOFOPT or p + 4 + length > len(body):
            return
        yield code, body[p + 4 : p + 4 + length]
        p += 4 + ((length + 3) & ~3)  # values are padded to 32 bits


def shb_prefix(head: bytes) -> tuple[bool, int]:
    """(big_endian, block total length) from an SHB's first 12 bytes.

    Raises ValueError naming the problem when the byte-order magic is unknown
    or the length cannot be an SHB.
    """
    (bom,) = struct.unpack_from("<I", head, 8)
    if bom == BYTE_ORDER_MAGIC:
        big = False
    elif bom == 0x4D3C2B1A:
        big = True
    else:
        raise ValueError(f"pcapng section header with bad byte-order magic {head[8:12].hex(' ')}")
    (blen,) = struct.unpack_from(">I" if big else "<I", head, 4)
    if blen < SHB_MIN_LEN or blen % 4 or blen > MAX_BLOCK_LEN:
        raise ValueError(f"pcapng section header with bad block length {blen}")
    return big, blen


class PcapngScanner:
    """Scans a pcapng file one buffer at a time, tracking sections and interfaces."""

    format = "pcapng"

    def __init__(self, shb: bytes) -> None:
        self.interfaces: list[dict[str, object]] = []
        self.if_linktype = np.zeros(0, np.int32)
        self.section = -1
        self._spb_reported = False
        self._start_section(shb)
        self._handlers: dict[int, Callable[[bytes, ChunkNotes], None]] = {
            BT_IDB: self._on_idb,
            BT_DSB: self._on_dsb,
        }

    # --- section and interface state -------------------------------------------------
    def _start_section(self, shb: bytes) -> None:
        """A new SHB: set the byte order and forget the previous section's interfaces."""
        self.big, _ = shb_prefix(shb)
        self.version = struct.unpack_from(">HH" if self.big else "<HH", shb, 12)
        self.section += 1
        self._local: list[int] = []  # section-local Interface ID -> file-wide id
        self._rebuild()

    def _rebuild(self) -> None:
        """Refresh the per-interface arrays the kernel reads."""
        ifs = [self.interfaces[g] for g in self._local]
        params = [tsresol_params(int(i["tsresol"])) for i in ifs]  # type: ignore[call-overload]
        self._if_mode = np.array([m for m, _ in params], np.int64)
        self._if_k = np.array([k for _, k in params], np.uint64)
        self._if_off = np.array([int(i["tsoffset"]) * NS_PER_S for i in ifs], np.int64)  # type: ignore[call-overload]
        self._if_snap = np.array([i["snaplen"] for i in ifs], np.int64)
        self._if_gid = np.array(self._local, np.int32)
        self.if_linktype = np.array([i["linktype"] for i in self.interfaces], np.int32)

    def _on_idb(self, block: bytes, notes: ChunkNotes) -> None:
        """Interface Description Block: LinkType, SnapLen, then options."""
        if len(block) < 20:
            return
        linktype, _reserved, snaplen = struct.unpack_from(">HHI" if self.big else "<HHI", block, 8)
        iface: dict[str, object] = {
            "id": len(self.interfaces),
            "section": self.section,
            "linktype": linktype,
            "snaplen": snaplen,
            "tsresol": DEFAULT_TSRESOL,
            "tsoffset": 0,
            "name": None,
        }
        for code, value in iter_options(block[16:-4], self.big):
            if code == IF_TSRESOL and len(value) >= 1:
                iface["tsresol"] = value[0]
            elif code == IF_TSOFFSET and len(value) >= 8:
                # clamp so that offset * 10^9 stays an int64
                off = struct.unpack_from(">q" if self.big else "<q", value)[0]
                iface["tsoffset"] = max(-(2**63 // NS_PER_S), min(off, (2**63 - 1) // NS_PER_S))
            elif code == IF_NAME:
                iface["name"] = value.decode("utf-8", "replace")
        self._local.append(len(self.interfaces))
        self.interfaces.append(iface)
        self._rebuild()

    def _on_dsb(self, block: bytes, notes: ChunkNotes) -> None:
        """Decryption Secrets Block: Secrets Type, Secrets Length, Secrets Data."""
        if len(block) < 20:
            return
        stype, slen = struct.unpack_from(">II" if self.big else "<II", block, 8)
        if 16 + slen > len(block) - 4:
            slen = len(block) - 20  # length field overruns the block: keep what is framed
        notes.secrets.append((stype, bytes(block[16 : 16 + slen])))

    # --- the scan loop ------------------------------------------------------------------
    def scan(
        self, buf: np.ndarray, pos: int, end: int, cols: PacketColumns, notes: ChunkNotes
    ) -> tuple[int, int, bool]:
        """Scan ``buf[pos:end]``; return (pos, bytes needed from pos, stopped)."""
        last_ts = notes.last_ts
        while True:
            if cols.n:
                last_ts = int(cols.ts_ns[cols.n - 1])
            pos, cols.n, status, aux, last_ts, spbs = scan_pcapng_blocks(
                buf, pos, end, self.big, self._if_mode, self._if_k, self._if_off,
                self._if_snap, self._if_gid, last_ts, cols.n, cols.data_off,
                cols.caplen, cols.wirelen, cols.ts_ns, cols.interface, cols.rec_pos,
            )  # fmt: skip
            if spbs >= 0 and not self._spb_reported:
                self._spb_reported = True
                notes.anomaly(
                    "spb_no_timestamp", cols, spbs,
                    "Simple Packet Blocks carry no time; they take the previous packet's",
                )  # fmt: skip
            if status == OUT_FULL:
                cols.grow()
            elif status == NEED_MORE:
                return pos, aux, False
            elif status == OTHER_BLOCK:
                step = self._other_block(buf, pos, end, cols, notes)
                if step <= 0:
                    return pos, -step, step == 0
                pos += step
            else:
                notes.anomaly(FATAL_CODES[status], cols, pos, self._fatal_detail(status, aux))
                return pos, 0, True

    def _other_block(
        self, buf: np.ndarray, pos: int, end: int, cols: PacketColumns, notes: ChunkNotes
    ) -> int:
        """Handle the non-packet block at ``pos``: its length, or -need, or 0 to stop."""
        btype, blen = struct.unpack_from(">II" if self.big else "<II", buf, pos)
        if btype != BT_SHB:
            handler = self._handlers.get(btype)
            if handler is not None:
                handler(buf[pos : pos + blen].tobytes(), notes)
            return blen
        try:
            _, blen = shb_prefix(buf[pos : pos + 12].tobytes())
        except ValueError as err:
            notes.anomaly("bad_block_length", cols, pos, str(err))
            return 0
        if end - pos < blen:
            return -blen
        block = buf[pos : pos + blen].tobytes()
        if block[-4:] != block[4:8]:
            notes.anomaly("bad_block_length", cols, pos, "section header trailing length differs")
            return 0
        self._start_section(block)
        return blen

    @staticmethod
    def _fatal_detail(status: int, aux: int) -> str:
        if status == BAD_BLOCK_LENGTH:
            return f"block total length {aux} (must be >= 12, a multiple of 4, matched at the end)"
        if status == CAPLEN_TOO_LARGE:
            return f"captured length {aux} exceeds its block or the limit {MAX_CAPLEN}"
        return f"packet names interface {aux}, which has no Interface Description Block"
