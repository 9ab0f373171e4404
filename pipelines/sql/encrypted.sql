-- HTTP/1.1 over TLS without a key log: request/response timing from TLS records.
--
-- On HTTP/1.1 requests and responses alternate on a connection, so the
-- application_data records (content_type 23) of a flow, walked in time
-- order, form bursts: a run of ``out`` records is a request (its last record
-- ends it) and the run of ``in`` records that follows is its response. Rows
-- carry decoded = false, endpoint NULL and kind 'unknown' so that no one
-- mistakes them for decoded matches.
-- Not HTTP: in TLS 1.3 the first ``out`` application_data record is the
-- client's Finished, and the server's encrypted handshake and session
-- tickets arrive before the first request (an ``in`` run with no request in
-- front of it, hence unpaired). Records shorter than MIN_HTTP_RECORD bytes
-- (encrypted alerts such as close_notify, KeyUpdate) cannot hold an HTTP
-- message and are skipped.
-- Used only on flows with no decrypted application data whose venue rule
-- says REST (or, with no rule, whose ALPN is http/1.1), and never on one that
-- may be HTTP/2 (ALPN chose h2, or TLS 1.3 hid the choice and the client
-- offered h2): HTTP/2 interleaves requests on streams, so bursts of records are
-- not request/response pairs. The app layer's ``http2_not_decrypted`` anomaly
-- says so for each such flow.
-- Input: tls_records, flow_rules. Output: enc_orders, enc_acks.

-- MIN_HTTP_RECORD = 40: 5-byte header + 16-byte AEAD tag + 1 inner type byte
-- + the 18 bytes of the shortest request line "GET / HTTP/1.1\r\n\r\n".
-- The flows read (none: match.py skips the rest of this file, GATES).
CREATE OR REPLACE TEMP TABLE enc_flows AS
SELECT f.flow_id, f.venue, f.tls_version
FROM flow_rules f
WHERE (f.protocol_hint = 'rest' OR (f.protocol_hint IS NULL AND f.alpn = 'http/1.1'))
  AND coalesce(f.alpn, '') <> 'h2'
  AND NOT (f.alpn IS NULL AND list_contains(string_split(coalesce(f.alpn_offered, ''), ','),
                                            'h2'))
  AND EXISTS (SELECT 1 FROM tls_records t
              WHERE t.flow_id = f.flow_id AND t.content_type = 23)
  AND NOT EXISTS (SELECT 1 FROM tls_records t
                  WHERE t.flow_id = f.flow_id AND t.content_type = 23 AND t.decrypted);

CREATE OR REPLACE TEMP TABLE enc_records AS
WITH app AS (
    SELECT t.flow_id, t.direction, epoch_ns(t.ts_last) AS ts, epoch_ns(t.ts_first) AS ts_first,
           t.stream_offset, t.length, e.tls_version,
           row_number() OVER (PARTITION BY t.flow_id, t.direction ORDER BY t.stream_offset)
               AS nth_in_direction
    FROM tls_records t JOIN enc_flows e USING (flow_id)
    WHERE t.content_type = 23)
SELECT * FROM app
WHERE length >= 40
  AND NOT (tls_version = '1.3' AND direction = 'out' AND nth_in_direction = 1);

CREATE OR REPLACE TEMP TABLE enc_bursts AS
WITH walk AS (
    SELECT *, CASE WHEN direction <> lag(direction) OVER w THEN 1 ELSE 0 END AS turn
    FROM enc_records WINDOW w AS (PARTITION BY flow_id ORDER BY ts, stream_offset)),
numbered AS (
    SELECT *, sum(turn) OVER (PARTITION BY flow_id ORDER BY ts, stream_offset
                              ROWS UNBOUNDED PRECEDING) AS burst
    FROM walk)
SELECT flow_id, burst, any_value(direction) AS direction, max(ts) AS ts,
       min(ts_first) AS ts_first, min(stream_offset) AS stream_offset,
       max_by(stream_offset, ts) AS last_offset, count(*) AS records
FROM numbered GROUP BY flow_id, burst;

CREATE OR REPLACE TEMP TABLE enc_orders AS
SELECT 'enc:' || b.flow_id || ':' || b.burst AS order_key, e.venue, b.flow_id,
       'rest' AS protocol, NULL::VARCHAR AS endpoint, 'unknown' AS kind,
       generated_id(b.flow_id,
                    row_number() OVER (PARTITION BY b.flow_id ORDER BY b.burst) - 1, b.ts)
           AS correlation_id,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS client_order_id,
       NULL::VARCHAR AS orig_client_order_id, NULL::VARCHAR AS target_order_id,
       'tls_records' AS source_table, b.stream_offset, b.ts, b.ts_first, false AS decoded,
       b.burst
FROM enc_bursts b JOIN enc_flows e USING (flow_id)
WHERE b.direction = 'out';

CREATE OR REPLACE TEMP TABLE enc_acks AS
SELECT o.order_key, o.venue, o.flow_id, o.protocol, o.endpoint, o.kind, o.correlation_id,
       o.request_id, o.client_order_id, o.orig_client_order_id,
       'tls_records' AS source_table, r.stream_offset, r.ts, NULL::VARCHAR AS status,
       'ack' AS leg, NULL::VARCHAR AS error_code, false AS decoded,
       NULL::VARCHAR AS exchange_order_id
FROM enc_orders o
JOIN enc_bursts r ON r.flow_id = o.flow_id AND r.burst = o.burst + 1 AND r.direction = 'in';
