"""The matcher's prefilter (``pipelines.match.candidates_sql``): market data is
skipped before any JSON is parsed, and nothing a matcher uses is.

Each capture here mixes order traffic with market data of the same venue, and
is matched twice: with the prefilter and without it (``prefilter=False`` reads
every WebSocket text message, as the matcher did before it had one). The rows
must be the same, and the prefiltered run must have read only the messages
that can be a request, a reply or an engine event.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from helpers.match_util import T0, Wire, rows
from pcapflow.pipelines import match
from pcapflow.pipelines.venue_rules import rule_tables

from pcapflow.venues import VenueRegistry


def _sorted_rows(t: pa.Table) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple((k, repr(v)) for k, v in r.items()) for r in t.to_pylist())


def _both_ways(w: Wire, stage: Path) -> tuple[match.MatchOutput, dict[int, int]]:
    """Match ``w`` with and without the prefilter; assert the same output and
    return it with the number of messages per flow the prefiltered run read."""
    w.write(stage)
    files = {t: sorted((stage / t).glob("*.parquet")) for t in match.INPUT_TABLES}
    flows, registry = w.flows_table(), VenueRegistry()
    with match.matched(files, flows, registry) as con:
        read = dict(con.execute("SELECT flow_id, count(*) FROM ws_in GROUP BY 1").fetchall())
    on = match.match_tables(files, flows, registry)
    off = match.match_tables(files, flows, registry, prefilter=False)
    assert on.flow_venue == off.flow_venue
    for name, table in off.tables.items():
        assert on.tables[name].schema == table.schema
        assert _sorted_rows(on.tables[name]) == _sorted_rows(table), name
    return on, read


def _depth(i: int) -> dict:
    return {"stream": "btcusdt@depth@100ms", "data": {
        "e": "depthUpdate", "E": 1700000000000 + i, "s": "BTCUSDT", "U": i, "u": i + 2,
        "b": [["67145.07", "0.94245"]], "a": [["67145.17", "0.5"]]}}


def _trade(i: int) -> dict:
    return {"stream": "btcusdt@trade", "data": {
        "e": "trade", "E": 1700000000000 + i, "s": "BTCUSDT", "t": i, "p": "67138.71",
        "q": "0.40815", "T": 1700000000000 + i, "m": i % 2 == 0}}


def test_binance_market_data_is_skipped_and_every_leg_kept(tmp_path: Path) -> None:
    w = Wire()
    api = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    stream = w.flow(sni="stream.binance.com", app_protocol="tls/websocket")

    def place(rid: object, coid: str) -> dict:
        return {"id": rid, "method": "order.place", "params": {
            "symbol": "BTCUSDT", "side": "BUY", "newClientOrderId": coid}}

    w.ws(stream, 0, "out", {"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1})
    w.ws(stream, 1, "in", {"result": None, "id": 1})
    for i in range(300):  # market data: never read
        w.ws(stream, 2 + i, "in", _depth(i) if i % 3 else _trade(i))
    w.ws(api, 10, "out", place("a", "c-1"))
    w.ws(api, 12, "in", {"id": "a", "status": 200, "result": {"orderId": 7}})
    # the engine leg of c-1 on the stream connection (a user data stream)
    w.ws(stream, 13, "in", {"e": "executionReport", "c": "c-1", "C": "", "x": "NEW", "i": 7})
    # a key and a value spelt with escapes are still JSON "id" / "executionReport"
    w.ws(api, 20, "out", place("b", "c-2"))
    w.ws(api, 25, "in", '{"\\u0069d":"b","status":200,"result":{"orderId":8}}')
    w.ws(stream, 26, "in", '{"e":"execution\\u0052eport","c":"c-2","C":"","x":"NEW","i":8}')
    # an order answered by an error, and a reply no request waits for
    w.ws(api, 30, "out", place("c", "c-3"))
    w.ws(api, 31, "in", {"id": "c", "status": 400, "error": {"code": -2010}})
    w.ws(stream, 40, "in", {"result": None, "id": 99})
    out, read = _both_ways(w, tmp_path)

    assert read == {api.flow_id: 6, stream.flow_id: 5}  # of 6 and 305 messages
    lat = rows(out, "latency")
    assert [(r["leg"], r["client_order_id"], r["status"], r["ack_flow_id"], r["latency_ns"])
            for r in lat] == [
        ("ack", "c-1", "accepted", api.flow_id, 2_000),
        ("engine", "c-1", "accepted", stream.flow_id, 3_000),
        ("ack", "c-2", "accepted", api.flow_id, 5_000),
        ("engine", "c-2", "accepted", stream.flow_id, 6_000),
        ("ack", "c-3", "rejected", api.flow_id, 1_000),
    ]
    assert [(r["what"], r["flow_id"], r["correlation_id"]) for r in rows(out, "unmatched")] == [
        ("reply", stream.flow_id, f"99#{stream.flow_id}@{T0 + 40_000}")]


def test_other_venues_market_data_next_to_their_order_streams(tmp_path: Path) -> None:
    w = Wire()
    bybit = w.flow(sni="stream.bybit.com", app_protocol="tls/websocket")
    okx = w.flow(sni="ws.okx.com", app_protocol="tls/websocket")
    deribit = w.flow(sni="www.deribit.com", app_protocol="tls/websocket")
    # Bybit: "orderbook.50.BTCUSDT" is not the "order" topic (nor "order.spot")
    w.ws(bybit, 0, "out", {"reqId": "r1", "op": "order.create",
                           "args": [{"symbol": "BTCUSDT", "orderLinkId": "by-1"}]})
    w.ws(bybit, 2, "in", {"reqId": "r1", "retCode": 0, "op": "order.create",
                          "data": {"orderId": "B1", "orderLinkId": "by-1"}})
    w.ws(bybit, 3, "in", {"topic": "order.spot", "data": [
        {"orderLinkId": "by-1", "orderId": "B1", "orderStatus": "New"}]})
    # OKX: "books" is not the "orders" channel
    w.ws(okx, 0, "out", {"id": "o1", "op": "order", "args": [{"clOrdId": "ok-1"}]})
    w.ws(okx, 4, "in", {"id": "o1", "op": "order", "code": "0",
                        "data": [{"clOrdId": "ok-1", "ordId": "K1", "sCode": "0"}]})
    w.ws(okx, 5, "in", {"arg": {"channel": "orders"}, "data": [
        {"clOrdId": "ok-1", "ordId": "K1", "state": "live"}]})
    # Deribit: book changes carry "change_id" (the scan's cheap id" test lets
    # them through) but no "id"
    w.ws(deribit, 0, "out", {"jsonrpc": "2.0", "id": 9, "method": "private/buy",
                             "params": {"label": "de-1"}})
    w.ws(deribit, 6, "in", {"jsonrpc": "2.0", "id": 9, "result": {
        "order": {"order_id": "D1", "label": "de-1", "order_state": "open"}}})
    w.ws(deribit, 7, "in", {"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": "user.orders.BTC-PERPETUAL.raw",
        "data": {"order_id": "D1", "label": "de-1", "order_state": "open"}}})
    for i in range(100):
        t = 10 + i
        w.ws(bybit, t, "in", {"topic": "orderbook.50.BTCUSDT", "type": "delta", "data": {
            "s": "BTCUSDT", "b": [["67000.1", "0.2"]], "a": [], "u": i, "seq": i}})
        w.ws(okx, t, "in", {"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "update",
                            "data": [{"asks": [["67001", "1", "0", "2"]], "bids": [],
                                      "ts": str(i), "seqId": i}]})
        w.ws(deribit, t, "in", {"jsonrpc": "2.0", "method": "subscription", "params": {
            "channel": "book.BTC-PERPETUAL.100ms", "data": {
                "change_id": i, "prev_change_id": i - 1, "bids": [["new", 67000.5, 10.0]]}}})
    out, read = _both_ways(w, tmp_path)

    assert read == {bybit.flow_id: 3, okx.flow_id: 3, deribit.flow_id: 3}
    lat = rows(out, "latency")
    assert sorted((r["venue"], r["leg"], r["client_order_id"]) for r in lat) == [
        ("bybit", "ack", "by-1"), ("bybit", "engine", "by-1"),
        ("deribit", "ack", "de-1"), ("deribit", "engine", "de-1"),
        ("okx", "ack", "ok-1"), ("okx", "engine", "ok-1")]
    assert rows(out, "unmatched") == []


def test_rest_and_fix_read_only_order_traffic(tmp_path: Path) -> None:
    w = Wire()
    rest = w.flow(sni="api.binance.com", app_protocol="tls/http")
    fix = w.flow(app_protocol="fix", server_port=9878)
    w.http(rest, 0, method="GET", path="/api/v3/depth?symbol=BTCUSDT")
    w.http(rest, 3, status=200, body={"lastUpdateId": 1, "bids": [["1", "2"]], "asks": []})
    w.http(rest, 10, method="POST", path="/api/v3/order",
           body="symbol=BTCUSDT&newClientOrderId=r-1",
           content_type="application/x-www-form-urlencoded")
    w.http(rest, 14, status=200, body={"orderId": 5, "clientOrderId": "r-1"})
    # a response whose request was not captured is still an orphan
    w.http(rest, 20, status=200, body={"orderId": 6}, index=9)
    w.fix(fix, 0, "out", "35=D|34=2|49=ME|56=EX|11=f-1|")
    w.fix(fix, 1, "in", "35=W|34=3|49=EX|56=ME|55=BTC|268=1|269=0|270=67000|")
    w.fix(fix, 2, "in", "35=8|34=4|49=EX|56=ME|11=f-1|37=X1|150=0|39=0|")
    w.fix(fix, 3, "in", "35=0|34=5|49=EX|56=ME|")
    out, _ = _both_ways(w, tmp_path)

    with match.matched({t: sorted((tmp_path / t).glob("*.parquet")) for t in match.INPUT_TABLES},
                       w.flows_table(), VenueRegistry()) as con:
        parsed = con.execute("SELECT request_index FROM rest_req WHERE params IS NOT NULL "
                             "OR body IS NOT NULL").fetchall()
        bodies = con.execute("SELECT request_index FROM rest_resp WHERE body IS NOT NULL "
                             "ORDER BY 1").fetchall()
        fix_read = con.execute("SELECT msg_type FROM fix_in ORDER BY ts").fetchall()
    assert parsed == [(1,)] and bodies == [(1,)]
    assert fix_read == [("D",), ("8",)]
    assert sorted((r["protocol"], r["client_order_id"], r["status"])
                  for r in rows(out, "latency")) == [
        ("fix", "f-1", "accepted"), ("rest", "r-1", "accepted")]
    assert [(r["what"], r["correlation_id"]) for r in rows(out, "unmatched")] == [
        ("reply", f"#0.9@{T0 + 20_000}")]


@pytest.mark.parametrize(("path", "needle"), [
    ("$.id", ('id"', '"id"')),
    ("$.data[0].ordId", ('ordId"', '"ordId"')),
    ("$.error[0]", ('error"', '"error"')),
    ("$.arg[0].id", ('id"', '"id"')),
    ('$."odd.key"', ()),   # no plain last key: every message is kept
    ("$.data[*]", ()),
])
def test_key_needle(path: str, needle: tuple[str, ...]) -> None:
    assert match.key_needle(path) == needle


@pytest.mark.parametrize(("like", "needle"), [
    ("executionReport", ('executionReport"',)),
    ("order.%", ("order.",)),
    ("ORDER_TRADE_UPDATE", ("ORDER",)),   # "_" matches any character
    ("/spotMarket/tradeOrders%", ("/spotMarket/tradeOrders",)),
    ("%orders", ()),       # may start anywhere
    ("true", ()),          # may be the JSON literal true, not a string
    ("123", ()),
])
def test_value_needle(like: str, needle: tuple[str, ...]) -> None:
    assert match.value_needle(like) == needle


def test_every_shipped_rule_gives_a_needle() -> None:
    """No shipped path or pattern turns the prefilter off for its dialect."""
    needles = match.ws_needles(rule_tables())
    assert needles and all(() not in group for group in needles.values())
