"""WebSocket (RFC 6455) session parser, with permessage-deflate (RFC 7692).

How this works: each direction has a ``PieceBuffer``. A frame is handled once all of it
is buffered (its payload is at most ``max_message``, so the buffer is bounded); its
header is decoded from the declared structs below, its payload unmasked, and it either
completes a message (FIN), starts or extends a fragmented one, or, for a control frame,
is a message on its own even between two fragments (§5.4). A finished data message is
inflated when RSV1 was set on its first frame (RFC 7692 §6.1) and becomes a ``WsMessage``
whose ``ts_first`` is the time of its first frame's first byte and ``ts_last`` the time
of its last frame's last byte.

Malformed traffic becomes an ``Anomaly`` (layer ``websocket``). When the frame length is
still trustworthy the parser skips the frame and goes on; when the header itself makes no
sense (unknown opcode, a 64-bit length with its top bit set) the direction stops, since
nothing after it can be framed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

import numpy as np

from .. import native
from ..events import Anomaly, Direction, Event, Run, feed_pieces
from ..piecebuf import PieceBuffer
from .deflate import MessageInflater, PerMessageDeflateParams, new_inflater
from .scan import FULL, SPECIAL, ws_simple_frames

LAYER = "websocket"


# ---- RFC 6455 §5.2: base framing protocol ----------------------------------------
class Opcode(IntEnum):
    """§5.2 / §11.8 opcodes."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


OPCODE_NAMES: dict[int, str] = {
    Opcode.TEXT: "text",
    Opcode.BINARY: "binary",
    Opcode.CLOSE: "close",
    Opcode.PING: "ping",
    Opcode.PONG: "pong",
}

FIN = 0x80
RSV1 = 0x40
RSV2 = 0x20
RSV3 = 0x10
OPCODE_MASK = 0x0F
MASK = 0x80
PAYLOAD_LEN_MASK = 0x7F
# "If 126, the following 2 bytes interpreted as a 16-bit unsigned integer are the payload
# length. If 127, the following 8 bytes interpreted as a 64-bit unsigned integer (the
# most significant bit MUST be 0) are the payload length."
PAYLOAD_LEN_16 = 126
PAYLOAD_LEN_64 = 127
# §5.5: "All control frames MUST have a payload length of 125 bytes or less and MUST
# NOT be fragmented."
MAX_CONTROL_PAYLOAD = 125
MASKING_KEY_LENGTH = 4

# Declared headers, wire order (STYLE rule 6).
FRAME_HEAD = struct.Struct("!BB")  # FIN|RSV1-3|opcode, MASK|Payload len
EXTENDED_LEN_16 = struct.Struct("!H")
EXTENDED_LEN_64 = struct.Struct("!Q")

# Below this many bytes, the big-int XOR is faster than NumPy's setup cost (measured).
_NUMPY_UNMASK_MIN = 1024


def unmask(payload: bytes, masking_key: bytes) -> bytes:
    """§5.3: ``transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4)``."""
    n = len(payload)
    if n < _NUMPY_UNMASK_MIN:
        if n == 0:
            return b""
        key = (masking_key * (n // 4 + 1))[:n]
        x = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
        return x.to_bytes(n, "little")
    out = bytearray(payload)
    words = n >> 2
    view = np.frombuffer(out, dtype="<u4", count=words)
    view ^= np.frombuffer(masking_key, dtype="<u4")[0]
    for i in range(words << 2, n):
        out[i] ^= masking_key[i & 3]
    return bytes(out)


class FrameHeader(NamedTuple):
    """One decoded frame header (§5.2); ``header_length`` includes the masking key.

    A NamedTuple rather than a dataclass: one is built per frame, and this is cheaper.
    """

    fin: bool
    rsv1: bool
    rsv2: bool
    rsv3: bool
    opcode: int
    masked: bool
    payload_length: int
    header_length: int
    masking_key: bytes


def parse_frame_header(data: bytes | bytearray) -> FrameHeader | None:
    """Decode the frame header at the start of ``data``; None until it is all there.

    A 64-bit length with the most significant bit set is returned as is; the caller
    rejects it.
    """
    if len(data) < FRAME_HEAD.size:
        return None
    b0, b1 = FRAME_HEAD.unpack_from(data)
    length = b1 & PAYLOAD_LEN_MASK
    pos = FRAME_HEAD.size
    if length == PAYLOAD_LEN_16:
        if len(data) < pos + EXTENDED_LEN_16.size:
            return None
        (length,) = EXTENDED_LEN_16.unpack_from(data, pos)
        pos += EXTENDED_LEN_16.size
    elif length == PAYLOAD_LEN_64:
        if len(data) < pos + EXTENDED_LEN_64.size:
            return None
        (length,) = EXTENDED_LEN_64.unpack_from(data, pos)
        pos += EXTENDED_LEN_64.size
    masked = bool(b1 & MASK)
    key = b""
    if masked:
        if len(data) < pos + MASKING_KEY_LENGTH:
            return None
        key = bytes(data[pos : pos + MASKING_KEY_LENGTH])
        pos += MASKING_KEY_LENGTH
    return FrameHeader(
        bool(b0 & FIN), bool(b0 & RSV1), bool(b0 & RSV2), bool(b0 & RSV3),
        b0 & OPCODE_MASK, masked, length, pos, key,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class WsMessage:
    """One WebSocket message (its frames joined): one row of ``ws_messages``.

    ``payload`` is unmasked and inflated, at most ``max_inflated`` bytes
    (``payload_truncated`` says it was cut). ``payload_length`` is its length after
    inflating (of what was inflated, for a truncated one); ``wire_length`` counts every
    frame byte (headers included) of this message's frames, not of control frames
    interleaved with them. ``fin`` is False only for a message cut off by the end of
    the capture. ``close_code``/``close_reason`` are set for close frames that carry them.
    """

    ts_first: int
    ts_last: int
    flow_id: int
    direction: Direction
    stream_offset: int
    opcode: str
    fin: bool
    frames: int
    compressed: bool
    masked: bool
    payload: bytes
    payload_length: int
    wire_length: int
    payload_truncated: bool = False
    close_code: int | None = None
    close_reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WsMessageRun:
    """Many single-frame text/binary messages of one direction as columns (the
    batch path): each is a ``WsMessage`` with ``fin=True``, ``frames=1``, no close
    code, ``masked`` as given, ``payload_length = len(payload)``."""

    flow_id: int
    direction: Direction
    ts_first: np.ndarray
    ts_last: np.ndarray
    stream_offset: np.ndarray
    opcode: np.ndarray
    compressed: np.ndarray
    masked: bool
    payload: bytes | np.ndarray  # the payloads back to back (uint8 when an array)
    payload_ends: np.ndarray  # message i is payload[payload_ends[i-1]:payload_ends[i]]
    wire_length: np.ndarray
    truncated: np.ndarray


@dataclass(slots=True, kw_only=True)
class _Partial:
    """A fragmented data message whose FIN frame has not arrived yet."""

    opcode: int
    stream_offset: int
    ts_first: int
    ts_last: int
    compressed: bool
    masked: bool
    frames: int = 0
    size: int = 0
    wire_length: int = 0
    parts: list[bytes] = field(default_factory=list)
    dropped: bool = False  # too long: its remaining fragments are skipped, not kept


@dataclass(slots=True)
class _Direction:
    buf: PieceBuffer
    inflater: MessageInflater | native.NativeInflater
    partial: _Partial | None = None
    skip: int = 0  # bytes of a rejected frame still to discard as they arrive
    stopped: bool = False
    checked: int = -1  # stream offset of the frame whose header anomalies were reported


class WebSocketSession:
    """Sans-IO parser of one WebSocket connection, both directions.

    ``extensions`` is the ``Sec-WebSocket-Extensions`` value of the server's 101 response,
    or None when the handshake was not captured (then RSV1 frames are tried with a fresh
    inflater and failures are ``inflate_without_handshake``). ``max_message`` caps the
    wire payload of one message (the most this parser buffers per direction);
    ``max_inflated`` caps one message after inflating. ``out_offset``/``in_offset`` are the
    stream offsets at which the WebSocket bytes start (after the HTTP upgrade).
    """

    def __init__(
        self,
        flow_id: int,
        *,
        extensions: str | None = None,
        max_message: int = 16 << 20,
        max_inflated: int = 64 << 20,
        out_offset: int = 0,
        in_offset: int = 0,
    ) -> None:
        self.flow_id = flow_id
        self.max_message = max_message
        self.max_inflated = max_inflated
        self.handshake_known = extensions is not None
        self.deflate = PerMessageDeflateParams.from_header(extensions)
        self._dirs: dict[Direction, _Direction] = {
            "out": _Direction(PieceBuffer(out_offset), self._new_inflater("out")),
            "in": _Direction(PieceBuffer(in_offset), self._new_inflater("in")),
        }

    def _new_inflater(self, direction: Direction) -> MessageInflater | native.NativeInflater:
        if self.deflate is None:
            # No agreement seen: a running context decodes both takeover and
            # no-takeover senders (the latter never refer back past a message).
            return new_inflater()
        bits, no_takeover = self.deflate.for_direction(direction)
        return new_inflater(bits, no_takeover)

    # ---- SessionParser ----------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Take the next in-order piece of ``direction``; return finished messages."""
        d = self._dirs[direction]
        if d.stopped:
            d.buf.skip(len(data), ts_last)
            return []
        d.buf.append(data, ts_first, ts_last)
        events: list[Event] = []
        self._parse(direction, d, events)
        return events

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """Take a run of in-order pieces: the same events as ``feed`` piece by piece.

        Whole, unfragmented text/binary frames that pass every header check
        (the steady state of market data and order traffic) are framed, unmasked
        and inflated in one tight loop and come out as one ``WsMessageRun``; any
        other frame (control, fragment, a header worth an anomaly) goes through
        the general ``_parse``, one frame, and the tight loop resumes after it.
        """
        d = self._dirs[direction]
        if d.stopped:
            return feed_pieces(self, direction, run)
        d.buf.append_run(run)
        events: list[Event] = []
        while not d.stopped:
            if d.skip or d.partial is not None or self._fast_frames(direction, d, events):
                before = (d.buf.start, len(d.buf.data), d.skip, d.partial)
                self._parse(direction, d, events, limit=1)
                if (d.buf.start, len(d.buf.data), d.skip, d.partial) == before:
                    break  # the frame is not all there yet
            else:
                break
        return events

    def _fast_frames(self, direction: Direction, d: _Direction, events: list[Event]) -> bool:
        """Take the simple frames at the buffer's start; True when it stopped at a
        frame the general path must handle (False: it needs more bytes)."""
        out_dir = direction == "out"
        rsv1_ok = self.deflate is not None or not self.handshake_known
        buf = d.buf
        while True:
            arr = np.frombuffer(buf.data, dtype=np.uint8)
            starts, hls, lens, rsv1, opcodes, stop = ws_simple_frames(
                arr, out_dir, rsv1_ok, self.max_message)
            del arr  # release the export: the buffer is resized below
            if starts.size:
                self._take_frames(direction, d, starts, hls, lens, rsv1, opcodes, events)
            if stop != FULL:
                return stop == SPECIAL

    def _take_frames(self, direction: Direction, d: _Direction, starts: np.ndarray,
                     hls: np.ndarray, lens: np.ndarray, rsv1: np.ndarray,
                     opcodes: np.ndarray, events: list[Event]) -> None:
        """Messages of the frames ``ws_simple_frames`` found, as one ``WsMessageRun``."""
        buf = d.buf
        base = buf.start
        wire = hls + lens
        ends = starts + wire
        masked = direction == "out"  # masked: the key is the header's last 4 bytes
        inflater = d.inflater
        if isinstance(inflater, native.NativeInflater):
            arr = np.frombuffer(buf.data, dtype=np.uint8)
            payload, payload_ends, status = native.ws_payloads(
                arr, starts, hls, lens, rsv1, masked, inflater.strm,
                inflater.no_context_takeover, inflater.window_bits, self.max_inflated)
            del arr  # release the export: the buffer is consumed below
        else:
            payload, payload_ends, status = self._payloads_py(  # type: ignore[assignment]
                d, starts, hls, lens, rsv1, masked)  # bytes here, an array from native
        cut = status == native.BOMB
        for i in np.flatnonzero(status).tolist():
            events.append(self._inflate_anomaly(
                direction, native.STATUS_NAMES[status[i]],
                buf.times_at(base + int(ends[i]) - 1)[1], base + int(starts[i]), int(lens[i])))
        start = starts + base
        ts_first, ts_last = buf.times_many(start, start + wire - 1)
        buf.consume(int(ends[-1]))
        events.append(WsMessageRun(
            flow_id=self.flow_id, direction=direction, ts_first=ts_first, ts_last=ts_last,
            stream_offset=start, opcode=opcodes, compressed=rsv1, masked=masked,
            payload=payload, payload_ends=payload_ends, wire_length=wire, truncated=cut))

    def _payloads_py(self, d: _Direction, starts: np.ndarray, hls: np.ndarray,
                     lens: np.ndarray, rsv1: np.ndarray, masked: bool
                     ) -> tuple[bytes, np.ndarray, np.ndarray]:
        """``native.ws_payloads`` with ``unmask`` and ``MessageInflater`` (no native libs)."""
        payloads: list[bytes] = []
        append = payloads.append
        status = np.zeros(starts.size, dtype=np.int8)
        with memoryview(d.buf.data) as mv:
            first = (starts + hls).tolist()
            last = (starts + hls + lens).tolist()
            if masked:
                for a, b in zip(first, last, strict=True):
                    append(unmask(bytes(mv[a:b]), bytes(mv[a - 4 : a])))
            else:
                for a, b in zip(first, last, strict=True):
                    append(bytes(mv[a:b]))
        inflate = d.inflater.inflate
        for i in np.flatnonzero(rsv1).tolist():
            payloads[i], name = inflate(payloads[i], self.max_inflated)
            status[i] = native.STATUS_NAMES.index(name)
        lengths = np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads))
        return b"".join(payloads), np.cumsum(lengths), status

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        """``length`` bytes of ``direction`` were never captured.

        A gap inside a frame whose header we hold loses that frame (and its message)
        but not the framing: the rest of the frame is skipped and parsing goes on.
        Anywhere else the framing is lost and the direction stops.
        """
        d = self._dirs[direction]
        if d.stopped or length <= 0:
            d.buf.skip(length, ts)
            return []
        offset = d.buf.end
        head = parse_frame_header(d.buf.data)
        if d.skip >= length:
            d.skip -= length
            d.buf.skip(length, ts)
            return [self._anomaly(direction, ts, "stream_gap", f"{length} bytes", offset)]
        if d.skip == 0 and head is not None:
            frame_len = head.header_length + head.payload_length
            rest = frame_len - len(d.buf.data) - length
            if rest >= 0 and head.payload_length <= self.max_message:
                if head.opcode < Opcode.CLOSE:
                    d.partial = None
                    d.inflater.reset()
                d.buf.skip(length, ts)
                d.skip = rest
                return [self._anomaly(direction, ts, "stream_gap",
                                      f"{length} bytes inside a frame; message dropped", offset)]
        d.stopped = True
        d.buf.skip(length, ts)
        return [self._anomaly(direction, ts, "stream_gap",
                              f"{length} bytes; framing lost, direction stopped", offset)]

    def finish(self, ts: int) -> list[Event]:
        """End of connection: flush messages cut short, note incomplete frames."""
        events: list[Event] = []
        for direction, d in self._dirs.items():
            if d.stopped:
                continue
            if d.partial is not None and not d.partial.dropped:
                events.append(self._anomaly(direction, ts, "incomplete_message",
                                            f"{d.partial.frames} frames without FIN",
                                            d.partial.stream_offset))
                events.extend(self._complete(direction, d, d.partial, fin=False))
            if d.buf.data or d.skip:
                events.append(self._anomaly(direction, ts, "truncated_frame",
                                            f"{len(d.buf.data)} bytes of an unfinished frame",
                                            d.buf.start))
            d.partial = None
            d.stopped = True
        return events

    # ---- framing ----------------------------------------------------------------
    def _parse(self, direction: Direction, d: _Direction, events: list[Event],
               limit: int = -1) -> None:
        """Frame what is buffered; at most ``limit`` frames when it is not negative."""
        buf = d.buf
        while not d.stopped and limit != 0:
            limit -= 1
            if d.skip:
                n = min(d.skip, len(buf.data))
                buf.consume(n)
                d.skip -= n
                if d.skip:
                    return
            if not buf.data:
                return
            head = parse_frame_header(buf.data)
            if head is None:
                return
            if not self._check_header(direction, d, head, events):
                continue
            frame_len = head.header_length + head.payload_length
            if len(buf.data) < frame_len:
                return
            start = buf.start
            ts_first = buf.times_at(start)[0]
            ts_last = buf.times_at(start + frame_len - 1)[1]
            payload = bytes(buf.data[head.header_length : frame_len])
            buf.consume(frame_len)
            if head.masked:
                payload = unmask(payload, head.masking_key)
            frame = _Frame(head, payload, start, frame_len, ts_first, ts_last)
            self._on_frame(direction, d, frame, events)

    def _check_header(
        self, direction: Direction, d: _Direction, head: FrameHeader, events: list[Event]
    ) -> bool:
        """Validate a header; False when the frame was rejected (skipped or stopped)."""
        offset = d.buf.start
        ts = d.buf.times_at(offset)[1]
        # a frame still arriving is checked again on every feed: report it once
        first_check = d.checked != offset
        d.checked = offset
        opcode = head.opcode
        length = head.payload_length
        if opcode not in OPCODE_NAMES and opcode != Opcode.CONTINUATION:
            return self._stop(direction, d, events, "bad_opcode", f"opcode {opcode:#x}")
        if length >> 63:
            return self._stop(direction, d, events, "bad_length", "64-bit length MSB set")
        control = opcode >= Opcode.CLOSE
        if control and length > MAX_CONTROL_PAYLOAD:
            return self._reject(direction, d, head, events, "control_too_long", f"{length} bytes")
        if first_check:
            self._header_anomalies(direction, head, control, ts, offset, events)
        if opcode == Opcode.CONTINUATION and d.partial is None:
            return self._reject(direction, d, head, events, "unexpected_continuation", "")
        if not control:
            return self._check_size(direction, d, head, events)
        return True

    def _header_anomalies(self, direction: Direction, head: FrameHeader, control: bool,
                          ts: int, offset: int, events: list[Event]) -> None:
        """Anomalies of a header that still lets the frame be read."""
        if head.rsv2 or head.rsv3:
            events.append(self._anomaly(direction, ts, "reserved_bits", "RSV2/RSV3 set", offset))
        if head.rsv1 and (control or head.opcode == Opcode.CONTINUATION):
            events.append(self._anomaly(direction, ts, "reserved_bits",
                                        "RSV1 on a control or continuation frame", offset))
        elif head.rsv1 and self.handshake_known and self.deflate is None:
            events.append(self._anomaly(direction, ts, "reserved_bits",
                                        "RSV1 without permessage-deflate", offset))
        if direction == "out" and not head.masked:
            events.append(self._anomaly(direction, ts, "unmasked_client_frame", "", offset))
        elif direction == "in" and head.masked:
            events.append(self._anomaly(direction, ts, "masked_server_frame", "", offset))

    def _check_size(
        self, direction: Direction, d: _Direction, head: FrameHeader, events: list[Event]
    ) -> bool:
        """Enforce ``max_message`` on a data frame; skip it (and its message) if too long."""
        partial = d.partial if head.opcode == Opcode.CONTINUATION else None
        if partial is not None and partial.dropped:
            # the rest of a message already reported as too long: skip quietly
            if head.fin:
                d.partial = None
            d.skip = head.header_length + head.payload_length
            return False
        total = head.payload_length + (partial.size if partial is not None else 0)
        if total <= self.max_message:
            return True
        events.append(self._anomaly(direction, d.buf.times_at(d.buf.start)[1],
                                    "message_too_long",
                                    f"{total} bytes > max_message {self.max_message}",
                                    d.buf.start))
        if head.fin:
            d.partial = None
        elif partial is not None:
            partial.dropped = True
            partial.parts.clear()
        else:
            d.partial = _Partial(opcode=head.opcode, stream_offset=d.buf.start, ts_first=0,
                                 ts_last=0, compressed=head.rsv1, masked=head.masked,
                                 dropped=True)
        d.skip = head.header_length + head.payload_length
        return False

    def _reject(self, direction: Direction, d: _Direction, head: FrameHeader,
                events: list[Event], code: str, detail: str) -> bool:
        """Record ``code`` and skip the whole frame (its length is still trusted)."""
        events.append(self._anomaly(direction, d.buf.times_at(d.buf.start)[1], code,
                                    detail, d.buf.start))
        d.skip = head.header_length + head.payload_length
        return False

    def _stop(self, direction: Direction, d: _Direction, events: list[Event],
              code: str, detail: str) -> bool:
        events.append(self._anomaly(direction, d.buf.times_at(d.buf.start)[1], code,
                                    detail + "; direction stopped", d.buf.start))
        d.stopped = True
        d.partial = None
        d.buf.consume(len(d.buf.data))
        return False

    # ---- messages -----------------------------------------------------------------
    def _on_frame(
        self, direction: Direction, d: _Direction, f: _Frame, events: list[Event]
    ) -> None:
        head = f.head
        if head.opcode >= Opcode.CLOSE:
            if not head.fin:
                events.append(self._anomaly(direction, f.ts_last, "fragmented_control",
                                            OPCODE_NAMES[head.opcode], f.offset))
            events.extend(self._control(direction, f))
            return
        if head.opcode != Opcode.CONTINUATION:
            if head.fin and d.partial is None and not head.rsv1:
                events.append(self._single(direction, f))  # the common case, kept short
                return
            if d.partial is not None and not d.partial.dropped:
                events.append(self._anomaly(direction, f.ts_first, "expected_continuation",
                                            "new data frame inside a fragmented message; "
                                            "the unfinished message is dropped", f.offset))
            d.partial = _Partial(opcode=head.opcode, stream_offset=f.offset,
                                 ts_first=f.ts_first, ts_last=f.ts_last,
                                 compressed=head.rsv1, masked=head.masked)
        partial = d.partial
        assert partial is not None  # _check_header rejected a continuation without one
        partial.frames += 1
        partial.size += len(f.payload)
        partial.wire_length += f.length
        partial.ts_last = f.ts_last
        if not partial.dropped:
            partial.parts.append(f.payload)
        if head.fin:
            d.partial = None
            if not partial.dropped:
                events.extend(self._complete(direction, d, partial, fin=True))

    def _complete(self, direction: Direction, d: _Direction, p: _Partial, *,
                  fin: bool) -> list[Event]:
        events: list[Event] = []
        payload = b"".join(p.parts)
        truncated = False
        if p.compressed:
            payload, status = d.inflater.inflate(payload, self.max_inflated)
            if status != "ok":
                truncated = status == "bomb"
                events.append(self._inflate_anomaly(direction, status, p.ts_last,
                                                    p.stream_offset, p.size))
        events.append(WsMessage(
            ts_first=p.ts_first, ts_last=p.ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=p.stream_offset, opcode=OPCODE_NAMES[p.opcode], fin=fin,
            frames=p.frames, compressed=p.compressed, masked=p.masked, payload=payload,
            payload_length=len(payload), wire_length=p.wire_length, payload_truncated=truncated,
        ))
        return events

    def _single(self, direction: Direction, f: _Frame) -> WsMessage:
        """An unfragmented, uncompressed data message."""
        return WsMessage(
            ts_first=f.ts_first, ts_last=f.ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=f.offset, opcode=OPCODE_NAMES[f.head.opcode], fin=True, frames=1,
            compressed=False, masked=f.head.masked, payload=f.payload,
            payload_length=len(f.payload), wire_length=f.length,
        )

    def _control(self, direction: Direction, f: _Frame) -> list[Event]:
        events: list[Event] = []
        code: int | None = None
        reason: str | None = None
        if f.head.opcode == Opcode.CLOSE and f.payload:
            # §5.5.1: "the first two bytes of the body MUST be a 2-byte unsigned integer
            # (in network byte order) representing a status code"; then a UTF-8 reason.
            if len(f.payload) < 2:
                events.append(self._anomaly(direction, f.ts_last, "bad_close_payload",
                                            "1-byte close body", f.offset))
            else:
                code = int.from_bytes(f.payload[:2], "big")
                reason = f.payload[2:].decode("utf-8", "replace")
        events.append(WsMessage(
            ts_first=f.ts_first, ts_last=f.ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=f.offset, opcode=OPCODE_NAMES[f.head.opcode], fin=f.head.fin, frames=1,
            compressed=False, masked=f.head.masked, payload=f.payload,
            payload_length=len(f.payload), wire_length=f.length, close_code=code,
            close_reason=reason,
        ))
        return events

    def _inflate_anomaly(self, direction: Direction, status: str, ts: int, offset: int,
                         compressed: int) -> Anomaly:
        """The anomaly of a message whose inflate ended in ``bomb`` or ``failed``."""
        if status == "bomb":
            return self._anomaly(direction, ts, "inflate_bomb",
                                 f"inflated beyond max_inflated {self.max_inflated}", offset)
        code = "inflate_failed" if self.handshake_known else "inflate_without_handshake"
        return self._anomaly(direction, ts, code, f"{compressed} compressed bytes", offset)

    def _anomaly(self, direction: Direction, ts: int, code: str, detail: str,
                 offset: int | None) -> Anomaly:
        return Anomaly(ts=ts, flow_id=self.flow_id, direction=direction, layer=LAYER,
                       code=code, detail=detail, stream_offset=offset)


@dataclass(frozen=True, slots=True)
class _Frame:
    """A whole frame, unmasked, with where and when it was on the wire."""

    head: FrameHeader
    payload: bytes
    offset: int
    length: int
    ts_first: int
    ts_last: int
