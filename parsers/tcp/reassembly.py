"""One direction of a TCP connection, reassembled into in-order byte pieces.

How this works: segments arrive with their unwrapped 64-bit stream offset (from
``analysis.FlowTracker``) in capture order. ``StreamReassembler.segment`` returns
the in-order pieces that became available because of it:

- in-order data (the common case) is returned at once: O(1);
- data beyond a hole is held (sorted by offset) until the hole fills;
- bytes already delivered or held are dropped: *first copy wins*. A later copy
  whose bytes differ is reported as a conflicting overlap;
- a hole is declared a capture gap (bytes never captured) when the peer ACKs past
  it (the receiver had the bytes, we did not), when held data exceeds
  ``max_held`` bytes, or at ``finish``. The parser above is then told the length
  of the gap and resynchronises.

Every delivered piece carries two times (DESIGN.md, "Time"): ``ts_first``, the
capture time of the first copy of those bytes, and ``ts_avail``, when every byte
up to the piece's end had arrived (the later of its own arrival and the
availability of the bytes before it). For the ``out`` direction the pipeline uses
``ts_first`` as the time a byte "left"; for ``in`` it uses ``ts_avail``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

# Bytes held beyond a hole before the hole is declared a gap: a receive window's
# worth on a fast link. Bounds memory per direction whatever the traffic does.
DEFAULT_MAX_HELD = 8 << 20
# Segments held beyond a hole before the hole is declared a gap. Bounds the cost
# of keeping them sorted (a reversed flood of tiny segments would be quadratic).
DEFAULT_MAX_HELD_SEGMENTS = 4096
# Delivered pieces remembered (by reference, no copy) to compare retransmitted
# copies against: enough for a retransmission timeout's worth of small messages.
RECENT_PIECES = 16


@dataclass(frozen=True, slots=True)
class Piece:
    """Contiguous in-order stream bytes with their times."""

    offset: int
    data: bytes
    ts_first: int
    ts_avail: int


@dataclass(frozen=True, slots=True)
class Gap:
    """``length`` bytes at ``offset`` were never captured."""

    offset: int
    length: int
    ts: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """A retransmitted copy disagreed with the first copy at ``offset``."""

    offset: int
    length: int
    ts: int


class StreamReassembler:
    """Sans-IO reassembly of one direction's byte stream."""

    __slots__ = (
        "_held", "_held_bytes", "_held_offsets", "_last_avail", "_recent", "max_held",
        "max_held_segments", "next",
    )

    def __init__(self, start: int = 0, *, max_held: int = DEFAULT_MAX_HELD,
                 max_held_segments: int = DEFAULT_MAX_HELD_SEGMENTS) -> None:
        self.next = start  # offset of the next byte to deliver
        self.max_held = max_held
        self.max_held_segments = max_held_segments
        self._held: list[tuple[int, bytes, int]] = []  # (offset, data, ts), sorted
        self._held_offsets: list[int] = []
        self._held_bytes = 0
        self._last_avail = -(1 << 62)
        self._recent: list[Piece] = []

    @property
    def held_bytes(self) -> int:
        return self._held_bytes

    def segment(self, offset: int, data: bytes, ts: int) -> list[Piece | Gap | Conflict]:
        """Add one segment's captured payload; return what became deliverable."""
        if not data:
            return []
        end = offset + len(data)
        out: list[Piece | Gap | Conflict] = []
        if offset < self.next:
            self._check_delivered(offset, data, ts, out)
        if end <= self.next:
            return out  # entirely old: a retransmission of delivered bytes
        if offset < self.next:
            data = data[self.next - offset :]
            offset = self.next
        if offset == self.next and not self._held:
            out.append(self._deliver(data, ts, ts))  # the common, in-order case
            return out
        self._hold(offset, data, ts, out)
        self._drain(out, ts)
        while self._held and (self._held_bytes > self.max_held
                              or len(self._held) > self.max_held_segments):
            self._skip_to_held(out, ts)
        return out

    def deliver_run(self, data: bytes, ends: np.ndarray, ts_first: np.ndarray) -> np.ndarray:
        """In-order segments at ``next``, nothing held: what ``segment`` would do for
        each (``data[ends[i-1]:ends[i]]`` arriving at ``ts_first[i]``), at once.

        The caller delivers the bytes itself; returns each piece's ``ts_avail``.
        """
        avail = np.maximum.accumulate(np.concatenate(([self._last_avail], ts_first)))[1:]
        base = self.next
        k = len(ends)
        for i in range(max(0, k - RECENT_PIECES), k):
            lo = int(ends[i - 1]) if i else 0
            self._recent.append(Piece(base + lo, data[lo : int(ends[i])], int(ts_first[i]),
                                      int(avail[i])))
        del self._recent[:-RECENT_PIECES]
        self.next = base + int(ends[-1])
        self._last_avail = int(avail[-1])
        return avail

    def ack(self, ack_offset: int, ts: int) -> list[Piece | Gap | Conflict]:
        """The peer acknowledged everything before ``ack_offset``.

        If that passes a hole we are waiting on, the hole was delivered to the
        receiver but not to us: a capture gap.
        """
        out: list[Piece | Gap | Conflict] = []
        if ack_offset > self.next and self._held and self._held[0][0] < ack_offset:
            self._skip_to_held(out, ts)
        return out

    def finish(self, ts: int) -> list[Piece | Gap | Conflict]:
        """End of connection or capture: deliver what is held, gaps included."""
        out: list[Piece | Gap | Conflict] = []
        while self._held:
            self._skip_to_held(out, ts)
        return out

    # --- internals --------------------------------------------------------------
    def _deliver(self, data: bytes, ts_first: int, ts_now: int) -> Piece:
        avail = max(ts_now, self._last_avail)
        self._last_avail = avail
        piece = Piece(self.next, data, ts_first, avail)
        self.next += len(data)
        self._recent.append(piece)
        if len(self._recent) > RECENT_PIECES:
            del self._recent[0]
        return piece

    def _check_delivered(
        self, offset: int, data: bytes, ts: int, out: list[Piece | Gap | Conflict]
    ) -> None:
        """Compare a retransmitted copy with the delivered bytes we still remember."""
        end = offset + len(data)
        for p in self._recent:
            p_end = p.offset + len(p.data)
            lo, hi = max(offset, p.offset), min(end, p_end)
            if lo < hi and data[lo - offset : hi - offset] != p.data[lo - p.offset : hi - p.offset]:
                out.append(Conflict(lo, hi - lo, ts))
                return

    def _drain(self, out: list[Piece | Gap | Conflict], ts: int) -> None:
        while self._held and self._held[0][0] <= self.next:
            off, data, ts_first = self._held.pop(0)
            self._held_offsets.pop(0)
            self._held_bytes -= len(data)
            if off + len(data) <= self.next:
                continue
            out.append(self._deliver(data[self.next - off :], ts_first, ts))

    def _skip_to_held(self, out: list[Piece | Gap | Conflict], ts: int) -> None:
        first = self._held[0][0]
        if first > self.next:
            out.append(Gap(self.next, first - self.next, ts))
            self.next = first
        self._drain(out, ts)

    def _hold(self, offset: int, data: bytes, ts: int, out: list[Piece | Gap | Conflict]) -> None:
        """Insert ``data`` keeping only bytes not already held (first copy wins)."""
        pos = bisect.bisect_right(self._held_offsets, offset)
        # trim against the previous held segment
        if pos > 0:
            p_off, p_data, _ = self._held[pos - 1]
            p_end = p_off + len(p_data)
            if p_end > offset:
                overlap = min(p_end, offset + len(data)) - offset
                if p_data[offset - p_off : offset - p_off + overlap] != data[:overlap]:
                    out.append(Conflict(offset, overlap, ts))
                if p_end >= offset + len(data):
                    return
                data = data[p_end - offset :]
                offset = p_end
        # split around following held segments
        while data and pos < len(self._held):
            n_off, n_data, _ = self._held[pos]
            end = offset + len(data)
            if n_off >= end:
                break
            if n_off > offset:
                self._insert(pos, offset, data[: n_off - offset], ts)
                pos += 1
                data = data[n_off - offset :]
                offset = n_off
            overlap = min(len(n_data), len(data))
            if n_data[:overlap] != data[:overlap]:
                out.append(Conflict(offset, overlap, ts))
            data = data[len(n_data) :]
            offset = n_off + len(n_data)
            pos += 1
        if data:
            self._insert(pos, offset, data, ts)

    def _insert(self, pos: int, offset: int, data: bytes, ts: int) -> None:
        self._held.insert(pos, (offset, data, ts))
        self._held_offsets.insert(pos, offset)
        self._held_bytes += len(data)
