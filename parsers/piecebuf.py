"""A byte buffer for one direction of a stream that remembers which piece carried each byte.

How this works: a session parser is fed in-order *pieces* (``data, ts_first, ts_last``).
Messages do not line up with pieces, so the buffer keeps, next to the unconsumed bytes,
one ``(end_offset, ts_first, ts_last)`` entry per piece still (partly) buffered.
``end_offset`` is the stream offset just past the piece's last byte. The time of any
buffered byte is found by bisecting those ends; entries are dropped as bytes are consumed,
so the list stays as short as the buffer. Offsets are stream offsets (bytes fed to the
direction since the start, gaps included), so events can carry ``stream_offset`` directly.

Parsers read the buffer transactionally: look at ``data`` from ``pos``, and call
``consume`` only once a whole unit (header, frame, chunk line) was understood.
"""

from __future__ import annotations

from bisect import bisect_right
from operator import itemgetter

import numpy as np

from .events import Run

_END = itemgetter(0)


class PieceBuffer:
    """Unconsumed bytes of one direction plus the times of the pieces that carried them.

    Pieces added by ``append_run`` (the batch path) stay a NumPy array (``_arr``,
    after the ones in ``_list``) until a per-piece method needs them as tuples:
    ``times_many`` and ``consume`` work on the array directly.
    """

    __slots__ = ("_arr", "_list", "data", "start")

    def __init__(self, start: int = 0) -> None:
        self.data = bytearray()
        # stream offset of data[0]
        self.start = start
        # (end_offset, ts_first, ts_last) of each piece with bytes at or after ``start``;
        # the last entry also remembers the times of the newest piece once all is consumed
        self._list: list[tuple[int, int, int]] = []
        self._arr: np.ndarray | None = None  # newer pieces, rows of the same triple

    @property
    def pieces(self) -> list[tuple[int, int, int]]:
        """Every remembered piece as ``(end_offset, ts_first, ts_last)``."""
        if self._arr is not None:
            self._list.extend(map(tuple, self._arr.tolist()))
            self._arr = None
        return self._list

    @property
    def end(self) -> int:
        """Stream offset just past the last buffered byte (= bytes fed so far)."""
        return self.start + len(self.data)

    def append(self, data: bytes, ts_first: int, ts_last: int) -> None:
        """Add the next in-order piece."""
        if not data:
            return
        self._extend(data)
        self.pieces.append((self.end, ts_first, ts_last))

    def append_run(self, run: Run) -> None:
        """Add a run of in-order pieces at once (same state as appending each)."""
        if not run.data:
            return
        base = self.end
        self._extend(run.data)
        keep = np.diff(run.ends, prepend=0) > 0
        new = np.empty((int(keep.sum()), 3), dtype=np.int64)
        new[:, 0] = run.ends[keep] + base
        new[:, 1] = run.ts_first[keep]
        new[:, 2] = run.ts_last[keep]
        self._arr = new if self._arr is None else np.concatenate([self._arr, new])

    def _extend(self, data: bytes | bytearray | memoryview) -> None:
        """``data += data``, or a new buffer while a view of the old one is alive.

        A bytearray cannot be resized while an export of it (a NumPy array or a
        memoryview over it) exists. The parsers release theirs before consuming, but
        an export kept alive elsewhere (a traceback, a garbage cycle awaiting the
        collector) must not fail the ingest: the bytes move to a new buffer instead.
        """
        try:
            self.data += data
        except BufferError:
            self.data = self.data + data

    def _all(self) -> np.ndarray:
        """Every remembered piece as array rows (kept that way for the next call)."""
        if self._list:
            head = np.array(self._list, dtype=np.int64).reshape(-1, 3)
            self._arr = head if self._arr is None else np.concatenate([head, self._arr])
            self._list = []
        assert self._arr is not None
        return self._arr

    def times_many(self, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``times_at(first[i])[0]`` and ``times_at(last[i])[1]`` for buffered offsets."""
        a = self._all()
        n = a.shape[0]
        i = np.minimum(np.searchsorted(a[:, 0], first, "right"), n - 1)
        j = np.minimum(np.searchsorted(a[:, 0], last, "right"), n - 1)
        return a[i, 1], a[j, 2]

    def times_at(self, offset: int) -> tuple[int, int]:
        """``(ts_first, ts_last)`` of the piece that carried the byte at stream ``offset``.

        ``offset`` must be a buffered byte (``start <= offset < end``) or the last byte
        consumed; the newest piece answers for anything past the end.
        """
        arr = self._arr
        if arr is not None and (not self._list or offset >= self._list[-1][0]):
            # the answer is among the array pieces: no conversion to tuples
            i = min(int(np.searchsorted(arr[:, 0], offset, "right")), arr.shape[0] - 1)
            return int(arr[i, 1]), int(arr[i, 2])
        pieces = self._list
        i = bisect_right(pieces, offset, key=_END)
        if i >= len(pieces):
            i = len(pieces) - 1
        _, ts_first, ts_last = pieces[i]
        return ts_first, ts_last

    def consume(self, n: int) -> None:
        """Drop the first ``n`` buffered bytes; forget pieces that ended before them."""
        if n <= 0:
            return
        try:
            del self.data[:n]
        except BufferError:  # a view of the buffer is still alive (see _extend)
            self.data = self.data[n:]
        self.start += n
        # keep the newest piece even when fully consumed: times_at() may still ask
        # for the last byte consumed (a message ending exactly at a piece boundary)
        arr = self._arr
        if arr is not None:
            k = int(np.searchsorted(arr[:, 0], self.start - 1, "right"))
            if k:  # every listed piece ends before the array's first: all go
                self._list.clear()
                self._arr = arr[min(k, arr.shape[0] - 1) :]
                return
        pieces = self._list
        k = bisect_right(pieces, self.start - 1, key=_END)
        if k >= len(pieces) and arr is None:
            k = len(pieces) - 1
        if k > 0:
            del pieces[:k]

    def skip(self, length: int, ts: int) -> None:
        """Account for ``length`` bytes never captured; the buffer is emptied first."""
        self.consume(len(self.data))
        self.start += length
        self._list = [(self.start, ts, ts)]
        self._arr = None

    def drain(self) -> list[tuple[bytes, int, int]]:
        """Return every buffered byte as ``(data, ts_first, ts_last)`` pieces, and empty."""
        out: list[tuple[bytes, int, int]] = []
        pos = self.start
        for end, ts_first, ts_last in self.pieces:
            if end <= pos:
                continue
            out.append((bytes(self.data[pos - self.start : end - self.start]), ts_first, ts_last))
            pos = end
        self.consume(len(self.data))
        return out
