"""The dataset's views take their columns from ``tables.declared`` (DuckDB types, cached
on disk) instead of the Arrow schemas: same columns, same types, and a cache that a
source change (a new fingerprint) never lets through."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from pcapflow.pipelines.tables import declared as dec
from pcapflow.pipelines.tables.schemas import TABLES

from pcapflow.dataset import INTERNAL, Dataset


def test_views_have_the_arrow_schemas_types(tmp_path):
    con = duckdb.connect()
    with Dataset(tmp_path / "empty") as ds:
        assert ds.tables == list(TABLES)
        for table, schema in TABLES.items():
            con.register("t", pa.Table.from_pylist([], schema=schema))
            want = [r[:2] for r in con.execute("DESCRIBE SELECT * FROM t").fetchall()]
            con.unregister("t")
            for name in (table, f"{INTERNAL}.empty_{table}"):
                got = [r[:2] for r in ds.con.execute(f"DESCRIBE {name}").fetchall()]
                assert got == want, name


def test_cache_file_is_read_and_keyed_by_fingerprint(tmp_path, monkeypatch):
    monkeypatch.setattr(dec, "HERE", tmp_path)
    monkeypatch.setattr(dec, "_memo", None)
    monkeypatch.setattr(dec, "fingerprint", lambda: "one")
    first = dec.declared()
    path = tmp_path / "__pycache__" / "declared-one.json"
    assert path.exists() and list(first) == list(TABLES)
    # a file under the same name is what the next process reads
    path.write_text('{"flows": [["x", "INTEGER"]]}')
    monkeypatch.setattr(dec, "_memo", None)
    assert dec.declared() == {"flows": [("x", "INTEGER")]}
    # another fingerprint (a source file or DuckDB changed): built again
    monkeypatch.setattr(dec, "_memo", None)
    monkeypatch.setattr(dec, "fingerprint", lambda: "two")
    assert dec.declared() == first


def test_fingerprint_follows_the_sources():
    a = dec.fingerprint()
    assert a == dec.fingerprint() and len(a) == 20
