-- REST over HTTP/1.1 (venues.md 15.2): requests paired with responses in order.
--
-- The HTTP parser already numbers requests per connection (request_index) and
-- gives each response the index of the request it answers ("A server MUST
-- send its responses to those requests in the same order that the requests
-- were received", RFC 9112 9.3.2), so pairing is an equi-join. Which requests
-- are order actions is data (rest_actions: method + path per dialect); the
-- generic dialect "rest" applies every venue's rows. Error responses pair by
-- position like any other, whether or not they carry an id.
-- HTTP/2 (RFC 9113): requests are multiplexed on streams and answered in any
-- order, so pairing is by stream id, never by position: the HTTP/2 parser gives
-- each response the request_index of the request on its stream id (and NULL
-- when that request was not seen), so the same equi-join pairs by stream. A
-- stream ended by RST_STREAM or refused by GOAWAY (http_messages kind 'reset',
-- the error code in reason) answers its request with status 'error' when no
-- final response came first. Server-pushed responses (even stream ids) answer
-- no request and are not orphans either.
-- Only order actions and their responses are parsed: a request's parameters
-- and JSON body are read when a rule names its method and path (a market-data
-- GET is never parsed), a response's body when it answers an action. Every
-- request and response still takes part by position (an orphan response is
-- one whose request was not seen).
-- Input: http_messages, flow_rules, rest_actions, rest_replies.
-- Output: rest_orders, rest_acks (standard columns, see latency.sql).

CREATE OR REPLACE TEMP TABLE rest_req AS
WITH q AS (
    SELECT m.flow_id, m.request_index, m.method, m.path, m.content_type, m.body,
           split_part(m.path, '?', 1) AS path_only, m.ts_last, m.ts_first, m.stream_offset,
           f.venue, f.dialect
    FROM http_messages m JOIN flow_rules f USING (flow_id)
    WHERE m.kind = 'request'),
flagged AS (
    SELECT q.*,
           EXISTS (SELECT 1 FROM rest_actions a
                   WHERE (a.dialect = q.dialect OR q.dialect = 'rest')
                     AND a.method = q.method AND q.path_only LIKE a.path_like) AS is_action
    FROM q)
SELECT flow_id, request_index, method, path_only, is_action,
       CASE WHEN is_action
            THEN form_pairs(CASE WHEN strpos(path, '?') > 0
                                 THEN substr(path, strpos(path, '?') + 1) END)
                 || form_pairs(CASE WHEN content_type ILIKE '%x-www-form-urlencoded%'
                                    THEN body END) END AS params,
       CASE WHEN is_action AND json_valid(body) THEN body END AS body,
       epoch_ns(ts_last) AS ts, epoch_ns(ts_first) AS ts_first, stream_offset, venue, dialect
FROM flagged;

-- Anything to pair: an order action, or a final response (an orphan at least);
-- with neither, match.py skips the rest of this file (GATES).
CREATE OR REPLACE TEMP TABLE rest_todo AS
(SELECT flow_id FROM rest_req WHERE is_action LIMIT 1)
UNION ALL
(SELECT flow_id FROM http_messages
 WHERE kind = 'response' AND (status IS NULL OR status >= 200) LIMIT 1);

-- One action per request: a rule of the flow's own dialect wins over another
-- venue's rule reached through the generic "rest" dialect.
CREATE OR REPLACE TEMP TABLE rest_orders AS
SELECT 'rest:' || q.flow_id || ':' || q.request_index AS order_key,
       q.venue, q.flow_id, 'rest' AS protocol, q.method || ' ' || q.path_only AS endpoint,
       a.kind,
       -- its own client id, never the id of the order it cancels or amends
       -- (that is orig_client_order_id): without one, a generated id
       coalesce(scoped_id(rest_params(q.params, q.body, a.coid), q.flow_id, q.ts),
                generated_id(q.flow_id, q.request_index, q.ts)) AS correlation_id,
       NULL::VARCHAR AS request_id,
       rest_params(q.params, q.body, a.coid) AS client_order_id,
       rest_params(q.params, q.body, a.orig_coid) AS orig_client_order_id,
       rest_params(q.params, q.body, a.orig_order_id) AS target_order_id,
       'http_messages' AS source_table, q.stream_offset, q.ts, q.ts_first, true AS decoded,
       a.dialect AS rule_dialect, q.request_index
FROM rest_req q
JOIN rest_actions a
  ON (a.dialect = q.dialect OR q.dialect = 'rest')
 AND a.method = q.method AND q.path_only LIKE a.path_like
 AND (a.body_path IS NULL OR jstr(q.body, a.body_path) = a.body_value)
QUALIFY row_number() OVER (PARTITION BY q.flow_id, q.request_index
                           ORDER BY (a.dialect = q.dialect) DESC, a.path_like) = 1;

-- The final (non-1xx) response to each request, else the reset of its stream.
CREATE OR REPLACE TEMP TABLE rest_resp AS
SELECT m.flow_id, m.request_index, m.status AS http_status,
       CASE WHEN m.kind = 'reset' THEN m.reason END AS reset_reason,
       CASE WHEN o.order_key IS NOT NULL AND json_valid(m.body) THEN m.body END AS body,
       epoch_ns(m.ts_last) AS ts, m.stream_offset
FROM http_messages m
LEFT JOIN rest_orders o ON o.flow_id = m.flow_id AND o.request_index = m.request_index
WHERE ((m.kind = 'response' AND (m.status IS NULL OR m.status >= 200))
       OR (m.kind = 'reset' AND m.request_index IS NOT NULL))
  -- a server-pushed response (HTTP/2, even stream id) answers no request of ours
  AND NOT coalesce(m.stream_id % 2 = 0, false)
QUALIFY row_number() OVER (PARTITION BY m.flow_id, m.request_index
                           ORDER BY m.kind = 'reset', m.ts_last) = 1;

CREATE OR REPLACE TEMP TABLE rest_acks AS
SELECT o.order_key, o.venue, o.flow_id, o.protocol, o.endpoint, o.kind, o.correlation_id,
       o.request_id, o.client_order_id, o.orig_client_order_id,
       'http_messages' AS source_table, r.stream_offset, r.ts,
       CASE WHEN r.reset_reason IS NOT NULL THEN 'error'
            ELSE ack_status(r.http_status, error_code_at(r.body, rr.error_paths),
                            rr.unknown_codes) END AS status,
       'ack' AS leg,
       coalesce(r.reset_reason, error_code_at(r.body, rr.error_paths),
                CASE WHEN r.http_status >= 400 THEN r.http_status::VARCHAR END) AS error_code,
       true AS decoded,
       json_paths(r.body, rr.order_id_paths) AS exchange_order_id
FROM rest_orders o
JOIN rest_resp r ON r.flow_id = o.flow_id AND r.request_index = o.request_index
LEFT JOIN rest_replies rr ON rr.dialect = o.rule_dialect
UNION ALL BY NAME
-- Orphans: a response whose request was never seen (capture started mid-way).
SELECT NULL AS order_key, f.venue, r.flow_id, 'rest' AS protocol, NULL AS endpoint,
       NULL AS kind, generated_id(r.flow_id, r.request_index, r.ts) AS correlation_id,
       NULL AS request_id,
       NULL AS client_order_id, NULL AS orig_client_order_id,
       'http_messages' AS source_table, r.stream_offset, r.ts,
       ack_status(r.http_status, NULL, []) AS status, 'ack' AS leg, NULL AS error_code,
       true AS decoded, NULL AS exchange_order_id
FROM rest_resp r JOIN flow_rules f USING (flow_id)
WHERE NOT EXISTS (SELECT 1 FROM rest_req q
                  WHERE q.flow_id = r.flow_id AND q.request_index = r.request_index);
