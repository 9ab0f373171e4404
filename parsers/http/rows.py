"""The ``http_messages`` table: its schema and the row converter of ``HttpMessage``
(headers, query strings and JSON or form bodies redacted on the way)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..protocols.columns import MESSAGE_KEY, TS, field, schema, to_text
from .events import HttpMessage

HEADER = pa.struct([("name", pa.string()), ("value", pa.string())])

HTTP_MESSAGES = schema(
    *MESSAGE_KEY,
    field(
        "kind",
        pa.string(),
        "`request`, `response`, or `reset` (HTTP/2: a stream ended by RST_STREAM, or "
        "refused by GOAWAY; `reason` holds the error code, `direction` who sent it)",
    ),
    field(
        "request_index",
        pa.int64(),
        "Position of the request on its connection (0-based); "
        "for a response, the request it answers (HTTP/2: the request on its stream)",
    ),
    field("method", pa.string(), "Request method"),
    field("path", pa.string(), "Request target, secret query parameters redacted"),
    field("version", pa.string(), "HTTP version: `HTTP/1.1`, `HTTP/1.0`, `HTTP/2`"),
    field("status", pa.int32(), "Response status code"),
    field("reason", pa.string(), "Response reason phrase (HTTP/1.x); the error code of a `reset`"),
    field("headers", pa.list_(HEADER), "Headers in order, secret values redacted"),
    field("content_type", pa.string(), "Content-Type header"),
    field("content_encoding", pa.string(), "Content-Encoding that was decoded"),
    field("chunked", pa.bool_(), "Transfer-Encoding: chunked"),
    field(
        "body",
        pa.string(),
        "Decoded body as text (UTF-8, invalid bytes replaced), secrets redacted, capped",
    ),
    field("body_length", pa.int64(), "Body bytes on the wire (chunk framing included)"),
    field("body_truncated", pa.bool_(), "Body longer than the cap"),
    field("header_ts_last", TS, "When the header block was complete"),
    field(
        "stream_id",
        pa.int64(),
        "HTTP/2 stream identifier (requests and responses pair by it); null for HTTP/1.x",
    ),
)


def _redact_body(text: str, content_type: str | None) -> str:
    from ..redact import redact_form, redact_json_text

    if content_type and "x-www-form-urlencoded" in content_type:
        return redact_form(text)
    return redact_json_text(text)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def message_row(e: HttpMessage) -> tuple[Any, ...]:
    from ..redact import redact_headers, redact_query  # (imported with the first row)

    headers = redact_headers(list(e.headers))
    ctype = _header(headers, "content-type")
    return (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.kind,
        e.request_index, e.method, redact_query(e.path) if e.path else e.path, e.version,
        e.status, e.reason, [{"name": k, "value": v} for k, v in headers], ctype,
        e.content_encoding, e.chunked, _redact_body(to_text(e.body), ctype) if e.body else "",
        e.body_length, e.body_truncated, e.header_ts_last, e.stream_id,
    )
