"""End to end on the HTTP/2 sample (``binance_rest_h2``): tshark's ``http2`` dissection is
the oracle for every message, and the trading client's truth log for every order.

tshark is run once with the key log and its PDML parsed frame by frame (a packet holds
several HTTP/2 frames): per (direction, stream) the time of the packet where the header
block is dissected, of the frame with END_STREAM (or the RST_STREAM), ``:method``,
``:path`` and ``:status``. Multiplexed streams end out of order, so messages are compared by stream
id, never by position.
"""

from __future__ import annotations

import bisect
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from pcapflow.parsers.redact import redact_query

import pcapflow
from pcapflow import api

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURE = SAMPLES / "binance_rest_h2.pcap"
KEYLOG = SAMPLES / "binance_rest_h2.keylog"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
SERVER_PORT = 443
HEADERS, RST_STREAM = "1", "3"


def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _tshark_streams() -> dict[tuple[str, int], dict[str, object]]:
    """(direction, stream id) -> first/end frame times, method, path, status, reset."""
    out = subprocess.run(
        [TSHARK or "tshark", "-n", "-r", str(CAPTURE), "-o", f"tls.keylog_file:{KEYLOG}",
         "-Y", "http2", "-T", "pdml"], capture_output=True, check=True, timeout=300).stdout
    streams: dict[tuple[str, int], dict[str, object]] = {}
    for packet in ET.fromstring(out).iter("packet"):
        fields = {f.get("name"): f.get("show") for f in packet.iter("field")}
        t = _epoch_ns(str(fields["frame.time_epoch"]))
        direction = "in" if int(str(fields["tcp.srcport"])) == SERVER_PORT else "out"
        for frame in packet.iter("field"):
            if frame.get("name") != "http2.stream":
                continue
            f = {x.get("name"): x.get("show") for x in frame.iter("field")}
            if "http2.streamid" not in f or f["http2.streamid"] == "0":
                continue
            s = streams.setdefault((direction, int(str(f["http2.streamid"]))), {})
            if f.get("http2.type") == HEADERS and "first" not in s:
                s["first"] = t
                for key in ("method", "path", "status"):
                    if f"http2.headers.{key}" in f:
                        s[key] = f[f"http2.headers.{key}"]
            if f.get("http2.flags.end_stream") in ("1", "True"):
                s["end"] = t
            if f.get("http2.type") == RST_STREAM:
                s["reset"] = t
                s["reset_code"] = int(str(f["http2.rst_stream.error"]))
    return streams


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    root = tmp_path_factory.mktemp("h2")
    api.ingest([str(CAPTURE)], keylog=[KEYLOG], data=root)
    with pcapflow.open(root) as dataset:
        yield dataset


@pytest.fixture(scope="module")
def oracle() -> dict[tuple[str, int], dict[str, object]]:
    if TSHARK is None:
        pytest.skip("tshark not installed")
    return _tshark_streams()


def _truth() -> list[dict]:
    return [json.loads(x) for x in (SAMPLES / "binance_rest_h2.truth.jsonl").read_text()
            .splitlines()]


def test_flow_is_http2_with_no_anomaly(ds: pcapflow.Dataset) -> None:
    flows = ds.fetchall("SELECT app_protocol, alpn, sni, http_host, venue FROM flows")
    assert flows == [("tls/http2", "h2", "api.binance.com", "api.binance.com", "binance")]
    assert ds.fetchall("SELECT layer, code, detail FROM anomalies") == []


@needs_tshark
def test_messages_equal_tshark_http2(ds: pcapflow.Dataset, oracle: dict) -> None:
    rows = ds.df("SELECT kind, direction, stream_id, method, path, status, reason, version, "
                 "epoch_ns(ts_first) AS t1, epoch_ns(ts_last) AS t2 FROM http_messages")
    assert (rows.version == "HTTP/2").all()
    msgs = rows[rows.kind != "reset"]
    assert len(msgs) == len([s for s in oracle.values() if "first" in s])
    requests = sum(1 for (d, _), s in oracle.items() if d == "out" and "method" in s)
    responses = sum(1 for (d, _), s in oracle.items() if d == "in" and "status" in s)
    assert (msgs.kind == "request").sum() == requests > 100
    assert (msgs.kind == "response").sum() == responses
    for m in msgs.itertuples():
        s = oracle[(m.direction, m.stream_id)]
        # ts_last: the frame with END_STREAM, as tshark dissects it (where its TLS record
        # is complete); ts_first is the packet carrying the record's FIRST octet, which
        # tshark does not show: it can be an earlier packet than tshark's HEADERS frame
        assert m.t2 == s["end"] and m.t1 <= s["first"], m
        if m.kind == "request":
            assert (m.method, m.path) == (s["method"], redact_query(str(s["path"])))
        else:
            assert m.status == int(str(s["status"]))
    resets = rows[rows.kind == "reset"]
    want = {(d, sid): s for (d, sid), s in oracle.items() if "reset" in s}
    assert len(resets) == len(want) > 0
    for r in resets.itertuples():
        s = want[(r.direction, r.stream_id)]
        assert r.t2 == s["reset"] and s["reset_code"] == 7 and r.reason == "REFUSED_STREAM"


@needs_tshark
def test_every_truth_order_matched_to_the_nanosecond(ds: pcapflow.Dataset,
                                                      oracle: dict) -> None:
    truth = _truth()
    lat = ds.df("""
        SELECT l.kind, l.status, l.error_code, l.client_order_id, l.latency_ns,
               epoch_ns(l.order_ts) AS order_ts, epoch_ns(l.ack_ts) AS ack_ts, m.stream_id
        FROM latency l
        JOIN orders o ON o.flow_id = l.flow_id AND o.ts = l.order_ts
         AND o.correlation_id = l.correlation_id AND o.kind = l.kind
        JOIN http_messages m ON m.flow_id = o.flow_id AND m.stream_offset = o.stream_offset
         AND m.kind = 'request'
        WHERE l.leg = 'ack'""")
    assert ds.fetchall("SELECT count(*) FROM unmatched") == [(0,)]
    assert len(lat) == len(truth) > 100
    assert Counter(zip(lat.kind, lat.client_order_id, lat.status, strict=True)) == Counter(
        (t["kind"], t["client_order_id"], t["outcome"]) for t in truth)
    refused = {t["client_order_id"] for t in truth if t["error_code"] == "REFUSED_STREAM"}
    assert refused and set(lat.client_order_id[lat.error_code == "REFUSED_STREAM"]) == refused
    for r in lat.itertuples():
        request = oracle[("out", r.stream_id)]
        reply = oracle[("in", r.stream_id)]
        ack_t = reply.get("end", reply.get("reset"))
        assert (r.order_ts, r.ack_ts) == (request["end"], ack_t)
        assert r.latency_ns == ack_t - request["end"] > 0


def test_secrets_never_reach_a_table(ds: pcapflow.Dataset) -> None:
    secrets = json.loads((SAMPLES / "secrets.json").read_text())
    derived = secrets["derived"]["binance_rest_h2"]
    text = " ".join(str(v) for v in ds.fetchall(
        "SELECT path, headers::VARCHAR, body FROM http_messages"))
    assert secrets["fixed"]["binance_api_key"] not in text
    assert derived and not any(sig in text for sig in derived)


def test_without_key_log_says_why_and_guesses_nothing(tmp_path: Path) -> None:
    api.ingest([str(CAPTURE)], data=tmp_path)
    with pcapflow.open(tmp_path) as ds:
        assert ds.fetchall("SELECT count(*) FROM latency") == [(0,)]
        codes = ds.fetchall("SELECT layer, code FROM anomalies")
        assert codes == [("tls", "http2_not_decrypted")]
        detail = ds.fetchall("SELECT detail FROM anomalies")[0][0]
        assert "cannot be paired" in detail and "key log" in detail


def test_ts_first_is_the_record_holding_the_headers_first_octet(ds: pcapflow.Dataset) -> None:
    """A message's ts_first is the capture time of the packet that carried the first
    octet of its HEADERS frame: inside TLS, the ts_first of the record holding it
    (plaintext offsets counted over the decrypted application-data records)."""
    records = ds.fetchall("""
        SELECT direction, epoch_ns(ts_first), plaintext_length FROM tls_records
        WHERE decrypted AND inner_content_type = 23 ORDER BY direction, stream_offset""")
    starts: dict[str, list[int]] = {"out": [], "in": []}
    times: dict[str, list[int]] = {"out": [], "in": []}
    end = {"out": 0, "in": 0}  # plaintext offset past the last record seen
    for direction, t1, n in records:
        starts[direction].append(end[direction])
        times[direction].append(t1)
        end[direction] += n
    msgs = ds.fetchall("SELECT direction, stream_offset, epoch_ns(ts_first) FROM http_messages "
                       "WHERE kind <> 'reset'")
    assert len(msgs) > 200
    for direction, offset, t1 in msgs:
        i = bisect.bisect_right(starts[direction], offset) - 1
        assert t1 == times[direction][i], (direction, offset)


def test_capture_begun_mid_connection(ds: pcapflow.Dataset, tmp_path: Path) -> None:
    """The sample from its 60th packet on: TLS 1.3 finds the session's secrets by trial
    decryption, HTTP/2 resynchronises on frames and flags every header field that needs
    the HPACK entries sent before the cut; what it decodes is what the whole capture
    gives: the same latency, to the nanosecond, for every order whose id it reads."""
    import dpkt

    cut = tmp_path / "cut.pcap"
    with CAPTURE.open("rb") as src, cut.open("wb") as dst:
        reader = dpkt.pcap.Reader(src)
        writer = dpkt.pcap.Writer(dst, linktype=reader.datalink(), nano=True)
        for i, (ts, buf) in enumerate(reader):
            if i >= 59:
                writer.writepkt(buf, ts)
    api.ingest([str(cut)], keylog=[KEYLOG], data=tmp_path / "data")
    full = {r[0]: r[1:] for r in ds.fetchall(
        "SELECT client_order_id, order_ts, ack_ts, latency_ns, status FROM latency "
        "WHERE leg = 'ack'")}
    with pcapflow.open(tmp_path / "data") as mid:
        assert mid.fetchall("SELECT app_protocol FROM flows") == [("tls/http2",)]
        codes = dict(mid.fetchall("SELECT code, count(*) FROM anomalies WHERE layer = 'http2' "
                                  "GROUP BY code"))
        assert codes.get("mid_stream") and codes.get("hpack_unknown_entry")
        rows = mid.fetchall("SELECT client_order_id, order_ts, ack_ts, latency_ns, status "
                            "FROM latency WHERE leg = 'ack' AND client_order_id IS NOT NULL")
    assert len(rows) > 80
    for cid, *values in rows:
        assert tuple(values) == full[cid], cid
