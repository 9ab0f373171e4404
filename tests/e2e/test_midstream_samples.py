"""Captures that begin after the sessions opened, made from the sample captures.

The TLS samples become plain-TCP copies of the same conversations (``midstream_util``:
real ``websockets`` frames and aiohttp HTTP/1.1 with their real times), ingested whole
and cut after the upgrade at several points (at a segment, and inside one). For every
cut: every order the cut capture matches is one the whole capture matched, with the
same latency to the nanosecond (no false match, no guessed pair); every order sent
after the cut is found when nothing it needs depends on bytes before the cut (plain
frames, HTTP); compressed streams mark what they cannot know. TLS samples cut after
their handshake: an anomaly on every flow says why nothing is decrypted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.midstream_util import Segment, plain_copy, write_cut
from helpers.paths import SAMPLES

import pcapflow

# sample -> matcher (the plain copy has no SNI, and a cut one no Host: a venue map)
WS_SAMPLES = {"deribit_jsonrpc_tls13": "deribit", "binance_wsapi_tls13": "binance",
              "okx_ws_tls12": "okx"}
COMPRESSED = {"binance_wsapi_tls13", "okx_ws_tls12"}  # permessage-deflate, takeover
CUTS = (0.2, 0.45, 0.7, 0.9)  # where the cut falls, as a fraction of the segments


def _segments(name: str) -> list[Segment]:
    return plain_copy(SAMPLES / f"{name}.pcap", SAMPLES / f"{name}.keylog")


def _ingest(tmp: Path, tag: str, segments: list[Segment], start: int, skip: int,
            matcher: str) -> pcapflow.Dataset:
    cap = tmp / f"{tag}.pcap"
    write_cut(cap, segments, start, skip)
    venues = tmp / "venues.toml"
    venues.write_text(f'[[venue]]\nname = "{matcher}"\naddresses = ["10.0.0.2"]\n'
                      f'matcher = "{matcher}"\n')
    data = tmp / f"data-{tag}"
    pcapflow.ingest([cap], data=data, venues=venues)
    return pcapflow.open(data)


def _latency(ds: pcapflow.Dataset) -> dict[tuple[int, str], tuple[int, str | None]]:
    """(order time ns, leg) -> (latency ns, correlation id): the order's time is unique."""
    rows = ds.sql("SELECT epoch_ns(order_ts), leg, latency_ns, correlation_id FROM latency"
                  ).fetchall()
    out = {(t, leg): (lat, cid) for t, leg, lat, cid in rows}
    assert len(out) == len(rows)
    return out


def _cut_points(segments: list[Segment]) -> list[tuple[int, int]]:
    """(segment, bytes skipped in it): after the upgrade, on a segment and inside one."""
    after = next(i for i, s in enumerate(segments) if s.data.startswith(b"HTTP/1.1 101")) + 1
    points = []
    for f in CUTS:
        k = after + int(f * (len(segments) - after))
        points.append((k, 0))
        big = next(j for j in range(k, len(segments)) if len(segments[j].data) > 40)
        points.append((big, len(segments[big].data) // 3))
    return points


@pytest.mark.parametrize("name", sorted(WS_SAMPLES))
def test_websocket_cut_after_the_upgrade(name: str, tmp_path: Path) -> None:
    matcher = WS_SAMPLES[name]
    segments = _segments(name)
    whole = _ingest(tmp_path, "whole", segments, 0, 0, matcher)
    full = _latency(whole)
    assert len(full) >= 50
    for k, skip in _cut_points(segments):
        ds = _ingest(tmp_path, f"cut{k}-{skip}", segments, k, skip, matcher)
        got = _latency(ds)
        cut_ts = segments[k].ts
        # no false match: every pair is the whole capture's pair, to the nanosecond
        for key, (lat, cid) in got.items():
            assert full.get(key) == (lat, cid), (name, k, skip, key)
        after = {key for key in full if key[0] > cut_ts}
        flows = ds.sql("SELECT flow_id, app_protocol FROM flows").fetchall()
        ws_flows = {f for f, proto in flows if proto == "websocket"}
        assert ws_flows, flows
        codes = ds.sql("SELECT flow_id, code FROM anomalies").fetchall()
        noted = {f for f, c in codes if c == "websocket_without_upgrade"}
        assert noted == ws_flows  # the flow says the upgrade was not captured
        if name not in COMPRESSED:
            assert after <= set(got), (name, k, skip, sorted(after - set(got))[:3])
            continue
        # compressed: what is not found is flagged, never guessed
        unknown = ds.sql("SELECT count(*) FROM ws_messages WHERE payload_unknown > 0"
                         ).fetchall()[0][0]
        if after - set(got):
            assert unknown > 0
            assert {c for _, c in codes} & {"inflate_history_unknown"}
        print(f"{name} cut at segment {k}+{skip}: {len(after & set(got))} of {len(after)} "
              f"orders after the cut found; {unknown} messages with unknown bytes")


@pytest.mark.parametrize("name", ["binance_rest_tls13"])
def test_http_cut_mid_message(name: str, tmp_path: Path) -> None:
    segments = _segments(name)
    whole = _ingest(tmp_path, "whole", segments, 0, 0, "binance")
    full = _latency(whole)
    assert len(full) >= 50
    n = len(segments)
    points = [(k, skip) for f in CUTS for k in [int(f * n)]
              for skip in (0, len(segments[k].data) // 2)]
    for k, skip in points:
        ds = _ingest(tmp_path, f"cut{k}-{skip}", segments, k, skip, "binance")
        got = _latency(ds)
        cut_ts = segments[k].ts
        for key, (lat, _) in got.items():
            assert full[key][0] == lat, (k, skip, key)  # same pair, same latency
        # every order whose request and response came after the cut is paired
        after = {key for key in full if key[0] > cut_ts}
        assert after <= set(got), (k, skip, sorted(after - set(got))[:3])
        # a response to a request before the cut is an anomaly, not a pair
        early = ds.sql("SELECT count(*) FROM http_messages WHERE request_index = -1"
                       ).fetchall()[0][0]
        codes = [c for (c,) in ds.sql("SELECT code FROM anomalies").fetchall()]
        assert codes.count("response_without_request") == early


@pytest.mark.parametrize("keylog", [True, False])
@pytest.mark.parametrize("name", ["okx_ws_tls12", "deribit_jsonrpc_tls13"])
def test_tls_cut_after_the_handshake_says_why(name: str, keylog: bool, tmp_path: Path) -> None:
    """The TLS capture itself, from a packet after the handshake on: every TLS flow is
    decrypted (TLS 1.3 key search) or says why not (TLS 1.2: never without both hello
    randoms); records keep their times."""
    import dpkt

    src = SAMPLES / f"{name}.pcap"
    with src.open("rb") as fh:
        reader = dpkt.pcap.Reader(fh)
        packets = [(ts, bytes(buf)) for ts, buf in reader]
    cap = tmp_path / "cut.pcap"
    raw = src.read_bytes()  # keep the header (ns magic), drop the first half's records
    pos, records = 24, []
    while pos + 16 <= len(raw):
        incl = int.from_bytes(raw[pos + 8:pos + 12], "little")
        records.append(raw[pos:pos + 16 + incl])
        pos += 16 + incl
    assert len(records) == len(packets)
    cap.write_bytes(raw[:24] + b"".join(records[len(records) // 2:]))
    data = tmp_path / "data"
    pcapflow.ingest([cap], data=data, keylog=[SAMPLES / f"{name}.keylog"] if keylog else None)
    ds = pcapflow.open(data)
    tls_flows = {f for (f,) in ds.sql("SELECT DISTINCT flow_id FROM tls_records").fetchall()}
    assert tls_flows
    why = dict(ds.sql("SELECT flow_id, string_agg(detail, ' ') FROM anomalies WHERE code IN "
                      "('handshake_not_captured', 'tls13_secret_not_found', 'tls12_no_handshake') "
                      "GROUP BY 1"
                      ).fetchall())
    decrypted = {f for (f,) in ds.sql("SELECT DISTINCT flow_id FROM tls_records "
                                      "WHERE decrypted").fetchall()}
    assert set(why) == tls_flows  # every flow says it began before the capture
    if name == "okx_ws_tls12" or not keylog:
        assert not decrypted
        assert all("TLS 1.2" in w for w in why.values())
    n = ds.sql("SELECT count(*) FROM tls_records WHERE ts_first IS NULL OR ts_last IS NULL"
               ).fetchall()[0][0]
    assert n == 0


def test_websocket_inside_tls_without_upgrade() -> None:
    """Decrypted plaintext that is WebSocket frames with no upgrade seen (as when the
    TLS 1.3 secret is found mid-session): the inner layer frames it all the same."""
    from pcapflow.parsers.events import Anomaly
    from pcapflow.parsers.limits import Limits
    from pcapflow.parsers.websocket import WsMessage
    from pcapflow.pipelines.ingest.app_layer import _Layer

    segments = _segments("deribit_jsonrpc_tls13")
    after = next(i for i, s in enumerate(segments) if s.data.startswith(b"HTTP/1.1 101")) + 1
    layer = _Layer(3, None, inner=True, limits=Limits(), midstream=True)
    events: list[object] = []
    for s in segments[after + 5:]:
        events += layer.feed(0 if s.direction == "out" else 1, s.data, s.ts, s.ts)
    events += layer.finish(segments[-1].ts)
    assert layer.name == "websocket"
    msgs = [e for e in events if isinstance(e, WsMessage)]
    # every frame of the plaintext after the cut is a message (control frames included)
    assert len(msgs) >= len(segments[after + 5:]) - 2
    assert {m.direction for m in msgs} == {"out", "in"}
    assert all(m.masked == (m.direction == "out") for m in msgs)
    codes = [e.code for e in events if isinstance(e, Anomaly)]
    assert codes[0] == "websocket_without_upgrade"
