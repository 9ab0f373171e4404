-- Where each order's time went: a network round-trip estimate for EVERY
-- latency row, and exchange_ns = latency_ns - that estimate.
--
-- network_rtt_ns (latency.sql) is the order's own segment to the exchange's
-- pure ACK of it; when the ACK rides on the reply (most REST orders) there is
-- none. The round trip of the path does not change from one order to the next,
-- though, and the connection measures it all the time: every data segment we
-- send that the exchange acknowledges with a pure ACK is a sample (tcp_rtt,
-- direction 'out', not piggybacked, not retransmitted: Karn). A sample is the
-- path's round trip plus whatever delayed the ACK (delayed ACK, queueing), never
-- less, so the estimate is the SMALLEST of the samples nearest the order in
-- time (a windowed minimum, as TCP's own min_rtt filter; RFC 6298 and BBR keep
-- the same reasoning), the order's own sample included when it has one.
--
-- Samples of the other direction (tcp_rtt 'in': the exchange's data to our
-- ACK) measure the capture point to OUR host and back, which is not part of
-- what the order's latency measures at the capture point (zero on a host
-- capture, plus our delayed ACK): they are not used.
--
-- network_method, by where the estimate came from:
--   pure_ack            the order's own segment's pure-ACK sample was the smallest
--                       (then network_est_ns = network_rtt_ns)
--   nearest_rtt_sample  another segment's pure ACK among the connection's
--                       RTT_WINDOW samples nearest the order was the smallest
--   handshake           the connection's handshake (SYN to SYN/ACK,
--                       flows.handshake_rtt_ns) was the smallest, or the only one
--   none                no sample at all (a connection picked up mid-stream and
--                       never acked by a pure ACK): network_est_ns and
--                       exchange_ns are null
-- network_spread_ns: interquartile range of the window's pure-ACK samples (0
-- with one sample or only the handshake): how far the samples disagreed.
-- network_samples: samples the minimum was taken over (window + handshake).
--
-- Scales: one window pass over the samples of the flows that have orders, and
-- two ASOF joins (the sample at or before the order, the one after); no
-- per-order scan of a flow's samples.
-- Input: out_latency, tcp_rtt, flow_handshake (flow_id, first_ts, handshake_rtt_ns). Output: out_latency, rewritten.

-- RTT_WINDOW = 9: the 4 samples either side of the one nearest the order.
CREATE OR REPLACE TEMP TABLE rtt_clean AS
SELECT t.flow_id, epoch_ns(t.ts_sent) AS ts, t.rtt_ns
FROM tcp_rtt t
WHERE t.direction = 'out' AND NOT coalesce(t.piggybacked, false)
  AND NOT coalesce(t.retransmitted, false) AND t.rtt_ns >= 0
  AND t.flow_id IN (SELECT DISTINCT flow_id FROM out_latency);

CREATE OR REPLACE TEMP TABLE rtt_window AS
SELECT flow_id, ts,
       min(rtt_ns) OVER w AS est,
       floor(quantile_cont(rtt_ns, 0.75) OVER w - quantile_cont(rtt_ns, 0.25) OVER w)::BIGINT
           AS spread,
       count(*) OVER w AS samples
FROM rtt_clean
WINDOW w AS (PARTITION BY flow_id ORDER BY ts ROWS BETWEEN 4 PRECEDING AND 4 FOLLOWING);

CREATE OR REPLACE TEMP TABLE latency_keyed AS
SELECT row_number() OVER () AS row_key, * FROM out_latency;

CREATE OR REPLACE TEMP TABLE rtt_nearest AS
WITH before AS (
    SELECT l.row_key, l.order_ts, r.ts, r.est, r.spread, r.samples
    FROM latency_keyed l ASOF LEFT JOIN rtt_window r
      ON r.flow_id = l.flow_id AND l.order_ts >= r.ts),
after AS (
    SELECT l.row_key, r.ts, r.est, r.spread, r.samples
    FROM latency_keyed l ASOF LEFT JOIN rtt_window r
      ON r.flow_id = l.flow_id AND l.order_ts < r.ts)
SELECT b.row_key,
       CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
            THEN a.est ELSE b.est END AS est,
       CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
            THEN a.spread ELSE b.spread END AS spread,
       CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
            THEN a.samples ELSE b.samples END AS samples
FROM before b JOIN after a USING (row_key);

-- The handshake is a sample too (SYN to SYN/ACK: the kernel answers at once,
-- so it is rarely inflated), but an old one: it counts only within
-- HANDSHAKE_WINDOW = 300 s of the order (Linux's min_rtt window,
-- net.ipv4.tcp_min_rtt_wlen), so a path that changed since is not hidden by it.
CREATE OR REPLACE TEMP TABLE out_latency AS
WITH d AS (
    SELECT l.*, n.est, n.spread, n.samples,
           CASE WHEN l.order_ts - epoch_ns(h.first_ts) <= 300000000000
                THEN h.handshake_rtt_ns END AS hs
    FROM latency_keyed l
    JOIN rtt_nearest n USING (row_key)
    LEFT JOIN flow_handshake h ON h.flow_id = l.flow_id),
m AS (
    SELECT *,
           CASE WHEN est IS NOT NULL AND network_rtt_ns IS NOT NULL
                     AND network_rtt_ns <= est AND (hs IS NULL OR network_rtt_ns <= hs)
                     THEN 'pure_ack'
                WHEN est IS NOT NULL AND (hs IS NULL OR est <= hs) THEN 'nearest_rtt_sample'
                WHEN hs IS NOT NULL THEN 'handshake'
                ELSE 'none' END AS network_method
    FROM d)
SELECT COLUMNS(lambda c: c NOT IN ('row_key', 'est', 'spread', 'samples', 'hs',
                                   'exchange_ns', 'network_method')),
       CASE network_method WHEN 'pure_ack' THEN network_rtt_ns
                           WHEN 'nearest_rtt_sample' THEN est
                           WHEN 'handshake' THEN hs END AS network_est_ns,
       network_method,
       CASE WHEN network_method = 'none' THEN NULL
            ELSE coalesce(spread, 0) END AS network_spread_ns,
       coalesce(samples, 0) + (hs IS NOT NULL)::BIGINT AS network_samples,
       latency_ns - network_est_ns AS exchange_ns
FROM m
ORDER BY row_key;
