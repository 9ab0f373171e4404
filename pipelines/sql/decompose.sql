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
-- TCP timestamps (tcp_rtt method 'tsecr', RFC 7323) give samples where no pure
-- ACK acknowledged our data: our segment carrying TSval v to the exchange's
-- first segment echoing v in TSecr. An echo on the exchange's data answering our
-- data may be its reply (piggybacked: not used); an echo on data answering our
-- pure ACK is not a reply (the exchange sent when it had something to send, as
-- Nagle released by our delayed ACK, or the next market-data push): a round trip
-- plus that wait, never less than the round trip, like every other sample. The
-- two kinds of sample are windowed apart (the RTT_WINDOW nearest of each), so a
-- stream of timestamp samples never pushes the connection's nearest pure-ACK
-- samples out of the window: adding them can only lower the estimate.
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
--   tsecr               a TCP timestamps sample among the connection's
--                       RTT_WINDOW 'tsecr' samples nearest the order was the smallest
--   handshake           the connection's handshake (SYN to SYN/ACK,
--                       flows.handshake_rtt_ns) was the smallest, or the only one
--   none                no sample at all (a connection picked up mid-stream and
--                       never acked by a pure ACK): network_est_ns and
--                       exchange_ns are null
-- network_spread_ns: interquartile range of the winning window's samples (the
-- pure-ACK window for pure_ack, nearest_rtt_sample and handshake; 0 with one
-- sample or only the handshake): how far the samples disagreed.
-- network_samples: samples the minimum was taken over (both windows + handshake).
-- Ties go to pure_ack, then nearest_rtt_sample, tsecr, handshake.
--
-- Scales: one window pass over the samples of the flows that have orders, and
-- two ASOF joins per method (the sample at or before the order, the one after);
-- no per-order scan of a flow's samples.
-- Input: out_latency, tcp_rtt, flow_handshake (flow_id, first_ts, handshake_rtt_ns). Output: out_latency, rewritten.

-- RTT_WINDOW = 9: the 4 samples either side of the one nearest the order, per method.
CREATE OR REPLACE TEMP TABLE rtt_clean AS
SELECT t.flow_id, coalesce(t.method, 'ack') AS method, epoch_ns(t.ts_sent) AS ts, t.rtt_ns
FROM tcp_rtt t
WHERE t.direction = 'out' AND NOT coalesce(t.piggybacked, false)
  AND NOT coalesce(t.retransmitted, false) AND t.rtt_ns >= 0
  AND t.flow_id IN (SELECT DISTINCT flow_id FROM out_latency);

CREATE OR REPLACE TEMP TABLE rtt_window AS
SELECT flow_id, method, ts,
       min(rtt_ns) OVER w AS est,
       floor(quantile_cont(rtt_ns, 0.75) OVER w - quantile_cont(rtt_ns, 0.25) OVER w)::BIGINT
           AS spread,
       count(*) OVER w AS samples
FROM rtt_clean
WINDOW w AS (PARTITION BY flow_id, method ORDER BY ts
             ROWS BETWEEN 4 PRECEDING AND 4 FOLLOWING);

CREATE OR REPLACE TEMP TABLE latency_keyed AS
SELECT row_number() OVER () AS row_key, * FROM out_latency;

CREATE OR REPLACE TEMP TABLE rtt_nearest AS
WITH lm AS (
    SELECT l.row_key, l.flow_id, l.order_ts, m.method
    FROM latency_keyed l CROSS JOIN (VALUES ('ack'), ('tsecr')) m(method)),
before AS (
    SELECT l.row_key, l.method, l.order_ts, r.ts, r.est, r.spread, r.samples
    FROM lm l ASOF LEFT JOIN rtt_window r
      ON r.flow_id = l.flow_id AND r.method = l.method AND l.order_ts >= r.ts),
after AS (
    SELECT l.row_key, l.method, r.ts, r.est, r.spread, r.samples
    FROM lm l ASOF LEFT JOIN rtt_window r
      ON r.flow_id = l.flow_id AND r.method = l.method AND l.order_ts < r.ts),
near AS (
    SELECT b.row_key, b.method,
           CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
                THEN a.est ELSE b.est END AS est,
           CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
                THEN a.spread ELSE b.spread END AS spread,
           CASE WHEN b.ts IS NULL OR (a.ts IS NOT NULL AND a.ts - b.order_ts < b.order_ts - b.ts)
                THEN a.samples ELSE b.samples END AS samples
    FROM before b JOIN after a USING (row_key, method))
SELECT row_key,
       any_value(est) FILTER (method = 'ack') AS est,
       any_value(spread) FILTER (method = 'ack') AS spread,
       any_value(samples) FILTER (method = 'ack') AS samples,
       any_value(est) FILTER (method = 'tsecr') AS ts_est,
       any_value(spread) FILTER (method = 'tsecr') AS ts_spread,
       any_value(samples) FILTER (method = 'tsecr') AS ts_samples
FROM near GROUP BY row_key;

-- The handshake is a sample too (SYN to SYN/ACK: the kernel answers at once,
-- so it is rarely inflated), but an old one: it counts only within
-- HANDSHAKE_WINDOW = 300 s of the order (Linux's min_rtt window,
-- net.ipv4.tcp_min_rtt_wlen), so a path that changed since is not hidden by it.
CREATE OR REPLACE TEMP TABLE out_latency AS
WITH d AS (
    SELECT l.*, n.est, n.spread, n.samples, n.ts_est, n.ts_spread, n.ts_samples,
           CASE WHEN l.order_ts - epoch_ns(h.first_ts) <= 300000000000
                THEN h.handshake_rtt_ns END AS hs
    FROM latency_keyed l
    JOIN rtt_nearest n USING (row_key)
    LEFT JOIN flow_handshake h ON h.flow_id = l.flow_id),
m AS (
    SELECT *,
           CASE WHEN est IS NOT NULL AND network_rtt_ns IS NOT NULL
                     AND network_rtt_ns <= est AND (hs IS NULL OR network_rtt_ns <= hs)
                     AND (ts_est IS NULL OR network_rtt_ns <= ts_est)
                     THEN 'pure_ack'
                WHEN est IS NOT NULL AND (hs IS NULL OR est <= hs)
                     AND (ts_est IS NULL OR est <= ts_est) THEN 'nearest_rtt_sample'
                WHEN ts_est IS NOT NULL AND (hs IS NULL OR ts_est <= hs) THEN 'tsecr'
                WHEN hs IS NOT NULL THEN 'handshake'
                ELSE 'none' END AS network_method
    FROM d)
SELECT COLUMNS(lambda c: c NOT IN ('row_key', 'est', 'spread', 'samples', 'hs', 'ts_est',
                                   'ts_spread', 'ts_samples', 'exchange_ns',
                                   'network_method')),
       CASE network_method WHEN 'pure_ack' THEN network_rtt_ns
                           WHEN 'nearest_rtt_sample' THEN est
                           WHEN 'tsecr' THEN ts_est
                           WHEN 'handshake' THEN hs END AS network_est_ns,
       network_method,
       CASE WHEN network_method = 'none' THEN NULL
            WHEN network_method = 'tsecr' THEN coalesce(ts_spread, 0)
            ELSE coalesce(spread, 0) END AS network_spread_ns,
       coalesce(samples, 0) + coalesce(ts_samples, 0) + (hs IS NOT NULL)::BIGINT
           AS network_samples,
       latency_ns - network_est_ns AS exchange_ns
FROM m
ORDER BY row_key;
