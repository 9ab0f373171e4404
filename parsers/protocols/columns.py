"""Column declarations shared by every table, and Arrow helpers for row converters.

Each table's schema is declared once (STYLE.md rule 12): the core tables in
``pipelines.tables.schemas``, each protocol's message tables in its package
(``parsers/<protocol>/rows.py``), all from the fields here. Times are
``timestamp[ns, tz=UTC]``; durations int64 nanoseconds in ``*_ns`` columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

TS = pa.timestamp("ns", tz="UTC")


def field(name: str, typ: pa.DataType, doc: str) -> pa.Field:
    return pa.field(name, typ, metadata={"doc": doc})


def schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(fields)


CAPTURE_ID = field("capture_id", pa.string(), "First 16 hex digits of the capture's sha256 "
                   "(a capture set: of the sha256 of its files' sha256s, sorted)")
FLOW_ID = field(
    "flow_id", pa.int64(), "Connection number within the capture, in order of first packet"
)
DIRECTION = field("direction", pa.string(), "`out` = client (us) to server (exchange), `in` = back")

TS_FIRST = field("ts_first", TS, "Capture time of the packet that carried the first byte")
TS_LAST = field(
    "ts_last",
    TS,
    "When the last byte became available in order (DESIGN.md, Time): "
    "`out` its first transmission, `in` when all bytes up to it had arrived; inside "
    "TLS, the ts_last of the record holding it",
)
STREAM_OFFSET = field(
    "stream_offset",
    pa.int64(),
    "Offset of the first byte in this direction's "
    "stream (TCP stream for TLS records and plain protocols, decrypted stream "
    "inside TLS)",
)
MESSAGE_KEY = (CAPTURE_ID, TS_FIRST, TS_LAST, FLOW_ID, DIRECTION, STREAM_OFFSET)


def ts_array(values: Any) -> pa.Array:
    """int64 nanoseconds (any sequence or array) as a ``timestamp[ns, tz=UTC]`` array."""
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(TS)


def to_text(data: bytes) -> str:
    """Bytes as text, invalid UTF-8 replaced (what a string column holds)."""
    return data.decode("utf-8", errors="replace")


def repeat(value: object, n: int, type_: pa.DataType) -> pa.Array:
    """``value`` ``n`` times (a null column when ``value`` is None)."""
    return pa.array([value] * n, type=type_) if value is None else pa.repeat(
        pa.scalar(value, type=type_), n)


def concat(events: list[Any], name: str) -> np.ndarray:
    """The array attribute ``name`` of batch events, joined."""
    return np.concatenate([getattr(e, name) for e in events])


def per_row(events: list[Any], name: str, type_: pa.DataType) -> pa.Array:
    """A per-event scalar field repeated for each of the event's rows."""
    values = [getattr(e, name) for e in events]
    counts = [e.ts_first.size for e in events]
    if all(v == values[0] for v in values):
        return repeat(values[0], sum(counts), type_)
    # one Python object per event, not per row: Arrow repeats them by index
    index = np.repeat(np.arange(len(values)), counts)
    return pa.array(values, type=type_).take(pa.array(index))


MAX_STRING_BYTES = (1 << 31) - 1  # pa.string() offsets are int32


def in_groups(events: list[Any], size: Callable[[Any], int],
              convert: Callable[[list[Any]], list[pa.Array]]
              ) -> list[pa.Array] | list[pa.ChunkedArray]:
    """``convert`` over groups of events whose string bytes (``size``) stay under
    2 GiB each; one chunk per group when there is more than one."""
    groups: list[list[Any]] = [[]]
    total = 0
    for e in events:
        n = size(e)
        if groups[-1] and total + n > MAX_STRING_BYTES:
            groups.append([])
            total = 0
        groups[-1].append(e)
        total += n
    columns = [convert(g) for g in groups]
    if len(columns) == 1:
        return columns[0]
    return [pa.chunked_array(parts) for parts in zip(*columns, strict=True)]


def offsets(lengths: np.ndarray) -> np.ndarray:
    """int32 Arrow offsets of values of these lengths."""
    out = np.zeros(lengths.size + 1, dtype=np.int32)
    np.cumsum(lengths, out=out[1:])
    return out
