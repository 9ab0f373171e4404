"""Byte sources for the capture reader: raw file/pipe, then gzip or zstd.

How this works: ``RawSource`` wraps whatever we were handed (a file we opened,
stdin, a caller's file object) and sees every raw byte exactly once, so it
counts them (``bytes_read``, for progress bars) and hashes them (``sha256`` of
the file as stored). Its first four bytes are read ahead to recognise
compression by magic number; they are served again to whoever reads next.
``decompressed`` then stacks a streaming gzip or zstd decoder on top, or
nothing. Nothing here holds more than one read's worth of data.
"""

from __future__ import annotations

import hashlib
import io
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import zstandard

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_READ_SIZE = 1 << 20  # compressed bytes read per refill of the gzip decoder
ZSTD_READ_SIZE = 1 << 20  # compressed bytes zstandard pulls per read
ZSTD_MAX_WINDOW = 1 << 27  # 128 MiB: zstd's own default limit, stated so it is visible
DRAIN_BYTES = 1 << 20  # read size when draining the rest of a file for its hash


# Raw reads whose hashing may still be running in the background thread: bounds
# the copies held (each is one read, at most a chunk's worth of bytes).
MAX_PENDING_HASHES = 2


class RawSource(io.RawIOBase):
    """Counts and hashes the raw bytes of ``f``; can look at the first four.

    SHA-256 runs in one background thread (``hashlib`` releases the GIL on large
    updates), so hashing a capture overlaps with decoding it instead of adding
    to it; updates stay in read order because a single worker runs them FIFO.
    ``hash=False``: no hashing and no thread (``sha256`` then raises), for a
    reader whose hash another one computes (the workers of a sharded ingest).
    """

    def __init__(self, f: BinaryIO, *, hash: bool = True) -> None:
        super().__init__()
        self._f = f
        self._hash = hashlib.sha256() if hash else None
        self._hasher = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcapflow-sha256")
                        if hash else None)
        self._pending: deque[Future[None]] = deque()
        # True while the caller promises never to write again into a buffer it had
        # filled (the capture reader allocates a fresh one per chunk): the hash then
        # reads it in place instead of from a copy.
        self.owned_buffers = False
        self.bytes_read = 0
        self._ahead = b""  # bytes read by ``magic()`` and not yet handed out
        self.at_eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._ahead:
            k = min(len(b), len(self._ahead))
            b[:k] = self._ahead[:k]
            self._ahead = self._ahead[k:]
            return k
        got = self._readinto_f(b)
        if got == 0:
            self.at_eof = True
            return 0
        if self._hasher is not None:
            view = memoryview(b)[:got]
            data = view if self.owned_buffers else bytes(view)
            self._pending.append(self._hasher.submit(self._hash.update, data))  # type: ignore[union-attr]
            while len(self._pending) > MAX_PENDING_HASHES:
                self._pending.popleft().result()
        self.bytes_read += got
        return got

    def _readinto_f(self, b: memoryview | bytearray) -> int:
        readinto = getattr(self._f, "readinto", None)
        if readinto is not None:
            return readinto(b) or 0
        data = self._f.read(len(b))
        b[: len(data)] = data
        return len(data)

    def magic(self) -> bytes:
        """The first four bytes (fewer for a tiny file), without consuming them."""
        buf = bytearray(4)
        n = 0
        while n < 4:
            got = self.readinto(memoryview(buf)[n:])
            if not got:
                break
            n += got
        self._ahead = bytes(buf[:n]) + self._ahead
        return self._ahead[:4]

    def drain(self) -> None:
        """Read (and hash) the rest of the raw input, so ``sha256`` covers the file
        (nothing to do without hashing)."""
        if self._hasher is None:
            return
        buf = bytearray(DRAIN_BYTES)  # reused below: never hashed in place
        self.owned_buffers = False
        self._ahead = b""
        while self.readinto(buf):
            pass

    @property
    def sha256(self) -> str:
        if self._hash is None:
            raise ValueError("this source was opened with hash=False")
        while self._pending:
            self._pending.popleft().result()
        return self._hash.hexdigest()

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().result()
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
        super().close()


class GzipStream(io.RawIOBase):
    """Streaming gzip (RFC 1952) decoder over ``raw``, all members in turn.

    Written on ``zlib`` rather than ``gzip.GzipFile`` because GzipFile raises on a
    truncated stream inside a read and the bytes decoded in that read are lost;
    here every ``readinto`` returns what it decoded, and the error comes on the
    next call. Output per call is bounded by the caller's buffer (``max_length``),
    so a decompression bomb cannot grow memory.
    """

    def __init__(self, raw: RawSource) -> None:
        super().__init__()
        self._raw = raw
        self._in = b""  # compressed bytes not yet given to zlib (<= GZIP_READ_SIZE)
        self._dec: zlib._Decompress | None = None  # None between members
        self._fed = False  # the current member has received input

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        if not len(b):
            return 0  # (max_length 0 would mean "no limit" to zlib)
        while True:
            if not self._in and not self._refill():
                return 0
            if self._dec is None:
                self._in = self._in.lstrip(b"\0")  # zero padding between members
                if not self._in:
                    continue
                self._dec = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
                self._fed = False
            out = self._dec.decompress(self._in, len(b))
            self._fed = True
            self._in = self._dec.unconsumed_tail
            if self._dec.eof:
                self._in = self._dec.unused_data
                self._dec = None
            if out:
                b[: len(out)] = out
                return len(out)

    def _refill(self) -> bool:
        """Read more compressed input; False at a clean end, EOFError mid-member."""
        self._in = self._raw.read(GZIP_READ_SIZE) or b""
        if self._in:
            return True
        if self._dec is not None and self._fed:
            raise EOFError("gzip stream ended before the end-of-stream marker")
        return False


def decompressed(raw: RawSource, magic: bytes) -> tuple[BinaryIO, str | None]:
    """The stream to parse and its compression name, chosen by magic number."""
    if magic[:2] == GZIP_MAGIC:
        return GzipStream(raw), "gzip"  # type: ignore[return-value]
    if magic == ZSTD_MAGIC:
        dctx = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW)
        reader = dctx.stream_reader(
            raw, read_size=ZSTD_READ_SIZE, read_across_frames=True, closefd=False
        )
        return reader, "zstd"  # type: ignore[return-value]
    return raw, None  # type: ignore[return-value]


class ContentHash:
    """A decompressed stream that hashes the bytes it yields: the capture's content.

    The same capture stored plain, gzipped or zstd-compressed then has one SHA-256
    (``CaptureReader.content_sha256``), hence one ``capture_id``, and a re-ingest of it
    in another form replaces it instead of adding its rows a second time. Hashed in
    the reading thread: only compressed files pay for it (their raw bytes are hashed
    in the background too, for the ``sha256`` of the file as stored).
    """

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.sha = hashlib.sha256()
        self.at_end = False
        """True once the stream was read to its end (the hash covers the whole content)."""

    def readinto(self, b: memoryview | bytearray) -> int:
        got = self._inner.readinto(b) or 0  # type: ignore[attr-defined]
        if got:
            self.sha.update(b[:got])
        elif len(b):
            self.at_end = True
        return got

    def close(self) -> None:
        self._inner.close()


DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = (
    EOFError,  # gzip stream ended mid-member
    zlib.error,
    zstandard.ZstdError,
)


def read_full(stream: BinaryIO, view: memoryview) -> tuple[int, Exception | None]:
    """Fill ``view`` from ``stream``: (bytes read, decompression error or None).

    Fewer bytes than asked only at the end of the stream or on a decompression
    error (returned, not raised, so the bytes before it are kept). Pipes and
    decompressors return short reads, hence the loop. OSError propagates.
    """
    n = 0
    total = len(view)
    while n < total:
        try:
            got = stream.readinto(view[n:])  # type: ignore[attr-defined]
        except DECOMPRESSION_ERRORS as err:
            return n, err
        if not got:
            break
        n += got
    return n, None
