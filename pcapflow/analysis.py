"""The analyst's questions, as functions over a ``Dataset``.

How this works: every function reads the ``latency`` and ``unmatched`` views
through DuckDB with the same filter (exchange, time range, leg, kind, capture),
so the CLI report, the HTML report and a notebook see the same rows.
``percentiles`` aggregates in SQL; ``compare`` resamples in NumPy.

Quantile definition (one for the whole package): linear interpolation between
the closest ranks, Hyndman & Fan type 7. For n sorted values x[0..n-1] the
q-quantile is x[⌊h⌋] + (h - ⌊h⌋)·(x[⌊h⌋+1] - x[⌊h⌋]) with h = (n-1)·q. This is
DuckDB's ``quantile_cont``, NumPy's ``np.quantile`` default (``method="linear"``),
pandas' ``Series.quantile`` default and Excel's PERCENTILE.INC. With few rows the
upper quantiles interpolate towards the maximum (with 100 rows p99.9 lies
between the two largest values).

Durations are int64 nanoseconds in the tables; the percentile tables here give
microseconds (``*_us`` float columns), the unit traders quote.

    >>> import pcapflow
    >>> ds = pcapflow.open("pcapflow_data")                      # doctest: +SKIP
    >>> percentiles(ds, by="endpoint", exchange="binance")       # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Union, cast

from .dataset import FIX_ENDPOINTS
from .parsers.errors import ConfigError

if TYPE_CHECKING:  # NumPy and pandas load where used: `pcapflow report` prints without them
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure

    from .dataset import Dataset

QUANTILES: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
"""The quantiles every percentile table reports (p50, p90, p99, p99.9)."""

QUANTILE_METHOD: Final = "linear"
"""NumPy ``method=`` equal to DuckDB's ``quantile_cont`` (see the module docstring)."""

# Group names accepted by ``by=``: name -> (SQL over `latency`, SQL over `unmatched`).
# Unmatched orders have no status (no reply came) and belong to the `ack` leg.
_GROUPS: dict[str, tuple[str, str]] = {
    "venue": ("venue", "venue"),
    "endpoint": ("endpoint_name(protocol, endpoint) AS endpoint",
                 "endpoint_name(protocol, endpoint) AS endpoint"),
    "kind": ("kind", "kind"),
    "capture": ("capture_id", "capture_id"),
    "flow": ("capture_id, flow_id", "capture_id, flow_id"),
    "status": ("status", "CAST(NULL AS VARCHAR) AS status"),
    "leg": ("leg", "'ack' AS leg"),
    "minute": ("{bucket_l} AS minute", "{bucket_u} AS minute"),
}
GROUPS: tuple[str, ...] = tuple(_GROUPS)

# Which measured duration ``metric=`` selects (all int64 ns columns of `latency`).
METRICS: dict[str, str] = {
    "latency": "latency_ns",
    "network_rtt": "network_rtt_ns",
    "network": "network_est_ns",
    "exchange": "exchange_ns",
}

NETWORK_METHODS: tuple[str, ...] = ("pure_ack", "nearest_rtt_sample", "tsecr", "handshake",
                                     "none")
"""``latency.network_method`` values, most direct first (pipelines/sql/decompose.sql)."""

TimeLike = Union[str, dt.datetime, "pd.Timestamp", "np.datetime64"]

BY_NAME = "* REPLACE (endpoint_name(protocol, endpoint) AS endpoint)"
"""Every column, FIX endpoints by name (``NewOrderSingle``, not ``D``): what the Python
API and the reports show; the stored tables keep the MsgType (``endpoint_name`` in SQL)."""
UNKNOWN_VENUE = ("unknown", "(unknown)", "(unknown venue)")
"""What ``exchange=`` accepts for the rows no venue rule named (venue NULL)."""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def to_utc(value: TimeLike) -> pd.Timestamp:
    """A time bound as a tz-aware UTC Timestamp; naive values and strings are taken as UTC."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"not a time: {value!r} (use ISO 8601, e.g. 2026-11-23T20:30:00Z)",
                          code="bad_time") from err
    if ts is pd.NaT:
        raise ConfigError(f"not a time: {value!r}", code="bad_time")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def venues(ds: Dataset) -> list[str]:
    """Venues present in the dataset (in `latency`, `unmatched` or `flows`), sorted."""
    rows = ds.fetchall(
        "SELECT DISTINCT venue FROM (SELECT venue FROM latency UNION ALL "
        "SELECT venue FROM unmatched UNION ALL SELECT venue FROM flows) "
        "WHERE venue IS NOT NULL ORDER BY venue")
    return [cast(str, r[0]) for r in rows]


def resolve_exchange(ds: Dataset, exchange: str | Sequence[str | None] | None
                     ) -> list[str | None] | None:
    """Canonical venue names for ``exchange`` (case-insensitive; a list or ``a,b``).

    Raises ``ConfigError(code="unknown_venue")`` naming the venues present when
    one of the names is not among them.
    """
    if exchange is None:
        return None
    wanted = exchange.split(",") if isinstance(exchange, str) else list(exchange)
    present = venues(ds)
    by_lower = {v.lower(): v for v in present}
    out: list[str | None] = []
    unknown: list[str] = []
    for name in ((w or "unknown").strip() for w in wanted if w is None or w.strip()):
        if name.lower() in UNKNOWN_VENUE:
            out.append(None)
        else:
            (out if name.lower() in by_lower else unknown).append(
                by_lower.get(name.lower(), name))
    if unknown or not out:
        if present:
            have = ", ".join(present)
        elif ds.scalar("SELECT count(*) FROM flows"):
            have = ("none named: every connection is 'unknown' (--exchange unknown; name "
                    "venues by address with pcapflow ingest --venues MAP)")
        else:
            have = "none (ingest captures first)"
        raise ConfigError(f"unknown exchange {', '.join(unknown) or exchange!r}; "
                          f"venues present: {have}", code="unknown_venue")
    return out


def resolve_capture(ds: Dataset, capture: str) -> list[str]:
    """capture_ids a ``capture=`` argument selects: a capture_id prefix, the path as given
    to ingest, or its file name. ``ConfigError(code="unknown_capture")`` lists the files."""
    rows = cast(list[tuple[str, str]],
                ds.fetchall("SELECT capture_id, path FROM captures ORDER BY path"))
    hits = list(dict.fromkeys(  # a capture set has a row per file: its id once
        cid for cid, path in rows
        if cid.startswith(capture) or path == capture or path.rsplit("/", 1)[-1] == capture))
    if not hits:
        have = ", ".join(p.rsplit("/", 1)[-1] for _, p in rows) or "none"
        raise ConfigError(f"no capture {capture!r} in the dataset; captures: {have}",
                          code="unknown_capture")
    return hits


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Row selection shared by every query (all fields optional)."""

    exchange: list[str | None] | None = None
    """Venues; None in the list selects the rows no venue rule named."""
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    leg: str | None = "ack"
    kind: str | None = None
    capture: str | None = None
    endpoint: str | None = None
    status: str | None = None

    def where(self, ts_col: str, table: str) -> tuple[str, list[object]]:
        """SQL condition and parameters for ``latency`` (table="latency") or ``unmatched``."""
        cond: list[str] = ["TRUE"]
        params: list[object] = []
        if self.exchange is not None:
            named = [v for v in self.exchange if v is not None]
            either = [f"venue IN ({', '.join('?' for _ in named)})"] if named else []
            if len(named) < len(self.exchange):  # None: the rows with no venue
                either.append("venue IS NULL")
            cond.append("(" + " OR ".join(either) + ")")
            params += named
        # Compared as int64 ns since the epoch: exact, whatever the column's precision.
        if self.since is not None:
            cond.append(f"epoch_ns({ts_col}) >= ?")
            params.append(int(self.since.value))
        if self.until is not None:
            cond.append(f"epoch_ns({ts_col}) < ?")
            params.append(int(self.until.value))
        if self.kind is not None:
            cond.append("kind = ?")
            params.append(self.kind)
        if self.endpoint is not None:
            codes = [c for c, name in FIX_ENDPOINTS.items() if name == self.endpoint]
            cond.append(f"endpoint IN ({', '.join('?' for _ in [self.endpoint, *codes])})")
            params += [self.endpoint, *codes]
        if self.status is not None:
            if table == "latency":
                cond.append("status = ?")
                params.append(self.status)
            else:  # an order never answered has no status
                cond.append("FALSE")
        if self.capture is not None:
            cond.append("capture_id IN (SELECT capture_id FROM captures WHERE capture_id "
                        "LIKE ? || '%' OR path = ? OR regexp_extract(path, '[^/]*$') = ?)")
            params += [self.capture] * 3
        if self.leg is not None:
            if table == "latency":
                cond.append("leg = ?")
                params.append(self.leg)
            elif self.leg != "ack":  # unanswered orders only exist for the ack leg
                cond.append("FALSE")
        if table == "unmatched":
            cond.append("what = 'order'")
        return " AND ".join(cond), params


def why_empty(ds: Dataset, flt: Filter) -> str:
    """Why ``flt`` selects no matched order: which filter emptied the rows, or what the
    dataset lacks (no orders at all; TLS it could not decrypt). One line, a hint in it."""
    total = ds.fetchall("SELECT count(*) FROM latency")[0][0]
    if total == 0:
        return _why_no_orders(ds)
    steps: list[tuple[str, Filter]] = []
    cur = Filter(leg=None)
    for name, change in (
        ("--exchange " + ",".join(v or "unknown" for v in flt.exchange or []),
         {"exchange": flt.exchange}),
        (f"--capture {flt.capture}", {"capture": flt.capture}),
        (f"--leg {flt.leg}", {"leg": flt.leg}),
        ("kind " + str(flt.kind), {"kind": flt.kind}),
        ("endpoint " + str(flt.endpoint), {"endpoint": flt.endpoint}),
        ("status " + str(flt.status), {"status": flt.status}),
        ("--since/--until", {"since": flt.since, "until": flt.until}),
    ):
        if all(v is None for v in change.values()):
            continue
        cur = Filter(**{**{f: getattr(cur, f) for f in cur.__slots__}, **change})
        steps.append((name, cur))
    before = total
    for name, f in steps:
        cond, params = f.where("order_ts", "latency")
        n = ds.fetchall(f"SELECT count(*) FROM latency WHERE {cond}", params)[0][0]
        if n == 0:
            hint = ""
            if name.startswith("--leg engine"):
                hint = (" (the engine leg needs the private stream's order events: a "
                        "WebSocket user-data stream or FIX execution reports in the capture)")
            elif name == "--since/--until":
                lo, hi = ds.fetchall("SELECT min(order_ts)::VARCHAR, max(order_ts)::VARCHAR "
                                     "FROM latency")[0]
                hint = f" (orders span {lo} to {hi})"
            return f"no matched orders: {name} leaves none of {before:,}{hint}"
        before = n
    return "no matched orders with these filters"


def _why_no_orders(ds: Dataset) -> str:
    """The dataset has no matched order at all: what it does have, and what to do."""
    caps = ds.fetchall("SELECT count(*) FROM captures")[0][0]
    if caps == 0:
        return "no captures in this dataset: run `pcapflow ingest CAPTURE --keylog KEYS` first"
    # (a LEFT JOIN's missing row is a NULL struct, which count(DISTINCT (a, b)) counts)
    tls, undecrypted = ds.fetchall(
        "SELECT count(*) FILTER (WHERE app_protocol LIKE 'tls%' OR tls_version IS NOT NULL), "
        "count(a.flow_id) FROM flows f LEFT JOIN (SELECT DISTINCT "
        "capture_id, flow_id FROM anomalies WHERE code = 'missing_keys') a "
        "USING (capture_id, flow_id)")[0]
    orders = ds.fetchall("SELECT count(*) FROM orders")[0][0]
    if undecrypted:
        return (f"no matched orders: {undecrypted} of {tls} TLS connections could not be "
                "decrypted (missing_keys): ingest again with the key log written while "
                "this capture was taken (--keylog FILE)")
    if orders == 0:
        return ("no orders found in the captured connections: is the venue known? "
                "(pcapflow flows shows each connection's venue; --venues maps addresses "
                "and FIX comp ids to venues: docs/venue-map.md)")
    return f"no replies matched the {orders:,} orders found"


def make_filter(
    ds: Dataset,
    *,
    exchange: str | Sequence[str | None] | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    leg: str | None = "ack",
    kind: str | None = None,
    capture: str | None = None,
    endpoint: str | None = None,
    status: str | None = None,
) -> Filter:
    """Validate user-facing filter arguments into a ``Filter``."""
    if capture is not None:
        resolve_capture(ds, capture)
    return Filter(
        exchange=resolve_exchange(ds, exchange),
        since=to_utc(since) if since is not None else None,
        until=to_utc(until) if until is not None else None,
        leg=leg, kind=kind, capture=capture, endpoint=endpoint, status=status,
    )


def latency(
    ds: Dataset,
    exchange: str | Sequence[str | None] | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    leg: str | None = "ack",
    *,
    kind: str | None = None,
    capture: str | None = None,
    endpoint: str | None = None,
    status: str | None = None,
) -> pd.DataFrame:
    """Matched order/ack rows of the ``latency`` table, oldest order first.

    ``exchange``: venue name(s), case-insensitive; ``since``/``until``: bounds on
    ``order_ts`` (ISO strings or datetimes, naive = UTC; ``until`` exclusive);
    ``leg``: ``"ack"`` (the reply), ``"engine"`` (first private-stream event) or
    None for both; ``capture``: a capture_id prefix or the capture's file name.
    Timestamps are tz-aware (UTC, ns); ``*_ns`` columns are nullable int64.

    >>> df = latency(ds, exchange="binance")                         # doctest: +SKIP
    >>> df.latency_ns.quantile(0.99) / 1e3  # p99 in µs              # doctest: +SKIP
    """
    flt = make_filter(ds, exchange=exchange, since=since, until=until, leg=leg, kind=kind,
                      capture=capture, endpoint=endpoint, status=status)
    return latency_rows(ds, flt)


def latency_rows(ds: Dataset, flt: Filter) -> pd.DataFrame:
    """``latency`` rows selected by an already-validated ``Filter``."""
    cond, params = flt.where("order_ts", "latency")
    return utc(ds.df(f"SELECT {BY_NAME} FROM latency WHERE {cond} "
                     "ORDER BY order_ts, capture_id, flow_id, correlation_id", params))


def utc(df: pd.DataFrame) -> pd.DataFrame:
    """Tz-aware columns converted to UTC (DuckDB hands them over in its session time zone,
    the machine's local one by default)."""
    import pandas as pd

    for col in df.columns:
        if isinstance(df[col].dtype, pd.DatetimeTZDtype):
            df[col] = df[col].dt.tz_convert("UTC")
    return df


def network_coverage(ds: Dataset, flt: Filter) -> dict[str, int]:
    """How the rows ``flt`` selects got their network estimate: ``rows`` (all),
    ``pure_ack_rtt`` (rows with ``network_rtt_ns``) and a count per
    ``NETWORK_METHODS`` value (rows written before decompose.sql count as ``none``)."""
    cond, params = flt.where("order_ts", "latency")
    row = ds.fetchall("SELECT count(*), count(network_rtt_ns), "
                      + ", ".join(f"count(*) FILTER (WHERE coalesce(network_method, 'none') "
                                  f"= '{m}')" for m in NETWORK_METHODS)
                      + f" FROM latency WHERE {cond}", params)[0]
    return dict(zip(("rows", "pure_ack_rtt", *NETWORK_METHODS), map(int, row), strict=True))


def coverage_note(cov: dict[str, int], metric: str) -> str | None:
    """One line saying which rows a decomposition metric covers, and how (None for
    ``latency``, which every matched row has)."""
    if metric == "latency" or not cov["rows"]:
        return None
    if metric == "network_rtt":
        return (f"network_rtt: the order's own pure-ACK round trip, known for "
                f"{cov['pure_ack_rtt']:,} of {cov['rows']:,} orders (the others' ACK rode on "
                "the reply or was not clean); --metric network estimates it for every order")
    covered = cov["rows"] - cov["none"]
    methods = ", ".join(f"{m} {cov[m]:,}" for m in NETWORK_METHODS if cov[m])
    what = "exchange = latency - network estimate" if metric == "exchange" else \
        "network = estimated round trip"
    return f"{what}; estimate for {covered:,} of {cov['rows']:,} orders ({methods})"


def unmatched(ds: Dataset, flt: Filter | None = None) -> pd.DataFrame:
    """Orders no reply was seen for (and, with no filter, orphan replies too)."""
    if flt is None:
        return utc(ds.df(f"SELECT {BY_NAME} FROM unmatched ORDER BY ts, capture_id, flow_id"))
    cond, params = flt.where("ts", "unmatched")
    return utc(ds.df(f"SELECT {BY_NAME} FROM unmatched WHERE {cond} "
                     "ORDER BY ts, capture_id, flow_id", params))


def group_columns(by: str | Sequence[str]) -> list[str]:
    """Group names for ``by`` ("venue", "endpoint,kind", ["flow"]...), venue always first."""
    names = [b.strip() for b in (by.split(",") if isinstance(by, str) else by) if b.strip()]
    bad = [b for b in names if b not in _GROUPS]
    if bad:
        raise ConfigError(f"cannot group by {', '.join(bad)}; use one or more of "
                          f"{', '.join(GROUPS)}", code="bad_group")
    out = ["venue"]
    for b in names:
        if b not in out:
            out.append(b)
    if "flow" in out and "capture" in out:  # a flow's keys are (capture_id, flow_id)
        out.remove("capture")
    return out


def _key_sql(groups: list[str], which: int, bucket_ns: int) -> tuple[str, list[str]]:
    """SELECT list and output column names for the group keys of one side."""
    exprs, cols = [], []
    for g in groups:
        e = _GROUPS[g][which]
        e = e.format(
            bucket_l=f"to_timestamp((epoch_ns(order_ts) // {bucket_ns}) * {bucket_ns} / 1e9)",
            bucket_u=f"to_timestamp((epoch_ns(ts) // {bucket_ns}) * {bucket_ns} / 1e9)",
        )
        exprs.append(e)
        cols += ["capture_id", "flow_id"] if g == "flow" else ["capture_id"] if g == "capture" \
            else [g]
    return ", ".join(exprs), cols


def quantile_column(q: float) -> str:
    """Column name of a quantile in µs: 0.5 -> p50_us, 0.999 -> p99_9_us."""
    return "p" + f"{q * 100:g}".replace(".", "_") + "_us"


def percentile_sql(groups: list[str], flt: Filter, *, metric: str = "latency",
                   quantiles: Sequence[float] = QUANTILES,
                   bucket_ns: int = 60_000_000_000) -> tuple[str, list[object], list[str]]:
    """The SQL behind ``percentiles`` (returned so users can read and reuse it)."""
    col = METRICS[metric]
    keys_l, cols = _key_sql(groups, 0, bucket_ns)
    keys_u, _ = _key_sql(groups, 1, bucket_ns)
    cond_l, p_l = flt.where("order_ts", "latency")
    cond_u, p_u = flt.where("ts", "unmatched")
    on = " AND ".join(f"a.{c} IS NOT DISTINCT FROM u.{c}" for c in cols)
    key_out = ", ".join(f"coalesce(a.{c}, u.{c}) AS {c}" for c in cols)
    qs = ", ".join(f"{q!r}" for q in quantiles)
    qcols = ", ".join(f"a.q[{i + 1}] / 1e3 AS {quantile_column(q)}"
                      for i, q in enumerate(quantiles))
    sql = f"""
        WITH a AS (
            SELECT {keys_l}, count({col}) AS count,
                   count(*) FILTER (WHERE NOT decoded) AS encrypted,
                   avg({col}) AS mean_ns, quantile_cont({col}, [{qs}]) AS q,
                   min({col}) AS min_ns, max({col}) AS max_ns
            FROM latency WHERE {cond_l} AND {col} IS NOT NULL GROUP BY ALL),
        u AS (SELECT {keys_u}, count(*) AS unmatched FROM unmatched WHERE {cond_u} GROUP BY ALL)
        SELECT {key_out}, coalesce(a.count, 0)::BIGINT AS count,
               coalesce(u.unmatched, 0)::BIGINT AS unmatched,
               coalesce(a.encrypted, 0)::BIGINT AS encrypted,
               a.mean_ns / 1e3 AS mean_us, {qcols},
               a.min_ns / 1e3 AS min_us, a.max_ns / 1e3 AS max_us
        FROM a FULL OUTER JOIN u ON {on}
        ORDER BY {", ".join(f"{c} NULLS LAST" for c in cols)}"""
    return sql, p_l + p_u, cols


def percentiles(
    ds: Dataset,
    by: str | Sequence[str] = "venue",
    exchange: str | Sequence[str | None] | None = None,
    since: TimeLike | None = None,
    until: TimeLike | None = None,
    leg: str | None = "ack",
    *,
    kind: str | None = None,
    capture: str | None = None,
    metric: str = "latency",
    bucket: str | dt.timedelta = "1min",
) -> pd.DataFrame:
    """Latency percentiles per group, in microseconds.

    One row per group (``by``: venue, endpoint, kind, capture, flow, status, leg,
    minute, or several as ``"endpoint,kind"``; venue is always the first key)
    with ``count`` (matched rows), ``unmatched`` (orders with no reply),
    ``encrypted`` (rows paired from TLS record timing only), ``mean_us``,
    ``p50_us``, ``p90_us``, ``p99_us``, ``p99_9_us``, ``min_us``, ``max_us``.
    ``metric``: ``latency`` (order to ack), ``network_rtt`` (the order's own
    pure-ACK round trip, where there is one), ``network`` (the round-trip
    estimate every order has) or ``exchange`` (latency minus that estimate).
    ``bucket`` sets the width of ``minute`` groups. Quantiles: linear
    interpolation (see the module docstring), equal to ``np.quantile``.

    >>> percentiles(ds, by="endpoint", exchange="okx")               # doctest: +SKIP
    """
    _check_metric(metric)
    flt = make_filter(ds, exchange=exchange, since=since, until=until, leg=leg, kind=kind,
                      capture=capture)
    sql, params, _ = _percentile_query(group_columns(by), flt, metric, bucket)
    return utc(ds.df(sql, params))


def percentile_rows(ds: Dataset, groups: list[str], flt: Filter, *, metric: str = "latency",
                    bucket: str | dt.timedelta = "1min"
                    ) -> tuple[list[str], list[tuple[object, ...]]]:
    """``percentiles`` as (column names, rows of Python values), without pandas: what a
    report printed as text needs (``pcapflow.report``). The same SQL and rows; times
    (the ``minute`` key) are ``datetime`` in UTC, nulls ``None``. ``groups`` as
    ``group_columns`` gives them, ``flt`` as ``make_filter`` does."""
    sql, params, cols = _percentile_query(groups, flt, metric, bucket)
    if "minute" in cols:  # as epoch ns: no time zone conversion on the way to Python
        sql = f"SELECT * REPLACE (epoch_ns(minute) AS minute) FROM ({sql})"
    names, rows = ds.fetch_named(sql, params)
    if "minute" in cols:
        i = names.index("minute")
        rows = [(*r[:i], _utc_datetime(r[i]), *r[i + 1:]) for r in rows]
    return names, rows


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc_datetime(ns: object) -> dt.datetime | None:
    """Epoch nanoseconds as a UTC ``datetime`` (to the µs: minute buckets are whole)."""
    return None if ns is None else _EPOCH + dt.timedelta(microseconds=int(ns) // 1000)  # type: ignore[call-overload]


def _bucket_ns(bucket: str | dt.timedelta) -> int:
    """The width of ``minute`` groups in ns (``pd.Timedelta`` parses it; not for the
    default, so a report by minute needs no pandas)."""
    if bucket == "1min":
        return 60_000_000_000
    import pandas as pd

    return int(pd.Timedelta(bucket).value)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; use {', '.join(METRICS)}",
                          code="bad_metric")


def _percentile_query(groups: list[str], flt: Filter, metric: str,
                      bucket: str | dt.timedelta) -> tuple[str, list[object], list[str]]:
    _check_metric(metric)
    bucket_ns = _bucket_ns(bucket)
    if bucket_ns <= 0:
        raise ConfigError(f"bucket must be positive, got {bucket!r}", code="bad_bucket")
    return percentile_sql(groups, flt, metric=metric, bucket_ns=bucket_ns)


# -- before/after --------------------------------------------------------------------------

_BOOT_BATCH_VALUES = 4_000_000
"""Cap on resampled values held at once by ``bootstrap_quantile_diff`` (~32 MB of int64
indices): replicates are drawn in batches so memory does not grow with n * n_boot."""


def _values(x: Dataset | pd.DataFrame | pd.Series | np.ndarray | Sequence[int],
            metric: str, filters: dict[str, object]) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if hasattr(x, "sql"):  # a Dataset
        x = latency(x, **filters)  # type: ignore[arg-type]
    col = METRICS[metric]
    if isinstance(x, pd.DataFrame):
        x = x[col]
    arr = pd.Series(x).dropna().to_numpy(dtype=np.float64)
    return arr


def _boot_quantiles(x: np.ndarray, quantiles: np.ndarray, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """(n_boot, len(quantiles)) quantiles of bootstrap resamples of ``x``."""
    import numpy as np

    out = np.empty((n_boot, quantiles.size))
    batch = max(1, _BOOT_BATCH_VALUES // max(1, x.size))
    for start in range(0, n_boot, batch):
        stop = min(n_boot, start + batch)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = np.quantile(x[idx], quantiles, axis=1, method=QUANTILE_METHOD).T
    return out


def bootstrap_quantile_diff(
    a: np.ndarray, b: np.ndarray, quantiles: Iterable[float] = (0.5, 0.99), *,
    n_boot: int = 2000, ci: float = 0.95, seed: int | None = 0,
) -> pd.DataFrame:
    """Percentile-bootstrap confidence intervals of ``quantile(b) - quantile(a)``.

    ``a`` and ``b`` are resampled independently with replacement ``n_boot``
    times; the interval is the (1-ci)/2 and (1+ci)/2 quantiles of the resampled
    differences. Values keep their unit (ns in, ns out). One row per quantile,
    indexed ``p50``, ``p99``...; ``q`` holds the quantile as a fraction.
    """
    import numpy as np
    import pandas as pd

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ConfigError("compare needs at least one value on each side", code="empty_sample")
    qs = np.asarray(list(quantiles), dtype=np.float64)
    rng = np.random.default_rng(seed)
    diffs = _boot_quantiles(b, qs, n_boot, rng) - _boot_quantiles(a, qs, n_boot, rng)
    lo, hi = np.quantile(diffs, [(1 - ci) / 2, (1 + ci) / 2], axis=0, method=QUANTILE_METHOD)
    qa = np.quantile(a, qs, method=QUANTILE_METHOD)
    qb = np.quantile(b, qs, method=QUANTILE_METHOD)
    labels = pd.Index([quantile_column(q).removesuffix("_us") for q in qs], name="quantile")
    return pd.DataFrame({
        "q": qs, "a": qa, "b": qb, "diff": qb - qa, "ci_low": lo, "ci_high": hi,
        "n_a": a.size, "n_b": b.size,
        "significant": (lo > 0) | (hi < 0),
    }, index=labels)


def compare(
    a: Dataset | pd.DataFrame | pd.Series | np.ndarray,
    b: Dataset | pd.DataFrame | pd.Series | np.ndarray,
    *,
    quantiles: Iterable[float] = (0.5, 0.99),
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int | None = 0,
    metric: str = "latency",
    **filters: object,
) -> pd.DataFrame:
    """Before/after: how much did the quantiles move from ``a`` to ``b``, and is it noise?

    ``a``/``b``: Datasets (filtered with ``filters``, e.g. ``exchange="binance",
    capture="before.pcap"``), ``latency`` DataFrames, or arrays of ns. Returns
    one row per quantile (index ``p50``, ``p99``...) in µs: ``a_us``, ``b_us``, ``diff_us`` (b - a),
    ``ci_low_us``/``ci_high_us`` (bootstrap percentile interval), ``n_a``,
    ``n_b`` and ``significant`` (the interval excludes 0).

    >>> compare(ds, ds, capture=None)                                # doctest: +SKIP
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}", code="bad_metric")
    va, vb = _values(a, metric, filters), _values(b, metric, filters)
    res = bootstrap_quantile_diff(va, vb, quantiles, n_boot=n_boot, ci=ci, seed=seed)
    for c in ("a", "b", "diff", "ci_low", "ci_high"):
        res[c] = res[c] / 1e3
    return res.rename(columns={c: f"{c}_us" for c in ("a", "b", "diff", "ci_low", "ci_high")})


# -- figures -------------------------------------------------------------------------------

def plot(ds: Dataset, kind: str = "summary", by: str = "venue", **filters: object) -> Figure:
    """A figure of the filtered latency rows: ``hist``, ``cdf``, ``timeline``, ``breakdown``
    or ``summary`` (all three distribution views in one figure). Returned, never shown.

    >>> fig = plot(ds, "cdf", exchange="okx"); fig.savefig("okx.png")  # doctest: +SKIP
    """
    from . import plots  # lazy: matplotlib loads on the first plot only

    makers = {"hist": plots.histogram, "cdf": plots.cdf, "timeline": plots.timeline,
              "breakdown": plots.breakdown, "summary": plots.summary}
    if kind not in makers:
        raise ConfigError(f"unknown plot {kind!r}; use {', '.join(makers)}", code="bad_plot")
    df = latency(ds, **filters)  # type: ignore[arg-type]
    return makers[kind](df, by=by)
