"""The real capture begun mid-session, ``sample_pcaps/midsession_binance/``, against its
client's truth and the reference capture that ran from the start.

The ccxt client opened four sessions and traded on each (truth ``extra.phase`` =
``before``); only then did a second tcpdump start (``binance-midsession.pcap``) and the
client trade on (``after``):

* REST over TLS 1.3 and the WebSocket API over TLS 1.3 without compression: the key
  search finds each direction's traffic secret (``handshake_not_captured``), the
  WebSocket frames are found without their upgrade (``websocket_without_upgrade``), and
  every order sent after the capture began is found, with the same times, latency and
  ids as in the reference capture, exact to the nanosecond, and as the truth says;
* the WebSocket API over TLS 1.3 with permessage-deflate (context takeover): every
  message copies bytes from before the capture; what cannot be known is flagged
  (``payload_unknown``, ``inflate_history_unknown``) and never matched: no order on it
  that the reference does not have at the same times;
* REST over TLS 1.2: not decryptable without its handshake; its flow has the anomaly
  that says so, and the coverage line counts it;
* tshark cannot decrypt the mid-session capture at all (a TLS session without its
  handshake). The oracle is built from the two real captures instead: the mid-session
  capture is, byte for byte, the tail of the reference capture (checked), but its
  timestamps differ from the reference's by up to ~1 µs (each tcpdump's packet socket
  stamps packets itself), so the reference cannot be compared to the nanosecond.
  ``stitched`` = the reference's packets before the cut (with their handshakes and
  upgrades) + the mid-session capture's packets with their own times: tshark decrypts
  it, and pcapflow's rows from the mid-session capture must equal, exactly, both
  tshark's frame times there and pcapflow's own rows from the stitched capture.

The venue of a connection without SNI or Host comes from a venue map here (ports 443
and 9443 -> binance), as a user would give it; ``test_without_a_venue_map`` checks the
same without one (venues from the connections' own content and server address).
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers.correlation import one_per_action, order_tables
from helpers.paths import SAMPLES
from helpers.samples_oracle import (
    TSHARK,
    check_against_truth,
    latency_rows,
    truth_rows,
    tshark_pairs,
)

import pcapflow

MID = SAMPLES / "midsession_binance"
CAPTURE = MID / "binance-midsession.pcap"
REFERENCE = MID / "reference" / "binance-full.pcap"
KEYLOG = MID / "midsession_binance.keylog"
TRUTH = truth_rows(MID / "midsession_binance.truth.jsonl")
VENUES = '[[venue]]\nname = "binance"\nports = [443, 9443]\nmatcher = "binance"\n'
SAME = ["client_port", "endpoint", "kind", "client_order_id", "request_id",
        "exchange_order_id", "status", "error_code", "o_ns", "a_ns", "latency_ns"]
LEARNED = ["orig_client_order_id", "target_order_id"]
"""Sent by the client, or learned from the order they target: from an order placed
before the capture began they cannot be learned (the truth check covers those sent)."""


def _conn(kind: str) -> int:
    """The local port of one of the four connections, by what the truth says of it."""
    want = {"rest13": ("rest", "1.3", False), "ws": ("websocket", "1.3", False),
            "wsz": ("websocket", "1.3", True), "rest12": ("rest", "1.2", False)}[kind]
    ports = {t["local_port"] for t in TRUTH
             if (t["extra"]["transport"], t["extra"]["tls"], t["extra"]["deflate"]) == want}
    assert len(ports) == 1
    return ports.pop()


def _ingest(cap: Path, root: Path, venues: bool = True) -> pcapflow.Dataset:
    args: dict = {}
    if venues:
        (root / "venues.toml").write_text(VENUES)
        args["venues"] = root / "venues.toml"
    pcapflow.ingest([cap], keylog=[KEYLOG], data=root / "data", **args)
    return pcapflow.open(root / "data")


@pytest.fixture(scope="module")
def mid(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    return _ingest(CAPTURE, tmp_path_factory.mktemp("mid"))


@pytest.fixture(scope="module")
def ref(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    return _ingest(REFERENCE, tmp_path_factory.mktemp("ref"))


def _first_packet_ns(ds: pcapflow.Dataset) -> int:
    return int(ds.scalar("SELECT min(epoch_ns(first_ts)) FROM flows"))


def _records(path: Path) -> tuple[bytes, list[bytes]]:
    """(file header, raw records) of a little-endian nanosecond pcap."""
    raw = path.read_bytes()
    assert raw[:4] == b"\x4d\x3c\xb2\xa1"
    out, pos = [], 24
    while pos + 16 <= len(raw):
        incl = struct.unpack_from("<I", raw, pos + 8)[0]
        out.append(raw[pos : pos + 16 + incl])
        pos += 16 + incl
    return raw[:24], out


@pytest.fixture(scope="module")
def stitched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pcapflow.Dataset]:
    """The reference before the cut + the mid-session capture (module docstring)."""
    head, ref = _records(REFERENCE)
    _, mid = _records(CAPTURE)
    k = len(ref) - len(mid)
    assert k > 0 and all(a[16:] == b[16:] for a, b in zip(ref[k:], mid, strict=True))
    skew = [abs(struct.unpack_from("<II", a)[0] * 10**9 + struct.unpack_from("<II", a)[1]
                - struct.unpack_from("<II", b)[0] * 10**9 - struct.unpack_from("<II", b)[1])
            for a, b in zip(ref[k:], mid, strict=True)]
    assert 0 < max(skew) < 50_000  # the same packets, stamped by each socket itself
    root = tmp_path_factory.mktemp("stitched")
    path = root / "stitched.pcap"
    path.write_bytes(head + b"".join(ref[:k]) + b"".join(mid))
    return path, _ingest(path, root)


def _frame(lat: pd.DataFrame) -> list[tuple]:
    return sorted(tuple("" if pd.isna(v) else str(v) for v in row)
                  for row in lat[SAME].itertuples(index=False))


def test_the_capture_began_after_the_sessions(mid: pcapflow.Dataset,
                                              ref: pcapflow.Dataset) -> None:
    start = _first_packet_ns(mid)
    before = [t for t in TRUTH if t["extra"]["phase"] == "before"]
    after = [t for t in TRUTH if t["extra"]["phase"] == "after"]
    assert len(before) >= 40 and len(after) >= 100
    # (an "after" order's send time is taken a little before ccxt signs and writes it:
    # check_against_truth checks each one's wire time is after it)
    assert max(t["recv_wall_ns"] for t in before) < start
    # no handshake and no upgrade in the capture; all four in the reference
    assert mid.scalar("SELECT count(*) FROM tls_records WHERE content_type = 22 "
                      "AND NOT decrypted") == 0
    assert mid.scalar("SELECT count(*) FROM http_messages WHERE status = 101") == 0
    assert sorted(ref.fetchall("SELECT tls_version, sni, syn_seen FROM flows")) == [
        ("1.2", "api.binance.com", True), ("1.3", "api.binance.com", True),
        ("1.3", "ws-api.binance.com", True), ("1.3", "ws-api.binance.com", True)]
    assert mid.fetchall("SELECT count(*), count(sni), count(*) FILTER (WHERE syn_seen) "
                        "FROM flows") == [(4, 0, 0)]


def test_every_order_after_the_capture_began_is_found(
        mid: pcapflow.Dataset, ref: pcapflow.Dataset,
        stitched: tuple[Path, pcapflow.Dataset]) -> None:
    start = _first_packet_ns(mid)
    lat, full = latency_rows(mid), latency_rows(stitched[1])
    decodable = {_conn("rest13"), _conn("ws")}
    truth = [t for t in TRUTH if t["extra"]["phase"] == "after" and t["local_port"] in decodable]
    got = lat[lat.client_port.isin(decodable)]
    assert len(got) == len(truth) > 60
    assert check_against_truth(got, truth) == len(truth)
    # the whole session (stitched: same packets, same times) has the same rows after
    # the cut, to the nanosecond
    want = full[(full.o_ns >= start) & full.client_port.isin(decodable)]
    a, b = set(_frame(got)), set(_frame(want))
    assert a == b, (sorted(a - b)[:4], sorted(b - a)[:4])
    # what was learned is never wrong: each known target is the whole session's
    both = got.merge(want, on=["client_port", "o_ns"], suffixes=("", "_whole"))
    assert len(both) == len(got)
    for col in LEARNED:
        known = both[both[col].notna()]
        assert (known[col] == known[f"{col}_whole"]).all(), col
    # both complete captures find every order of the whole session
    for ds in (stitched[1], ref):
        whole = latency_rows(ds)
        assert len(whole) == len(TRUTH)
        check_against_truth(whole, TRUTH)


def test_request_ids_repeat_across_connections_correlation_ids_do_not(
        ref: pcapflow.Dataset) -> None:
    """ccxt numbers the WebSocket API requests of each connection from the same start:
    the whole session's two WS API connections send the same request ids (truth). Each
    action still has a correlation id of its own, ``<request_id>#<flow_id>@<order ts>``
    (the id as sent stays in request_id), and a join on it pairs each order with its
    own reply, on its own connection, as the client's truth says."""
    ws = [t for t in TRUTH if t["extra"]["transport"] == "websocket"]
    per_conn: dict[int, set[str]] = {}
    for t in ws:
        per_conn.setdefault(t["local_port"], set()).add(t["request_id"])
    assert len(per_conn) == 2
    shared = set.intersection(*per_conn.values())
    assert len(shared) >= 40  # the same ids on both connections
    tables = order_tables(ref)
    assert one_per_action(tables)["orders"] == len(TRUTH)
    got = ref.fetchall(
        "SELECT f.client_port, o.request_id, o.correlation_id, o.flow_id, epoch_ns(o.ts), "
        "a.flow_id, a.exchange_order_id, a.status FROM orders o "
        "JOIN flows f USING (capture_id, flow_id) "
        "JOIN acks a ON a.capture_id = o.capture_id AND a.correlation_id = o.correlation_id "
        "AND a.leg = 'ack' WHERE o.protocol = 'websocket'")
    assert len(got) == len(ws)  # one reply per order, no cross-connection pairs
    by_action = {(p, r): (cid, flow, ts, ack_flow, oid, st)
                 for p, r, cid, flow, ts, ack_flow, oid, st in got}
    assert len(by_action) == len(ws)
    for t in ws:
        cid, flow, ts, ack_flow, oid, status = by_action[(t["local_port"], t["request_id"])]
        assert cid == f"{t['request_id']}#{flow}@{ts}" and ack_flow == flow, t
        assert status == t["outcome"] and oid == t["exchange_order_id"], t
    ids = {cid for cid, *_ in by_action.values()}
    assert len(ids) == len(ws)
    # the raw ids alone would pair across connections
    assert ref.scalar("SELECT count(*) FROM orders o JOIN acks a ON a.capture_id = "
                      "o.capture_id AND a.request_id = o.request_id AND a.leg = 'ack' "
                      "AND a.flow_id <> o.flow_id") >= len(shared)


def test_key_search_and_websocket_without_upgrade(mid: pcapflow.Dataset) -> None:
    rows = mid.fetchall("SELECT f.client_port, a.direction, a.code, a.detail FROM anomalies a "
                        "LEFT JOIN flows f USING (capture_id, flow_id)")
    by = {(p, d, c): det for p, d, c, det in rows}
    for kind in ("rest13", "ws", "wsz"):
        port = _conn(kind)
        for d in ("out", "in"):
            assert "found by trial decryption" in by[(port, d, "handshake_not_captured")]
    for kind in ("ws", "wsz"):
        assert (_conn(kind), None, "websocket_without_upgrade") in by
    assert mid.scalar("SELECT count(*) FROM tls_records WHERE NOT decrypted AND "
                      "content_type = 23 AND flow_id IN (SELECT flow_id FROM flows WHERE "
                      f"client_port <> {_conn('rest12')})") == 0


def test_deflate_without_its_history_is_flagged_not_guessed(
        mid: pcapflow.Dataset, stitched: tuple[Path, pcapflow.Dataset]) -> None:
    port = _conn("wsz")
    start = _first_packet_ns(mid)
    lat, full = latency_rows(mid), latency_rows(stitched[1])
    got = lat[lat.client_port == port]
    want = full[(full.client_port == port) & (full.o_ns >= start)]
    # every row found is the reference's, to the nanosecond (no guessed pair)
    assert set(_frame(got)) <= set(_frame(want))
    missing = len(want) - len(got)
    truth_after = sum(1 for t in TRUTH if t["local_port"] == port
                      and t["extra"]["phase"] == "after")
    assert len(want) == truth_after
    unknown = mid.scalar("SELECT count(*) FROM ws_messages w JOIN flows f USING "
                         f"(capture_id, flow_id) WHERE f.client_port = {port} "
                         "AND w.payload_unknown > 0 AND w.direction = 'out'")
    codes = {c for (c,) in mid.fetchall(
        "SELECT a.code FROM anomalies a JOIN flows f USING (capture_id, flow_id) "
        f"WHERE f.client_port = {port}")}
    if missing:  # what is not found is flagged: its messages hold unknown bytes
        assert unknown >= missing and "inflate_history_unknown" in codes
    print(f"deflate WS API: {len(got)} of {len(want)} orders after the cut found; "
          f"{unknown} requests with bytes copied from before the capture")


def test_tls12_has_its_anomaly_and_keeps_times(
        mid: pcapflow.Dataset, stitched: tuple[Path, pcapflow.Dataset]) -> None:
    port = _conn("rest12")
    # with its handshake (stitched) every order after the cut is there to be lost
    full = latency_rows(stitched[1])
    lost = full[(full.client_port == port) & (full.o_ns >= _first_packet_ns(mid))]
    assert len(lost) == sum(1 for t in TRUTH if t["local_port"] == port
                            and t["extra"]["phase"] == "after") > 20
    rows = mid.fetchall("SELECT a.direction, a.code, a.detail FROM anomalies a JOIN flows f "
                        f"USING (capture_id, flow_id) WHERE f.client_port = {port}")
    assert {d for d, _, _ in rows} == {"out", "in"}
    assert all("TLS 1.2" in det and "handshake" in det for _, _, det in rows), rows
    # recognised as TLS 1.2 from its records (AES-GCM explicit nonces counting up)
    assert {code for _, code, _ in rows} == {"tls12_no_handshake"}, rows
    rec = mid.fetchall("SELECT count(*), count(ts_first), count(ts_last), "
                       "count(*) FILTER (WHERE decrypted) FROM tls_records r JOIN flows f "
                       f"USING (capture_id, flow_id) WHERE f.client_port = {port}")[0]
    assert rec[0] > 50 and rec[0] == rec[1] == rec[2] and rec[3] == 0
    assert mid.scalar("SELECT count(*) FROM latency l JOIN flows f USING (capture_id, flow_id) "
                      f"WHERE f.client_port = {port}") == 0


def test_coverage_line_states_it(tmp_path: Path) -> None:
    (tmp_path / "venues.toml").write_text(VENUES)
    out = subprocess.run([sys.executable, "-m", "pcapflow.cli", "ingest", str(MID), "--keylog",
                          str(KEYLOG), "--venues", str(tmp_path / "venues.toml"), "--data",
                          str(tmp_path / "d")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    rep = subprocess.run([sys.executable, "-m", "pcapflow.cli", "report", "--data",
                          str(tmp_path / "d")], capture_output=True, text=True, timeout=600)
    for text in (out.stdout + out.stderr, rep.stdout + rep.stderr):  # piped: notes on stderr
        flat = " ".join(text.split())
        assert "coverage: orders from 2 of 4 connections with payload" in flat, flat
        assert "1 TLS began before the capture" in flat, flat
        assert "--keylog" not in flat  # the user passed it: not told to


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
def test_latency_equals_tshark_frame_times(mid: pcapflow.Dataset, ref: pcapflow.Dataset,
                                           stitched: tuple[Path, pcapflow.Dataset]) -> None:
    """tshark needs the handshake to decrypt (no key search): nothing at all in the
    mid-session capture. On the stitched capture (the same packets at the same times,
    with the handshakes before them) it times every order of the session, and the
    mid-session capture's rows carry exactly those times. The reference is timed too."""
    assert tshark_pairs(CAPTURE, KEYLOG) == {}
    for ds, cap in ((stitched[1], stitched[0]), (ref, REFERENCE)):
        pairs = tshark_pairs(cap, KEYLOG)
        full = latency_rows(ds)
        assert len(pairs) == len(full) == len(TRUTH)
        for r in full.itertuples():
            assert pairs[(int(r.client_port), int(r.o_ns))] == (r.o_ns, r.a_ns), r
    lat = latency_rows(mid)
    assert len(lat) > 60
    for r in lat.itertuples():
        assert pairs_of_stitched(stitched[0])[(int(r.client_port), int(r.o_ns))] == (
            r.o_ns, r.a_ns), r


_PAIRS: dict[Path, dict] = {}


def pairs_of_stitched(path: Path) -> dict:
    if path not in _PAIRS:
        _PAIRS[path] = tshark_pairs(path, KEYLOG)
    return _PAIRS[path]


def test_without_a_venue_map(tmp_path: Path) -> None:
    """No venue map: the venues come from what the connections themselves say (issue
    15.3: the REST paths and the WebSocket API methods they sent, the server address
    other connections named). Every order after the cut on the plain WebSocket API is
    found as with the map; the TLS 1.2 REST connection, known to be REST from its
    server address, gets order/reply pairs from TLS record timing only (``decoded``
    false), each inside one truth action's send/receive window."""
    ds = _ingest(CAPTURE, tmp_path, venues=False)
    lat = latency_rows(ds)
    for kind in ("rest13", "ws"):
        port = _conn(kind)
        truth = [t for t in TRUTH if t["extra"]["phase"] == "after" and t["local_port"] == port]
        assert check_against_truth(lat[lat.client_port == port], truth) == len(truth)
    port = _conn("rest12")
    timed = lat[lat.client_port == port]
    truth = sorted((t["send_wall_ns"], t["recv_wall_ns"]) for t in TRUTH
                   if t["local_port"] == port and t["extra"]["phase"] == "after")
    assert not timed.decoded.any() and (timed.kind == "unknown").all()
    hits = [[w for w in truth if w[0] <= o <= a <= w[1]] for o, a in zip(timed.o_ns,
                                                                           timed.a_ns,
                                                                           strict=True)]
    assert all(len(h) == 1 for h in hits)  # each pair is one real order's
    assert len({h[0] for h in hits}) == len(hits) >= 0.9 * len(truth)
    print(f"TLS 1.2 by record timing: {len(hits)} of {len(truth)} orders after the cut")
