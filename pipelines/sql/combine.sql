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

CREATE OR REPLACE TEMP TABLE learned_ids AS
SELECT o.venue, a.exchange_order_id, any_value(o.client_order_id) AS client_order_id
FROM all_orders o JOIN all_acks a USING (order_key)
WHERE o.kind = 'new' AND a.status = 'accepted'
  AND a.exchange_order_id IS NOT NULL AND o.client_order_id IS NOT NULL
GROUP BY ALL;

UPDATE all_orders o SET orig_client_order_id = l.client_order_id
FROM learned_ids l
WHERE o.orig_client_order_id IS NULL AND o.kind IN ('cancel', 'amend')
  AND l.exchange_order_id = o.target_order_id AND l.venue IS NOT DISTINCT FROM o.venue;

-- And the other way: a cancel or amend naming only the client order id
-- (Binance origClientOrderId, as ccxt sends it) gets the exchange order id the
-- venue gave that order, when the capture holds one answer for that client id.
CREATE OR REPLACE TEMP TABLE learned_exchange_ids AS
SELECT o.venue, o.client_order_id, any_value(a.exchange_order_id) AS exchange_order_id
FROM all_orders o JOIN all_acks a USING (order_key)
WHERE o.kind = 'new' AND a.status = 'accepted'
  AND a.exchange_order_id IS NOT NULL AND o.client_order_id IS NOT NULL
GROUP BY ALL HAVING count(DISTINCT a.exchange_order_id) = 1;

UPDATE all_orders o SET target_order_id = l.exchange_order_id
FROM learned_exchange_ids l
WHERE o.target_order_id IS NULL AND o.kind IN ('cancel', 'amend')
  AND l.client_order_id = o.orig_client_order_id AND l.venue IS NOT DISTINCT FROM o.venue;

UPDATE all_acks a SET orig_client_order_id = o.orig_client_order_id
FROM all_orders o
WHERE a.order_key = o.order_key AND a.orig_client_order_id IS NULL;
