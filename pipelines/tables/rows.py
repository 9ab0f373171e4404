"""Parser events -> column buffers of the message tables, redacted on the way.

How this works: ``RowBuffers.add(event)`` looks the event's type up in the
protocol registry (``EventSpec``: its table, and a ``row`` converter returning
a tuple in the table's column order, or a ``batch`` converter for events that
are many rows each) and appends it; ``flush`` turns each table's rows into a
pyarrow Table and hands it to the staging writer. Converters live with their
protocol (``parsers/<protocol>/rows.py``) and redact there (``parsers.redact``),
before anything can reach a file: headers, query strings, JSON and form bodies,
WebSocket text, FIX fields. Batch events are converted at flush time so that
Arrow's per-call costs (casts, the redaction pre-check) are paid once per
``FLUSH_ROWS`` rows, not once per event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import pyarrow as pa

from ...parsers.events import Event
from ...parsers.protocols.base import BatchEvent
from ...parsers.protocols.registry import EVENTS
from .schemas import PROTOCOL_TABLES, without_capture_id

# Rows buffered per table before they are written as one row group slice.
FLUSH_ROWS = 65536

class TableSink(Protocol):
    """Where rows go: ``store.Staging`` (a batch is a ``pa.Table`` or a dict of
    column arrays in the table's order)."""

    def write(self, table: str, batch: pa.Table | dict[str, Any]) -> None: ...


FlushHook = Callable[[pa.Table], None]
"""Called with each batch of a table's rows as it is written (e.g. the matcher's
ingest-time scan of ``ws_messages``, ``pipelines.prefilter``)."""

_SCHEMAS = {name: without_capture_id(t.schema)
            for name, t in PROTOCOL_TABLES.items()}
_ROW = {t: (e.table, e.row) for t, e in EVENTS.items() if e.table and e.row}
_BATCH = {t: (e.table, e.batch) for t, e in EVENTS.items() if e.table and e.batch}


class RowBuffers:
    """Per-table row buffers that flush to a writer callable ``(table, pa.Table)``.

    ``after_flush``: per table, a hook called with each batch written.
    """

    def __init__(self, write: Callable[[str, pa.Table], None],
                 after_flush: Mapping[str, FlushHook] | None = None) -> None:
        self._write = write
        self._after = after_flush or {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {}
        self._parts: dict[str, list[Any]] = {}  # batch events, converted at flush
        self._part_rows: dict[str, int] = {}

    def add(self, event: Event) -> bool:
        """Buffer a row for ``event``; False when no table takes this event type."""
        conv = _ROW.get(type(event))
        if conv is None:
            batch = _BATCH.get(type(event))
            if batch is None:
                return False
            table = batch[0]
            self._parts.setdefault(table, []).append(event)
            n = cast(BatchEvent, event).ts_first.size
            self._part_rows[table] = self._part_rows.get(table, 0) + n
            if self._part_rows[table] >= FLUSH_ROWS:
                self._flush_table(table)
            return True
        table, row = conv
        rows = self._rows.setdefault(table, [])
        rows.append(row(event))
        if len(rows) >= FLUSH_ROWS:
            self._flush_table(table)
        return True

    def _flush_table(self, table: str) -> None:
        rows = self._rows.pop(table, None)
        batch = self._parts.pop(table, [])
        self._part_rows.pop(table, None)
        schema = _SCHEMAS[table]
        parts = []
        if batch:
            _, convert = _BATCH[type(batch[0])]
            parts.append(pa.Table.from_arrays(convert(batch), schema=schema))
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
            hook = self._after.get(table)
            if hook is not None:
                hook(out)  # while the rows are in memory

    def flush(self) -> None:
        for table in {*self._rows, *self._parts}:
            self._flush_table(table)


def with_venues(flows: pa.Table, venue: Mapping[int, str],
                source: Mapping[int, str]) -> pa.Table:
    """``flows`` rows with ``venue`` and ``venue_source`` set from the matcher's answer
    (``MatchOutput.flow_venue`` / ``flow_venue_source``)."""
    ids = flows.column("flow_id").to_pylist()
    for col, values in (("venue", venue), ("venue_source", source)):
        if col in flows.schema.names:
            flows = flows.set_column(flows.schema.get_field_index(col), col,
                                     pa.array([values.get(i) for i in ids], pa.string()))
    return flows
