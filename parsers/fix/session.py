"""FIX tag=value session parser (FIX 4.x and FIXT.1.1 / FIX 5.0), sans-IO.

How this works: each direction of a connection keeps one byte buffer. A message
is framed from its first three fields alone (FIX spec, "Message Format"):

    8=BeginString<SOH>9=BodyLength<SOH> ...body... 10=CheckSum<SOH>

BodyLength counts the bytes after the ``9=`` field's SOH up to and including the
SOH just before ``10=``; CheckSum is the sum of every byte before ``10=`` modulo
256, written as three digits. So once ``8=`` and ``9=`` are read, the parser knows
where the trailer must be and waits for exactly that many bytes, whatever the
segmentation: several messages per piece and one message across many pieces
come out the same.

When the buffer does not hold a message start (a capture that begins
mid-connection, bytes after a capture gap, garbage between messages), the parser
*hunts* for the next ``8=FIX`` and records one ``Anomaly`` for the skipped run.
When BodyLength does not land on ``10=``, the message is salvaged if a real
``<SOH>10=ddd<SOH>`` trailer sits before the next ``8=FIX`` (anomaly
``bad_body_length``, message kept), otherwise it is skipped by hunting.

Times: per direction, a deque of ``(end_offset, ts_first, ts_last)`` of the
pieces not yet consumed; a message takes ``ts_first`` from the piece holding its
first byte and ``ts_last`` from the piece holding its last byte (events.py).

Fields are split with ``bytes.split(SOH)``, no regex per field. Length-prefixed
data fields (RawData 96 etc.) may hold SOH; a message that needs them is re-read
field by field, honouring the declared lengths.

Batch path (``feed_many``, a ``Run`` of pieces): the run is appended to the
buffer at once and a compiled loop (``_scan_simple``) frames, checksums and
splits every *well-formed* message in a row (BodyLength right, CheckSum right,
pure ASCII, numeric tags, no data field), with times from the piece ends. They
come out as one ``FixMessageRun`` (columns, flat fields) instead of one
``FixMessage`` each; rows are built and redacted at flush (``rows._fix_runs``).
Anything else (garbage, a bad CheckSum or BodyLength, a skip run) goes through
the general ``_step``, one unit, with the buffer cut where ``feed`` would have
cut it at that point (the end of the piece it would have been handling), so the
outcome (waiting, salvage, ``message_too_large``) is the one piece-by-piece
feeding gives; the compiled loop resumes once no skip run is open. Equality with
``feed`` is tested on generated streams (tests/parsers/fix/test_fix_batch.py) and captures
(tests/pipelines/test_fast_path.py).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..events import Anomaly, Direction, Event, Run
from ..jitload import kernel
from .events import (  # (what the spec and the rows read without the session)
    _DATA_LENGTH_TAGS,
    BEGIN_PREFIX,
    DATA_FIELDS,
    DEFAULT_MAX_MESSAGE,
    HEADER_START,  # noqa: F401  (re-exported)
    LAYER,
    MAX_BEGIN_STRING_FIELD,
    MAX_BODY_LENGTH_DIGITS,
    MAX_SEQ_NUM,
    MAX_TAG,
    RUN_BODY_LENGTH,
    RUN_COLUMNS,
    RUN_FIELD_COUNT,
    RUN_NAMED,
    RUN_NAMED_FIRST,
    RUN_POSS_DUP,
    RUN_RAW_LENGTH,
    RUN_SEQ_NUM,
    RUN_SEQ_OK,
    RUN_STREAM_OFFSET,
    RUN_TS_FIRST,
    RUN_TS_LAST,
    SOH,
    TAG_BEGIN_STRING,
    TAG_BODY_LENGTH,  # noqa: F401  (re-exported)
    TAG_CHECKSUM,  # noqa: F401  (re-exported)
    TAG_CL_ORD_ID,
    TAG_EXEC_TYPE,
    TAG_MSG_SEQ_NUM,
    TAG_MSG_TYPE,
    TAG_ORD_STATUS,
    TAG_ORDER_ID,
    TAG_ORIG_CL_ORD_ID,
    TAG_POSS_DUP_FLAG,
    TAG_SENDER_COMP_ID,
    TAG_SENDING_TIME,
    TAG_TARGET_COMP_ID,
    TAG_TEXT,
    TRAILER_LEN,
    FixMessage,
    FixMessageRun,
)

__all__ = ["DATA_FIELDS", "LAYER", "RUN_NAMED", "FixMessage", "FixMessageRun", "FixSession"]

# --- Framing outcomes --------------------------------------------------------
_NEED_MORE = "need_more"
_GARBAGE = "garbage"  # no message start here
_BAD_HEADER = "bad_header"  # 8=FIX but no well-formed 9=
_OK = "ok"
_SALVAGED = "salvaged"  # BodyLength wrong, real trailer found
_BAD_BODY_LENGTH = "bad_body_length"  # BodyLength wrong, nothing to salvage
_TOO_LARGE = "message_too_large"
_TRUNCATED = "truncated_message"  # the capture ended inside the message


@dataclass(slots=True)
class _Frame:
    """Result of trying to frame a message at buffer position ``start``."""

    outcome: str
    start: int = 0
    trailer: int = 0  # position of "10=" (relative to the buffer)
    end: int = 0  # one past the trailer's SOH
    body_length: int = 0
    body_start: int = 0  # first byte after the 9= field's SOH


@dataclass(slots=True)
class _Stream:
    """One direction's buffer, times and resync state."""

    buf: bytearray = field(default_factory=bytearray)
    base: int = 0  # stream offset of buf[0]
    times: deque[tuple[int, int, int]] = field(default_factory=deque)
    seen_message: bool = False
    hunting: str | None = None  # anomaly code of the current skip run
    hunt_start: int = 0  # stream offset where the skip run began
    hunt_ts: int | None = None


class FixSession:
    """Per-connection FIX parser with the ``SessionParser`` shape (events.py).

    ``max_message`` caps one message's size and so each direction's buffer
    (a message start that does not complete within it is skipped with
    ``message_too_large``).
    """

    def __init__(self, flow_id: int, *, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.flow_id = flow_id
        self.max_message = max_message
        self._streams: dict[Direction, _Stream] = {"out": _Stream(), "in": _Stream()}

    # --- SessionParser API ---------------------------------------------------
    def independent(self) -> bool:
        """The two directions never interact: each is framed on its own."""
        return True

    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Take the next in-order piece of ``direction``; return finished messages."""
        if not data:
            return []
        st = self._streams[direction]
        st.times.append((st.base + len(st.buf) + len(data), ts_first, ts_last))
        if st.hunting is not None and st.hunt_ts is None:
            st.hunt_ts = ts_first
        if st.buf:
            st.buf += data
            return self._drain(st, direction, st.buf, final=False)
        return self._drain(st, direction, data, final=False)

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """Take a run of in-order pieces: the same events as ``feed`` piece by piece.

        The run is appended to the buffer at once. Well-formed messages (see
        ``_scan_simple``) are framed, checked and split in one compiled loop over
        all of it and come out as ``FixMessageRun``s; anything else goes through
        the general ``_step``, one unit at a time, with the buffer cut at the end
        of the piece ``feed`` would have been handling then (so that waiting,
        salvaging and size limits decide exactly as they would piece by piece),
        and the compiled loop resumes once no skip run is open.
        """
        data = run.data
        if not data:
            return []
        st = self._streams[direction]
        if not _scan_simple.overloads:  # type: ignore[attr-defined]  # (its dispatcher's)
            _compile_scan()
        ends_rel = np.asarray(run.ends, dtype=np.int64)
        piece_first = np.ascontiguousarray(run.ts_first, dtype=np.int64)
        piece_last = np.ascontiguousarray(run.ts_last, dtype=np.int64)
        if ends_rel.size > 1 and (ends_rel[0] == 0 or (ends_rel[1:] == ends_rel[:-1]).any()):
            keep = np.diff(ends_rel, prepend=0) > 0  # empty pieces: ``feed`` ignores them
            ends_rel, piece_first, piece_last = ends_rel[keep], piece_first[keep], piece_last[keep]
        piece_ends = ends_rel + (st.base + len(st.buf))  # stream offsets
        if st.times:
            old = np.array(st.times, dtype=np.int64).reshape(-1, 3)
            times = (np.concatenate((old[:, 0], piece_ends)),
                     np.concatenate((old[:, 1], piece_first)),
                     np.concatenate((old[:, 2], piece_last)))
        else:
            times = (piece_ends, piece_first, piece_last)
        ends = piece_ends.tolist()
        firsts = piece_first.tolist()
        st.times.extend(zip(ends, firsts, piece_last.tolist(), strict=True))
        if st.buf:
            st.buf += data
        else:
            st.buf = bytearray(data)
        work = st.buf
        n = len(work)
        ends = [e - st.base for e in ends]  # buffer positions
        events: list[Event] = []
        pos = j = 0  # buffer position; the piece ``feed`` would be handling
        stuck = False  # the unit at ``pos`` needs the general path
        arr = np.frombuffer(work, dtype=np.uint8)
        try:
            while pos < n:
                if st.hunting is None and not stuck:
                    pos = self._fast(st, direction, arr, pos, n, times, events)
                    if pos >= n:
                        break
                    while ends[j] <= pos:
                        j += 1
                    if self._frame(work, pos, False, n).outcome == _NEED_MORE:
                        break  # then it needs more at every piece end too
                    stuck = True
                if st.hunting is not None and st.hunt_ts is None:
                    st.hunt_ts = firsts[j]  # what ``feed`` of piece j does
                consumed = False
                if pos < ends[j]:
                    pos, consumed = self._step(st, direction, work, pos, ends[j], False, events)
                if consumed:
                    stuck = False
                    continue
                # Piece j is done with: ``feed`` would compact here and take the next.
                if st.hunting is not None:
                    self._trim_times(st, st.base + pos)
                j += 1
                if j == len(ends):
                    break
        finally:
            del arr  # release the export: the buffer is resized below
        self._compact(st, work, pos)
        return events

    def _fast(
        self,
        st: _Stream,
        direction: Direction,
        arr: np.ndarray,
        pos: int,
        n: int,
        times: tuple[np.ndarray, np.ndarray, np.ndarray],
        events: list[Event],
    ) -> int:
        """Take the well-formed messages at buffer position ``pos``; return where they end."""
        while True:
            messages, fields, values, pos, full = _scan_simple(
                arr, pos, n, st.base, self.max_message, *times)
            if messages.shape[0]:
                events.append(FixMessageRun.of(self.flow_id, direction, messages, fields, values))
                st.seen_message = True
                self._trim_times(st, st.base + pos)
            if not full:
                return pos

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        """``length`` bytes of ``direction`` were never captured: drop, then hunt."""
        st = self._streams[direction]
        events: list[Event] = []
        end = st.base + len(st.buf)
        if st.hunting is not None:
            events.extend(self._end_hunt(st, direction, end, ts))
        detail = f"{length} bytes missing"
        if st.buf:
            detail += f"; dropped {len(st.buf)} buffered bytes of an unfinished message"
        events.append(self._anomaly(direction, "stream_gap", ts, detail, end))
        st.buf = bytearray()
        st.times.clear()
        st.base = end + length
        self._start_hunt(st, "gap_resync", st.base, None)
        return events

    def finish(self, ts: int) -> list[Event]:
        """Flush both directions at the end of the connection or capture."""
        events: list[Event] = []
        for direction, st in self._streams.items():
            if st.buf:
                events.extend(self._drain(st, direction, st.buf, final=True))
            # A final drain consumes everything: what did not frame is in a skip run.
            end = st.base + len(st.buf)
            if st.hunting is not None:
                events.extend(self._end_hunt(st, direction, end, ts))
            st.base = end
            st.buf = bytearray()
            st.times.clear()
        return events

    # --- Buffer walk ---------------------------------------------------------
    def _drain(
        self, st: _Stream, direction: Direction, work: bytes | bytearray, *, final: bool
    ) -> list[Event]:
        """Frame every complete message in ``work``; keep the rest in ``st.buf``."""
        events: list[Event] = []
        pos, n = 0, len(work)
        while pos < n:
            pos, consumed = self._step(st, direction, work, pos, n, final, events)
            if not consumed:
                break
        self._compact(st, work, pos)
        return events

    def _step(
        self,
        st: _Stream,
        direction: Direction,
        work: bytes | bytearray,
        pos: int,
        n: int,
        final: bool,
        events: list[Event],
    ) -> tuple[int, bool]:
        """Handle at most one unit of ``work[pos:n]`` (the buffer as if it ended at ``n``).

        Returns the position to go on from and whether a unit was consumed (False:
        more bytes are needed, or a skip run reached the end).
        """
        if st.hunting is not None:
            found = work.find(BEGIN_PREFIX, pos, n)
            if found < 0:
                # Keep a tail that may be the start of a split "8=FIX".
                keep = 0 if final else len(BEGIN_PREFIX) - 1
                return max(pos, n - keep), False
            events.extend(self._end_hunt(st, direction, st.base + found))
            pos = found
        frame = self._frame(work, pos, final, n)
        if frame.outcome == _NEED_MORE:
            return pos, False
        return self._consume(st, direction, work, frame, events), True

    def _consume(
        self,
        st: _Stream,
        direction: Direction,
        work: bytes | bytearray,
        frame: _Frame,
        events: list[Event],
    ) -> int:
        """Act on one framing outcome; return the buffer position to go on from."""
        start = frame.start
        if frame.outcome in (_OK, _SALVAGED):
            if frame.outcome == _SALVAGED:
                actual = frame.trailer - frame.body_start
                events.append(
                    self._anomaly(
                        direction, "bad_body_length", self._ts_at(st, st.base + start),
                        f"BodyLength says {frame.body_length}; the trailer is at {actual}",
                        st.base + start,
                    )
                )
            events.extend(self._message(st, direction, work, frame))
            st.seen_message = True
            self._trim_times(st, st.base + frame.end)
            return frame.end
        if frame.outcome == _GARBAGE:
            code = "garbage_skipped"
            if not st.seen_message and st.base + start == 0:
                code = "midstream_resync"
        else:  # _BAD_HEADER, _BAD_BODY_LENGTH, _TOO_LARGE, _TRUNCATED: skip this 8=FIX
            code = frame.outcome
        self._start_hunt(st, code, st.base + start, self._ts_at(st, st.base + start))
        # Hunting resumes one byte on, so this very "8=FIX" is not found again.
        return start + 1 if frame.outcome != _GARBAGE else start

    def _compact(self, st: _Stream, work: bytes | bytearray, pos: int) -> None:
        """Drop consumed bytes; ``work`` is either ``st.buf`` or a fresh piece."""
        if work is st.buf:
            del st.buf[:pos]
        else:
            st.buf = bytearray(work[pos:])
        st.base += pos
        if st.hunting is not None:
            self._trim_times(st, st.base)

    # --- Framing -------------------------------------------------------------
    def _frame(self, work: bytes | bytearray, p: int, final: bool, n: int) -> _Frame:
        """Try to frame one message starting at ``work[p]``; ``work`` ends at ``n``."""
        avail = n - p
        if avail < len(BEGIN_PREFIX):
            if not final and BEGIN_PREFIX.startswith(work[p:n]):
                return _Frame(_NEED_MORE)
            return _Frame(_GARBAGE, p)
        if not work.startswith(BEGIN_PREFIX, p):
            return _Frame(_GARBAGE, p)
        soh1 = work.find(b"\x01", p, min(p + MAX_BEGIN_STRING_FIELD, n))
        if soh1 < 0:
            return self._wait_or(_BAD_HEADER, p, avail < MAX_BEGIN_STRING_FIELD and not final)
        if n < soh1 + 3:
            return self._wait_or(_BAD_HEADER, p, not final)
        if work[soh1 + 1 : soh1 + 3] != b"9=":
            return _Frame(_BAD_HEADER, p)
        digits_end = soh1 + 3 + MAX_BODY_LENGTH_DIGITS + 1
        soh2 = work.find(b"\x01", soh1 + 3, min(digits_end, n))
        if soh2 < 0:
            return self._wait_or(_BAD_HEADER, p, n < digits_end and not final)
        digits = work[soh1 + 3 : soh2]
        if not digits or not digits.isdigit():
            return _Frame(_BAD_HEADER, p)
        body_length = int(digits)
        trailer = soh2 + 1 + body_length
        end = trailer + TRAILER_LEN
        if end - p > self.max_message:
            return self._salvage(work, p, soh2, body_length, final, n, short=False)
        if n < end:
            if not final:
                return _Frame(_NEED_MORE)
            return self._salvage(work, p, soh2, body_length, final, n, short=True)
        if _is_trailer(work, trailer):
            return _Frame(_OK, p, trailer, end, body_length, soh2 + 1)
        return self._salvage(work, p, soh2, body_length, final, n, short=False)

    @staticmethod
    def _wait_or(outcome: str, p: int, can_wait: bool) -> _Frame:
        return _Frame(_NEED_MORE) if can_wait else _Frame(outcome, p)

    def _salvage(
        self,
        work: bytes | bytearray,
        p: int,
        soh2: int,
        body_length: int,
        final: bool,
        n: int,
        *,
        short: bool,
    ) -> _Frame:
        """BodyLength missed the trailer: look for the real one before the next 8=FIX.

        ``short``: the stream ended before BodyLength's end; with no trailer found
        that is a truncated message, not a lying BodyLength.
        """
        nxt = work.find(BEGIN_PREFIX, soh2, n)
        limit = n if nxt < 0 else nxt
        t = work.find(b"\x0110=", soh2, limit)
        while t >= 0:
            if t + 1 + TRAILER_LEN <= limit and _is_trailer(work, t + 1):
                end = t + 1 + TRAILER_LEN
                return _Frame(_SALVAGED, p, t + 1, end, body_length, soh2 + 1)
            t = work.find(b"\x0110=", t + 1, limit)
        if nxt < 0 and not final and n - p < self.max_message:
            return _Frame(_NEED_MORE)
        if nxt < 0 and n - p >= self.max_message:
            return _Frame(_TOO_LARGE, p)
        return _Frame(_TRUNCATED if short and nxt < 0 else _BAD_BODY_LENGTH, p)

    # --- Events --------------------------------------------------------------
    def _message(
        self, st: _Stream, direction: Direction, work: bytes | bytearray, frame: _Frame
    ) -> list[Event]:
        """Build the ``FixMessage`` (and a ``bad_checksum`` anomaly if it fails)."""
        raw = bytes(work[frame.start : frame.end])
        offset = st.base + frame.start
        head = frame.trailer - frame.start
        checksum_ok = (sum(raw[:head]) & 0xFF) == int(raw[head + 3 : head + 6])
        fields, bad_fields = _split_fields(raw)
        if any(tag > MAX_TAG for tag, _ in fields):  # the fields column holds int32 tags
            kept = [f for f in fields if f[0] <= MAX_TAG]
            bad_fields += len(fields) - len(kept)
            fields = kept
        ts_first, _ = self._times_of(st, offset)
        _, ts_last = self._times_of(st, offset + len(raw) - 1)
        named = dict(reversed(fields))  # first occurrence of each tag wins
        seq = named.get(TAG_MSG_SEQ_NUM)
        msg = FixMessage(
            ts_first=ts_first,
            ts_last=ts_last,
            flow_id=self.flow_id,
            direction=direction,
            stream_offset=offset,
            begin_string=named.get(TAG_BEGIN_STRING, ""),
            body_length=frame.body_length,
            msg_type=named.get(TAG_MSG_TYPE),
            msg_seq_num=_seq_num(seq),
            sender_comp_id=named.get(TAG_SENDER_COMP_ID),
            target_comp_id=named.get(TAG_TARGET_COMP_ID),
            sending_time=named.get(TAG_SENDING_TIME),
            cl_ord_id=named.get(TAG_CL_ORD_ID),
            orig_cl_ord_id=named.get(TAG_ORIG_CL_ORD_ID),
            order_id=named.get(TAG_ORDER_ID),
            exec_type=named.get(TAG_EXEC_TYPE),
            ord_status=named.get(TAG_ORD_STATUS),
            text=named.get(TAG_TEXT),
            poss_dup=named.get(TAG_POSS_DUP_FLAG) == "Y",
            checksum_ok=checksum_ok,
            fields=fields,
            raw_length=len(raw),
        )
        events: list[Event] = []
        if not checksum_ok:
            events.append(
                self._anomaly(
                    direction, "bad_checksum", ts_first,
                    f"CheckSum says {raw[head + 3 : head + 6].decode()}, "
                    f"bytes sum to {sum(raw[:head]) & 0xFF:03d}",
                    offset,
                )
            )
        if bad_fields:
            events.append(
                self._anomaly(
                    direction, "bad_field", ts_first,
                    f"{bad_fields} field(s) without a numeric tag=value form", offset,
                )
            )
        events.append(msg)
        return events

    def _anomaly(
        self, direction: Direction, code: str, ts: int, detail: str, offset: int | None
    ) -> Anomaly:
        return Anomaly(
            ts=ts, flow_id=self.flow_id, direction=direction, layer=LAYER, code=code,
            detail=detail, stream_offset=offset,
        )

    # --- Resync --------------------------------------------------------------
    @staticmethod
    def _start_hunt(st: _Stream, code: str, offset: int, ts: int | None) -> None:
        st.hunting = code
        st.hunt_start = offset
        st.hunt_ts = ts

    def _end_hunt(
        self, st: _Stream, direction: Direction, offset: int, default_ts: int = 0
    ) -> list[Anomaly]:
        """Close the skip run at stream ``offset``; one anomaly if bytes were skipped."""
        code, start, ts = st.hunting, st.hunt_start, st.hunt_ts
        st.hunting = None
        st.hunt_ts = None
        if code is None or offset <= start:
            return []
        detail = f"skipped {offset - start} bytes"
        return [self._anomaly(direction, code, default_ts if ts is None else ts, detail, start)]

    # --- Times ---------------------------------------------------------------
    @staticmethod
    def _times_of(st: _Stream, offset: int) -> tuple[int, int]:
        """(ts_first, ts_last) of the piece holding stream byte ``offset``."""
        for end, ts_first, ts_last in st.times:
            if end > offset:
                return ts_first, ts_last
        if st.times:
            return st.times[-1][1], st.times[-1][2]
        return 0, 0

    def _ts_at(self, st: _Stream, offset: int, default: int = 0) -> int:
        if not st.times:
            return default
        return self._times_of(st, offset)[0]

    @staticmethod
    def _trim_times(st: _Stream, consumed: int) -> None:
        """Forget pieces whose bytes all lie before stream offset ``consumed``."""
        times = st.times
        while times and times[0][0] <= consumed:
            times.popleft()


def _is_trailer(work: bytes | bytearray, t: int) -> bool:
    """``work[t:]`` starts with ``10=ddd<SOH>`` right after an SOH."""
    return (
        work[t - 1] == SOH
        and work.startswith(b"10=", t)
        and work[t + 3 : t + 6].isdigit()
        and work[t + 6] == SOH
    )


def _seq_num(value: str | None) -> int | None:
    """MsgSeqNum (34) as an int when it is one that fits the int64 column."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    n = int(value)
    return n if n <= MAX_SEQ_NUM else None


def _split_fields(raw: bytes) -> tuple[list[tuple[int, str]], int]:
    """Split a framed message into ``(tag, value)`` pairs; count malformed fields.

    Fast path, all in C-level loops: in a pure-ASCII message where no value holds
    "=", turning every "=" into SOH and splitting once alternates tags and values.
    Anything else (non-ASCII, "=" inside a value, a field without a numeric tag, a
    data field such as RawData that holds an SOH) goes the slow way, field by field.
    """
    try:
        text = raw.decode("ascii")[:-1]
    except UnicodeDecodeError:
        return _split_fields_slow(raw)
    parts = text.replace("=", "\x01").split("\x01")
    if len(parts) != 2 * (text.count("\x01") + 1):
        return _split_fields_slow(raw)
    tags = parts[0::2]
    # isdigit() on the joined tags rejects "+1", " 1", "1_0" that int() would take.
    if "" in tags or not "".join(tags).isdigit():
        return _split_fields_slow(raw)
    ints = list(map(int, tags))
    fields = list(zip(ints, parts[1::2], strict=True))
    if not _DATA_LENGTH_TAGS.isdisjoint(ints) and not _data_fields_whole(fields):
        return _split_fields_slow(raw)
    return fields, 0


def _data_fields_whole(fields: list[tuple[int, str]]) -> bool:
    """Does every data field (RawData...) have exactly its declared length?"""
    want: dict[int, int] = {}
    for tag, value in fields:
        if tag in DATA_FIELDS and value.isdigit():
            want[DATA_FIELDS[tag]] = int(value)
        elif tag in want and len(value) != want.pop(tag):
            return False
    return True


def _split_fields_slow(raw: bytes) -> tuple[list[tuple[int, str]], int]:
    """Field-by-field split honouring data-field lengths; values decoded as UTF-8
    where valid, else Latin-1 (FIX leaves non-ASCII encodings to MessageEncoding 347)."""
    fields: list[tuple[int, str]] = []
    bad = 0
    data_len: dict[int, int] = {}
    pos, n = 0, len(raw)
    while pos < n:
        eq = raw.find(b"=", pos)
        soh = raw.find(b"\x01", pos)
        if soh < 0:
            soh = n
        if eq < 0 or eq > soh or not raw[pos:eq].isdigit():
            bad += 1
            pos = soh + 1
            continue
        tag = int(raw[pos:eq])
        want = data_len.pop(tag, None)
        if want is not None and eq + 1 + want < n and raw[eq + 1 + want] == SOH:
            soh = eq + 1 + want
        value = _decode(raw[eq + 1 : soh])
        if tag in DATA_FIELDS and value.isdigit():
            data_len[DATA_FIELDS[tag]] = int(value)
        fields.append((tag, value))
        pos = soh + 1
    return fields, bad


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


# --- Batch path: the compiled scan of well-formed messages ---------------------
MAX_RUN_MESSAGES = 1 << 16
"""Most messages one ``_scan_simple`` call returns (one ``FixMessageRun``)."""
SCAN_WINDOW = 1 << 20
"""``_scan_simple`` starts no message this many bytes past where it started."""
MIN_MESSAGE = len(BEGIN_PREFIX + b"\x019=0\x0110=000\x01")
MAX_SEQ_DIGITS = 18
"""A MsgSeqNum of more digits may not fit int64: the general path has it."""

_SLOT_SEQ = len(RUN_NAMED)
_SLOT_POSS_DUP = _SLOT_SEQ + 1
_SLOT_OF = np.full(max(TAG_EXEC_TYPE, TAG_POSS_DUP_FLAG) + 1, -1, dtype=np.int64)
for _slot, (_, _tag) in enumerate(RUN_NAMED):
    _SLOT_OF[_tag] = _slot
_SLOT_OF[TAG_MSG_SEQ_NUM] = _SLOT_SEQ
_SLOT_OF[TAG_POSS_DUP_FLAG] = _SLOT_POSS_DUP
_IS_DATA_LENGTH = np.zeros(max(DATA_FIELDS) + 1, dtype=np.bool_)
_IS_DATA_LENGTH[list(DATA_FIELDS)] = True


@kernel(cache=True)
def _scan_simple(buf: np.ndarray, pos: int, n: int, base: int, max_message: int,
                 t_ends: np.ndarray, t_first: np.ndarray, t_last: np.ndarray) -> tuple:
    """Consecutive well-formed messages at ``buf[pos:n]``, their fields split.

    Well-formed: what ``_frame`` calls OK (``8=FIX``, SOH within 32 bytes,
    ``9=`` with 1-10 digits, ``10=ddd<SOH>`` exactly where BodyLength says, at
    most ``max_message`` bytes) with a right CheckSum, pure ASCII, no data-length
    tag, every field ``digits=value`` (the value may hold "=": both splits of
    ``_split_fields`` give it whole, with no ``bad_field``), tags <= ``MAX_TAG``,
    MsgSeqNum not a digit string longer than ``MAX_SEQ_DIGITS``. Stops at the
    first message that is not (or not all buffered), after ``MAX_RUN_MESSAGES``,
    or once a message would start ``SCAN_WINDOW`` bytes past ``pos`` (then ``full``).

    ``base`` is the stream offset of ``buf[0]``; ``t_*`` are the pieces' stream
    end offsets and times (``_times_of``: the first piece ending past a byte).
    Returns ``(messages, fields, values, pos, full)`` (see ``FixMessageRun``).
    """
    span = min(n - pos, SCAN_WINDOW + max_message)
    cap_m = min(MAX_RUN_MESSAGES, span // MIN_MESSAGE + 1)
    cap_f = span // 3 + 2  # a field is at least "d=" and its SOH
    msgs = np.empty((cap_m, RUN_COLUMNS), np.int64)
    fields = np.empty((cap_f, 2), np.int64)
    vdata = np.empty(max(span, 0), np.uint8)
    slot = np.empty(_SLOT_POSS_DUP + 1, np.int64)
    vstart = np.empty(_SLOT_POSS_DUP + 1, np.int64)
    last_piece = t_ends.shape[0] - 1
    ti = min(np.searchsorted(t_ends, base + pos, "right"), last_piece)
    k = 0
    nf = 0
    nv = 0
    full = False
    origin = pos
    while True:
        if k == cap_m or pos - origin >= SCAN_WINDOW:
            full = pos < n
            break
        p = pos
        if n - p < MIN_MESSAGE:
            break
        if buf[p] != 56 or buf[p + 1] != 61 or buf[p + 2] != 70 or buf[p + 3] != 73 \
                or buf[p + 4] != 88:  # "8=FIX"
            break
        s1 = -1
        for i in range(p + 5, min(p + MAX_BEGIN_STRING_FIELD, n)):
            if buf[i] == SOH:
                s1 = i
                break
        if s1 < 0 or s1 + 3 > n or buf[s1 + 1] != 57 or buf[s1 + 2] != 61:  # "9="
            break
        s2 = -1
        bl = np.int64(0)
        for i in range(s1 + 3, min(s1 + 3 + MAX_BODY_LENGTH_DIGITS + 1, n)):
            c = np.int64(buf[i])
            if c == SOH:
                s2 = i
                break
            if c < 48 or c > 57:
                break
            bl = bl * 10 + (c - 48)
        if s2 <= s1 + 3:
            break
        trailer = s2 + 1 + bl
        end = trailer + TRAILER_LEN
        if end - p > max_message or end > n:
            break
        if buf[trailer - 1] != SOH or buf[trailer] != 49 or buf[trailer + 1] != 48 \
                or buf[trailer + 2] != 61 or buf[end - 1] != SOH:  # "<SOH>10=ddd<SOH>"
            break
        cs = np.int64(0)
        for i in range(trailer + 3, trailer + 6):
            c = np.int64(buf[i])
            if c < 48 or c > 57:
                cs = -1  # type: ignore[assignment]  # Numba: int64
                break
            cs = cs * 10 + (c - 48)
        if cs < 0:
            break
        total = np.int64(0)
        for i in range(p, trailer):
            total += buf[i]
        if (total & 0xFF) != cs:
            break
        # Fields: digits "=" value SOH, up to the trailer's SOH at end - 1.
        f0 = nf
        v0 = nv
        slot[:] = -1
        last = end - 1
        ok = True
        i = p
        while True:
            tag = np.int64(0)
            j = i
            while True:
                c = np.int64(buf[j])
                if c == 61:
                    break
                if c < 48 or c > 57:
                    ok = False
                    break
                tag = tag * 10 + (c - 48)
                if tag > MAX_TAG:
                    ok = False
                    break
                j += 1
            if not ok or j == i or (tag < _IS_DATA_LENGTH.shape[0] and _IS_DATA_LENGTH[tag]):
                ok = False
                break
            j += 1
            v = nv
            while True:  # the value: ends at an SOH (buf[last] is one)
                c = np.int64(buf[j])
                if c == SOH:
                    break
                if c >= 128:
                    ok = False
                    break
                vdata[nv] = c
                nv += 1
                j += 1
            if not ok:
                break
            if tag < _SLOT_OF.shape[0]:
                s = _SLOT_OF[tag]
                if s >= 0 and slot[s] < 0:
                    slot[s] = nf - f0
                    vstart[s] = v
            fields[nf, 0] = tag
            fields[nf, 1] = nv - v
            nf += 1
            if j == last:
                break
            i = j + 1
        seq = np.int64(0)
        seq_ok = False
        if ok and slot[_SLOT_SEQ] >= 0:
            a = vstart[_SLOT_SEQ]
            b = a + fields[f0 + slot[_SLOT_SEQ], 1]
            seq_ok = b > a
            for q in range(a, b):
                c = np.int64(vdata[q])
                if c < 48 or c > 57:
                    seq_ok = False
                    break
                seq = seq * 10 + (c - 48)
            if seq_ok and b - a > MAX_SEQ_DIGITS:
                ok = False
        if not ok:
            nf = f0
            nv = v0
            break
        f = slot[_SLOT_POSS_DUP]
        row = msgs[k]
        row[RUN_POSS_DUP] = (f >= 0 and fields[f0 + f, 1] == 1
                             and vdata[vstart[_SLOT_POSS_DUP]] == 89)  # "Y"
        row[RUN_SEQ_NUM] = seq if seq_ok else 0
        row[RUN_SEQ_OK] = seq_ok
        offset = base + p
        while ti < last_piece and t_ends[ti] <= offset:
            ti += 1
        row[RUN_TS_FIRST] = t_first[ti]
        while ti < last_piece and t_ends[ti] <= offset + (end - p) - 1:
            ti += 1
        row[RUN_TS_LAST] = t_last[ti]
        row[RUN_STREAM_OFFSET] = offset
        row[RUN_RAW_LENGTH] = end - p
        row[RUN_BODY_LENGTH] = bl
        row[RUN_FIELD_COUNT] = nf - f0
        row[RUN_NAMED_FIRST:] = slot[:_SLOT_SEQ]
        k += 1
        pos = end  # type: ignore[assignment]  # Numba: int64
    return msgs[:k].copy(), fields[:nf].copy(), vdata[:nv].copy(), pos, full


def _compile_scan() -> None:
    """Compile (or load from the cache) ``_scan_simple`` on a buffer of its own.

    While Numba compiles, a reference cycle keeps the call's arguments alive
    until the next garbage collection: had that been a view of a session's
    buffer, the buffer could not be resized afterwards (``BufferError``). The
    arguments ``feed_many`` passes always have these types, so it never
    compiles on a live buffer.
    """
    probe = bytearray(b"8=FIX.4.4\x019=5\x0135=0\x0110=163\x01")
    times = np.zeros(1, dtype=np.int64)
    _scan_simple(np.frombuffer(probe, dtype=np.uint8), 0, len(probe), 0, DEFAULT_MAX_MESSAGE,
                 times, times, times)
