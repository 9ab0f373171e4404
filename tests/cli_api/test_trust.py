"""Trust at the terminal (issue 17): output that fits and parses, nanoseconds in JSON,
diagnostics that say what to do, the small things, the Python API, ``compare`` and
``verify``. Interrupts: ``test_interrupts.py``.

Rendering is checked against snapshots: exact text at 80 columns on a terminal and
piped, from a fixed report (the numbers of the demo's samples), so a change in layout
shows up as a diff to review here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.paths import SAMPLES
from pcapflow.pipelines.tables.schemas import TABLES
from rich.console import Console
from typer.testing import CliRunner

import pcapflow
from pcapflow import analysis, compare, render, report
from pcapflow.cli import TABLE_NAMES, app

runner = CliRunner()
REST = SAMPLES / "binance_rest_tls13.pcap"
REST_KEYS = SAMPLES / "binance_rest_tls13.keylog"
LOSSY = SAMPLES / "lossy_rest_tls13.pcap"
LOSSY_KEYS = SAMPLES / "lossy_rest_tls13.keylog"
FIX = SAMPLES / "fix44_plain.pcap"


def cli(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        return 1, res.stdout, f"error: {res.exception}"
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trust") / "data"
    pcapflow.ingest([REST], keylog=[REST_KEYS], data=root)
    pcapflow.ingest([FIX], data=root)
    return root


# -- rendering snapshots ----------------------------------------------------------------------

def _demo_report(by: list[str]) -> report.Report:
    """The demo's numbers (README), by venue or by venue and endpoint."""
    rows = [("binance", "DELETE /api/v3/order", 66, 8046.1, 3985.2, 7769.4, 99630.0, 212200.0,
             224700.0),
            ("binance", "PUT /api/v3/order/amend/keepPriority", 12, 3885.0, 2516.3, 7185.2,
             10360.0, 10690.0, 10730.0),
            ("deribit", "private/buy", 12, 17500.0, 4676.0, 44160.0, 46560.0, 46820.0,
             46850.0),
            ("mockfix", "D", 37, 6846.2, 2624.5, 19739.9, 44204.1, 44204.1, 44204.1)]
    keys = ["venue", "endpoint"] if "endpoint" in by else ["venue"]
    df = pd.DataFrame([{
        "venue": r[0], **({"endpoint": r[1]} if "endpoint" in by else {}), "count": r[2],
        "unmatched": 1 if r[0] == "deribit" else 0, "encrypted": 0, "mean_us": r[3],
        "p50_us": r[4], "p90_us": r[5], "p99_us": r[6], "p99_9_us": r[7], "min_us": 900.0,
        "max_us": r[8]} for r in rows])
    return report.Report(table=df, keys=keys, by=keys)


def _terminal(table: object, width: int = 80) -> str:
    con = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    con.print(table)
    return "\n".join(ln.rstrip() for ln in con.file.getvalue().splitlines())  # type: ignore[attr-defined]


SNAPSHOT_BY_VENUE_80 = """\
Order-to-ack latency by venue
venue    count  unans  mean ms   p50 µs  p90 ms  p99 ms  p99.9 ms  max ms
─────────────────────────────────────────────────────────────────────────
binance     66      0    8.046  3,985.2   7.769   99.63     212.2   224.7
binance     12      0    3.885  2,516.3   7.185   10.36     10.69   10.73
deribit     12      1    17.50  4,676.0   44.16   46.56     46.82   46.85
mockfix     37      0    6.846  2,624.5   19.74   44.20     44.20   44.20
µs/ms as headed; quantiles by linear interpolation (DuckDB quantile_cont,
numpy.quantile default); unans = orders with no reply"""

SNAPSHOT_BY_ENDPOINT_PIPED = """\
venue    endpoint                              count  unans  mean ms   p50 µs  p90 ms  p99 ms  p99.9 ms  max ms
binance  DELETE /api/v3/order                     66      0    8.046  3,985.2   7.769   99.63     212.2   224.7
binance  PUT /api/v3/order/amend/keepPriority     12      0    3.885  2,516.3   7.185   10.36     10.69   10.73
deribit  private/buy                              12      1    17.50  4,676.0   44.16   46.56     46.82   46.85
mockfix  NewOrderSingle                           37      0    6.846  2,624.5   19.74   44.20     44.20   44.20
"""  # noqa: E501 (the snapshot is wider than 100 columns: piped output is never cut)


def test_report_at_80_columns_snapshot() -> None:
    got = _terminal(report.render_table(_demo_report(["venue"]), width=80))
    assert got == SNAPSHOT_BY_VENUE_80, "\n" + got


def test_report_by_endpoint_fits_80_columns_and_says_what_it_left_out() -> None:
    got = _terminal(report.render_table(_demo_report(["venue", "endpoint"]), width=80))
    assert max(len(ln) for ln in got.splitlines()) <= 80, got
    assert "mean, p90 left out to fit 80 columns (--format csv has them)" in " ".join(
        got.split())
    assert "NewOrderSingle" in got and "p99.9 ms" in got  # FIX by name; the tail kept
    for number in ("3,985.2", "99.63", "224.7"):  # numbers whole, never cut
        assert number in got


def test_report_piped_snapshot() -> None:
    header, rows, right = report.cells(_demo_report(["venue", "endpoint"]))
    got = render.plain(header, rows, right)
    assert got == SNAPSHOT_BY_ENDPOINT_PIPED, "\n" + got


def test_duration_units_per_column() -> None:
    assert render.duration_unit([812.4, 9999.0]) == ("µs", 1.0)
    assert render.duration_unit([812.4, 10_000.0, None]) == ("ms", 1000.0)
    assert [render.number(v) for v in (7.1254, 81.236, 812.44, 13623.3, None)] == [
        "7.125", "81.24", "812.4", "13,623.3", "-"]


def test_flows_and_query_piped_are_plain(data: Path) -> None:
    code, out, err = cli("flows", "--data", str(data))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["capture", "flow", "client", "server", "proto", "venue/sni",
                                "pkts", "bytes", "rtt", "µs", "rexmit", "gaps", "end"]
    assert len(lines) == 1 + 3 and not any(c in out for c in "│┃━─")
    assert "binance_rest_tls13.pcap" in out and "fix44_plain.pcap" in out
    code, out, _ = cli("query", "--data", str(data),
                       "SELECT venue, endpoint, latency_ns FROM latency ORDER BY 3 LIMIT 3")
    assert code == 0 and out.splitlines()[0].split() == ["venue", "endpoint", "latency_ns"]
    assert len(out.splitlines()) == 4


def test_flows_row_limit_is_said(data: Path) -> None:
    code, out, err = cli("flows", "--data", str(data), "--limit", "1")
    assert code == 0 and len(out.splitlines()) == 2
    assert "showing 1 of 3 flows (--limit N; --limit -1 for all)" in err
    code, out, err = cli("flows", "--data", str(data), "--limit", "-1", "--format", "csv")
    assert code == 0 and len(list(csv.DictReader(io.StringIO(out)))) == 3 and err == ""
    code, _, err = cli("flows", "--data", str(data), "--limit", "-5")
    assert code == 2


# -- nanoseconds in JSON ----------------------------------------------------------------------

def test_query_json_keeps_nanoseconds(data: Path) -> None:
    code, out, _ = cli("query", "--data", str(data), "--format", "json",
                       "SELECT order_ts, epoch_ns(order_ts) AS ns, latency_ns FROM latency")
    assert code == 0
    recs = json.loads(out)
    assert len(recs) > 100
    for r in recs:
        assert pd.Timestamp(r["order_ts"]).value == r["ns"]  # all nine digits came through
    assert any(r["ns"] % 1000 for r in recs)  # and they are not all whole microseconds


def test_report_json_round_trips_to_the_nanosecond(data: Path) -> None:
    ds = pcapflow.open(data)
    lat = ds.latency("binance")
    code, out, _ = cli("report", "--data", str(data), "--format", "json", "--by", "minute",
                       "--exchange", "binance")
    assert code == 0
    recs = json.loads(out)
    total = 0
    for r in recs:
        start = pd.Timestamp(r["minute"])
        rows = lat[(lat.order_ts >= start) & (lat.order_ts < start + pd.Timedelta("1min"))]
        vals = rows.latency_ns.to_numpy(dtype=np.int64)
        total += vals.size
        assert r["p50_us"] == round(float(np.quantile(vals, 0.5)) / 1e3, 3)
        assert r["max_us"] * 1000 == pytest.approx(vals.max(), abs=1e-6)  # integer ns
    assert total == len(lat)


# -- diagnostics ------------------------------------------------------------------------------

def test_wrong_key_log_is_a_warning_naming_it_and_its_coverage(tmp_path: Path) -> None:
    wrong = SAMPLES / "okx_ws_tls12.keylog"
    code, _, err = cli("ingest", str(REST), "--keylog", str(wrong), "--data",
                       str(tmp_path / "d"))
    assert code == 0
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert warnings[0].startswith(f"warning: {wrong}: matched none of the 2 TLS sessions of "
                                  "binance_rest_tls13.pcap (a key log from another capture?")
    assert warnings[1].startswith("warning: binance_rest_tls13.pcap: 2 of 2 TLS sessions have "
                                  "no secrets in any key log given")
    assert f"key log {wrong}: secrets of 0 of 2 TLS sessions" in err


def test_garbage_key_log_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.keylog"
    junk.write_text("this is not\na key log\n")
    code, _, err = cli("ingest", str(REST), "--keylog", str(junk), "--data", str(tmp_path / "d"))
    assert code == 0
    assert f"{junk}: no key lines in it (2 lines" in err
    assert f"{junk}: matched none of the 2 TLS sessions" in err


def _client_randoms(capture: Path) -> dict[int, str]:
    """Client port -> ClientHello.random (hex), as tshark dissects it."""
    out = subprocess.run(["tshark", "-r", str(capture), "-Y", "tls.handshake.type == 1",
                          "-T", "fields", "-e", "tcp.srcport", "-e", "tls.handshake.random"],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return {int(p): r.replace(":", "") for p, r in (ln.split("\t") for ln in out.splitlines())}


def test_key_log_coverage_per_file(tmp_path: Path) -> None:
    """Three captures, four key logs in one ingest: each TLS session names the file that
    held its secrets (checked against the files' text by the client random tshark
    reads), a file that matched nothing is warned about, sessions no file covered are
    said per capture; ``pcapflow coverage`` shows the same per capture and file."""
    okx, deribit = SAMPLES / "okx_ws_tls12.pcap", SAMPLES / "deribit_jsonrpc_tls13.keylog"
    keys = [SAMPLES / "okx_ws_tls12.keylog", REST_KEYS, deribit, LOSSY_KEYS]
    d = tmp_path / "d"
    args = ["ingest", str(REST), str(okx), str(LOSSY)]
    for k in keys:
        args += ["--keylog", str(k)]
    code, _, err = cli(*args, "--data", str(d))
    assert code == 0, err
    assert "warning" not in err  # every session found its secrets: no file is wrong
    for k, n in ((keys[0], 1), (REST_KEYS, 2), (deribit, 0), (LOSSY_KEYS, 2)):
        assert f"key log {k}: secrets of {n} of 5 TLS sessions" in err
    assert f"key log {deribit}: secrets of 0 of 5 TLS sessions (not needed: the others had " \
        "every session's)" in err
    ds = pcapflow.open(d)
    assert ds.fetchall("SELECT DISTINCT keylogs FROM captures") == [([str(k) for k in keys],)]
    if shutil.which("tshark"):
        texts = {str(k): k.read_text() for k in keys}
        for cap in (REST, okx, LOSSY):
            randoms = _client_randoms(cap)
            rows = ds.fetchall(
                "SELECT client_port, tls_keylog FROM flows f JOIN captures c USING "
                "(capture_id) WHERE c.path = ?", [str(cap)])
            assert len(rows) == len(randoms) > 0
            for port, source in rows:
                holders = [k for k, text in texts.items() if randoms[port] in text]
                assert holders == [source]  # the one file that holds it, and it is named
    code, out, _ = cli("coverage", "--data", str(d), "--format", "csv")
    got = {(r["capture"], Path(r["keylog"]).name): (int(r["sessions"]), int(r["tls_sessions"]))
           for r in csv.DictReader(io.StringIO(out))}
    assert got[("okx_ws_tls12.pcap", "okx_ws_tls12.keylog")] == (1, 1)
    assert got[("okx_ws_tls12.pcap", "binance_rest_tls13.keylog")] == (0, 1)
    assert got[("binance_rest_tls13.pcap", "binance_rest_tls13.keylog")] == (2, 2)
    assert got[("lossy_rest_tls13.pcap", "lossy_rest_tls13.keylog")] == (2, 2)
    assert len(got) == 12  # every file given, for every capture; nothing left uncovered
    code, out, err = cli("coverage", "--data", str(d), "--capture", "okx_ws_tls12.pcap")
    assert code == 0 and out.splitlines()[0].split() == ["capture", "key", "log", "sessions",
                                                          "of", "TLS"]
    assert len(out.splitlines()) == 1 + 4 and "okx_ws_tls12.pcap: coverage: orders from" in err


def test_sessions_no_key_log_covers_are_said_per_capture(tmp_path: Path) -> None:
    d = tmp_path / "d"
    code, _, err = cli("ingest", str(REST), str(SAMPLES / "okx_ws_tls12.pcap"), "--keylog",
                       str(REST_KEYS), "--data", str(d))
    assert code == 0
    assert ("warning: okx_ws_tls12.pcap: 1 of 1 TLS sessions have no secrets in any key log "
            "given") in err
    assert f"{REST_KEYS}: matched none" not in err  # it matched the other capture's
    code, _, err = cli("ingest", str(SAMPLES / "okx_ws_tls12.pcap"), "--keylog", str(REST_KEYS),
                       "--data", str(tmp_path / "e"))
    assert f"warning: {REST_KEYS}: matched none of the 1 TLS session of okx_ws_tls12.pcap" in err
    code, out, _ = cli("coverage", "--data", str(d), "--format", "json")
    recs = {r["capture"]: r for r in json.loads(out)}
    assert [(k["keylog"], k["sessions"]) for k in recs["okx_ws_tls12.pcap"]["keylogs"]] == [
        (str(REST_KEYS), 0), ("(no key log had its secrets)", 1)]
    assert recs["binance_rest_tls13.pcap"]["connections"]["with_orders"] == 2


def test_secrets_block_is_named_as_the_key_log(tmp_path: Path) -> None:
    pcapflow.ingest([SAMPLES / "binance_rest_dsb.pcapng"], data=tmp_path / "d")
    ds = pcapflow.open(tmp_path / "d")
    assert ds.fetchall("SELECT DISTINCT tls_keylog FROM flows") == [
        ("the capture's Decryption Secrets Block",)]
    code, out, _ = cli("coverage", "--data", str(tmp_path / "d"), "--format", "csv")
    assert code == 0 and out.splitlines()[1].endswith(",the capture's Decryption Secrets Block,1,1")


def test_globbed_key_logs_after_one_flag_work(tmp_path: Path) -> None:
    """``--keylog *.keylog`` in a shell: the second key log arrives as a capture."""
    code, _, err = cli("ingest", str(REST), "--keylog", str(SAMPLES / "okx_ws_tls12.keylog"),
                       str(REST_KEYS), "--data", str(tmp_path / "d"))
    assert code == 0, err
    assert f"{REST_KEYS} is a key log, not a capture: used as --keylog" in err
    assert "warning" not in err  # the right key log was among them: everything decrypted
    ds = pcapflow.open(tmp_path / "d")
    assert ds.fetchall("SELECT count(*) FROM http_messages")[0][0] == 140


def test_same_capture_gzipped_replaces_and_says_so(tmp_path: Path) -> None:
    gz = tmp_path / "fix44_plain.pcap.gz"
    gz.write_bytes(gzip.compress(FIX.read_bytes()))
    d = str(tmp_path / "d")
    assert cli("ingest", str(FIX), "--data", d)[0] == 0
    code, _, err = cli("ingest", str(gz), "--data", d)
    assert code == 0 and "fix44_plain.pcap.gz: replaced its earlier ingest (same content" in err
    ds = pcapflow.open(d)
    assert ds.fetchall("SELECT count(*), any_value(compression) FROM captures")[0] == (1, "gzip")
    assert ds.fetchall("SELECT count(*) FROM orders")[0][0] == 58  # not twice


def test_usage_checks(tmp_path: Path) -> None:
    assert cli("ingest", str(FIX), "--jobs", "0", "--data", str(tmp_path / "d"))[0] == 2
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"pcapflow {pcapflow.__version__}"
    code, out, _ = cli("query", "--help")
    words = " ".join(out.split())
    assert code == 0 and all(t in words for t in TABLES)
    assert set(TABLE_NAMES) == set(TABLES)


def test_show_tables_lists_only_the_tables(data: Path) -> None:
    code, out, _ = cli("query", "--data", str(data), "SHOW TABLES")
    assert code == 0 and sorted(out.split()[1:]) == sorted(TABLES)


def test_fix_without_a_venue_map_is_readable_and_selectable(data: Path) -> None:
    code, out, err = cli("report", "--data", str(data), "--by", "endpoint")
    assert code == 0
    assert "(unknown)  NewOrderSingle" in out and "OrderCancelRequest" in out
    assert "--exchange unknown" in err
    code, out, _ = cli("report", "--data", str(data), "--exchange", "unknown", "--format",
                       "json")
    (rec,) = json.loads(out)
    assert rec["venue"] is None and rec["count"] == 58
    code, out, _ = cli("report", "--data", str(data), "--by", "capture")
    assert "binance_rest_tls13.pcap" in out and "fix44_plain.pcap" in out


# -- Python API -------------------------------------------------------------------------------

def test_python_api(data: Path) -> None:
    ds = pcapflow.open(data)
    assert repr(ds) == (f"<pcapflow.Dataset {str(data)!r}: 2 captures, 3 flows, 123 orders, "
                        "123 matched; venues: binance>")
    df = ds.latency("binance", endpoint="POST /api/v3/order", status="accepted")
    assert len(df) and set(df.endpoint) == {"POST /api/v3/order"}
    assert str(df.network_rtt_ns.dtype) == "Int64" and str(df.latency_ns.dtype) == "Int64"
    assert len(ds.latency("unknown", endpoint="NewOrderSingle")) == 28
    assert len(ds.latency(exchange="binance", kind="cancel")) == len(
        ds.latency("binance", kind="cancel"))
    import inspect

    params = inspect.signature(ds.latency).parameters
    assert {"venue", "endpoint", "kind", "status", "since", "until", "leg"} <= set(params)
    assert "endpoint:" in (ds.latency.__doc__ or "")
    import pydoc

    text = pydoc.render_doc(pcapflow, renderer=pydoc.plaintext)
    assert "class Dataset" in text and "ingest(" in text and "latency(" in text


# -- compare ----------------------------------------------------------------------------------

def test_compare_a_capture_with_itself_finds_no_difference(data: Path) -> None:
    ds = pcapflow.open(data)
    table = ds.compare(ds, by="endpoint")
    assert len(table) == 6  # 3 REST endpoints, 3 FIX ones
    assert set(table.verdict) <= {"no evidence", "too few"}
    tested = table[table.verdict == "no evidence"]
    assert len(tested) >= 3
    for q in ("p50", "p90", "p99"):
        assert (tested[f"{q}_diff_us"] == 0).all()
        assert (tested[f"{q}_ci_low_us"] <= 0).all() and (tested[f"{q}_ci_high_us"] >= 0).all()


def test_compare_two_samples_cli(tmp_path: Path, data: Path) -> None:
    """Lossy (a relay dropping packets) against the clean REST sample, both given as
    captures: verdicts follow from the intervals, every format agrees."""
    page = tmp_path / "c.html"
    code, out, err = cli("compare", str(REST), str(LOSSY), "--keylog", str(REST_KEYS),
                         "--keylog", str(LOSSY_KEYS), "--by", "endpoint", "--format", "json",
                         "--html", str(page))
    assert code == 0, err
    recs = json.loads(out)
    assert {r["endpoint"] for r in recs} >= {"POST /api/v3/order", "DELETE /api/v3/order"}
    for r in recs:
        if r["verdict"] in ("too few", "before only", "after only"):
            continue
        lower = [r[f"{q}_ci_high_us"] < 0 for q in ("p50", "p90", "p99")]
        higher = [r[f"{q}_ci_low_us"] > 0 for q in ("p50", "p90", "p99")]
        assert r["verdict"] == compare.verdict(lower, higher)
        for q in ("p50", "p90", "p99"):
            assert r[f"{q}_diff_us"] == pytest.approx(r[f"{q}_after_us"] - r[f"{q}_before_us"],
                                                      abs=2e-3)
    assert page.read_text().startswith("<!DOCTYPE html>") and "verdict" in page.read_text()
    code, out, _ = cli("compare", str(data), str(data), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["verdict"] for r in rows} <= {"no evidence", "too few"}
    code, out, err = cli("compare", str(data), str(data))
    assert code == 0 and out.splitlines()[0].split()[:4] == ["venue", "n", "p50", "µs"]
    assert "Δ: after - before" in err


def test_compare_matches_the_bootstrap_of_analysis(data: Path) -> None:
    ds = pcapflow.open(data)
    table = compare.compare(ds, ds, by="venue", exchange="binance", n_boot=200, seed=3)
    vals = ds.latency("binance").latency_ns.to_numpy(dtype=float)
    want = analysis.bootstrap_quantile_diff(vals, vals, compare.QUANTILES, n_boot=200, seed=3)
    (row,) = table.to_dict(orient="records")
    assert row["p99_ci_low_us"] == pytest.approx(want.loc["p99", "ci_low"] / 1e3)


# -- verify -----------------------------------------------------------------------------------

def _have_verify() -> bool:
    try:
        import pyshark  # noqa: F401
    except ImportError:
        return False
    return shutil.which("tshark") is not None


@pytest.mark.skipif(not _have_verify(), reason="needs tshark and pyshark")
@pytest.mark.parametrize(("name", "tables"), [
    ("fix44_plain", {"fix_messages"}),
    ("binance_rest_tls13", {"http_messages", "tls_records"}),
    ("binance_wsapi_tls13", {"http_messages", "ws_messages", "tls_records"}),
])
def test_verify_samples_agree_with_wireshark(name: str, tables: set[str]) -> None:
    from pcapflow import verify

    keys = [SAMPLES / f"{name}.keylog"] if (SAMPLES / f"{name}.keylog").exists() else []
    checks = verify.verify(SAMPLES / f"{name}.pcap", keys, sample=8)
    assert {c.table for c in checks} == tables
    bad = [(c.table, c.frame, c.ours, c.theirs, c.time_ok) for c in checks
           if c.outcome != "agrees"]
    assert bad == []


@pytest.mark.skipif(not _have_verify(), reason="needs tshark and pyshark")
def test_verify_cli_and_a_disagreement(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.run([sys.executable, "-m", "pcapflow", "verify", str(FIX), "--sample", "5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split() == ["fix_messages", "5", "5", "0", "0"]
    from pcapflow import verify

    c = verify.Check(table="tls_records", frame=1, ours={"content_type": 23, "length": 10},
                     theirs=[{"content_type": 23, "length": 11}], time_ok=True)
    assert c.outcome == "differs"
    c = verify.Check(table="http_messages", frame=1,
                     ours={"method": "GET", "target": "/a?x=1&signature=REDACTED"},
                     theirs=[{"method": "GET", "target": "/a?x=1&signature=abc"}], time_ok=True)
    assert c.outcome == "agrees"  # a redacted secret matches what Wireshark shows


def test_a_wide_table_on_a_terminal_leaves_out_columns_and_says_which() -> None:
    header = ["capture", "flow", "client", "server", "proto", "venue/sni", "pkts", "bytes",
              "rtt µs", "rexmit", "gaps", "end"]
    rows = [["lossy_rest_tls13.pcap", "0", "10.99.0.1:38742", "10.99.0.2:443", "tls/http",
             "binance", "414", "381.6KB", "2,275.9", "9", "6", "fin"]] * 3
    term = Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None)
    err = Console(width=80, file=io.StringIO())
    render.show(header, rows, [1, 6, 7, 8, 9, 10], out=term, err=err,
                droppable=["end", "capture", "gaps", "rexmit", "rtt µs"])
    got = term.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(ln) for ln in got.splitlines()) <= 80
    assert "10.99.0.1:38742" in got and "381.6KB" in got  # nothing cut or folded
    assert "end, capture, gaps, rexmit, rtt µs left out to fit 80 columns" in " ".join(got.split())


# -- every table at 80 columns, on the FIX samples ----------------------------------------------

FIX_SLL2 = SAMPLES / "fix44_sll2.pcap"

SNAPSHOT_FIX_BY_ENDPOINT_STATUS_80 = """\
Order-to-ack latency by venue, endpoint, status
venue      endpoint              status    count  unans   p50 µs  p99 ms  max ms
────────────────────────────────────────────────────────────────────────────────
(unknown)  NewOrderSingle        accepted     32      0  2,651.1   44.20   44.20
(unknown)  NewOrderSingle        rejected      5      0  1,650.7   2.585   2.621
(unknown)  OrderCancelReplace    accepted      5      0  2,783.8   3.688   3.689
           Request
(unknown)  OrderCancelReplace    rejected      1      0  1,540.4   1.540   1.540
           Request
(unknown)  OrderCancelRequest    accepted     32      0  2,427.6   4.605   4.641
(unknown)  OrderCancelRequest    rejected      1      0  5,341.1   5.341   5.341
µs/ms as headed; quantiles by linear interpolation (DuckDB quantile_cont,
numpy.quantile default); unans = orders with no reply; mean, p90, p99.9 left out
to fit 80 columns (--format csv has them)"""


@pytest.fixture(scope="module")
def fixdata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fix") / "data"
    pcapflow.ingest([FIX, FIX_SLL2], data=root)
    return root


def _on_terminal(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> io.StringIO:
    """Every command's stdout console as an ``width``-column terminal; returns its text."""
    from pcapflow import cli as cli_mod
    from pcapflow import cli_alerts, cli_compare, cli_match, cli_report

    buf = io.StringIO()
    con = Console(width=width, file=buf, force_terminal=True, color_system=None,
                  legacy_windows=False)
    for mod in (cli_mod, cli_alerts, cli_compare, cli_match, cli_report):
        monkeypatch.setattr(mod, "out", con)
    return buf


def test_fix_report_at_80_columns_snapshot(fixdata: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    buf = _on_terminal(monkeypatch)
    assert cli("report", "--data", str(fixdata), "--by", "endpoint,status")[0] == 0
    got = "\n".join(ln.rstrip() for ln in buf.getvalue().splitlines())
    assert got == SNAPSHOT_FIX_BY_ENDPOINT_STATUS_80, "\n" + got


def _split(line: str) -> list[str]:
    return [c for c in line.strip().split("  ") if c.strip()]


@pytest.mark.parametrize("args", [
    ["report", "--by", "endpoint"], ["report", "--by", "capture,kind"],
    ["report", "--by", "endpoint,status", "--metric", "network"], ["flows"],
    ["alerts", "--p99-us", "3000", "--min-orders", "1"], ["match"],
    ["compare", "{data}", "{data}", "--by", "endpoint,status", "--resamples", "50"],
    ["query", "SELECT endpoint_name(protocol, endpoint) AS endpoint, status, latency_ns, "
     "order_ts FROM latency ORDER BY order_ts LIMIT 5"],
], ids=lambda a: " ".join(a[:3]))
def test_every_table_fits_80_columns_on_the_fix_samples(fixdata: Path, args: list[str],
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """On an 80-column terminal nothing is wider than 80 and nothing is cut: each cell the
    piped table has (for the columns kept) is there whole, or wrapped only between its
    words, path parts or CamelCase words (``render.wrap``); numbers are never wrapped."""
    args = [a.format(data=fixdata) for a in args]
    data = [] if args[0] == "compare" else ["--data", str(fixdata)]
    code, piped, err = cli(*args, *data)
    assert code == 0, err
    buf = _on_terminal(monkeypatch)
    code, _, err = cli(*args, *data)
    assert code == 0, err
    text = buf.getvalue()
    lines = text.splitlines()
    assert lines and max(map(len, lines)) <= 80, text
    flat = " ".join(text.split())
    rows = [r for r in piped.splitlines() if r.strip()]
    header = rows[0].split()
    if args[0] == "alerts":  # a row per alert, its detail (a sentence) numbered under it
        assert len(rows) == 4 and "3 alert(s)" in text
        for k, row in enumerate(rows[1:], 1):
            assert f"{k}. {_split(row)[-2]}" in flat
        return
    for row in rows[1:]:
        for cell in _split(row):
            if cell in text:
                continue
            pieces = [render.wrap(cell, w).splitlines() for w in range(4, len(cell))]
            wrapped = any(all(p in text for p in ps) for ps in pieces)
            # a cell of a column left out on the terminal (said under the table) is absent
            assert wrapped or "left out to fit 80 columns" in flat, (cell, header, text)


def test_render_wraps_between_words_path_parts_and_camelcase() -> None:
    assert render.wrap("OrderCancelReplaceRequest", 20) == "OrderCancelReplace\nRequest"
    assert render.wrap("OrderCancelReplaceRequest", 12) == "OrderCancel\nReplace\nRequest"
    assert render.wrap("PUT /api/v3/order/amend/keepPriority", 20) == \
        "PUT /api/v3/order/\namend/keepPriority"
    assert render.wrap("/work/sample_pcaps/binance_rest_tls13.keylog", 30) == \
        "/work/sample_pcaps/\nbinance_rest_tls13.keylog"  # at a path part before a '_'
    assert render.wrap("short", 10) == "short"


def test_ingest_summary_piped_is_a_plain_table_with_notes_on_stderr(tmp_path: Path) -> None:
    code, out, err = cli("ingest", str(FIX), str(FIX_SLL2), "--data", str(tmp_path / "d"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["capture", "packets", "flows", "orders", "anomalies",
                                "seconds", "pkt/s", "MB/s"]
    got = {ln.split()[0]: ln.split()[1:4] for ln in lines[1:]}
    assert got == {"fix44_plain.pcap": ["142", "1", "58"], "fix44_sll2.pcap": ["59", "1", "18"]}
    assert not any(c in out for c in "│┃━─")  # no box, nothing else on stdout
    assert err.splitlines()[0] == f"ingested into {tmp_path / 'd'}"
    assert "coverage: orders from 2 of 2 connections with payload" in err


def test_ingest_summary_on_an_80_column_terminal(request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # a short data path: the title names it on one line (tmp_path, longer under
    # pytest-xdist's popen-gwN/, would wrap it and move the header down)
    tmp_path = Path(tempfile.mkdtemp(prefix="pcf"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    buf = _on_terminal(monkeypatch)
    code, _, err = cli("ingest", str(REST), str(SAMPLES / "binance_wsapi_tls13.pcap"),
                       "--keylog", str(REST_KEYS), "--keylog",
                       str(SAMPLES / "binance_wsapi_tls13.keylog"), "--data", str(tmp_path / "d"))
    assert code == 0, err
    text = buf.getvalue()
    assert max(map(len, text.splitlines())) <= 80, text
    lines = text.splitlines()
    assert lines[1].split() == ["capture", "packets", "flows", "orders", "anomalies", "seconds",
                                "pkt/s", "MB/s"]
    assert "binance_wsapi_tls13.pcap" in text and "binance_rest_tls13.pcap" in text
    flat = " ".join(text.split())
    assert f"key log {REST_KEYS}: secrets of 2 of 4 TLS sessions" in flat
    assert "coverage: orders from 3 of 4 connections with payload; 1 decoded without " \
        "orders" in flat  # the WebSocket API's market-data connection
    buf.seek(0)
    buf.truncate()
    assert cli("coverage", "--data", str(tmp_path / "d"))[0] == 0
    text = buf.getvalue()
    assert max(map(len, text.splitlines())) <= 80, text
    assert text.splitlines()[1].split() == ["capture", "key", "log", "sessions", "of", "TLS"]
    assert len(text.splitlines()) >= 2 + 4  # a row per capture and key log

def test_fix_endpoints_by_name_in_the_api_and_in_sql(fixdata: Path) -> None:
    ds = pcapflow.open(fixdata)
    lat = ds.latency()
    assert set(lat.endpoint) == {"NewOrderSingle", "OrderCancelRequest",
                                 "OrderCancelReplaceRequest"}
    assert len(ds.latency(endpoint="F")) == len(ds.latency(endpoint="OrderCancelRequest")) == 33
    stored = dict(ds.fetchall("SELECT endpoint, count(*) FROM latency GROUP BY 1"))
    assert stored == {"D": 37, "F": 33, "G": 6}  # the table keeps the wire's MsgType
    named = dict(ds.fetchall("SELECT endpoint_name(protocol, endpoint), count(*) FROM latency "
                             "GROUP BY 1"))
    assert named == {"NewOrderSingle": 37, "OrderCancelRequest": 33,
                     "OrderCancelReplaceRequest": 6}
    assert set(ds.percentiles(by="endpoint").endpoint) == set(named)
    assert set(ds.compare(ds, by="endpoint", n_boot=20).endpoint) == set(named)
