"""HTTP/2 (RFC 9113) session parser: frames -> header blocks and bodies -> messages.

How this works: one ``Http2Session`` per connection sees both directions (``out`` =
client to server). Each direction has a ``PieceBuffer`` and reads whole frames (a frame
is at most SETTINGS_MAX_FRAME_SIZE octets, so the buffer is bounded); every frame is
handled by the function ``_HANDLERS`` names for its type. Header blocks (HEADERS or
PUSH_PROMISE, then CONTINUATION until END_HEADERS) are joined and decoded by the
direction's ``HpackDecoder``; streams are multiplexed by keeping, per direction, the
message being read on each open stream. A message is emitted when the frame with
END_STREAM arrives (a trailing empty DATA frame counts), as an ``HttpMessage`` with
``version="HTTP/2"`` and its ``stream_id``; 1xx responses are emitted on their own.

Times: ``ts_first`` is the time of the first octet of the frame that opens the header
block; ``ts_last`` of the last octet of the frame that carries END_STREAM (inside TLS,
the record holding it: DESIGN.md "Time").

Resets are rows: RST_STREAM, and a GOAWAY for the streams it refuses (those above its
Last-Stream-ID with no final response), become ``HttpMessage(kind="reset")`` rows with
the error code's name as ``reason`` (direction = who sent it), so a refused or
cancelled order is visible and the matcher can give it an ``error`` outcome. A message
cut by a reset is emitted as it is, ``body_truncated``.

Mid-connection captures: the client's side must start with the preface and the
server's with SETTINGS; when it does not, that direction resynchronises on the first
offset where two plausible frame headers follow each other (``frames.find_boundary``),
and its HPACK table is *unknown*: fields that reference it are left out and flagged
(``hpack_unknown_entry``), never guessed; DATA still decodes. A capture gap inside a
frame whose header was read skips just that frame (body marked truncated; a lost
header block makes the table unknown); any other gap resynchronises the same way.
Malformed frames become anomalies (layer ``http2``) and parsing goes on.
"""

from __future__ import annotations

from collections.abc import Callable

from ..events import Anomaly, Direction, Event, Run, feed_pieces
from ..http.body import decode_body
from ..http.events import HttpMessage
from ..piecebuf import PieceBuffer
from .frames import (
    ACK,
    DEFAULT_MAX_FRAME_SIZE,
    END_HEADERS,
    END_STREAM,
    FIXED_LENGTH,
    FRAME_HEADER_LEN,
    MAX_FRAME_SIZE_LIMIT,
    ON_STREAM_ZERO,
    PREFACE,
    PRIORITY_FLAG,
    SETTING,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    FrameHeader,
    FrameType,
    PaddingError,
    error_name,
    find_boundary,
    parse_header,
    plausible,
    strip_padding,
)
from .hpack_decode import HpackDecoder, HpackError
from .state import Block, Message, Side, State
from .stream import StreamInput, Streams, inputs

LAYER = "http2"
VERSION = "HTTP/2"

# Size caps (beyond ``max_body`` / ``max_header`` given to the session):
MAX_OPEN_STREAMS = 4096  # messages being read per direction; the oldest goes beyond
RESYNC_WINDOW = 4 * (DEFAULT_MAX_FRAME_SIZE + FRAME_HEADER_LEN)
"""Octets searched for a frame boundary before the ones searched are dropped."""
UNKNOWN_TABLE_LIMIT = (1 << 32) - 1
"""HPACK table size limit when the SETTINGS that set it were not captured (SETTINGS
values are 32-bit, RFC 9113 §6.5.1)."""


class Http2Session:
    """Sans-IO HTTP/2 parser of one connection (``SessionParser``).

    ``max_body`` caps a kept body (raw and decoded), ``max_header`` a header block.
    ``upgraded``: the connection switched from HTTP/1.1 (``Upgrade: h2c``): the client
    sends the preface, the server starts with SETTINGS, stream 1 answers the upgrade
    request. ``out_offset`` / ``in_offset``: stream offsets where this parser starts.
    """

    def __init__(self, flow_id: int, *, max_body: int = 1 << 20, max_header: int = 64 << 10,
                 out_offset: int = 0, in_offset: int = 0,
                 upgrade_request_index: int | None = None) -> None:
        self.flow_id = flow_id
        self.max_body = max_body
        self.max_header = max_header
        self._sides: dict[Direction, Side] = {
            "out": Side(PieceBuffer(out_offset), HpackDecoder()),
            "in": Side(PieceBuffer(in_offset), HpackDecoder()),
        }
        self._requests = 0
        self._request_index: dict[int, int] = {}  # stream id -> request index, until answered
        if upgrade_request_index is not None:
            # RFC 9113 §3.2 (by reference to RFC 7540 §3.2): "The HTTP/1.1 request that
            # is sent prior to upgrade is assigned a stream identifier of 1"
            self._request_index[1] = upgrade_request_index
            self._requests = upgrade_request_index + 1
        self.mid_stream = False
        self._dropped: list[Anomaly] = []  # raised where no event list is at hand
        self._streams = Streams(limit=2 * MAX_OPEN_STREAMS)
        if upgrade_request_index is not None:
            # RFC 7540 §3.2: stream 1 "is considered to be "half-closed" (local)" for the
            # client: its request went out as HTTP/1.1
            self._streams.fire(1, (StreamInput.SEND_HEADERS, StreamInput.SEND_END_STREAM))

    def __setstate__(self, state: dict[str, object]) -> None:
        # kept (resume) by a pcapflow of before the stream table: streams unchecked
        state.setdefault("_streams", Streams(tracking=False, limit=2 * MAX_OPEN_STREAMS))
        self.__dict__.update(state)

    # ---- SessionParser ------------------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Take the next in-order piece of ``direction``; return finished events."""
        side = self._sides[direction]
        side.buf.append(data, ts_first, ts_last)
        events: list[Event] = []
        self._run(direction, side, events)
        if self._dropped:
            events += self._dropped
            self._dropped = []
        return events

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """A run of in-order pieces: the same events as ``feed`` piece by piece."""
        return feed_pieces(self, direction, run)

    def independent(self) -> bool:
        """Never: a response takes its request's index from the other direction, and
        SETTINGS set the other direction's limits, so both are fed in capture order."""
        return False

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        """``length`` octets never captured: skip the rest of a frame whose header was
        read, else resynchronise after the gap."""
        side = self._sides[direction]
        if length <= 0:
            return []
        events: list[Event] = []
        offset = side.buf.end
        if side.skip:
            cut = min(side.skip, length)
            side.skip -= cut
            length -= cut
            side.buf.skip(cut, ts)
            if not side.skip:
                self._skipped(direction, side, ts, events)
            if not length:
                return events
        data = side.buf.data
        if side.state is State.FRAMES and len(data) >= FRAME_HEADER_LEN and plausible(
                data, 0, MAX_FRAME_SIZE_LIMIT):
            hdr = parse_header(data)
            missing_end = len(data) + length  # relative to the frame's first octet
            frame_end = FRAME_HEADER_LEN + hdr.length
            if frame_end >= missing_end:
                side.skip = frame_end - missing_end
                self._frame_cut(direction, side, hdr, ts, offset, length, events)
                side.buf.skip(length, ts)
                if not side.skip:
                    self._skipped(direction, side, ts, events)
                return events
        side.buf.skip(length, ts)
        self._lose_sync(direction, side, ts, "stream_gap",
                        f"{length} octets missing; resynchronising", offset, events)
        return events

    def finish(self, ts: int) -> list[Event]:
        """End of connection: what is still open is reported, and emitted as it is."""
        events: list[Event] = []
        for direction, side in self._sides.items():
            if side.block is not None:
                events.append(self._anomaly(direction, ts, "incomplete_header_block",
                                            f"stream {side.block.stream_id}",
                                            side.block.stream_offset))
                side.block = None
            for msg in list(side.msgs.values()):
                events.append(self._anomaly(direction, ts, "incomplete_message",
                                            f"stream {msg.stream_id}: no END_STREAM",
                                            msg.stream_offset))
                msg.truncated = True
                events.extend(self._complete(direction, side, msg, msg.header_ts_last))
            if side.buf.data and side.state is not State.RESYNC:
                events.append(self._anomaly(direction, ts, "incomplete_frame",
                                            f"{len(side.buf.data)} octets", side.buf.start))
        return events

    # ---- framing --------------------------------------------------------------------------
    def _run(self, direction: Direction, side: Side, events: list[Event]) -> None:
        buf = side.buf
        while True:
            if side.skip:
                n = min(side.skip, len(buf.data))
                buf.consume(n)
                side.skip -= n
                if side.skip:
                    return
                self._skipped(direction, side, buf.times_at(buf.start - 1)[1], events)
            if side.state is State.START and not self._start(direction, side, events):
                return
            if side.state is State.RESYNC and not self._resync(direction, side, events):
                return
            data = buf.data
            if len(data) < FRAME_HEADER_LEN:
                return
            hdr = parse_header(data)
            limit = max(side.max_frame_size, DEFAULT_MAX_FRAME_SIZE)
            if hdr.length > limit:
                # §4.2: "An endpoint MUST send an error code of FRAME_SIZE_ERROR if a frame
                # exceeds the size defined in SETTINGS_MAX_FRAME_SIZE"; for us it means
                # the framing is lost (or garbage): find the next boundary
                self._lose_sync(direction, side, buf.times_at(buf.start)[1], "frame_too_large",
                                f"type {hdr.type} length {hdr.length} > {limit}", buf.start,
                                events)
                buf.consume(1)
                continue
            end = FRAME_HEADER_LEN + hdr.length
            if len(data) < end:
                return
            offset = buf.start
            t_first = buf.times_at(offset)[0]
            t_last = buf.times_at(offset + end - 1)[1]
            payload = bytes(data[FRAME_HEADER_LEN:end])
            buf.consume(end)
            self._frame(direction, side, hdr, payload, offset, t_first, t_last, events)

    def _start(self, direction: Direction, side: Side, events: list[Event]) -> bool:
        """§3.4: the client's preface, then frames; the server's first frame is SETTINGS."""
        data = side.buf.data
        if direction == "out":
            n = min(len(data), len(PREFACE))
            if data[:n] == PREFACE[:n]:
                if n < len(PREFACE):
                    return False
                side.buf.consume(len(PREFACE))
                side.state = State.FRAMES
                return True
        else:
            if len(data) < FRAME_HEADER_LEN:
                return False
            hdr = parse_header(data)
            if hdr.type == FrameType.SETTINGS and not hdr.flags & ACK and hdr.stream_id == 0:
                side.state = State.FRAMES
                return True
        self.mid_stream = True
        for each in self._sides.values():
            # the SETTINGS that bounded the tables were not seen: accept any size update
            each.decoder.limit = max(each.decoder.limit, UNKNOWN_TABLE_LIMIT)
        ts = side.buf.times_at(side.buf.start)[0] if side.buf.data else 0
        self._lose_sync(direction, side, ts, "mid_stream",
                        "no connection preface: the capture began mid-connection; "
                        "HPACK dynamic table unknown", side.buf.start, events)
        return True

    def _resync(self, direction: Direction, side: Side, events: list[Event]) -> bool:
        buf = side.buf
        limit = max(side.max_frame_size, DEFAULT_MAX_FRAME_SIZE)
        at = find_boundary(buf.data, limit)
        if at is None:
            drop = len(buf.data) - RESYNC_WINDOW
            if drop > 0:
                buf.consume(drop)
            return False
        buf.consume(at)
        side.state = State.FRAMES
        return True

    def _lose_sync(self, direction: Direction, side: Side, ts: int, code: str, detail: str,
                   offset: int, events: list[Event]) -> None:
        """Framing lost: the header block being read and the HPACK table are unknown."""
        events.append(self._anomaly(direction, ts, code, detail, offset))
        side.state = State.RESYNC
        side.block = None
        self._lose_streams(side)

    def _lose_streams(self, side: Side) -> None:
        """A header block or the framing was lost: the HPACK table is unknown, and which
        streams opened too (``stream``: nothing is checked from here on)."""
        side.decoder.forget()
        self._streams.tracking = False

    def _stream(self, direction: Direction, sid: int, frame: str, end_stream: bool,
                offset: int, ts: int, events: list[Event]) -> None:
        """Move stream ``sid`` by the frame (``stream.TRANSITIONS``); a protocol error
        is an anomaly."""
        problem = self._streams.fire(sid, inputs(direction, frame, end_stream))
        if problem is not None:
            events.append(self._anomaly(direction, ts, "stream_state_error", problem, offset))

    def _frame_cut(self, direction: Direction, side: Side, hdr: FrameHeader, ts: int,
                   offset: int, length: int, events: list[Event]) -> None:
        """A capture gap inside the frame ``hdr``, which is skipped."""
        msg = side.msgs.get(hdr.stream_id)
        if hdr.type == FrameType.DATA:
            self._stream(direction, hdr.stream_id, "DATA", bool(hdr.flags & END_STREAM),
                         offset, ts, events)
            if msg is not None:
                msg.truncated = True
                msg.wire += hdr.length
                if hdr.flags & END_STREAM:
                    side.skip_ends = hdr.stream_id
            events.append(self._anomaly(direction, ts, "body_gap",
                                        f"stream {hdr.stream_id}: {length} octets missing",
                                        offset))
            return
        if hdr.type in (FrameType.HEADERS, FrameType.CONTINUATION, FrameType.PUSH_PROMISE):
            side.block = None
            self._lose_streams(side)
            events.append(self._anomaly(direction, ts, "header_block_gap",
                                        f"stream {hdr.stream_id}: header block lost; "
                                        "HPACK dynamic table unknown", offset))
            return
        events.append(self._anomaly(direction, ts, "frame_gap",
                                    f"type {hdr.type}: {length} octets missing", offset))

    def _skipped(self, direction: Direction, side: Side, ts: int,
                 events: list[Event]) -> None:
        """The frame cut by a gap is over: if it carried END_STREAM, the message ends."""
        sid, side.skip_ends = side.skip_ends, None
        msg = side.msgs.get(sid) if sid is not None else None
        if msg is not None:
            events.extend(self._complete(direction, side, msg, ts))

    def _frame(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
               offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        block = side.block
        if block is not None and (hdr.type != FrameType.CONTINUATION
                                  or hdr.stream_id != block.stream_id):
            # §6.10: "If the END_HEADERS flag is not set, this frame MUST be followed by
            # another CONTINUATION frame" on the same stream
            events.append(self._anomaly(direction, t_last, "continuation_expected",
                                        f"type {hdr.type} on stream {hdr.stream_id} inside the "
                                        f"header block of stream {block.stream_id}", offset))
            side.block = None
            self._lose_streams(side)
        if hdr.type > FrameType.CONTINUATION:
            return  # §5.5: "Implementations MUST ignore and discard frames of unknown types"
        fixed = FIXED_LENGTH.get(hdr.type)
        if fixed is not None and hdr.length != fixed:
            events.append(self._anomaly(direction, t_last, "frame_size_error",
                                        f"{FrameType(hdr.type).name} of {hdr.length} octets",
                                        offset))
            return
        if (hdr.stream_id == 0) != (hdr.type in ON_STREAM_ZERO) and (
                hdr.type != FrameType.WINDOW_UPDATE):
            events.append(self._anomaly(direction, t_last, "bad_stream_id",
                                        f"{FrameType(hdr.type).name} on stream {hdr.stream_id}",
                                        offset))
            if hdr.type in (FrameType.HEADERS, FrameType.PUSH_PROMISE, FrameType.CONTINUATION):
                self._lose_streams(side)
            return
        _HANDLERS[hdr.type](self, direction, side, hdr, payload, offset, t_first, t_last,
                            events)

    # ---- frame handlers (§6) ----------------------------------------------------------------
    def _data(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
              offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        self._stream(direction, hdr.stream_id, "DATA", bool(hdr.flags & END_STREAM), offset,
                     t_last, events)
        msg = side.msgs.get(hdr.stream_id)
        if msg is None:
            # the headers were never seen (mid-connection capture, a lost header block)
            msg = self._open(direction, side, hdr.stream_id, [], offset, t_first, t_last)
            events.append(self._anomaly(direction, t_last, "data_without_headers",
                                        f"stream {hdr.stream_id}", offset))
        try:
            body = strip_padding(payload, hdr.flags)
        except PaddingError as err:
            events.append(self._anomaly(direction, t_last, "bad_padding", str(err), offset))
            msg.truncated = True
            body = b""
        msg.wire += len(body)
        keep = min(len(body), self.max_body - msg.kept)
        if keep > 0:
            msg.parts.append(body[:keep])
            msg.kept += keep
        if keep < len(body):
            msg.truncated = True
        if hdr.flags & END_STREAM:
            events.extend(self._complete(direction, side, msg, t_last))

    def _headers(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
                 offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        try:
            fragment = strip_padding(payload, hdr.flags, bool(hdr.flags & PRIORITY_FLAG))
        except PaddingError as err:
            events.append(self._anomaly(direction, t_last, "bad_padding", str(err), offset))
            self._lose_streams(side)
            return
        side.block = Block(hdr.stream_id, hdr.flags, offset, t_first, None, [fragment],
                            len(fragment))
        if hdr.flags & END_HEADERS:
            self._end_block(direction, side, t_last, events)

    def _push_promise(self, direction: Direction, side: Side, hdr: FrameHeader,
                      payload: bytes, offset: int, t_first: int, t_last: int,
                      events: list[Event]) -> None:
        try:
            rest = strip_padding(payload, hdr.flags)
            if len(rest) < 4:
                raise PaddingError("no Promised Stream ID")
        except PaddingError as err:
            events.append(self._anomaly(direction, t_last, "bad_padding", str(err), offset))
            self._lose_streams(side)
            return
        promised = int.from_bytes(rest[:4], "big") & 0x7FFFFFFF
        side.block = Block(hdr.stream_id, hdr.flags & ~END_STREAM, offset, t_first, promised,
                            [rest[4:]], len(rest) - 4)
        if hdr.flags & END_HEADERS:
            self._end_block(direction, side, t_last, events)

    def _continuation(self, direction: Direction, side: Side, hdr: FrameHeader,
                      payload: bytes, offset: int, t_first: int, t_last: int,
                      events: list[Event]) -> None:
        block = side.block
        if block is None:
            # the opening HEADERS was lost (or never sent): the block cannot be decoded
            events.append(self._anomaly(direction, t_last, "unexpected_continuation",
                                        f"stream {hdr.stream_id}", offset))
            self._lose_streams(side)
            return
        block.fragments.append(payload)
        block.size += len(payload)
        if block.size > self.max_header:
            events.append(self._anomaly(direction, t_last, "header_too_long",
                                        f"stream {block.stream_id}: over {self.max_header} "
                                        "octets", block.stream_offset))
            side.block = None
            self._lose_streams(side)
            return
        if hdr.flags & END_HEADERS:
            self._end_block(direction, side, t_last, events)

    def _rst_stream(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
                    offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        code = int.from_bytes(payload, "big")
        self._stream(direction, hdr.stream_id, "RST_STREAM", False, offset, t_last, events)
        self._reset(direction, hdr.stream_id, error_name(code), offset, t_first, t_last, events)

    def _settings(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
                  offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        if hdr.flags & ACK:
            return
        if len(payload) % SETTING.size:
            events.append(self._anomaly(direction, t_last, "frame_size_error",
                                        f"SETTINGS of {len(payload)} octets", offset))
            return
        peer = self._sides["in" if direction == "out" else "out"]
        for pos in range(0, len(payload), SETTING.size):
            ident, value = SETTING.unpack_from(payload, pos)
            if ident == SETTINGS_HEADER_TABLE_SIZE:
                # the sender's decoder allows this much: a limit on the peer's encoder
                peer.decoder.limit = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                    peer.max_frame_size = value
                else:
                    events.append(self._anomaly(direction, t_last, "bad_setting",
                                                f"SETTINGS_MAX_FRAME_SIZE {value}", offset))

    def _goaway(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
                offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        if len(payload) < 8:
            events.append(self._anomaly(direction, t_last, "frame_size_error",
                                        f"GOAWAY of {len(payload)} octets", offset))
            return
        last_id = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        code = error_name(int.from_bytes(payload[4:8], "big"))
        # §6.8: streams initiated by the receiver above Last-Stream-ID "were not or will
        # not be processed": the client's streams when the server sends it
        refused = sorted(sid for sid in self._request_index
                         if sid > last_id and (sid % 2 == 1) == (direction == "in"))
        if code != "NO_ERROR" or refused:
            debug = payload[8:72].decode("latin-1")
            events.append(self._anomaly(direction, t_last, "goaway",
                                        f"{code}, last stream {last_id}, {len(refused)} refused"
                                        + (f": {debug}" if debug else ""), offset))
        for sid in refused:
            self._reset(direction, sid, f"GOAWAY {code}", offset, t_first, t_last, events)

    def _ignore(self, direction: Direction, side: Side, hdr: FrameHeader, payload: bytes,
                offset: int, t_first: int, t_last: int, events: list[Event]) -> None:
        """PRIORITY, PING, WINDOW_UPDATE: nothing a message row needs."""

    # ---- header blocks and messages -------------------------------------------------------
    def _end_block(self, direction: Direction, side: Side, t_last: int,
                   events: list[Event]) -> None:
        block = side.block
        assert block is not None
        side.block = None
        raw = b"".join(block.fragments)
        try:
            decoded = side.decoder.decode(raw)
            headers, unknown = decoded.headers, decoded.unknown
        except HpackError as err:
            events.append(self._anomaly(direction, t_last, err.code,
                                        f"stream {block.stream_id}: {err}; HPACK dynamic "
                                        "table unknown", block.stream_offset))
            headers, unknown = [], -1
        if unknown > 0:
            events.append(self._anomaly(direction, t_last, "hpack_unknown_entry",
                                        f"stream {block.stream_id}: {unknown} field(s) refer to "
                                        "dynamic table entries not seen; left out",
                                        block.stream_offset))
        if block.promised is not None:
            # a pushed request: decoded to keep the table; its response will follow
            self._stream(direction, block.promised, "PUSH_PROMISE", False,
                         block.stream_offset, t_last, events)
            return
        sid = block.stream_id
        self._stream(direction, sid, "HEADERS", bool(block.flags & END_STREAM),
                     block.stream_offset, t_last, events)
        msg = side.msgs.get(sid)
        if msg is not None and msg.headers:
            # §8.1: a second header section is the trailers (it carries END_STREAM)
            msg.trailers = headers
        elif msg is not None:  # DATA came first (the headers were lost): keep the body
            msg.headers = headers
        else:
            msg = self._open(direction, side, sid, headers, block.stream_offset,
                             block.ts_first, t_last)
            status = _int(msg.pseudo(":status"))
            if direction == "in" and status is not None and 100 <= status < 200:
                # §8.1: "zero or more HEADERS frames" with 1xx before the final response
                events.extend(self._complete(direction, side, msg, t_last))
                return
        if block.flags & END_STREAM:
            events.extend(self._complete(direction, side, msg, t_last))

    def _open(self, direction: Direction, side: Side, sid: int, headers: list[tuple[str, str]],
              offset: int, ts_first: int, ts_last: int) -> Message:
        """A new message on stream ``sid``."""
        if direction == "out":
            kind = "request"
            index = self._request_index.get(sid)
            if index is None:
                index = self._requests
                self._requests += 1
                self._request_index[sid] = index
                if len(self._request_index) > MAX_OPEN_STREAMS:
                    del self._request_index[next(iter(self._request_index))]
        else:
            kind, index = "response", self._request_index.get(sid)
        msg = Message(kind=kind, stream_id=sid, stream_offset=offset, ts_first=ts_first,
                   header_ts_last=ts_last, request_index=index, headers=headers)
        side.msgs[sid] = msg
        if len(side.msgs) > MAX_OPEN_STREAMS:  # the oldest unfinished message goes
            old = side.msgs.pop(next(iter(side.msgs)))
            self._dropped.append(self._anomaly(
                direction, ts_last, "too_many_streams", f"stream {old.stream_id} dropped: "
                f"more than {MAX_OPEN_STREAMS} messages open", old.stream_offset))
        return msg

    def _complete(self, direction: Direction, side: Side, msg: Message,
                  ts_last: int) -> list[Event]:
        side.msgs.pop(msg.stream_id, None)
        events: list[Event] = []
        content_encoding = msg.header("content-encoding")
        body, decoded, truncated, problem = decode_body(msg.parts, content_encoding,
                                                        self.max_body)
        if truncated:
            msg.truncated = True
        if problem is not None:
            events.append(self._anomaly(direction, ts_last, *problem, msg.stream_offset))
        status_code = _int(msg.pseudo(":status"))
        if direction == "in" and (status_code is None or status_code >= 200):
            self._request_index.pop(msg.stream_id, None)
        events.append(HttpMessage(
            ts_first=msg.ts_first, ts_last=ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=msg.stream_offset, kind=msg.kind, method=msg.pseudo(":method"),
            path=msg.pseudo(":path"), version=VERSION, status=status_code, reason=None,
            headers=msg.headers, body=body, body_length=msg.wire,
            content_encoding=content_encoding, request_index=msg.request_index,
            header_ts_last=msg.header_ts_last, body_truncated=msg.truncated,
            body_decoded=decoded, trailers=msg.trailers, stream_id=msg.stream_id,
        ))
        return events

    def _reset(self, direction: Direction, sid: int, reason: str, offset: int, t_first: int,
               t_last: int, events: list[Event]) -> None:
        """Stream ``sid`` ended by RST_STREAM or refused by GOAWAY: what was being read on
        it is emitted as it is (truncated), then one ``reset`` row."""
        index = self._request_index.get(sid)
        for d, side in self._sides.items():
            msg = side.msgs.get(sid)
            if msg is not None:
                msg.truncated = True
                events.extend(self._complete(d, side, msg, t_last))
        self._request_index.pop(sid, None)
        events.append(HttpMessage(
            ts_first=t_first, ts_last=t_last, flow_id=self.flow_id, direction=direction,
            stream_offset=offset, kind="reset", method=None, path=None, version=VERSION,
            status=None, reason=reason, headers=[], body=b"", body_length=0,
            content_encoding=None, request_index=index,
            header_ts_last=t_last, stream_id=sid,
        ))

    def _anomaly(self, direction: Direction, ts: int, code: str, detail: str,
                 offset: int | None) -> Anomaly:
        return Anomaly(ts=ts, flow_id=self.flow_id, direction=direction, layer=LAYER,
                       code=code, detail=detail, stream_offset=offset)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and len(text) <= 3 else None


_Handler = Callable[[Http2Session, Direction, Side, FrameHeader, bytes, int, int, int,
                     list[Event]], None]
_HANDLERS: dict[int, _Handler] = {
    FrameType.DATA: Http2Session._data,
    FrameType.HEADERS: Http2Session._headers,
    FrameType.PRIORITY: Http2Session._ignore,
    FrameType.RST_STREAM: Http2Session._rst_stream,
    FrameType.SETTINGS: Http2Session._settings,
    FrameType.PUSH_PROMISE: Http2Session._push_promise,
    FrameType.PING: Http2Session._ignore,
    FrameType.GOAWAY: Http2Session._goaway,
    FrameType.WINDOW_UPDATE: Http2Session._ignore,
    FrameType.CONTINUATION: Http2Session._continuation,
}
"""Frame type -> handler (§6); unknown types are discarded before the lookup."""
