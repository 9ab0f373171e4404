-- Second leg (venues.md 15.5): order action -> first event about it on a
-- private order stream (Binance executionReport / ORDER_TRADE_UPDATE, OKX
-- ``orders`` channel, Bybit ``order`` topic, Kraken ``executions``, Deribit
-- ``user.orders``, ...), which may arrive on another connection of the
-- capture, so the join is by client order id (or exchange order id) across
-- the capture's flows of the same venue.
-- An event is about the order named by its original client id when it has
-- one (Binance ``C`` on a cancel or amend), else by its client id; its state
-- maps to new / cancel / amend (engine_states), and a "new"-state event that
-- flags an amendment (OKX amendResult, Deribit replaced) is an amend.
-- Orders the gateway rejected get no engine leg (OKX: "A reject at entry
-- gives ... no orders-channel update").
-- Input: ws_in (its ``event`` messages), engine_streams, engine_states, all_orders,
-- all_acks.
-- Output: engine_acks.

-- The events read (none: match.py skips the rest of this file, GATES).
CREATE OR REPLACE TEMP TABLE engine_events AS
WITH ev AS (
    SELECT m.rid, m.flow_id, m.ts, m.stream_offset, m.venue, e.dialect,
           jstr(m.doc, e.coid_path) AS coid,
           nullif(jstr(m.doc, e.orig_coid_path), '') AS orig_coid,
           jstr(m.doc, e.order_id_path) AS order_id,
           jstr(m.doc, e.state_path) AS state,
           coalesce(jstr(m.doc, e.amend_path) LIKE e.amend_like, false) AS amended
    FROM ws_in m
    JOIN engine_streams e ON e.dialect = m.dialect AND jstr(m.doc, e.match_path) LIKE e.match_like
    WHERE m.direction = 'in' AND m.event)
SELECT ev.* EXCLUDE (dialect, amended),
       CASE WHEN s.event_kind = 'new' AND ev.amended THEN 'amend' ELSE s.event_kind END
           AS event_kind,
       coalesce(ev.orig_coid, ev.coid) AS subject
FROM ev LEFT JOIN engine_states s ON s.dialect = ev.dialect AND s.state = ev.state;

-- An order's engine leg is the first event about it after it (in time, then
-- stream offset), found by client order id or by exchange order id.
CREATE OR REPLACE TEMP TABLE engine_acks AS
WITH o AS (
    SELECT o.*,
           CASE WHEN o.kind = 'new' THEN o.client_order_id ELSE o.orig_client_order_id END
               AS subject,
           coalesce(o.target_order_id, a.exchange_order_id) AS subject_order_id
    FROM all_orders o LEFT JOIN all_acks a ON a.order_key = o.order_key
    WHERE o.decoded AND a.status IS DISTINCT FROM 'rejected'),
candidate AS (
    -- two equi-joins (by client id, by exchange id) rather than one join on
    -- "a OR b", which DuckDB could only run as a nested loop
    SELECT o.order_key, e.rid, e.ts, e.stream_offset FROM o JOIN engine_events e
      ON e.subject = o.subject AND e.event_kind = o.kind AND e.ts > o.ts
     AND e.venue IS NOT DISTINCT FROM o.venue
    UNION ALL
    SELECT o.order_key, e.rid, e.ts, e.stream_offset FROM o JOIN engine_events e
      ON e.order_id = o.subject_order_id AND e.event_kind = o.kind AND e.ts > o.ts
     AND e.venue IS NOT DISTINCT FROM o.venue),
first AS (
    SELECT order_key, arg_min(rid, (ts, stream_offset, rid)) AS rid
    FROM candidate GROUP BY order_key)
SELECT o.order_key, o.venue, e.flow_id, 'websocket' AS protocol, o.endpoint, o.kind,
       o.correlation_id, o.request_id,
       o.client_order_id, o.orig_client_order_id, 'ws_messages' AS source_table,
       e.stream_offset, e.ts,
       CASE WHEN lower(e.state) = 'rejected' THEN 'rejected' ELSE 'accepted' END AS status,
       'engine' AS leg, NULL::VARCHAR AS error_code, true AS decoded,
       e.order_id AS exchange_order_id
FROM o JOIN first c ON c.order_key = o.order_key
JOIN engine_events e ON e.rid = c.rid;
