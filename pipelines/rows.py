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
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..parsers.fix import (
    RUN_BODY_LENGTH,
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
    FixMessage,
    FixMessageRun,
)
from ..parsers.http import HttpMessage
from ..parsers.redact import (
    REDACTED,
    SENSITIVE_FIX_TAGS,
    redact_fix_fields,
    redact_form,
    redact_headers,
    redact_json_text,
    redact_json_texts,
    redact_query,
)
from ..parsers.tls.events import TlsRecord, TlsRecordRun
from ..parsers.websocket import OPCODE_NAMES, WsMessage, WsMessageRun
from .match import stage_ws_candidates
from .schemas import FIX_MESSAGES, TABLES

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
        e.body_length, e.body_truncated, e.header_ts_last, e.stream_id,
    )


def _ws(e: WsMessage) -> tuple[str, tuple[Any, ...]]:
    payload = _text(e.payload)
    if e.opcode == "text":
        payload = redact_json_text(payload)
    return "ws_messages", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.opcode, e.fin,
        e.frames, e.compressed, e.masked, payload, e.payload_length, e.wire_length,
        e.payload_truncated, e.close_code, e.payload_unknown,
    )


def _fix(e: FixMessage) -> tuple[str, tuple[Any, ...]]:
    return "fix_messages", (
        e.ts_first, e.ts_last, e.flow_id, e.direction, e.stream_offset, e.begin_string,
        e.msg_type, e.msg_seq_num, e.sender_comp_id, e.target_comp_id, e.sending_time,
        e.cl_ord_id, e.orig_cl_ord_id, e.order_id, e.exec_type, e.ord_status, e.text,
        e.poss_dup, e.checksum_ok, e.body_length, e.raw_length,
        [{"tag": t, "value": v} for t, v in redact_fix_fields(e.fields)],
    )


_TS = pa.timestamp("ns", tz="UTC")
_OPCODES = np.array([OPCODE_NAMES.get(i) for i in range(16)], dtype=object)


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.int64()).cast(_TS)


def _repeat(value: object, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value] * n, type=type_) if value is None else pa.repeat(
        pa.scalar(value, type=type_), n)


def _cat(events: list[Any], name: str) -> np.ndarray:
    return np.concatenate([getattr(e, name) for e in events])


def _per_row(events: list[Any], name: str, type_: pa.DataType) -> pa.Array:
    """A per-event scalar field repeated for each of the event's rows."""
    values = [getattr(e, name) for e in events]
    counts = [e.ts_first.size for e in events]
    if all(v == values[0] for v in values):
        return _repeat(values[0], sum(counts), type_)
    # one Python object per event, not per row: Arrow repeats them by index
    index = np.repeat(np.arange(len(values)), counts)
    return pa.array(values, type=type_).take(pa.array(index))


def _tls_runs(events: list[TlsRecordRun]) -> list[pa.Array]:
    n = sum(e.ts_first.size for e in events)
    return [
        _ts(_cat(events, "ts_first")), _ts(_cat(events, "ts_last")),
        _per_row(events, "flow_id", pa.int64()), _per_row(events, "direction", pa.string()),
        pa.array(_cat(events, "stream_offset")), _repeat(23, n, pa.int16()),
        _per_row(events, "inner_content_type", pa.int16()),
        pa.array(_cat(events, "version"), pa.int32()), pa.array(_cat(events, "length")),
        _repeat(True, n, pa.bool_()), pa.array(_cat(events, "plaintext_length")),
    ]


def _ws_runs(events: list[WsMessageRun]) -> list[pa.Array | pa.ChunkedArray]:
    return _in_groups(events, lambda e: len(e.payload), _ws_group)


def _ws_group(events: list[WsMessageRun]) -> list[pa.Array]:
    """``_ws`` for batch events whose payloads together fit a ``pa.string()`` array."""
    datas = [np.frombuffer(e.payload, dtype=np.uint8) for e in events]
    sizes = np.array([x.size for x in datas], dtype=np.int64)
    bases = np.cumsum(sizes) - sizes
    n = sum(e.payload_ends.size for e in events)
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.concatenate([e.payload_ends + b for e, b in zip(events, bases, strict=True)])
    raw = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets),
                                                 pa.py_buffer(np.concatenate(datas))])
    try:
        text = raw.cast(pa.string())
    except pa.ArrowInvalid:  # not UTF-8: decoded with replacement, as _text does
        text = pa.array([_text(b) for b in raw.to_pylist()], type=pa.string())
    opcode = _cat(events, "opcode")
    is_text = opcode == 1
    if is_text.any():
        text = redact_json_texts(text, is_text)
    return [
        _ts(_cat(events, "ts_first")), _ts(_cat(events, "ts_last")),
        _per_row(events, "flow_id", pa.int64()), _per_row(events, "direction", pa.string()),
        pa.array(_cat(events, "stream_offset")), pa.array(_OPCODES[opcode], pa.string()),
        _repeat(True, n, pa.bool_()), _repeat(1, n, pa.int32()),
        pa.array(_cat(events, "compressed")), _per_row(events, "masked", pa.bool_()),
        text, pa.array(np.diff(offsets).astype(np.int64)), pa.array(_cat(events, "wire_length")),
        pa.array(_cat(events, "truncated")), _repeat(None, n, pa.int32()),
        _repeat(None, n, pa.int64()),  # a batch is never mid-stream inflate (see websocket)
    ]


_MAX_STRING_BYTES = (1 << 31) - 1  # pa.string() offsets are int32


def _in_groups(events: list[Any], size: Callable[[Any], int],
               convert: Callable[[list[Any]], list[pa.Array]]
               ) -> list[pa.Array] | list[pa.ChunkedArray]:
    """``convert`` over groups of events whose string bytes (``size``) stay under
    2 GiB each; one chunk per group when there is more than one."""
    groups: list[list[Any]] = [[]]
    total = 0
    for e in events:
        n = size(e)
        if groups[-1] and total + n > _MAX_STRING_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(e)
        total += n
    columns = [convert(g) for g in groups]
    if len(columns) == 1:
        return columns[0]
    return [pa.chunked_array(parts) for parts in zip(*columns, strict=True)]


_FIX_FIELDS_TYPE = FIX_MESSAGES.field("fields").type
_SECRET_FIX_TAGS = np.array(sorted(SENSITIVE_FIX_TAGS), dtype=np.int64)


def _fix_runs(events: list[FixMessageRun]) -> list[pa.Array | pa.ChunkedArray]:
    """``_fix`` for batch events: the same columns, built from the flat fields.

    ``fields`` values are redacted exactly as ``redact_fix_fields`` does (by tag,
    value -> ``REDACTED``); the named columns are never secret tags and are taken
    unredacted, as ``_fix`` takes them from the message."""
    return _in_groups(events, lambda e: e.values.size, _fix_group)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return out


def _fix_group(events: list[FixMessageRun]) -> list[pa.Array]:
    m = np.concatenate([e.messages for e in events])
    flat = np.concatenate([e.fields for e in events])
    tags = flat[:, 0]
    values = pa.StringArray.from_buffers(  # ASCII only (the batch path takes no other)
        tags.size, pa.py_buffer(_offsets(flat[:, 1])),
        pa.py_buffer(np.concatenate([e.values for e in events])))
    secret = np.isin(tags, _SECRET_FIX_TAGS)
    shown = pc.if_else(pa.array(secret), pa.scalar(REDACTED), values) if secret.any() else values
    field_offsets = _offsets(m[:, RUN_FIELD_COUNT])
    fields = pa.ListArray.from_arrays(
        pa.array(field_offsets),
        pa.StructArray.from_arrays([pa.array(tags, pa.int32()), shown],
                                   fields=list(_FIX_FIELDS_TYPE.value_type)),
        type=_FIX_FIELDS_TYPE)
    named = m[:, RUN_NAMED_FIRST:]
    missing = named < 0
    named = named + field_offsets[:-1, None]
    text = {name: pc.take(values, pa.array(named[:, c], mask=missing[:, c]))
            for c, (name, _) in enumerate(RUN_NAMED)}
    n = m.shape[0]
    return [
        _ts(m[:, RUN_TS_FIRST]), _ts(m[:, RUN_TS_LAST]),
        _per_row(events, "flow_id", pa.int64()), _per_row(events, "direction", pa.string()),
        pa.array(m[:, RUN_STREAM_OFFSET]), text["begin_string"], text["msg_type"],
        pa.array(m[:, RUN_SEQ_NUM], pa.int64(), mask=m[:, RUN_SEQ_OK] == 0),
        text["sender_comp_id"], text["target_comp_id"], text["sending_time"],
        text["cl_ord_id"], text["orig_cl_ord_id"], text["order_id"], text["exec_type"],
        text["ord_status"], text["text"], pa.array(m[:, RUN_POSS_DUP] != 0),
        _repeat(True, n, pa.bool_()), pa.array(m[:, RUN_BODY_LENGTH]),
        pa.array(m[:, RUN_RAW_LENGTH]), fields,
    ]


BATCH_TABLES: dict[type, str] = {TlsRecordRun: "tls_records", WsMessageRun: "ws_messages",
                                 FixMessageRun: "fix_messages"}
BATCH_CONVERTERS: dict[str, Callable[[list[Any]], list[pa.Array]]] = {
    "tls_records": _tls_runs,
    "ws_messages": _ws_runs,
    "fix_messages": _fix_runs,
}
"""Batch events (many rows as columns) -> column arrays, converted at flush time
so that Arrow's per-call costs (casts, the redaction pre-check) are paid once
per ``FLUSH_ROWS`` rows, not once per event."""


CONVERTERS: dict[type, Callable[[Any], tuple[str, tuple[Any, ...]]]] = {
    TlsRecord: _tls,
    HttpMessage: _http,
    WsMessage: _ws,
    FixMessage: _fix,
}


class RowBuffers:
    """Per-table row buffers that flush to a writer callable ``(table, pa.Table)``.

    ``stage_dir``: the staging directory ``write`` writes to, where the matcher's
    ingest-time scan leaves its side files (None: no scan, the matcher scans later).
    """

    def __init__(self, write: Callable[[str, pa.Table], None],
                 stage_dir: Path | None = None) -> None:
        self._write = write
        self._stage_dir = stage_dir
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._parts: dict[str, list[Any]] = {}  # batch events, converted at flush
        self._part_rows: dict[str, int] = {}
        self._schemas = {t: pa.schema([f for f in TABLES[t] if f.name != "capture_id"])
                         for t in ("tls_records", "http_messages", "ws_messages", "fix_messages")}

    def add(self, event: object) -> bool:
        """Buffer a row for ``event``; False when no table takes this event type."""
        conv = CONVERTERS.get(type(event))
        if conv is None:
            table = BATCH_TABLES.get(type(event))  # type: ignore[assignment]
            if table is None:
                return False
            self._parts.setdefault(table, []).append(event)
            self._part_rows[table] = self._part_rows.get(table, 0) + event.ts_first.size  # type: ignore[attr-defined]
            if self._part_rows[table] >= FLUSH_ROWS:
                self._flush_table(table)
            return True
        table, row = conv(event)
        rows = self._rows.setdefault(table, [])
        rows.append(row)
        if len(rows) >= FLUSH_ROWS:
            self._flush_table(table)
        return True

    def _flush_table(self, table: str) -> None:
        rows = self._rows.pop(table, None)
        batch = self._parts.pop(table, [])
        self._part_rows.pop(table, None)
        schema = self._schemas[table]
        parts = []
        if batch:
            arrays = BATCH_CONVERTERS[table](batch)
            parts.append(pa.Table.from_arrays(arrays, schema=schema))
        if rows:
            cols = list(zip(*rows, strict=True))
            arrays = []
            for f, col in zip(schema, cols, strict=True):
                if pa.types.is_timestamp(f.type):
                    arrays.append(pa.array(col, type=pa.int64()).cast(f.type))
                else:
                    arrays.append(pa.array(col, type=f.type))
            parts.append(pa.Table.from_arrays(arrays, schema=schema))
        if parts:
            out = pa.concat_tables(parts)
            self._write(table, out)
            if table == "ws_messages" and self._stage_dir is not None:
                stage_ws_candidates(self._stage_dir, out)  # while the payloads are here

    def flush(self) -> None:
        for table in {*self._rows, *self._parts}:
            self._flush_table(table)
