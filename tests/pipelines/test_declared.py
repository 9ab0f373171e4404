"""The dataset's views take their columns from ``tables.declared`` (DuckDB types, cached
on disk) instead of the Arrow schemas: same columns, same types, and a cache that a
source change (a new fingerprint) never lets through."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
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


def test_internal_datasets_share_a_database_not_their_views(tmp_path, monkeypatch):
    """``Dataset.of_capture`` and ``Dataset(..., internal=True)`` are connections to one
    database of the process: each sees its own views (same columns as a dataset's own),
    its Arrow tables, the FIX endpoint macro; closing one drops its views only."""
    from pcapflow import dataset

    # (a ``Watcher`` made earlier in this process turned sharing off: a long-lived process)
    monkeypatch.setattr(dataset, "SHARED_DATABASE", True)
    flows = pa.Table.from_pylist([], schema=TABLES["flows"]).drop_columns(["capture_id"])
    one = Dataset.of_capture({}, "a" * 16, {"flows": pa.concat_tables([flows, flows])},
                             views=("flows",))
    two = Dataset.of_capture({}, "b" * 16, {"flows": flows.cast(flows.schema)})
    with Dataset(tmp_path / "empty") as own:
        want = [r[:2] for r in own.con.execute("DESCRIBE flows").fetchall()]
    assert [r[:2] for r in one.con.execute("DESCRIBE flows").fetchall()] == want
    with Dataset.of_capture({}, "c" * 16, {"flows": flows}, internal=False) as own_db:
        assert own_db._schema is None  # (a database of its own: the watch's metrics)
        assert [r[:2] for r in own_db.con.execute("DESCRIBE flows").fetchall()] == want
    assert one.fetchall("SELECT count(*) FROM flows") == [(0,)]
    assert two.fetchall("SELECT endpoint_name('fix', 'D')") == [("NewOrderSingle",)]
    assert [r[0] for r in one.fetchall("SHOW TABLES") if not r[0].startswith(INTERNAL)] == [
        "flows"]
    assert "tcp_rtt" in [r[0] for r in two.fetchall("SHOW TABLES")]
    schema = one._schema
    one.close()
    assert two.fetchall("SELECT count(*) FROM flows") == [(0,)]
    left = [r[0] for r in two.fetchall("SELECT schema_name FROM information_schema.schemata")]
    assert schema not in left and two._schema in left
    two.close()


def test_a_forked_child_makes_its_own_database_even_if_the_lock_was_held(monkeypatch):
    """``--jobs`` and ``--workers`` fork: a child must not wait on the process database's
    lock that a thread of the parent held at the fork, nor use the parent's database."""
    import os
    import time

    from pcapflow import dataset

    monkeypatch.setattr(dataset, "SHARED_DATABASE", True)  # (as above)
    with Dataset.of_capture({}, "a" * 16, views=("flows",)):
        pass
    with dataset._shared_lock:  # (held by this thread while it forks)
        pid = os.fork()
        if pid == 0:  # pragma: no cover  (the child)
            code = 1
            try:
                with Dataset.of_capture({}, "b" * 16, views=("flows",)) as ds:
                    shared = dataset._shared
                    if ds.fetchall("SELECT count(*) FROM flows") == [(0,)] and \
                            shared is not None and shared[0] == os.getpid():
                        code = 0
            finally:
                os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the forked child waited on the lock")


def test_a_long_lived_process_gives_each_internal_dataset_a_database(tmp_path, monkeypatch):
    """``pcapflow watch`` (``watch.watch_ingest``, in its worker too) turns the shared
    database off: DuckDB keeps what its queries allocated until the database closes, so
    a process that ingests for days makes a database per internal dataset, with the same
    views, tables and macro, closed with it."""
    import duckdb

    from pcapflow import dataset, watch

    monkeypatch.setattr(dataset, "SHARED_DATABASE", True)
    watch.watch_ingest(tmp_path / "data", None, None)
    assert dataset.SHARED_DATABASE is False
    monkeypatch.setattr(dataset, "_shared", None)
    flows = pa.Table.from_pylist([], schema=TABLES["flows"]).drop_columns(["capture_id"])
    one = Dataset.of_capture({}, "a" * 16, {"flows": flows}, views=("flows",))
    two = Dataset.of_capture({}, "b" * 16, {"flows": flows})
    assert dataset._shared is None and one.con is not two.con
    one.fetchall("CREATE TABLE only_in_one AS SELECT 1 AS x")
    assert "only_in_one" not in [r[0] for r in two.fetchall("SHOW TABLES")]
    assert two.fetchall("SELECT endpoint_name('fix', 'D')") == [("NewOrderSingle",)]
    assert one.fetchall("SELECT count(*) FROM flows") == [(0,)]
    one.close()
    with pytest.raises(duckdb.ConnectionException):  # (its database is closed with it)
        one.con.execute("SELECT 1")
    assert two.fetchall("SELECT count(*) FROM flows") == [(0,)]
    two.close()
