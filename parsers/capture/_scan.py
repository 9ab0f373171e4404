"""Pieces shared by the pcap and pcapng record scanners.

How this works: a scanner walks one buffer of capture-file bytes with a Numba
kernel. The kernel writes one entry per packet into preallocated NumPy columns
(``PacketColumns``) and returns a *status* saying why it stopped: it needs more
bytes (the record at ``pos`` straddles the end of the buffer), the columns are
full (Python doubles them and calls again), it met a block it leaves to Python
(pcapng only: SHB, IDB, DSB, ... are rare), or the file is corrupt at ``pos``.

Everything here is either a constant, a compiled byte reader, or the growable
column holder; no per-packet Python code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..events import Anomaly
from ..jitload import kernel

# (no ``jitload.install()`` here: a kernel's dispatcher installs it when it is made, and
# a small plain-TCP ingest may need no Numba at all: ``parsers.aot``)

# --- limits --------------------------------------------------------------------
MAX_CAPLEN = 262144
"""Largest captured length we accept (256 KiB): libpcap's and Wireshark's
``WTAP_MAX_PACKET_SIZE_STANDARD``. A larger caplen is a corrupt record header."""

MAX_BLOCK_LEN = 16 << 20
"""Largest pcapng block we accept (16 MiB, Wireshark's ``MAX_BLOCK_SIZE``). Bounds the
bytes we must hold at once for one block (a huge Decryption Secrets Block, say)."""

# --- kernel status codes ---------------------------------------------------------
NEED_MORE = 0  # record at pos is incomplete; aux = bytes needed from pos
OUT_FULL = 1  # output columns are full; grow and call again
OTHER_BLOCK = 2  # pcapng: a block Python handles (SHB, IDB, DSB, unknown) at pos
CAPLEN_TOO_LARGE = 3  # caplen implausible; aux = caplen (fatal: stop)
BAD_BLOCK_LENGTH = 4  # pcapng block length invalid; aux = length (fatal: stop)
UNKNOWN_INTERFACE = 5  # pcapng packet names an interface with no IDB (fatal: stop)

FATAL_CODES: dict[int, str] = {
    CAPLEN_TOO_LARGE: "caplen_too_large",
    BAD_BLOCK_LENGTH: "bad_block_length",
    UNKNOWN_INTERFACE: "unknown_interface",
}
"""Kernel status -> ``Anomaly.code`` for the statuses that end the scan."""

NS_PER_S = 1_000_000_000

PREFETCH_BYTES = 1024
"""How far ahead of the record it reads a scanner asks for the buffer's bytes
(``parsers.prefetch``): a record's place is known only from the one before, so
without it each record's header waited for memory (pcap: ~21 -> ~11 ns a record
on the 1M-packet benchmark capture's 8 MiB chunks)."""


# --- byte readers (compiled, inlined into the kernels) -------------------------------
@kernel(inline="always")
def rd_u16(buf: np.ndarray, p: int, big: bool) -> int:
    """Unsigned 16-bit integer at ``buf[p]`` in the section's byte order."""
    a = np.int64(buf[p])
    b = np.int64(buf[p + 1])
    return (a << 8) | b if big else (b << 8) | a


@kernel(inline="always")
def rd_u32(buf: np.ndarray, p: int, big: bool) -> int:
    """Unsigned 32-bit integer at ``buf[p]`` (as int64, never negative)."""
    a = np.int64(buf[p])
    b = np.int64(buf[p + 1])
    c = np.int64(buf[p + 2])
    d = np.int64(buf[p + 3])
    if big:
        return (a << 24) | (b << 16) | (c << 8) | d
    return (d << 24) | (c << 16) | (b << 8) | a


# --- output columns --------------------------------------------------------------------
class PacketColumns:
    """Growable per-packet columns a kernel fills; ``n`` entries are valid."""

    __slots__ = ("caplen", "data_off", "interface", "n", "rec_pos", "ts_ns", "wirelen")

    def __init__(self, capacity: int) -> None:
        capacity = max(capacity, 16)
        self.n = 0
        self.data_off = np.empty(capacity, np.int64)
        self.caplen = np.empty(capacity, np.int64)
        self.wirelen = np.empty(capacity, np.int64)
        self.ts_ns = np.empty(capacity, np.int64)
        self.interface = np.empty(capacity, np.int32)
        self.rec_pos = np.empty(capacity, np.int64)

    def grow(self) -> None:
        """Double the capacity, keeping the ``n`` filled entries."""
        for name in ("data_off", "caplen", "wirelen", "ts_ns", "interface", "rec_pos"):
            old = getattr(self, name)
            new = np.empty(old.shape[0] * 2, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)


@dataclass(slots=True)
class ChunkNotes:
    """Everything a scan of one buffer produces besides the packet columns."""

    base_offset: int
    """File offset (decompressed) of ``buf[0]``."""
    base_index: int
    """Packet index of the first packet of this buffer."""
    last_ts: int
    """Timestamp of the last good packet before this buffer (0 if none)."""
    secrets: list[tuple[int, bytes]] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)

    def anomaly(self, code: str, cols: PacketColumns, pos: int, detail: str) -> None:
        """Record a capture-layer anomaly at buffer position ``pos``."""
        # the packet at or after pos (records are in buffer order), and the time before it
        i = int(np.searchsorted(cols.rec_pos[: cols.n], pos))
        ts = int(cols.ts_ns[i - 1]) if i else self.last_ts
        where = f"packet {self.base_index + i}, byte offset {self.base_offset + pos}"
        self.anomalies.append(
            Anomaly(
                ts=ts,
                flow_id=-1,
                direction=None,
                layer="capture",
                code=code,
                detail=f"{where}: {detail}",
            )
        )
