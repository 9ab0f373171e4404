"""HTTP/1.1 (RFC 9112) session parser, with the switch to other protocols (RFC 9110 §7.8).

How this works: one ``HttpSession`` per connection sees both directions, because the
framing of a response depends on its request (HEAD, CONNECT) and a ``101`` response
changes the protocol of both directions: to the one the registry declares for the
``Upgrade`` token the 101 names (``ProtocolSpec.upgraded``: WebSocket, h2c), whose
session then takes the bytes (``self.upgraded``). Each direction is a small state machine whose
handlers are looked up in ``_HANDLERS`` by state; a handler consumes what it can from
the direction's ``PieceBuffer`` and returns False when it needs more bytes. The body is
streamed: its bytes are counted as they pass and kept only up to ``max_body``, so a
large download costs no more memory than the cap; content codings are removed once the
message is complete (``body``).

Responses answer requests in order (RFC 9112 §9.3.2, pipelining), so the n-th final
response answers request n; interim 1xx responses do not use a request up.

Mid-stream (``midstream=True``: the capture began inside the connection), each direction
first skips to the next start line (``http_syntax.START_LINE_AT``) and pairing starts
from the first request read: a final response read while no request is waiting answers
one sent before the capture and is not paired (``request_index`` -1, an anomaly).

Times: ``ts_first`` is the time of the start line's first byte, ``header_ts_last`` the
time of the blank line ending the header section, ``ts_last`` of the body's last byte.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum, auto

from ..events import Anomaly, Direction, Event, Run, feed_pieces
from ..http2.frames import PREFACE
from ..limits import Limits
from ..piecebuf import PieceBuffer
from ..protocols.base import SessionParser, UpgradeContext, UpgradeHead, UpgradeSpec
from .body import decode_body
from .events import HttpMessage, WebSocketHandshake
from .syntax import (
    CHUNK_SIZE,
    HEAD_END,
    MAX_START_LINE,
    REQUEST_LINE,
    START_LINE_AT,
    STATUS_LINE,
    Headers,
    parse_fields,
    plausible_head,
)

__all__ = ["LAYER", "HttpMessage", "HttpSession", "State", "WebSocketHandshake"]

LAYER = "http"
# RFC 9113 §3.4: the HTTP/2 connection preface starts like a request line.
H2_PREFACE_LINE = PREFACE[: PREFACE.index(b"\r\n")]


# Size caps (beyond ``max_header`` / ``max_body`` given to the session):
MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions; longer means garbage
MAX_EARLY_DATA = 1 << 20  # client bytes held after an upgrade request until its response


class State(Enum):
    """Where one direction's parser stands."""

    HEAD = auto()  # expecting a start line and header section
    BODY_LENGTH = auto()  # Content-Length body, ``remaining`` bytes to go
    CHUNK_SIZE = auto()  # expecting a chunk-size line
    CHUNK_DATA = auto()  # inside chunk-data, ``remaining`` bytes to go
    CHUNK_DATA_END = auto()  # expecting the CRLF after chunk-data
    TRAILERS = auto()  # expecting the trailer section after the last chunk
    BODY_UNTIL_CLOSE = auto()  # response body delimited by the end of the connection
    AWAIT_UPGRADE = auto()  # client sent Upgrade/CONNECT; hold bytes until the answer
    UPGRADED = auto()  # bytes belong to the protocol switched to (``self.upgraded``)
    TUNNEL = auto()  # another protocol (CONNECT tunnel, an upgrade not parsed): ignored
    STOPPED = auto()  # malformed input: nothing more is parsed


class Input(Enum):
    """What moves one direction's parser from one ``State`` to the next (``_TRANSITIONS``)."""

    NO_BODY = auto()  # a head whose message has no body (§6.3 rules 1, 2, 6; length 0)
    LENGTH = auto()  # a head with a Content-Length body (§6.3 rule 5)
    CHUNKED = auto()  # a head with chunked transfer coding (§6.3 rule 3)
    UNTIL_CLOSE = auto()  # a response head whose body ends with the connection (rule 8)
    BODY_END = auto()  # the last byte of a Content-Length body
    CHUNK = auto()  # a chunk-size line with a size > 0 (§7.1)
    LAST_CHUNK = auto()  # chunk-size 0: the trailer section follows
    CHUNK_DATA_END = auto()  # the last byte of a chunk's data
    CHUNK_CRLF = auto()  # the CRLF after chunk-data
    TRAILERS_END = auto()  # the (possibly empty) trailer section and its blank line
    CLOSED = auto()  # the connection ended: a body read until close is complete (§6.3)
    CUT = auto()  # the connection ended inside a body: the message is kept, truncated
    UPGRADE_ASKED = auto()  # a request asking to switch protocols (Upgrade, CONNECT) ended
    UPGRADE_DECLINED = auto()  # its final answer was not 101 or a CONNECT 2xx
    SWITCHED = auto()  # 101 to a protocol the client's side takes after its request (WebSocket)
    SWITCHED_AT_ONCE = auto()  # 101 to a protocol both sides take at once (h2c)
    TO_TUNNEL = auto()  # CONNECT 2xx, or a 101 to a protocol not parsed
    STOP = auto()  # malformed input, a cap exceeded, a gap outside a body
    END = auto()  # ``finish``: nothing more comes


@dataclass(slots=True, kw_only=True)
class _Message:
    """A message being read: its head is known, its body is being collected."""

    kind: str
    stream_offset: int
    ts_first: int
    header_ts_last: int
    method: str | None = None
    path: str | None = None
    version: str = ""
    status: int | None = None
    reason: str | None = None
    headers: Headers = field(default_factory=list)
    request_index: int = 0
    chunked: bool = False
    upgrade: bool = False  # a request asking for Upgrade or CONNECT
    parts: list[bytes] = field(default_factory=list)
    kept: int = 0
    wire: int = 0
    truncated: bool = False
    trailers: Headers = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """The field value for ``name`` (case-insensitive), lines joined with ", "."""
        values = [v for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None


@dataclass(slots=True)
class _Side:
    buf: PieceBuffer
    state: State = State.HEAD
    msg: _Message | None = None
    remaining: int = 0
    scan_from: int = 0  # where the next search for the end of a header section starts
    hunting: bool = False  # mid-stream: no start line found yet
    skipped: int = 0  # bytes passed over while hunting


class HttpSession:
    """Sans-IO HTTP/1.1 parser of one connection (``out`` = requests, ``in`` = responses).

    ``max_body`` caps a kept body (raw and decoded); ``max_header`` caps a header section
    (start line, fields and trailers). After a ``101``, events come from the session of
    the protocol switched to (``self.upgraded``, made by ``upgrades[token]``: by default
    the registry's ``UPGRADES``), with ``limits`` (and ``ws_max_message`` /
    ``ws_max_inflated``).
    """

    def __init__(self, flow_id: int, *, max_body: int = 1 << 20, max_header: int = 64 << 10,
                 ws_max_message: int = 16 << 20, ws_max_inflated: int = 64 << 20,
                 midstream: bool = False, limits: Limits | None = None,
                 upgrades: Mapping[str, UpgradeSpec] | None = None):
        self.flow_id = flow_id
        self.max_body = max_body
        self.max_header = max_header
        self.ws_max_message = ws_max_message
        self.ws_max_inflated = ws_max_inflated
        self._sides: dict[Direction, _Side] = {
            "out": _Side(PieceBuffer(), hunting=midstream),
            "in": _Side(PieceBuffer(), hunting=midstream),
        }
        self.midstream = midstream
        self._requests = 0  # requests seen
        self._responses = 0  # final responses seen
        self._methods: dict[int, str] = {}  # request index -> method, until answered
        self._upgrade_request: _Message | None = None
        self._switch_out_after_request = False  # a 101 came before its request was read
        self.limits = limits
        self.upgrades = upgrades
        self.upgraded: SessionParser | None = None

    # ---- SessionParser ----------------------------------------------------------
    def feed(self, direction: Direction, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        """Take the next in-order piece of ``direction``; return finished events."""
        side = self._sides[direction]
        if side.state in (State.STOPPED, State.TUNNEL):
            side.buf.skip(len(data), ts_last)
            return []
        if side.state is State.UPGRADED:
            assert self.upgraded is not None
            return self.upgraded.feed(direction, data, ts_first, ts_last)
        if side.state is State.AWAIT_UPGRADE and len(side.buf.data) + len(data) > MAX_EARLY_DATA:
            return [self._stop(direction, "upgrade_buffer_overflow",
                               f"more than {MAX_EARLY_DATA} bytes before the upgrade answer")]
        side.buf.append(data, ts_first, ts_last)
        events: list[Event] = []
        self._run(direction, events)
        return events

    def independent(self) -> bool:
        """Past the upgrade both ways, as the protocol switched to says (WebSocket:
        each direction is frames on its own); before it, a response's framing depends
        on its request."""
        return self.upgraded is not None and all(
            side.state is State.UPGRADED for side in self._sides.values()
        ) and self.upgraded.independent()

    def feed_many(self, direction: Direction, run: Run) -> list[Event]:
        """A run of in-order pieces: the upgraded protocol's batch path after the switch."""
        if self._sides[direction].state is State.UPGRADED:
            assert self.upgraded is not None
            return self.upgraded.feed_many(direction, run)
        return feed_pieces(self, direction, run)

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]:
        """``length`` bytes never captured: skip them inside a body, else stop."""
        side = self._sides[direction]
        if side.state is State.UPGRADED:
            assert self.upgraded is not None
            return self.upgraded.gap(direction, length, ts)
        offset = side.buf.end
        in_body = side.state in (State.BODY_LENGTH, State.CHUNK_DATA)
        if side.state in (State.STOPPED, State.TUNNEL) or length <= 0:
            side.buf.skip(length, ts)
            return []
        if side.msg is not None and (
            side.state is State.BODY_UNTIL_CLOSE or (in_body and side.remaining >= length)
        ):
            if in_body:
                side.remaining -= length
            side.msg.wire += length
            side.msg.truncated = True
            side.buf.skip(length, ts)
            return [self._anomaly(direction, ts, "body_gap", f"{length} body bytes missing",
                                  offset)]
        side.buf.skip(length, ts)
        side.msg = None
        events: list[Event] = []
        self._fire(direction, side, Input.STOP, events)
        return [*events, self._anomaly(direction, ts, "stream_gap",
                                       f"{length} bytes; direction stopped", offset)]

    def finish(self, ts: int) -> list[Event]:
        """End of connection: a response read until close is complete now."""
        events: list[Event] = []
        for direction, side in self._sides.items():
            if side.state is State.BODY_UNTIL_CLOSE and side.msg is not None:
                self._fire(direction, side, Input.CLOSED, events)
            elif side.msg is not None and side.state not in (State.STOPPED, State.TUNNEL):
                # the head was read, the body never ended: report it, and keep what came
                events.append(self._anomaly(direction, ts, "incomplete_message",
                                            f"{side.state.name.lower()} at end of stream",
                                            side.msg.stream_offset))
                side.msg.truncated = True
                self._fire(direction, side, Input.CUT, events)
            elif side.hunting and (side.skipped or side.buf.data):
                events.append(self._anomaly(direction, ts, "no_start_line",
                                            f"mid-stream: {side.skipped + len(side.buf.data)} "
                                            "bytes without a start line", 0))
            elif side.state is State.HEAD and side.buf.data.strip():
                events.append(self._anomaly(direction, ts, "incomplete_message",
                                            f"{len(side.buf.data)} bytes of an unfinished head",
                                            side.buf.start))
            self._fire(direction, side, Input.END, events)
        if self.upgraded is not None:
            events.extend(self.upgraded.finish(ts))
        return events

    # ---- the state machine ----------------------------------------------------------
    def _fire(self, direction: Direction, side: _Side, input_: Input,
              events: list[Event]) -> None:
        """Move ``side`` by ``_TRANSITIONS`` (the new state first, then the action, as
        h2's ``H2StreamStateMachine.process_input``); an input its state has no row for
        is a ``protocol_error`` anomaly and stops the direction."""
        row = _TRANSITIONS.get((side.state, input_))
        if row is None:
            events.append(self._stop(direction, "protocol_error",
                                     f"{input_.name.lower()} in state {side.state.name.lower()}"))
            return
        action, side.state = row
        if action is not None:
            action(self, direction, side, events)

    def _run(self, direction: Direction, events: list[Event]) -> None:
        side = self._sides[direction]
        while True:
            handler = _HANDLERS.get(side.state)
            if handler is None or not handler(self, direction, side, events):
                return

    def _read_head(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        buf = side.buf
        data = buf.data
        # §2.2: "SHOULD ignore at least one empty line (CRLF) received prior to the
        # request-line"; tolerated before a status line too
        skip = len(data) - len(data.lstrip(b"\r\n"))
        if skip:
            buf.consume(skip)
            side.scan_from = 0
            data = buf.data
        if not data:
            return False
        if side.hunting:
            if not self._hunt(direction, side, events):
                return False
            data = buf.data
        if direction == "out" and data.startswith(H2_PREFACE_LINE):
            self._stop_all(events, buf.times_at(buf.start)[1], "unsupported_protocol",
                           "HTTP/2 connection preface", buf.start)
            return False
        if not plausible_head(direction, data):
            events.append(self._stop(direction, "bad_start_line",
                                     repr(bytes(data[:40]))[2:-1]))
            return False
        m = HEAD_END.search(data, side.scan_from)
        if m is None:
            if len(data) > self.max_header:
                events.append(self._stop(direction, "header_too_long",
                                         f"no end of header section in {len(data)} bytes"))
                return False
            side.scan_from = max(0, len(data) - 3)
            return False
        end = m.end()
        if end > self.max_header:
            events.append(self._stop(direction, "header_too_long", f"{end} bytes"))
            return False
        head = bytes(data[: m.start()])
        start = buf.start
        ts_first = buf.times_at(start)[0]
        header_ts_last = buf.times_at(start + end - 1)[1]
        buf.consume(end)
        side.scan_from = 0
        msg = self._parse_head(direction, head, start, ts_first, header_ts_last, events)
        if msg is None:
            return False
        return self._begin_body(direction, side, msg, events)

    def _hunt(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        """Mid-stream: skip to the next start line; True once there."""
        buf = side.buf
        m = START_LINE_AT[direction].search(buf.data)
        if m is None:
            # keep what may be the start of a head still arriving
            drop = max(0, len(buf.data) - MAX_START_LINE)
            side.skipped += drop
            buf.consume(drop)
            return False
        side.skipped += m.start()
        buf.consume(m.start())
        side.hunting = False
        side.scan_from = 0
        if side.skipped:
            events.append(self._anomaly(direction, buf.times_at(buf.start)[1],
                                        "midstream_resync",
                                        f"skipped {side.skipped} bytes before the first "
                                        "start line", buf.start))
        return True

    def _parse_head(self, direction: Direction, head: bytes, offset: int, ts_first: int,
                    ts_last: int, events: list[Event]) -> _Message | None:
        lines = head.split(b"\n")
        start_line = lines[0].rstrip(b"\r")
        msg = _Message(kind="request" if direction == "out" else "response",
                       stream_offset=offset, ts_first=ts_first, header_ts_last=ts_last)
        if direction == "out":
            m = REQUEST_LINE.fullmatch(start_line)
            if m is not None:
                msg.method, msg.path, msg.version = (g.decode("latin-1") for g in m.groups())
        else:
            m = STATUS_LINE.fullmatch(start_line)
            if m is not None:
                msg.version = m.group(1).decode("latin-1")
                msg.status = int(m.group(2))
                msg.reason = (m.group(3) or b"").decode("latin-1").strip()
        if m is None:
            events.append(self._stop(direction, "bad_start_line",
                                     repr(start_line[:80])[2:-1], offset, ts_last))
            return None
        headers = parse_fields(lines[1:])
        if headers is None:
            events.append(self._stop(direction, "bad_header", "malformed field line", offset,
                                     ts_last))
            return None
        msg.headers = headers
        return msg

    def _begin_body(self, direction: Direction, side: _Side, msg: _Message,
                    events: list[Event]) -> bool:
        """§6.3: decide how the body is delimited, then read it (or finish at once)."""
        if direction == "out":
            msg.request_index = self._requests
            self._requests += 1
            self._methods[msg.request_index] = msg.method or ""
            msg.upgrade = _wants_upgrade(msg)
        elif self.midstream and self._responses >= self._requests:
            # no captured request is waiting: it answers one sent before the capture
            msg.request_index = -1
            events.append(self._anomaly(direction, msg.header_ts_last, "response_without_request",
                                        "mid-stream: the request it answers was sent before "
                                        "the capture began; not paired", msg.stream_offset))
        else:
            msg.request_index = self._responses
            if msg.status is not None and msg.status >= 200:
                self._responses += 1
        side.msg = msg
        framing = self._framing(direction, msg, events)
        if framing is None:
            return False
        kind, length = framing
        if kind == "none" or (kind == "length" and length == 0):
            self._fire(direction, side, Input.NO_BODY, events)
        elif kind == "length":
            side.remaining = length
            self._fire(direction, side, Input.LENGTH, events)
        elif kind == "chunked":
            msg.chunked = True
            self._fire(direction, side, Input.CHUNKED, events)
        else:
            self._fire(direction, side, Input.UNTIL_CLOSE, events)
        return True

    def _framing(
        self, direction: Direction, msg: _Message, events: list[Event]
    ) -> tuple[str, int] | None:
        """``("none"|"length"|"chunked"|"close", length)``; None if it stopped."""
        status = msg.status or 0
        if direction == "in":
            method = self._methods.get(msg.request_index, "GET")
            # §6.3 rule 1: "Any response to a HEAD request and any response with a 1xx
            # (Informational), 204 (No Content), or 304 (Not Modified) status code is
            # always terminated by the first empty line after the header fields"
            if method == "HEAD" or status < 200 or status in (204, 304):
                return "none", 0
            # §6.3 rule 2: "Any 2xx (Successful) response to a CONNECT request implies
            # that the connection will become a tunnel immediately after the empty line"
            if method == "CONNECT" and 200 <= status < 300:
                return "none", 0
        te = msg.header("transfer-encoding")
        if te is not None:
            # §6.3 rule 3: Transfer-Encoding overrides Content-Length; chunked must be last
            codings = [c.strip().lower() for c in te.split(",") if c.strip()]
            if codings and codings[-1] == "chunked":
                return "chunked", 0
            if direction == "out":
                events.append(self._stop(direction, "bad_transfer_encoding", te,
                                         msg.stream_offset, msg.header_ts_last))
                return None
            return "close", 0
        cl = msg.header("content-length")
        if cl is not None:
            # §6.3 rule 5: a list of identical values is one value; anything else is bad
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                events.append(self._stop(direction, "bad_content_length", cl,
                                         msg.stream_offset, msg.header_ts_last))
                return None
            return "length", int(values.pop())
        # §6.3 rule 6/8: a request without either has no body; a response reads to close
        return ("none", 0) if direction == "out" else ("close", 0)

    def _read_length(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        n = min(side.remaining, len(side.buf.data))
        if n == 0 and side.remaining:
            return False
        self._take_body(side, n)
        side.remaining -= n
        if side.remaining == 0:
            self._fire(direction, side, Input.BODY_END, events)
            return True
        return False

    def _read_chunk_size(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        data = side.buf.data
        nl = data.find(b"\n", 0, MAX_CHUNK_LINE)
        if nl < 0:
            if len(data) >= MAX_CHUNK_LINE:
                events.append(self._stop(direction, "bad_chunk_size", "chunk-size line too long"))
            return False
        line = bytes(data[:nl]).rstrip(b"\r")
        size_field = line.split(b";", 1)[0].strip(b" \t")
        if not CHUNK_SIZE.fullmatch(size_field):
            events.append(self._stop(direction, "bad_chunk_size", repr(line[:40])[2:-1]))
            return False
        self._count_wire(side, nl + 1)
        size = int(size_field, 16)
        if size == 0:
            self._fire(direction, side, Input.LAST_CHUNK, events)
        else:
            side.remaining = size
            self._fire(direction, side, Input.CHUNK, events)
        return True

    def _read_chunk_data(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        n = min(side.remaining, len(side.buf.data))
        if n == 0:
            return False
        self._take_body(side, n)
        side.remaining -= n
        if side.remaining == 0:
            self._fire(direction, side, Input.CHUNK_DATA_END, events)
            return True
        return False

    def _read_chunk_end(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        data = side.buf.data
        if data[:2] == b"\r\n":
            self._count_wire(side, 2)
        elif data[:1] == b"\n":
            self._count_wire(side, 1)
        elif len(data) < 2 and data[:1] in (b"", b"\r"):
            return False
        else:
            events.append(self._stop(direction, "bad_chunk_size", "no CRLF after chunk-data"))
            return False
        self._fire(direction, side, Input.CHUNK_CRLF, events)
        return True

    def _read_trailers(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        data = side.buf.data
        assert side.msg is not None
        for blank in (b"\r\n", b"\n"):
            if data.startswith(blank):
                self._count_wire(side, len(blank))
                self._fire(direction, side, Input.TRAILERS_END, events)
                return True
        m = HEAD_END.search(data)
        if m is None:
            if len(data) > self.max_header:
                events.append(self._stop(direction, "header_too_long", "trailer section"))
            return False
        fields = parse_fields(bytes(data[: m.start()]).split(b"\n"))
        if fields is None:
            events.append(self._stop(direction, "bad_header", "malformed trailer field"))
            return False
        side.msg.trailers = fields
        self._count_wire(side, m.end())
        self._fire(direction, side, Input.TRAILERS_END, events)
        return True

    def _read_until_close(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        self._take_body(side, len(side.buf.data))
        return False

    def _hold(self, direction: Direction, side: _Side, events: list[Event]) -> bool:
        return False  # AWAIT_UPGRADE: bytes wait in the buffer for the server's answer

    # ---- bodies and completion ----------------------------------------------------
    def _take_body(self, side: _Side, n: int) -> None:
        msg = side.msg
        assert msg is not None
        if n <= 0:
            return
        keep = min(n, self.max_body - msg.kept)
        if keep > 0:
            msg.parts.append(bytes(side.buf.data[:keep]))
            msg.kept += keep
        if keep < n:
            msg.truncated = True
        self._count_wire(side, n)

    def _count_wire(self, side: _Side, n: int) -> None:
        assert side.msg is not None
        side.msg.wire += n
        side.buf.consume(n)

    def _complete(self, direction: Direction, side: _Side, events: list[Event]) -> None:
        """The action of an input that ends a message: its event, then what it
        changes (an upgrade asked for or answered)."""
        msg = side.msg
        assert msg is not None
        side.msg = None
        buf = side.buf
        ts_last = buf.times_at(buf.start - 1)[1] if msg.wire else msg.header_ts_last
        content_encoding = msg.header("content-encoding")
        body, decoded, truncated, problem = decode_body(msg.parts, content_encoding,
                                                        self.max_body)
        if truncated:
            msg.truncated = True
        if problem is not None:
            events.append(self._anomaly(direction, ts_last, *problem, msg.stream_offset))
        events.append(HttpMessage(
            ts_first=msg.ts_first, ts_last=ts_last, flow_id=self.flow_id, direction=direction,
            stream_offset=msg.stream_offset, kind=msg.kind, method=msg.method, path=msg.path,
            version=msg.version, status=msg.status, reason=msg.reason, headers=msg.headers,
            body=body, body_length=msg.wire, content_encoding=content_encoding,
            request_index=msg.request_index, header_ts_last=msg.header_ts_last,
            body_truncated=msg.truncated, body_decoded=decoded, chunked=msg.chunked,
            trailers=msg.trailers,
        ))
        if direction == "out":
            self._after_request(side, msg, events)
        else:
            self._after_response(msg, ts_last, events)

    def _after_request(self, side: _Side, msg: _Message, events: list[Event]) -> None:
        if not msg.upgrade:
            return
        self._upgrade_request = msg
        if self._switch_out_after_request and self.upgraded is not None:
            self._switch_out_after_request = False
            self._fire("out", side, Input.SWITCHED, events)
        elif self.upgraded is None:
            self._fire("out", side, Input.UPGRADE_ASKED, events)

    def _after_response(self, msg: _Message, ts_last: int, events: list[Event]) -> None:
        status = msg.status or 0
        self._methods_done(msg)
        out = self._sides["out"]
        req = self._upgrade_request
        answers_upgrade = req is not None and req.request_index == msg.request_index
        if status == 101:
            self._switch_protocols(msg, ts_last, events)
        elif answers_upgrade and req is not None and req.method == "CONNECT" and (
                200 <= status < 300):
            for direction, side in self._sides.items():
                self._fire(direction, side, Input.TO_TUNNEL, events)
        elif answers_upgrade and status >= 200 and out.state is State.AWAIT_UPGRADE:
            # §7.8 / RFC 9110 §7.8: the server declined the upgrade; HTTP goes on
            self._upgrade_request = None
            self._fire("out", out, Input.UPGRADE_DECLINED, events)

    def _methods_done(self, msg: _Message) -> None:
        if msg.status is not None and msg.status >= 200:
            self._methods.pop(msg.request_index, None)

    def _switch_protocols(self, msg: _Message, ts_last: int, events: list[Event]) -> None:
        """A 101 (RFC 9110 §15.2.2): to the protocol its ``Upgrade`` token names, when
        the registry declares one (``ProtocolSpec.upgraded``); else a tunnel not parsed."""
        token = (msg.header("upgrade") or "").strip().lower()
        upgrades = self.upgrades
        if upgrades is None:
            from ..protocols.registry import UPGRADES  # (the registry imports this module)

            upgrades = UPGRADES
        spec = upgrades.get(token)
        if spec is None:
            events.append(self._anomaly("in", ts_last, "unsupported_upgrade",
                                        f"Upgrade: {token or '(none)'}", msg.stream_offset))
            for direction, side in self._sides.items():
                self._fire(direction, side, Input.TO_TUNNEL, events)
            return
        out, inn = self._sides["out"], self._sides["in"]
        req = self._upgrade_request
        self.upgraded, switch_events = spec.session(UpgradeContext(
            flow_id=self.flow_id, limits=self._limits(), out_offset=out.buf.start,
            in_offset=inn.buf.start, request=_head(req) if req is not None else None,
            response=_head(msg, ts_last)))
        events.extend(switch_events)
        if spec.at_once:
            self._upgrade_request = None
            self._fire("out", out, Input.SWITCHED_AT_ONCE, events)
            self._fire("in", inn, Input.SWITCHED_AT_ONCE, events)
            return
        self._fire("in", inn, Input.SWITCHED, events)
        if out.state is State.AWAIT_UPGRADE:
            self._fire("out", out, Input.SWITCHED, events)
        else:
            # the 101 was read before its request (directions fed out of step)
            self._switch_out_after_request = True

    def _limits(self) -> Limits:
        """What the protocol switched to reads: ``limits`` with this session's caps."""
        return replace(self.limits or Limits(), http_max_body=self.max_body,
                       http_max_header=self.max_header, ws_max_message=self.ws_max_message,
                       ws_max_inflated=self.ws_max_inflated)

    # ---- actions of the transition table (after the new state is set) --------------
    def _to_upgraded(self, direction: Direction, side: _Side, events: list[Event]) -> None:
        """Bytes that came with the switch go to the protocol switched to."""
        assert self.upgraded is not None
        for data, ts_first, ts_last in side.buf.drain():
            events.extend(self.upgraded.feed(direction, data, ts_first, ts_last))

    def _drop_held(self, direction: Direction, side: _Side, events: list[Event]) -> None:
        side.buf.consume(len(side.buf.data))

    def _resume(self, direction: Direction, side: _Side, events: list[Event]) -> None:
        self._run(direction, events)

    # ---- anomalies --------------------------------------------------------------------
    def _stop(self, direction: Direction, code: str, detail: str = "",
              offset: int | None = None, ts: int | None = None) -> Anomaly:
        side = self._sides[direction]
        buf = side.buf
        if offset is None:
            offset = buf.start
        if ts is None:
            ts = buf.times_at(max(buf.start, min(offset, buf.end - 1)))[1] if buf.pieces else 0
        self._fire(direction, side, Input.STOP, [])  # STOP has a row in every state
        side.msg = None
        buf.consume(len(buf.data))
        return self._anomaly(direction, ts, code, detail, offset)

    def _stop_all(self, events: list[Event], ts: int, code: str, detail: str,
                  offset: int) -> None:
        events.append(self._anomaly("out", ts, code, detail, offset))
        for direction, side in self._sides.items():
            side.msg = None
            side.buf.consume(len(side.buf.data))
            self._fire(direction, side, Input.STOP, events)

    def _anomaly(self, direction: Direction, ts: int, code: str, detail: str,
                 offset: int | None) -> Anomaly:
        return Anomaly(ts=ts, flow_id=self.flow_id, direction=direction, layer=LAYER,
                       code=code, detail=detail, stream_offset=offset)


def _head(msg: _Message, ts_last: int | None = None) -> UpgradeHead:
    return UpgradeHead(headers=msg.headers, path=msg.path, request_index=msg.request_index,
                       stream_offset=msg.stream_offset, ts_first=msg.ts_first,
                       ts_last=ts_last if ts_last is not None else msg.header_ts_last)


def _wants_upgrade(msg: _Message) -> bool:
    """A request whose answer may switch protocols (Upgrade) or open a tunnel (CONNECT)."""
    if msg.method == "CONNECT":
        return True
    connection = (msg.header("connection") or "").lower()
    return msg.header("upgrade") is not None and "upgrade" in connection


_Handler = Callable[[HttpSession, Direction, _Side, list[Event]], bool]
_HANDLERS: dict[State, _Handler] = {
    State.HEAD: HttpSession._read_head,
    State.BODY_LENGTH: HttpSession._read_length,
    State.CHUNK_SIZE: HttpSession._read_chunk_size,
    State.CHUNK_DATA: HttpSession._read_chunk_data,
    State.CHUNK_DATA_END: HttpSession._read_chunk_end,
    State.TRAILERS: HttpSession._read_trailers,
    State.BODY_UNTIL_CLOSE: HttpSession._read_until_close,
    State.AWAIT_UPGRADE: HttpSession._hold,
}
"""State -> handler; states without one (UPGRADED, TUNNEL, STOPPED) take no HTTP bytes."""

_Action = Callable[[HttpSession, Direction, _Side, list[Event]], None]
_READING = (State.HEAD, State.BODY_LENGTH, State.CHUNK_SIZE, State.CHUNK_DATA,
            State.CHUNK_DATA_END, State.TRAILERS, State.BODY_UNTIL_CLOSE)
"""States that read HTTP bytes (with a message under way, except HEAD)."""
_BODY = _READING[1:]
_UPGRADABLE = (*_READING, State.AWAIT_UPGRADE, State.STOPPED)
"""Where the other direction may stand when a 101 or a CONNECT 2xx is read: the answer
switches both (a client that stopped, or whose request is still being read, too)."""
_TRANSITIONS: dict[tuple[State, Input], tuple[_Action | None, State]] = {
    # a head is read: how its body is delimited
    (State.HEAD, Input.NO_BODY): (HttpSession._complete, State.HEAD),
    (State.HEAD, Input.LENGTH): (None, State.BODY_LENGTH),
    (State.HEAD, Input.CHUNKED): (None, State.CHUNK_SIZE),
    (State.HEAD, Input.UNTIL_CLOSE): (None, State.BODY_UNTIL_CLOSE),
    # bodies
    (State.BODY_LENGTH, Input.BODY_END): (HttpSession._complete, State.HEAD),
    (State.CHUNK_SIZE, Input.CHUNK): (None, State.CHUNK_DATA),
    (State.CHUNK_SIZE, Input.LAST_CHUNK): (None, State.TRAILERS),
    (State.CHUNK_DATA, Input.CHUNK_DATA_END): (None, State.CHUNK_DATA_END),
    (State.CHUNK_DATA_END, Input.CHUNK_CRLF): (None, State.CHUNK_SIZE),
    (State.TRAILERS, Input.TRAILERS_END): (HttpSession._complete, State.HEAD),
    (State.BODY_UNTIL_CLOSE, Input.CLOSED): (HttpSession._complete, State.HEAD),
    **{(s, Input.CUT): (HttpSession._complete, State.HEAD) for s in _BODY},
    # (a request body cut short by a switch at once, to h2c, is kept, truncated, at the end)
    (State.UPGRADED, Input.CUT): (HttpSession._complete, State.HEAD),
    # switching protocols (the request's side waits for the answer)
    (State.HEAD, Input.UPGRADE_ASKED): (None, State.AWAIT_UPGRADE),
    (State.AWAIT_UPGRADE, Input.UPGRADE_DECLINED): (HttpSession._resume, State.HEAD),
    (State.HEAD, Input.SWITCHED): (HttpSession._to_upgraded, State.UPGRADED),
    (State.AWAIT_UPGRADE, Input.SWITCHED): (HttpSession._to_upgraded, State.UPGRADED),
    **{(s, Input.SWITCHED_AT_ONCE): (HttpSession._to_upgraded, State.UPGRADED)
       for s in _UPGRADABLE},
    **{(s, Input.TO_TUNNEL): (HttpSession._drop_held, State.TUNNEL)
       for s in (*_UPGRADABLE, State.TUNNEL)},
    # stopping, and the end
    **{(s, Input.STOP): (None, State.STOPPED) for s in State},
    **{(s, Input.END): (None, State.STOPPED)
       for s in (*_READING, State.AWAIT_UPGRADE, State.TUNNEL, State.STOPPED)},
    (State.UPGRADED, Input.END): (None, State.UPGRADED),  # its session finishes it
}
"""``(state, input) -> (action, next state)`` of one direction, in the manner of h2's
``stream.py``: every state change of ``HttpSession`` is a row here; a pair with no row
is a ``protocol_error`` (``HttpSession._fire``)."""
