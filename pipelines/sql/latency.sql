-- The output tables: orders, acks (both legs), latency, unmatched.
--
-- latency_ns = ack.ts - order.ts, both ts_last (DESIGN.md "Time": wire-to-wire
-- latency of an order = ack.ts_last - order.ts_last). network_rtt_ns comes
-- from tcp_rtt: the row of the order's flow whose ts_sent is the order's
-- ts_last, i.e. the data segment carrying the order's last byte (for TLS, the
-- end of the record holding it), first transmission (decompose.sql then gives
-- every order a network estimate and exchange_ns from it). An ACK
-- that rode on a data segment (typically the reply itself, on REST) measures the
-- exchange's processing too, so it gives no network_rtt_ns (null, not zero);
-- nor does a segment that was retransmitted before its ACK (Karn's rule).
-- Input: all_orders, all_acks, engine_acks, tcp_rtt, latency_prev.

-- Only the segments that end an order are looked up.
CREATE OR REPLACE TEMP TABLE rtt_by_segment AS
SELECT t.flow_id, epoch_ns(t.ts_sent) AS ts, min(t.rtt_ns) AS rtt_ns
FROM tcp_rtt t WHERE t.direction = 'out' AND NOT coalesce(t.piggybacked, false)
  AND coalesce(t.method, 'ack') = 'ack'  -- the ACK of the segment (tsecr: decompose.sql)
  AND NOT coalesce(t.retransmitted, false)  -- Karn: an ACK after a resend is ambiguous
  AND EXISTS (SELECT 1 FROM all_orders o
              WHERE o.flow_id = t.flow_id AND o.ts = epoch_ns(t.ts_sent))
GROUP BY ALL;

-- (views: each is read once, by match.py, and out_acks by out_latency)
CREATE OR REPLACE TEMP VIEW out_orders AS
SELECT * FROM all_orders;

CREATE OR REPLACE TEMP VIEW out_acks AS
SELECT * FROM all_acks UNION ALL BY NAME SELECT * FROM engine_acks;

CREATE OR REPLACE TEMP TABLE out_latency AS
SELECT o.venue, o.endpoint, o.flow_id, o.protocol, o.kind, a.leg, o.correlation_id,
       o.request_id, o.client_order_id, o.orig_client_order_id, o.target_order_id,
       o.ts AS order_ts, a.ts AS ack_ts, a.ts - o.ts AS latency_ns,
       r.rtt_ns AS network_rtt_ns, a.ts - o.ts - r.rtt_ns AS exchange_ns,
       a.status, o.decoded, a.exchange_order_id, a.error_code, a.flow_id AS ack_flow_id
FROM all_orders o
JOIN out_acks a ON a.order_key = o.order_key
LEFT JOIN rtt_by_segment r ON r.flow_id = o.flow_id AND r.ts = o.ts
UNION ALL BY NAME  -- (a rotation's carried rows, their segment's sample kept: common.sql)
SELECT * FROM latency_prev;

CREATE OR REPLACE TEMP TABLE out_unmatched AS
SELECT o.venue, o.flow_id, 'order' AS what, o.endpoint, o.kind, o.correlation_id, o.ts,
       o.protocol, o.request_id, o.client_order_id, o.orig_client_order_id,
       o.target_order_id, o.decoded
FROM all_orders o
WHERE NOT EXISTS (SELECT 1 FROM all_acks a WHERE a.order_key = o.order_key)
UNION ALL
SELECT a.venue, a.flow_id, 'reply' AS what, a.endpoint, a.kind, a.correlation_id, a.ts,
       a.protocol, a.request_id, a.client_order_id, a.orig_client_order_id,
       NULL AS target_order_id, a.decoded
FROM all_acks a
WHERE a.order_key IS NULL;
