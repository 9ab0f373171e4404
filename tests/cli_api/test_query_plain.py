"""``pcapflow query``'s table without pandas (``cli._plain_result``) prints exactly what
the DataFrame path (``Dataset.df`` + ``_print_frame``) prints, on real tables and on
the corner cases of the conversion (nulls, NaN, integers with nulls, ``*_ns``)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from pcapflow import cli, render
from pcapflow.dataset import Dataset

QUERIES = [
    "SELECT count(*) AS n FROM flows",
    "SELECT flow_id, client_ip, client_port, server_port, app_protocol, sni, packets_out, "
    "handshake_rtt_ns, retransmissions, syn_seen, end_reason FROM flows ORDER BY flow_id",
    "SELECT direction, opcode, count(*) AS n, avg(length(payload)) AS mean_len "
    "FROM ws_messages GROUP BY ALL ORDER BY ALL",
    "SELECT * FROM (VALUES (1, NULL::BIGINT, NULL::BIGINT, 1.5::DOUBLE, 'x', true), "
    "(2, 1234567890123, 7, 'NaN'::DOUBLE, NULL, NULL), (3, 5, NULL, 1e20, '1,234', false)) "
    "t(a, b, c_ns, d, e, f)",
    "SELECT * FROM (VALUES (NULL::VARCHAR, NULL::BOOLEAN, 0.1::FLOAT, 'inf'::DOUBLE)) "
    "t(a, b, c, d)",
    "SELECT 1 AS one WHERE false",
    "SHOW TABLES",
    "SELECT endpoint, latency_ns FROM latency ORDER BY 2 LIMIT 5",
    "SELECT * FROM latency ORDER BY ALL LIMIT 20",
    "SELECT ts_first, ts_last, direction FROM ws_messages ORDER BY ALL LIMIT 30",
    "SELECT * FROM (VALUES (TIMESTAMPTZ_NS '2026-11-23 10:00:00.123456789+00', 1), "
    "(TIMESTAMPTZ_NS '2026-11-23 10:00:00.123456+00', 2), (TIMESTAMPTZ_NS '1969-12-31 "
    "23:59:59.5+00', 3), (TIMESTAMPTZ_NS '2026-11-23 10:00:00+00', 4), (NULL, 5)) t(ts, n)",
    "SELECT NULL::TIMESTAMPTZ_NS AS ts",
]


SHOW = render.show


def _render(header, rows, right) -> str:
    out = Console(file=io.StringIO(), force_terminal=False, width=200)
    err = Console(file=io.StringIO(), force_terminal=False)
    SHOW(header, rows, right, out=out, err=err)
    return out.file.getvalue()


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    import pcapflow
    from pcapflow.samples import sample_dir

    d = tmp_path_factory.mktemp("ds")
    s = sample_dir()
    pcapflow.ingest([str(s / "binance_wsapi_tls13.pcap")],
                    keylog=[str(s / "binance_wsapi_tls13.keylog")], data=d)
    with Dataset(d) as ds:
        yield ds


@pytest.mark.parametrize("sql", QUERIES)
def test_plain_cells_equal_dataframe_cells(ds, sql, monkeypatch):
    plain = cli._plain_result(ds.sql(sql))
    if "latency" in sql or "ws_messages" in sql or "TIMESTAMPTZ_NS" in sql:
        assert plain is not None  # the plain path, times included
    # the CLI's way, through the engine's execute alone: the same cells (a query whose
    # column types it does not render gives None, as _plain_result does)
    assert cli._plain_query(ds._con, sql) == plain
    got = {}

    def show(header, rows, right, **kw):
        got["v"] = _render(header, rows, right)

    monkeypatch.setattr(render, "show", show)
    cli._print_frame(ds.df(sql), "table")
    if plain is None:
        return
    assert _render(*plain) == got["v"]


def test_query_views_only_what_it_names() -> None:
    """``pcapflow query`` makes the views its SQL names, every view when it reads the
    catalog (SHOW TABLES, ``duckdb_views()``, ``information_schema``...)."""
    assert cli._views_for("SELECT count(*) FROM latency JOIN \"Orders\" USING (venue)") == [
        "orders", "latency"]
    assert cli._views_for("select 1") == []
    for sql in ("SHOW TABLES", "describe flows", "SELECT * FROM duckdb_views()",
                "SELECT table_name FROM information_schema.tables", "SUMMARIZE flows",
                "PRAGMA table_info('flows')"):
        assert cli._views_for(sql) is None, sql


def test_lean_dataset_gains_the_relation_api(tmp_path) -> None:
    """A ``Dataset`` made through the engine alone still offers DuckDB's whole Python
    API on ``con`` (relations come with the first use of ``con``)."""
    code = ("import sys; from pcapflow.dataset import Dataset; ds = Dataset(sys.argv[1]); "
            "assert 'duckdb' not in sys.modules; print(ds.con.sql('SELECT 42').fetchall(), "
            "ds.sql('SELECT count(*) FROM flows').fetchall())")
    (tmp_path / "flows").mkdir()
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(42,)] [(0,)]"


def test_a_capture_view_over_arrow_tables_in_a_fresh_process() -> None:
    """``Dataset.of_capture`` registers Arrow tables: the engine scans them only once the
    ``duckdb`` package is loaded (``duckdb._sources``), which ``connect`` skips; the
    ingest's derive hit it whenever nothing had imported ``duckdb`` before."""
    code = ("import sys, pyarrow as pa; from pcapflow.dataset import Dataset; "
            "assert 'duckdb' not in sys.modules; "
            "t = pa.table({'flow_id': pa.array([1, 2], pa.int64())}); "
            "ds = Dataset.of_capture({}, 'c0ffee', {'flows': t}); "
            "print(ds.fetchall('SELECT count(*), min(capture_id) FROM flows'))")
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(2, 'c0ffee')]"
