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

What this infers: a cause is a stall that overlaps the order on its own
connection, with the timing that makes it plausible; the wire cannot prove
that the exchange's code waited on it. The ingest stores the rows (the
``causes`` table, ``pcapflow.why``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from .pipelines.tables.schemas import TS

if TYPE_CHECKING:  # pandas: only where a DataFrame is returned (an ingest has none)
    import pandas as pd

    from .dataset import Dataset

DELAYED_ACK_MIN_NS = 20_000_000
"""A pure ACK from us this long after the data it acknowledges was delayed (Linux's
delayed-ACK timer is 40 ms, others' up to 200 ms; quick ACKs come in µs)."""
HOLD_SLACK_NS = 2_000_000
"""The reply counts as released by our ACK when it was whole this soon after it
(or within two network round trips, whichever is longer)."""
RESENDS = ("retransmission", "fast_retransmission")
LOSS_SIGNS = ("out_of_order", "gap", "duplicate_ack")

CAUSES_SQL = f"""
WITH l AS (
    SELECT capture_id, venue, endpoint, flow_id, leg, correlation_id, kind,
           epoch_ns(order_ts) AS o, epoch_ns(ack_ts) AS a, latency_ns,
           coalesce(network_est_ns, 0) AS net
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
      AND t.rtt_ns >= {DELAYED_ACK_MIN_NS}
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
    WHERE e.kind = 'zero_window' AND e.t > l.o AND e.t <= l.a)
SELECT capture_id, venue, endpoint, flow_id, leg, correlation_id, kind,
       make_timestamp_ns(o) AS order_ts, latency_ns, cause, make_timestamp_ns(stall_ts) AS stall_ts,
       cost_ns, detail
FROM (FROM dack UNION ALL BY NAME FROM resend UNION ALL BY NAME FROM zw)
ORDER BY order_ts, capture_id, flow_id, correlation_id, stall_ts, cause"""


def compute(ds: Dataset) -> pa.Table:
    """The ``causes`` rows of the dataset's (or one capture's) latency rows, computed
    from its tables (what the ingest stores; ``pcapflow.why``)."""
    return _utc_times(ds.sql(CAUSES_SQL).to_arrow_table())


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
