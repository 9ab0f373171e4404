"""Network/exchange decomposition for every order (pipelines/sql/decompose.sql).

Two references: a plain-Python re-implementation of the estimator run on random
RTT samples and orders (the SQL's windowing and ASOF joins must agree with it
row for row), and the lossy sample, captured through ``sample_pcaps/relay.py``,
whose configured one-way delay (``DELAY_S``, read from the relay itself) sets
the round trip every order's estimate must find.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pcapflow.pipelines import match

import pcapflow

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
METHODS = {"pure_ack", "nearest_rtt_sample", "tsecr", "handshake"}
TS = pa.timestamp("ns", tz="UTC")
WINDOW = 4  # samples either side (decompose.sql RTT_WINDOW = 9)
HANDSHAKE_WINDOW_NS = 300_000_000_000


def _relay_delay_ns() -> int:
    spec = importlib.util.spec_from_file_location("_relay", SAMPLES / "relay.py")
    assert spec is not None and spec.loader is not None
    relay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(relay)
    return round(relay.DELAY_S * 1e9)


@pytest.fixture(scope="module")
def dataset(samples_dataset: pcapflow.Dataset) -> pcapflow.Dataset:
    """Every sample with its key logs and the demo's venue map (``conftest.py``)."""
    return samples_dataset


def test_every_sample_order_has_an_estimate_and_a_method(dataset: pcapflow.Dataset) -> None:
    lat = dataset.df("SELECT l.*, f.handshake_rtt_ns FROM latency l "
                     "JOIN flows f USING (capture_id, flow_id)")
    assert len(lat) > 500
    assert set(lat.network_method) <= METHODS
    assert lat.network_est_ns.notna().all() and (lat.network_est_ns > 0).all()
    assert (lat.exchange_ns == lat.latency_ns - lat.network_est_ns).all()
    assert (lat.network_samples >= 1).all() and (lat.network_spread_ns >= 0).all()
    # the estimate is a minimum: never above the order's own pure-ACK sample
    own = lat[lat.network_rtt_ns.notna()]
    assert (own.network_est_ns <= own.network_rtt_ns).all()
    pure = lat[lat.network_method == "pure_ack"]
    assert (pure.network_est_ns == pure.network_rtt_ns).all()
    hs = lat[lat.network_method == "handshake"]
    assert (hs.network_est_ns == hs.handshake_rtt_ns).all()
    # every capture has orders whose ACK rode on the reply: now covered too
    assert lat.network_rtt_ns.isna().sum() > 400


def test_lossy_sample_estimate_is_the_relays_delay(dataset: pcapflow.Dataset) -> None:
    """The relay adds DELAY_S each way to every frame; the loopback stacks behind
    it add tens of µs and the Python relay's own forwarding a little more: the
    round trip must be at least 2 * DELAY_S and within 0.5 ms of it."""
    rtt = 2 * _relay_delay_ns()
    lat = dataset.df("SELECT l.network_est_ns, l.network_method, l.latency_ns FROM latency l "
                     "JOIN captures c USING (capture_id) "
                     "WHERE c.path LIKE '%lossy_rest_tls13.pcap'")
    assert len(lat) == 59
    assert (lat.network_est_ns >= rtt).all(), lat.network_est_ns.min()
    assert (lat.network_est_ns <= rtt + 500_000).all(), lat.network_est_ns.max()
    assert (lat.latency_ns > lat.network_est_ns).all()


# ------------------------------------------------------------- the SQL vs a reference
def _reference(samples: pd.DataFrame, orders: pd.DataFrame,
               handshakes: pd.DataFrame) -> pd.DataFrame:
    """decompose.sql's estimator, one order at a time: the window of the samples
    nearest the order, for each method apart."""
    clean = samples[(samples.direction == "out") & ~samples.piggybacked
                    & ~samples.retransmitted].sort_values(["flow_id", "ts"], kind="stable")

    def window(flow: int, method: str, at: int) -> tuple[int | None, int | None, int]:
        s = clean[(clean.flow_id == flow) & (clean.method == method)]
        ts, rtt = s.ts.to_numpy(), s.rtt_ns.to_numpy()
        if not len(ts):
            return None, None, 0
        before = np.flatnonzero(ts <= at)
        after = np.flatnonzero(ts > at)
        i = before[-1] if len(before) else after[0]
        if len(before) and len(after) and ts[after[0]] - at < at - ts[i]:
            i = after[0]
        w = rtt[max(0, i - WINDOW): i + WINDOW + 1]
        return int(w.min()), int(np.quantile(w, 0.75) - np.quantile(w, 0.25)), len(w)

    out = []
    for o in orders.itertuples():
        est, spread, n = window(o.flow_id, "ack", o.order_ts)
        ts_est, ts_spread, ts_n = window(o.flow_id, "tsecr", o.order_ts)
        h = handshakes.set_index("flow_id").loc[o.flow_id]
        hs = (int(h.handshake_rtt_ns) if pd.notna(h.handshake_rtt_ns)
              and o.order_ts - h.first_ts <= HANDSHAKE_WINDOW_NS else None)
        own = o.network_rtt_ns if pd.notna(o.network_rtt_ns) else None
        others = [v for v in (ts_est, hs) if v is not None]
        if est is not None and own is not None and own <= min([est, *others]):
            method, value = "pure_ack", own
        elif est is not None and est <= min([est, *others]):
            method, value = "nearest_rtt_sample", est
        elif ts_est is not None and (hs is None or ts_est <= hs):
            method, value, spread = "tsecr", ts_est, ts_spread
        elif hs is not None:
            method, value = "handshake", hs
        else:
            method, value = "none", None
        out.append({"order": o.order, "network_est_ns": value, "network_method": method,
                    "network_spread_ns": None if method == "none" else (spread or 0),
                    "network_samples": n + ts_n + (hs is not None)})
    return pd.DataFrame(out)


def test_sql_agrees_with_reference_on_random_samples() -> None:
    rng = np.random.default_rng(18)
    flows, n_samples, n_orders = 6, 400, 300
    t0 = 1_700_000_000_000_000_000
    samples = pd.DataFrame({
        "flow_id": rng.integers(0, flows, n_samples),
        "direction": rng.choice(["out", "in"], n_samples, p=[0.8, 0.2]),
        "ts": t0 + rng.integers(0, 600_000_000_000, n_samples),
        "rtt_ns": rng.integers(10_000, 5_000_000, n_samples),
        "piggybacked": rng.random(n_samples) < 0.3,
        "retransmitted": rng.random(n_samples) < 0.05,
        "method": rng.choice(["ack", "tsecr"], n_samples, p=[0.6, 0.4])})
    samples = samples.drop_duplicates(["flow_id", "ts"])  # ties make the window order moot
    orders = pd.DataFrame({
        "order": np.arange(n_orders),
        "flow_id": rng.integers(0, flows + 1, n_orders),  # flow 6: no samples at all
        "order_ts": t0 + rng.integers(0, 700_000_000_000, n_orders),
        "latency_ns": rng.integers(1_000_000, 9_000_000, n_orders)})
    own = rng.random(n_orders) < 0.2
    orders["network_rtt_ns"] = pd.Series(rng.integers(5_000, 6_000_000, n_orders),
                                         dtype="Int64").where(own)
    handshakes = pd.DataFrame({"flow_id": np.arange(flows + 1),
                               "first_ts": t0 - rng.integers(0, 2, flows + 1) * 10**9,
                               "handshake_rtt_ns": pd.array([30_000, None, 2_000_000, 15_000,
                                                             None, 40_000, None], "Int64")})
    con = duckdb.connect()
    con.register("_s", pa.table({
        "flow_id": pa.array(samples.flow_id, pa.int64()), "direction": samples.direction,
        "ts_sent": pa.array(samples.ts, pa.int64()).cast(TS),
        "rtt_ns": pa.array(samples.rtt_ns, pa.int64()),
        "piggybacked": samples.piggybacked, "retransmitted": samples.retransmitted,
        "method": samples.method}))
    con.execute("CREATE TEMP TABLE tcp_rtt AS FROM _s")
    con.register("_h", pa.table({
        "flow_id": pa.array(handshakes.flow_id, pa.int64()),
        "first_ts": pa.array(handshakes.first_ts, pa.int64()).cast(TS),
        "handshake_rtt_ns": pa.array(handshakes.handshake_rtt_ns, pa.int64())}))
    con.execute("CREATE TEMP TABLE flow_handshake AS FROM _h")
    con.register("_o", pa.Table.from_pandas(orders.assign(exchange_ns=None), preserve_index=False))
    con.execute("CREATE TEMP TABLE out_latency AS SELECT \"order\", flow_id, order_ts::BIGINT "
                "AS order_ts, latency_ns::BIGINT AS latency_ns, network_rtt_ns::BIGINT AS "
                "network_rtt_ns, NULL::BIGINT AS exchange_ns FROM _o")
    for statement in con.extract_statements(match.sql_text("decompose")):
        con.execute(statement)
    got = con.sql('SELECT * FROM out_latency ORDER BY "order"').df()
    want = _reference(samples, orders, handshakes)
    assert len(got) == n_orders
    assert set(got.network_method) == {"pure_ack", "nearest_rtt_sample", "tsecr", "handshake",
                                       "none"}
    for col in ("network_est_ns", "network_method", "network_spread_ns", "network_samples"):
        a = got[col].astype(object).where(got[col].notna(), None).tolist()
        b = want[col].astype(object).where(want[col].notna(), None).tolist()
        assert a == b, col
    est = got.network_est_ns
    assert ((got.exchange_ns == got.latency_ns - est) | est.isna()).all()


def test_python_api(dataset: pcapflow.Dataset) -> None:
    """ds.decomposition(), ds.feed_gaps(), ds.feed_delay(), ds.alerts() as DataFrames."""
    from pcapflow import alerts

    dec = dataset.decomposition(exchange="binance")
    lat = dataset.latency(exchange="binance")
    assert len(dec) == len(lat) and (dec.exchange_ns == dec.latency_ns - dec.network_est_ns).all()
    assert dec.network_method.notna().all()
    # only binance_tick_tls13 has planted gaps (tests/test_why_tick.py): the other
    # samples' trade streams and FIX sessions lose nothing
    gaps = dataset.feed_gaps().merge(dataset.df("SELECT capture_id, path FROM captures"))
    assert len(gaps) and gaps.path.str.endswith("binance_tick_tls13.pcap").all()
    assert set(dataset.feed_delay().rule) == {"binance_trade", "binance_depth"}
    got = dataset.alerts("p99_high", p99_us=100_000)
    assert list(got.columns) == alerts.ALERTS.names
    assert set(got.kind) == {"p99_high"} and (got.value > 100_000).all()
    assert dataset.alerts().kind.isin(alerts.DETECTORS).all()


# ------------------------------------------------------------------ causes
def test_slow_websocket_and_fix_orders_are_delayed_ack_and_nagle(
        dataset: pcapflow.Dataset) -> None:
    """notebooks/02 traces the ~40 ms mode packet by packet: the reply leaves right
    after our delayed ACK. Every slow WebSocket/FIX order is named so; no fast one."""
    # binance_tick_tls13 is left out: its slow replies come behind a ~40 KB push
    # (head_of_line, tests/test_why_tick.py), not behind our delayed ACK
    lat = dataset.df("SELECT capture_id, flow_id, correlation_id, order_ts, latency_ns "
                     "FROM latency WHERE leg = 'ack' AND protocol IN ('websocket', 'fix') "
                     "AND capture_id NOT IN (SELECT capture_id FROM captures "
                     "WHERE path LIKE '%binance_tick_tls13%')")
    named = dataset.causes().query("cause == 'delayed_ack' and leg == 'ack'")
    keys = {(c, f, i, t.value) for c, f, i, t in zip(
        named.capture_id, named.flow_id, named.correlation_id, named.order_ts,
        strict=True)}  # ids are reused: the order's time tells them apart
    has = [(r.capture_id, r.flow_id, r.correlation_id, r.order_ts.value) in keys
           for r in lat.itertuples()]
    lat["named"] = has
    assert lat[lat.latency_ns > 30_000_000].named.all()
    assert not lat[lat.latency_ns < 20_000_000].named.any()
    assert lat.named.sum() >= 70
    assert ((named.cost_ns > 20_000_000) & (named.cost_ns <= named.latency_ns)).all()


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_lossy_orders_name_the_retransmissions_tshark_sees(dataset: pcapflow.Dataset) -> None:
    cap = SAMPLES / "lossy_rest_tls13.pcap"
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "tcp.analysis.retransmission "
                          "|| tcp.analysis.fast_retransmission", "-T", "fields", "-e",
                          "frame.time_epoch"], capture_output=True, text=True, check=True)
    resent = {int(Decimal(t) * 10**9) for t in out.stdout.split()}
    c = dataset.causes().merge(dataset.df(
        "SELECT capture_id FROM captures WHERE path LIKE '%lossy_rest_tls13.pcap'"))
    r = c[c.cause.str.startswith("retransmission")]
    assert len(r) and {t.value for t in r.stall_ts} <= resent
    # the slow orders (an RTO, ~200 ms) are explained: the resend cost most of the time
    lat = dataset.df("SELECT l.correlation_id, l.flow_id, l.latency_ns FROM latency l "
                     "JOIN captures c USING (capture_id) "
                     "WHERE c.path LIKE '%lossy_rest_tls13.pcap' AND l.latency_ns > 150000000")
    assert len(lat) >= 3
    for row in lat.itertuples():
        mine = r[(r.correlation_id == row.correlation_id) & (r.flow_id == row.flow_id)]
        assert mine.cost_ns.max() >= 0.9 * (row.latency_ns - 20_000_000), row


def test_no_cause_possible_only_where_the_sql_finds_none(dataset: pcapflow.Dataset) -> None:
    """``causes.possible`` lets the ingest run the causes' SQL over the orders that may
    have a cause only (``causes.of_capture``), or not at all: it may say "maybe" where
    the SQL finds nothing, never "none" where it finds a row, and the SQL over the rows
    it names gives the rows of the SQL over all of them, in the same order. Each sample's
    orders as stored, then with their windows moved and widened at random (half of the
    rows each time), against the SQL over the same view."""
    import pyarrow.parquet as pq
    from pcapflow.pipelines.tables.declared import declared

    from pcapflow import causes
    from pcapflow.dataset import Dataset

    rng = np.random.default_rng(22)
    root = Path(dataset.path)
    seen = {True: 0, False: 0}
    some = unsure = 0
    for cid, path in dataset.fetchall("SELECT capture_id, path FROM captures ORDER BY path"):
        files = {t: sorted((root / t / f"capture_id={cid}").glob("*.parquet"))
                 for t in declared()}
        if not files["latency"]:
            continue
        lat = pa.concat_tables([pq.ParquetFile(p).read() for p in files["latency"]])
        ts = lat.schema.field("order_ts").type
        o = lat.column("order_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        a = lat.column("ack_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        trials = [lat]
        for _ in range(2):
            shift = rng.integers(-50_000_000, 50_000_000, len(o))
            moved = lat.set_column(lat.schema.get_field_index("order_ts"), "order_ts",
                                   pa.array(o + shift).cast(ts))
            moved = moved.set_column(moved.schema.get_field_index("ack_ts"), "ack_ts", pa.array(
                a + shift + rng.integers(0, 100_000_000, len(a))).cast(ts))
            trials.append(moved.filter(pa.array(rng.random(len(o)) < 0.5)))
        for rows in trials:
            with Dataset.of_capture(files, cid, {"latency": rows}) as view:
                none = causes.none_possible(view, rows)
                p = causes.possible(view, rows)
                want = causes.compute(view)
                got = causes.of_capture(view, rows, cid)
                # (the samples' replies rule out no connection: the SQL over the rows
                # the per-order checks name, against its rows of those causes)
                per_order = causes.possible(view, rows, replies=False)
                assert per_order is not None
                mine = (causes._of_rows(view, rows, per_order, cid) if per_order.rows.any()
                        else want.schema.empty_table())
            assert not (none and want.num_rows), (path, want.num_rows)
            seen[none] += 1
            unsure += p is None
            some += bool(per_order.rows.any() and not per_order.rows.all())
            assert got.select(want.column_names).cast(want.schema).equals(want), path
            kept = want.filter(pc.invert(pc.is_in(want.column("cause"), pa.array(
                ["tls_coalescing", "head_of_line"]))))
            assert mine.select(want.column_names).cast(want.schema).equals(kept), path
    assert seen[True] >= 3 and seen[False] >= 10, seen
    assert some >= 3 and unsure >= 3, (some, unsure)
    # (windows are (order, reply]: a stall at the order's own time is not inside it)
    key, at = np.array([1, 1, 2]), np.array([5, 10, 7])
    every = np.ones(2, np.bool_)
    assert not causes._any_in(np.array([1, 2]), np.array([5, 7]), np.array([9, 9]), every,
                              key, at).any()
    assert causes._any_in(np.array([1]), np.array([4]), np.array([9]), every[:1], key,
                          at).tolist() == [True]
    assert causes._any_in(np.array([2, 1]), np.array([7, 1]), np.array([9, 10]), every, key,
                          at).tolist() == [False, True]
    assert causes._any_in(np.array([2, 1]), np.array([6, 1]), np.array([9, 10]),
                          np.array([True, False]), key, at).tolist() == [True, False]
    assert not causes._any_in(np.array([3]), np.array([0]), np.array([99]), every[:1], key,
                              at).any()


# ------------------------------------------------------------------ tick-to-trade
def test_tick_to_trade_is_the_wire_time_since_the_last_trade(dataset: pcapflow.Dataset) -> None:
    """binance_wsapi_tls13: orders on BTCUSDT while a BTCUSDT trade stream runs on
    another connection. The last trade before each order, found here with json and
    pandas from ws_messages, and reaction_ns = order.ts_first - its ts_last."""
    import json

    cid = dataset.fetchall("SELECT capture_id FROM captures "
                           "WHERE path LIKE '%binance_wsapi_tls13.pcap'")[0][0]
    ws = dataset.df("SELECT flow_id, direction, ts_last, payload FROM ws_messages "
                    "WHERE capture_id = ? AND opcode = 'text' AND direction = 'in'", [cid])
    docs = ws.payload.map(json.loads)
    is_trade = docs.map(lambda d: isinstance(d, dict) and isinstance(d.get("data"), dict)
                        and d["data"].get("e") == "trade" and d["data"].get("s") == "BTCUSDT")
    trades = np.sort(ws[is_trade].ts_last.map(lambda t: t.value).to_numpy())
    orders = dataset.df("SELECT ts_first, correlation_id, flow_id FROM orders "
                        "WHERE capture_id = ?", [cid])
    want = {}
    for o in orders.itertuples():
        i = np.searchsorted(trades, o.ts_first.value, side="right") - 1
        if i >= 0:
            want[(o.flow_id, o.correlation_id, o.ts_first.value)] = o.ts_first.value - trades[i]
    got = dataset.tick_to_trade().query("capture_id == @cid")
    assert len(want) >= 40 and len(got) == len(want)
    assert {(r.flow_id, r.correlation_id, r.order_ts_first.value): r.reaction_ns
            for r in got.itertuples()} == want
    assert set(got.md_rule) == {"binance_trade"} and set(got.symbol) == {"BTCUSDT"}


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_ack_path_gaps_are_the_segments_tshark_says_were_not_captured(
        dataset: pcapflow.Dataset) -> None:
    """lossy_rest_tls13: an order whose window holds a hole in the exchange's direction
    (tshark: tcp.analysis.lost_segment, "previous segment not captured") is named."""
    cap = SAMPLES / "lossy_rest_tls13.pcap"
    out = subprocess.run(["tshark", "-n", "-r", str(cap), "-Y", "tcp.analysis.lost_segment",
                          "-T", "fields", "-e", "frame.time_epoch"],
                         capture_output=True, text=True, check=True)
    lost = {int(Decimal(t) * 10**9) for t in out.stdout.split()}
    c = dataset.causes().merge(dataset.df(
        "SELECT capture_id FROM captures WHERE path LIKE '%lossy_rest_tls13.pcap'"))
    gaps = c[c.cause == "ack_path_gap"]
    assert len(gaps) >= 1 and {t.value for t in gaps.stall_ts} <= lost
    assert (gaps.stall_ts > gaps.order_ts).all()


# ------------------------------------------------------------------ the CLI and HTML
def test_report_by_cause_and_slowest(dataset: pcapflow.Dataset, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from pcapflow.cli import app

    data = str(dataset.path)
    res = CliRunner().invoke(app, ["report", "--by", "cause", "--data", data])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["venue", "cause", "orders", "share"]
    assert max(len(x) for x in lines) <= 80  # piped: plain text within 80 columns
    res = CliRunner().invoke(app, ["report", "--by", "cause", "--data", data, "--format",
                                   "json", "--exchange", "okx"])
    rows = {r["cause"]: r for r in json.loads(res.stdout)}
    c = dataset.causes().query("venue == 'okx' and leg == 'ack'")
    n = len(dataset.latency("okx"))
    named = c.drop_duplicates(["capture_id", "flow_id", "correlation_id", "order_ts"])
    assert rows["delayed_ack"]["orders"] == len(c[c.cause == "delayed_ack"].drop_duplicates(
        ["capture_id", "flow_id", "correlation_id", "order_ts"]))
    assert rows["(none)"]["orders"] == n - len(named)
    assert rows["delayed_ack"]["cost_max_us"] * 1e3 == pytest.approx(
        c[c.cause == "delayed_ack"].cost_ns.max())
    res = CliRunner().invoke(app, ["report", "--data", data, "--slowest", "3", "--format",
                                   "json", "--exchange", "binance"])
    assert res.exit_code == 0, res.output
    slow = json.loads(res.stdout[res.stdout.index("]") + 1:])  # after the percentile table
    top = dataset.latency("binance").nlargest(3, "latency_ns")
    assert [round(r["latency_us"] * 1e3) for r in slow] == list(top.latency_ns)
    assert all("retransmission_out" in r["why"] for r in slow)  # the lossy sample's RTOs
    html = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", "--data", data, "--html", str(html)])
    text = html.read_text()
    assert "Alert timeline" in text and "Orders by cause of delay" in text
    assert "The slowest orders and why" in text
