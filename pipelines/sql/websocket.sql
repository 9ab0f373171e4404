-- WebSocket JSON request/reply (venues.md 15.4): pair by request id per connection.
--
-- Ids may be reused once answered (Binance: "You can freely reuse IDs within
-- a session"), so a reply belongs to the OLDEST UNANSWERED request with its id
-- on its connection: a FIFO queue per (flow, id). In SQL: walk each
-- (flow, id) partition in time order with a running balance
-- (+1 request, -1 reply). A reply that drives the balance to a new minimum
-- below zero found the queue empty: it is an orphan. Every other reply pops
-- the queue, and since a FIFO pops requests in arrival order, the k-th
-- non-orphan reply answers the k-th request. Requests of every method take
-- part (a reused id may belong to a subscribe as well as an order); only
-- order actions (ws_actions) become orders.
-- When a dialect pairs id-less requests by op (Bybit without reqId), the key
-- is the op instead of the id.
-- Input: ws_candidates (match.py's prefilter: the text messages of
-- ws_messages that can be a request or a reply, ``keyed``, or an engine
-- event, ``event``, of their flow's dialect), flow_rules, ws_dialects,
-- ws_actions.
-- Output: ws_in (JSON messages, also read by engine.sql), ws_orders, ws_acks. The
-- correlation id of an order (and of an orphan reply) is its request id scoped by
-- its connection and time (scoped_id): ids repeat across connections and in one.

-- The messages read (none: match.py skips the rest of this file, GATES). A
-- message's rid is its place in stream order, whatever order the rows were
-- written in (an ingest sharded across processes writes several files).
CREATE OR REPLACE TEMP TABLE ws_in AS
SELECT row_number() OVER (ORDER BY m.flow_id, m.direction, m.stream_offset, m.ts_last) AS rid,
       m.flow_id, m.direction,
       epoch_ns(m.ts_last) AS ts, epoch_ns(m.ts_first) AS ts_first, m.stream_offset,
       m.payload AS doc, m.keyed, m.event, f.venue, f.dialect
FROM ws_candidates m JOIN flow_rules f USING (flow_id)
-- NUL: a byte that copies inflate history from before the capture
-- (ws_messages.payload_unknown); such a message is never read, so nothing is ever
-- matched on a byte we do not know (json_valid refuses NUL too; this says why).
WHERE json_valid(m.payload) AND NOT contains(m.payload, chr(0));

CREATE OR REPLACE TEMP TABLE ws_req AS
WITH r AS MATERIALIZED (
    SELECT m.*, d.reply_method_paths, d.method_strip,
           json_paths_key(m.doc, d.req_id_paths) AS id_key,
           json_paths(m.doc, d.req_id_paths) AS request_id,
           json_paths(m.doc, d.method_paths) AS sent_method
    FROM ws_in m JOIN ws_dialects d ON d.dialect = m.dialect
    WHERE m.direction = 'out' AND m.keyed),
-- the dialect's method_strip, once per method name rather than per message (a
-- pattern that is not a constant is compiled for every row it is applied to)
stripped AS (
    SELECT sent_method, method_strip,
           regexp_replace(sent_method, coalesce(method_strip, '^$'), '') AS method
    FROM (SELECT DISTINCT sent_method, method_strip FROM r))
SELECT r.* EXCLUDE (reply_method_paths, method_strip, id_key, sent_method), s.method,
       coalesce(r.id_key, CASE WHEN len(r.reply_method_paths) > 0 THEN 'op:' || s.method END)
           AS key
FROM r JOIN stripped s
  ON s.sent_method IS NOT DISTINCT FROM r.sent_method
 AND s.method_strip IS NOT DISTINCT FROM r.method_strip;

CREATE OR REPLACE TEMP TABLE ws_rep AS
WITH r AS (
    SELECT m.*,
           json_paths_key(m.doc, d.reply_id_paths) AS id_key,
           json_paths(m.doc, d.reply_method_paths) AS reply_method,
           TRY_CAST(jstr(m.doc, d.status_path) AS INTEGER) AS ws_status,
           error_code_at(m.doc, d.error_paths) AS error_code,
           d.unknown_codes,
           json_paths(m.doc, d.order_id_paths) AS exchange_order_id,
           d.reply_filter_path IS NULL
               OR jstr(m.doc, d.reply_filter_path) = d.reply_filter_value AS wanted
    FROM ws_in m JOIN ws_dialects d ON d.dialect = m.dialect
    WHERE m.direction = 'in' AND m.keyed)
SELECT * EXCLUDE (id_key, reply_method, ws_status, error_code, unknown_codes,
                  exchange_order_id, wanted),
       coalesce(id_key, 'op:' || reply_method) AS key,
       ws_status, error_code, unknown_codes, exchange_order_id
FROM r
WHERE wanted OR error_code IS NOT NULL;

-- The FIFO walk described at the top.
CREATE OR REPLACE TEMP TABLE ws_fifo AS
WITH ev AS (
    SELECT rid, flow_id, key, ts, stream_offset, 0 AS side FROM ws_req WHERE key IS NOT NULL
    UNION ALL
    SELECT rid, flow_id, key, ts, stream_offset, 1 AS side FROM ws_rep WHERE key IS NOT NULL),
bal AS (
    SELECT *, sum(CASE side WHEN 0 THEN 1 ELSE -1 END) OVER w AS balance
    FROM ev WINDOW w AS (PARTITION BY flow_id, key ORDER BY ts, side, stream_offset
                         ROWS UNBOUNDED PRECEDING)),
low AS (
    SELECT *, min(least(balance, 0)) OVER w AS low_water
    FROM bal WINDOW w AS (PARTITION BY flow_id, key ORDER BY ts, side, stream_offset
                          ROWS UNBOUNDED PRECEDING)),
orph AS (
    SELECT *, side = 1 AND low_water < coalesce(lag(low_water) OVER w, 0) AS orphan
    FROM low WINDOW w AS (PARTITION BY flow_id, key ORDER BY ts, side, stream_offset))
SELECT *, row_number() OVER (PARTITION BY flow_id, key, side, orphan
                             ORDER BY ts, stream_offset) AS nth
FROM orph;

CREATE OR REPLACE TEMP TABLE ws_pairs AS
SELECT q.rid AS req_rid, p.rid AS rep_rid
FROM ws_fifo q JOIN ws_fifo p
  ON p.flow_id = q.flow_id AND p.key = q.key AND p.nth = q.nth
 AND q.side = 0 AND p.side = 1 AND NOT p.orphan;

CREATE OR REPLACE TEMP TABLE ws_orders AS
SELECT 'ws:' || q.rid AS order_key, q.venue, q.flow_id, 'websocket' AS protocol,
       q.method AS endpoint, a.kind,
       scoped_id(coalesce(q.request_id, q.key), q.flow_id, q.ts) AS correlation_id,
       q.request_id,
       json_paths(q.doc, a.coid) AS client_order_id,
       json_paths(q.doc, a.orig_coid) AS orig_client_order_id,
       json_paths(q.doc, a.orig_order_id) AS target_order_id,
       'ws_messages' AS source_table, q.stream_offset, q.ts, q.ts_first, true AS decoded,
       q.rid
FROM ws_req q JOIN ws_actions a ON a.dialect = q.dialect AND a.method = q.method;

CREATE OR REPLACE TEMP TABLE ws_acks AS
SELECT o.order_key, o.venue, o.flow_id, o.protocol, o.endpoint, o.kind, o.correlation_id,
       o.request_id, o.client_order_id, o.orig_client_order_id,
       'ws_messages' AS source_table, r.stream_offset, r.ts,
       ack_status(r.ws_status, r.error_code, r.unknown_codes) AS status, 'ack' AS leg,
       r.error_code, true AS decoded, r.exchange_order_id
FROM ws_orders o
JOIN ws_pairs p ON p.req_rid = o.rid
JOIN ws_rep r ON r.rid = p.rep_rid
UNION ALL BY NAME
-- Orphan replies: an id no request was waiting for. Id-less replies paired by
-- op are listed only when the op is an order action (not every "pong").
SELECT NULL AS order_key, r.venue, r.flow_id, 'websocket' AS protocol,
       NULL AS endpoint, NULL AS kind,
       scoped_id(coalesce(json_paths(r.doc, d.reply_id_paths), r.key), r.flow_id, r.ts)
           AS correlation_id,
       json_paths(r.doc, d.reply_id_paths) AS request_id, NULL AS client_order_id,
       NULL AS orig_client_order_id, 'ws_messages' AS source_table, r.stream_offset, r.ts,
       ack_status(r.ws_status, r.error_code, r.unknown_codes) AS status, 'ack' AS leg,
       r.error_code, true AS decoded, r.exchange_order_id
FROM ws_fifo x JOIN ws_rep r ON r.rid = x.rid AND x.side = 1 AND x.orphan
JOIN ws_dialects d ON d.dialect = r.dialect
WHERE NOT starts_with(r.key, 'op:')
   OR EXISTS (SELECT 1 FROM ws_actions a
              WHERE a.dialect = r.dialect AND 'op:' || a.method = r.key);
