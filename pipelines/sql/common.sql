-- Helpers shared by every matcher file: run once per database (match.py keeps
-- one for the process), before the first match.
--
-- Times: the message tables hold TIMESTAMPTZ_NS; every matcher works on
-- BIGINT nanoseconds (epoch_ns) so no step can round to microseconds, and
-- match.py turns them back into timestamp[ns, UTC] on output.

-- First non-null element of a list (the "try these paths in order" rule).
CREATE OR REPLACE MACRO first_of(xs) AS
    list_filter(xs, lambda v: v IS NOT NULL)[1];

-- A scalar at a JSON path, as text. ``doc`` is JSON or NULL: each file keeps
-- only the documents json_valid accepts (ws_in, rest_req, rest_resp), once, so
-- that a document is not parsed twice per value read.
CREATE OR REPLACE MACRO jstr(doc, path) AS
    CASE WHEN path IS NOT NULL THEN json_extract_string(doc, path) END;

-- The same value with its JSON type kept ("1" and 1 are different request ids).
CREATE OR REPLACE MACRO jkey(doc, path) AS
    CASE WHEN path IS NOT NULL THEN nullif(json_extract(doc, path)::VARCHAR, 'null') END;

-- Codes that mean success in the venues' error fields (OKX "0", KuCoin
-- "200000", Hyperliquid "ok"; an empty string is no code).
CREATE OR REPLACE MACRO ok_code(v) AS v IN ('0', '200000', 'ok', '');

-- First error code found at ``paths`` (ignoring success codes), else NULL.
CREATE OR REPLACE MACRO error_code_at(doc, paths) AS
    list_filter(list_transform(paths, lambda p: jstr(doc, p)),
                lambda v: v IS NOT NULL AND NOT ok_code(v))[1];

-- accepted / rejected / error from a transport status (HTTP or the WS API's
-- ``status``) and the venue error code: 5xx and the venue's "unknown outcome"
-- codes are ``error`` (venues.md 1: "Treat it as an ack of unknown outcome").
CREATE OR REPLACE MACRO ack_status(transport_status, code, unknown_codes) AS
    CASE WHEN transport_status >= 500 OR list_contains(unknown_codes, code) THEN 'error'
         WHEN transport_status >= 400 OR code IS NOT NULL THEN 'rejected'
         ELSE 'accepted' END;

-- A percent-decoded form value; kept as sent when it does not decode to UTF-8.
CREATE OR REPLACE MACRO form_value(v) AS coalesce(try(url_decode(v)), v);

-- ``a=1&b=2`` as a list of {k, v} (a list, not a MAP: keys may repeat).
CREATE OR REPLACE MACRO form_pairs(s) AS
    list_transform(list_filter(string_split(coalesce(s, ''), '&'), lambda kv: kv <> ''),
                   lambda kv: {'k': form_value(split_part(kv, '=', 1)),
                               'v': form_value(substr(kv, length(split_part(kv, '=', 1)) + 2))});

-- One REST parameter: a JSON path into the body, or a name looked up in the
-- request's parameters (query string first, then the form body: Binance
-- accepts them in either or both, so they are merged), then at the top level
-- of a JSON body.
CREATE OR REPLACE MACRO rest_param(params, body, name) AS
    CASE WHEN starts_with(name, '$') THEN jstr(body, name)
         ELSE coalesce(list_filter(params, lambda e: e.k = name)[1].v,
                       jstr(body, '$.' || name)) END;

CREATE OR REPLACE MACRO rest_params(params, body, names) AS
    first_of(list_transform(names, lambda n: nullif(rest_param(params, body, n), '')));

-- First non-empty value at ``paths`` (venues send "" for "no id": OKX ordId
-- of a rejected order, Binance ``C`` of a new order). The first path is read
-- on its own: coalesce and CASE read the others only for the rows where it
-- found nothing, and most messages have their value at the first path.
CREATE OR REPLACE MACRO json_paths(doc, paths) AS
    coalesce(nullif(jstr(doc, paths[1]), ''),
             CASE WHEN len(paths) > 1
                  THEN first_of(list_transform(paths[2:], lambda p: nullif(jstr(doc, p), '')))
             END);

-- First value at ``paths`` with its JSON type kept (jkey), read the same way.
CREATE OR REPLACE MACRO json_paths_key(doc, paths) AS
    coalesce(jkey(doc, paths[1]),
             CASE WHEN len(paths) > 1
                  THEN first_of(list_transform(paths[2:], lambda p: jkey(doc, p))) END);

-- The correlation id of an action that carries no id of its own (a REST cancel
-- by origClientOrderId or orderId, a request/response pair known only from TLS
-- record timing): "#<flow_id>.<n>@<ts>", n its number on the connection, ts its
-- time in ns. Unique per action: a flow number and a request number repeat from
-- capture to capture, the time with them does not (only the same packets
-- ingested twice give the same id, and they are the same action).
CREATE OR REPLACE MACRO generated_id(flow_id, n, ts) AS
    '#' || flow_id || '.' || n || '@' || ts;

-- The correlation id of an action: "<id>#<flow_id>@<ts>", <id> the id it carried
-- (a client order id, a JSON request id; Bybit without reqId is paired by op), ts
-- the action's time in ns. A client's ids alone are not unique in a dataset
-- (combine.sql says why): with its connection and time, an action's id is. The id
-- as sent stays in client_order_id / request_id. NULL when ``id`` is.
CREATE OR REPLACE MACRO scoped_id(id, flow_id, ts) AS
    id || '#' || flow_id || '@' || ts;

-- Value of a FIX tag in the ``fields`` list of a fix_messages row.
CREATE OR REPLACE MACRO fix_tag(fields, t) AS
    list_filter(fields, lambda f: f.tag = t)[1].value;

-- The columns every family's orders and acks have (besides its own keys); a
-- file cut short because its gate table is empty (match.py) leaves its outputs
-- as these, empty.
CREATE OR REPLACE TABLE no_orders (
    order_key VARCHAR, venue VARCHAR, flow_id BIGINT, protocol VARCHAR, endpoint VARCHAR,
    kind VARCHAR, correlation_id VARCHAR, request_id VARCHAR, client_order_id VARCHAR,
    orig_client_order_id VARCHAR, target_order_id VARCHAR, source_table VARCHAR,
    stream_offset BIGINT, ts BIGINT, ts_first BIGINT, decoded BOOLEAN);

CREATE OR REPLACE TABLE no_acks (
    order_key VARCHAR, venue VARCHAR, flow_id BIGINT, protocol VARCHAR, endpoint VARCHAR,
    kind VARCHAR, correlation_id VARCHAR, request_id VARCHAR, client_order_id VARCHAR,
    orig_client_order_id VARCHAR, source_table VARCHAR, stream_offset BIGINT, ts BIGINT,
    status VARCHAR, leg VARCHAR, error_code VARCHAR, decoded BOOLEAN, exchange_order_id VARCHAR);

-- Accepted new orders of a rotation's earlier files that a match does not read
-- (pipelines/match_carry.py registers its own over this empty one): combine.sql
-- learns exchange and client order ids from them too.
CREATE OR REPLACE TABLE learned_prev (
    venue VARCHAR, client_order_id VARCHAR, exchange_order_id VARCHAR);

-- FIX orders and orphan replies of a rotation's earlier files that a match does not
-- read (pipelines/match_carry.py registers its own over this empty one): a reply
-- whose ClOrdID one of them carries is no orphan (fix.sql), as over the whole set.
CREATE OR REPLACE TABLE fix_prev (
    flow_id BIGINT, client_order_id VARCHAR, orig_client_order_id VARCHAR, kind VARCHAR,
    has_ack BOOLEAN, orphan BOOLEAN);

-- Latency rows of a rotation's earlier files whose groups wait only for RTT samples
-- (pipelines/match_carry.py registers its own over this empty one, carried = true):
-- latency.sql adds them to out_latency, so decompose.sql gives them their network
-- estimate with this match's own rows, over the same samples, as over the whole set.
CREATE OR REPLACE TABLE latency_prev (
    venue VARCHAR, endpoint VARCHAR, flow_id BIGINT, protocol VARCHAR, kind VARCHAR,
    leg VARCHAR, correlation_id VARCHAR, request_id VARCHAR, client_order_id VARCHAR,
    orig_client_order_id VARCHAR, target_order_id VARCHAR, order_ts BIGINT, ack_ts BIGINT,
    latency_ns BIGINT, network_rtt_ns BIGINT, exchange_ns BIGINT, status VARCHAR,
    decoded BOOLEAN, exchange_order_id VARCHAR, error_code VARCHAR, ack_flow_id BIGINT,
    carried BOOLEAN);
