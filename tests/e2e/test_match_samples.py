"""End to end on the committed sample captures: ingest -> orders, acks, latency.

Three independent references:

* the trading client's own log (``NAME.truth.jsonl``): every order action it
  sent must be in ``latency`` (leg ``ack``) with the same kind, ids, outcome
  and error code, on the connection it used (matched by local port), in the
  order it was sent;
* tshark's frame times: for every latency row (both legs), the frame that ENDS the order
  message and the frame that ENDS the reply are found by tshark's own
  dissection (HTTP / WebSocket / FIX over decrypted TLS), as the k-th message
  ending in that direction of that TCP stream, and ``latency_ns`` must equal
  the difference of their ``frame.time_epoch`` to the nanosecond. tshark runs
  with ``tcp.reassemble_out_of_order:TRUE`` so that, in the lossy capture, a
  reply behind a lost segment is dissected in the frame whose retransmission
  completes it, which is exactly our "all bytes up to the last had arrived"
  (DESIGN.md, Time); an outbound message is dissected at its first
  transmission, which is our ``out`` ts_last. No deliberate difference remains;
* the same capture ingested WITHOUT its key log: ``decoded = false`` rows from
  TLS record timing, one per HTTP request/response pair.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.correlation import one_per_action, order_tables
from pcapflow.pipelines import match
from pcapflow.pipelines.tables.schemas import TABLES

import pcapflow
from pcapflow import api, venues

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
TSHARK = shutil.which("tshark")
CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])


@pytest.fixture(scope="module")
def dataset(samples_dataset: pcapflow.Dataset) -> pcapflow.Dataset:
    """Every sample with its key logs and the demo's venue map (``conftest.py``)."""
    return samples_dataset


def _capture_id(ds: pcapflow.Dataset, path: Path) -> str:
    rows = ds.sql("SELECT capture_id FROM captures WHERE path = ?", [str(path)]).fetchall()
    assert len(rows) == 1
    return rows[0][0]


def _norm(v: object) -> str | None:
    if v is None or v != v:  # None or NaN
        return None
    return str(v)


def _truth(path: Path) -> list[dict]:
    text = (SAMPLES / f"{path.stem}.truth.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_every_truth_order_is_matched(dataset: pcapflow.Dataset, capture: Path) -> None:
    cid = _capture_id(dataset, capture)
    port_flow = dict(dataset.sql("SELECT client_port, flow_id FROM flows WHERE capture_id = ?",
                                 [cid]).fetchall())
    rows = dataset.df(
        "SELECT * FROM latency WHERE capture_id = ? AND leg = 'ack' "
        "ORDER BY flow_id, order_ts", [cid])
    truth = _truth(capture)
    assert len(rows) == len(truth)
    unmatched = dataset.sql("SELECT count(*) FROM unmatched WHERE capture_id = ?",
                            [cid]).fetchall()[0]
    assert unmatched == (0,)  # every truth order got a reply; no orphan replies either
    by_flow: dict[int, list[dict]] = defaultdict(list)
    for t in sorted(truth, key=lambda t: t["send_mono_ns"]):
        by_flow[port_flow[t["local_port"]]].append(t)
    got = {f: list(g.itertuples()) for f, g in rows.groupby("flow_id")}
    assert set(got) == set(by_flow)
    if "h2" in capture.stem:
        # HTTP/2: several requests in flight; the client's send order (taken before the
        # request is queued) is not the wire order, so both sides go by order id
        for flow in by_flow:
            by_flow[flow].sort(key=lambda t: t["client_order_id"])
            got[flow].sort(key=lambda r: r.client_order_id)
    for flow, expected in by_flow.items():
        assert len(got[flow]) == len(expected)
        for t, r in zip(expected, got[flow], strict=True):
            assert r.endpoint == t["endpoint"]
            assert r.venue == t["venue"]
            assert (r.kind, _norm(r.client_order_id), _norm(r.orig_client_order_id)) == (
                t["kind"], _norm(t["client_order_id"]), _norm(t["orig_client_order_id"]))
            assert r.status == t["outcome"], (t, r)
            if t["outcome"] != "accepted":
                assert _norm(r.error_code) == _norm(t["error_code"])
            assert _norm(r.exchange_order_id) == _norm(t["exchange_order_id"])
            if r.protocol == "websocket":
                assert r.request_id == _norm(t["request_id"])
            assert r.latency_ns > 0 and r.decoded
            if pd.notna(r.network_rtt_ns):  # null when the ACK rode on the reply
                assert r.network_rtt_ns > 0
                assert r.network_est_ns <= r.network_rtt_ns  # a minimum over samples
            assert r.exchange_ns == r.latency_ns - r.network_est_ns  # test_decompose.py


# ------------------------------------------------------------------ tshark oracle
def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


# Per message table: the tshark field whose occurrences count the messages
# that end in a frame (several FIX messages or WebSocket frames can end in one
# TCP segment or TLS record).
ENDS = {"http_messages": ("http", "http.request.method", "http.response.code"),
        "ws_messages": ("websocket", "websocket.fin", None),
        "fix_messages": ("fix", "fix.MsgType", None)}


def _message_ends(capture: Path, table: str) -> dict[tuple[int, int], list[int]]:
    """(source port, tcp stream) -> times of the frames ending each message, in order."""
    proto, field, other = ENDS[table]
    cmd = [TSHARK or "tshark", "-n", "-r", str(capture), "-o",
           "tcp.reassemble_out_of_order:TRUE", "-d", "tcp.port==9878,fix",
           "-Y", proto, "-T", "fields", "-E", "occurrence=a",
           "-e", "frame.time_epoch", "-e", "tcp.stream", "-e", "tcp.srcport", "-e", field]
    if other:
        cmd += ["-e", other]
    keylog = SAMPLES / f"{capture.stem}.keylog"
    if keylog.exists():
        cmd += ["-o", f"tls.keylog_file:{keylog}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    ends: dict[tuple[int, int], list[int]] = defaultdict(list)
    for line in out.splitlines():
        cols = line.split("\t")
        values = [v for c in cols[3:] for v in c.split(",") if v]
        if field == "websocket.fin":
            values = [v for v in values if v in ("1", "True")]  # a fragment ends nothing
        ends[(int(cols[2]), int(cols[1]))].extend([_epoch_ns(cols[0])] * len(values))
    return ends


# HTTP/2 multiplexes: messages end out of order, so the k-th-message oracle does not
# apply; tests/e2e/test_http2_sample.py checks that capture stream by stream.
HTTP1_ORACLE = [c for c in CAPTURES if "h2" not in c.stem]


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("capture", HTTP1_ORACLE, ids=lambda p: p.name)
def test_latency_equals_tshark_frame_times(dataset: pcapflow.Dataset, capture: Path) -> None:
    cid = _capture_id(dataset, capture)
    flows = dataset.df("SELECT flow_id, client_port, server_port FROM flows "
                       "WHERE capture_id = ?", [cid])
    lat = dataset.df("""
        SELECT l.*, o.source_table
        FROM latency l JOIN orders o ON o.capture_id = l.capture_id AND o.flow_id = l.flow_id
         AND o.ts = l.order_ts AND o.correlation_id = l.correlation_id AND o.kind = l.kind
        WHERE l.capture_id = ?""", [cid])
    assert (lat.leg == "ack").sum() == len(_truth(capture))
    table = lat.source_table.iloc[0]
    # Ordinal of every message in its (flow, direction), by stream offset.
    msgs = dataset.df(f"""
        SELECT flow_id, direction, epoch_ns(ts_last) AS ts,
               row_number() OVER (PARTITION BY flow_id, direction ORDER BY stream_offset) - 1
                   AS nth
        FROM {table} WHERE capture_id = ?""", [cid])
    ordinal = {(r.flow_id, r.direction, r.ts): r.nth for r in msgs.itertuples()}
    ends = _message_ends(capture, table)
    stream_of = {}
    for f in flows.itertuples():
        keys = [k for k in ends if k[0] == f.client_port]
        if keys:
            stream_of[f.flow_id] = keys[0][1]
    checked = 0
    ports = flows.set_index("flow_id")
    for r in lat.itertuples():  # both legs: an engine event may be on another flow
        out_end = ends[(int(ports.client_port[r.flow_id]), stream_of[r.flow_id])]
        in_end = ends[(int(ports.server_port[r.ack_flow_id]), stream_of[r.ack_flow_id])]
        order_t = out_end[ordinal[(r.flow_id, "out", r.order_ts.value)]]
        ack_t = in_end[ordinal[(r.ack_flow_id, "in", r.ack_ts.value)]]
        assert (r.order_ts.value, r.ack_ts.value) == (order_t, ack_t)
        assert r.latency_ns == ack_t - order_t
        checked += 1
    assert checked == len(lat) > 0


# ------------------------------------------------------------------ no key log
REST_TLS = [c for c in HTTP1_ORACLE if "rest" in c.name and c.suffix == ".pcap"]
# (HTTP/2 without its key log is not paired at all: test_http2_sample.py)


@pytest.mark.parametrize("capture", REST_TLS, ids=lambda p: p.name)
def test_without_key_log_pairs_from_tls_record_timing(
        dataset: pcapflow.Dataset, capture: Path, tmp_path: Path) -> None:
    api.ingest([str(capture)], data=tmp_path)
    with pcapflow.open(tmp_path) as ds:
        enc = ds.df("SELECT * FROM latency ORDER BY flow_id, order_ts")
        un = ds.sql("SELECT count(*) FROM unmatched").fetchall()[0]
    cid = _capture_id(dataset, capture)
    pairs = dataset.df("""
        SELECT q.flow_id, epoch_ns(q.ts_last) AS req_ts, epoch_ns(r.ts_last) AS resp_ts
        FROM http_messages q JOIN http_messages r
          ON r.capture_id = q.capture_id AND r.flow_id = q.flow_id
         AND r.request_index = q.request_index AND r.kind = 'response'
        WHERE q.capture_id = ? AND q.kind = 'request'
        ORDER BY q.flow_id, q.request_index""", [cid])
    assert len(enc) == len(pairs) > 0
    assert not enc.decoded.any()
    assert enc.endpoint.isna().all() and (enc.kind == "unknown").all()
    assert (enc.venue == "binance").all()
    assert un == (0,)
    # Each encrypted pair has the decoded pair's times: a request ends with
    # the record holding its last byte, and so does a response.
    assert list(enc.order_ts.map(lambda t: t.value)) == list(pairs.req_ts)
    assert list(enc.ack_ts.map(lambda t: t.value)) == list(pairs.resp_ts)
    # REST: the exchange's ACK usually rides on its response, and then no network
    # RTT is claimed (test_network_rtt_only_from_pure_acks checks each row)
    assert (enc.network_rtt_ns.isna() | (enc.network_rtt_ns > 0)).all()


def test_network_rtt_only_from_pure_acks(dataset: pcapflow.Dataset) -> None:
    """network_rtt_ns is the tcp_rtt sample of the order's last segment, unless the
    ACK covering it came on a data segment or after a retransmission (Karn's rule):
    then it is null, never zero."""
    rows = dataset.fetchall("""
        SELECT l.network_rtt_ns, r.rtt_ns, r.piggybacked OR r.retransmitted
        FROM latency l JOIN tcp_rtt r ON r.capture_id = l.capture_id
         AND r.flow_id = l.flow_id AND r.direction = 'out' AND r.ts_sent = l.order_ts
        WHERE l.leg = 'ack' AND l.decoded""")
    assert len(rows) > 100
    for rtt, sample, piggy in rows:
        assert rtt == (None if piggy else sample)
    assert any(r[0] is not None for r in rows) and any(r[0] is None for r in rows)


def test_flows_get_venues(dataset: pcapflow.Dataset) -> None:
    rows = dataset.sql("SELECT sni, venue FROM flows WHERE sni IS NOT NULL").fetchall()
    expected = {"api.binance.com": "binance", "ws-api.binance.com": "binance",
                "stream.binance.com": "binance", "ws.okx.com": "okx",
                "www.deribit.com": "deribit"}
    assert rows and all(expected[sni] == venue for sni, venue in rows)
    fix = dataset.sql("SELECT DISTINCT venue FROM flows WHERE app_protocol = 'fix'").fetchall()
    assert fix == [("mockfix",)]


def test_second_leg_engine_events(dataset: pcapflow.Dataset) -> None:
    """Every accepted WS order of Binance, OKX and Deribit has an engine event after it."""
    rows = dataset.df("""
        SELECT a.venue, a.kind, a.client_order_id, a.orig_client_order_id,
               a.latency_ns AS ack_ns, e.latency_ns AS engine_ns
        FROM latency a LEFT JOIN latency e
          ON e.capture_id = a.capture_id AND e.flow_id = a.flow_id
         AND e.order_ts = a.order_ts AND e.correlation_id = a.correlation_id
         AND e.leg = 'engine'
        WHERE a.leg = 'ack' AND a.protocol = 'websocket' AND a.status = 'accepted'
          -- the tick-to-trade client does not subscribe to its user data stream
          AND a.capture_id NOT IN (SELECT capture_id FROM captures
                                   WHERE path LIKE '%binance_tick_tls13%')""")
    assert set(rows.venue) == {"binance", "okx", "deribit"}
    assert rows.engine_ns.notna().all()
    assert (rows.engine_ns > 0).all()
    rejected = dataset.sql("SELECT count(*) FROM latency a JOIN latency e "
                           "ON e.capture_id = a.capture_id AND e.order_ts = a.order_ts "
                           "AND e.flow_id = a.flow_id AND e.leg = 'engine' "
                           "WHERE a.leg = 'ack' AND a.status = 'rejected'").fetchall()[0]
    assert rejected == (0,)


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_prefilter_changes_no_row(dataset: pcapflow.Dataset, capture: Path) -> None:
    """The matcher's prefilter (match.candidates_sql) keeps every message a
    matcher uses: the same rows with it as without it, and the ones ingest
    wrote. The wsapi capture's market-data stream is skipped."""
    cid = _capture_id(dataset, capture)
    files = {t: match._partition_files(dataset.path, t, cid) for t in match.INPUT_TABLES}

    def stored(table: str) -> pa.Table:
        schema = pa.schema([f for f in TABLES[table] if f.name != "capture_id"])
        return pa.concat_tables([pq.read_table(f, schema=schema)
                                 for f in match._partition_files(dataset.path, table, cid)])

    flows = stored("flows")
    registry = venues.registry(dataset.path.parent / "venues.toml")
    on = match.match_tables(files, flows, registry)
    off = match.match_tables(files, flows, registry, prefilter=False)
    assert on.flow_venue == off.flow_venue
    for table, rows in off.tables.items():
        want = sorted(map(repr, rows.to_pylist()))
        assert sorted(map(repr, on.tables[table].to_pylist())) == want, table
        if rows.num_rows:
            assert sorted(map(repr, stored(table).to_pylist())) == want, table
    with match.matched(files, flows, registry) as con:
        read, text = con.execute(
            "SELECT (SELECT count(*) FROM ws_in), "
            "(SELECT count(*) FROM ws_messages WHERE opcode = 'text')").fetchall()[0]
    if capture.stem == "binance_wsapi_tls13":
        assert 0 < read < text


def test_correlation_ids_are_one_per_action_and_targets_are_named(
        dataset: pcapflow.Dataset) -> None:
    """In the samples ingested into one dataset: each action has a correlation id of its
    own, which every row about it carries, and the scoped and generated ones
    (``<id>#<flow>@<ts>``, ``#<flow>.<n>@<ts>``) are unique across its captures
    (helpers/correlation.py); no cancel or amend carries the id of the order it
    targets, and a cancel or amend whose target's reply is in the capture names both
    of the target's ids."""
    checked = one_per_action(order_tables(dataset))
    assert checked["orders"] == dataset.scalar("SELECT count(*) FROM orders") > 0
    assert dataset.scalar("SELECT count(DISTINCT capture_id) FROM orders") > 5
    same = dataset.df("SELECT * FROM orders WHERE kind IN ('cancel', 'amend') "
                      "AND correlation_id = orig_client_order_id")
    assert same.empty
    known = dataset.df(
        "SELECT l.capture_id, l.venue, l.kind, l.orig_client_order_id, l.target_order_id, "
        "n.exchange_order_id AS want FROM latency l JOIN latency n "
        "ON n.capture_id = l.capture_id AND n.venue IS NOT DISTINCT FROM l.venue "
        "AND n.kind = 'new' AND n.leg = 'ack' AND n.status = 'accepted' "
        "AND n.client_order_id = l.orig_client_order_id "
        "WHERE l.kind IN ('cancel', 'amend') AND l.leg = 'ack' AND l.protocol = 'rest'")
    assert len(known) > 0
    assert (known["target_order_id"] == known["want"]).all()
