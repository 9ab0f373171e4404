"""The report printed without pandas (``report.build(frame=False)``: DuckDB's rows as
Python values, what ``pcapflow report`` prints from) is the report printed from the
DataFrame (``build``'s default, what notebooks and the HTML report read): the same
cells, notes, titles, terminal tables, JSON and CSV, for every grouping, metric, leg
and filter, on a synthetic dataset (two captures, unanswered orders, an engine leg,
orders paired from TLS timing only) and on real samples (FIX without a venue: the
``(unknown)`` group; TLS without its key log: the ``enc`` column)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from test_report import write_synthetic

from pcapflow import analysis, report
from pcapflow.dataset import Dataset

CASES: list[dict[str, object]] = [
    *({"by": g} for g in analysis.GROUPS),
    {"by": "endpoint,kind"},
    {"by": "minute,endpoint"},
    {"by": "kind,status,leg", "leg": None},
    *({"by": "endpoint", "metric": m} for m in ("network_rtt", "network", "exchange")),
    {"by": "endpoint", "leg": "engine"},
    {"exchange": "OKX,binance", "by": "endpoint"},
    {"exchange": "unknown"},
    {"since": "2026-11-23T20:01:00", "until": "2026-11-23T20:02:00Z", "by": "minute"},
    {"since": "2020-01-01", "until": "2020-01-02"},
    {"capture": "before.pcap", "by": "capture"},
    {"capture": "bbbb", "by": "venue,status"},
]


def _terminal(table: object, width: int) -> str:
    con = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    con.print(table)
    return con.file.getvalue()  # type: ignore[attr-defined]


def _printed(rep: report.Report) -> tuple[object, ...]:
    return (rep.keys, rep.notes, rep.title(), report.cells(rep), report.to_json(rep),
            report.to_csv(rep), _terminal(report.render_table(rep, width=80), 80),
            _terminal(report.render_table(rep, width=200), 200),
            _terminal(report.render_table(rep), 200))


def _same(ds: Dataset, case: dict[str, object]) -> report.Report:
    framed = report.build(ds, **case)  # type: ignore[arg-type]
    rows = report.build(ds, frame=False, **case)  # type: ignore[arg-type]
    assert not isinstance(framed.table, report.Rows)
    assert isinstance(rows.table, report.Rows)
    assert list(rows.table.columns) == list(framed.table.columns)
    assert len(rows.table) == len(framed.table)
    assert _printed(rows) == _printed(framed), case
    return rows


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth-rows")
    write_synthetic(root)
    return root


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_rows_print_as_the_frame_does(synth: Path, case: dict[str, object]) -> None:
    with Dataset(synth) as ds:
        rep = _same(ds, case)
    if case.get("since") == "2020-01-01":
        assert rep.empty and rep.notes[0].startswith("no matched orders")
    elif case.get("by") == "venue" and len(case) == 1:
        assert report.cells(rep)[1][0][0] == "binance"  # (the table is not empty)


def test_samples_unknown_venue_and_timing_only(tmp_path: Path) -> None:
    import pcapflow
    from pcapflow.samples import sample_dir

    s = sample_dir()
    pcapflow.ingest([str(s / "fix44_plain.pcap")], data=tmp_path)
    pcapflow.ingest([str(s / "binance_rest_tls13.pcap")], data=tmp_path)  # no key log
    with Dataset(tmp_path) as ds:
        for case in ({}, {"by": "endpoint"}, {"by": "flow"}, {"exchange": "unknown"},
                     {"by": "kind,status"}, {"by": "minute"}):
            rep = _same(ds, case)
        rep = _same(ds, {"by": "endpoint"})
    header, rows, _ = report.cells(rep)
    assert "enc" in header and any(r[0] == "(unknown)" for r in rows)
    assert any("TLS record timing" in n for n in rep.notes)
