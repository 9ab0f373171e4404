"""The latency report, its percentile queries, plots, HTML and the analysis API.

A synthetic dataset (written through the real ``store.Staging`` writer, with the
declared LATENCY/UNMATCHED/CAPTURES schemas) holds latencies drawn here, so every
number the report prints is checked against NumPy on the values this test
generated, not against what the dataset read back. The quantile definition under
test is linear interpolation (DuckDB ``quantile_cont`` = ``np.quantile`` default).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pcapflow.parsers.errors import ConfigError
from pcapflow.pipelines import store
from pcapflow.pipelines.tables.schemas import CAPTURES, LATENCY, UNMATCHED
from typer.testing import CliRunner

from pcapflow import analysis, html_report, plots, render, report
from pcapflow.cli import app
from pcapflow.dataset import Dataset

QS = (0.5, 0.9, 0.99, 0.999)
T0 = pd.Timestamp("2026-11-23T20:00:00Z").value  # ns
VENUES = {  # venue -> (endpoints, lognormal median in ns)
    "binance": (["POST /api/v3/order", "DELETE /api/v3/order"], 900_000),
    "okx": (["order", "cancel-order", "amend-order"], 1_400_000),
    "deribit": (["private/buy"], 2_000_000),
}
KIND = {"POST /api/v3/order": "new", "DELETE /api/v3/order": "cancel", "order": "new",
        "cancel-order": "cancel", "amend-order": "amend", "private/buy": "new"}
CAPS = {"aaaaaaaaaaaaaaaa": "/captures/before.pcap", "bbbbbbbbbbbbbbbb": "/captures/after.pcap"}


def _latency_rows(rng: np.random.Generator, capture_id: str, shift_ns: int) -> pd.DataFrame:
    rows = []
    for venue, (endpoints, median) in VENUES.items():
        n = 180 if venue != "deribit" else 37
        lat = np.round(rng.lognormal(np.log(median), 0.6, n)).astype(np.int64) + shift_ns
        order_ts = T0 + np.sort(rng.integers(0, 150 * 10**9, n))  # 2.5 minutes of orders
        rtt = rng.integers(20_000, 80_000, n).astype(np.int64)
        for i in range(n):
            ep = endpoints[i % len(endpoints)]
            rows.append({
                "capture_id": capture_id, "venue": venue, "endpoint": ep,
                "flow_id": int(i % 3), "protocol": "rest", "kind": KIND[ep],
                "leg": "ack", "correlation_id": f"{venue}{i}", "request_id": None,
                "client_order_id": f"c{i}", "orig_client_order_id": None,
                "order_ts": int(order_ts[i]), "ack_ts": int(order_ts[i] + lat[i]),
                "latency_ns": int(lat[i]),
                "network_rtt_ns": None if i % 7 == 0 else int(rtt[i]),
                # decompose.sql: every order has an estimate, own sample or not
                "network_est_ns": int(rtt[i]) + (5_000 if i % 7 == 0 else 0),
                "network_method": "nearest_rtt_sample" if i % 7 == 0 else "pure_ack",
                "network_spread_ns": 0, "network_samples": 1,
                "exchange_ns": int(lat[i] - rtt[i]) - (5_000 if i % 7 == 0 else 0),
                "status": "rejected" if i % 11 == 0 else "accepted",
                "decoded": venue != "deribit" or i % 2 == 0,
            })
    df = pd.DataFrame(rows)
    engine = df[df.venue == "binance"].head(40).copy()  # second leg: must stay out by default
    engine["leg"] = "engine"
    engine["latency_ns"] = engine["latency_ns"] * 3
    engine["ack_ts"] = engine["order_ts"] + engine["latency_ns"]
    return pd.concat([df, engine], ignore_index=True)


def _unmatched_rows(capture_id: str) -> list[dict[str, object]]:
    rows = [{"capture_id": capture_id, "venue": "okx", "flow_id": 0, "what": "order",
             "endpoint": "order", "kind": "new", "correlation_id": f"lost{i}",
             "ts": T0 + i * 10**9} for i in range(4)]
    rows.append({"capture_id": capture_id, "venue": "binance", "flow_id": 1, "what": "order",
                 "endpoint": "DELETE /api/v3/order", "kind": "cancel", "correlation_id": "x",
                 "ts": T0 + 70 * 10**9})
    rows.append({"capture_id": capture_id, "venue": "okx", "flow_id": 0, "what": "reply",
                 "endpoint": None, "kind": None, "correlation_id": "orphan", "ts": T0})
    return rows


def _to_arrow(rows: pd.DataFrame | list[dict[str, object]], schema: pa.Schema) -> pa.Table:
    df = pd.DataFrame(rows)
    cols = {}
    for f in schema:
        if f.name not in df:  # columns this test does not exercise stay null
            cols[f.name] = pa.nulls(len(df), type=f.type)
            continue
        v = df[f.name].astype(object).where(df[f.name].notna(), None).tolist()
        cols[f.name] = pa.array(v, type=pa.int64()).cast(f.type) \
            if pa.types.is_timestamp(f.type) else pa.array(v, type=f.type)
    return pa.table(cols, schema=schema)


def write_synthetic(root: Path, shift: dict[str, int] | None = None) -> pd.DataFrame:
    """Write two captures' latency/unmatched/captures rows; return the latency rows."""
    rng = np.random.default_rng(7)
    parts = []
    for cid, path in CAPS.items():
        lat = _latency_rows(rng, cid, (shift or {}).get(cid, 0))
        st = store.Staging(root)
        st.write("latency", _to_arrow(lat, LATENCY))
        st.write("unmatched", _to_arrow(_unmatched_rows(cid), UNMATCHED))
        cap = {f.name: None for f in CAPTURES}
        cap.update(capture_id=cid, path=path, format="pcap", packets=1, bytes=1,
                   first_ts=T0, last_ts=T0 + 10**9, flows=3, anomalies=0)
        st.write("captures", _to_arrow([cap], CAPTURES))
        st.commit(cid)
        parts.append(lat)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("synth")
    return root, write_synthetic(root)


@pytest.fixture()
def ds(synth: tuple[Path, pd.DataFrame]) -> Dataset:
    with Dataset(synth[0]) as d:
        yield d


def _acks(truth: pd.DataFrame) -> pd.DataFrame:
    return truth[truth.leg == "ack"]


def _check_row(row: pd.Series, values: np.ndarray, unmatched: int = 0) -> None:
    """One percentile row against NumPy on the generated ns values."""
    assert row["count"] == values.size
    assert row["unmatched"] == unmatched
    want = np.quantile(values, QS) / 1e3  # numpy default = linear interpolation
    got = row[["p50_us", "p90_us", "p99_us", "p99_9_us"]].to_numpy(dtype=float)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    assert row["mean_us"] == pytest.approx(values.mean() / 1e3, rel=1e-12)
    assert row["max_us"] == values.max() / 1e3
    assert row["min_us"] == values.min() / 1e3


# -- percentile queries ---------------------------------------------------------------------

def test_percentiles_by_venue_equal_numpy(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    truth = _acks(synth[1])
    pt = analysis.percentiles(ds)
    assert list(pt.venue) == ["binance", "deribit", "okx"]
    unmatched = {"okx": 8, "binance": 2, "deribit": 0}  # two captures, replies excluded
    for _, row in pt.iterrows():
        vals = truth[truth.venue == row.venue].latency_ns.to_numpy()
        _check_row(row, vals, unmatched[row.venue])
    assert pt.set_index("venue").loc["deribit", "encrypted"] == \
        (~truth[truth.venue == "deribit"].decoded).sum()


def test_percentiles_by_endpoint_and_kind(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    truth = _acks(synth[1])
    pt = analysis.percentiles(ds, by="endpoint,kind", exchange="OKX")
    assert list(pt.columns[:3]) == ["venue", "endpoint", "kind"]
    assert set(pt.endpoint) == {"order", "cancel-order", "amend-order"}
    for _, row in pt.iterrows():
        sel = truth[(truth.venue == "okx") & (truth.endpoint == row.endpoint)]
        _check_row(row, sel.latency_ns.to_numpy(), 8 if row.endpoint == "order" else 0)


def test_percentiles_by_status_shows_unanswered_orders(ds: Dataset,
                                                       synth: tuple[Path, pd.DataFrame]) -> None:
    truth = _acks(synth[1])
    pt = analysis.percentiles(ds, by="status", exchange="okx")
    no_reply = pt[pt.status.isna()]
    assert len(no_reply) == 1 and no_reply["count"].iloc[0] == 0
    assert no_reply["unmatched"].iloc[0] == 8 and pd.isna(no_reply["p50_us"].iloc[0])
    for status in ("accepted", "rejected"):
        row = pt[pt.status == status].iloc[0]
        sel = truth[(truth.venue == "okx") & (truth.status == status)]
        _check_row(row, sel.latency_ns.to_numpy())


def test_percentiles_by_flow_and_capture(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    truth = _acks(synth[1])
    pt = analysis.percentiles(ds, by="flow", exchange="binance")
    assert list(pt.columns[:3]) == ["venue", "capture_id", "flow_id"]
    assert len(pt) == 6
    for _, row in pt.iterrows():
        sel = truth[(truth.venue == "binance") & (truth.capture_id == row.capture_id)
                    & (truth.flow_id == row.flow_id)]
        _check_row(row, sel.latency_ns.to_numpy(), 1 if row.flow_id == 1 else 0)
    by_cap = analysis.percentiles(ds, by="capture", capture="after.pcap")
    assert set(by_cap.capture_id) == {"bbbbbbbbbbbbbbbb"}
    # a flow is keyed by its capture already: both asked for give the flow's groups
    for by in ("flow,capture", "capture,flow"):
        both = analysis.percentiles(ds, by=by, exchange="binance")
        assert list(both.columns[:3]) == ["venue", "capture_id", "flow_id"]
        assert both.equals(pt)


def test_percentiles_by_minute_buckets(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    truth = _acks(synth[1])
    truth = truth[truth.venue == "binance"]
    minute = (truth.order_ts // 60_000_000_000) * 60_000_000_000
    pt = analysis.percentiles(ds, by="minute", exchange="binance")
    assert str(pt.minute.dtype).startswith("datetime64") and pt.minute.dt.tz is not None
    assert sorted(pt.minute.map(lambda t: t.value)) == sorted(minute.unique())
    for _, row in pt.iterrows():
        _check_row(row, truth[minute == row.minute.value].latency_ns.to_numpy(),
                   2 if row.minute.value == T0 + 60 * 10**9 else 0)  # cancel "x", 2 captures
    wide = analysis.percentiles(ds, by="minute", exchange="binance", bucket="5min")
    assert len(wide) == 1 and wide["count"].iloc[0] == len(truth)


def test_leg_metric_and_time_filters(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    truth = synth[1]
    both = analysis.percentiles(ds, by="leg", exchange="binance", leg=None)
    assert dict(zip(both.leg, both["count"], strict=True)) == {"ack": 360, "engine": 80}
    eng = truth[(truth.venue == "binance") & (truth.leg == "engine")]
    _check_row(both[both.leg == "engine"].iloc[0], eng.latency_ns.to_numpy())
    # network_rtt: NULLs are left out of the count and the quantiles
    net = analysis.percentiles(ds, metric="network_rtt", exchange="okx")
    sel = _acks(truth)
    sel = sel[(sel.venue == "okx")].network_rtt_ns.dropna().to_numpy(dtype=np.int64)
    _check_row(net.iloc[0], sel, 8)
    # network (the estimate) and exchange cover every order, and say how
    okx = _acks(truth)[lambda t: t.venue == "okx"]
    for metric, col in (("network", "network_est_ns"), ("exchange", "exchange_ns")):
        got = analysis.percentiles(ds, metric=metric, exchange="okx")
        _check_row(got.iloc[0], okx[col].to_numpy(dtype=np.int64), 8)
        rep = report.build(ds, exchange="okx", metric=metric)
        own = int(okx.network_rtt_ns.notna().sum())
        assert (f"estimate for {len(okx):,} of {len(okx):,} orders (pure_ack {own:,}, "
                f"nearest_rtt_sample {len(okx) - own:,})") in rep.notes[-1]
    rep = report.build(ds, exchange="okx", metric="network_rtt")
    assert f"known for {own:,} of {len(okx):,} orders" in rep.notes[-1]
    assert not any("estimate" in n for n in report.build(ds, exchange="okx").notes)
    # since inclusive, until exclusive; naive times are UTC
    acks = _acks(truth)
    lo, hi = T0 + 30 * 10**9, T0 + 90 * 10**9
    pt = analysis.percentiles(ds, since="2026-11-23 20:00:30", until=pd.Timestamp(hi, tz="UTC"))
    for _, row in pt.iterrows():
        sel = acks[(acks.venue == row.venue) & (acks.order_ts >= lo) & (acks.order_ts < hi)]
        um = {"okx": 0, "binance": 2, "deribit": 0}[row.venue]  # only cancel "x" (at 70 s)
        _check_row(row, sel.latency_ns.to_numpy(), um)


def test_unknown_exchange_and_bad_arguments(ds: Dataset) -> None:
    with pytest.raises(ConfigError) as err:
        analysis.percentiles(ds, exchange="kraken")
    assert err.value.code == "unknown_venue"
    assert "binance, deribit, okx" in str(err.value)
    with pytest.raises(ConfigError) as err:
        analysis.percentiles(ds, by="venue,colour")
    assert err.value.code == "bad_group"
    with pytest.raises(ConfigError) as err:
        analysis.latency(ds, since="yesterday-ish")
    assert err.value.code == "bad_time"
    assert analysis.resolve_exchange(ds, "Binance, okx") == ["binance", "okx"]
    with pytest.raises(ConfigError) as err:
        analysis.latency(ds, capture="during.pcap")
    assert err.value.code == "unknown_capture" and "after.pcap, before.pcap" in str(err.value)
    assert analysis.resolve_capture(ds, "/captures/before.pcap") == ["aaaaaaaaaaaaaaaa"]


def test_latency_frame_dtypes_and_order(ds: Dataset, synth: tuple[Path, pd.DataFrame]) -> None:
    df = ds.latency(exchange="deribit")
    assert str(df.order_ts.dtype) == "datetime64[ns, UTC]"
    assert str(df.ack_ts.dtype) == "datetime64[ns, UTC]"
    for col in ("latency_ns", "network_rtt_ns", "exchange_ns"):  # nullable, never float64
        assert str(df[col].dtype) == "Int64", col
    assert df.order_ts.is_monotonic_increasing
    truth = _acks(synth[1])
    want = truth[truth.venue == "deribit"].latency_ns.sort_values().to_numpy()
    np.testing.assert_array_equal(np.sort(df.latency_ns.to_numpy()), want)
    assert (df.ack_ts - df.order_ts).dt.total_seconds().mul(1e9).round().astype(np.int64) \
        .equals(df.latency_ns.astype(np.int64))
    assert len(ds.latency(exchange="deribit", capture="aaaaaaaa")) == len(df) // 2
    assert len(ds.latency(exchange="binance", leg=None)) == 440


# -- compare (bootstrap) --------------------------------------------------------------------

def test_compare_detects_a_shift_and_not_noise(tmp_path: Path) -> None:
    write_synthetic(tmp_path, shift={"bbbbbbbbbbbbbbbb": 250_000})
    with Dataset(tmp_path) as d:
        res = analysis.compare(d, d, exchange="binance", n_boot=500,
                               quantiles=(0.5, 0.99), **{"capture": None})
        assert (res.diff_us == 0).all() and (res.ci_low_us <= 0).all() \
            and (res.ci_high_us >= 0).all() and not res.significant.any()
        before = d.latency(exchange="binance", capture="before.pcap")
        after = d.latency(exchange="binance", capture="after.pcap")
        res = analysis.compare(before, after, n_boot=500)
    # same draws from one generator, so the two captures differ by more than the shift;
    # what must hold: the point estimate is numpy's, and p50 moved significantly up.
    a, b = before.latency_ns.to_numpy(), after.latency_ns.to_numpy()
    want = (np.quantile(b, [0.5, 0.99]) - np.quantile(a, [0.5, 0.99])) / 1e3
    np.testing.assert_allclose(res.diff_us, want, rtol=1e-12)
    p50 = res.iloc[0]
    assert p50.significant and p50.ci_low_us > 0 and p50.ci_low_us <= p50.diff_us <= p50.ci_high_us


def test_bootstrap_interval_covers_a_known_shift() -> None:
    rng = np.random.default_rng(3)
    a = rng.lognormal(np.log(1e6), 0.4, 400)
    b = rng.lognormal(np.log(1e6), 0.4, 400) + 300_000
    res = analysis.bootstrap_quantile_diff(a, b, (0.5,), n_boot=1000, seed=1)
    assert res.ci_low.iloc[0] < 300_000 < res.ci_high.iloc[0]
    assert res.significant.iloc[0]


def test_bootstrap_batches_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(100, 10, 300), rng.normal(101, 10, 250)
    full = analysis.bootstrap_quantile_diff(a, b, (0.5, 0.9), n_boot=200, seed=9)
    monkeypatch.setattr(analysis, "_BOOT_BATCH_VALUES", 3 * 300)  # 3 replicates per batch
    batched = analysis.bootstrap_quantile_diff(a, b, (0.5, 0.9), n_boot=200, seed=9)
    pd.testing.assert_frame_equal(full, batched)
    with pytest.raises(ConfigError):
        analysis.bootstrap_quantile_diff(a, np.array([]))


# -- formatting and the CLI ------------------------------------------------------------------

def test_format_us_decimals() -> None:
    assert report.format_us(7.1254) == "7.125"
    assert report.format_us(812.4) == "812.40"
    assert report.format_us(15230.54) == "15,230.5"
    assert report.format_us(float("nan")) == "-" and report.format_us(None) == "-"


runner = CliRunner()


def _cli(*args: str) -> tuple[int, str]:
    """(exit code, stdout); notes and hints go to stderr (``_cli_err``)."""
    res = runner.invoke(app, ["report", *args])
    return res.exit_code, res.stdout


def _cli_err(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["report", *args])
    return res.exit_code, res.stdout, res.stderr


def test_cli_json_and_csv_equal_numpy(synth: tuple[Path, pd.DataFrame]) -> None:
    root, truth = synth
    acks = _acks(truth)
    code, out = _cli("--data", str(root), "--format", "json", "--by", "endpoint")
    assert code == 0, out
    recs = json.loads(out)
    assert len(recs) == 6
    for r in recs:
        vals = acks[(acks.venue == r["venue"]) & (acks.endpoint == r["endpoint"])].latency_ns
        q = np.quantile(vals.to_numpy(), QS) / 1e3
        assert r["count"] == len(vals)
        assert [r["p50_us"], r["p90_us"], r["p99_us"], r["p99_9_us"]] == \
            [round(float(x), 3) for x in q]
        assert r["max_us"] == round(vals.max() / 1e3, 3)
    code, out = _cli("--data", str(root), "--format", "csv", "--exchange", "deribit")
    assert code == 0, out
    (row,) = list(csv.DictReader(io.StringIO(out)))
    vals = acks[acks.venue == "deribit"].latency_ns.to_numpy()
    assert float(row["p99_us"]) == round(float(np.quantile(vals, 0.99)) / 1e3, 3)
    assert int(row["count"]) == vals.size and int(row["encrypted"]) > 0


def test_cli_table_output(synth: tuple[Path, pd.DataFrame]) -> None:
    """Piped (not a terminal): one header line and a line per group on stdout, the
    title, caption and notes on stderr."""
    code, out, err = _cli_err("--data", str(synth[0]), "--by", "kind")
    assert code == 0, out + err
    assert err.lstrip().startswith("Order-to-ack latency by venue, kind")
    assert "linear interpolation" in err and "unans = orders with no reply" in err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["venue", "kind", "count", "unans"]
    for word in ("binance", "okx", "deribit", "p99.9", "amend"):
        assert word in out
    pt = analysis.percentiles(Dataset(synth[0]), by="kind")
    assert len(lines) == 1 + len(pt)
    okx_new = pt[(pt.venue == "okx") & (pt.kind == "new")].iloc[0]
    row = next(ln.split() for ln in lines if ln.split()[:2] == ["okx", "new"])
    unit = lines[0].split()[lines[0].split().index("p50") + 1]
    assert row[5] == render.number(okx_new.p50_us / (1000 if unit == "ms" else 1))


def test_cli_usage_errors(synth: tuple[Path, pd.DataFrame]) -> None:
    code, _, out = _cli_err("--data", str(synth[0]), "--exchange", "kraken")
    words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())
    assert code == 2 and "venues present: binance, deribit, okx" in words
    code, _, out = _cli_err("--data", str(synth[0]), "--by", "colour")
    assert code == 2 and "minute" in out
    code, out = _cli("--data", str(synth[0]), "--format", "xml")
    assert code == 2


def test_cli_plot_and_html(synth: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    png, page = tmp_path / "out" / "lat.png", tmp_path / "r.html"
    code, out = _cli("--data", str(synth[0]), "--plot", str(png), "--html", str(page),
                     "--exchange", "okx,binance", "--format", "json")
    assert code == 0, out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>")
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 5 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in imgs)
    assert not re.search(r"(src|href)=\"https?:", text) and "<script" not in text
    assert "lost3" in text and "before.pcap" in text  # unanswered orders, captures
    assert "by venue, endpoint" in text  # the endpoint table follows
    # the slowest orders with their decomposition, then the alerts (html_report)
    slow = text.split("<h2>The slowest orders and why</h2>")[1].split("<h2>")[0]
    assert slow.count("<tr>") == 1 + html_report.SLOWEST and "pure_ack" in slow
    assert "deribit" not in text.split("<h2>Orders with no reply")[0]


def test_html_escapes_values() -> None:
    df = pd.DataFrame({"venue": ["<b>x</b>"], "count": [1], "unmatched": [0], "encrypted": [0],
                       **{c: [1.0] for c in ("mean_us", "p50_us", "p90_us", "p99_us",
                                             "p99_9_us", "min_us", "max_us")}})
    rep = report.Report(table=df, keys=["venue"], by=["venue"])
    text = html_report.render(rep, {})
    assert "<b>x</b>" not in text and "&lt;b&gt;x&lt;/b&gt;" in text


def test_missing_dataset_is_one_line_exit_1(tmp_path: Path) -> None:
    import subprocess
    import sys

    for where in (tmp_path / "nothing_here", tmp_path):  # missing; a directory, no tables
        proc = subprocess.run([sys.executable, "-m", "pcapflow", "report", "--data", str(where),
                               "--format", "json"], capture_output=True, text=True, timeout=120)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
        assert code == 1 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(where) in lines[0] and "pcapflow ingest" in lines[0]


def test_empty_result_says_which_filter_emptied_it(synth: tuple[Path, pd.DataFrame],
                                                   tmp_path: Path) -> None:
    root = str(synth[0])
    code, out, err = _cli_err("--data", root, "--format", "json", "--since", "2031-01-01")
    assert code == 0 and json.loads(out) == []  # stdout stays parseable
    assert "--since/--until leaves none of" in err and "orders span 2026-11-23" in err
    code, out, err = _cli_err("--data", root, "--exchange", "okx", "--leg", "engine",
                              "--plot", str(tmp_path / "p.png"))
    assert code == 0 and "--leg engine leaves none of" in err and "private stream" in err
    assert (tmp_path / "p.png").stat().st_size > 1000


# -- plots ----------------------------------------------------------------------------------

def test_plots_draw_one_series_per_group(ds: Dataset) -> None:
    df = ds.latency()
    fig = plots.cdf(df)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["binance", "deribit", "okx"]
    fig = plots.histogram(df, by="endpoint")
    assert len(fig.axes[0].patches) == 6 and fig.axes[0].get_xscale() == "log"
    fig = plots.summary(df, title="t")
    assert len(fig.axes) == 3 and fig.axes[2].get_yscale() == "log"
    fig = ds.plot("breakdown")
    assert len(fig.axes[0].patches) == 6  # network + exchange bar per venue
    with pytest.raises(ConfigError):
        ds.plot("pie")


def test_rolling_p99_matches_a_direct_computation(ds: Dataset) -> None:
    df = ds.latency(exchange="okx", capture="aaaa")
    roll = plots.rolling_quantile(df, "20s")
    t = df.order_ts.dt.tz_convert(None).to_numpy().astype(np.int64)
    v = df.latency_ns.to_numpy(dtype=float)
    for i in (10, 50, len(df) - 1):
        ti = roll.index[i].value
        window = v[(t > ti - 20 * 10**9) & (t <= ti)]
        assert roll.iloc[i] == pytest.approx(np.quantile(window, 0.99), rel=1e-12)
    assert plots.auto_window(df.order_ts) == pd.Timedelta("10s")  # 150 s span / 20 -> 10 s
