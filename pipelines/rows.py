"""Parser events -> column buffers of the message tables, redacted on the way.

How this works: ``RowBuffers.add(event)`` looks the event's type up in
``CONVERTERS`` (one function per event type, returning the table name and a row
tuple in the table's column order) and appends the row; ``flush`` turns each
table's rows into a pyarrow Table and hands it to the staging writer. Redaction
(``parsers.redact``) happens here, before anything can reach a file: headers,
query strings, JSON and form bodies, WebSocket text, FIX fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from ..parsers.fix import FixMessage
from ..parsers.http import HttpMessage
from ..parsers.redact import (
    redact_fix_fields,
    redact_form,
    redact_headers,
    redact_json_text,
    redact_query,
)
from ..parsers.tls.events import TlsRecord
from ..parsers.websocket import WsMessage
from .schemas import TABLES

# Rows buffered per table before they are written as one row group slice.
FLUSH_ROWS = 65536


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _redact_body(text: str, content_type: str | None) -> str:
    if content_type and "x-www-form-urlencoded" in content_type:
        return redact_form(text)
    return redact_json_text(text)


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _tls(e: TlsRecord) -> tuple[str, tuple[Any, ...]]:
    return "tls_records", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.content_type,
        e.inner_content_type, e.version, e.length, e.decrypted, e.plaintext_length,
    )


def _http(e: HttpMessage) -> tuple[str, tuple[Any, ...]]:
    headers = redact_headers(list(e.headers))
    ctype = _header(headers, "content-type")
    return "http_messages", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.kind,
        e.request_index, e.method, redact_query(e.path) if e.path else e.path, e.version,
        e.status, e.reason, [{"name": k, "value": v} for k, v in headers], ctype,
        e.content_encoding, e.chunked, _redact_body(_text(e.body), ctype) if e.body else "",
        e.body_length, e.body_truncated, e.header_ts_last,
    )


def _ws(e: WsMessage) -> tuple[str, tuple[Any, ...]]:
    payload = _text(e.payload)
    if e.opcode == "text":
        payload = redact_json_text(payload)
    return "ws_messages", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.opcode, e.fin,
        e.frames, e.compressed, e.masked, payload, e.payload_length, e.wire_length,
        e.payload_truncated, e.close_code,
    )


def _fix(e: FixMessage) -> tuple[str, tuple[Any, ...]]:
    return "fix_messages", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.begin_string,
        e.msg_type, e.msg_seq_num, e.sender_comp_id, e.target_comp_id, e.sending_time,
        e.cl_ord_id, e.orig_cl_ord_id, e.order_id, e.exec_type, e.ord_status, e.text,
        e.poss_dup, e.checksum_ok, e.body_length, e.raw_length,
        [{"tag": t, "value": v} for t, v in redact_fix_fields(e.fields)],
    )


CONVERTERS: dict[type, Callable[[Any], tuple[str, tuple[Any, ...]]]] = {
    TlsRecord: _tls,
    HttpMessage: _http,
    WsMessage: _ws,
    FixMessage: _fix,
}


class RowBuffers:
    """Per-table row buffers that flush to a writer callable ``(table, pa.Table)``."""

    def __init__(self, write: Callable[[str, pa.Table], None]) -> None:
        self._write = write
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._schemas = {t: pa.schema([f for f in TABLES[t] if f.name != "capture_id"])
                         for t in ("tls_records", "http_messages", "ws_messages", "fix_messages")}

    def add(self, event: object) -> bool:
        """Buffer a row for ``event``; False when no table takes this event type."""
        conv = CONVERTERS.get(type(event))
        if conv is None:
            return False
        table, row = conv(event)
        rows = self._rows.setdefault(table, [])
        rows.append(row)
        if len(rows) >= FLUSH_ROWS:
            self._flush_table(table)
        return True

    def _flush_table(self, table: str) -> None:
        rows = self._rows.pop(table, None)
        if not rows:
            return
        schema = self._schemas[table]
        cols = list(zip(*rows, strict=True))
        arrays = []
        for f, col in zip(schema, cols, strict=True):
            if pa.types.is_timestamp(f.type):
                arrays.append(pa.array(col, type=pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(col, type=f.type))
        self._write(table, pa.Table.from_arrays(arrays, schema=schema))

    def flush(self) -> None:
        for table in list(self._rows):
            self._flush_table(table)
