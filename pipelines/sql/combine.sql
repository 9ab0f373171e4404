-- All order actions and replies of every family in one place, plus what the
-- replies teach: the exchange order id of each new order, so that a cancel or
-- amend naming only the exchange id (Deribit private/cancel, OKX by ordId)
-- gets the client order id of the order it acts on (venues.md 15.5).
-- Input: rest_*, ws_*, fix_*, enc_* tables. Output: all_orders, all_acks.

-- Each family's own keys stay behind (a family cut short has none: no_orders).
CREATE OR REPLACE TEMP TABLE all_orders AS
SELECT COLUMNS(lambda c: c NOT IN ('rule_dialect', 'request_index')) FROM rest_orders
UNION ALL BY NAME SELECT COLUMNS(lambda c: c <> 'rid') FROM ws_orders
UNION ALL BY NAME SELECT COLUMNS(lambda c: c NOT IN ('rid', 'seq_num')) FROM fix_orders
UNION ALL BY NAME SELECT COLUMNS(lambda c: c <> 'burst') FROM enc_orders;

CREATE OR REPLACE TEMP TABLE all_acks AS
SELECT * FROM rest_acks
UNION ALL BY NAME SELECT * FROM ws_acks
UNION ALL BY NAME SELECT * FROM fix_acks
UNION ALL BY NAME SELECT * FROM enc_acks;

-- One correlation id per action in a dataset (docs/tables.md): "<id>#<flow_id>@<ts>"
-- (scoped_id, made by each family), <id> what the action carried (a client order
-- id: REST, FIX; a JSON request id), empty when it carried none (here); a generated
-- "#<flow_id>.<n>@<ts>" where a family numbers actions itself. A client's ids alone are not unique: request
-- ids restart on each connection, a client order id may be reused once its order
-- is closed (Binance asks only that it be unique among open orders), FIX ClOrdIDs
-- restart each day, and captures of other days share them. The id of an action
-- depends on that action alone (its id, connection and time), never on the other
-- actions of the capture, so a set resumed file by file gets the ids one ingest
-- gives. Should two actions still share one (the same request id twice on a
-- connection in one segment), ".<k>" numbers them in stream order. The id as sent
-- stays in client_order_id / request_id.
CREATE OR REPLACE TEMP TABLE unique_ids AS
WITH scoped AS (
    SELECT order_key, flow_id, stream_offset,
           coalesce(correlation_id, scoped_id('', flow_id, ts)) AS id
    FROM all_orders)
SELECT order_key,
       CASE WHEN count(*) OVER (PARTITION BY id) > 1
            THEN id || '.' || row_number() OVER (PARTITION BY id
                                                 ORDER BY flow_id, stream_offset, order_key)
            ELSE id END AS correlation_id
FROM scoped;

UPDATE all_orders o SET correlation_id = u.correlation_id
FROM unique_ids u
WHERE u.order_key = o.order_key AND u.correlation_id IS DISTINCT FROM o.correlation_id;

UPDATE all_acks a SET correlation_id = o.correlation_id
FROM all_orders o
WHERE a.order_key = o.order_key AND a.correlation_id IS DISTINCT FROM o.correlation_id;

-- The accepted new orders: this match's, and (learned_prev) those of a rotation's
-- earlier files whose rows it does not read (pipelines/match_carry.py; else empty).
-- Of learned_prev only the ids a cancel or amend below may look up (every row of
-- each: the groups below stay whole): the set's ids reach a day of orders, and
-- grouping them all cost a resumed command ~0.1 s at 240k (make_capture.py --answered).
-- With no cancel or amend at all (both lists below empty) learned_prev is hardly read:
-- the semi join on `one` with an empty side ends its scan (~8 ms a command at ~200k ids,
-- growing with them, to 1.3).
CREATE OR REPLACE TEMP TABLE accepted_ids AS
SELECT o.venue, o.client_order_id, a.exchange_order_id
FROM all_orders o JOIN all_acks a USING (order_key)
WHERE o.kind = 'new' AND a.status = 'accepted'
  AND a.exchange_order_id IS NOT NULL AND o.client_order_id IS NOT NULL
UNION ALL
SELECT l.venue, l.client_order_id, l.exchange_order_id
FROM (SELECT *, 1 AS one FROM learned_prev) l
SEMI JOIN (SELECT DISTINCT 1 AS one FROM all_orders WHERE kind IN ('cancel', 'amend')) c
  USING (one)
WHERE l.exchange_order_id IN (SELECT target_order_id FROM all_orders
                              WHERE kind IN ('cancel', 'amend')
                                AND orig_client_order_id IS NULL)
   OR l.client_order_id IN (SELECT orig_client_order_id FROM all_orders
                            WHERE kind IN ('cancel', 'amend') AND target_order_id IS NULL);

CREATE OR REPLACE TEMP TABLE learned_ids AS
SELECT venue, exchange_order_id, any_value(client_order_id) AS client_order_id
FROM accepted_ids
GROUP BY ALL;

UPDATE all_orders o SET orig_client_order_id = l.client_order_id
FROM learned_ids l
WHERE o.orig_client_order_id IS NULL AND o.kind IN ('cancel', 'amend')
  AND l.exchange_order_id = o.target_order_id AND l.venue IS NOT DISTINCT FROM o.venue;

-- And the other way: a cancel or amend naming only the client order id
-- (Binance origClientOrderId, as ccxt sends it) gets the exchange order id the
-- venue gave that order, when the capture holds one answer for that client id.
CREATE OR REPLACE TEMP TABLE learned_exchange_ids AS
SELECT venue, client_order_id, any_value(exchange_order_id) AS exchange_order_id
FROM accepted_ids
GROUP BY ALL HAVING count(DISTINCT exchange_order_id) = 1;

UPDATE all_orders o SET target_order_id = l.exchange_order_id
FROM learned_exchange_ids l
WHERE o.target_order_id IS NULL AND o.kind IN ('cancel', 'amend')
  AND l.client_order_id = o.orig_client_order_id AND l.venue IS NOT DISTINCT FROM o.venue;

UPDATE all_acks a SET orig_client_order_id = o.orig_client_order_id
FROM all_orders o
WHERE a.order_key = o.order_key AND a.orig_client_order_id IS NULL;
