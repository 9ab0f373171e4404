"""WebSocket (RFC 6455) session parser, with permessage-deflate (RFC 7692).

How this works: each direction has a ``PieceBuffer``. A frame is handled once all of it
is buffered (its payload is at most ``max_message``, so the buffer is bounded); its
header is decoded from the declared structs below, its payload unmasked, and it either
completes a message (FIN), starts or extends a fragmented one, or, for a control frame,
is a message on its own even between two fragments (§5.4). A finished data message is
inflated when RSV1 was set on its first frame (RFC 7692 §6.1) and becomes a ``WsMessage``
whose ``ts_first`` is the time of its first frame's first byte and ``ts_last`` the time
of its last frame's last byte.

Mid-stream (the HTTP upgrade was not captured: ``extensions=None``): each direction
first *hunts* for a frame boundary (``find_frame_start``: a header whose frames chain
on, checked a few frames deep), and compressed messages go through a
``MidstreamInflater`` that marks the bytes depending on history before the capture
(``payload_unknown``; they read as NUL) until a window of known output makes it exact.

Malformed traffic becomes an ``Anomaly`` (layer ``websocket``). When the frame length is
still trustworthy the parser skips the frame and goes on; when the header itself makes no
sense (unknown opcode, a 64-bit length with its top bit set) the direction stops, since
nothing after it can be framed.
"""

from __future__ import annotations

import codecs
import re
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..events import Anomaly, Direction, Event, Run, feed_pieces
from ..piecebuf import PieceBuffer
from .deflate import MessageInflater, MidstreamInflater, PerMessageDeflateParams, new_inflater
from .scan import FULL, SPECIAL, ws_simple_frames

if TYPE_CHECKING:
    from .. import native

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


def parse_frame_header(data: bytes | bytearray | memoryview) -> FrameHeader | None:
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


# ---- Finding frames mid-stream ---------------------------------------------------------
RESYNC_CONFIRM_FRAMES = 3
"""Whole frames that must chain from a candidate header before it is believed (fewer
when they end exactly where the bytes end and one of them passed a content check)."""
RESYNC_CHAIN_FRAMES = 64
"""Frames a candidate's chain is walked (towards the end of the bytes held) at most."""
RESYNC_STRICT_FRAMES = 16
"""Whole frames that, chained, tell WebSocket from other bytes without a content check
(binary frames have none)."""
RESYNC_CHECK_BYTES = 4096
"""Payload bytes of a frame looked at by the content check."""
RESYNC_CHECK_MIN = 16
"""Payloads shorter than this are not judged by their content (too easily passed)."""
# first bytes a frame can start with: FIN and opcode of a data, continuation or
# control frame (controls are never fragmented), RSV1 only on a data frame's first
_FIRST_BYTES = bytes([0x00, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A,
                      0x41, 0x42, 0xC1, 0xC2])
_HEAD_AT = {
    masked: re.compile(b"(?=[" + b"".join(re.escape(bytes([c])) for c in _FIRST_BYTES)
                       + (rb"][\x80-\xff])" if masked else rb"][\x00-\x7f])"), re.S)
    for masked in (True, False)
}
# Text a trading peer sends (JSON): no C0 control characters but TAB, LF, CR.
_CONTROL_CHARS = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ZERO_WINDOW = bytes(1 << 15)


def _content_ok(head: FrameHeader, payload: bytes) -> bool | None:
    """Does a candidate frame's payload look like what its header says? None: no check
    applies (binary, ping/pong, continuation, a short payload)."""
    if head.opcode == Opcode.CLOSE and payload:
        return None if len(payload) >= 2 and 1000 <= int.from_bytes(
            unmask(payload[:2], head.masking_key) if head.masked else payload[:2],
            "big") < 5000 else False
    if head.masked:
        payload = unmask(payload, head.masking_key)
    if head.rsv1:  # a compressed first frame: raw deflate, history unknown (zeros)
        try:
            payload = zlib.decompressobj(-15, zdict=_ZERO_WINDOW).decompress(
                payload + (b"\x00\x00\xff\xff" if head.fin else b""), RESYNC_CHECK_BYTES)
        except zlib.error:
            return False
        known = payload.replace(b"\x00", b"")  # NUL: copied from the unknown window
        if len(payload) < RESYNC_CHECK_MIN or len(known) < RESYNC_CHECK_MIN // 4:
            return None
        payload = known
    elif len(payload) < RESYNC_CHECK_MIN:
        return None
    if head.opcode != Opcode.TEXT:
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(
            payload, final=head.fin and len(payload) < RESYNC_CHECK_BYTES)
    except UnicodeDecodeError:
        return False
    return _CONTROL_CHARS.search(text.encode()) is None


def _pairs(out_offset: int, in_offset: int) -> tuple[tuple[Direction, int], ...]:
    return (("out", out_offset), ("in", in_offset))


def _frame_at(data: bytes | bytearray, i: int, masked: bool, max_payload: int
              ) -> FrameHeader | bool | None:
    """The plausible header at ``i``; False if none can be there, None if not all there."""
    head = parse_frame_header(memoryview(data)[i:i + 14])
    if head is None:
        return None
    if head.masked != masked or head.rsv2 or head.rsv3 or head.payload_length > max_payload:
        return False
    op, n = head.opcode, head.payload_length
    if op not in OPCODE_NAMES and op != Opcode.CONTINUATION:
        return False
    if op >= Opcode.CLOSE and (not head.fin or n > MAX_CONTROL_PAYLOAD or head.rsv1):
        return False
    if head.rsv1 and op == Opcode.CONTINUATION:
        return False
    if op < Opcode.CLOSE and n == 0 and not head.fin:
        return False  # an empty fragment: what zeros and length prefixes look like
    # §5.2: "the minimal number of bytes MUST be used to encode the length"
    ext = head.header_length - (MASKING_KEY_LENGTH if masked else 0) - FRAME_HEAD.size
    if (ext == 2 and n < PAYLOAD_LEN_16) or (ext == 8 and n < 1 << 16):
        return False
    return head


def _chain(data: bytes | bytearray, i: int, masked: bool, max_payload: int
           ) -> tuple[str, int, int, int, int]:
    """Walk frames from ``i`` towards the end of ``data``: ``(verdict, frames,
    checked, first, starts)``; verdict ``bad``, ``open`` (the last frame is not all
    there), ``whole`` (ended exactly at the end) or ``long`` (``RESYNC_CHAIN_FRAMES``
    walked); ``checked``: frames whose payload passed ``_content_ok``, ``first`` where
    the first of those starts (else ``i``); ``starts``: frames that are not
    continuations (a message's first, or a control frame)."""
    frames = checked = starts = 0
    first = i
    in_message = None  # unknown at the start: a message may be under way
    while frames < RESYNC_CHAIN_FRAMES:
        if i == len(data):
            return "whole", frames, checked, first, starts
        head = _frame_at(data, i, masked, max_payload)
        if head is False:
            return "bad", frames, checked, first, starts
        if head is None:
            return "open", frames, checked, first, starts
        assert isinstance(head, FrameHeader)
        end = i + head.header_length + head.payload_length
        if end > len(data):
            return "open", frames, checked, first, starts
        op = head.opcode
        starts += op != Opcode.CONTINUATION
        if op < Opcode.CLOSE:  # §5.4 fragmentation: continuation iff a message is open
            if in_message is not None and (op == Opcode.CONTINUATION) != in_message:
                return "bad", frames, checked, first, starts
            in_message = not head.fin
        if checked < RESYNC_CONFIRM_FRAMES:
            ok = _content_ok(head, bytes(data[i + head.header_length:min(
                end, i + head.header_length + RESYNC_CHECK_BYTES)]) if not head.rsv1 else
                bytes(data[i + head.header_length:end]))
            if ok is False:
                return "bad", frames, checked, first, starts
            if ok and not checked:
                first = i
            checked += ok is True
        frames, i = frames + 1, end
    return "long", frames, checked, first, starts


def find_frame_start(data: bytes | bytearray, masked: bool, max_payload: int, *,
                     at_start: bool = False, final: bool = False, strict: bool = False
                     ) -> tuple[int | None, int]:
    """Where whole frames start in ``data`` (bytes of one direction from an unknown
    point): ``(offset, 0)`` once believed, else ``(None, n)`` where the first ``n``
    bytes can hold no frame start (a later call with more bytes need not look there).

    A candidate header is believed when the frames chained from it run through the
    bytes held (to their end, or ``RESYNC_CHAIN_FRAMES`` deep) without a bad header,
    a fragmentation error or a payload unlike its header (text that is not UTF-8 text,
    compressed bytes that do not inflate), and either ``RESYNC_CONFIRM_FRAMES`` of them
    are whole, or they end exactly at the end of ``data`` and one passed a content
    check, or it starts at offset 0 of the stream (``at_start``, as the detection probe
    does) or no more bytes will come (``final``). Frames before the first one that
    passed a content check are not believed: a short false header (a ping, say) can
    end exactly where a real frame starts, and its chain is then the real one.
    ``strict`` (telling WebSocket from other protocols, not just finding its frames):
    one frame must have passed a content check, and two must chain; or, at least half
    of them beginning a message (not continuations), ``RESYNC_STRICT_FRAMES`` whole
    frames chain, or (``final``) ``RESYNC_CONFIRM_FRAMES`` run exactly to the end.
    """
    undecided: int | None = None
    for m in _HEAD_AT[masked].finditer(data):
        i = m.start()
        verdict, frames, checked, first, starts = _chain(data, i, masked, max_payload)
        if verdict == "bad" or (frames == 0 and verdict == "whole"):
            continue
        if strict:
            if (checked and (frames >= RESYNC_CONFIRM_FRAMES or (
                    verdict == "whole" and (frames >= 2 or final)))) or (
                    # without a content check: frames that begin messages, not only
                    # continuations (zeros and length-prefixed records chain as those)
                    starts * 2 >= frames and (frames >= RESYNC_STRICT_FRAMES or (
                        final and verdict == "whole" and frames >= RESYNC_CONFIRM_FRAMES))):
                return first, 0
        elif frames >= RESYNC_CONFIRM_FRAMES or (verdict == "whole" and (
                checked or final or (at_start and i == 0))):
            return first, 0
        if undecided is None:
            undecided = i
    if undecided is not None:
        return None, undecided
    return None, max(0, len(data) - 1)  # a header's first byte may be the last one


@dataclass(frozen=True, slots=True, kw_only=True)
class WsMessage:
    """One WebSocket message (its frames joined): one row of ``ws_messages``.

    ``payload`` is unmasked and inflated, at most ``max_inflated`` bytes
    (``payload_truncated`` says it was cut). ``message_length`` is its length after
    inflating (of what was inflated, for a truncated one); ``wire_length`` counts every
    frame byte (headers included) of this message's frames, not of control frames
    interleaved with them. ``fin`` is False only for a message cut off by the end of
    the capture. ``close_code``/``close_reason`` are set for close frames that carry them.
    ``payload_unknown``: mid-stream, the payload bytes that depend on inflate history
    before the capture (``deflate.UNKNOWN_BYTE`` in ``payload``); None when all known.
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
    message_length: int
    wire_length: int
    payload_truncated: bool = False
    close_code: int | None = None
    close_reason: str | None = None
    payload_unknown: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WsMessageRun:
    """Many single-frame text/binary messages of one direction as columns (the
    batch path): each is a ``WsMessage`` with ``fin=True``, ``frames=1``, no close
    code, ``masked`` as given, ``message_length = len(payload)``."""

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
    inflater: MessageInflater | native.NativeInflater | MidstreamInflater
    partial: _Partial | None = None
    skip: int = 0  # bytes of a rejected frame still to discard as they arrive
    stopped: bool = False
    checked: int = -1  # stream offset of the frame whose header anomalies were reported
    masked: bool = False  # §5.3: the client masks (mid-stream: as its frames say)
    hunting: bool = False  # mid-stream or after a gap: no frame boundary found yet
    hunt_from: int = 0  # stream offset where the hunt began
    orphans: bool = False  # continuation frames of a message begun before the capture
    compressed: int = 0  # mid-stream: compressed messages (for the summary anomaly)
    first_unknown: int | None = None  # stream offset of the first with unknown bytes


class WebSocketSession:
    """Sans-IO parser of one WebSocket connection, both directions.

    ``extensions`` is the ``Sec-WebSocket-Extensions`` value of the server's 101 response,
    or None when the handshake was not captured: then each direction first looks for a
    frame boundary, RSV1 messages are inflated by a ``MidstreamInflater`` (unknown bytes
    marked; failures are ``inflate_without_handshake``) and one anomaly
    (``websocket_without_upgrade``) says so. ``max_message`` caps the
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
            d: _Direction(PieceBuffer(offset), self._new_inflater(d), masked=d == "out",
                          hunting=not self.handshake_known, hunt_from=offset)
            for d, offset in _pairs(out_offset, in_offset)
        }
        self._noted = self.handshake_known  # the mid-stream anomaly is out

    def _new_inflater(self, direction: Direction
                      ) -> MessageInflater | native.NativeInflater | MidstreamInflater:
        if self.deflate is None:
            # No agreement seen: a running context decodes both takeover and
            # no-takeover senders (the latter never refer back past a message); its
            # history before the capture is unknown, and marked so.
            return MidstreamInflater()
        bits, no_takeover = self.deflate.for_direction(direction)
        return new_inflater(bits, no_takeover)

    def independent(self) -> bool:
        """Each direction is framed without regard to the other."""
        return True

    # ---- SessionParser ----------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Take the next in-order piece of ``direction``; return finished messages."""
        d = self._dirs[direction]
        if d.stopped:
            d.buf.skip(len(data), ts_last)
            return []
        d.buf.append(data, ts_first, ts_last)
        events: list[Event] = []
        if not self._noted and data:
            self._noted = True
            events.append(Anomaly(
                ts=ts_last, flow_id=self.flow_id, direction=None, layer=LAYER,
                code="websocket_without_upgrade",
                detail="the HTTP upgrade was not captured (the connection was open before "
                "the capture began): frames found by their headers; permessage-deflate "
                "inferred from RSV1, its history before the capture unknown "
                "(payload_unknown). Capture from the connection's start to see the "
                "negotiated extensions"))
        if d.hunting and not self._hunt(direction, d, events, final=False):
            return events
        self._parse(direction, d, events)
        return events

    def _hunt(self, direction: Direction, d: _Direction, events: list[Event], *,
              final: bool) -> bool:
        """Mid-stream: look for the first frame boundary; True once found."""
        buf = d.buf
        at, dead = find_frame_start(buf.data, d.masked, self.max_message,
                                    at_start=buf.start == 0, final=final)
        swapped = False
        if at is None and not self.handshake_known:
            # without a SYN the client is a guess (the ephemeral port): its frames say
            at, dead_other = find_frame_start(buf.data, not d.masked, self.max_message,
                                              at_start=buf.start == 0, final=final)
            swapped = at is not None
            dead = min(dead, dead_other)
        if at is None:
            if dead:
                buf.consume(dead)
            return False
        if swapped:
            d.masked = not d.masked
            events.append(self._anomaly(
                direction, buf.times_at(buf.start + at)[1], "websocket_roles_reversed",
                f"this direction's frames are {'' if d.masked else 'un'}masked: it is the "
                f"{'client' if d.masked else 'server'} (RFC 6455 §5.3), not as guessed "
                "without the connection's SYN", buf.start + at))
        if buf.start + at > d.hunt_from:
            events.append(self._anomaly(direction, buf.times_at(buf.start + at)[1],
                                        "midstream_resync",
                                        f"skipped {buf.start + at - d.hunt_from} bytes before "
                                        "the first whole frame", buf.start + at))
        buf.consume(at)
        d.hunting = False
        d.orphans = True
        return True

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """Take a run of in-order pieces: the same events as ``feed`` piece by piece.

        Whole, unfragmented text/binary frames that pass every header check
        (the steady state of market data and order traffic) are framed, unmasked
        and inflated in one tight loop and come out as one ``WsMessageRun``; any
        other frame (control, fragment, a header worth an anomaly) goes through
        the general ``_parse``, one frame, and the tight loop resumes after it.
        """
        d = self._dirs[direction]
        if d.stopped or d.hunting or not self._noted:
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
        out_dir = d.masked  # (the kernel expects masked frames from the client side)
        # (a mid-stream inflater marks unknown bytes: those messages take _parse)
        rsv1_ok = not isinstance(d.inflater, MidstreamInflater) and (
            self.deflate is not None or not self.handshake_known)
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
        from .. import native  # (libcrypto and zlib: loaded with the first WebSocket)

        d.orphans = False  # whole data frames: any message begun before the hunt is over
        buf = d.buf
        base = buf.start
        wire = hls + lens
        ends = starts + wire
        masked = d.masked  # masked: the key is the header's last 4 bytes
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
        from .. import native

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
        # (no RSV1 frame comes here while the inflater is a MidstreamInflater: _fast_frames)
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
        Anywhere else the framing is lost: the direction hunts for the next frame
        (``find_frame_start``), and the inflate history is unknown from there.
        """
        d = self._dirs[direction]
        if d.stopped or length <= 0:
            d.buf.skip(length, ts)
            return []
        offset = d.buf.end
        if d.hunting:  # nothing framed yet: hunt on after the hole
            d.buf.consume(len(d.buf.data))
            d.buf.skip(length, ts)
            d.hunt_from = d.buf.start
            return [self._anomaly(direction, ts, "stream_gap", f"{length} bytes", offset)]
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
                    lost = d.partial if head.opcode == Opcode.CONTINUATION else None
                    if lost.compressed if lost is not None else head.rsv1:
                        self._lose_history(direction, d)
                    d.partial = None
                d.buf.skip(length, ts)
                d.skip = rest
                return [self._anomaly(direction, ts, "stream_gap",
                                      f"{length} bytes inside a frame; message dropped", offset)]
        # framing lost: hunt for the next frame, as at a capture's start
        d.buf.consume(len(d.buf.data))
        d.buf.skip(length, ts)
        d.skip = 0
        self._lose_history(direction, d)  # the hole may have held compressed messages
        d.partial = None
        d.hunting = True
        d.hunt_from = d.buf.start
        return [self._anomaly(direction, ts, "stream_gap",
                              f"{length} bytes; framing lost, looking for the next frame",
                              offset)]

    def _lose_history(self, direction: Direction, d: _Direction) -> None:
        """A message was lost: the inflate history is unknown from here (unless the
        sender starts every message afresh)."""
        inflater = d.inflater
        if isinstance(inflater, MidstreamInflater) or inflater.no_context_takeover:
            inflater.reset()
        elif self.deflate is not None:
            d.inflater = MidstreamInflater(self.deflate.for_direction(direction)[0])

    def finish(self, ts: int) -> list[Event]:
        """End of connection: flush messages cut short, note incomplete frames."""
        events: list[Event] = []
        for direction, d in self._dirs.items():
            if d.hunting and not d.stopped and d.buf.data:
                if self._hunt(direction, d, events, final=True):
                    self._parse(direction, d, events)
                else:
                    events.append(self._anomaly(
                        direction, ts, "no_frames_found",
                        f"{len(d.buf.data)} bytes at the end with no whole frame",
                        d.buf.start))
                    d.buf.consume(len(d.buf.data))
            if d.compressed:
                events.append(self._history_note(direction, d, ts))
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
            self._header_anomalies(direction, d.masked, head, control, ts, offset, events)
        if opcode == Opcode.CONTINUATION and d.partial is None:
            if d.orphans:  # the rest of a message begun before the capture (resync noted)
                d.skip = head.header_length + head.payload_length
                return False
            return self._reject(direction, d, head, events, "unexpected_continuation", "")
        if opcode < Opcode.CLOSE:
            d.orphans = False
        if not control:
            return self._check_size(direction, d, head, events)
        return True

    def _header_anomalies(self, direction: Direction, masks: bool, head: FrameHeader,
                          control: bool, ts: int, offset: int, events: list[Event]) -> None:
        """Anomalies of a header that still lets the frame be read."""
        if head.rsv2 or head.rsv3:
            events.append(self._anomaly(direction, ts, "reserved_bits", "RSV2/RSV3 set", offset))
        if head.rsv1 and (control or head.opcode == Opcode.CONTINUATION):
            events.append(self._anomaly(direction, ts, "reserved_bits",
                                        "RSV1 on a control or continuation frame", offset))
        elif head.rsv1 and self.handshake_known and self.deflate is None:
            events.append(self._anomaly(direction, ts, "reserved_bits",
                                        "RSV1 without permessage-deflate", offset))
        if masks and not head.masked:
            events.append(self._anomaly(direction, ts, "unmasked_client_frame", "", offset))
        elif not masks and head.masked:
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
        unknown = None
        status: str  # InflateStatus, or the native inflater's own word for it
        if p.compressed:
            inflater = d.inflater
            if isinstance(inflater, MidstreamInflater):
                payload, status, unknown = inflater.inflate_marked(payload, self.max_inflated)
                d.compressed += 1
                if unknown and d.first_unknown is None:
                    d.first_unknown = p.stream_offset
                exact = inflater.exact_inflater()
                if exact is not None:  # a window of known output: exact from here
                    d.inflater = exact
            else:
                payload, status = inflater.inflate(payload, self.max_inflated)
            if status != "ok":
                truncated = status == "bomb"
                events.append(self._inflate_anomaly(direction, status, p.ts_last,
                                                    p.stream_offset, p.size))
        events.append(WsMessage(
            ts_first=p.ts_first, ts_last=p.ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=p.stream_offset, opcode=OPCODE_NAMES[p.opcode], fin=fin,
            frames=p.frames, compressed=p.compressed, masked=p.masked, payload=payload,
            message_length=len(payload), wire_length=p.wire_length, payload_truncated=truncated,
            payload_unknown=unknown or None,
        ))
        return events

    def _history_note(self, direction: Direction, d: _Direction, ts: int) -> Anomaly:
        """Mid-stream summary of a direction's compressed messages."""
        inflater = d.inflater
        if d.first_unknown is None:
            return self._anomaly(
                direction, ts, "inflate_history_inferred",
                f"{d.compressed} compressed messages after the capture began needed no "
                "history before it (consistent with no context takeover)", None)
        exact = "" if isinstance(inflater, MidstreamInflater) else (
            "; exact once a window of known output had passed")
        return self._anomaly(
            direction, ts, "inflate_history_unknown",
            "context takeover: compressed messages copy bytes from before the capture "
            "(payload_unknown counts them; they read as NUL and are never matched)" + exact,
            d.first_unknown)

    def _single(self, direction: Direction, f: _Frame) -> WsMessage:
        """An unfragmented, uncompressed data message."""
        return WsMessage(
            ts_first=f.ts_first, ts_last=f.ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=f.offset, opcode=OPCODE_NAMES[f.head.opcode], fin=True, frames=1,
            compressed=False, masked=f.head.masked, payload=f.payload,
            message_length=len(f.payload), wire_length=f.length,
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
            message_length=len(f.payload), wire_length=f.length, close_code=code,
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
