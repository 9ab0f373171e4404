"""Open a capture (path, stdin or file object) and iterate it as ``PacketChunk``s.

How this works: ``open_capture`` reads just enough to know what it has: four
raw bytes for the compression magic (gzip, zstd or none), then the pcap file
header or the pcapng Section Header Block, picking a ``PcapScanner`` or a
``PcapngScanner``. Iterating the ``CaptureReader`` then repeats one step until
the file ends: fill a fresh NumPy buffer of ``chunk_bytes`` (starting with the
unfinished record carried over from the previous buffer), let the scanner's
compiled kernel index every whole record in it, and yield the buffer and the
index as one ``PacketChunk``. Memory is one buffer plus one partial record.

Bad bytes inside a readable file (a truncated last record, an absurd length) are
data: an ``Anomaly`` on the last chunk, then the iteration ends normally. Only a
file we cannot open or recognise raises ``CaptureError``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO, Protocol

import numpy as np

from ..errors import CaptureError
from ..events import Anomaly
from . import pcap, pcapng
from ._scan import ChunkNotes, PacketColumns
from .chunk import PacketChunk
from .stream import DECOMPRESSION_ERRORS, ContentHash, RawSource, decompressed, read_full

KEPT_CODES = frozenset({"caplen_exceeds_snaplen", "spb_no_timestamp"})
"""Capture-layer anomaly codes after which the file is still read to its end (every
other capture-layer code ends the file there: the packets before it are ingested)."""

DEFAULT_CHUNK_BYTES = 8 << 20
"""Bytes read per chunk (8 MiB): big enough that per-chunk Python work is noise.
Not bigger: every chunk's buffer and its per-packet columns are fresh arrays, and
glibc serves an allocation of 32 MiB or more with ``mmap`` every time (its
adaptive threshold stops at 32 MiB), so each one costs page faults on first
touch and is unmapped again when freed. Smaller ones are reused from the heap.
Measured on a 534k-packet TLS/WebSocket capture, the first ingest of a process
(as every CLI run is): 32 MiB chunks 3.15 s with ~95k page faults and a peak RSS
of 600 MB; 8 MiB chunks 2.6-2.75 s, ~54k faults, 420 MB. Warm ingests in one
process took the same time with either."""

BYTES_PER_PACKET_GUESS = 256  # first sizing of a chunk's columns; they double if short


class Scanner(Protocol):
    """What ``CaptureReader`` needs from a format scanner (pcap.py, pcapng.py)."""

    format: str
    interfaces: list[dict[str, object]]
    if_linktype: np.ndarray

    def scan(
        self, buf: np.ndarray, pos: int, end: int, cols: PacketColumns, notes: ChunkNotes
    ) -> tuple[int, int, bool]: ...


def open_capture(
    source: str | os.PathLike[str] | BinaryIO, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    hash: bool = True,
) -> CaptureReader:
    """Open a pcap or pcapng capture, plain, gzip- or zstd-compressed.

    ``source`` is a path, ``"-"`` for standard input, or a binary file object
    (read from its current position, never closed by us). ``hash=False``: no
    SHA-256 of the file (``sha256`` raises), for a second reader of a file whose
    hash the first one computes. Raises ``CaptureError``
    with code ``unreadable``, ``truncated_header``, ``not_a_capture``,
    ``bad_header`` or ``bad_compression``.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    f, path, own = _open_source(source)
    raw = None
    try:
        raw = RawSource(f, hash=hash)
        magic = _guarded(raw.magic, path)
        stream, compression = decompressed(raw, magic)
        if compression is not None and hash:
            stream = ContentHash(stream)  # type: ignore[assignment]
        scanner, start = _read_head(stream, path, compression)
    except BaseException:
        if raw is not None:
            raw.close()
        if own:
            f.close()
        raise
    return CaptureReader(
        raw=raw, stream=stream, compression=compression, scanner=scanner, start=start,
        path=path, own_file=f if own else None, chunk_bytes=chunk_bytes,
    )  # fmt: skip


def _open_source(source: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, str, bool]:
    """(file object, name for messages, whether we opened it)."""
    if isinstance(source, str) and source == "-":
        return sys.stdin.buffer, "<stdin>", False
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            return open(path, "rb", buffering=0), path, True  # closed by CaptureReader.close
        except OSError as err:
            raise CaptureError(
                f"cannot open: {err.strerror or err}", code="unreadable", path=path
            ) from err
    name = getattr(source, "name", None)
    return source, name if isinstance(name, str) else "<stream>", False


def _guarded(fn: object, path: str) -> bytes:
    """Call a header read, turning OSError and decompression errors into CaptureError."""
    try:
        return fn()  # type: ignore[operator,no-any-return]
    except OSError as err:
        raise CaptureError(f"read failed: {err}", code="unreadable", path=path) from err
    except DECOMPRESSION_ERRORS as err:
        raise CaptureError(
            f"compressed data is corrupt: {err}", code="bad_compression", path=path, offset=0
        ) from err


def _read_exact(stream: BinaryIO, n: int, path: str) -> bytes:
    def read() -> bytes:
        buf = bytearray(n)
        got, err = read_full(stream, memoryview(buf))
        if err is not None:
            raise err
        return bytes(buf[:got])

    return _guarded(read, path)


def _read_head(
    stream: BinaryIO, path: str, compression: str | None
) -> tuple[Scanner, int]:
    """Recognise the format from the (decompressed) header; (scanner, bytes consumed)."""
    head = _read_exact(stream, pcap.FILE_HEADER_LEN, path)
    if len(head) < 4:
        what = "empty file" if not head else f"only {len(head)} bytes"
        raise CaptureError(f"{what}: no capture file header", code="truncated_header", path=path,
                           offset=0)  # fmt: skip
    if head[:4] in pcap.MAGICS:
        if len(head) < pcap.FILE_HEADER_LEN:
            raise CaptureError(f"pcap file header cut short at {len(head)} of 24 bytes",
                               code="truncated_header", path=path, offset=0)  # fmt: skip
        return pcap.PcapScanner(pcap.parse_file_header(head)), pcap.FILE_HEADER_LEN
    if head[:4] == pcapng.BT_SHB.to_bytes(4, "big"):
        return _read_shb(stream, head, path)
    inner = f"{compression} data" if compression else "file"
    raise CaptureError(
        f"{inner} is not a pcap or pcapng file (starts with {head[:4].hex(' ')})",
        code="not_a_capture", path=path, offset=0,
    )  # fmt: skip


def _read_shb(stream: BinaryIO, head: bytes, path: str) -> tuple[Scanner, int]:
    """Read the rest of the first Section Header Block and start a pcapng scanner."""
    if len(head) < pcapng.SHB_PREFIX_LEN:  # fuzz: a 4..11-byte file with the SHB magic
        raise CaptureError(f"pcapng section header cut short at {len(head)} bytes",
                           code="truncated_header", path=path, offset=0)  # fmt: skip
    try:
        _, blen = pcapng.shb_prefix(head)
    except ValueError as err:
        code = "not_a_capture" if "byte-order" in str(err) else "bad_header"
        raise CaptureError(str(err), code=code, path=path, offset=0) from err
    block = head + _read_exact(stream, blen - len(head), path)
    if len(block) < blen:
        raise CaptureError(f"pcapng section header cut short at {len(block)} of {blen} bytes",
                           code="truncated_header", path=path, offset=0)  # fmt: skip
    if block[-4:] != block[4:8]:
        raise CaptureError("pcapng section header trailing length differs",
                           code="bad_header", path=path, offset=0)  # fmt: skip
    return pcapng.PcapngScanner(block), blen


class CaptureReader:
    """Iterator of ``PacketChunk`` over one capture; also a context manager.

    Attributes grow as the file is read: ``interfaces`` and ``link_types`` of a
    pcapng file are complete only once the packets using them have been read,
    ``sha256`` and ``bytes_read`` (raw bytes as stored) once iteration ended.
    """

    def __init__(
        self, *, raw: RawSource, stream: BinaryIO, compression: str | None, scanner: Scanner,
        start: int, path: str, own_file: BinaryIO | None, chunk_bytes: int,
    ) -> None:  # fmt: skip
        self.path = path
        self.format = scanner.format
        self.compression = compression
        self.chunk_bytes = chunk_bytes
        self.packets = 0
        """Packets yielded so far."""
        self.secrets: list[tuple[int, bytes]] = []
        """Every pcapng Decryption Secrets Block seen so far: (secrets_type, data)."""
        self.anomalies: list[Anomaly] = []
        """Every capture-layer anomaly so far (also on the chunk that met it)."""
        self._raw = raw
        self._stream = stream
        # Uncompressed: _fill reads straight into fresh chunk buffers it never writes
        # again, so the background hash may read them in place (no copy).
        raw.owned_buffers = stream is raw
        self._scanner = scanner
        self._start = start
        self._own_file = own_file
        self._last_ts = 0
        self._gen = self._chunks()

    # --- attributes ------------------------------------------------------------------
    @property
    def interfaces(self) -> list[dict[str, object]]:
        """One dict per interface: id, section, linktype, snaplen, tsresol, tsoffset, name.

        ``tsresol`` is the pcapng if_tsresol byte (6: µs, 9: ns, 0x94: 2^-20 s).
        """
        return self._scanner.interfaces

    @property
    def link_types(self) -> list[int]:
        """Sorted distinct LINKTYPE_* values of the interfaces seen so far."""
        return sorted({int(i["linktype"]) for i in self.interfaces})  # type: ignore[call-overload]

    @property
    def snaplen(self) -> int:
        """pcap: the file header's; pcapng: the largest interface's, 0 if any is unlimited."""
        snaps = [int(i["snaplen"]) for i in self.interfaces]  # type: ignore[call-overload]
        return 0 if not snaps or 0 in snaps else max(snaps)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the raw bytes read so far (the whole file once iteration ended)."""
        return self._raw.sha256

    @property
    def content_sha256(self) -> str:
        """Hex SHA-256 of the capture's content once iteration ended: of the decompressed
        bytes for a compressed file read to its end, else of the file (``sha256``). The
        same capture plain or compressed has the same one (``ContentHash``)."""
        if isinstance(self._stream, ContentHash) and self._stream.at_end:
            return self._stream.sha.hexdigest()
        return self.sha256

    @property
    def bytes_read(self) -> int:
        """Raw (possibly compressed) bytes consumed so far."""
        return self._raw.bytes_read

    # --- iteration -------------------------------------------------------------------
    def __iter__(self) -> CaptureReader:
        return self

    def __next__(self) -> PacketChunk:
        return next(self._gen)

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close the file if we opened it (stdin and callers' files stay open)."""
        self._gen.close()
        if self._stream is not self._raw:
            self._stream.close()
        if self._own_file is not None:
            self._own_file.close()
        self._raw.close()  # ends the hashing thread (sha256 stays readable)

    def _chunks(self) -> Iterator[PacketChunk]:
        carry = np.empty(0, np.uint8)
        base = self._start  # decompressed file offset of carry[0]
        need = 0
        while True:
            buf, filled, read_err = self._fill(carry, need)
            cols = PacketColumns(filled // BYTES_PER_PACKET_GUESS)
            notes = ChunkNotes(base_offset=base, base_index=self.packets, last_ts=self._last_ts)
            pos, need, stopped = self._scanner.scan(buf, 0, filled, cols, notes)
            eof = read_err is not None or filled < buf.shape[0]
            if not stopped and eof:
                stopped = self._at_end(read_err, pos, filled, need, cols, notes)
            chunk = self._make_chunk(buf[:filled], cols, notes)
            carry = buf[pos:filled].copy()
            base += pos
            if len(chunk) or chunk.secrets or chunk.anomalies:
                yield chunk
            if stopped:
                self._raw.drain()  # so that sha256 still covers the whole file
                return
            if eof:
                return

    def _fill(self, carry: np.ndarray, need: int) -> tuple[np.ndarray, int, Exception | None]:
        """A new buffer: ``carry`` then fresh bytes, at least ``need`` in all if possible."""
        size = max(self.chunk_bytes, need, carry.shape[0] + 1)
        # zeros (calloc: fresh mmap'd pages) measured ~2x faster than empty() for 32 MiB
        buf = np.zeros(size, np.uint8)
        buf[: carry.shape[0]] = carry
        try:
            got, err = read_full(self._stream, memoryview(buf)[carry.shape[0] :])
        except OSError as e:
            raise CaptureError(f"read failed: {e}", code="unreadable", path=self.path,
                               packet_index=self.packets) from e  # fmt: skip
        return buf, carry.shape[0] + got, err

    @staticmethod
    def _at_end(
        err: Exception | None, pos: int, filled: int, need: int,
        cols: PacketColumns, notes: ChunkNotes,
    ) -> bool:  # fmt: skip
        """Note why the input ended early, if it did; True when it did."""
        if err is not None:
            notes.anomaly("bad_compressed_data", cols, filled, f"decompression failed: {err}")
            return True
        if pos < filled:
            notes.anomaly(
                "truncated_record", cols, pos,
                f"the file ends {filled - pos} bytes into a record of {need} bytes (dropped)",
            )  # fmt: skip
            return True
        return False

    def _make_chunk(self, data: np.ndarray, cols: PacketColumns, notes: ChunkNotes) -> PacketChunk:
        n = cols.n
        iface = cols.interface[:n]
        chunk = PacketChunk(
            data=data,
            offset=cols.data_off[:n],
            caplen=cols.caplen[:n],
            wirelen=cols.wirelen[:n],
            ts_ns=cols.ts_ns[:n],
            linktype=self._scanner.if_linktype[iface],
            interface=iface,
            index=np.arange(self.packets, self.packets + n, dtype=np.int64),
            file_offset=cols.rec_pos[:n] + notes.base_offset,
            secrets=notes.secrets,
            anomalies=notes.anomalies,
        )
        self.packets += n
        if n:
            self._last_ts = int(cols.ts_ns[n - 1])
        self.secrets.extend(notes.secrets)
        self.anomalies.extend(notes.anomalies)
        return chunk
