"""Compare two datasets table by table (capture sets: a set ingested as one against
its files one by one; a live or clustered ingest against a plain one)."""

from __future__ import annotations

from pathlib import Path

import duckdb
from pcapflow.pipelines.tables.schemas import TABLES

BOOKKEEPING = {"packets": ["file", "file_packet"], "alerts": ["evidence_sql"]}
"""Columns that say where a row came from, not what it is."""


def parquet_files(root: Path, table: str) -> list[str]:
    """The Parquet files of one table of a dataset."""
    return sorted(str(p) for p in (root / table).glob("capture_id=*/*.parquet"))


CAPTURES_BOOKKEEPING = ["capture_id", "ingested_at"]
"""``captures`` columns that differ between two ingests of the same files: the id
(a resumed set keeps its first file's) and the time of the ingest."""


def assert_same_rows(a: Path, b: Path, skip: dict[str, list[str]] | None = None, *,
                     captures: bool = False, leave_out: tuple[str, ...] = ()
                     ) -> dict[str, int]:
    """Every table has the same rows in datasets ``a`` and ``b`` (``BOOKKEEPING``
    columns and ``skip``'s aside); ``captures`` only when asked, tables in
    ``leave_out`` not at all."""
    con = duckdb.connect()
    counts = {}
    for table in TABLES:
        if (table == "captures" and not captures) or table in leave_out:
            continue
        fa, fb = parquet_files(a, table), parquet_files(b, table)
        assert bool(fa) == bool(fb), table
        if not fa:
            continue
        cols = (CAPTURES_BOOKKEEPING if table == "captures" else
                ["capture_id", *BOOKKEEPING.get(table, []), *(skip or {}).get(table, [])])
        ex = ", ".join(cols)
        # an alert's evidence SQL names its capture by id: compare it without the id
        more = (", replace(evidence_sql, capture_id, '<capture>') AS evidence"
                if "evidence_sql" in TABLES[table].names else "")
        qa = f"SELECT * EXCLUDE ({ex}){more} FROM read_parquet({fa!r}, hive_partitioning = true)"
        qb = f"SELECT * EXCLUDE ({ex}){more} FROM read_parquet({fb!r}, hive_partitioning = true)"
        for x, y in ((qa, qb), (qb, qa)):
            diff = con.execute(f"SELECT * FROM ({x} EXCEPT ALL {y}) LIMIT 3").fetchall()
            assert not diff, (table, diff)
        counts[table] = con.execute(f"SELECT count(*) FROM ({qa})").fetchone()[0]
    return counts
