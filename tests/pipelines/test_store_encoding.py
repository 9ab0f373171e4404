"""Parquet encodings of the staged tables: a dictionary only for repeating strings.

``store.dictionary_columns`` decides from each table's schema; the written files
must follow it, and DuckDB must read them back the same as pyarrow does.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from helpers.paths import SAMPLES
from pcapflow.pipelines import store
from pcapflow.pipelines.tables.schemas import TABLES

import pcapflow

_DICTIONARY = {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}


def test_high_cardinality_names_are_string_columns_of_some_table() -> None:
    strings = {f.name for schema in TABLES.values() for f in schema if pa.types.is_string(f.type)}
    assert store.HIGH_CARDINALITY.issubset(strings)  # no stale or misspelt name


def test_dictionary_columns_are_the_repeating_strings() -> None:
    ws = store.dictionary_columns(TABLES["ws_messages"])
    assert ws == ["capture_id", "direction", "opcode"]  # not payload; no number or time
    assert store.dictionary_columns(TABLES["tcp_rtt"]) == ["capture_id", "direction", "method"]
    for name, schema in TABLES.items():
        chosen = store.dictionary_columns(schema)
        for f in schema:
            repeats = pa.types.is_string(f.type) and f.name not in store.HIGH_CARDINALITY
            assert (f.name in chosen) == repeats, (name, f.name)


def test_written_files_follow_the_rule_and_read_back_in_duckdb(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pcapflow.ingest([SAMPLES / "binance_wsapi_tls13.pcap"],
                    keylog=[SAMPLES / "binance_wsapi_tls13.keylog"], data=data)
    seen = set()
    for f in sorted(data.glob("*/capture_id=*/*.parquet")):
        table = f.parent.parent.name
        meta = pq.ParquetFile(f).metadata
        want = set(store.dictionary_columns(TABLES[table]))
        for rg in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(rg).column(c)
                top = col.path_in_schema.split(".")[0]
                assert bool(_DICTIONARY & set(col.encodings)) == (top in want), (table, top)
        seen.add(table)
    assert {"ws_messages", "tls_records", "tcp_rtt"} <= seen

    ds = pcapflow.open(data)
    for table in ("ws_messages", "tls_records", "tcp_rtt"):
        got = ds.sql(f"SELECT * EXCLUDE (capture_id) FROM {table}").to_arrow_table()
        files = sorted(data.glob(f"{table}/capture_id=*/*.parquet"))
        want = pa.concat_tables(pq.read_table(f) for f in files)
        order = [(name, "ascending") for name in got.schema.names]
        assert got.sort_by(order).to_pylist() == \
            want.select(got.schema.names).sort_by(order).to_pylist()
    counts = ds.df("SELECT direction, opcode, count(*) AS n FROM ws_messages GROUP BY ALL")
    assert counts["n"].sum() == ds.df("SELECT count(*) AS n FROM ws_messages")["n"][0] > 0
