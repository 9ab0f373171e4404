"""Alerts: what went wrong, when, and the rows that show it.

How this works. Each detector reads the dataset's tables through DuckDB and
returns alert rows of one shape (``ALERTS``): a kind, a severity, where (venue,
endpoint, capture, flow, stream), a window (``start_ts``..``end_ts``), the
measured value against its threshold, a sentence, and the evidence: the table
it comes from, how many of its rows, and the SQL that selects exactly those
rows (``pcapflow query "<evidence_sql>"``). The detectors (``DETECTORS``):

- ``latency_shift``: per venue and endpoint, the rank CUSUM of
  ``pcapflow.changepoint`` over order-to-ack latency in order time (online,
  distribution-free; false-alarm rate measured there); the window runs from
  the estimated change to the alarm.
- ``p99_high``: p99 latency per venue, endpoint and ``bucket`` above
  ``p99_us`` (with at least ``min_orders`` orders in the bucket).
- ``retransmission_storm``: at least ``storm_per_s`` retransmissions on one
  connection in each of one or more consecutive seconds (tcp_events).
- ``zero_window``: a run of zero-window events on one connection and
  direction, events less than ``episode_gap`` apart (tcp_events).
- ``microburst``: on one connection and direction, the bytes of data segments
  first sent in one ``burst_window_us`` interval (intervals aligned to the
  epoch, over ``tcp_rtt``'s ``ts_sent``) at least ``burst_min_bytes`` and
  ``burst_factor`` times the direction's mean rate over the ``burst_baseline_s``
  before the interval (over the connection's age when it is younger): online,
  judged by what came before; consecutive such intervals are one alert (value:
  the peak bytes per interval).
- ``clock_step``: the capture clock set back by more than 10 ms between two
  packets in capture order, or set forward by more than 10 ms where the hosts' TCP
  timestamps show it (``parsers.capture.clock``, an ``anomalies`` row; ``unit``
  ``ms back`` or ``ms forward``).
- ``feed_gap``: breaks in a market-data stream's numbering (``pcapflow.feed``),
  those less than ``episode_gap`` apart in one alert.
- ``stale_feed``: a market-data stream silent for more than ``stale_after``
  between two of its messages, or from its last message to its connection's end
  (evidence: those two messages, or the last one).

Every detector is online: a row depends on what came before its window and on
its window only, never on a whole-capture baseline, so a rotation ingested one
file per command derives each file's alerts from that file and a bounded carried
state (``pcapflow.why_carry``) and gets one ingest's rows. Each row says when it
settles (``_settle`` in ``find_rows``: from then on no later input changes it).

Each capture's ingest runs every detector over that capture with the default
``Settings`` and stores the rows (the ``alerts`` table, ``pcapflow.why``;
``stored`` reads them); ``alerts`` runs them again over the whole dataset, in
seconds for a million orders (README, Speed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import changepoint, feed
from .pipelines.tables import schemas

if TYPE_CHECKING:  # pandas: only where a DataFrame is returned (an ingest has none)
    import pandas as pd

    from .dataset import Dataset

ALERTS = schemas.ALERTS
"""One row per alert (docs/tables.md); ``severity``: info, warning or critical."""

SEVERITIES = ("info", "warning", "critical")
RETRANSMISSIONS = ("retransmission", "fast_retransmission")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Thresholds of the detectors (the CLI's options)."""

    p99_us: float = 100_000.0
    min_orders: int = 10
    bucket_s: int = 60
    storm_per_s: int = 10
    episode_gap_s: float = 1.0
    stale_after_s: float = 5.0
    burst_window_us: int = 1000
    burst_factor: float = 20.0
    burst_min_bytes: int = 4096
    burst_baseline_s: float = 1.0
    cusum_k: float = changepoint.K
    cusum_h: float = changepoint.H
    cusum_reference: int = changepoint.REFERENCE


def _q(v: object) -> str:
    """A SQL literal."""
    if v is None:
        return "NULL"
    if isinstance(v, int | np.integer):
        return str(int(v))
    return "'" + str(v).replace("'", "''") + "'"


def _scalar(ds: Dataset, sql: str, params: list[object] | None = None) -> Any:
    """The first value of ``sql``'s result, read whole (DuckDB 2 keeps a result open
    on the connection until it is fetched to the end)."""
    rows = ds.fetchall(sql, params)
    return rows[0][0] if rows else None


def _eq(col: str, v: object) -> str:
    return f"{col} IS NULL" if v is None else f"{col} = {_q(v)}"


def _table(rows: list[dict[str, object]]) -> pa.Table:
    """Detector rows as an ``ALERTS`` table (no pandas: the ingest stores them)."""
    return pa.table({f.name: pa.array([r.get(f.name) for r in rows],
                                      type=pa.int64() if f.type == schemas.TS else f.type)
                     .cast(f.type) for f in ALERTS}, schema=ALERTS)


def _frame(table: pa.Table) -> pd.DataFrame:
    """An ``ALERTS`` table as pandas: times tz-aware, ids nullable Int64."""
    import pandas as pd

    df = table.to_pandas()
    df["flow_id"] = pd.array(df["flow_id"], dtype="Int64")
    df["evidence_rows"] = pd.array(df["evidence_rows"], dtype="Int64")
    return df


# -- latency ------------------------------------------------------------------------------

@dataclass(slots=True)
class CusumCarry:
    """``latency_shift`` over a series given in pieces (a rotation's commands:
    ``pcapflow.why_carry``): per (venue, endpoint), the kernel's state after the orders
    before ``since``, and the latencies and times it may read again (from
    ``changepoint.history_start``). Orders before ``until`` are added to the state
    (their alarms are final); later ones are run on a copy (provisional alarms).

    A second state, at a later order time: ``at`` (set by the caller: this piece's
    answered cut ``Q``), and out, ``later``, the state after the orders before ``at``,
    and ``later_alarms``, the alarms of the orders from ``until`` to ``at``. Given
    back with ``resume`` (the previous piece's ``at``) when the orders before it are
    as they were and ``until`` is ``since`` (``why_carry.cusum_of``), only the orders
    from ``resume`` on are read: the state after those before ``since`` is kept as
    it was, the alarms of those from ``since`` to ``resume`` are ``later_alarms``'s,
    and the run goes on from ``later``. An order never answered holds ``since`` back
    ``why_carry.PENDING_NS`` (the latency rows a late reply adds are at its time),
    but not ``at``: without ``resume`` every piece read every order since then."""

    series: dict[tuple[object, object], dict[str, np.ndarray | int]]
    since: int | None = None
    until: int | None = None
    at: int | None = None
    later: dict[tuple[object, object], dict[str, np.ndarray | int]] | None = None
    later_alarms: dict[tuple[object, object], list[tuple]] | None = None
    resume: int | None = None


def _copy(state: dict[str, np.ndarray | int]) -> dict[str, np.ndarray | int]:
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in state.items()}


@dataclass(slots=True)
class RecentLatency:
    """``latency`` rows a latency detector reads (without ``capture_id``): every row of
    the view whose order time is ``since`` or later. A rotation's later command reads
    the latency alerts from an order time minutes back while its view holds the
    matcher's whole window (``why_carry``): each detector selects its rows in Arrow
    (``of``, from its own start) where DuckDB scanned the window (~0.01 s each at
    ~280k rows)."""

    rows: pa.Table
    since: int

    COLUMNS = ("venue", "endpoint", "order_ts", "latency_ns", "leg", "flow_id",
               "correlation_id")
    """What the latency detectors read of a row (``latency_shift``'s order too)."""

    @classmethod
    def of(cls, latency: pa.Table, since: int) -> RecentLatency | None:
        """``latency``'s rows with an order time ``since`` or later (a null one: not),
        the detectors' columns; None when they are most of its rows (the view reads
        them as cheaply as a copy: an order never answered holds ``p99_high``'s order
        cut back minutes)."""
        o = latency.column("order_ts").cast(pa.int64())
        keep = pc.fill_null(pc.greater_equal(o, pa.scalar(int(since), pa.int64())), False)
        if 2 * (pc.sum(keep).as_py() or 0) > latency.num_rows:
            return None
        return cls(latency.select(list(cls.COLUMNS)).filter(keep), int(since))


@contextmanager
def _latency_from(ds: Dataset, latency: pa.Table | None, start: int | None
                  ) -> Iterator[str]:
    """The table a latency detector reading from order time ``start`` on selects
    from: the rows of ``latency`` (the view's ``latency`` rows, given) from ``start``
    on (``RecentLatency``), else (none given, no start, or they are most of the rows)
    the ``latency`` view."""
    recent = (None if latency is None or start is None
              else RecentLatency.of(latency, int(start)))
    if recent is None:
        yield "latency"
        return
    name = "_alerts_recent_latency"
    ds.con.register(name, recent.rows)
    try:
        yield name
    finally:
        ds.con.unregister(name)


def latency_shift(ds: Dataset, s: Settings, carry: CusumCarry | None = None,
                  latency: pa.Table | None = None) -> list[dict[str, object]]:
    """Regime changes of latency per venue and endpoint (rank CUSUM), in order time
    (ties by flow and correlation id); ``carry``: the state of an earlier piece;
    ``latency``: the view's ``latency`` rows, its own read from its start on
    (``_latency_from``; with no start: every row, ``_acked_in_order``)."""
    resume = carry is not None and carry.resume is not None
    start = None if carry is None else (carry.resume if resume else carry.since)
    since = "" if start is None else f" AND epoch_ns(order_ts) >= {int(start)}"
    # (the series' bounds from the sorted rows, not a ``dense_rank`` over (venue,
    # endpoint): a second sort, ~0.05 s a resumed command re-reading ~240k acks)
    if start is None and latency is not None:  # (every row: sorted here, no query)
        tab = _acked_in_order(latency)
    else:
        with _latency_from(ds, latency, start) as src:
            tab = ds.sql(f"SELECT venue, endpoint, epoch_ns(order_ts) AS t, latency_ns "
                         f"FROM {src} WHERE leg = 'ack' AND latency_ns IS NOT NULL{since} "
                         "ORDER BY venue, endpoint, t, flow_id, correlation_id"
                         ).to_arrow_table()
    t = tab.column("t").to_numpy()
    x = tab.column("latency_ns").to_numpy().astype(np.float64)
    venues, endpoints = tab.column("venue").to_pylist(), tab.column("endpoint").to_pylist()
    cuts = np.flatnonzero(_changes(tab.column("venue")) | _changes(tab.column("endpoint"))) + 1
    bounds = np.concatenate([[0], cuts, [len(t)]]) if len(t) else np.zeros(1, int)
    keys = [(venues[int(a)], endpoints[int(a)]) for a in bounds[:-1]]
    pieces = {k: (int(a), int(b)) for k, a, b in zip(keys, bounds[:-1], bounds[1:],
                                                     strict=True)}
    series = carry.series if carry is not None else {}
    at = carry.at if carry is not None and carry.until is not None else None
    later_in = (carry.later or {}) if carry is not None and resume else {}
    alarms_in = (carry.later_alarms or {}) if carry is not None and resume else {}
    later: dict[tuple[object, object], dict[str, np.ndarray | int]] = {}
    later_alarms: dict[tuple[object, object], list[tuple]] = {}
    out = []
    for key in sorted(set(pieces) | set(series), key=lambda k: (str(k[0]), str(k[1]))):
        a, b = pieces.get(key, (0, 0))
        state = series.get(key) or _new_series(s)
        split = a if resume else (
            a + int(np.searchsorted(t[a:b], carry.until)) if carry is not None and
            carry.until is not None else b)
        kept, alarms = _cusum_piece(state, x[a:split], t[a:split], s)
        if carry is not None:
            series[key] = kept
        for r in alarms:
            out.append(_shift_row(key, r, s))
        if split == b and at is None:
            continue
        # after the cut: on a copy of the state (resumed: on the state at ``resume``,
        # after the alarms of the orders before it)
        now, before = _copy(kept), []
        if resume:
            now = later_in.get(key, now)
            before = list(alarms_in.get(key, []))
            out += [_shift_row(key, r, s) for r in before]
        if at is not None:
            mid = split + int(np.searchsorted(t[split:b], at))
            now, alarms = _cusum_piece(now, x[split:mid], t[split:mid], s)
            out += [_shift_row(key, r, s) for r in alarms]
            later[key], later_alarms[key] = _copy(now), before + alarms
            split = mid
        if split < b:
            _, alarms = _cusum_piece(now, x[split:b], t[split:b], s)
            out += [_shift_row(key, r, s) for r in alarms]
    if carry is not None:
        carry.later = later if at is not None else None
        carry.later_alarms = later_alarms if at is not None else None
    return out


def _acked_in_order(latency: pa.Table) -> pa.Table:
    """``latency_shift``'s query over every row of ``latency`` (the view's rows, given):
    the ack legs with a latency, (venue, endpoint, t: ``order_ts`` as ns, latency_ns) by
    venue, endpoint, t, flow_id and correlation_id, nulls last (DuckDB's order; ~0.005
    s of its planning and sort less at 11k orders)."""
    rows = latency.filter(pc.and_(pc.equal(latency.column("leg"), "ack"),
                                  pc.is_valid(latency.column("latency_ns"))))
    t = rows.column("order_ts").cast(pa.int64())
    keyed = pa.table({"venue": rows.column("venue"), "endpoint": rows.column("endpoint"),
                      "t": t, "latency_ns": rows.column("latency_ns").cast(pa.int64()),
                      "flow_id": rows.column("flow_id"),
                      "correlation_id": rows.column("correlation_id")})
    keys = ("venue", "endpoint", "t", "flow_id", "correlation_id")
    try:
        order = pc.sort_indices(keyed, [(k, "ascending", "at_end") for k in keys])
    except (TypeError, ValueError):  # (pyarrow < 25: one placement for every key)
        order = pc.sort_indices(keyed, [(k, "ascending") for k in keys],
                                null_placement="at_end")
    return keyed.select(["venue", "endpoint", "t", "latency_ns"]).take(order)


def _changes(col: pa.ChunkedArray) -> np.ndarray:
    """Per adjacent pair of ``col``'s values, whether they differ (``IS DISTINCT FROM``)."""
    a = col.combine_chunks()
    if len(a) < 2 or pa.types.is_null(a.type):
        return np.zeros(max(len(a) - 1, 0), bool)
    prev, nxt = a.slice(0, len(a) - 1), a.slice(1)
    ne = pc.fill_null(pc.not_equal(nxt, prev), True)
    both = pc.and_(pc.is_null(nxt), pc.is_null(prev))
    return pc.and_not(ne, both).to_numpy(zero_copy_only=False)


def _new_series(s: Settings) -> dict[str, np.ndarray | int]:
    st, ref = changepoint.new_state(s.cusum_reference)
    return {"st": st, "ref": ref, "base": 0, "x": np.empty(0), "t": np.empty(0, np.int64)}


def _cusum_piece(state: dict[str, np.ndarray | int], x: np.ndarray, t: np.ndarray,
                 s: Settings) -> tuple[dict[str, np.ndarray | int], list[tuple]]:
    """Run one series' next values through the kernel: (the state after them, alarms
    as (t0, t1, direction, reference median, median since the change, orders))."""
    past_x, past_t = cast(np.ndarray, state["x"]), cast(np.ndarray, state["t"])
    hx = np.concatenate([past_x, x])
    ht = np.concatenate([past_t, t])
    base = int(state["base"])
    st, ref = cast(np.ndarray, state["st"]), cast(np.ndarray, state["ref"])
    found, med = changepoint.rank_cusum_step(
        np.ascontiguousarray(hx, np.float64), len(past_x), base,
        float(s.cusum_k), float(s.cusum_h), int(s.cusum_reference), st, ref)
    alarms = []
    for (alarm, change, direction, _), ref_med in zip(found.tolist(), med.tolist(), strict=True):
        now = float(np.median(hx[change - base: alarm - base + 1]))
        alarms.append((int(ht[change - base]), int(ht[alarm - base]), direction, ref_med, now,
                       alarm - change + 1))
    keep = max(min(changepoint.history_start(st, s.cusum_reference) - base, len(hx)), 0)
    return {"st": st, "ref": ref, "base": base + keep, "x": hx[keep:], "t": ht[keep:]}, alarms


def _shift_row(key: tuple[object, object], alarm: tuple, s: Settings) -> dict[str, object]:
    (venue, endpoint), (t0, t1, direction, ref, now, n) = key, alarm
    up = direction > 0
    sev = "info" if not up else ("critical" if now >= 2 * ref else "warning")
    where = (f"{_eq('venue', venue)} AND {_eq('endpoint', endpoint)} AND leg = 'ack' "
             f"AND epoch_ns(order_ts) BETWEEN {t0} AND {t1}")
    return {
        "kind": "latency_shift", "severity": sev, "venue": venue, "endpoint": endpoint,
        "start_ts": t0, "end_ts": t1, "value": now / 1e3, "threshold": ref / 1e3,
        "unit": "us (median)",
        "detail": (f"median latency {'up' if up else 'down'} from {ref / 1e3:,.1f} µs "
                   f"to {now / 1e3:,.1f} µs (rank CUSUM k={s.cusum_k} h={s.cusum_h}, "
                   f"reference {s.cusum_reference} orders)"),
        "evidence_table": "latency", "evidence_rows": int(n),
        "evidence_sql": f"SELECT * FROM latency WHERE {where} ORDER BY order_ts",
        "_settle": t1, "_orders": True}


def p99_high(ds: Dataset, s: Settings, since: int | None = None,
             latency: pa.Table | None = None,
             carried: tuple[int, list[dict[str, object]]] | None = None
             ) -> list[dict[str, object]]:
    """Buckets whose p99 latency is above ``p99_us``; ``since``: the buckets from the
    one holding that order time on (a rotation's later command: ``why_carry``);
    ``latency``: the view's ``latency`` rows, its own read from that bucket on
    (``_latency_from``); ``carried``: (a bucket's start, the rows of the buckets from
    ``since``'s to before it as the previous command found them: ``why_carry.p99_of``),
    only the buckets from there on read (an order never answered holds ``since`` back
    minutes, and every command read those minutes' orders again)."""
    w = int(s.bucket_s * 1e9)
    start = None if since is None else int(since) // w * w
    before: list[dict[str, object]] = []
    if carried is not None and start is not None and int(carried[0]) >= start:
        before = [dict(r) for r in carried[1]
                  if int(r["start_ts"]) >= start]  # type: ignore[call-overload]
        start = int(carried[0])
    after = "" if start is None else f" AND epoch_ns(order_ts) >= {start}"
    with _latency_from(ds, latency, start) as src:
        rows = ds.fetchall(f"""
            SELECT venue, endpoint, epoch_ns(order_ts) // {w} AS b, count(*) AS n,
                   quantile_cont(latency_ns, 0.99) AS p99
            FROM {src} WHERE leg = 'ack' AND latency_ns IS NOT NULL{after}
            GROUP BY ALL HAVING count(*) >= {int(s.min_orders)}
                AND p99 > {float(s.p99_us) * 1e3}
            ORDER BY b, venue, endpoint""")
    out = []
    for venue, endpoint, b, n, p99 in rows:
        t0, t1 = int(b) * w, (int(b) + 1) * w
        where = (f"{_eq('venue', venue)} AND {_eq('endpoint', endpoint)} AND leg = 'ack' AND "
                 f"epoch_ns(order_ts) >= {t0} AND epoch_ns(order_ts) < {t1} AND "
                 f"latency_ns > {int(s.p99_us * 1e3)}")
        out.append({
            "kind": "p99_high", "severity": "critical" if p99 > 2 * s.p99_us * 1e3 else "warning",
            "venue": venue, "endpoint": endpoint, "start_ts": t0, "end_ts": t1 - 1,
            "value": p99 / 1e3, "threshold": s.p99_us, "unit": "us (p99)",
            "detail": f"p99 {p99 / 1e3:,.1f} µs over {n} orders in {s.bucket_s} s "
                      f"(threshold {s.p99_us:,.0f} µs); evidence: the orders above it",
            "evidence_table": "latency",
            "evidence_rows": int(_scalar(ds, f"SELECT count(*) FROM latency WHERE {where}"))
            if latency is None else _count_above(latency, venue, endpoint, t0, t1,
                                                 int(s.p99_us * 1e3)),
            "evidence_sql": f"SELECT * FROM latency WHERE {where} ORDER BY order_ts",
            "_settle": t1 - 1, "_orders": True})
    return [*before, *out]


def _count_above(latency: pa.Table, venue: object, endpoint: object, t0: int, t1: int,
                 above: int) -> int:
    """``p99_high``'s evidence count (its ``evidence_sql``'s rows) over ``latency``, the
    view's ``latency`` rows given: no query (~3 ms each)."""
    def eq(col: str, v: object) -> pa.ChunkedArray:
        c = latency.column(col)
        if pa.types.is_dictionary(c.type):
            c = c.cast(c.type.value_type)
        return pc.is_null(c) if v is None else pc.equal(c, pa.scalar(v, c.type))

    ts = latency.column("order_ts")
    t = pc.cast(pc.cast(ts, pa.timestamp("ns", getattr(ts.type, "tz", None))), pa.int64())
    m = pc.and_kleene(pc.and_kleene(eq("venue", venue), eq("endpoint", endpoint)),
                      eq("leg", "ack"))
    m = pc.and_kleene(m, pc.and_kleene(pc.greater_equal(t, t0), pc.less(t, t1)))
    m = pc.and_kleene(m, pc.greater(latency.column("latency_ns"), above))
    return int(pc.sum(pc.fill_null(m, False).cast(pa.int64())).as_py() or 0)


# -- TCP ----------------------------------------------------------------------------------

def _flow_venue_sql() -> str:
    return "LEFT JOIN flows f USING (capture_id, flow_id)"


def retransmission_storm(ds: Dataset, s: Settings,
                         rows: list[tuple] | None = None) -> list[dict[str, object]]:
    """Runs of consecutive seconds with at least ``storm_per_s`` retransmissions on a flow;
    ``rows``: its query's rows when found already (``storm_rows``)."""
    kinds = ", ".join(_q(k) for k in RETRANSMISSIONS)
    rows = rows if rows is not None else ds.fetchall(f"""
        WITH sec AS (
            SELECT capture_id, flow_id, epoch_ns(ts) // 1000000000 AS sec, count(*) AS n,
                   min(epoch_ns(ts)) AS t0, max(epoch_ns(ts)) AS t1
            FROM tcp_events WHERE kind IN ({kinds}) GROUP BY ALL
            HAVING count(*) >= {int(s.storm_per_s)}),
        runs AS (
            SELECT *, sec - row_number() OVER (PARTITION BY capture_id, flow_id ORDER BY sec)
                   AS run FROM sec)
        SELECT r.capture_id, r.flow_id, any_value(f.venue), min(r.t0), max(r.t1), sum(r.n),
               max(r.n), count(*)
        FROM runs r {_flow_venue_sql()} GROUP BY r.capture_id, r.flow_id, r.run
        ORDER BY 4""")
    out = []
    for cid, flow, venue, t0, t1, n, peak, secs in rows:
        where = (f"capture_id = {_q(cid)} AND flow_id = {int(flow)} AND kind IN ({kinds}) "
                 f"AND epoch_ns(ts) BETWEEN {int(t0)} AND {int(t1)}")
        out.append({
            "kind": "retransmission_storm",
            "severity": "critical" if peak >= 10 * s.storm_per_s else "warning",
            "venue": venue, "capture_id": cid, "flow_id": int(flow), "start_ts": int(t0),
            "end_ts": int(t1), "value": float(peak), "threshold": float(s.storm_per_s),
            "unit": "retransmissions/s (peak)",
            "detail": f"{int(n)} retransmissions in {int(secs)} s on flow {flow}",
            "evidence_table": "tcp_events", "evidence_rows": int(n),
            "evidence_sql": f"SELECT * FROM tcp_events WHERE {where} ORDER BY packet",
            # a retransmission later in its last second, or in the next, extends it
            "_settle": (int(t1) // 10**9 + 2) * 10**9})
    return out


def storm_rows(events: pa.Table, flows: pa.Table, capture_id: str, per_s: int
               ) -> list[tuple] | None:
    """``retransmission_storm``'s query rows (capture, flow, venue, first and last
    retransmission, retransmissions, the peak second's, seconds) of one capture, from
    its ``tcp_events_rows`` and its flows (flow_id, venue), by the first retransmission
    (then flow); None where the query is to run (a null flow or time, a time before
    1970, a flow listed twice, ``per_s`` <= 0). ~0.007 s of the query's CPU less on
    the application-layer benchmark, whose flows have ~900 retransmissions each."""
    import numpy as np

    if per_s <= 0:
        return None
    resent = events.filter(pc.is_in(events.column("kind"), pa.array(RETRANSMISSIONS)))
    f, t = resent.column("f"), resent.column("t")
    fid = flows.column("flow_id")
    if (f.null_count or t.null_count or fid.null_count
            or len(pc.unique(fid)) != len(fid)):
        return None
    if resent.num_rows == 0:
        return []
    fl, tt = f.to_numpy(), t.to_numpy()
    if int(tt.min()) < 0:
        return None
    sec = tt // 1_000_000_000
    order = np.lexsort((tt, sec, fl))
    fl, sec, tt = fl[order], sec[order], tt[order]
    first = np.flatnonzero(np.concatenate([[True], (fl[1:] != fl[:-1])
                                           | (sec[1:] != sec[:-1])]))
    last = np.append(first[1:], len(fl)) - 1
    n = last - first + 1
    hot = n >= per_s  # (a second with per_s or more, its first and last times)
    g_f, g_s, g_n, g_t0, g_t1 = fl[first][hot], sec[first][hot], n[hot], tt[first][hot], \
        tt[last][hot]
    if not len(g_f):
        return []
    run = np.flatnonzero(np.concatenate([[True], (g_f[1:] != g_f[:-1])
                                         | (g_s[1:] - g_s[:-1] != 1)]))
    end = np.append(run[1:], len(g_f))
    venue = dict(zip(fid.to_pylist(), flows.column("venue").to_pylist(), strict=True))
    out = [(capture_id, int(g_f[a]), venue.get(int(g_f[a])), int(g_t0[a]), int(g_t1[z - 1]),
            int(g_n[a:z].sum()), int(g_n[a:z].max()), int(z - a))
           for a, z in zip(run.tolist(), end.tolist(), strict=True)]
    out.sort(key=lambda r: (r[3], r[1]))
    return out


def no_storm_possible(flows: pa.Table, per_s: int) -> bool:
    """Can no flow of a capture hold ``per_s`` (> 0) retransmissions in one second?
    Its ``flows`` rows (every flow of the capture, each whole) count every segment
    flagged a retransmission of any kind (``retransmissions``): when none reaches
    ``per_s``, ``retransmission_storm`` finds nothing (its query, ~0.01 s of CPU,
    need not run). A null or missing count: False."""
    if per_s <= 0 or flows.num_rows == 0 or "retransmissions" not in flows.column_names:
        return False
    col = flows.column("retransmissions")
    if col.null_count:
        return False
    return bool(pc.max(col).as_py() < per_s)


TCP_EVENT_KINDS = (*RETRANSMISSIONS, "zero_window", "gap")
"""The ``tcp_events`` kinds ``tcp_events_rows`` reads (of ``retransmission_storm``,
``zero_window`` and ``causes.none_possible``)."""


def tcp_events_rows(ds: Dataset) -> pa.Table:
    """The view's ``tcp_events`` rows of ``TCP_EVENT_KINDS`` (few: a capture's
    anomalies), as columns f (flow_id), kind, direction, t (``ts`` as ns)."""
    kinds = ", ".join(_q(k) for k in TCP_EVENT_KINDS)
    return ds.small_arrow("SELECT flow_id AS f, kind, direction, epoch_ns(ts) AS t "
                          f"FROM tcp_events WHERE kind IN ({kinds})")


def silent_tcp_detectors(events: pa.Table, s: Settings) -> set[str]:
    """Of ``retransmission_storm`` and ``zero_window``, those that find nothing in
    these rows (``tcp_events_rows``: every row of the kinds they read), so their
    queries (~0.01 s of CPU on the application-layer benchmark) need not run: no
    zero-window event, or no flow with ``storm_per_s`` (> 0) retransmissions in one
    second (a null flow or time: the query runs)."""
    import numpy as np

    out = set()
    kind = events.column("kind")
    if not pc.any(pc.equal(kind, "zero_window")).as_py():
        out.add("zero_window")
    resent = events.filter(pc.is_in(kind, pa.array(RETRANSMISSIONS)))
    if s.storm_per_s <= 0:
        return out
    if resent.num_rows == 0:
        return out | {"retransmission_storm"}
    f, t = resent.column("f"), resent.column("t")
    if f.null_count or t.null_count or pc.min(t).as_py() < 0:
        return out
    fl, sec = f.to_numpy(), t.to_numpy() // 1_000_000_000
    order = np.lexsort((sec, fl))
    fl, sec = fl[order], sec[order]
    starts = np.flatnonzero(np.concatenate([[True], (fl[1:] != fl[:-1])
                                            | (sec[1:] != sec[:-1])]))
    if int(np.diff(np.append(starts, len(fl))).max()) < s.storm_per_s:
        out.add("retransmission_storm")
    return out


def _episodes(ds: Dataset, source: str, keys: list[str], gap_ns: int) -> list[tuple]:
    """Runs of rows of ``source`` (with ``t`` in ns and ``keys``) less than ``gap_ns``
    apart: (keys..., t0, t1, rows, extra aggregates)."""
    k = ", ".join(keys)
    return ds.fetchall(f"""
        WITH e AS (SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY {k} ORDER BY t)
                                       <= {gap_ns} THEN 0 ELSE 1 END AS starts FROM ({source})),
        g AS (SELECT *, sum(starts) OVER (PARTITION BY {k} ORDER BY t ROWS UNBOUNDED PRECEDING)
                 AS episode FROM e)
        SELECT {k}, min(t), max(t), count(*), sum(coalesce(amount, 0)),
               bool_or(coalesce(worse, false))
        FROM g GROUP BY {k}, episode ORDER BY 2 + {len(keys) - 1}""")


def zero_window(ds: Dataset, s: Settings) -> list[dict[str, object]]:
    """Episodes of zero-window events on one connection and direction."""
    gap = int(s.episode_gap_s * 1e9)
    src = ("SELECT capture_id, flow_id, direction, epoch_ns(ts) AS t, NULL::BIGINT AS amount, "
           "NULL::BOOLEAN AS worse FROM tcp_events WHERE kind = 'zero_window'")
    out = []
    for cid, flow, direction, t0, t1, n, _, _ in _episodes(
            ds, src, ["capture_id", "flow_id", "direction"], gap):
        venue = _scalar(ds, "SELECT venue FROM flows WHERE capture_id = ? AND flow_id = ?",
                          [cid, flow])
        who = "we" if direction == "in" else "the exchange"  # the receiver advertised it
        where = (f"capture_id = {_q(cid)} AND flow_id = {int(flow)} AND direction = "
                 f"{_q(direction)} AND kind = 'zero_window' AND epoch_ns(ts) BETWEEN "
                 f"{int(t0)} AND {int(t1)}")
        dur = (int(t1) - int(t0)) / 1e9
        out.append({
            "kind": "zero_window", "severity": "critical" if dur >= 1 else "warning",
            "venue": venue, "capture_id": cid, "flow_id": int(flow), "start_ts": int(t0),
            "end_ts": int(t1), "value": float(n), "threshold": 0.0, "unit": "events",
            "detail": f"{n} zero-window segments ({direction}) over {dur:.3f} s: "
                      f"{'we' if who == 'we' else 'the exchange'} stopped reading",
            "evidence_table": "tcp_events", "evidence_rows": int(n),
            "evidence_sql": f"SELECT * FROM tcp_events WHERE {where} ORDER BY packet",
            "_settle": int(t1) + gap})
    return out


def _bursts_sql(ds: Dataset, s: Settings, w: int, span: int) -> list[tuple]:
    """``microburst``'s episodes by SQL: (capture, flow, direction, venue, t0, t1, peak
    bytes, segments and baseline of the peak interval, segments), by t0."""
    rows = ds.fetchall(f"""
        WITH seg AS (
            SELECT capture_id, flow_id, direction, epoch_ns(ts_sent) AS t,
                   coalesce(end_offset - lag(end_offset) OVER (
                       PARTITION BY capture_id, flow_id, direction ORDER BY end_offset), 0)
                       AS b
            FROM tcp_rtt WHERE coalesce(method, 'ack') = 'ack'),
        bins AS (
            SELECT capture_id, flow_id, direction, t // {w} AS bin, sum(b) AS bytes,
                   count(*) AS n, min(t) AS t0, max(t) AS t1
            FROM seg GROUP BY ALL),
        rated AS (  -- over the baseline, or since the connection began if younger
            SELECT b.*, coalesce(sum(b.bytes) OVER (
                       PARTITION BY b.capture_id, b.flow_id, b.direction ORDER BY b.bin
                       RANGE BETWEEN {span} PRECEDING AND 1 PRECEDING), 0)
                   / greatest(least({span}, b.bin - coalesce(epoch_ns(f.first_ts), 0) // {w}), 1)
                   AS mean_w
            FROM bins b LEFT JOIN flows f USING (capture_id, flow_id)),
        hot AS (
            SELECT * FROM rated
            WHERE bytes >= greatest({int(s.burst_min_bytes)}, {float(s.burst_factor)} * mean_w)),
        starts AS (
            SELECT *, CASE WHEN bin - lag(bin) OVER (PARTITION BY capture_id, flow_id,
                                                     direction ORDER BY bin) <= 1
                           THEN 0 ELSE 1 END AS s
            FROM hot),
        ep AS (
            SELECT *, sum(s) OVER (PARTITION BY capture_id, flow_id, direction ORDER BY bin
                                   ROWS UNBOUNDED PRECEDING) AS episode
            FROM starts)
        SELECT e.capture_id, e.flow_id, e.direction, any_value(f.venue), min(e.t0), max(e.t1),
               max(e.bytes), arg_max(e.n, e.bytes), arg_max(e.mean_w, e.bytes), sum(e.n)
        FROM ep e {_flow_venue_sql()} GROUP BY e.capture_id, e.flow_id, e.direction, e.episode
        ORDER BY 5""")
    return rows


_BIN_BITS = 42
"""``_bursts``' key: (connection and direction) << this | interval number."""


def no_burst_possible(rtt: pa.Table, min_bytes: float) -> bool:
    """Can no interval of these ``tcp_rtt`` rows (columns ``flow_id``, ``direction``,
    ``end_offset``) reach ``min_bytes``? An interval's bytes are ``end_offset`` steps
    of one connection and direction, in ``end_offset`` order, so they are at most that
    direction's ``end_offset`` span: when every span is below ``min_bytes`` (> 0),
    ``microburst`` finds nothing, and the detector need not run (a small capture's
    DuckDB views and queries, ~0.02 s of CPU). Any row it cannot bound: False."""
    if min_bytes <= 0:
        return False
    if rtt.num_rows == 0:
        return True
    spans = rtt.group_by(["flow_id", "direction"], use_threads=False).aggregate(
        [("end_offset", "min"), ("end_offset", "max")])
    hi = pc.max(pc.subtract(spans.column("end_offset_max"), spans.column("end_offset_min")))
    return hi.is_valid and hi.as_py() < min_bytes


def _bursts(ds: Dataset, s: Settings, w: int, span: int) -> list[tuple] | None:
    """``_bursts_sql`` in NumPy (a DuckDB window over every segment costs more than the
    rest of the derive): the segments' bytes per connection and direction in
    ``end_offset`` order, summed per interval, each interval against the trailing sum
    of the ``span`` intervals before it. None (the SQL then) for several captures, or
    where the columns hold what the integer keys cannot (nulls, a direction not
    in/out, huge numbers, a flow listed twice)."""
    caps = [r[0] for r in ds.fetchall("SELECT DISTINCT capture_id FROM tcp_rtt")]
    if not caps:
        return []
    if len(caps) != 1 or caps[0] is None:
        return None
    flows = ds.fetchall("SELECT flow_id, epoch_ns(first_ts), venue FROM flows "
                        "WHERE capture_id = ?", [caps[0]])
    return bursts_of_capture(ds, caps[0], flows, s, w, span)


def bursts_of_capture(ds: Dataset, cap: str, flows: list[tuple], s: Settings, w: int,
                      span: int) -> list[tuple] | None:
    """``_bursts`` of a dataset's ``tcp_rtt`` rows known to be of the one capture ``cap``
    (and to be some), its flows given as (flow_id, ``first_ts`` as ns, venue) (the
    ingest's thread, ``pcapflow.why.FeedPrep``, knows both: no query for them)."""
    sql = ("SELECT flow_id AS f, list_position(['in', 'out'], direction) AS d, "
           "epoch_ns(ts_sent) AS t, end_offset AS o FROM tcp_rtt "
           "WHERE coalesce(method, 'ack') = 'ack'")
    reader = ds.sql(sql).to_arrow_reader(BURST_BATCH)
    try:
        streamed = _bursts_streamed(cap, flows, reader, s, w, span, lambda gs: ds.sql(
            f"{sql} AND ({_groups_sql(gs)})").to_arrow_table())
    finally:
        reader.close()  # (read to its end or not: the connection is free again)
    return streamed


def _groups_sql(gs: Iterable[int]) -> str:
    """``flow_id * 2 + list_position(['in', 'out'], direction) - 1 IN gs`` as plain
    column tests (the scan reads a connection's rows again with them: ~0.01 s less
    over a million rows than the expression)."""
    by_dir: tuple[list[int], list[int]] = ([], [])
    for g in gs:
        by_dir[int(g) & 1].append(int(g) >> 1)
    return " OR ".join(f"(direction = '{d}' AND flow_id IN ({', '.join(map(str, ids))}))"
                       for d, ids in zip(("in", "out"), by_dir, strict=True) if ids) or "false"


BURST_BATCH = 131_072
"""``tcp_rtt`` rows per batch of ``_bursts_streamed``."""

def _bursts_streamed(cap: str, flows: list[tuple], batches: Iterable[pa.RecordBatch],
                     s: Settings, w: int, span: int,
                     rows_of: Callable[[np.ndarray], pa.Table]) -> list[tuple] | None:
    """``_bursts``' episodes of one capture's rows, a batch at a time
    (``pipelines.burst_bins.HotIntervals``: its memory does not grow with the rows,
    only with the hot intervals): ``flows`` (flow_id, first_ts as ns, venue), the
    ``tcp_rtt`` rows of ``method`` 'ack' or null as columns f (flow_id), d (1: in, 2:
    out, null: another direction), t (``ts_sent`` as ns), o (``end_offset``). A
    connection and direction (``g = f << 1 | d - 1``) whose rows go back in offset or
    time is read again whole (``rows_of``: its rows, in file order) and its intervals
    found by ``_hot_whole``."""
    from .pipelines import burst_bins

    info: dict[int, tuple[int, object]] = {
        int(f): (int(t or 0), v) for f, t, v in flows if f is not None}
    if len(info) != len(flows):
        return None
    bad_first = any(v[0] < 0 for v in info.values())  # (None, once there are rows)
    ids = _DenseIds(info, w)
    hot = burst_bins.HotIntervals(ids.first_bin, w, span, s.burst_min_bytes, s.burst_factor)
    t_lo = t_hi = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        if bad_first or any(c.null_count for c in batch.columns):
            return None
        f, d, t, o = (batch.column(k).to_numpy().astype(np.int64, copy=False)
                      for k in ("f", "d", "t", "o"))
        lo, hi = int(t.min()), int(t.max())
        if f.min() < 0 or f.max() >= 1 << 61 or lo < 0:
            return None
        t_lo = lo if t_lo is None else min(t_lo, lo)
        t_hi = hi if t_hi is None else max(t_hi, hi)
        f = ids.dense(f)
        if len(ids.ids) >= 1 << 20:  # (``_hot_whole``'s keys hold 2**21 dense ``g``s)
            return None
        hot.first_bin = ids.first_bin
        hot.add(f, d, t, o)
        del f, d, t, o, batch
    if t_lo is None or t_hi is None:
        return []
    if t_hi // w - t_lo // w >= 1 << _BIN_BITS:
        return None
    found = hot.finish()
    late = hot.out_of_order()
    if len(late):  # (their rows all at once)
        seg = rows_of(ids.real_g(late))
        seg = seg.set_column(seg.schema.get_field_index("f"), "f",
                             pa.array(ids.dense(seg.column("f").to_numpy().astype(
                                 np.int64, copy=False))))
        whole = _hot_whole(seg, ids.first_bin, s, w, span)
        found = tuple(np.concatenate([a, b]) for a, b in zip(found, whole, strict=True))
    found = (ids.real_g(found[0]), *found[1:])
    order = np.lexsort((found[1], found[0]))
    found = tuple(a[order] for a in found)
    g, b, nbytes, count, t0, t1, mean_w = found
    if len(g) == 0:
        return []
    # episodes: runs of hot intervals of one connection and direction, each the next
    new = np.ones(len(g), np.bool_)
    new[1:] = (g[1:] != g[:-1]) | (b[1:] - b[:-1] > 1)
    ep = np.flatnonzero(new)
    out = []
    for a, z in zip(ep, np.append(ep[1:], len(g)), strict=True):
        peak = a + int(np.argmax(nbytes[a:z]))  # (the first of equal peaks)
        flow = int(g[a]) >> 1
        out.append((cap, flow, ("in", "out")[int(g[a]) & 1],
                    info.get(flow, (None, None))[1], int(t0[a:z].min()), int(t1[a:z].max()),
                    int(nbytes[peak]), int(count[peak]), float(mean_w[peak]),
                    int(count[a:z].sum())))
    out.sort(key=lambda r: (r[4], r[1], r[2]))
    return out


class _DenseIds:
    """The flow ids of ``_bursts_streamed``'s rows as dense indexes 0, 1, ... in the
    order met (``HotIntervals`` keeps its state per ``g = 2 * flow + direction``, an
    array as long as the largest ``g``): a resumed command of a rotation reads a few
    thousand flows whose ids go up with the set (~400 new ones a file of 2,000
    packets), and its state, ~192-384 bytes per id below the largest, was the largest
    block of the command's peak that grew with the set (58.7 MB at file 800: session
    20, heap19j). ``first_bin[i]``: the interval of dense flow ``i``'s first packet
    (-1: not among ``flows``)."""

    __slots__ = ("_fb", "_fid", "_pos", "_srt", "first_bin", "ids")

    def __init__(self, info: dict[int, tuple[int, object]], w: int) -> None:
        fid = np.fromiter(info, np.int64, len(info))
        fb = np.fromiter((v[0] for v in info.values()), np.int64, len(info)) // w
        order = np.argsort(fid, kind="stable")
        self._fid, self._fb = fid[order], fb[order]
        self.ids = np.empty(0, np.int64)  # (real ids, in dense order)
        self._srt = self._pos = np.empty(0, np.int64)
        self.first_bin = np.empty(0, np.int64)

    def dense(self, f: np.ndarray) -> np.ndarray:
        """``f``'s dense indexes (new ids added)."""
        lo = int(f.min()) if len(f) else 0
        span = int(f.max()) - lo + 1 if len(f) else 0
        small = 0 < span <= max(len(f), 1 << 12)  # (ids within a small range: a table)
        # (np.unique sorts every row: ~1.5 ms a batch of 131,072)
        u = np.flatnonzero(np.bincount(f - lo, minlength=span)) + lo if small else np.unique(f)
        self._add(u)
        if small:
            table = self._pos[np.searchsorted(self._srt, u)]
            lut = np.zeros(span, np.int64)
            lut[u - lo] = table
            return lut[f - lo]
        return self._pos[np.searchsorted(self._srt, f)]

    def _add(self, u: np.ndarray) -> None:
        """The new ids of ``u`` (unique, ascending) added."""
        if len(self._srt):
            i = np.minimum(np.searchsorted(self._srt, u), len(self._srt) - 1)
            u = u[self._srt[i] != u]
        if len(u):
            j = np.minimum(np.searchsorted(self._fid, u), max(len(self._fid) - 1, 0))
            fb = (np.where(self._fid[j] == u, self._fb[j], -1) if len(self._fid)
                  else np.full(len(u), -1, np.int64))
            self.ids = np.concatenate([self.ids, u])
            self.first_bin = np.concatenate([self.first_bin, fb])
            self._pos = np.argsort(self.ids, kind="stable")
            self._srt = self.ids[self._pos]

    def real_g(self, g: np.ndarray) -> np.ndarray:
        """Dense ``g``s (``2 * dense flow + direction``) as the rows' own."""
        g = np.asarray(g, np.int64)
        return 2 * self.ids[g >> 1] + (g & 1)


def _hot_whole(seg: pa.Table, first_bin: np.ndarray, s: Settings, w: int, span: int
               ) -> tuple[np.ndarray, ...]:
    """The hot intervals of ``seg``'s rows, every row at once (checked by the caller: no
    nulls, ``flow_id`` < 2**20, times >= 0) as ``burst_bins.HotIntervals.finish`` gives
    them: (g, interval, bytes, segments, first t, last t, mean over the baseline), by g
    and interval; ``first_bin``: as ``HotIntervals`` takes it."""
    from .pipelines import burst_bins

    f, d, t, o = (seg.column(k).to_numpy().astype(np.int64, copy=False)
                  for k in ("f", "d", "t", "o"))
    base = int(t.min()) // w
    k, nbytes, count, t0, t1 = burst_bins.intervals(f, d, t, o, w, base, _BIN_BITS)
    kg, kb = k >> _BIN_BITS, k & ((1 << _BIN_BITS) - 1)
    csum = np.concatenate([[0], np.cumsum(nbytes)])
    lo = np.searchsorted(k, np.maximum(k - span, kg << _BIN_BITS), "left")
    trailing = csum[:-1] - csum[lo]
    fl = kg >> 1
    if len(first_bin):
        fb = first_bin[np.minimum(fl, len(first_bin) - 1)]
        start = np.where((fl < len(first_bin)) & (fb >= 0), fb, 0)
    else:
        start = np.zeros_like(fl)
    b = kb + base
    mean_w = trailing / np.maximum(np.minimum(span, b - start), 1)
    hot = nbytes >= np.maximum(float(s.burst_min_bytes), float(s.burst_factor) * mean_w)
    return (kg[hot], b[hot], nbytes[hot], count[hot], t0[hot], t1[hot], mean_w[hot])


def microburst(ds: Dataset, s: Settings,
               bursts: list[tuple] | None = None) -> list[dict[str, object]]:
    """Bytes per ``burst_window_us`` interval on one connection and direction above both
    ``burst_min_bytes`` and ``burst_factor`` times that direction's mean rate over the
    ``burst_baseline_s`` before the interval (or since the connection began, when it is
    younger: its ``flows.first_ts``) (tcp_rtt: the first transmission of each data
    segment). Online: an interval is judged by what came before it only. ``bursts``:
    ``_bursts``' rows when the ingest found them already (``pcapflow.why.FeedPrep``)."""
    w = int(s.burst_window_us * 1000)
    span = max(int(s.burst_baseline_s * 1e9) // w, 1)  # the baseline, in intervals
    rows = bursts if bursts is not None else _bursts(ds, s, w, span)
    if rows is None:
        rows = _bursts_sql(ds, s, w, span)
    out = []
    # an episode is a run of adjacent hot intervals, so the segments its evidence SQL
    # selects (t0..t1) are those of its intervals: their count is the sum of theirs
    for cid, flow, direction, venue, t0, t1, peak, n, mean_w, segments in rows:
        where = (f"capture_id = {_q(cid)} AND flow_id = {int(flow)} AND direction = "
                 f"{_q(direction)} AND epoch_ns(ts_sent) BETWEEN {int(t0)} AND {int(t1)} "
                 "AND coalesce(method, 'ack') = 'ack'")
        who = "we sent" if direction == "out" else "the exchange sent"
        out.append({
            "kind": "microburst",
            "severity": "warning" if peak >= 4 * s.burst_factor * mean_w else "info",
            "venue": venue, "capture_id": cid, "flow_id": int(flow), "stream": direction,
            "start_ts": int(t0), "end_ts": int(t1), "value": float(peak),
            "threshold": float(max(s.burst_min_bytes, s.burst_factor * mean_w)),
            "unit": f"bytes per {s.burst_window_us} us",
            "detail": f"{who} {int(peak):,} bytes in {int(n)} segments within "
                      f"{s.burst_window_us:,} µs on flow {flow} ({peak / max(mean_w, 1):,.0f}x "
                      f"its mean rate over the {s.burst_baseline_s:g} s before)",
            "evidence_table": "tcp_rtt",
            "evidence_rows": int(segments),
            "evidence_sql": f"SELECT * FROM tcp_rtt WHERE {where} ORDER BY ts_sent",
            "_settle": (int(t1) // w + 2) * w})
    return out


def clock_step(ds: Dataset, s: Settings) -> list[dict[str, object]]:
    """The capture clock set back or forward (``anomalies`` ``clock_step_back`` /
    ``clock_step_forward``, found by ``parsers.capture.clock``); ``unit`` says which
    way (``ms back``, ``ms forward``)."""
    rows = ds.fetchall("SELECT capture_id, epoch_ns(ts), detail, code, "
                       "coalesce(nullif(regexp_extract(detail, 'set forward by ~([0-9,.]+) ms', "
                       "1), ''), regexp_extract(detail, 'stamped ([0-9,.]+) ms', 1)) "
                       "FROM anomalies WHERE code IN ('clock_step_back', 'clock_step_forward') "
                       "ORDER BY ts")
    out = []
    for cid, t, detail, code, ms in rows:
        size = float(str(ms).replace(",", "")) if ms else 0.0
        way = "back" if code == "clock_step_back" else "forward"
        where = (f"capture_id = {_q(cid)} AND code = {_q(code)} AND epoch_ns(ts) = "
                 f"{int(t)}")
        out.append({
            "kind": "clock_step", "severity": "critical" if size >= 1000 else "warning",
            "capture_id": cid, "start_ts": int(t), "end_ts": int(t), "value": size,
            "threshold": 10.0, "unit": f"ms {way}", "detail": detail,
            "evidence_table": "anomalies", "evidence_rows": 1,
            "evidence_sql": f"SELECT * FROM anomalies WHERE {where}", "_settle": int(t)})
    return out


# -- market data --------------------------------------------------------------------------

def feed_gap(ds: Dataset, s: Settings,
             gaps: pa.Table | None = None) -> list[dict[str, object]]:
    """Breaks in market-data numbering (``pcapflow.feed``), grouped into episodes;
    ``gaps``: the ``feed.gaps_table`` rows when already at hand."""
    if gaps is None:
        gaps = feed.gaps_table(ds)
    if gaps.num_rows == 0:
        return []
    eps = _gap_episodes(gaps, int(s.episode_gap_s * 1e9))
    out = []
    for cid, venue, flow, rule, stream, t0, t1, n, missing, backwards in eps:
        where = (f"capture_id = {_q(cid)} AND flow_id = {int(flow)} AND rule = {_q(rule)} AND "
                 f"stream = {_q(stream)} AND epoch_ns(ts) BETWEEN {int(t0)} AND {int(t1)}")
        out.append({
            "kind": "feed_gap", "severity": "critical" if backwards else "warning",
            "venue": venue, "capture_id": cid, "flow_id": int(flow), "stream": stream,
            "start_ts": int(t0), "end_ts": int(t1), "value": float(n), "threshold": 0.0,
            "unit": "breaks",
            "detail": f"{n} break(s) in {rule} numbering"
                      + (f", {int(missing)} ids missing" if missing else "")
                      + (", numbering went backwards" if backwards else ""),
            "evidence_table": "feed_gaps", "evidence_rows": int(n),
            "evidence_sql": f"SELECT * FROM feed_gaps WHERE {where} ORDER BY ts",
            "_settle": int(t1) + int(s.episode_gap_s * 1e9)})
    return out


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Integer codes equal where the values are equal (nulls too)."""
    if pa.types.is_integer(column.type):
        return pc.fill_null(column, -(2**62)).to_numpy().astype(np.int64)
    enc = pc.dictionary_encode(column).combine_chunks()
    return pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _runs(keys: pa.Table, t: np.ndarray, gap_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of rows with equal ``keys`` whose times ``t`` are at most ``gap_ns`` apart,
    as ``_episodes`` finds them in SQL: (order, episode number per row in that order)."""
    codes = [_codes(keys.column(k)) for k in keys.column_names]
    order = np.lexsort((t, *reversed(codes)))
    ts = t[order]
    same = np.zeros(len(ts), np.bool_)
    if len(ts) > 1:
        same[1:] = ts[1:] - ts[:-1] <= gap_ns
        for c in codes:
            same[1:] &= c[order][1:] == c[order][:-1]
    return order, np.cumsum(~same) - 1


def _gap_episodes(gaps: pa.Table, gap_ns: int) -> list[tuple]:
    """``_episodes`` of ``feed_gaps`` rows per stream, in NumPy (the ingest's
    ``feed_gaps`` can be every message of a feed): (keys..., t0, t1, breaks, ids
    missing, went backwards), by t0."""
    keys = ["capture_id", "venue", "flow_id", "rule", "stream"]
    t = gaps.column("ts").cast(pa.int64()).to_numpy()
    order, episode = _runs(gaps.select(keys), t, gap_ns)
    if len(order) == 0:
        return []
    bounds = np.flatnonzero(np.diff(episode)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    ts = t[order]
    missing = pc.fill_null(gaps.column("missing"), 0).to_numpy()[order]
    back = np.asarray(gaps.column("kind").to_pylist(), dtype=object)[order] == "backwards"
    cols = [gaps.column(k).take(pa.array(order[starts])).to_pylist() for k in keys]
    out = [(*(c[i] for c in cols), int(ts[a:b].min()), int(ts[a:b].max()), int(b - a),
            int(missing[a:b].sum()), bool(back[a:b].any()))
           for i, (a, b) in enumerate(zip(starts, ends, strict=True))]
    out.sort(key=lambda r: r[5])
    return out


def _silences_sql(ds: Dataset, messages: str | None, stale: int) -> list[tuple]:
    """``stale_feed``'s silences by SQL: (capture, venue, flow, rule, stream, t0, t1,
    at end, offset before, offset after), by t0."""
    source = (f"SELECT * FROM {messages} WHERE rule <> 'fix_seq'" if messages else
              feed.messages_sql(feed.present(ds), fix=False))
    rows = ds.fetchall(f"""
        WITH m AS ({source}),
        g AS (SELECT capture_id, venue, flow_id, rule, stream, ts, stream_offset,
                     lead(ts) OVER w AS next_ts, lead(stream_offset) OVER w AS next_offset
              FROM m WINDOW w AS (PARTITION BY capture_id, flow_id, rule, stream
                                  ORDER BY ts, stream_offset))
        SELECT g.capture_id, g.venue, g.flow_id, g.rule, g.stream, g.ts,
               coalesce(g.next_ts, epoch_ns(f.last_ts)) AS until, g.next_ts IS NULL AS at_end,
               g.stream_offset, g.next_offset
        FROM g LEFT JOIN flows f USING (capture_id, flow_id)
        WHERE coalesce(g.next_ts, epoch_ns(f.last_ts)) - g.ts > {stale}
        ORDER BY g.ts""")
    return rows


def _silences(ds: Dataset, messages: pa.Table, stale: int) -> list[tuple] | None:
    """``_silences_sql`` in NumPy over ``feed.message_rows``' table: per stream, its
    messages in (``ts``, ``stream_offset``) order, each to the next one (the last to
    its connection's ``last_ts``). None when a flow is listed twice (the SQL's join)."""
    flows = ds.sql("SELECT capture_id, flow_id, epoch_ns(last_ts) AS last_ts FROM flows"
                   ).to_arrow_table()
    rule = messages.column("rule").combine_chunks()
    if pa.types.is_dictionary(rule.type):
        names = rule.dictionary.to_pylist()
        codes = pc.fill_null(rule.indices, -1).to_numpy(zero_copy_only=False)
        fix = names.index("fix_seq") if "fix_seq" in names else -2
        keep = (codes >= 0) & (codes != fix)
        m = messages if keep.all() else messages.filter(pa.array(keep))
    else:
        m = messages.filter(pc.fill_null(pc.not_equal(rule, "fix_seq"), False))
    n = m.num_rows
    if n == 0:
        return []
    cap_names = flows.column("capture_id").to_pylist()
    flow_ids = flows.column("flow_id").to_pylist()
    last_ts = flows.column("last_ts").to_pylist()
    ends: dict[tuple[object, object], object] = {}
    for c, f, t in zip(cap_names, flow_ids, last_ts, strict=True):
        if (c, f) in ends:
            return None
        ends[(c, f)] = t
    keys = [feed._codes(m.column(k)) for k in ("capture_id", "flow_id", "rule", "stream")]
    ts, off = feed._ints(m.column("ts")), feed._ints(m.column("stream_offset"))
    ts_ok = m.column("ts").is_valid().to_numpy(zero_copy_only=False)
    if not ts_ok.all():
        return None  # (no ingest writes a message without its time)
    sil = feed.silences(keys, ts, off, stale)
    order, last, t_o, off_o, nxt, inside = (sil.order, sil.last, sil.ts, sil.offset,
                                            sil.next_ts, sil.inside)
    out: list[tuple] = []
    cols = {k: m.column(k) for k in ("capture_id", "venue", "flow_id", "rule", "stream")}

    def keys_at(at: np.ndarray) -> list[list[object]]:
        take = pa.array(order[at])
        return [cols[k].take(take).to_pylist() for k in cols]

    for i, (cid, venue, flow, rule, stream) in zip(inside, zip(*keys_at(inside), strict=True),
                                                   strict=False):
        out.append((cid, venue, flow, rule, stream, int(t_o[i]), int(nxt[i]), False,
                    int(off_o[i]), int(off_o[i + 1])))
    at_end = np.flatnonzero(last)
    for i, (cid, venue, flow, rule, stream) in zip(at_end, zip(*keys_at(at_end), strict=True),
                                                   strict=False):
        until = ends.get((cid, flow))
        if isinstance(until, int) and until - int(t_o[i]) > stale:
            out.append((cid, venue, flow, rule, stream, int(t_o[i]), int(until), True,
                        int(off_o[i]), None))
    # ORDER BY ts (then the stream's keys, for one order among equal times)
    out.sort(key=lambda r: (r[5], str(r[0]), r[2], str(r[3]), str(r[4]), r[8]))
    return out


def stale_feed(ds: Dataset, s: Settings,
               messages: str | pa.Table | None = None,
               silences: list[tuple] | None = None) -> list[dict[str, object]]:
    """Market-data streams silent for more than ``stale_after_s``; ``messages``:
    ``feed.message_rows``' table (then in NumPy, ``_silences``) or the name of a table
    of ``feed.messages_sql``'s rows, when at hand; ``silences``: ``_silences``' rows
    when the ingest found them already (``feed.silences_for``). Evidence: the stream's
    messages on either side of the silence (the last one alone when the silence runs
    to its connection's end)."""
    stale = int(s.stale_after_s * 1e9)
    rows = silences
    if rows is None and isinstance(messages, pa.Table):
        rows = _silences(ds, messages, stale)
    if rows is None:
        if isinstance(messages, pa.Table):
            ds.con.register("_stale_msg", messages)
            messages = "_stale_msg"
        rows = _silences_sql(ds, messages, stale)
        if messages == "_stale_msg":
            ds.con.unregister("_stale_msg")
    out = []
    for cid, venue, flow, rule, stream, t0, t1, at_end, o0, o1 in rows:
        silent = (int(t1) - int(t0)) / 1e9
        offsets = [int(o) for o in (o0, o1) if o is not None]
        where = (f"capture_id = {_q(cid)} AND flow_id = {int(flow)} AND direction = 'in' AND "
                 f"stream_offset IN ({', '.join(map(str, offsets))})")
        out.append({
            "kind": "stale_feed", "severity": "critical" if silent >= 4 * s.stale_after_s
            else "warning", "venue": venue, "capture_id": cid, "flow_id": int(flow),
            "stream": stream, "start_ts": int(t0), "end_ts": int(t1), "value": silent,
            "threshold": s.stale_after_s, "unit": "s silent",
            "detail": f"{stream} ({rule}) silent for {silent:,.1f} s"
                      + (" until its connection ended" if at_end else ""),
            "evidence_table": "ws_messages", "evidence_rows": len(offsets),
            "evidence_sql": f"SELECT * FROM ws_messages WHERE {where} ORDER BY ts_last",
            # to its connection's end: until that connection is over (``why_carry``)
            "_settle": int(t1), "_flow_end": bool(at_end)})
    return out


DETECTORS: dict[str, Callable[[Dataset, Settings], list[dict[str, object]]]] = {
    "latency_shift": latency_shift,
    "p99_high": p99_high,
    "retransmission_storm": retransmission_storm,
    "zero_window": zero_window,
    "microburst": microburst,
    "clock_step": clock_step,
    "feed_gap": feed_gap,
    "stale_feed": stale_feed,
}
"""Every detector, by the ``kind`` of its alerts."""


def find_rows(ds: Dataset, settings: Settings | None = None,
              kinds: tuple[str, ...] | None = None, gaps: pa.Table | None = None,
              messages: str | pa.Table | None = None, cusum: CusumCarry | None = None,
              orders_since: int | None = None,
              silences: list[tuple] | None = None,
              bursts: list[tuple] | None = None,
              latency: pa.Table | None = None,
              storms: list[tuple] | None = None,
              p99: tuple[int, list[dict[str, object]]] | None = None
              ) -> list[dict[str, object]]:
    """``find``'s rows as dicts, each with ``_settle``: the time from which no later
    row of input can change it (``pcapflow.why_carry``); ``cusum``, ``orders_since``:
    a rotation's later command (latency alerts from that order time on); ``silences``,
    ``bursts``: see ``stale_feed``, ``microburst``; ``latency``: the view's ``latency``
    rows (without ``capture_id``), of which each latency detector reads those from its
    own start on (``_latency_from``); ``storms``: ``retransmission_storm``'s query rows
    (``storm_rows``); ``p99``: ``p99_high``'s ``carried``."""
    s = settings or Settings()
    special = {"feed_gap": lambda: feed_gap(ds, s, gaps),
               "stale_feed": lambda: stale_feed(ds, s, messages, silences),
               "latency_shift": lambda: latency_shift(ds, s, cusum, latency),
               "p99_high": lambda: p99_high(ds, s, orders_since, latency, p99)}
    if bursts is not None:
        special["microburst"] = lambda: microburst(ds, s, bursts)
    if storms is not None:
        special["retransmission_storm"] = lambda: retransmission_storm(ds, s, storms)
    return [r for k in _kinds(kinds) for r in (
        special[k]() if k in special else DETECTORS[k](ds, s))]


def table_of(rows: list[dict[str, object]]) -> pa.Table:
    """Alert rows (dicts) as an ``ALERTS`` table, oldest first."""
    rows = sorted(rows, key=lambda r: (r["start_ts"], r["kind"]))
    return _table(rows)


def find(ds: Dataset, settings: Settings | None = None,
         kinds: tuple[str, ...] | None = None, gaps: pa.Table | None = None,
         messages: str | pa.Table | None = None) -> pa.Table:
    """The ``kinds`` detectors' alerts over ``ds`` as an ``ALERTS`` table (what the
    ingest stores; no pandas). ``gaps``: the ``feed.gaps_table`` rows when at hand;
    ``messages``: ``feed.message_rows``' table (or the name of a table of its rows)."""
    return table_of(find_rows(ds, settings, kinds, gaps, messages))


def alerts(ds: Dataset, settings: Settings | None = None,
           kinds: tuple[str, ...] | None = None, *, exchange: str | list[str] | None = None,
           since: object = None, until: object = None) -> pd.DataFrame:
    """Every alert of the dataset (``ALERTS`` columns), oldest first, found now by the
    detectors over all its captures (``stored`` reads those the ingest found).

    ``exchange`` keeps the alerts of those venues (and those tied to no venue);
    ``since``/``until`` keep the alerts whose window overlaps [since, until). The
    detectors still read everything before it: a change point needs its history.
    """
    return _keep(ds, _frame(find(ds, settings, kinds)), exchange, since, until)


def stored(ds: Dataset, kinds: tuple[str, ...] | None = None, *,
           exchange: str | list[str] | None = None, since: object = None,
           until: object = None) -> pd.DataFrame:
    """The ``alerts`` table: what each capture's ingest found with the default
    ``Settings`` (filters as ``alerts``)."""
    chosen = _kinds(kinds)
    table = ds.sql("SELECT * FROM alerts WHERE list_contains(?, kind) ORDER BY start_ts, kind, "
                   "capture_id, flow_id", params=[list(chosen)]).to_arrow_table()
    return _keep(ds, _frame(table), exchange, since, until)


def _kinds(kinds: tuple[str, ...] | None) -> tuple[str, ...]:
    from .parsers.errors import ConfigError

    chosen = kinds or tuple(DETECTORS)
    unknown = [k for k in chosen if k not in DETECTORS]
    if unknown:
        raise ConfigError(f"unknown alert kind {unknown[0]!r}; kinds: {', '.join(DETECTORS)}",
                          code="bad_alert_kind")
    return chosen


def _keep(ds: Dataset, df: pd.DataFrame, exchange: str | list[str] | None, since: object,
          until: object) -> pd.DataFrame:
    """The alerts of ``exchange`` (or of no venue) whose window overlaps [since, until)."""
    from .analysis import make_filter, utc

    flt = make_filter(ds, exchange=exchange, since=since, until=until)
    if len(df) and flt.exchange is not None:
        df = df[df.venue.isin(flt.exchange) | df.venue.isna()]
    if len(df) and flt.since is not None:
        df = df[df.end_ts >= flt.since]
    if len(df) and flt.until is not None:
        df = df[df.start_ts < flt.until]
    if len(df):
        df = df.sort_values(["start_ts", "kind"], kind="stable").reset_index(drop=True)
    return utc(df)
