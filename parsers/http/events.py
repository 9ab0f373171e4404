"""The events of an HTTP connection: ``HttpMessage`` (one row of ``http_messages``,
from HTTP/1.1 and HTTP/2 alike) and ``WebSocketHandshake`` (a completed switch to
WebSocket). A module of their own so that ``parsers.http2`` can emit them without
importing the HTTP/1.1 session, which itself hands ``h2c`` upgrades to HTTP/2."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import Direction
from .syntax import Headers


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpMessage:
    """One request or response: one row of ``http_messages``.

    ``body`` has transfer and content codings removed and is at most ``max_body`` bytes
    (``body_truncated``); ``body_decoded`` is False when a content coding could not be
    removed (``body`` is then the coded bytes, and an anomaly says why).
    ``body_length`` counts the message-body bytes on the wire (chunk framing and
    trailers included). ``request_index`` is the 0-based request on this connection;
    for a response, the request it answers. HTTP/2 (``parsers.http2``) emits the same
    event with ``version="HTTP/2"``, its ``stream_id``, the pseudo-header fields in
    ``headers``, and ``kind="reset"`` for a stream ended by RST_STREAM or GOAWAY.
    """

    ts_first: int
    ts_last: int
    flow_id: int
    direction: Direction
    stream_offset: int
    kind: str  # "request" | "response"
    method: str | None
    path: str | None
    version: str
    status: int | None
    reason: str | None
    headers: Headers
    body: bytes
    body_length: int
    content_encoding: str | None
    request_index: int | None  # None: an HTTP/2 reset on a stream whose request was not seen
    header_ts_last: int
    body_truncated: bool = False
    body_decoded: bool = True
    chunked: bool = False
    trailers: Headers = field(default_factory=list)
    stream_id: int | None = None  # HTTP/2 (parsers.http2): the stream; None for HTTP/1.x


@dataclass(frozen=True, slots=True, kw_only=True)
class WebSocketHandshake:
    """A completed ``101`` switch to WebSocket; times are those of the 101 response."""

    ts_first: int
    ts_last: int
    flow_id: int
    direction: Direction
    stream_offset: int
    request_index: int
    path: str | None
    host: str | None
    subprotocol: str | None
    extensions: str | None
    permessage_deflate: dict[str, int | bool] | None
