"""Every table's schema, declared once, with a description per column.

The core tables (captures, flows, TCP, matcher outputs) are declared here; each
protocol's message tables in its own package (``ProtocolSpec.tables``), which
``TABLES`` takes from the registry. These declarations drive the Parquet
writers, the DuckDB views (an empty table still has its columns), the README's
table reference and the tests. Times are ``timestamp[ns, tz=UTC]``; durations
are int64 nanoseconds in ``*_ns`` columns.
"""

from __future__ import annotations

import pyarrow as pa

from ...parsers.protocols.columns import (
    CAPTURE_ID,
    DIRECTION,
    FLOW_ID,
    STREAM_OFFSET,
    TS,
)
from ...parsers.protocols.columns import field as _f
from ...parsers.protocols.columns import schema as _schema
from ...parsers.protocols.registry import REGISTRY

PROTOCOL_TABLES = {t.name: t for spec in REGISTRY for t in spec.tables}
"""Message tables, by name, in registry order."""
CAPTURES = _schema(
    CAPTURE_ID,
    _f("file_index", pa.int32(), "Position of this file in its capture set, by first packet "
       "time (0 for a capture of one file); `packets.file` refers to it"),
    _f("files", pa.int32(), "Files in the capture set (1: a capture of one file)"),
    _f("path", pa.string(), "Path of the capture file as given to ingest (`-` for stdin)"),
    _f(
        "sha256", pa.string(), "sha256 of the capture file's bytes as stored (compressed if it was)"
    ),
    _f("format", pa.string(), "`pcap` or `pcapng`"),
    _f("compression", pa.string(), "`gzip`, `zstd` or null"),
    _f("link_types", pa.list_(pa.int32()), "LINKTYPE_* values of the capture's interfaces"),
    _f("packets", pa.int64(), "Packet records read from this file"),
    _f("bytes", pa.int64(), "Bytes of this file read"),
    _f("first_ts", TS, "Earliest packet time in this file"),
    _f("last_ts", TS, "Latest packet time in this file"),
    _f("flows", pa.int64(), "TCP and UDP connections found in the capture (a set: in all "
       "its files, repeated on each file's row)"),
    _f("anomalies", pa.int64(), "Rows written to `anomalies` for the capture (a set: for all "
       "its files, repeated on each file's row)"),
    _f("tls_keys", pa.bool_(), "Whether TLS secrets were at hand: a key log was given, or "
       "the capture holds a Decryption Secrets Block (pcapng)"),
    _f("keylogs", pa.list_(pa.string()), "Key log files given to the ingest (as given), and "
       "`the capture's Decryption Secrets Block` if it held one: `flows.tls_keylog` says "
       "which session each supplied"),
    _f("ingested_at", TS, "When this capture was ingested"),
    _f("pcapflow_version", pa.string(), "pcapflow version that wrote the tables"),
)

FLOWS = _schema(
    CAPTURE_ID,
    FLOW_ID,
    _f("transport", pa.string(), "`tcp` or `udp`"),
    _f("ip_version", pa.int8(), "4 or 6"),
    _f("client_ip", pa.string(), "Client address: the SYN sender, else the ephemeral-port side"),
    _f("client_port", pa.int32(), "Client port"),
    _f("server_ip", pa.string(), "Server (exchange) address"),
    _f("server_port", pa.int32(), "Server port"),
    _f("vlan", pa.int32(), "Outermost 802.1Q VLAN id of the first packet, null if untagged"),
    _f("first_ts", TS, "Time of the flow's first packet"),
    _f("last_ts", TS, "Time of the flow's last packet"),
    _f("duration_ns", pa.int64(), "last_ts - first_ts"),
    _f("first_packet", pa.int64(), "0-based index in the capture of the flow's first packet"),
    _f("syn_seen", pa.bool_(), "Whether the client's SYN was captured"),
    _f("end_reason", pa.string(), "`fin`, `rst`, or `capture_end` when neither was seen "
       "(also for a flow evicted from a full flow table: a `flow_evicted` anomaly says so)"),
    _f("packets_out", pa.int64(), "Packets client -> server"),
    _f("packets_in", pa.int64(), "Packets server -> client"),
    _f("bytes_out", pa.int64(), "Bytes on the wire client -> server (frames' original length)"),
    _f("bytes_in", pa.int64(), "Bytes on the wire server -> client"),
    _f(
        "payload_bytes_out",
        pa.int64(),
        "TCP/UDP payload bytes client -> server, retransmissions included",
    ),
    _f(
        "payload_bytes_in",
        pa.int64(),
        "TCP/UDP payload bytes server -> client, retransmissions included",
    ),
    _f("handshake_rtt_ns", pa.int64(), "SYN to SYN/ACK (first copies); null without a handshake"),
    _f(
        "retransmissions", pa.int64(), "Segments flagged retransmission (any kind), both directions"
    ),
    _f("out_of_order", pa.int64(), "Segments flagged out-of-order, both directions"),
    _f(
        "gaps",
        pa.int64(),
        "Segments after bytes never captured (tshark: previous segment not captured)",
    ),
    _f("duplicate_acks", pa.int64(), "Duplicate ACKs, both directions"),
    _f(
        "app_protocol",
        pa.string(),
        "Detected by content: tls, http, fix, http2, websocket; inner/outer as tls/http2",
    ),
    _f("sni", pa.string(), "TLS server name indication"),
    _f("alpn", pa.string(), "TLS ALPN protocol chosen (TLS 1.3: visible only when decrypted)"),
    _f("alpn_offered", pa.string(), "ALPN protocols the client offered, comma-separated"),
    _f("tls_version", pa.string(), "Negotiated TLS version (1.0 .. 1.3)"),
    _f("tls_cipher", pa.string(), "Negotiated cipher suite (IANA name)"),
    _f("tls_keylog", pa.string(), "Key log file (as given to ingest) that held this TLS "
       "session's secrets, or the capture's Decryption Secrets Block; NULL: none did"),
    _f("http_host", pa.string(), "First HTTP Host header"),
    _f("ws_path", pa.string(), "WebSocket upgrade request path"),
    _f("venue", pa.string(), "Exchange, from SNI / Host / the user's venue map; for a "
       "connection with none of these, inferred (see `venue_source`)"),
    _f("venue_source", pa.string(), "How `venue` was found: `map` (your venue map), `name` "
       "(SNI / Host), `address` (other connections of the capture to the same server "
       "address named it), `dataset` (earlier captures did), `content` (the paths / "
       "WebSocket methods it sent name it); NULL with no venue"),
)

TCP_EVENTS = _schema(
    CAPTURE_ID,
    _f("ts", TS, "Capture time of the packet"),
    _f("packet", pa.int64(), "0-based packet index in the capture"),
    FLOW_ID,
    DIRECTION,
    _f(
        "kind",
        pa.string(),
        "retransmission, fast_retransmission, spurious_retransmission, "
        "out_of_order, gap, duplicate_ack, zero_window, zero_window_probe, window_full, "
        "window_update, keepalive, keepalive_ack, acked_unseen, rst, ports_reused",
    ),
    _f("stream_offset", pa.int64(),
       "Stream offset of the segment's first byte (0 = first byte after SYN), as "
       "`packets.stream_offset`"),
    _f("payload_length", pa.int64(), "TCP payload length on the wire, as `packets.payload_length`"),
)

ANOMALIES = _schema(
    CAPTURE_ID,
    _f("ts", TS, "Time of the packet or message where the problem was seen"),
    _f("packet", pa.int64(), "0-based packet index, null when not tied to one packet"),
    _f("flow_id", pa.int64(), "Flow, -1 when the problem is below the flow layer"),
    _f("direction", pa.string(), "`out`, `in` or null"),
    _f("layer", pa.string(), "capture, link, ip, tcp, tls, http, websocket, fix, ..."),
    _f("code", pa.string(), "Stable snake_case code (e.g. truncated_record, bad_checksum)"),
    _f("detail", pa.string(), "Human-readable detail (never key material)"),
    _f("stream_offset", pa.int64(), "Byte offset in the direction's stream, when relevant"),
)

PACKETS = _schema(
    CAPTURE_ID,
    _f("ts", TS, "Capture time"),
    _f("packet", pa.int64(), "0-based packet index in the capture (a set: across its files, "
       "in the order they are read as one stream)"),
    _f("flow_id", pa.int64(), "Flow, -1 for non-TCP/UDP packets"),
    DIRECTION,
    _f("interface", pa.int32(), "pcapng interface id (a set of files captured in parallel: "
       "each file's interfaces numbered after the earlier files')"),
    _f("file", pa.int32(), "The file the packet came from: `captures.file_index`"),
    _f("file_packet", pa.int64(), "0-based index of the packet in its own file"),
    _f("wirelen", pa.int64(), "Original frame length"),
    _f("caplen", pa.int64(), "Captured length"),
    _f("proto", pa.int16(), "IP protocol number (6 TCP, 17 UDP), 0 when not IP"),
    _f("flags", pa.int32(), "TCP flags (FIN=1 SYN=2 RST=4 PSH=8 ACK=16 ...)"),
    _f("seq", pa.int64(), "Raw TCP sequence number"),
    _f("ack", pa.int64(), "Raw TCP acknowledgment number"),
    _f("stream_offset", pa.int64(), "Unwrapped stream offset of the first payload byte"),
    _f("window", pa.int32(), "TCP window as on the wire (unscaled)"),
    _f("payload_length", pa.int64(), "Transport payload length on the wire"),
    _f("analysis", pa.int32(), "Bit mask of TCP analysis flags (see tcp_events.kind)"),
)

TCP_RTT = _schema(
    CAPTURE_ID,
    FLOW_ID,
    _f(
        "direction",
        pa.string(),
        "Direction of the data segment (`out`: our data, acked by the exchange)",
    ),
    _f("ts_sent", TS, "First transmission of the data segment"),
    _f("ts_ack", TS, "First ACK from the other side covering the segment's last byte"),
    _f("rtt_ns", pa.int64(), "ts_ack - ts_sent: network round trip plus the peer's ACK delay"),
    _f("end_offset", pa.int64(), "Stream offset just past the segment's last byte"),
    _f(
        "retransmitted",
        pa.bool_(),
        "Bytes of the segment were sent again before the ACK "
        "(the sample then includes a retransmission timeout: Karn's rule says distrust it)",
    ),
    _f(
        "piggybacked",
        pa.bool_(),
        "The ACK came on a data segment (e.g. the exchange's reply itself): the sample then "
        "includes the peer's processing time and is not a network round trip (`tsecr`: "
        "the echo came on data answering a segment that carried data)",
    ),
    _f(
        "method",
        pa.string(),
        "`ack`: the segment's first transmission to the first ACK covering it; `tsecr` "
        "(RFC 7323 timestamps): the first segment carrying a TSval to the first segment of "
        "the other side echoing it in TSecr (one value timed at a time per side; ts_sent, "
        "end_offset: that first segment, which may be a pure ACK; retransmitted: the side "
        "retransmitted meanwhile). Null in datasets written before it existed: `ack`",
    ),
)

_ORDER_KEYS = (
    CAPTURE_ID,
    _f("venue", pa.string(), "Exchange (binance, okx, ...), from SNI / Host / venue map"),
    FLOW_ID,
    _f("protocol", pa.string(), "rest, websocket or fix"),
    _f("endpoint", pa.string(), "REST method+path, WebSocket method/op, or FIX MsgType"),
    _f("kind", pa.string(), "new, cancel, amend (orders); the order's kind (acks)"),
    _f(
        "correlation_id",
        pa.string(),
        "One per order action, the same on its rows in `orders`, `acks` (both legs), "
        "`latency` and `unmatched`: join on it alone. `<id>#<flow_id>@<ts_ns>`: the id the "
        "action carried (its client order id: REST, FIX; its JSON request id: WebSocket, "
        "JSON-RPC), its connection and its time (the order's `ts`), since a client's ids "
        "alone repeat (request ids restart on each connection, client order ids are "
        "reused once their order is closed or on another day); the ids as sent are "
        "client_order_id and request_id. An action without an id of its own (a REST "
        "cancel by origClientOrderId or orderId; pairs known from TLS timing) "
        "`#<flow_id>.<n>@<ts_ns>`, n its request number on the connection (no id at all: "
        "`#<flow_id>@<ts_ns>`); `.<k>` appended if two actions would still share one. A "
        "reply to no order: the same forms with the reply's time. Unique in a dataset, "
        "and each action's depends on that action alone. "
        "Never the id of the order a cancel/amend targets: that is orig_client_order_id "
        "/ target_order_id",
    ),
    _f("request_id", pa.string(), "JSON request id as sent (WebSocket, JSON-RPC), null "
       "elsewhere; clients number them per connection and may reuse them, so it is not "
       "unique: correlation_id is"),
    _f("client_order_id", pa.string(), "Client order id of the order (or of this cancel/amend)"),
    _f("orig_client_order_id", pa.string(), "Client order id of the order cancelled/amended"),
    _f("source_table", pa.string(), "http_messages, ws_messages or fix_messages"),
    STREAM_OFFSET,
)

ORDERS = _schema(
    *_ORDER_KEYS,
    _f("ts", TS, "ts_last of the order message: when its last byte left (first transmission)"),
    _f("ts_first", TS, "ts_first of the order message"),
    _f("decoded", pa.bool_(), "False when known only from TLS record timing (no key log)"),
    _f("target_order_id", pa.string(), "Exchange order id a cancel/amend targets (request "
       "field, or learned from the reply to the order with orig_client_order_id)"),
)

ACKS = _schema(
    *_ORDER_KEYS,
    _f("ts", TS, "ts_last of the reply: when all its bytes had arrived in order"),
    _f("status", pa.string(), "accepted, rejected or error"),
    _f(
        "leg",
        pa.string(),
        "ack (the reply to the request) or engine (first event on a private order stream)",
    ),
    _f("error_code", pa.string(), "Venue error code when rejected"),
    _f("decoded", pa.bool_(), "False when known only from TLS record timing"),
    _f(
        "exchange_order_id",
        pa.string(),
        "Exchange order id in the reply (orderId, ordId, FIX 37 ...)",
    ),
)

LATENCY = _schema(
    CAPTURE_ID,
    _f("venue", pa.string(), "Exchange"),
    _f("endpoint", pa.string(), "REST method+path, WebSocket method/op, or FIX MsgType"),
    FLOW_ID,
    _f("protocol", pa.string(), "rest, websocket or fix"),
    _f("kind", pa.string(), "new, cancel or amend"),
    _f(
        "leg",
        pa.string(),
        "ack: order to the venue's reply; engine: order to the first "
        "private-stream event for it (may be on another connection)",
    ),
    _f("correlation_id", pa.string(), "The order's correlation_id (`orders`): one per "
       "action in the dataset, so one row per (correlation_id, leg)"),
    _f("request_id", pa.string(), "JSON request id as sent (not unique: numbered per "
       "connection)"),
    _f("client_order_id", pa.string(), "Client order id"),
    _f("orig_client_order_id", pa.string(), "Client order id of the order a cancel/amend "
       "targets (sent, or learned from the exchange order id it names)"),
    _f("target_order_id", pa.string(), "Exchange order id of the order a cancel/amend targets "
       "(sent, or learned from the reply to the order with orig_client_order_id)"),
    _f("order_ts", TS, "Order's ts_last (its last byte's first transmission)"),
    _f("ack_ts", TS, "Reply's ts_last (its last byte available in order)"),
    _f("latency_ns", pa.int64(), "ack_ts - order_ts: wire-to-wire latency"),
    _f(
        "network_rtt_ns",
        pa.int64(),
        "Order's last segment to the exchange's pure TCP ACK covering "
        "it (tcp_rtt); null when that ACK rode on the reply or was not captured, or the "
        "segment was retransmitted (network_est_ns covers every order)",
    ),
    _f(
        "exchange_ns",
        pa.int64(),
        "latency_ns - network_est_ns: an estimate of the time spent in the exchange "
        "(and its network stack); null when network_method is `none`",
    ),
    _f(
        "network_est_ns",
        pa.int64(),
        "Network round trip estimate for every order (pipelines/sql/decompose.sql): "
        "the smallest of the connection's 9 pure-ACK RTT samples nearest the order "
        "(tcp_rtt `out`, method `ack`, not piggybacked, not retransmitted), its 9 TCP "
        "timestamps samples nearest the order (method `tsecr`, same filter) and its "
        "handshake RTT (if within 300 s)",
    ),
    _f(
        "network_method",
        pa.string(),
        "Where network_est_ns came from: `pure_ack` (the order's own segment, = "
        "network_rtt_ns), `nearest_rtt_sample` (another segment's pure ACK nearby), "
        "`tsecr` (a TCP timestamps echo nearby, RFC 7323), `handshake` (SYN to SYN/ACK), "
        "`none` (no estimate)",
    ),
    _f(
        "network_spread_ns",
        pa.int64(),
        "Interquartile range of the RTT samples the estimate was taken from (the `tsecr` "
        "window for `tsecr`, the pure-ACK window otherwise; 0 with one sample or only the "
        "handshake; null for `none`)",
    ),
    _f(
        "network_samples",
        pa.int64(),
        "RTT samples the minimum was taken over, both windows and the handshake included "
        "(0 for `none`)",
    ),
    _f("status", pa.string(), "accepted, rejected or error"),
    _f("decoded", pa.bool_(), "False for rows paired from TLS record timing only (no key log)"),
    _f("exchange_order_id", pa.string(), "Exchange order id in the reply"),
    _f(
        "error_code",
        pa.string(),
        "Venue error code of a rejected/error reply (Binance code, OKX sCode, FIX 103/102 ...)",
    ),
    _f(
        "ack_flow_id",
        pa.int64(),
        "Flow of the reply (differs from flow_id for an engine event on another connection)",
    ),
)

UNMATCHED = _schema(
    CAPTURE_ID,
    _f("venue", pa.string(), "Exchange"),
    FLOW_ID,
    _f("what", pa.string(), "order (no reply seen) or reply (no order seen)"),
    _f("endpoint", pa.string(), "Endpoint"),
    _f("kind", pa.string(), "new, cancel, amend"),
    _f("correlation_id", pa.string(), "The order's correlation_id (`orders`), or the "
       "reply's own (same forms, with the reply's time)"),
    _f("ts", TS, "Time of the order or reply"),
    _f("protocol", pa.string(), "rest, websocket or fix"),
    _f("request_id", pa.string(), "JSON request id"),
    _f("client_order_id", pa.string(), "Client order id"),
    _f("orig_client_order_id", pa.string(), "Client order id a cancel/amend targets"),
    _f("target_order_id", pa.string(), "Exchange order id a cancel/amend targets (orders)"),
    _f("decoded", pa.bool_(), "False when known only from TLS record timing"),
)

CAUSES = _schema(
    CAPTURE_ID,
    _f("venue", pa.string(), "Exchange of the order"),
    _f("endpoint", pa.string(), "Endpoint of the order (as in `latency`)"),
    FLOW_ID,
    _f("leg", pa.string(), "ack or engine (as in `latency`)"),
    _f("correlation_id", pa.string(), "The order's correlation_id in `latency` (one per "
       "action: with leg, its row there)"),
    _f("kind", pa.string(), "new, cancel or amend"),
    _f("order_ts", TS, "The order's ts_last (`latency.order_ts`)"),
    _f("latency_ns", pa.int64(), "The order's latency (`latency.latency_ns`)"),
    _f("cause", pa.string(), "delayed_ack (the reply held by Nagle until our delayed ACK), "
       "retransmission_out, retransmission_in, zero_window, tls_coalescing (the reply shared "
       "its TLS record with messages after it), head_of_line (the reply waited behind a "
       "larger message on the same connection), ack_path_gap (bytes of the reply's direction "
       "never captured); pcapflow/causes.py"),
    _f("stall_ts", TS, "When the stall was seen (the ACK, the resend, the zero window ...)"),
    _f("cost_ns", pa.int64(), "Longest time the stall can have added to the order's latency; "
       "null where the wire does not say"),
    _f("detail", pa.string(), "One sentence: what happened, with the packet where known"),
)

FEED_GAPS = _schema(
    CAPTURE_ID,
    _f("venue", pa.string(), "Exchange of the market-data connection"),
    FLOW_ID,
    _f("rule", pa.string(), "Feed rule that numbers the stream (pcapflow/feed.py FEED_RULES: "
       "binance_depth, binance_trade, okx_books, deribit_book, fix_seq ...)"),
    _f("stream", pa.string(), "The stream within the connection (event type and symbol, "
       "channel, FIX sender>target)"),
    _f("ts", TS, "Wire time (ts_last) of the message that showed the break"),
    _f("prev_ts", TS, "Wire time of the stream's message before it"),
    _f("check", pa.string(), "`next` (first id must be the last id + 1) or `prev` (the "
       "message names the previous id)"),
    _f("expected", pa.int64(), "The id the rule expected"),
    _f("got", pa.int64(), "The id the message carried"),
    _f("missing", pa.int64(), "Ids skipped (`next` gaps only: got - expected)"),
    _f("kind", pa.string(), "`gap` (got > expected) or `backwards` (a repeat or a restart "
       "without a snapshot)"),
)

ALERTS = _schema(
    CAPTURE_ID,
    _f("kind", pa.string(), "latency_shift, p99_high, retransmission_storm, zero_window, "
       "microburst, feed_gap, stale_feed, clock_step (pcapflow/alerts.py DETECTORS)"),
    _f("severity", pa.string(), "info, warning or critical"),
    _f("venue", pa.string(), "Exchange, null when the alert is tied to none"),
    _f("endpoint", pa.string(), "Endpoint (latency alerts)"),
    _f("flow_id", pa.int64(), "Connection (TCP and feed alerts)"),
    _f("stream", pa.string(), "Market-data stream (feed alerts); `out`/`in` (microbursts)"),
    _f("start_ts", TS, "Start of the alert's window"),
    _f("end_ts", TS, "End of the alert's window"),
    _f("value", pa.float64(), "What was measured (in `unit`)"),
    _f("threshold", pa.float64(), "What it was held against (in `unit`)"),
    _f("unit", pa.string(), "Unit of value and threshold; for clock_step it says the "
       "direction: `ms back` (the clock was set back) or `ms forward` (set forward)"),
    _f("detail", pa.string(), "One sentence"),
    _f("evidence_table", pa.string(), "Table holding the evidence rows"),
    _f("evidence_rows", pa.int64(), "How many rows evidence_sql selects"),
    _f("evidence_sql", pa.string(), "SQL selecting exactly the evidence rows "
       "(`pcapflow query \"<evidence_sql>\"`)"),
)

TABLES: dict[str, pa.Schema] = {
    "captures": CAPTURES,
    "flows": FLOWS,
    "tcp_events": TCP_EVENTS,
    "anomalies": ANOMALIES,
    "packets": PACKETS,
    **{name: t.schema for name, t in PROTOCOL_TABLES.items()},
    "tcp_rtt": TCP_RTT,
    "orders": ORDERS,
    "acks": ACKS,
    "latency": LATENCY,
    "unmatched": UNMATCHED,
    "causes": CAUSES,
    "feed_gaps": FEED_GAPS,
    "alerts": ALERTS,
}


TABLE_DOCS: dict[str, str] = {
    "captures": "one row per capture file ingested (a capture set, the files of one "
    "recording ingested together, has one row per file under one `capture_id`)",
    "flows": "one row per TCP/UDP connection",
    "tcp_events": "one row per TCP analysis event on a packet (as tshark's tcp.analysis.*)",
    "anomalies": 'one row per decode problem (Zeek\'s "weird"): the run goes on',
    "packets": "one row per packet (opt-in: `--packets`)",
    **{name: t.doc for name, t in PROTOCOL_TABLES.items()},
    "tcp_rtt": "one row per RTT sample: an acknowledged data segment of a parsed "
    "connection (`ack`), or a TCP timestamp echoed on any TCP connection (`tsecr`)",
    "orders": "one row per outbound order action (new, cancel, amend)",
    "acks": "one row per venue reply to an order action",
    "latency": "one row per matched order and reply",
    "unmatched": "one row per order without reply, or reply without order",
    "causes": "one row per (order, stall inside its window) that may explain its latency "
    "(written at ingest; pcapflow/causes.py)",
    "feed_gaps": "one row per break in a market-data stream's sequence numbers (written at "
    "ingest; pcapflow/feed.py)",
    "alerts": "one row per alert found in the capture at ingest with the default thresholds "
    "(`pcapflow alerts` with other thresholds recomputes; pcapflow/alerts.py)",
}


def without_capture_id(schema: pa.Schema) -> pa.Schema:
    """A table's columns as a writer and the matcher see them (``capture_id`` is the
    partition key)."""
    return pa.schema([f for f in schema if f.name != "capture_id"])


RENAMED: tuple[tuple[str, str, str, str], ...] = (
    ("tcp_events", "seq", "stream_offset",
     "a stream offset, named as in `packets` and the message tables (`packets.seq` is the "
     "raw TCP sequence number)"),
    ("tcp_events", "length", "payload_length", "the TCP payload length, named as in `packets`"),
    ("ws_messages", "payload_length", "message_length",
     "a message's payload after joining frames and inflating; `payload_length` is a "
     "transport payload on the wire (`packets`, `tcp_events`)"),
)
"""Columns renamed so that one name means one thing in every table:
``(table, old name, new name, why)``."""


def renames_markdown() -> str:
    """The list of renamed columns (``RENAMED``) for ``docs/tables.md``."""
    out = ["## Renamed columns\n",
           "One name means one thing in every table. Queries written against older "
           "datasets need these names changed:\n",
           "| table | old name | new name | why |\n|---|---|---|---|"]
    out += [f"| `{t}` | `{old}` | `{new}` | {why} |" for t, old, new, why in RENAMED]
    out.append("\nNot renamed: `ts_last` is the one name for \"when the last byte was "
               "available in order\" in every table (the reassembler's `Piece.ts_avail` is "
               "an `in` direction's `ts_last`; for `out` it is the first transmission, "
               "`ts_first`: DESIGN.md, Time); `seq` is only the raw TCP sequence number "
               "(`packets`), `length` only a TLS record's bytes on the wire (`tls_records`), "
               "`payload_length` only a transport payload on the wire (`packets`, `tcp_events`).\n")
    return "\n".join(out)


def markdown() -> str:
    """The table reference (README): every table, column, type and description."""
    out = []
    for name in TABLES:
        out.append(f"#### `{name}`: {TABLE_DOCS.get(name, '')}\n")
        out.append("| column | type | description |\n|---|---|---|")
        for col, typ, desc in doc(name):
            out.append(f"| `{col}` | {typ} | {desc} |")
        out.append("")
    return "\n".join(out)


def doc(table: str) -> list[tuple[str, str, str]]:
    """(column, type, description) rows for a table: used by docs and ``--help``."""
    return [
        (f.name, str(f.type), (f.metadata or {}).get(b"doc", b"").decode()) for f in TABLES[table]
    ]


if __name__ == "__main__":  # python -m pcapflow.pipelines.tables.schemas > docs/tables.md
    print("# pcapflow tables\n")
    print(
        "Generated from `pipelines/tables/schemas.py` and each protocol's `rows.py` "
        "(`python -m pcapflow.pipelines.tables.schemas > "
        "docs/tables.md`); a test keeps it current.\n"
    )
    print(
        "Times are `timestamp[ns, tz=UTC]` (DuckDB `TIMESTAMPTZ_NS`; subtract them with "
        "`epoch_ns(a) - epoch_ns(b)`); durations are int64 nanoseconds in `*_ns` columns. "
        "Every table is partitioned by `capture_id`.\n"
    )
    print(markdown())
    print(renames_markdown())
