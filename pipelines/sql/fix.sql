-- FIX order entry (venues.md 13 and 15.6): D / F / G by ClOrdID.
--
-- An order action (D NewOrderSingle, F OrderCancelRequest, G
-- OrderCancelReplaceRequest; Binance's XCN / XAK) is answered by the first
-- ExecutionReport (8) or OrderCancelReject (9) carrying its ClOrdID (11) on
-- the same session, or by a session Reject (3) / BusinessMessageReject (j)
-- whose RefSeqNum (45) is its MsgSeqNum (34), whichever comes first. When no
-- reply echoes a cancel's or replace's own 11 (some venues don't), an 8 with
-- the matching OrigClOrdID (41) and a cancel/replace ExecType is used.
-- Messages with PossDupFlag (43=Y) are resends: excluded on both sides.
-- Session messages (0 1 2 4 5 A) and market data are ignored: only the
-- order actions we send and the replies we get are read (and only the
-- replies' field lists, for RefSeqNum and the reject reasons).
-- Input: fix_messages, flow_rules, fix_prev. Output: fix_orders, fix_acks.

-- The messages read (none: match.py skips the rest of this file, GATES); rid:
-- stream order, not the order the rows were written in (see websocket.sql).
CREATE OR REPLACE TEMP TABLE fix_in AS
SELECT row_number() OVER (ORDER BY m.flow_id, m.direction, m.stream_offset, m.ts_last) AS rid,
       m.flow_id, m.direction, m.msg_type, m.seq_num,
       m.cl_ord_id, m.orig_cl_ord_id, nullif(m.order_id, 'NONE') AS order_id, m.exec_type,
       CASE WHEN m.direction = 'in' THEN m.fields END AS fields,
       epoch_ns(m.ts_last) AS ts, epoch_ns(m.ts_first) AS ts_first, m.stream_offset, f.venue
FROM fix_messages m JOIN flow_rules f USING (flow_id)
WHERE NOT coalesce(m.poss_dup, false)
  AND ((m.direction = 'out' AND m.msg_type IN ('D', 'F', 'G', 'XCN', 'XAK'))
       OR (m.direction = 'in' AND m.msg_type IN ('8', '9', 'XAR', '3', 'j')));

CREATE OR REPLACE TEMP TABLE fix_orders AS
SELECT 'fix:' || rid AS order_key, venue, flow_id, 'fix' AS protocol, msg_type AS endpoint,
       CASE msg_type WHEN 'D' THEN 'new' WHEN 'F' THEN 'cancel' ELSE 'amend' END AS kind,
       scoped_id(cl_ord_id, flow_id, ts) AS correlation_id, NULL::VARCHAR AS request_id,
       cl_ord_id AS client_order_id, orig_cl_ord_id AS orig_client_order_id,
       order_id AS target_order_id, 'fix_messages' AS source_table, stream_offset, ts,
       ts_first, true AS decoded, rid, seq_num
FROM fix_in
WHERE direction = 'out' AND msg_type IN ('D', 'F', 'G', 'XCN', 'XAK');

CREATE OR REPLACE TEMP TABLE fix_replies AS
SELECT *, fix_tag(fields, 45) AS ref_seq_num
FROM fix_in
WHERE direction = 'in' AND msg_type IN ('8', '9', 'XAR', '3', 'j');

CREATE OR REPLACE TEMP TABLE fix_candidates AS
SELECT o.rid AS order_rid, r.rid AS reply_rid, r.ts, 0 AS fallback
FROM fix_orders o JOIN fix_replies r
  ON r.flow_id = o.flow_id AND r.cl_ord_id = o.client_order_id AND r.ts > o.ts
 AND r.msg_type IN ('8', '9', 'XAR')
UNION ALL
SELECT o.rid, r.rid, r.ts, 0
FROM fix_orders o JOIN fix_replies r
  ON r.flow_id = o.flow_id AND r.msg_type IN ('3', 'j')
 AND r.ref_seq_num = o.seq_num::VARCHAR AND r.ts > o.ts
UNION ALL
SELECT o.rid, r.rid, r.ts, 1
FROM fix_orders o JOIN fix_replies r
  ON r.flow_id = o.flow_id AND o.kind <> 'new' AND r.msg_type = '8'
 AND r.orig_cl_ord_id = o.orig_client_order_id AND r.ts > o.ts
 AND r.exec_type IN (CASE o.kind WHEN 'cancel' THEN '4' ELSE '5' END,
                     CASE o.kind WHEN 'cancel' THEN '6' ELSE 'E' END);

CREATE OR REPLACE TEMP TABLE fix_acks AS
WITH best AS (
    SELECT order_rid, arg_min(reply_rid, (fallback, ts, reply_rid)) AS reply_rid
    FROM fix_candidates GROUP BY order_rid)
SELECT o.order_key, o.venue, o.flow_id, o.protocol, o.endpoint, o.kind, o.correlation_id,
       o.request_id, o.client_order_id, o.orig_client_order_id,
       'fix_messages' AS source_table, r.stream_offset, r.ts,
       CASE WHEN r.msg_type IN ('9', 'XAR', '3', 'j') OR r.exec_type = '8' THEN 'rejected'
            ELSE 'accepted' END AS status,
       'ack' AS leg,
       CASE r.msg_type WHEN '9' THEN fix_tag(r.fields, 102)    -- CxlRejReason
                       WHEN '3' THEN fix_tag(r.fields, 373)    -- SessionRejectReason
                       WHEN 'j' THEN fix_tag(r.fields, 380)    -- BusinessRejectReason
                       ELSE CASE WHEN r.exec_type = '8' THEN fix_tag(r.fields, 103) END
       END AS error_code,                                      -- 103 OrdRejReason
       true AS decoded, r.order_id AS exchange_order_id
FROM best b JOIN fix_orders o ON o.rid = b.order_rid JOIN fix_replies r ON r.rid = b.reply_rid
UNION ALL BY NAME
-- Orphans: the first 8/9 for a ClOrdID no order in this capture carries
-- (later reports for the same ClOrdID, e.g. fills, are not replies).
SELECT NULL AS order_key, r.venue, r.flow_id, 'fix' AS protocol, r.msg_type AS endpoint,
       NULL AS kind, scoped_id(r.cl_ord_id, r.flow_id, r.ts) AS correlation_id,
       NULL AS request_id,
       r.cl_ord_id AS client_order_id, r.orig_cl_ord_id AS orig_client_order_id,
       'fix_messages' AS source_table, r.stream_offset, r.ts,
       CASE WHEN r.msg_type = '9' OR r.exec_type = '8' THEN 'rejected' ELSE 'accepted' END
           AS status,
       'ack' AS leg, NULL AS error_code, true AS decoded, r.order_id AS exchange_order_id
FROM fix_replies r
WHERE r.msg_type IN ('8', '9') AND r.cl_ord_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM fix_orders o WHERE o.client_order_id = r.cl_ord_id)
  AND NOT EXISTS (SELECT 1 FROM fix_orders o WHERE o.kind <> 'new'
                  AND o.orig_client_order_id = r.orig_cl_ord_id)
  -- (a rotation's earlier files: their orders, and their orphans of this ClOrdID)
  AND NOT EXISTS (SELECT 1 FROM fix_prev p WHERE NOT p.orphan
                  AND (p.client_order_id = r.cl_ord_id
                       OR (p.kind <> 'new' AND p.orig_client_order_id = r.orig_cl_ord_id)))
  AND NOT EXISTS (SELECT 1 FROM fix_prev p WHERE p.orphan AND p.flow_id = r.flow_id
                  AND p.client_order_id = r.cl_ord_id)
QUALIFY row_number() OVER (PARTITION BY r.flow_id, r.cl_ord_id ORDER BY r.ts) = 1;
