"""The ``tls_records`` table: its schema and the row converters of TLS events."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..protocols.columns import (
    MESSAGE_KEY,
    concat,
    field,
    per_row,
    repeat,
    schema,
    ts_array,
)
from .events import TlsRecord, TlsRecordRun
from .record import APPLICATION_DATA

TLS_RECORDS = schema(
    *MESSAGE_KEY,
    field("content_type", pa.int16(), "Outer record type: 20 ccs, 21 alert, 22 handshake, 23 data"),
    field("inner_content_type", pa.int16(), "TLS 1.3 inner type after decryption, else null"),
    field("version", pa.int32(), "Record-layer version (0x0303 ...)"),
    field("length", pa.int64(), "Bytes on the wire, 5-byte header included"),
    field(
        "decrypted",
        pa.bool_(),
        "Protection removed with key-log secrets (false for records "
        "sent in the clear, and for protected records without keys)",
    ),
    field(
        "plaintext_length",
        pa.int64(),
        "Bytes the application sees (no MAC, padding, "
        "nonce or inner type); null when encrypted and not decrypted",
    ),
)


def record_row(e: TlsRecord) -> tuple[Any, ...]:
    return (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.content_type,
        e.inner_content_type, e.version, e.length, e.decrypted, e.plaintext_length,
    )


def record_batch(events: list[TlsRecordRun]) -> list[pa.Array]:
    n = sum(e.ts_first.size for e in events)
    return [
        ts_array(concat(events, "ts_first")), ts_array(concat(events, "ts_last")),
        per_row(events, "flow_id", pa.int64()), per_row(events, "direction", pa.string()),
        pa.array(concat(events, "stream_offset")), repeat(APPLICATION_DATA, n, pa.int16()),
        per_row(events, "inner_content_type", pa.int16()),
        pa.array(concat(events, "version"), pa.int32()), pa.array(concat(events, "length")),
        repeat(True, n, pa.bool_()), pa.array(concat(events, "plaintext_length")),
    ]
