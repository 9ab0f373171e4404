"""The staging writer thread: one at a time, gone after each close, errors surface."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest
from helpers.paths import SAMPLES
from pcapflow.pipelines import store

import pcapflow


def _writers() -> int:
    return sum(t.name == "pcapflow-writer" for t in threading.enumerate())


def test_no_writer_thread_outlives_an_ingest(tmp_path: Path) -> None:
    for i in range(5):
        pcapflow.ingest([SAMPLES / "fix44_plain.pcap"], data=tmp_path / str(i))
    assert _writers() == 0


def test_rows_written_after_close_go_to_a_new_part(tmp_path: Path) -> None:
    st = store.Staging(tmp_path)
    schema = pa.schema([f for f in store.TABLES["tcp_rtt"] if f.name != "capture_id"])
    rows = pa.Table.from_pylist([{"flow_id": 1, "direction": "out"},
                                 {"flow_id": 2, "direction": "in"}], schema=schema)
    st.write("tcp_rtt", rows)
    st.close_writers()
    assert _writers() == 0
    st.write("tcp_rtt", rows)
    st.close_writers()
    parts = sorted(p.name for p in (st.dir / "tcp_rtt").iterdir())
    assert parts == ["part-0.parquet", "part-1.parquet"]
    assert st.rows["tcp_rtt"] == 4
    st.abort()
    assert not st.dir.exists()


def test_a_failed_write_is_raised_in_the_caller(tmp_path: Path) -> None:
    st = store.Staging(tmp_path)
    bad = pa.table({"flow_id": pa.array(["not an int"])})  # schema mismatch in the thread
    st.write("tcp_rtt", bad)
    with pytest.raises(Exception):  # noqa: B017 - whatever Arrow raises, it reaches us
        st.close_writers()
    st.abort()
    assert _writers() == 0
