"""The derive's NumPy paths give the rows of the SQL they replace (``pcapflow.feed.gaps_of``
against ``feed.gaps_sql``; ``alerts._silences`` against ``_silences_sql``;
``alerts._bursts`` against ``_bursts_sql``), on every sample capture and with
thresholds low enough that each finds many rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from helpers.paths import SAMPLES
from pcapflow.pipelines.store import partition_dir
from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

import pcapflow
from pcapflow import alerts, feed
from pcapflow.dataset import Dataset

BURSTS = [alerts.Settings(), alerts.Settings(burst_min_bytes=64, burst_factor=2.0),
          alerts.Settings(burst_window_us=100, burst_baseline_s=0.01, burst_min_bytes=1,
                          burst_factor=1.0)]
STALE_S = (5.0, 0.05, 0.0005)


def _views(ds: pcapflow.Dataset) -> Iterator[tuple[str, Dataset]]:
    ids = [c for (c,) in ds.fetchall("SELECT capture_id FROM captures ORDER BY capture_id")]
    for cid in ids:
        files = {t: sorted(partition_dir(ds.path, t, cid).glob("*.parquet")) for t in TABLES}
        yield cid, Dataset.of_capture(files, cid)


def _rows(rows: list) -> list[tuple]:
    return [tuple(r) for r in rows]


def test_numpy_paths_equal_the_sql(samples_dataset: pcapflow.Dataset) -> None:
    found = {"gaps": 0, "stale": 0, "bursts": 0}
    for cid, view in _views(samples_dataset):
        with view:
            messages = feed.message_rows(view)
            got = feed.gaps_of(messages)
            ref = feed.gaps_table(view)  # the SQL, from the payloads
            assert got.to_pylist() == ref.to_pylist(), cid
            found["gaps"] += got.num_rows
            view.con.register("_m", messages)
            for stale_s in STALE_S:
                stale = int(stale_s * 1e9)
                got_s = alerts._silences(view, messages, stale)
                ref_s = _rows(alerts._silences_sql(view, "_m", stale))
                # by time (the SQL's order among equal times is its own)
                assert got_s is not None and [r[5] for r in got_s] == [r[5] for r in ref_s]
                assert sorted(got_s, key=str) == sorted(ref_s, key=str), (cid, stale_s)
                found["stale"] += len(got_s or [])
            for s in BURSTS:
                w = int(s.burst_window_us * 1000)
                span = max(int(s.burst_baseline_s * 1e9) // w, 1)
                got_b = alerts._bursts(view, s, w, span)
                ref_b = _rows(alerts._bursts_sql(view, s, w, span))
                assert got_b is not None and [r[4] for r in got_b] == [r[4] for r in ref_b]
                assert sorted(got_b, key=str) == sorted(ref_b, key=str), (cid, s)
                found["bursts"] += len(got_b)
    print(found)
    # the comparisons compared something
    assert found["gaps"] > 0 and found["stale"] > 100 and found["bursts"] > 100


def test_tcp_detectors_from_the_events_read_once_are_the_sql_s(
        samples_dataset: pcapflow.Dataset) -> None:
    """``alerts.silent_tcp_detectors`` lets the ingest skip ``retransmission_storm`` and
    ``zero_window``: only where their SQL finds nothing, on every sample and threshold
    (a storm's count is per flow and second, at the threshold or above); and
    ``storm_rows`` gives the storms' alerts the SQL gives."""
    silent_storms = fired = storms = 0
    for cid, view in _views(samples_dataset):
        with view:
            events = alerts.tcp_events_rows(view)
            flows = view.small_arrow("SELECT flow_id, venue FROM flows")
            for per_s in (1, 2, 3, 5, 10, 50):
                s = alerts.Settings(storm_per_s=per_s)
                silent = alerts.silent_tcp_detectors(events, s)
                # (``storm_rows``: the storms' query in NumPy, the same alerts)
                ref = alerts.retransmission_storm(view, s)
                got = alerts.retransmission_storm(view, s, alerts.storm_rows(
                    events, flows, cid, per_s))
                assert sorted(got, key=str) == sorted(ref, key=str), (cid, per_s)
                assert [r["start_ts"] for r in got] == [r["start_ts"] for r in ref]
                storms += len(got)
                for kind in ("retransmission_storm", "zero_window"):
                    rows = alerts.DETECTORS[kind](view, s)
                    assert not (kind in silent and rows), (cid, per_s, kind)
                    assert kind in silent or rows or kind == "retransmission_storm", cid
                    silent_storms += kind == "retransmission_storm" and kind in silent
                    fired += bool(rows)
    assert silent_storms >= 10 and fired >= 2 and storms >= 5, (silent_storms, fired, storms)
    sec = 1_000_000_000
    ev = pa.table({"f": [1, 1, 1, 2, 2, 1], "kind": ["retransmission"] * 3 + [
        "fast_retransmission", "zero_window", "gap"], "direction": ["in"] * 6,
                   "t": [5 * sec, 5 * sec + 9, 6 * sec, 5 * sec, 5 * sec, 5 * sec]})
    assert alerts.silent_tcp_detectors(ev, alerts.Settings(storm_per_s=2)) == set()
    assert alerts.silent_tcp_detectors(ev, alerts.Settings(storm_per_s=3)) == {
        "retransmission_storm"}
    assert alerts.silent_tcp_detectors(ev.slice(0, 3), alerts.Settings(storm_per_s=3)) == {
        "retransmission_storm", "zero_window"}
    # runs of seconds: 5, 6 (one run), 8 (another); a flow listed twice: the query's
    ev = pa.table({"f": [1] * 5, "kind": ["retransmission"] * 5, "direction": ["in"] * 5,
                   "t": [5 * sec + 3, 5 * sec + 1, 6 * sec, 8 * sec, 8 * sec + 2]})
    flows = pa.table({"flow_id": [1, 2], "venue": ["v", None]})
    assert alerts.storm_rows(ev, flows, "c", 1) == [
        ("c", 1, "v", 5 * sec + 1, 6 * sec, 3, 2, 2), ("c", 1, "v", 8 * sec, 8 * sec + 2, 2, 2, 1)]
    assert alerts.storm_rows(ev, flows, "c", 2) == [
        ("c", 1, "v", 5 * sec + 1, 5 * sec + 3, 2, 2, 1),
        ("c", 1, "v", 8 * sec, 8 * sec + 2, 2, 2, 1)]
    assert alerts.storm_rows(ev, pa.concat_tables([flows, flows]), "c", 1) is None


def test_latency_shift_of_the_rows_given_is_the_query_s() -> None:
    """``latency_shift`` given the view's ``latency`` rows sorts them itself
    (``alerts._acked_in_order``): the alarms of its query, with venues and endpoints
    null, latencies null, other legs, orders at the same time (flow, then correlation id
    break the tie; a null flow last) and every shift found in the same order."""
    rng = np.random.default_rng(5)
    n = 4000
    o = rng.integers(0, 60 * 10**9, n) // 10**6 * 10**6  # (ms: many equal times)
    lat = rng.lognormal(np.log(3e6), 0.4, n).astype(np.int64)
    lat[o > 30 * 10**9] *= 3
    lat[rng.integers(0, n, 5)] = lat[0]
    table = pa.table({
        "venue": pa.array(rng.choice(["x", "y", None], n, p=[0.45, 0.45, 0.1])),
        "endpoint": pa.array(rng.choice(["e1", "e2", None], n, p=[0.45, 0.45, 0.1])),
        "order_ts": pa.array(o).cast(pa.timestamp("ns", "UTC")),
        "latency_ns": pa.array(lat, mask=rng.random(n) < 0.02),
        "leg": pa.array(rng.choice(["ack", "engine"], n, p=[0.9, 0.1])),
        "flow_id": pa.array(rng.integers(1, 4, n), mask=rng.random(n) < 0.2),
        "correlation_id": pa.array([f"c{i}" for i in range(n)])})
    s = alerts.Settings(cusum_reference=8, cusum_h=3.0)
    with Dataset.of_capture({}, "c", {"latency": table}) as view:
        ref = alerts.latency_shift(view, s)
        got = alerts.latency_shift(view, s, None, table)
        # (a capture's own derive: a carry with no start, ``why_carry.cusum_of``)
        whole = alerts.latency_shift(view, s, alerts.CusumCarry(series={}), table)
        rows = view.sql("SELECT venue, endpoint, epoch_ns(order_ts) AS t, latency_ns "
                        "FROM latency WHERE leg = 'ack' AND latency_ns IS NOT NULL "
                        "ORDER BY venue, endpoint, t, flow_id, correlation_id").to_arrow_table()
    assert len(ref) >= 4 and got == ref and whole == ref
    assert alerts._acked_in_order(table).to_pylist() == rows.to_pylist()


def test_p99_evidence_counted_from_the_rows_given_is_the_query_s() -> None:
    """``p99_high`` given the view's ``latency`` rows counts each alert's evidence from
    them (``alerts._count_above``): its query's counts, with venues and endpoints null,
    latencies null, other legs, orders at a bucket's edges."""
    rng = np.random.default_rng(7)
    n = 6000
    o = rng.integers(0, 600, n) * 10**9 // 10 + rng.choice([0, 1, -1], n)  # (edges)
    o = np.clip(o, 0, None)
    lat = rng.lognormal(np.log(8e7), 0.6, n).astype(np.int64)
    table = pa.table({
        "venue": pa.array(rng.choice(["x", "y", None], n, p=[0.45, 0.45, 0.1])),
        "endpoint": pa.array(rng.choice(["e1", "e2", None], n, p=[0.45, 0.45, 0.1])),
        "order_ts": pa.array(o).cast(pa.timestamp("ns", "UTC")),
        "latency_ns": pa.array(lat, mask=rng.random(n) < 0.02),
        "leg": pa.array(rng.choice(["ack", "engine", None], n, p=[0.8, 0.15, 0.05])),
        "flow_id": pa.array(rng.integers(1, 4, n)),
        "correlation_id": pa.array([f"c{i}" for i in range(n)])})
    s = alerts.Settings(p99_us=100_000.0, min_orders=5, bucket_s=6)
    with Dataset.of_capture({}, "c", {"latency": table}) as view:
        ref = alerts.p99_high(view, s)
        got = alerts.p99_high(view, s, None, table)
    assert len(ref) >= 20 and got == ref
    assert len({r["evidence_rows"] for r in ref}) >= 5


@pytest.mark.parametrize("stale_s", [5.0])
def test_stale_numpy_path_is_what_the_ingest_stored(samples_dataset: pcapflow.Dataset,
                                                     stale_s: float) -> None:
    """The stored ``stale_feed`` alerts (the ingest's NumPy path) are the SQL's over
    the dataset."""
    stored = samples_dataset.fetchall(
        "SELECT capture_id, flow_id, stream, epoch_ns(start_ts), epoch_ns(end_ts) FROM alerts "
        "WHERE kind = 'stale_feed' ORDER BY ALL")
    s = alerts.Settings(stale_after_s=stale_s)
    ref = sorted((r["capture_id"], r["flow_id"], r["stream"], r["start_ts"], r["end_ts"])
                 for r in alerts.stale_feed(samples_dataset, s))
    assert [tuple(r) for r in stored] == ref


def test_streams_before_venues_are_the_derive_s(samples_dataset: pcapflow.Dataset) -> None:
    """``feed.prepare`` (every scanned stream, before the matcher names venues) then
    ``gaps_for`` / ``silences_for`` give ``gaps_of`` / ``_silences`` of
    ``message_rows``: the ingest's ``FeedPrep`` beside the matcher (``pcapflow.why``)."""
    from pcapflow.pipelines import feed_scan

    schema = without_capture_id(TABLES["ws_messages"])
    found = {"captures": 0, "gaps": 0, "stale": 0, "left_out": 0, "walked": 0,
             "refused": 0}
    for cid, view in _views(samples_dataset):
        with view:
            rows = view.sql(f"SELECT {', '.join(schema.names)} FROM ws_messages"
                            ).to_arrow_table().cast(schema)
            scanned = feed_scan.scan(rows)
            if scanned is None:
                continue
            flows = view.sql("SELECT flow_id, capture_id, venue, epoch_ns(last_ts) AS last_ts "
                             "FROM flows ORDER BY flow_id").to_arrow_table()
            assert feed.usable(flows)
            messages = feed.message_rows(view, scanned=scanned)
            ref = [r for r in feed.gaps_of(messages).to_pylist() if r["rule"] != "fix_seq"]
            for stale_s in STALE_S:
                stale = int(stale_s * 1e9)
                streams = feed.prepare(scanned, stale)
                if streams is None:  # a payload handed back whole: the SQL reads it
                    assert scanned.column("rule").null_count
                    break
                assert feed.gaps_for(streams, flows).to_pylist() == ref, cid
                got = feed.silences_for(streams, flows)
                assert got == alerts._silences(view, messages, stale), (cid, stale_s)
                found["stale"] += len(got or [])
                # the same, walked part by part (``why.FeedPrep``: a side file at a time)
                for size in (max(scanned.num_rows // 150, 1), 1000):
                    walk = feed.StreamWalk(stale)
                    assert all(walk.add(scanned.slice(i, size))
                               for i in range(0, scanned.num_rows, size)), (cid, size)
                    parts = walk.finish()
                    assert parts.gaps.equals(streams.gaps), (cid, size)
                    assert feed.silences_for(parts, flows) == got, (cid, size)
                    found["walked"] += 1
                # a stream's rows before those of an earlier part: not walked
                half = scanned.num_rows // 2
                one, two = (set(zip(*(part.column(k).to_pylist() for k in (
                    "flow_id", "rule", "stream")), strict=True)) for part in (
                        scanned.slice(0, half), scanned.slice(half)))
                if one & two:
                    walk = feed.StreamWalk(stale)
                    assert walk.add(scanned.slice(half)) and not walk.add(scanned.slice(0, half))
                    found["refused"] += 1
            else:
                found["captures"] += 1
                found["gaps"] += len(ref)
                found["left_out"] += streams.gaps.num_rows - len(ref)  # other venues' rules
    print(found)
    assert found["captures"] >= 3 and found["gaps"] > 0 and found["stale"] > 100
    assert found["walked"] >= 6 and found["refused"] >= 3


LOW = alerts.Settings(stale_after_s=0.0005, burst_window_us=100, burst_baseline_s=0.01,
                      burst_min_bytes=1, burst_factor=1.0)


def test_ingest_beside_the_matcher_derives_the_same_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest whose ``FeedPrep`` (feed streams and microbursts worked out beside the
    matcher) is used stores the ``feed_gaps`` and ``alerts`` of one whose derive does
    all itself, with thresholds low enough for many stale feeds and microbursts."""
    from pcapflow import why

    caps = [SAMPLES / n for n in ("binance_tick_tls13.pcap", "okx_ws_tls12.pcap",
                                  "deribit_jsonrpc_tls13.pcap", "lossy_rest_tls13.pcap",
                                  "fix44_plain.pcap")]
    keys = sorted(SAMPLES.glob("*.keylog"))
    monkeypatch.setattr(why, "SETTINGS", LOW)
    used: list[bool] = []
    derive = why.derive_staged

    def with_prep(*a: object, **k: object) -> object:
        prep = a[4] if len(a) > 4 else k.get("prep")
        out = derive(*a, **k)  # type: ignore[arg-type]
        used.append(prep is not None and prep.streams is not None  # type: ignore[union-attr]
                    and prep.bursts is not None)  # type: ignore[union-attr]
        return out

    monkeypatch.setattr(why, "derive_staged", with_prep)
    pcapflow.ingest([str(c) for c in caps], keylog=keys, data=tmp_path / "prep")
    monkeypatch.setattr(why, "derive_staged", lambda *a, **k: derive(*a[:4]))  # type: ignore
    pcapflow.ingest([str(c) for c in caps], keylog=keys, data=tmp_path / "plain")
    assert sum(used) >= 3
    one, two = pcapflow.open(tmp_path / "prep"), pcapflow.open(tmp_path / "plain")
    for sql in ("SELECT * EXCLUDE (evidence_sql) FROM alerts ORDER BY ALL",
                "SELECT * FROM feed_gaps ORDER BY ALL"):
        assert one.fetchall(sql) == two.fetchall(sql)
    kinds = dict(one.fetchall("SELECT kind, count(*) FROM alerts GROUP BY kind"))
    assert kinds.get("stale_feed", 0) > 100 and kinds.get("microburst", 0) > 100, kinds


def _intervals_sorted(f: np.ndarray, d: np.ndarray, t: np.ndarray, o: np.ndarray, w: int,
                      base: int) -> tuple[np.ndarray, ...]:
    """``alerts._bursts``' intervals by sorting, as it computed them before
    ``pipelines.burst_bins.intervals``: (key, bytes, segments, first t, last t), by key."""
    g = (f << 1) | (d - 1)  # connection and direction
    del f, d
    # bytes of each segment: its end offset less the one before on its connection and
    # direction (the first: 0)
    order = feed.stream_order([g], o, o)
    go, oo = g[order], o[order]
    b = np.zeros(len(order), np.int64)
    b[1:] = np.where(go[1:] == go[:-1], oo[1:] - oo[:-1], 0)
    seg_b = np.empty_like(b)
    seg_b[order] = b
    del go, oo, b
    # per interval: bytes, segments, first and last time
    key = (g << alerts._BIN_BITS) | (t // w - base)
    del g
    order = np.argsort(key, kind="stable")
    ko = key[order]
    del key
    starts = np.flatnonzero(np.concatenate([[True], ko[1:] != ko[:-1]]))
    k = ko[starts]
    to = t[order]
    nbytes = np.add.reduceat(seg_b[order], starts)
    count = np.diff(np.append(starts, len(order)))
    t0, t1 = np.minimum.reduceat(to, starts), np.maximum.reduceat(to, starts)
    return k, nbytes, count, t0, t1


def _rtt_rows(seed: int) -> tuple[np.random.Generator, int, np.ndarray, np.ndarray,
                                  np.ndarray, np.ndarray]:
    """``tcp_rtt``-like rows for the burst interval kernels: (rng, n, flow ids, directions,
    times in order, each connection and direction's offsets growing, 0 steps among them:
    equal offsets)."""
    rng = np.random.default_rng(seed)
    n = 20_000
    f = rng.integers(0, 7, n) * 3
    d = rng.integers(1, 3, n)
    t = np.sort(rng.integers(10**9, 10**9 + 5 * 10**7, n))
    o = np.empty(n, np.int64)
    for g in np.unique(2 * f + d):
        at = np.flatnonzero(2 * f + d == g)
        o[at] = np.cumsum(rng.integers(0, 1500, len(at)))
    return rng, n, f, d, t, o


@pytest.mark.parametrize("seed", [0, 1])
def test_burst_intervals_kernel_is_the_sorts(seed: int) -> None:
    """``pipelines.burst_bins.intervals`` (one pass, a connection and direction sorted
    alone when out of offset or time order) gives ``_intervals_sorted``'s
    intervals: rows in order, a few moved late (``tcp_rtt``'s unacknowledged tail),
    shuffled, with equal offsets and times."""
    from pcapflow.pipelines import burst_bins

    rng, n, f, d, t, o = _rtt_rows(seed)
    w = 100_000
    base = int(t.min()) // w
    late = rng.choice(n, 50, replace=False)
    orders = [np.arange(n), np.concatenate([np.delete(np.arange(n), late), late]),
              rng.permutation(n)]
    for order in orders:
        args = (f[order], d[order], t[order], o[order], w, base)
        got = burst_bins.intervals(*args, alerts._BIN_BITS)
        ref = _intervals_sorted(*args)
        assert len(got) == len(ref) == 5
        for a, b in zip(got, ref, strict=True):
            assert np.array_equal(a, b)


def test_bursts_before_venues_read_the_files_as_the_view(samples_dataset: pcapflow.Dataset,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``why._bursts_before_venues`` (the ingest's thread: ``tcp_rtt``'s files read by
    Arrow, the flows given) gives ``alerts._bursts`` over the capture's view, also where
    ``alerts.no_burst_possible`` lets it skip the detector."""
    from pcapflow import why

    found = skipped = 0
    for cid, view in _views(samples_dataset):
        with view:
            files = sorted(partition_dir(samples_dataset.path, "tcp_rtt", cid).glob("*.parquet"))
            flows = view.sql("SELECT * EXCLUDE (capture_id) FROM flows").to_arrow_table()
            for s in [*BURSTS, alerts.Settings(burst_min_bytes=65536)]:
                monkeypatch.setattr(why, "SETTINGS", s)
                w = int(s.burst_window_us * 1000)
                span = max(int(s.burst_baseline_s * 1e9) // w, 1)
                key = (w, span, s.burst_min_bytes, s.burst_factor)
                got = why._bursts_before_venues(tmp_path, cid, flows, files, key)
                ref = alerts._bursts(view, s, w, span)
                assert got == ref, (cid, s)
                found += len(got or [])
                rtt = view.sql("SELECT * FROM tcp_rtt").to_arrow_table()
                if alerts.no_burst_possible(rtt, s.burst_min_bytes):
                    skipped += 1  # (the files not read by DuckDB: still the same rows)
                    assert ref == [] and got == [], (cid, s)
    assert found > 100
    assert skipped > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_hot_intervals_streamed_are_the_whole_ones(seed: int) -> None:
    """``burst_bins.HotIntervals`` (a batch of rows at a time, each connection and
    direction's queue of the baseline's intervals) gives ``alerts._hot_whole``'s hot
    intervals over every row, in batches of any size, with the connections and
    directions whose rows go back (a few moved late, as ``tcp_rtt``'s unacknowledged
    tail; or all shuffled) left out for the caller to read whole; the pool and the hot
    arrays grown on the way."""
    from pcapflow.pipelines import burst_bins

    rng, n, f, d, t, o = _rtt_rows(seed)
    w = 100_000
    first_bin = np.full(19, -1, np.int64)
    first_bin[[0, 6, 9]] = [t.min() // w - 3, t.min() // w, t.min() // w + 40]  # (others: -1)
    late = rng.choice(n, 50, replace=False)
    orders = [np.arange(n), np.concatenate([np.delete(np.arange(n), late), late]),
              rng.permutation(n)]
    for s in [alerts.Settings(burst_min_bytes=1, burst_factor=1.0),
              alerts.Settings(burst_min_bytes=3000, burst_factor=3.0)]:
        span = 20
        for order in orders:
            cols = {"f": f[order], "d": d[order], "t": t[order], "o": o[order]}
            ref = alerts._hot_whole(pa.table(cols), first_bin, s, w, span)
            assert len(ref[0]) > 10
            for batch in (7, 1000, n):
                hot = burst_bins.HotIntervals(first_bin, w, span, s.burst_min_bytes,
                                              s.burst_factor)
                for a in range(0, n, batch):
                    hot.add(*(cols[k][a:a + batch] for k in "fdto"))
                got = hot.finish()
                late_g = hot.out_of_order()
                assert (len(late_g) == 0) == (order is orders[0])
                g = 2 * cols["f"] + cols["d"] - 1
                again = alerts._hot_whole(pa.table({k: v[np.isin(g, late_g)]
                                                    for k, v in cols.items()}),
                                          first_bin, s, w, span) if len(late_g) else None
                whole = tuple(np.concatenate([a, b]) for a, b in zip(got, again, strict=True)
                              ) if again is not None else got
                keyed = np.lexsort((whole[1], whole[0]))
                for x, y in zip(ref, whole, strict=True):
                    assert np.array_equal(x, y[keyed]), (seed, batch)


def test_bursts_streamed_state_is_o_flows_read_not_o_flow_ids() -> None:
    """``alerts._bursts_streamed`` keeps its per-connection state by the flows its rows
    name (dense indexes), not by flow id: a resumed command of a long rotation reads a
    few connections whose ids go up with the set, and its state was ~192-384 bytes per
    id below the largest (58.7 MB of a command's peak at file 800 of 2,000-packet
    one-second files; a fresh watch worker's peak grew with the set). The same rows
    under ids 900,000 higher give the same episodes (those ids shifted), some of them
    read again whole (rows out of order), in a few hundred kB; and so under ids past
    2**20, where the scan gave up for ``_bursts_sql``."""
    import tracemalloc

    rng, n, f, d, t, o = _rtt_rows(0)
    late = rng.choice(n, 50, replace=False)
    order = np.concatenate([np.delete(np.arange(n), late), late])
    f, d, t, o = f[order], d[order], t[order], o[order]
    s = alerts.Settings(burst_min_bytes=3000, burst_factor=3.0)
    w, span = 100_000, 20

    def run(shift: int, scale: int = 1) -> list[tuple]:
        ff = f * scale + shift
        cols = {"f": ff, "d": d, "t": t, "o": o}
        flows = [(int(x), int(t.min()) - 3 * w * (x % 2), "v") for x in np.unique(ff)]
        batches = [pa.record_batch({k: v[a:a + 4096] for k, v in cols.items()})
                   for a in range(0, n, 4096)]

        def rows_of(gs: np.ndarray) -> pa.Table:
            return pa.table({k: v[np.isin(2 * ff + d - 1, gs)] for k, v in cols.items()})

        out = alerts._bursts_streamed("c", flows, batches, s, w, span, rows_of)
        assert out is not None
        return out

    small = run(0)
    assert len(small) > 5
    tracemalloc.start()
    try:
        big = run(900_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(r[0], r[1] - 900_000, *r[2:]) for r in big] == small
    assert peak < 4 << 20, peak  # (by flow id: 12 x 2 x 900,019 x 8 bytes, ~173 MB)
    # (past 2**20 flow ids, a rotation's ~2,750th file of 2,000 packets, the scan went on
    # to the SQL; the dense indexes hold whatever the ids)
    huge = run(1 << 40)
    assert [(r[0], r[1] - (1 << 40), *r[2:]) for r in huge] == small
    # (ids spread wider than a batch: sorted, not counted in a table, ``_DenseIds.dense``)
    spread = run(0, 1_000_003)
    assert [(r[0], r[1] // 1_000_003, *r[2:]) for r in spread] == small


@pytest.mark.parametrize("batch", [5, 997])
def test_bursts_in_small_batches_are_the_sql(samples_dataset: pcapflow.Dataset, batch: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``alerts._bursts`` read in batches of a few rows (the state carried across them)
    gives ``_bursts_sql``'s rows on every sample capture."""
    monkeypatch.setattr(alerts, "BURST_BATCH", batch)
    found = 0
    for cid, view in _views(samples_dataset):
        with view:
            for s in BURSTS:
                w = int(s.burst_window_us * 1000)
                span = max(int(s.burst_baseline_s * 1e9) // w, 1)
                got_b = alerts._bursts(view, s, w, span)
                ref_b = _rows(alerts._bursts_sql(view, s, w, span))
                assert got_b is not None, (cid, s)
                assert sorted(got_b, key=str) == sorted(ref_b, key=str), (cid, s)
                found += len(got_b)
    assert found > 100


def test_small_arrow_is_quiet_without_swapping_the_filters() -> None:
    """``Dataset.small_arrow`` (the derive's, beside its feed thread) silences DuckDB's
    warning of its extra copy with a filter of its own module, not ``catch_warnings``
    (which swaps the process's filters and restores them): quiet under ``error``
    filters put first after it, and a DB-API Arrow result elsewhere still warns."""
    import threading
    import warnings

    import duckdb

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mine = warnings.filters
        with Dataset.of_capture({}, "c") as ds:
            got: list[int] = []
            t = threading.Thread(target=lambda: got.append(
                ds.small_arrow("SELECT count(*) AS n FROM latency").column("n")[0].as_py()))
            t.start()
            t.join()
            assert got == [0] and ds.small_arrow("SELECT 1 AS x").num_rows == 1
        assert warnings.filters is mine and warnings.filters[1][0] == "error"
        with pytest.raises(UserWarning, match="DB-API"):
            duckdb.connect().execute("SELECT 1").to_arrow_table()
