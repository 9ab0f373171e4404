"""Nanoseconds survive ingest, matching, DuckDB and every output format.

Issue 13: with DuckDB 1.x (what pip resolves on Python 3.10) every time read through
SQL was rounded to the microsecond, the matcher's included, and nothing failed. These
tests ingest a real sample and check the sub-microsecond digits end to end: in the
Parquet files, through DuckDB, in ``latency_ns`` against the two messages' own times,
and in ``pcapflow query`` as table, CSV and JSON.
"""

from __future__ import annotations

import json
import re

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from helpers.paths import SAMPLES
from typer.testing import CliRunner

import pcapflow
from pcapflow.cli import app

CAPTURE = SAMPLES / "binance_rest_tls13.pcap"
KEYLOG = SAMPLES / "binance_rest_tls13.keylog"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ns") / "data"
    pcapflow.ingest([str(CAPTURE)], keylog=[str(KEYLOG)], data=str(out))
    return out


def _parquet(data, table: str):
    return pads.dataset(data / table, format="parquet", partitioning="hive").to_table()


def test_duckdb_reads_timestamps_with_nanoseconds() -> None:
    """The DuckDB this environment resolved keeps Arrow's nanoseconds (2.x does)."""
    got = duckdb.sql("SELECT epoch_ns(TIMESTAMPTZ_NS '2026-01-02 03:04:05.123456789+00')")
    assert got.fetchall()[0][0] % 1000 == 789


def test_parquet_and_sql_keep_sub_microsecond_digits(data) -> None:
    raw = _parquet(data, "http_messages")
    ns = raw.column("ts_last").cast("int64").to_pylist()
    assert sum(1 for v in ns if v % 1000) > len(ns) // 2, "the capture is nanosecond-stamped"
    ds = pcapflow.open(str(data))
    via_sql = sorted(r[0] for r in ds.sql("SELECT epoch_ns(ts_last) FROM http_messages")
                     .fetchall())
    assert via_sql == sorted(ns)


def test_latency_keeps_nanoseconds_and_equals_the_message_times(data) -> None:
    lat = _parquet(data, "latency")
    assert lat.num_rows > 50
    values = lat.column("latency_ns").to_pylist()
    assert sum(1 for v in values if v is not None and v % 1000) > len(values) // 2
    ds = pcapflow.open(str(data))
    mismatched = ds.sql("""
        SELECT count(*) FROM latency
        WHERE latency_ns IS NOT NULL
          AND latency_ns <> epoch_ns(ack_ts) - epoch_ns(order_ts)""").fetchall()[0][0]
    assert mismatched == 0


def _cli(data, fmt: str) -> str:
    res = CliRunner().invoke(app, ["query", "--data", str(data), "--format", fmt,
                                   "SELECT ts_last FROM http_messages ORDER BY ts_last"])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("fmt", ["csv", "json", "table"])
def test_query_output_keeps_nanoseconds(data, fmt: str) -> None:
    raw = _parquet(data, "http_messages")
    ns = sorted(raw.column("ts_last").cast("int64").to_pylist())
    text = _cli(data, fmt)
    if fmt == "json":
        stamps = [row["ts_last"] for row in json.loads(text)]
    else:
        stamps = re.findall(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\.\d+", text)
    assert len(stamps) == len(ns)
    fractions = [int(re.search(r"\.(\d+)", s).group(1).ljust(9, "0")[:9]) for s in stamps]
    assert fractions == [v % 1_000_000_000 for v in ns]


def test_timestamps_through_pandas_keep_nanoseconds(data) -> None:
    ds = pcapflow.open(str(data))
    df = ds.df("SELECT ts_last FROM http_messages ORDER BY ts_last")
    raw = _parquet(data, "http_messages")
    ns = sorted(pc.cast(raw.column("ts_last"), "int64").to_pylist())
    assert [t.value for t in df["ts_last"]] == ns
