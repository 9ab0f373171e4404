"""The OpenMetrics endpoint (``pcapflow.metrics``), scraped over HTTP and parsed with
prometheus_client's own parser: every value equals the tables, computed here
independently (NumPy buckets over the latency rows; DuckDB counts; the stored alerts
counted row by row), after the first ingest, after another capture is added (the
incremental path), after a rotation's set is resumed by its next file (that capture read
again in its place) and after a capture is re-ingested."""

from __future__ import annotations

import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pcapflow
from pcapflow.metrics import BUCKETS_NS, DatasetMetrics, Server

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split  # noqa: E402


def _ingest(root: Path, name: str) -> None:
    cap = SAMPLES / name
    pcapflow.ingest([cap], keylog=[cap.with_suffix(".keylog")], data=root)


def _scrape(port: int) -> dict[str, dict[tuple, float]]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(text.decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def _expected(root: Path) -> dict[str, dict[tuple, float]]:
    """The same numbers from the tables, without pcapflow.metrics."""
    exp: dict[str, dict[tuple, float]] = {}
    with pcapflow.open(root) as ds:
        lat = ds.df("SELECT venue, endpoint, kind, latency_ns FROM latency "
                    "WHERE leg = 'ack' AND latency_ns IS NOT NULL")
        for (venue, endpoint, kind), g in lat.groupby(["venue", "endpoint", "kind"]):
            v = g["latency_ns"].to_numpy(dtype=np.int64)
            base = {"venue": venue, "endpoint": endpoint, "kind": kind}
            for b in BUCKETS_NS:
                key = tuple(sorted({**base, "le": repr(b / 1e9)}.items()))
                exp.setdefault("pcapflow_order_ack_latency_seconds_bucket", {})[key] = \
                    float((v <= b).sum())
            key = tuple(sorted({**base, "le": "+Inf"}.items()))
            exp["pcapflow_order_ack_latency_seconds_bucket"][key] = float(len(v))
            exp.setdefault("pcapflow_order_ack_latency_seconds_count", {})[
                tuple(sorted(base.items()))] = float(len(v))
            exp.setdefault("pcapflow_order_ack_latency_seconds_sum", {})[
                tuple(sorted(base.items()))] = float(v.sum()) / 1e9
        for name, sql in {
            "pcapflow_orders_total": "SELECT venue, kind, count(*) FROM orders GROUP BY ALL",
            "pcapflow_unmatched_total": "SELECT venue, what, count(*) FROM unmatched "
                                        "GROUP BY ALL",
            "pcapflow_rejected_total": "SELECT venue, endpoint, count(*) FROM latency WHERE "
                                       "leg = 'ack' AND status = 'rejected' GROUP BY ALL",
        }.items():
            labels = {"pcapflow_orders_total": ("venue", "kind"),
                      "pcapflow_unmatched_total": ("venue", "what"),
                      "pcapflow_rejected_total": ("venue", "endpoint")}[name]
            for *key, n in ds.fetchall(sql):
                exp.setdefault(name, {})[tuple(sorted(zip(labels, key, strict=True)))] = \
                    float(n)
        retx = Counter()
        for venue, n in ds.fetchall("SELECT venue, retransmissions FROM flows"):
            retx[venue] += n
        exp["pcapflow_retransmissions_total"] = {
            (("venue", v),): float(n) for v, n in retx.items() if n}
        gaps = ds.feed_gaps()
        exp["pcapflow_feed_gaps_total"] = {
            (("venue", v),): float(n) for v, n in gaps.groupby("venue").size().items()}
        alerts = Counter()  # every stored alert row, counted here (a venue-less one: "")
        for kind, severity, venue in ds.fetchall("SELECT kind, severity, venue FROM alerts"):
            alerts[(("kind", kind), ("severity", severity), ("venue", venue or ""))] += 1
        exp["pcapflow_alerts_total"] = {k: float(n) for k, n in alerts.items()}
        files = ds.scalar("SELECT count(*) FROM captures")
        exp["pcapflow_files_ingested_total"] = {(): float(files)}
    return exp


def _check(got: dict, exp: dict) -> None:
    for name, values in exp.items():
        have = got.get(name, {})
        assert set(have) == set(values), (name, set(have) ^ set(values))
        for key, v in values.items():
            assert have[key] == pytest.approx(v, rel=1e-12, abs=1e-12), (name, key)


def test_metrics_endpoint_equals_the_tables(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapflow.pipelines import compact

    root = tmp_path / "ds"
    _ingest(root, "lossy_rest_tls13.pcap")  # retransmissions
    metrics = DatasetMetrics(root)
    metrics.refresh()
    server = Server(metrics, 0, "127.0.0.1", refresh_on_scrape=True)
    try:
        got = _scrape(server.port)
        exp = _expected(root)
        _check(got, exp)
        assert sum(exp["pcapflow_order_ack_latency_seconds_count"].values()) > 50
        assert sum(exp["pcapflow_retransmissions_total"].values()) > 0
        assert sum(exp["pcapflow_alerts_total"].values()) > 0  # p99_high, microburst
        # another capture: added incrementally (as watch does: it names the capture)
        told = DatasetMetrics(root)
        told.refresh()
        cap = SAMPLES / "okx_ws_tls12.pcap"
        r = pcapflow.ingest([cap], keylog=[cap.with_suffix(".keylog")], data=root)[0]
        told.refresh(added=[r.capture_id], removed=r.replaced)
        fresh = DatasetMetrics(root)
        fresh.refresh()
        assert told.totals == fresh.totals
        got = _scrape(server.port)
        exp = _expected(root)
        _check(got, exp)
        assert {dict(k)["venue"] for k in exp["pcapflow_orders_total"]} == {"binance", "okx"}
        assert got["pcapflow_captures"][()] == 2
        # a rotation's set resumed by its next file (same capture, more rows, some
        # unmatched orders matched now): that capture alone is read again, in its place
        cap = SAMPLES / "binance_rest_tls13.pcap"
        # (from its third file on, only the final parts a command added and the
        # provisional ones are read: the earlier final ones are kept as they are)
        parts = split(cap, [60, 90, 120], tmp_path, stem="rot-2024010112")
        ids = []
        # (its earlier parts merged after its 3rd and 4th files, as the watch tells the
        # metrics: what was read of them stands, no whole read)
        monkeypatch.setattr(compact, "TIER_PARTS", 2)
        monkeypatch.setattr(compact, "TIER_BASE_BYTES", 1 << 30)
        real, whole = DatasetMetrics._read_parts, []
        monkeypatch.setattr(DatasetMetrics, "_read_parts", lambda self, c: (
            (t := real(self, c)), whole.append(t is None))[0])
        merged = 0
        for part in parts:
            r = pcapflow.ingest([part], keylog=[cap.with_suffix(".keylog")], data=root)[0]
            told.compacted(r.capture_id, r.compacted)
            merged += len(r.compacted)
            told.refresh(added=[r.capture_id], removed=r.replaced)
            ids.append(r.capture_id)
            fresh = DatasetMetrics(root)
            fresh.refresh()
            assert told.totals == fresh.totals
        assert len(set(ids)) == 1 and r.resumed_from == str(parts[-2])
        assert merged and whole == [False] * len(whole), whole
        exp = _expected(root)
        _check(_scrape(server.port), exp)
        assert told.totals.captures == 3
        # a re-ingest replaces its capture: the totals are read again, not added twice
        _ingest(root, "okx_ws_tls12.pcap")
        _check(_scrape(server.port), exp)
    finally:
        server.close()


def test_metrics_histogram_buckets_are_cumulative(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _ingest(root, "deribit_jsonrpc_tls13.pcap")
    metrics = DatasetMetrics(root)
    metrics.refresh()
    server = Server(metrics, 0, "127.0.0.1")
    try:
        got = _scrape(server.port)
    finally:
        server.close()
    buckets = got["pcapflow_order_ack_latency_seconds_bucket"]
    series: dict[tuple, list[tuple[float, float]]] = {}
    for key, v in buckets.items():
        d = dict(key)
        le = float("inf") if d.pop("le") == "+Inf" else float(dict(key)["le"])
        series.setdefault(tuple(sorted(d.items())), []).append((le, v))
    assert series
    for key, pts in series.items():
        pts.sort()
        counts = [v for _, v in pts]
        assert counts == sorted(counts), key
        assert counts[-1] == got["pcapflow_order_ack_latency_seconds_count"][key]


def test_grafana_dashboard_reads_metrics_that_exist(tmp_path: Path) -> None:
    """Every pcapflow_* series the dashboard queries is one the endpoint serves."""
    import json
    import re

    from pcapflow.metrics import LiveState

    dash = json.loads((Path(__file__).resolve().parents[2] / "docs" /
                       "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs.append(dash["templating"]["list"][0]["query"]["query"])
    wanted = {m for e in exprs for m in re.findall(r"pcapflow_[a-z_]+", e)}
    root = tmp_path / "ds"
    _ingest(root, "lossy_rest_tls13.pcap")
    metrics = DatasetMetrics(root, LiveState())
    metrics.refresh()
    server = Server(metrics, 0, "127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics",
                                      timeout=10).read().decode()
    finally:
        server.close()
    # a family is served even while it has no sample yet (no feed gap so far)
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "gauge": ("",)}
    served = {name + sfx for name, kind in families.items() for sfx in suffixes[kind]}
    assert wanted and wanted <= served, wanted - served


def test_totals_taken_away_leave_nothing() -> None:
    """``Totals.add(sign=-1)`` (a capture re-ingested or removed): every series it added
    goes, as a read of the tables without it would have none."""
    from pcapflow.metrics import Totals

    one = Totals()
    one.latency[("binance", "POST /api/v3/order", "new")] = [1] * (len(BUCKETS_NS) + 2)
    for name in one.counters:
        one.counters[name][("binance",)] = 3
    one.files, one.captures = 2, 1
    total = Totals()
    total.add(one)
    total.add(one)
    total.add(one, sign=-1)
    assert total.counters == one.counters and total.latency == one.latency
    total.add(one, sign=-1)
    assert total.latency == {} and all(v == {} for v in total.counters.values())
    assert (total.files, total.captures) == (0, 0)


def test_the_parts_read_are_kept_as_a_few_numbers_that_tell_a_rewrite() -> None:
    """``ReadParts`` (a rotation's capture in a watch that runs for days: not a set of
    every part, ~2 kB a file): a later command's parts are new, and any change to the
    parts read (one gone, one written anew under its name, one more of an earlier
    command: ``pcapflow match``) makes the capture read whole."""
    from pcapflow.metrics import list_parts

    def listing(tables: dict[str, dict[str, int]], upto: int) -> Any:
        return list_parts({t: iter(names.items()) for t, names in tables.items()}, upto)

    first = {"latency": {"part-0.parquet": 11, "part-f1-0.parquet": 12},
             "orders": {"part-0.parquet": 21, "part-f1-0.parquet": 22,
                        "part-t0.parquet": 23}}
    read = listing(first, -1).every
    assert (read.upto, read.count) == (1, 4)  # (the provisional part-t* not among them)
    later = {t: {**names, "part-f2-0.parquet": 30 + i} for i, (t, names) in
             enumerate(first.items())}
    now = listing(later, read.upto)
    assert (now.before.count, now.before.digest) == (read.count, read.digest)
    assert now.added == {"latency": ["part-f2-0.parquet"], "orders": ["part-f2-0.parquet"]}
    assert now.tail == {"latency": [], "orders": ["part-t0.parquet"]}
    assert (now.every.upto, now.every.count) == (2, 6)
    # the first time apart: every final part by name, the check as before
    whole = list_parts({t: iter(n.items()) for t, n in later.items()}, read.upto,
                       names_after=-1)
    assert sum(map(len, whole.added.values())) == 6 and whole.before == now.before
    gone = {"latency": {"part-0.parquet": 11}, "orders": first["orders"]}
    anew = {**first, "latency": {"part-0.parquet": 11, "part-f1-0.parquet": 99}}
    more = {**first, "latency": {**first["latency"], "part-f1-1.parquet": 13}}
    for changed in (gone, anew, more):
        b = listing(changed, read.upto).before
        assert (b.count, b.digest) != (read.count, read.digest)

