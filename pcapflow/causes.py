"""Why one order was slow: the TCP stalls inside each order's window.

How this works. For each ``latency`` row the window is ``order_ts`` (its last
byte first sent) to ``ack_ts`` (the reply whole). What happened on the order's
connection inside it is read from ``tcp_rtt`` and ``tcp_events`` and named:

- ``delayed_ack``: we acknowledged an earlier segment of the exchange's only
  after a delayed-ACK timer (a pure ACK from us ``>= DELAYED_ACK_MIN_NS`` after
  the data), and the reply was whole within ``HOLD_SLACK_NS`` (or two network
  round trips) of that ACK: the exchange's socket held the small reply behind
  unacknowledged data (Nagle's algorithm) until our ACK came. ``cost_ns``: from
  the later of the order and that data to our ACK, the longest the reply can
  have waited. (notebooks/02 traces this packet by packet.)
- ``retransmission_out``: our segment was sent again inside the window (the
  order's bytes, or bytes before them that held it back); ``cost_ns``: from the
  order to the resend.
- ``retransmission_in``: the exchange's segment was sent again inside the
  window (the reply, or bytes ahead of it: head-of-line blocking), so the reply
  was whole only after the resend; ``cost_ns``: from the first sign of the loss
  on that direction (out-of-order segment, gap or duplicate ACK) to the resend,
  null when none was seen.
- ``zero_window``: a zero window advertised inside the window (``in``: the
  exchange stopped reading; ``out``: we did).
- ``tls_coalescing``: the reply and the message after it on its connection end
  in the same TLS application-data record (the only one whole at that instant),
  which arrived over several packets: the reply could be read only once the
  record was whole; ``cost_ns``: from the later of the record's and the reply's
  first byte to the record's end (the longest the coalescing can have cost).
- ``head_of_line``: the message just before the reply on its connection is at
  least ``HOL_BYTES`` (its stream offsets) and was still arriving after the order
  left: the reply queued behind it; ``cost_ns``: how long that message took to
  arrive inside the window.
- ``ack_path_gap``: bytes of the reply's direction never captured inside the
  window (tcp_events ``gap``): the reply's time is when the hole was skipped,
  not when its bytes came.

What this infers: a cause is a stall that overlaps the order on its own
connection, with the timing that makes it plausible; the wire cannot prove
that the exchange's code waited on it. The ingest stores the rows (the
``causes`` table, ``pcapflow.why``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import pyarrow as pa

from .pipelines.tables.schemas import TS

if TYPE_CHECKING:  # pandas: only where a DataFrame is returned (an ingest has none)
    import numpy as np
    import pandas as pd

    from .dataset import Dataset

DELAYED_ACK_MIN_NS = 20_000_000
"""A pure ACK from us this long after the data it acknowledges was delayed (Linux's
delayed-ACK timer is 40 ms, others' up to 200 ms; quick ACKs come in µs)."""
HOLD_SLACK_NS = 2_000_000
"""The reply counts as released by our ACK when it was whole this soon after it
(or within two network round trips, whichever is longer)."""
HOL_BYTES = 16_384
"""A message before the reply at least this big (one TLS record's worth) can hold it
back: head-of-line blocking."""
RESENDS = ("retransmission", "fast_retransmission")
LOSS_SIGNS = ("out_of_order", "gap", "duplicate_ack")


def causes_sql(since: int | None = None, more_rtt: str | None = None) -> str:
    """``CAUSES_SQL`` of the latency rows whose reply came at or after ``since`` (ns;
    None: all): a rotation's later command finds the causes of its new orders only
    (``pcapflow.why_carry``); ``more_rtt``: a table of ``tcp_rtt`` rows (``DACK_COLUMNS``,
    with ``capture_id``) its delayed ACKs are also looked for in (what the command
    carried of its pending orders' connections: ``why_carry.save``)."""
    where = "" if since is None else \
        f" WHERE coalesce(epoch_ns(ack_ts), epoch_ns(order_ts)) >= {int(since)}"
    sql = CAUSES_SQL.replace("FROM latency)", f"FROM latency{where})", 1)
    if more_rtt is not None:
        cols = ", ".join(("capture_id", *DACK_COLUMNS))
        sql = sql.replace("JOIN tcp_rtt t ON", f"JOIN (SELECT {cols} FROM tcp_rtt UNION ALL "
                          f"SELECT {cols} FROM {more_rtt}) t ON", 1)
    return sql


DACK_COLUMNS = ("flow_id", "direction", "piggybacked", "method", "rtt_ns", "ts_sent",
                "ts_ack")
"""The ``tcp_rtt`` columns ``delayed_ack`` reads."""


def delayed_ack_candidates(rtt: pa.Table) -> pa.Array:
    """Per ``tcp_rtt`` row, whether ``delayed_ack`` can read it (its conditions on the
    sample alone: ours, a pure ACK, of the ``ack`` method or none, ``DELAYED_ACK_MIN_NS``
    or longer)."""
    import pyarrow.compute as pc

    ok = pc.and_kleene(pc.equal(rtt.column("direction"), "in"),
                       pc.invert(pc.fill_null(rtt.column("piggybacked"), False)))
    ok = pc.and_kleene(ok, pc.equal(pc.fill_null(rtt.column("method"), "ack"), "ack"))
    ok = pc.and_kleene(ok, pc.greater_equal(rtt.column("rtt_ns"), DELAYED_ACK_MIN_NS))
    return pc.fill_null(ok, False)


_ALL_CTES = """FROM (FROM dack UNION ALL BY NAME FROM resend UNION ALL BY NAME FROM zw
      UNION ALL BY NAME FROM coalesced UNION ALL BY NAME FROM hol UNION ALL BY NAME FROM gap)"""
"""The rows of every cause (``of_capture`` names fewer)."""

CAUSES_SQL = f"""
WITH l AS (
    SELECT capture_id, venue, endpoint, flow_id, leg, correlation_id, kind,
           epoch_ns(order_ts) AS o, epoch_ns(ack_ts) AS a, latency_ns,
           coalesce(network_est_ns, 0) AS net, coalesce(ack_flow_id, flow_id) AS af
    FROM latency),
dack AS (
    SELECT l.*, 'delayed_ack' AS cause, epoch_ns(t.ts_ack) AS stall_ts,
           epoch_ns(t.ts_ack) - greatest(l.o, epoch_ns(t.ts_sent)) AS cost_ns,
           'our ACK of the exchange''s data came ' || round(t.rtt_ns / 1e6, 1)
               || ' ms after it (delayed ACK); the reply was whole '
               || round((l.a - epoch_ns(t.ts_ack)) / 1e3, 1)
               || ' µs later (held by Nagle until then)' AS detail
    FROM l JOIN tcp_rtt t ON t.capture_id = l.capture_id AND t.flow_id = l.flow_id
    WHERE t.direction = 'in' AND NOT coalesce(t.piggybacked, false)
      AND coalesce(t.method, 'ack') = 'ack' AND t.rtt_ns >= {DELAYED_ACK_MIN_NS}
      AND epoch_ns(t.ts_ack) > l.o AND epoch_ns(t.ts_ack) <= l.a
      AND l.a - epoch_ns(t.ts_ack) <= greatest({HOLD_SLACK_NS}, 2 * l.net)),
ev AS (
    SELECT capture_id, flow_id, direction, kind, epoch_ns(ts) AS t, packet
    FROM tcp_events
    WHERE kind IN {(*RESENDS, *LOSS_SIGNS, "zero_window")}),
resend AS (
    SELECT l.*, 'retransmission_' || e.direction AS cause, e.t AS stall_ts,
           CASE WHEN e.direction = 'out' THEN e.t - l.o ELSE
               (SELECT e.t - min(s.t) FROM ev s
                WHERE s.capture_id = e.capture_id AND s.flow_id = e.flow_id
                  AND s.kind IN {LOSS_SIGNS} AND s.t <= e.t AND s.t > l.o
                  AND ((s.kind = 'duplicate_ack' AND s.direction <> e.direction)
                       OR (s.kind <> 'duplicate_ack' AND s.direction = e.direction)))
           END AS cost_ns,
           e.kind || ' of ' || CASE e.direction WHEN 'out' THEN 'our' ELSE 'the exchange''s' END
               || ' segment (packet ' || e.packet || ')' AS detail
    FROM l JOIN ev e ON e.capture_id = l.capture_id AND e.flow_id = l.flow_id
    WHERE e.kind IN {RESENDS} AND e.t > l.o AND e.t <= l.a),
zw AS (
    SELECT l.*, 'zero_window' AS cause, e.t AS stall_ts, NULL::BIGINT AS cost_ns,
           CASE e.direction WHEN 'in' THEN 'the exchange' ELSE 'we' END
               || ' advertised a zero window (packet ' || e.packet || ')' AS detail
    FROM l JOIN ev e ON e.capture_id = l.capture_id AND e.flow_id = l.flow_id
    WHERE e.kind = 'zero_window' AND e.t > l.o AND e.t <= l.a),
-- the reply message (acks -> its message table) and the inbound messages around it
-- on its connection, in stream order: the one before it and the one after it
reply AS (
    SELECT DISTINCT l.capture_id, l.flow_id, l.leg, l.correlation_id, l.o, ak.source_table,
           ak.stream_offset
    FROM l JOIN acks ak ON ak.capture_id = l.capture_id AND ak.flow_id = l.af
        AND ak.leg = l.leg AND ak.correlation_id = l.correlation_id AND epoch_ns(ak.ts) = l.a),
msg AS (
    SELECT *, lag(stream_offset) OVER w AS prev_offset, lag(t0) OVER w AS prev_t0,
           lag(t1) OVER w AS prev_t1, lead(t1) OVER w AS next_t1
    FROM (SELECT capture_id, flow_id, stream_offset, epoch_ns(ts_first) AS t0,
                 epoch_ns(ts_last) AS t1
          FROM (SELECT capture_id, flow_id, direction, stream_offset, ts_first, ts_last
                FROM ws_messages UNION ALL SELECT capture_id, flow_id, direction,
                stream_offset, ts_first, ts_last FROM http_messages UNION ALL SELECT
                capture_id, flow_id, direction, stream_offset, ts_first, ts_last
                FROM fix_messages) x
          WHERE direction = 'in' AND EXISTS (
              SELECT 1 FROM l WHERE l.capture_id = x.capture_id AND l.af = x.flow_id))
    WINDOW w AS (PARTITION BY capture_id, flow_id ORDER BY stream_offset)),
rm AS (
    SELECT l.*, m.stream_offset, m.t0, m.t1, m.prev_offset, m.prev_t0, m.prev_t1, m.next_t1
    FROM l JOIN reply r ON r.capture_id = l.capture_id AND r.flow_id = l.flow_id
        AND r.leg = l.leg AND r.correlation_id = l.correlation_id AND r.o = l.o
    JOIN msg m ON m.capture_id = l.capture_id AND m.flow_id = l.af
        AND m.stream_offset = r.stream_offset),
rec AS (
    SELECT capture_id, flow_id, epoch_ns(ts_last) AS t1, count(*) AS n,
           min(epoch_ns(ts_first)) AS t0
    FROM tls_records
    WHERE direction = 'in' AND content_type = 23 AND coalesce(inner_content_type, 23) = 23
      AND EXISTS (SELECT 1 FROM l WHERE l.capture_id = tls_records.capture_id
                                     AND l.af = tls_records.flow_id)
    GROUP BY ALL),
coalesced AS (
    SELECT rm.*, 'tls_coalescing' AS cause, rm.t1 AS stall_ts,
           rm.t1 - greatest(r.t0, rm.t0) AS cost_ns,
           'the reply shared its TLS record with the message after it; the record took '
               || round((rm.t1 - r.t0) / 1e3, 1) || ' µs to arrive and the reply was '
               || 'readable only when all of it had' AS detail
    FROM rm JOIN rec r ON r.capture_id = rm.capture_id AND r.flow_id = rm.af AND r.t1 = rm.t1
    WHERE r.n = 1 AND rm.next_t1 = rm.t1 AND r.t1 > greatest(r.t0, rm.t0)),
hol AS (
    SELECT rm.*, 'head_of_line' AS cause, rm.prev_t1 AS stall_ts,
           rm.prev_t1 - greatest(rm.prev_t0, rm.o) AS cost_ns,
           'the reply came behind a ' || ((rm.stream_offset - rm.prev_offset) // 1024)
               || ' KiB message on the same connection, still arriving when the order left'
               AS detail
    FROM rm
    WHERE rm.stream_offset - rm.prev_offset >= {HOL_BYTES} AND rm.prev_t1 > rm.o
      AND rm.prev_t1 <= rm.t1),
gap AS (
    SELECT l.*, 'ack_path_gap' AS cause, e.t AS stall_ts, NULL::BIGINT AS cost_ns,
           'bytes of the exchange''s direction were never captured (packet ' || e.packet
               || '): the reply''s time is when they were skipped' AS detail
    FROM l JOIN ev e ON e.capture_id = l.capture_id AND e.flow_id = l.af
    WHERE e.kind = 'gap' AND e.direction = 'in' AND e.t > l.o AND e.t <= l.a)
SELECT capture_id, venue, endpoint, flow_id, leg, correlation_id, kind,
       make_timestamp_ns(o) AS order_ts, latency_ns, cause, make_timestamp_ns(stall_ts) AS stall_ts,
       cost_ns, detail
{_ALL_CTES}
ORDER BY order_ts, capture_id, flow_id, correlation_id, stall_ts, cause, leg"""


def compute(ds: Dataset, since: int | None = None, more_rtt: pa.Table | None = None,
            capture_id: str | None = None,
            given: dict[str, pa.Table] | None = None, few: bool = False) -> pa.Table:
    """The ``causes`` rows of the dataset's (or one capture's) latency rows, computed
    from its tables (what the ingest stores; ``pcapflow.why``); ``since``: of the rows
    whose reply came then or later only; ``more_rtt``: ``tcp_rtt`` rows (without
    ``capture_id``: of ``capture_id``) its delayed ACKs are also looked for in
    (``causes_sql``); ``given``: ``latency`` and ``acks`` rows (without ``capture_id``:
    of ``capture_id``) read instead of the tables', holding at least those of the
    replies from ``since`` on (``since_rows``: a rotation's later command is given
    the minutes of matcher rows its latency alerts read, and finds the causes of the
    last seconds'); ``few``: the caller knows the rows are few (``Dataset.small_arrow``:
    the query run without the relation API's reading of its text, ~0.02 s less here)."""
    sql = causes_sql(since, "_causes_more_rtt" if more_rtt is not None and more_rtt.num_rows
                     else None)
    names = []
    if more_rtt is not None and more_rtt.num_rows:
        names.append("_causes_more_rtt")
        ds.con.register(names[-1], _with_capture(more_rtt.select(list(DACK_COLUMNS)),
                                                 capture_id))
    for table, rows in (given or {}).items():
        names.append(f"_causes_{table}")
        ds.con.register(names[-1], _with_capture(rows, capture_id))
        sql = sql.replace({"latency": "FROM latency", "acks": "JOIN acks ak"}[table],
                          {"latency": f"FROM {names[-1]}",
                           "acks": f"JOIN {names[-1]} ak"}[table], 1)
    try:
        return _utc_times(ds.small_arrow(sql) if few else ds.sql(sql).to_arrow_table())
    finally:
        for name in names:
            ds.con.unregister(name)


PER_ORDER = ("dack", "resend", "zw", "gap")
"""The causes' CTEs that join each latency row with what its own window holds (no other
latency row, no message table): ``possible`` says which rows each can find a row for."""


class Possible(NamedTuple):
    """What ``possible`` found: ``compute`` of the latency rows ``rows`` names, with only
    the CTEs of ``ctes``, our pure ACKs read from ``dack``, gives every row ``compute``
    gives over them all."""

    rows: np.ndarray
    """Per latency row: may one of ``PER_ORDER``'s causes be inside its window."""
    ctes: tuple[str, ...]
    """Those of ``PER_ORDER`` that may give a row."""
    dack: pa.Table
    """The ``tcp_rtt`` rows ``delayed_ack`` can read (``delayed_ack_candidates``'s
    conditions) on the orders' connections: ``DACK_COLUMNS`` and t (``ts_ack`` as ns)."""


def possible(ds: Dataset, latency: pa.Table, events: pa.Table | None = None,
             replies: bool = True) -> Possible | None:
    """Which of ``latency``'s rows (the rows of the view's ``latency``, without
    ``capture_id``; one capture) ``compute(ds)`` (every latency row, nothing carried) can
    give a row for; None when it cannot say (run the SQL over every row). Each cause's
    own conditions are checked on what it reads: ``delayed_ack``, the resends, zero
    windows and gaps inside an order's window, exactly, per order; ``tls_coalescing`` and
    ``head_of_line`` (which read the reply connection's messages around the reply),
    loosely, per connection: any inbound message on an order's reply connection ending
    with the next one, or 16 KiB or more after the one before it (stream offsets tied, or
    a null read) gives None. Most captures have no cause at all, and where some orders
    have one the SQL's plan of 12 CTEs, its joins and its scans of ``tcp_rtt``,
    ``tls_records`` and the messages cost ~0.1 s more than these few reads and the SQL
    over those orders alone (``benchmarks/README.md``, session 22, derive18l; session 23,
    why18m). ``events``: the view's ``tcp_events`` rows of ``alerts.tcp_events_rows``
    (None: read here); ``replies=False``: the reply connections' messages not read (the
    rows of ``tls_coalescing`` and ``head_of_line`` then not covered: for tests)."""
    import numpy as np
    import pyarrow.compute as pc

    def ns(col: pa.ChunkedArray) -> np.ndarray:
        return pc.fill_null(col.cast(pa.int64()), 0).to_numpy()

    n = latency.num_rows
    no_dack = pa.table({k: pa.array([], t) for k, t in (
        ("flow_id", pa.int64()), ("direction", pa.string()), ("piggybacked", pa.bool_()),
        ("method", pa.string()), ("rtt_ns", pa.int64()), ("ts_sent", TS), ("ts_ack", TS),
        ("t", pa.int64()))})
    if n == 0:
        return Possible(np.zeros(0, np.bool_), (), no_dack)
    valid = {k: pc.is_valid(latency.column(k)).to_numpy(zero_copy_only=False)
             for k in ("flow_id", "order_ts", "ack_ts")}
    flow, o, a = (ns(latency.column(k)) for k in ("flow_id", "order_ts", "ack_ts"))
    af_col = pc.coalesce(latency.column("ack_flow_id"), latency.column("flow_id"))
    af = ns(af_col)
    net = ns(latency.column("network_est_ns"))
    timed = valid["order_ts"] & valid["ack_ts"]  # (a null time: no cause)
    on_flow = timed & valid["flow_id"]  # (delayed ACKs, resends, zero windows)
    on_af = timed & pc.is_valid(af_col).to_numpy(zero_copy_only=False)  # (gaps, replies)
    found = {c: np.zeros(n, np.bool_) for c in PER_ORDER}
    if not on_af.any():
        return Possible(np.zeros(n, np.bool_), (), no_dack)
    dack = no_dack
    if on_flow.any():
        flows = ", ".join(str(int(f)) for f in np.unique(flow[on_flow]))
        # delayed_ack: our pure ACKs of DELAYED_ACK_MIN_NS or more on an order's
        # connection, at or after the reply less the slack, inside the window
        dack = ds.small_arrow(
            f"SELECT {', '.join(DACK_COLUMNS)}, epoch_ns(ts_ack) AS t FROM tcp_rtt "
            f"WHERE direction = 'in' "
            f"AND NOT coalesce(piggybacked, false) AND coalesce(method, 'ack') = 'ack' "
            f"AND rtt_ns >= {DELAYED_ACK_MIN_NS} AND flow_id IN ({flows}) "
            f"AND ts_ack IS NOT NULL")
        if dack.num_rows:
            slack = np.maximum(HOLD_SLACK_NS, 2 * net)
            found["dack"] = _any_in(flow, np.maximum(o, a - slack - 1), a, on_flow,
                                    ns(dack.column("flow_id")), ns(dack.column("t")))
    if events is None:
        from .alerts import tcp_events_rows

        events = tcp_events_rows(ds)
    ev = events.filter(pc.and_(pc.is_valid(events.column("f")),
                               pc.is_valid(events.column("t"))))
    if ev.num_rows:
        f_e, t_e = ev.column("f").to_numpy(), ev.column("t").to_numpy()

        def kind(*kinds: str) -> np.ndarray:
            return pc.is_in(ev.column("kind"), pa.array(kinds)).to_numpy(zero_copy_only=False)

        gap_in = kind("gap") & pc.fill_null(pc.equal(ev.column("direction"), "in"),
                                            False).to_numpy(zero_copy_only=False)
        for cte, which, key, rows in (("resend", kind(*RESENDS), flow, on_flow),
                                      ("zw", kind("zero_window"), flow, on_flow),
                                      ("gap", gap_in, af, on_af)):
            if which.any():
                found[cte] = _any_in(key, o, a, rows, f_e[which], t_e[which])
    # tls_coalescing, head_of_line: the inbound messages of the replies' connections
    afs = "" if not replies else ", ".join(str(int(f)) for f in np.unique(af[on_af]))
    msg = None if not replies else ds.small_arrow(" UNION ALL ".join(
        f"SELECT flow_id AS f, stream_offset AS s, epoch_ns(ts_last) AS t FROM {t} "
        f"WHERE direction = 'in' AND flow_id IN ({afs})"
        for t in ("ws_messages", "http_messages", "fix_messages")))
    if msg is not None and msg.num_rows >= 2:
        if any(c.null_count for c in msg.columns):
            return None
        f_m, s_m, t_m = (msg.column(k).to_numpy() for k in ("f", "s", "t"))
        order = np.lexsort((s_m, f_m))
        f_m, s_m, t_m = f_m[order], s_m[order], t_m[order]
        same = f_m[1:] == f_m[:-1]
        if (same & ((s_m[1:] == s_m[:-1]) | (t_m[1:] == t_m[:-1])
                    | (s_m[1:] - s_m[:-1] >= HOL_BYTES))).any():
            return None
    rows = np.zeros(n, np.bool_)
    for hit in found.values():
        rows |= hit
    return Possible(rows, tuple(c for c in PER_ORDER if found[c].any()), dack)


def none_possible(ds: Dataset, latency: pa.Table, events: pa.Table | None = None) -> bool:
    """Can ``compute(ds)`` (every latency row, nothing carried) give no row at all?
    True only when it cannot (``possible``: no row may have a cause)."""
    p = possible(ds, latency, events)
    return p is not None and not p.rows.any()


def of_capture(ds: Dataset, latency: pa.Table, capture_id: str,
               events: pa.Table | None = None, few: bool = False) -> pa.Table:
    """``compute(ds, capture_id=capture_id, few=few)``: the ``causes`` rows of every
    latency row of a view of one capture (``latency``: those rows, without
    ``capture_id``), the SQL run over the rows ``possible`` says may have a cause only
    (none: not run), with only the CTEs that may give a row, our pure ACKs from the few
    it read (where it cannot say: over every row)."""
    p = possible(ds, latency, events)
    if p is None:
        return compute(ds, capture_id=capture_id, few=few)
    if not p.rows.any():
        from .pipelines.tables.schemas import TABLES

        return TABLES["causes"].empty_table()
    return _of_rows(ds, latency, p, capture_id)


def _of_rows(ds: Dataset, latency: pa.Table, p: Possible, capture_id: str) -> pa.Table:
    """The causes' SQL over the latency rows ``p`` names, with its CTEs and ACKs."""
    lat, dack = "_causes_possible_latency", "_causes_possible_dack"
    sql = CAUSES_SQL.replace("FROM latency)", f"FROM {lat})", 1).replace(
        "JOIN tcp_rtt t ON", f"JOIN {dack} t ON", 1)
    sql = sql.replace(_ALL_CTES, "FROM (" + " UNION ALL BY NAME ".join(
        f"FROM {c}" for c in p.ctes) + ")", 1)
    ds.con.register(lat, _with_capture(latency.filter(pa.array(p.rows)), capture_id))
    ds.con.register(dack, _with_capture(p.dack, capture_id))
    try:
        return _utc_times(ds.small_arrow(sql))
    finally:
        ds.con.unregister(lat)
        ds.con.unregister(dack)


def _any_in(key: np.ndarray, lo: np.ndarray, hi: np.ndarray, rows: np.ndarray,
            at_key: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Per window ``(lo[i], hi[i]]`` of ``key[i]`` (only where ``rows``): is some
    ``at[j]`` of the same key inside it?"""
    import numpy as np

    out = np.zeros(len(key), np.bool_)
    for k in np.intersect1d(key[rows], at_key):
        mine = rows & (key == k)
        t = np.sort(at[at_key == k])
        out[mine] = (np.searchsorted(t, hi[mine], "right")
                     > np.searchsorted(t, lo[mine], "right"))
    return out


def _with_capture(rows: pa.Table, capture_id: str | None) -> pa.Table:
    return rows.append_column("capture_id", pa.array([capture_id] * rows.num_rows,
                                                     pa.string()))


def since_rows(latency: pa.Table, acks: pa.Table, since: int) -> dict[str, pa.Table]:
    """Of a capture's ``latency`` and ``acks`` rows (without ``capture_id``), those
    ``compute(since=since)`` reads (and some it does not: a row without times): the
    latency rows whose reply (else order) is ``since`` or later, the replies then or
    later (a latency row's reply is the ``acks`` row of its time). Filtered in NumPy:
    DuckDB's scan of a rotation's window of rows, minutes of them, cost more."""
    import numpy as np
    import pyarrow.compute as pc

    def ns(col: pa.ChunkedArray) -> np.ndarray:
        return pc.fill_null(col.cast(pa.int64()), 2**62).to_numpy()

    o, a = ns(latency.column("order_ts")), ns(latency.column("ack_ts"))
    keep = np.where(a == 2**62, o, a) >= since
    return {"latency": latency.filter(pa.array(keep)),
            "acks": acks.filter(pa.array(ns(acks.column("ts")) >= since))}


def causes(ds: Dataset) -> pd.DataFrame:
    """One row per (order, stall inside its window): ``cause``, when (``stall_ts``), what it
    may have cost (``cost_ns``) and a sentence (``detail``); the ``causes`` table."""
    from .analysis import utc

    return utc(ds.df("SELECT * FROM causes ORDER BY order_ts, capture_id, flow_id, "
                     "correlation_id, stall_ts, cause"))


def _utc_times(table: pa.Table) -> pa.Table:
    """make_timestamp_ns gives naive nanoseconds since the epoch: mark them UTC, as
    every time column of the tables is (a cast keeps the values, to the ns)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            table = table.set_column(i, f.name, table.column(i).cast(TS))
    return table
