"""Reading a dataset of many captures: a filter opens only the partitions it needs.

The dataset: one real ingest of a sample capture, its partitions written again as 200
captures, each shifted by k hours (its own capture_id; the files as pcapflow wrote
them, the times moved). Checked with DuckDB's EXPLAIN ANALYZE: a capture filter scans
one file of 200 (hive pruning); a time window, through ``Dataset.narrow`` (the
catalog, ``pcapflow.scale``), also reads one capture's files, and the report over the
narrowed dataset equals the report over all of it.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pcapflow.pipelines.tables.schemas import TABLES

import pcapflow
from pcapflow import report
from pcapflow.scale import CATALOG, captures_between

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
HOUR = 3600 * 10**9
N = 200


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    base = tmp_path_factory.mktemp("scale")
    cap = SAMPLES / "binance_rest_tls13.pcap"
    seed = base / "seed"
    pcapflow.ingest([cap], keylog=[cap.with_suffix(".keylog")], data=seed)
    root = base / "ds"
    for table in TABLES:
        parts = list((seed / table).glob("capture_id=*/*.parquet"))
        if not parts:
            continue
        t = pq.read_table(parts[0])
        for k in range(N):
            cols = [pc.add(t.column(f.name).cast(pa.int64()), k * HOUR).cast(f.type)
                    if pa.types.is_timestamp(f.type) else t.column(f.name) for f in t.schema]
            out = root / table / f"capture_id={k:016x}"
            out.mkdir(parents=True)
            pq.write_table(pa.table(cols, schema=t.schema), out / "part-0.parquet")
    with pcapflow.open(seed) as ds:
        first = ds.scalar("SELECT epoch_ns(min(first_ts)) FROM captures")
    return root, int(first)  # type: ignore[arg-type]


def _files_read(ds: pcapflow.Dataset, sql: str) -> list[int]:
    plan = ds.fetchall("EXPLAIN ANALYZE " + sql)[0][1]
    return [int(m) for m in re.findall(r"Total Files Read:\s*(\d+)", plan)]


def test_capture_filter_reads_one_partition(many) -> None:
    root, _ = many
    with pcapflow.open(root) as ds:
        cid = f"{7:016x}"
        q = f"SELECT count(*), sum(latency_ns) FROM latency WHERE capture_id = '{cid}'"
        assert _files_read(ds, q) == [1]
        assert _files_read(ds, "SELECT count(*) FROM latency") == [N]
        whole = ds.fetchall("SELECT count(*) FROM latency")[0][0]
        assert ds.fetchall(q)[0][0] * N == whole


def test_time_window_reads_only_its_captures(many) -> None:
    root, first = many
    k = 123
    since = pd.Timestamp(first + k * HOUR, unit="ns", tz="UTC")
    until = since + pd.Timedelta(minutes=30)
    (root / CATALOG).unlink(missing_ok=True)
    assert captures_between(root, since.value, until.value) == [f"{k:016x}"]
    assert (root / CATALOG).exists()
    q = ("SELECT count(*) FROM latency WHERE order_ts >= $1 AND order_ts < $2")
    with pcapflow.open(root) as full:
        t0 = time.perf_counter()
        narrow = full.narrow(since, until)
        with narrow:
            sql = q.replace("$1", f"TIMESTAMPTZ '{since.isoformat()}'").replace(
                "$2", f"TIMESTAMPTZ '{until.isoformat()}'")
            assert _files_read(narrow, sql) == [1]
            assert _files_read(full, sql) == [N]  # without the catalog: every footer
            got = narrow.fetchall(sql)[0][0]
            assert got == full.fetchall(sql)[0][0] > 0
            a = report.build(full, by="endpoint", since=since, until=until)
            b = report.build(narrow, by="endpoint", since=since, until=until)
            seconds = time.perf_counter() - t0
            pd.testing.assert_frame_equal(a.table.reset_index(drop=True),
                                          b.table.reset_index(drop=True))
            assert a.table["count"].sum() > 0
    assert seconds < 30  # interactive, on a loaded 2-core machine


def test_catalog_follows_the_dataset(many, tmp_path: Path) -> None:
    root, _ = many
    copy = tmp_path / "ds"
    shutil.copytree(root, copy)
    assert len(captures_between(copy, None, None)) == N
    for table in TABLES:  # a capture removed (as a re-ingest of another set would)
        shutil.rmtree(copy / table / f"capture_id={5:016x}", ignore_errors=True)
    ids = captures_between(copy, None, None)
    assert len(ids) == N - 1 and f"{5:016x}" not in ids
