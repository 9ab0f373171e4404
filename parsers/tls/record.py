"""TLS record framing for one direction of a TCP stream, with byte times.

How this works: a ``RecordReader`` receives in-order pieces of one direction's
stream (bytes + ``ts_first``/``ts_last``) and cuts them into records
(RFC 8446 §5.1 / RFC 5246 §6.2.1: ``type(1) legacy_record_version(2)
length(2) fragment``). A record takes ``ts_first`` of the piece holding its
first byte and ``ts_last`` of the piece holding its last byte.

It never raises on bad input. Instead it reports ``ReaderIssue``s:

- at the start of a stream whose first bytes are not a record header it scans
  for a *plausible* header (type 20..24, version 0x0300..0x0304, length
  1..max_record) that is followed by another plausible header, and resumes
  there (``midstream_resync``), or gives up after ``RESYNC_WINDOW`` bytes
  (``not_tls``);
- a bad header in the middle of a stream (``bad_record_header``) or a capture
  gap (``gap``) loses record alignment: the reader resynchronises the same way,
  and flags ``lost_sync`` so the session drops that direction's keys (the
  record sequence number is unknown from then on);
- a length above ``max_record`` stops the direction (``record_too_long``).
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass
from enum import Enum
from itertools import chain
from typing import NamedTuple

import numpy as np

from ..events import Run

# -- RFC 5246 §6.2.1 / RFC 8446 §5.1 ---------------------------------------------
RECORD_HEADER = struct.Struct("!BHH")
"""``ContentType type; ProtocolVersion legacy_record_version; uint16 length``."""
HEADER_LENGTH = RECORD_HEADER.size

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23
HEARTBEAT = 24  # RFC 6520
CONTENT_TYPES = range(CHANGE_CIPHER_SPEC, HEARTBEAT + 1)
"""The content types a record header may carry: the one rule detection, resync,
the reader and the batch scan (``scan``) share."""
MAJOR_VERSION = 3  # ProtocolVersion {3, x}: SSL 3.0 .. TLS 1.3 on the wire
MAX_MINOR_VERSION = 4

MAX_PLAINTEXT = 2**14
MAX_CIPHERTEXT = MAX_PLAINTEXT + 2048
"""RFC 5246 §6.2.3: "The length MUST NOT exceed 2^14 + 2048" (TLS 1.3 allows only
2^14 + 256, so the TLS 1.2 bound covers both)."""

RESYNC_WINDOW = 3 * (HEADER_LENGTH + MAX_CIPHERTEXT)
"""Bytes the resync scan examines before declaring the stream not TLS: enough
to hold two maximal records after an arbitrary cut, so any real TLS stream
resynchronises within it."""

COMPACT_THRESHOLD = 64 * 1024
"""Consumed bytes kept at the buffer front before it is compacted (amortises
``del buf[:n]``)."""

HEADER_CANDIDATE = re.compile(b"[%c-%c]%c[\x00-%c]" % (
    CONTENT_TYPES[0], CONTENT_TYPES[-1], MAJOR_VERSION, MAX_MINOR_VERSION))
"""A content type, then version major 3, minor 0..4: one regex pass finds the
places a record header may start (``plausible_length`` then checks each)."""


class ReaderState(Enum):
    START = "start"  # nothing parsed yet: the first header decides
    SYNC = "sync"  # aligned on record boundaries
    RESYNC = "resync"  # scanning for a plausible header pair
    STOPPED = "stopped"  # gave up on this direction


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One whole record as it appeared on the wire."""

    content_type: int
    version: int
    header: bytes
    fragment: bytes
    stream_offset: int
    ts_first: int
    ts_last: int


@dataclass(frozen=True, slots=True)
class ReaderIssue:
    """A framing problem, turned into an ``Anomaly`` by the session."""

    code: str
    detail: str
    stream_offset: int
    ts: int
    lost_sync: bool = False


def _is_hello(buf: bytes | bytearray, pos: int, length: int) -> bool:
    """A whole handshake record holding a Client/ServerHello needs no second header
    to confirm it (e.g. STARTTLS: the ClientHello follows plaintext, then silence)."""
    body = pos + HEADER_LENGTH
    if buf[pos] != HANDSHAKE or length < 4 or len(buf) < body + length:
        return False
    msg_length = int.from_bytes(buf[body + 1 : body + 4], "big")
    return buf[body] in (1, 2) and 38 <= msg_length <= length - 4


def plausible_length(buf: bytes | bytearray, pos: int, max_record: int) -> int | None:
    """Fragment length if ``buf[pos:pos+5]`` looks like a record header, else ``None``."""
    ctype, version, length = RECORD_HEADER.unpack_from(buf, pos)
    if (ctype in CONTENT_TYPES and version >> 8 == MAJOR_VERSION
            and version & 0xFF <= MAX_MINOR_VERSION and 0 < length <= max_record):
        return length
    return None


class Unread(NamedTuple):
    """``RecordReader.unread``: a look at the reader's buffer."""

    buf: bytearray
    pos: int
    """Buffer position of the next unread byte."""
    base: int
    """Stream offset of ``buf[0]``."""


class RecordReader:
    """Cuts one direction's stream into ``RawRecord``s (sans-IO)."""

    def __init__(self, max_record: int = MAX_CIPHERTEXT) -> None:
        self.max_record = max_record
        self.state = ReaderState.START
        self._buf = bytearray()
        self._pos = 0  # next unread byte in _buf
        self._base = 0  # stream offset of _buf[0]
        # (stream end offset, ts_first, ts_last) of each piece still (partly) buffered
        self._pieces: deque[tuple[int, int, int]] = deque()
        # pieces of ``append_run`` not yet needed one by one (rows of the same triple)
        self._arr: np.ndarray | None = None
        self._records = 0  # records returned so far

    @property
    def buffered(self) -> int:
        """Bytes held but not yet part of a returned record."""
        return len(self._buf) - self._pos

    @property
    def next_offset(self) -> int:
        """Stream offset of the next unread byte."""
        return self._base + self._pos

    def feed(self, data: bytes, ts_first: int, ts_last: int) -> list[RawRecord | ReaderIssue]:
        """Add one in-order piece; return the records (and issues) it completes."""
        if self.state is ReaderState.STOPPED:
            self._base += len(self._buf) + len(data)
            self._buf = bytearray()  # not clear(): see ``_compact``
            self._pos = 0
            return []
        self._settle()
        self._extend(data)
        self._pieces.append((self._base + len(self._buf), ts_first, ts_last))
        out: list[RawRecord | ReaderIssue] = []
        while True:
            item, progress = self.step()
            if item is not None:
                out.append(item)
            elif not progress:
                break  # no progress without more bytes
        self._compact()
        return out

    def append_run(self, run: Run) -> None:
        """Buffer a run of in-order pieces without framing them (see ``step``)."""
        base = self._base + len(self._buf)
        self._extend(run.data)
        new = np.empty((run.ends.size, 3), dtype=np.int64)
        new[:, 0] = run.ends + base
        new[:, 1] = run.ts_first
        new[:, 2] = run.ts_last
        self._arr = new if self._arr is None else np.concatenate([self._arr, new])

    def _extend(self, data: bytes) -> None:
        try:
            self._buf += data
        except BufferError:  # as in ``_compact``: a view outlived its read
            self._buf = self._buf + data

    def _settle(self) -> None:
        """Move array pieces into the deque (the per-piece code reads the deque)."""
        if self._arr is not None:
            self._pieces.extend(map(tuple, self._arr.tolist()))
            self._arr = None

    def step(self) -> tuple[RawRecord | ReaderIssue | None, bool]:
        """One move of the framing state machine: ``(item or None, progressed)``."""
        state = self.state
        if state is ReaderState.SYNC:
            item = self._next_record()
        elif state is ReaderState.START:
            item = self._start()
        elif state is ReaderState.RESYNC:
            item = self._resync()
        else:
            return None, False
        return item, item is not None or self.state is not state

    def piece_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The buffered pieces as arrays ``(end_offset, ts_first, ts_last)``."""
        n = len(self._pieces)
        a = np.fromiter(chain.from_iterable(self._pieces), dtype=np.int64, count=3 * n)
        a = a.reshape(n, 3)
        if self._arr is not None:
            a = np.concatenate([a, self._arr])
        return a[:, 0], a[:, 1], a[:, 2]

    def unread(self) -> Unread:
        """The buffered bytes for a batch path that frames records itself (TLS's
        ``_fast_records``): the buffer, where its unread bytes start, and the stream
        offset of its first byte. Read it, don't keep it: the next ``feed``,
        ``append_run`` or ``compact`` may resize it. Report what was framed with
        ``advance``."""
        return Unread(self._buf, self._pos, self._base)

    def advance(self, pos: int, records: int) -> None:
        """The batch path consumed whole records up to buffer position ``pos``."""
        self._pos = pos
        self._records += records

    def compact(self) -> None:
        """Drop consumed bytes and pieces (after ``step``/``advance``)."""
        self._compact()

    def gap(self, length: int, ts: int) -> list[ReaderIssue]:
        """``length`` stream bytes were never captured: drop the partial record, resync."""
        lost = self.buffered
        offset = self.next_offset
        self._base += len(self._buf) + length
        self._buf = bytearray()
        self._pos = 0
        self._pieces.clear()
        self._arr = None
        if self.state is ReaderState.STOPPED:
            return []
        self.state = ReaderState.RESYNC
        detail = f"{length} bytes missing; {lost} buffered bytes of a partial record dropped"
        return [ReaderIssue("gap", detail, offset, ts, lost_sync=self._records > 0)]

    def finish(self, ts: int) -> list[ReaderIssue]:
        """End of stream: report a partial record left in the buffer."""
        if self.buffered and self.state is ReaderState.RESYNC and not self._records:
            detail = f"no plausible TLS record header pair in {self.buffered} bytes"
            return [ReaderIssue("not_tls", detail, self.next_offset, ts)]
        if self.buffered and self.state is ReaderState.SYNC:
            detail = f"stream ended {self.buffered} bytes into a record"
            return [ReaderIssue("truncated_record", detail, self.next_offset, ts)]
        return []

    # -- framing -------------------------------------------------------------------
    def _next_record(self) -> RawRecord | ReaderIssue | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_LENGTH:
            return None
        ctype, version, length = RECORD_HEADER.unpack_from(buf, pos)
        if ctype not in CONTENT_TYPES or version >> 8 != 3:
            self.state = ReaderState.RESYNC
            detail = f"type {ctype} version 0x{version:04x}"
            return ReaderIssue(
                "bad_record_header", detail, self.next_offset, self._ts_at(pos)[0], True
            )
        if length > self.max_record:
            self.state = ReaderState.STOPPED
            detail = f"length {length} > {self.max_record}"
            return ReaderIssue("record_too_long", detail, self.next_offset, self._ts_at(pos)[0])
        end = pos + HEADER_LENGTH + length
        if len(buf) < end:
            return None
        ts_first = self._ts_at(pos)[0]
        ts_last = self._ts_at(end - 1)[1]
        record = RawRecord(
            content_type=ctype,
            version=version,
            header=bytes(buf[pos : pos + HEADER_LENGTH]),
            fragment=bytes(buf[pos + HEADER_LENGTH : end]),
            stream_offset=self._base + pos,
            ts_first=ts_first,
            ts_last=ts_last,
        )
        self._pos = end
        self._records += 1
        return record

    def _start(self) -> ReaderIssue | None:
        if self.buffered < HEADER_LENGTH:
            return None
        plausible = plausible_length(self._buf, self._pos, self.max_record) is not None
        self.state = ReaderState.SYNC if plausible else ReaderState.RESYNC
        return None

    def _resync(self) -> ReaderIssue | None:
        """Find the first plausible header followed by another; skip to it."""
        buf, start, max_record = self._buf, self._pos, self.max_record
        for match in HEADER_CANDIDATE.finditer(buf, start):
            i = match.start()
            if len(buf) - i < HEADER_LENGTH:
                break
            length = plausible_length(buf, i, max_record)
            if length is None:
                continue
            nxt = i + HEADER_LENGTH + length
            if not _is_hello(buf, i, length):
                if len(buf) - nxt < HEADER_LENGTH:
                    break  # cannot confirm yet: wait for more bytes (earliest candidate wins)
                if plausible_length(buf, nxt, max_record) is None:
                    continue
            skipped = i - start
            offset = self._base + start
            self._pos = i
            self.state = ReaderState.SYNC
            ts = self._ts_at(i)[0]
            lost = self._records > 0  # nothing parsed yet: no sequence state to lose
            return ReaderIssue("midstream_resync", f"skipped {skipped} bytes", offset, ts, lost)
        if self.buffered > RESYNC_WINDOW:
            self.state = ReaderState.STOPPED
            detail = f"no plausible TLS record header pair in {self.buffered} bytes"
            issue = ReaderIssue("not_tls", detail, self.next_offset, self._ts_at(start)[0])
            self._base += len(buf)
            self._buf = bytearray()
            self._pos = 0
            self._pieces.clear()
            self._arr = None
            return issue
        return None

    # -- times ---------------------------------------------------------------------
    def _ts_at(self, pos: int) -> tuple[int, int]:
        """(ts_first, ts_last) of the piece holding buffer position ``pos``.

        The deque holds the older pieces, ``_arr`` (a batch's) the newer ones: the
        array is searched in place, not turned into tuples (it can be a whole
        run's pieces, and this is asked for every record the general path takes).
        """
        offset = self._base + pos
        for end, ts_first, ts_last in self._pieces:
            if end > offset:
                return ts_first, ts_last
        arr = self._arr
        if arr is not None:
            i = min(int(np.searchsorted(arr[:, 0], offset, "right")), arr.shape[0] - 1)
            return int(arr[i, 1]), int(arr[i, 2])
        end, ts_first, ts_last = self._pieces[-1]
        return ts_first, ts_last

    def _compact(self) -> None:
        offset = self._base + self._pos
        pieces = self._pieces
        while pieces and pieces[0][0] <= offset:
            pieces.popleft()
        arr = self._arr
        if arr is not None and not pieces:
            arr = arr[int(np.searchsorted(arr[:, 0], offset, "right")) :]
            self._arr = arr if arr.shape[0] else None
        if self._pos and (self._pos >= COMPACT_THRESHOLD or self._pos == len(self._buf)):
            try:
                del self._buf[: self._pos]
            except BufferError:
                # a view of the buffer outlived its read (a NumPy array or memoryview
                # kept by a traceback or another thread's frame sample: seen once on a
                # Dask worker under load): leave that view its bytes, go on in a copy
                self._buf = self._buf[self._pos :]
            self._base += self._pos
            self._pos = 0
