"""Venues of connections without a name (``pipelines.venue_infer``), on real samples cut
the way captures are taken: after the handshake, so no SNI and no Host.

- ``address``: the curl HTTP/2 sample cut in the middle of one connection; the later
  connections to the same server carry SNI ``api.binance.com``.
- ``dataset``: that connection alone, ingested into a dataset that already holds the
  whole sample (a capture of yesterday, say).
- ``content``: that connection alone in a fresh dataset: its request paths
  (``/api/v3/order``) name Binance spot; the Deribit sample's WebSocket connection
  alone: its JSON-RPC methods name Deribit. Binance's WebSocket API methods shared by
  spot and USD-M futures give the dialect and leave the venue NULL.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import dpkt
import pytest
from pcapflow.pipelines.venue_infer import infer
from pcapflow.pipelines.venue_rules import Assignment, FlowContent, FlowFacts

import pcapflow
from pcapflow.venues import VenueRegistry, content_rules

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


def _packets(name: str) -> list[tuple[float, bytes, tuple[int, int]]]:
    with (SAMPLES / name).open("rb") as fh:
        out = []
        for ts, buf in dpkt.pcap.Reader(fh):
            tcp = dpkt.ethernet.Ethernet(buf).data.data
            out.append((ts, buf, (tcp.sport, tcp.dport)))
        return out


def _write(path: Path, packets: list[tuple[float, bytes, tuple[int, int]]]) -> Path:
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
        for ts, buf, _ in packets:
            writer.writepkt(buf, ts)
    return path


def _busiest_port(name: str) -> int:
    import json

    truth = [json.loads(x) for x in (SAMPLES / f"{name}.truth.jsonl").read_text().split("\n")
             if x]
    return Counter(t["local_port"] for t in truth if t["kind"] == "new").most_common(1)[0][0]


def _cut(name: str, tmp: Path, *, alone: bool) -> tuple[Path, int]:
    """The sample from 40 % into its busiest order connection (``alone``: only that
    connection's packets)."""
    port = _busiest_port(name)
    packets = _packets(f"{name}.pcap")
    mine = [i for i, p in enumerate(packets) if port in p[2]]
    start = mine[len(mine) * 2 // 5]
    kept = [p for p in packets[start:] if not alone or port in p[2]]
    return _write(tmp / f"{name}-cut{'-alone' if alone else ''}.pcap", kept), port


def _flow(ds: pcapflow.Dataset, port: int) -> tuple[object, ...]:
    rows = ds.fetchall("SELECT sni, http_host, venue, venue_source FROM flows "
                       "WHERE client_port = ?", [port])
    assert len(rows) == 1
    return rows[0]


def test_named_flows_say_so(tmp_path: Path) -> None:
    pcapflow.ingest([SAMPLES / "binance_rest_h2_curl.pcap"],
                    keylog=[SAMPLES / "binance_rest_h2_curl.keylog"], data=tmp_path)
    with pcapflow.open(tmp_path) as ds:
        assert ds.fetchall("SELECT DISTINCT venue, venue_source FROM flows") == [
            ("binance", "name")]


def test_venue_from_other_connections_to_the_same_address(tmp_path: Path) -> None:
    cut, port = _cut("binance_rest_h2_curl", tmp_path, alone=False)
    pcapflow.ingest([cut], keylog=[SAMPLES / "binance_rest_h2_curl.keylog"],
                    data=tmp_path / "d")
    with pcapflow.open(tmp_path / "d") as ds:
        assert _flow(ds, port) == (None, None, "binance", "address")
        venues = ds.fetchall("SELECT DISTINCT l.venue FROM latency l JOIN flows f "
                             "USING (flow_id) WHERE f.client_port = ?", [port])
        assert venues == [("binance",)]
        assert ds.fetchall("SELECT count(*) FROM latency WHERE venue IS NULL") == [(0,)]


def test_venue_from_the_datasets_earlier_captures(tmp_path: Path) -> None:
    keylog = [SAMPLES / "binance_rest_h2_curl.keylog"]
    pcapflow.ingest([SAMPLES / "binance_rest_h2_curl.pcap"], keylog=keylog, data=tmp_path)
    cut, _ = _cut("binance_rest_h2_curl", tmp_path, alone=True)
    pcapflow.ingest([cut], keylog=keylog, data=tmp_path)
    with pcapflow.open(tmp_path) as ds:
        cid = ds.fetchall("SELECT capture_id FROM captures WHERE path = ?", [str(cut)])[0][0]
        rows = ds.fetchall("SELECT sni, venue, venue_source FROM flows WHERE capture_id = ?",
                           [cid])
    assert rows == [(None, "binance", "dataset")]


def test_venue_from_what_the_connection_sent(tmp_path: Path) -> None:
    cut, port = _cut("binance_rest_h2_curl", tmp_path, alone=True)
    pcapflow.ingest([cut], keylog=[SAMPLES / "binance_rest_h2_curl.keylog"],
                    data=tmp_path / "d")
    with pcapflow.open(tmp_path / "d") as ds:
        assert _flow(ds, port) == (None, None, "binance", "content")
        n = ds.fetchall("SELECT count(*) FROM latency WHERE venue = 'binance'")[0][0]
    assert n >= 3


def test_websocket_content_names_the_venue(tmp_path: Path) -> None:
    """Deribit's JSON-RPC over WebSocket, picked up mid-stream (no upgrade, no SNI): its
    ``private/buy`` / ``private/cancel`` calls name Deribit. (The Binance WebSocket API
    sample is permessage-deflate: cut, its messages lean on history not captured and
    name nothing; ``test_content_rules`` covers its methods.)"""
    cut, port = _cut("deribit_jsonrpc_tls13", tmp_path, alone=True)
    pcapflow.ingest([cut], keylog=[SAMPLES / "deribit_jsonrpc_tls13.keylog"],
                    data=tmp_path / "d")
    with pcapflow.open(tmp_path / "d") as ds:
        assert _flow(ds, port) == (None, None, "deribit", "content")
        n, named = ds.fetchall("SELECT count(*), count(venue) FROM latency")[0]
    assert n >= 10 and named == n


# ----------------------------------------------------------------- rules, one by one
def _facts(i: int, ip: str, port: int, sni: str | None = None) -> FlowFacts:
    return FlowFacts(flow_id=i, server_ip=ip, server_port=port, sni=sni, http_host=None,
                     app_protocol="tls/http", alpn=None)


def test_two_venues_behind_one_address_decide_nothing() -> None:
    reg = VenueRegistry()
    facts = [_facts(0, "10.0.0.1", 443, "api.binance.com"),
             _facts(1, "10.0.0.1", 443, "www.okx.com"), _facts(2, "10.0.0.1", 443)]
    got = infer(facts, [reg.resolve(f) for f in facts], reg)
    assert [a.venue for a in got] == ["binance", "okx", None]
    one = facts[:1] + facts[2:]
    got = infer(one, [reg.resolve(f) for f in one], reg)
    assert (got[1].venue, got[1].source, got[1].dialect) == ("binance", "address", "binance")


@pytest.mark.parametrize(("content", "want"), [
    (FlowContent(paths=("/api/v3/order",)), ("binance", "binance")),
    (FlowContent(paths=("/api/v3/brokerage/orders",)), ("coinbase", "coinbase")),  # longest
    (FlowContent(paths=("/fapi/v1/order",)), ("binance_usdm", "binance")),
    (FlowContent(paths=("/api/v1/order",)), ("bitmex", "bitmex")),
    (FlowContent(paths=("/api/v1/orders",)), ("kucoin", "kucoin")),
    (FlowContent(calls=(("method", "order.place"),)), (None, "binance")),
    (FlowContent(calls=(("method", "order.place"), ("method", "order.modify"))),
     ("binance_usdm", "binance")),
    (FlowContent(calls=(("op", "order"),)), ("okx", "okx")),
    (FlowContent(calls=(("op", "order.create"),)), ("bybit", "bybit")),
    (FlowContent(calls=(("method", "private/buy"),)), ("deribit", "jsonrpc")),
    (FlowContent(paths=("/api/v3/order", "/api/v5/trade/order")), None),  # two venues
    (FlowContent(paths=("/index.html",)), None),
])
def test_content_rules(content: FlowContent, want: tuple[str | None, str] | None) -> None:
    got = VenueRegistry().by_content(_facts(0, "10.0.0.1", 443), content)
    if want is None:
        assert got is None
    else:
        assert got is not None and (got.venue, got.dialect) == want
        assert got.source == ("content" if want[0] else None)
    assert content_rules(FlowContent()) == []


def test_assignment_without_venue_has_no_source() -> None:
    assert Assignment(venue=None, dialect="rest").source is None
