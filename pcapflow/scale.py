"""Reading a dataset of thousands of captures: open only the partitions a question needs.

How this works. Every table is hive-partitioned by ``capture_id``
(``DATA/<table>/capture_id=<id>/part-*.parquet``), so DuckDB prunes by capture on its
own: ``WHERE capture_id = '…'`` or ``IN (…)`` opens those partitions' files only (EXPLAIN
ANALYZE: ``Scanning Files: 1/200``). A time filter cannot prune files that way: DuckDB
skips row groups by their min/max statistics, but opens every file's footer first.
So a time window is turned into captures here: the *catalog* lists each capture's
first and last packet time (from the ``captures`` table), and ``narrow`` gives a
``Dataset`` whose views read only the captures that overlap the window
(``Dataset(captures=...)``). Every row of a capture lies within its packets' times,
so the answer is the same; the work is the catalog plus the captures that matter.

The catalog is kept in ``DATA/.catalog.parquet`` (one small file) and rebuilt when the
``captures`` partitions change (their names and modification times are its key), so
a report over a dataset of thousands of captures reads one file to find its few.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CATALOG = ".catalog.parquet"
"""The catalog's file in the dataset directory (derived data: safe to delete)."""


def _key(root: Path) -> str:
    """Identifies the set of captures partitions as they are now."""
    part = root / "captures"
    h = hashlib.sha256()
    if part.is_dir():
        for e in sorted(os.scandir(part), key=lambda e: e.name):
            if e.name.startswith("capture_id="):
                with contextlib.suppress(OSError):
                    st = e.stat()
                    h.update(f"{e.name}:{st.st_mtime_ns}:{st.st_ino};".encode())
    return h.hexdigest()


def catalog(root: Path) -> pa.Table:
    """capture_id, first_ts, last_ts (ns) of every capture in the dataset at ``root``."""
    key = _key(root)
    path = root / CATALOG
    with contextlib.suppress(Exception):
        t = pq.read_table(path)
        if (t.schema.metadata or {}).get(b"key", b"").decode() == key:
            return t
    t = _build(root).replace_schema_metadata({"key": key})
    tmp = root / f"{CATALOG}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):
        pq.write_table(t, tmp)
        os.replace(tmp, path)  # readers see the old file or the new one, never half
    return t


def _build(root: Path) -> pa.Table:
    import pyarrow.dataset as pads

    empty = pa.table({"capture_id": pa.array([], pa.string()),
                      "first_ts": pa.array([], pa.int64()),
                      "last_ts": pa.array([], pa.int64())})
    part = root / "captures"
    if not part.is_dir() or not any(part.glob("capture_id=*/*.parquet")):
        return empty
    hive = pads.HivePartitioning(pa.schema([("capture_id", pa.string())]))
    t = pads.dataset(part, format="parquet", partitioning=hive).to_table(
        columns=["capture_id", "first_ts", "last_ts"])
    t = t.group_by("capture_id").aggregate([("first_ts", "min"), ("last_ts", "max")])
    return pa.table({
        "capture_id": t.column("capture_id").cast(pa.string()),
        "first_ts": t.column("first_ts_min").cast(pa.int64()),
        "last_ts": t.column("last_ts_max").cast(pa.int64()),
    })


def captures_between(root: Path, since_ns: int | None, until_ns: int | None) -> list[str]:
    """The captures with a packet in ``[since_ns, until_ns)`` (None: unbounded)."""
    t = catalog(root)
    ids = t.column("capture_id").to_pylist()
    lo = t.column("first_ts").to_pylist()
    hi = t.column("last_ts").to_pylist()
    return sorted(c for c, a, b in zip(ids, lo, hi, strict=True)
                  if (since_ns is None or b is None or b >= since_ns)
                  and (until_ns is None or a is None or a < until_ns))
