"""The analyst's handle on a dataset: DuckDB views over the Parquet tables.

``pcapflow.open("pcapflow_data")`` returns a ``Dataset`` whose ``sql`` runs
DuckDB over one view per table (``flows``, ``tcp_events``, ...), the same views
``pcapflow query`` uses. An empty or missing table is still a view with its
declared columns, so queries never fail for lack of rows.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .pipelines import store
from .pipelines.tables.declared import create_sql, declared

if TYPE_CHECKING:  # DuckDB and pandas load on first use: `pcapflow ingest` needs neither
    import duckdb
    import pandas as pd
    import pyarrow as pa

Params = Sequence[object] | None
"""Query parameters: any sequence of values (DuckDB binds them in order)."""

def _quiet_arrow_filter() -> None:
    """DuckDB's warning of ``Dataset.small_arrow``'s extra copy (by design: few rows),
    ignored for this module's calls only: a filter kept first (``_quiet_arrow``), not
    ``catch_warnings`` around each call (it swaps the process's filters and
    ``showwarning``, and restores them: not thread-safe while the derive runs a thread
    beside it)."""
    warnings.filterwarnings("ignore", "Arrow output on a DB-API result", UserWarning,
                            r"pcapflow\.dataset\Z")


_quiet_arrow_filter()
_QUIET_ENTRY = warnings.filters[0]


def _quiet_arrow() -> None:
    """``_quiet_arrow_filter``'s filter first again when another was put before it
    (``-W error`` applied later, as pytest's ``filterwarnings``: ignored, as before)."""
    if not warnings.filters or warnings.filters[0] != _QUIET_ENTRY:
        _quiet_arrow_filter()


DEFAULT_DATA = "pcapflow_data"
INTERNAL = "pcapflow_internal"
FIX_ENDPOINTS: dict[str, str] = {
    "D": "NewOrderSingle", "F": "OrderCancelRequest", "G": "OrderCancelReplaceRequest",
    "XCN": "OrderCancelRequestAndNewOrderSingle", "XAK": "OrderAmendKeepPriorityRequest",
    "8": "ExecutionReport", "9": "OrderCancelReject",
}
"""FIX order endpoints (the tables keep the MsgType, tag 35) by their FIX names, as the
Python API and reports show them (SQL: ``endpoint_name(protocol, endpoint)``);
``endpoint=`` filters take either."""
"""DuckDB schema of the declared empty tables behind the views (not listed by SHOW TABLES)."""


def require(data: str | os.PathLike[str] | None = None) -> Path:
    """The dataset directory, which must hold a dataset (else ``PcapflowError``, one line
    saying how to make one); for commands that only read."""
    from .parsers.errors import PcapflowError

    path = data_dir(data)
    if not path.is_dir():
        raise PcapflowError(f"{path}: no such dataset directory (make one with "
                            f"`pcapflow ingest CAPTURE --data {path}`, or pass --data DIR)")
    if not any((path / t).is_dir() for t in declared()):
        raise PcapflowError(f"{path}: not a pcapflow dataset (no tables in it; make one with "
                            f"`pcapflow ingest CAPTURE --data {path}`)")
    return path


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow table as pandas: times tz-aware (ns), ``*_ns`` durations nullable Int64
    (a null stays <NA> instead of turning the column into float64)."""
    import pandas as pd
    import pyarrow as pa

    df = table.to_pandas()
    for i, f in enumerate(table.schema):
        if f.name.endswith("_ns") and pa.types.is_integer(f.type):
            col = table.column(i).cast(pa.int64())
            df[f.name] = pa.table({"v": col}).to_pandas(
                types_mapper={pa.int64(): pd.Int64Dtype()}.get)["v"]
    return df


def data_dir(data: str | os.PathLike[str] | None = None) -> Path:
    """The dataset directory: ``data``, else ``$PCAPFLOW_DATA``, else ``./pcapflow_data``."""
    return Path(data or os.environ.get("PCAPFLOW_DATA") or DEFAULT_DATA)


def connect(config: dict[str, str | bool | int | float | list[str]] | None = None
            ) -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB connection, made by the engine alone (``config``: DuckDB's
    settings from the start).

    ``import duckdb`` (2.x) also loads its relation layer, pure Python, ~50 ms of a
    ``pcapflow query`` that runs one statement through ``execute``; the connection
    is the same object either way, and it gains ``sql`` and the rest of the
    relation API when ``duckdb`` is imported (``Dataset.con`` does that).
    """
    try:
        import _duckdb as engine  # DuckDB >= 2: the C++ engine's own module
    except ImportError:  # pragma: no cover  (older layouts: the engine is `duckdb`)
        import duckdb as engine  # type: ignore[no-redef]
    return engine.connect(config=config or {})


_shared: tuple[int, duckdb.DuckDBPyConnection] | None = None
_shared_lock = threading.Lock()
_shared_seq = itertools.count()


_inherited: list[object] = []
"""A forked child's copy of its parent's database: kept, never used nor closed (closing
it would wait for the parent's DuckDB threads, which the child does not have)."""


def _after_fork_in_child() -> None:
    """A forked child (``--jobs``' pool, ``--workers``' shards) starts with a free lock (a
    thread of the parent may have held it at the fork) and makes its own database."""
    global _shared_lock, _shared
    _shared_lock = threading.Lock()
    if _shared is not None:
        _inherited.append(_shared)
        _shared = None


os.register_at_fork(after_in_child=_after_fork_in_child)


SHARED_DATABASE = True
"""Whether pcapflow's own datasets share the process's database (``_internal_con``).
False in a long-lived process (``pcapflow watch`` and its worker: ``watch.Watcher``,
``watch.watch_ingest``):
DuckDB keeps memory its queries allocated until its database closes, and one database
living for a worker's 500 files grew it ~0.19 MB a file, against ~0.09 with a database
per dataset (session 16, ``benchmarks/watch_memory.py --worker 100``); there each
internal dataset gets a database of its own, closed with it."""


def _new_internal_db() -> duckdb.DuckDBPyConnection:
    """A database for internal datasets: one thread (the derive's choice for its small
    queries) from the start, so it never has a DuckDB worker thread (the process forks
    later), UTC, the declared empty tables and the ``endpoint_name`` macro."""
    db = connect({"threads": 1})
    db.execute("SET TimeZone = 'UTC'")
    db.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL}")
    for table, columns in declared().items():
        db.execute(create_sql(f"{INTERNAL}.empty_{table}", columns))
    db.execute(_endpoint_macro())
    return db


def _internal_con() -> tuple[duckdb.DuckDBPyConnection, str]:
    """A new connection to this process's own in-memory database, and a new schema in it
    (the connection's default) for one internal ``Dataset``'s views.

    The ingest opens three datasets of its own (the microburst thread's, the derive's,
    the summary's), and a DuckDB database costs ~0.015 s of CPU to make (its catalog of
    built-in functions) and ~0.008 s more for the declared empty tables: they are made
    once per process here, and each dataset is a cursor (free) with its views in a schema
    of its own, dropped with it (``Dataset.close``). Database-wide settings are shared:
    it runs one thread (what the derive sets for its small queries) for every dataset of
    the process, with ``TimeZone`` UTC (as every ``Dataset``). A forked child makes its
    own database (``_after_fork_in_child``); with ``SHARED_DATABASE`` False, every
    dataset does (a long-lived process).
    """
    global _shared
    with _shared_lock:
        schema = f"{INTERNAL}_{next(_shared_seq)}"
        if not SHARED_DATABASE:  # (its own database, closed with the dataset)
            con = _new_internal_db()
        else:
            if _shared is None or _shared[0] != os.getpid():
                _shared = (os.getpid(), _new_internal_db())
            con = _shared[1].cursor()
    try:
        con.execute(f"CREATE SCHEMA {schema}")
        con.execute(f"SET schema = '{schema}'")
    except BaseException:
        con.close()
        raise
    return con, schema


def _endpoint_macro() -> str:
    """FIX order endpoints by name (the tables keep the wire's MsgType, tag 35):
    ``SELECT endpoint_name(protocol, endpoint) FROM latency``."""
    names = ", ".join(f"{_sql_str(c)}: {_sql_str(n)}" for c, n in FIX_ENDPOINTS.items())
    return ("CREATE OR REPLACE MACRO endpoint_name(protocol, endpoint) AS "
            f"CASE WHEN protocol = 'fix' THEN coalesce(MAP {{{names}}}[endpoint], "
            "endpoint) ELSE endpoint END")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class Dataset:
    """A pcapflow dataset directory, queried through DuckDB views."""

    _extra: list[pa.Table]
    """Arrow tables registered on the connection (``of_capture``): kept alive with it."""
    _schema: str | None = None
    """The schema of this dataset's views in the process's own database (``internal``),
    dropped on ``close``; None: the connection is this dataset's own."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 captures: list[str] | None = None,
                 views: Iterable[str] | None = None, internal: bool = False) -> None:
        self.path = data_dir(path)
        self.captures = None if captures is None else list(dict.fromkeys(captures))
        """Only these captures' partitions are read (None: every capture). A dataset of
        thousands of captures answers a question about a few without opening the others'
        files (``pcapflow.scale.captures_between`` finds them by time)."""
        if self.path.exists():
            with store.locked(self.path):
                store.recover(self.path)
        if internal:  # (pcapflow's own, short-lived use: ``_internal_con``)
            self._con, self._schema = _internal_con()
        else:
            self._con = connect()
            self._con.execute("SET TimeZone = 'UTC'")  # timestamps print and convert as UTC
        self._make_views(None if views is None else set(views))

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection behind the views (``con.sql``, relations: all of DuckDB's
        Python API)."""
        import duckdb  # noqa: F401  (its import gives connections the relation methods)

        return self._con

    def _make_views(self, only: set[str] | None = None) -> None:
        """One view per table (``only`` these, when given), always with the table's
        declared columns.

        Each view is the declared (empty) table UNION ALL BY NAME the files on
        disk: a column a dataset written by an older pcapflow lacks reads as NULL
        of its declared type, instead of breaking every query.
        """
        con = self._con
        # The empty tables live in their own schema, so SHOW TABLES lists only the views
        # (an internal dataset's database has them all already: ``_internal_con``).
        if self._schema is None:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL}")
        # (the columns as DuckDB types: ``declared`` spares a read-only command the
        # import of every parser that building the Arrow schemas takes)
        for table, columns in declared().items():
            if only is not None and table not in only:
                continue
            if self._schema is None:
                con.execute(create_sql(f"{INTERNAL}.empty_{table}", columns))
            source = f"SELECT * FROM {INTERNAL}.empty_{table}"
            globs = self._globs(table)
            if globs:
                source += (f" UNION ALL BY NAME SELECT * FROM read_parquet([{', '.join(globs)}], "
                           "hive_partitioning = true, union_by_name = true)")
            cols = ", ".join(f'"{c}"' for c, _ in columns)
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM ({source})")

        if self._schema is None:
            con.execute(_endpoint_macro())

    def _globs(self, table: str) -> list[str]:
        """The Parquet globs of ``table`` (SQL literals): every partition, or the
        partitions of ``self.captures`` that exist."""
        if self.captures is None:
            if not any((self.path / table).glob("capture_id=*/*.parquet")):
                return []
            return [_sql_str(str(self.path / table / "capture_id=*" / "*.parquet"))]
        parts = [self.path / table / f"capture_id={c}" for c in self.captures]
        return [_sql_str(str(p / "*.parquet")) for p in parts
                if p.is_dir() and any(p.glob("*.parquet"))]

    def narrow(self, since: object = None, until: object = None) -> Dataset:
        """This dataset read only through the captures with packets in ``[since, until)``
        (ISO 8601 strings or datetimes, naive = UTC): the same answers to questions about
        that window, without opening the other captures' files (``pcapflow.scale``).

        >>> ds.narrow(since="2026-11-23T14:00", until="2026-11-23T15:00")  # doctest: +SKIP
        """
        from .analysis import to_utc
        from .scale import captures_between

        lo = None if since is None else int(to_utc(since).value)
        hi = None if until is None else int(to_utc(until).value)
        ids = captures_between(self.path, lo, hi)
        if self.captures is not None:
            mine = set(self.captures)
            ids = [c for c in ids if c in mine]
        return Dataset(self.path, captures=ids)

    @classmethod
    def of_capture(cls, files: Mapping[str, Sequence[Path]], capture_id: str,
                   tables: Mapping[str, pa.Table] | None = None,
                   extra: Mapping[str, pa.Table] | None = None,
                   views: Iterable[str] | None = None, internal: bool = True) -> Dataset:
        """The views of one capture that is not committed yet (the ingest's staging
        directory: Parquet ``files`` per table, without the ``capture_id`` column) or
        of one capture's partitions; ``tables`` (Arrow, without ``capture_id``) replace
        the files of their table; ``extra`` (Arrow, any of the table's columns) are
        rows added to its files (a rotation's carried rows: ``pcapflow.why_carry``).
        What the ingest derives ``causes``, ``feed_gaps`` and ``alerts`` from
        (``pcapflow.why``), with the same SQL as over a dataset. ``views``: only these
        tables' views (None: every table's). The views live in the process's own
        database (``_internal_con``), in a schema of their own, until ``close``;
        ``internal`` False: in a database of their own (a long-lived process's
        periodic reads, the watch's metrics: nothing kept between them)."""
        # Arrow tables are registered below: the engine scans Python Arrow objects only
        # once the ``duckdb`` package has set up ``duckdb._sources`` (``connect``
        # alone does not import it)
        import duckdb  # noqa: F401

        self = cls.__new__(cls)
        self.path = Path(".")
        self.captures = [capture_id]
        if internal:
            self._con, self._schema = _internal_con()
        else:
            self._con = connect()
            self._con.execute("SET TimeZone = 'UTC'")
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {INTERNAL}")
        only = None if views is None else set(views)
        cid = _sql_str(capture_id)
        sources = {}
        for table, paths in files.items():
            paths = [p for p in paths if p.exists()]
            if paths and table not in (tables or {}):
                listing = ", ".join(_sql_str(str(p)) for p in paths)
                sources[table] = (f"SELECT *, {cid} AS capture_id FROM read_parquet("
                                  f"[{listing}], union_by_name = true, "
                                  "hive_partitioning = false)")
        for table, rows in (tables or {}).items():
            name = f"{INTERNAL}_given_{table}"
            self._con.register(name, rows)
            sources[table] = (f"SELECT * EXCLUDE (capture_id), {cid} AS capture_id FROM {name}"
                              if "capture_id" in rows.schema.names else
                              f"SELECT *, {cid} AS capture_id FROM {name}")
        self._extra = []
        for table, rows in (extra or {}).items():
            name = f"{INTERNAL}_extra_{table}"
            if "capture_id" in rows.schema.names:
                rows = rows.drop_columns(["capture_id"])
            self._extra.append(rows)
            self._con.register(name, rows)
            more = f"SELECT *, {cid} AS capture_id FROM {name}"
            # (first: they are older than the files' rows, read in time order as one
            # ingest's; ``alerts._bursts_streamed`` reads a connection again whole
            # when its rows go back)
            sources[table] = (f"{more} UNION ALL BY NAME {sources[table]}"
                              if table in sources else more)
        statements = []
        for table, columns in declared().items():
            if only is not None and table not in only:
                continue
            if self._schema is None:
                statements.append(create_sql(f"{INTERNAL}.empty_{table}", columns))
            source = f"SELECT * FROM {INTERNAL}.empty_{table}"
            if table in sources:
                source += f" UNION ALL BY NAME {sources[table]}"
            cols = ", ".join(f'"{c}"' for c, _ in columns)
            statements.append(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM ({source})")
        if statements:  # (one call: ~1 ms less a view)
            self._con.execute(";\n".join(statements))
        return self

    @property
    def tables(self) -> list[str]:
        return list(declared())

    def sql(self, query: str, params: Params = None) -> duckdb.DuckDBPyRelation:
        """Run SQL over the views; ``.df()``, ``.arrow()`` or ``.fetchall()`` the result."""
        return self.con.sql(query, params=list(params) if params is not None else None)

    def small_arrow(self, query: str) -> pa.Table:
        """Run SQL and return its rows as an Arrow table, for a result of few rows
        (the derive's queries: ``pcapflow.why``): ``sql`` parses the query, reads its
        tokens in Python and binds it before it runs (~1-5 ms a query, more for a
        long one); here it is parsed, planned and run once, and its rows copied once
        more (what DuckDB warns of: negligible for few rows)."""
        _quiet_arrow()  # (DuckDB's warning of that copy: ``_quiet_arrow_filter``)
        return self._con.execute(query).to_arrow_table()

    def fetchall(self, query: str, params: Params = None) -> list[tuple[Any, ...]]:
        """Run SQL and return all rows as tuples."""
        return self._con.execute(query, list(params or ())).fetchall()

    def fetchone(self, query: str, params: Params = None) -> tuple[Any, ...] | None:
        """Run SQL and return the first row (None when there is none)."""
        # fetchall, not fetchone: DuckDB 2 keeps a partly read result open on the
        # connection, and the next statement on it fails
        rows = self._con.execute(query, list(params or ())).fetchall()
        return rows[0] if rows else None

    def fetch_named(self, query: str, params: Params = None
                    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run SQL and return (column names, all rows as tuples)."""
        cur = self._con.execute(query, list(params or ()))
        return [d[0] for d in cur.description], cur.fetchall()

    def scalar(self, query: str, params: Params = None) -> Any:
        """Run SQL and return the first column of the first row (a SQL value: typed
        ``Any`` as DB-API rows are; the caller knows what its query returns)."""
        row = self.fetchone(query, params)
        return None if row is None else row[0]

    def df(self, query: str, params: Params = None) -> pd.DataFrame:
        """Run SQL and return a pandas DataFrame with tz-aware nanosecond timestamps."""
        return to_pandas(self.sql(query, params).to_arrow_table())

    def table(self, name: str) -> pd.DataFrame:
        """A whole table as a DataFrame (``flows``, ``tcp_events``, ...)."""
        if name not in declared():
            raise KeyError(f"no table {name!r}; tables: {', '.join(declared())}")
        return self.df(f"SELECT * FROM {name}")

    # -- analysis (thin wrappers over pcapflow.analysis; see there for details) --

    def latency(
        self,
        venue: str | list[str] | None = None,
        *,
        endpoint: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        since: object = None,
        until: object = None,
        leg: str | None = "ack",
        capture: str | None = None,
        exchange: str | list[str] | None = None,
    ) -> pd.DataFrame:
        """Matched order/ack rows (the ``latency`` table), oldest order first.

        venue: venue name(s), case-insensitive (``"binance"``, ``["okx", "deribit"]`` or
            ``"okx,deribit"``); ``exchange`` is the same, by its older name.
        endpoint: one endpoint, as in the table (``"POST /api/v3/order"``,
            ``"order.place"``, FIX ``"NewOrderSingle"``).
        kind: ``"new"``, ``"cancel"`` or ``"amend"``.
        status: ``"accepted"``, ``"rejected"`` or ``"error"``.
        since, until: bounds on ``order_ts`` (ISO 8601 strings or datetimes, naive = UTC;
            ``until`` exclusive).
        leg: ``"ack"`` (the reply), ``"engine"`` (first private-stream event) or None (both).
        capture: a capture_id prefix, the capture's path or its file name.

        Times are tz-aware UTC with nanoseconds; ``*_ns`` columns are nullable Int64
        (``network_rtt_ns`` is <NA> where no network time is claimed).

        >>> ds.latency("binance", endpoint="order.place", since="2026-11-23")  # doctest: +SKIP
        """
        from . import analysis  # lazy: keeps `import pcapflow` light

        return analysis.latency(self, venue if venue is not None else exchange, since, until,
                                leg, kind=kind, capture=capture, endpoint=endpoint,
                                status=status)

    def percentiles(self, by: str | list[str] = "venue", **filters: object) -> pd.DataFrame:
        """Count, unmatched, mean and p50/p90/p99/p99.9/max in µs per group
        (``analysis.percentiles``; quantiles as ``np.quantile``).

        >>> ds.percentiles(by="endpoint", exchange="okx")  # doctest: +SKIP
        """
        from . import analysis  # lazy: keeps `import pcapflow` light

        return analysis.percentiles(self, by, **filters)  # type: ignore[arg-type]

    def compare(self, other: Dataset, by: str | list[str] = "venue", **kw: object
                ) -> pd.DataFrame:
        """Before (this dataset) and after (``other``), per group: p50/p90/p99 of each,
        their differences with bootstrap confidence intervals and a verdict per group
        (``faster``, ``slower``, ``no evidence``...): ``pcapflow.compare.compare``.

        >>> before.compare(after, by="endpoint", venue="binance")  # doctest: +SKIP
        """
        from . import compare  # lazy: keeps `import pcapflow` light

        return compare.compare(self, other, by=by, **kw)  # type: ignore[arg-type]

    def plot(self, kind: str = "summary", by: str = "venue", **filters: object) -> object:
        """A matplotlib Figure: hist, cdf, timeline, breakdown or summary (``analysis.plot``).

        >>> ds.plot("cdf", exchange="okx").savefig("okx_cdf.png")  # doctest: +SKIP
        """
        from . import analysis  # lazy: keeps `import pcapflow` light

        return analysis.plot(self, kind, by, **filters)

    # -- why was it slow (pcapflow.analysis, pcapflow.feed, pcapflow.alerts) --

    def decomposition(self, exchange: str | list[str] | None = None, since: object = None,
                      until: object = None, leg: str | None = "ack",
                      **filters: str | None) -> pd.DataFrame:
        """Each order's latency split into the network round-trip estimate and the
        exchange's share, with where the estimate came from and how sure it is:
        ``latency_ns``, ``network_est_ns``, ``exchange_ns``, ``network_method``,
        ``network_spread_ns``, ``network_samples`` and the order's own pure-ACK
        ``network_rtt_ns`` (pipelines/sql/decompose.sql).

        >>> ds.decomposition(exchange="binance").groupby("network_method").size()  # doctest: +SKIP
        """
        cols = ["venue", "endpoint", "capture_id", "flow_id", "kind", "leg", "correlation_id",
                "order_ts", "ack_ts", "latency_ns", "network_est_ns", "exchange_ns",
                "network_method", "network_spread_ns", "network_samples", "network_rtt_ns",
                "status", "decoded"]
        return self.latency(exchange, since=since, until=until, leg=leg, **filters)[cols]

    def causes(self) -> pd.DataFrame:
        """The stalls inside each order's window (delayed ACK + Nagle, retransmissions
        either way, zero windows, TLS record coalescing, head-of-line blocking, capture
        gaps), one row each: the ``causes`` table (``pcapflow.causes``).

        >>> ds.causes().groupby("cause").cost_ns.median()              # doctest: +SKIP
        """
        from . import causes

        return causes.causes(self)

    def tick_to_trade(self, max_age_s: float | None = 10.0) -> pd.DataFrame:
        """Per order: the last market-data message on its instrument before it left and
        ``reaction_ns`` = order's first byte - that message's last (``pcapflow.ticktotrade``;
        it says what COULD have triggered the order, not what did)."""
        from . import ticktotrade

        return ticktotrade.tick_to_trade(self, max_age_s=max_age_s)

    def feed_gaps(self) -> pd.DataFrame:
        """Breaks in market-data sequence numbers per stream: the ``feed_gaps`` table
        (``pcapflow.feed``)."""
        from . import feed

        return feed.feed_gaps(self)

    def feed_delay(self) -> pd.DataFrame:
        """Wire time minus the exchange's time stamp per market-data stream, in µs
        (``pcapflow.feed``; includes the clocks' offset)."""
        from . import feed

        return feed.feed_delay(self)

    def alerts(self, kinds: str | list[str] | None = None, *,
               exchange: str | list[str] | None = None, since: object = None,
               until: object = None, recompute: bool = False,
               **settings: object) -> pd.DataFrame:
        """Latency regime changes, p99 over a threshold, retransmission storms, zero
        windows, microbursts, feed gaps, stale feeds and capture clock steps
        (``pcapflow.alerts``): the ``alerts`` table each capture's ingest wrote, or, with
        ``settings`` (``alerts.Settings`` fields: ``p99_us=50_000``, ``stale_after_s=2``
        ...) or ``recompute``, the detectors run again over the whole dataset.

        >>> ds.alerts(p99_us=20_000)                                   # doctest: +SKIP
        """
        from . import alerts

        chosen = [kinds] if isinstance(kinds, str) else kinds
        kinds_t = tuple(chosen) if chosen else None
        if not settings and not recompute:
            return alerts.stored(self, kinds_t, exchange=exchange, since=since, until=until)
        return alerts.alerts(self, alerts.Settings(**settings),  # type: ignore[arg-type]
                             kinds_t, exchange=exchange, since=since, until=until)

    def __repr__(self) -> str:
        """``<pcapflow.Dataset 'dir': 3 captures, 40 flows, 300 orders, 296 matched, ...>``"""
        try:
            cap, flows, orders, lat, venues = self._con.execute(
                "SELECT (SELECT count(*) FROM captures), (SELECT count(*) FROM flows), "
                "(SELECT count(*) FROM orders), (SELECT count(*) FROM latency "
                "WHERE leg = 'ack'), (SELECT string_agg(DISTINCT venue, ', ' ORDER BY venue) "
                "FROM latency)").fetchall()[0]
        except Exception as err:  # a closed connection, a broken file
            return f"<pcapflow.Dataset {str(self.path)!r} ({type(err).__name__})>"
        return (f"<pcapflow.Dataset {str(self.path)!r}: {cap:,} captures, {flows:,} flows, "
                f"{orders:,} orders, {lat:,} matched; venues: {venues or 'none'}>")

    def close(self) -> None:
        if self._schema is not None:  # (its views, in the process's database)
            schema, self._schema = self._schema, None
            try:
                self._con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except Exception:  # (a connection closed already: dropped from a new one)
                with _shared_lock:
                    db = _shared[1] if _shared and _shared[0] == os.getpid() else None
                if db is not None:
                    db.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE").close()
        self._con.close()

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(path: str | os.PathLike[str] | None = None) -> Dataset:
    """Open a dataset directory (default ``./pcapflow_data`` or ``$PCAPFLOW_DATA``).

    A path that does not exist is an error (``PcapflowError``), not an empty dataset: a
    mistyped path in a notebook would otherwise answer every question with no rows. A
    directory without tables yet (a watch that has ingested nothing) opens empty."""
    from .parsers.errors import PcapflowError

    where = data_dir(path)
    if not where.is_dir():
        raise PcapflowError(f"{where}: no such dataset directory (make one with "
                            f"pcapflow.ingest(CAPTURE, data={str(where)!r}))")
    return Dataset(path)
