"""REST matching (rest.sql) on HTTP message fixtures built from venues.md's examples."""

from __future__ import annotations

from pathlib import Path

from helpers.match_util import T0, Wire, rows

B1 = ("/api/v3/order?symbol=BTCUSDT&side=SELL&type=LIMIT&timeInForce=GTC&quantity=1"
      "&price=0.2&newClientOrderId=abc&timestamp=1507725176595&signature=REDACTED")
B1_ACK = {"symbol": "BTCUSDT", "orderId": 28, "orderListId": -1,
          "clientOrderId": "abc", "transactTime": 1507725176595}
B2 = "/api/v3/order?symbol=LTCBTC&origClientOrderId=myOrder1&newClientOrderId=cancelMyOrder1"
B2_ACK = {"symbol": "LTCBTC", "origClientOrderId": "myOrder1", "orderId": 4,
          "orderListId": -1, "clientOrderId": "cancelMyOrder1", "status": "CANCELED"}


def test_binance_new_cancel_reject_error_and_non_orders(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="api.binance.com", http_host="api.binance.com")
    w.http(f, 10, method="GET", path="/api/v3/time")
    w.http(f, 20, status=200, body={"serverTime": 1})
    w.http(f, 100, method="POST", path=B1)
    w.rtt(f, 100, 40_000)
    w.http(f, 1100, status=200, body=B1_ACK)
    w.http(f, 2000, method="DELETE", path=B2)
    w.http(f, 2500, status=200, body=B2_ACK)
    # parameters in a form body, merged with the query string
    w.http(f, 3000, method="POST", path="/api/v3/order?symbol=BTCUSDT&timestamp=1",
           body="side=BUY&type=LIMIT&newClientOrderId=x%2Fy-1&signature=REDACTED",
           content_type="application/x-www-form-urlencoded")
    w.http(f, 3400, status=400, body={"code": -2010, "msg": "insufficient balance"})
    w.http(f, 4000, method="PUT", path="/api/v3/order/amend/keepPriority?symbol=BTCUSDT"
           "&origClientOrderId=abc&newClientOrderId=amd1&newQty=0.5")
    w.http(f, 4300, status=200, body={"transactTime": 1, "executionId": 9,
                                      "amendedOrder": {"orderId": 28, "clientOrderId": "amd1"}})
    w.http(f, 5000, method="POST", path="/api/v3/order?newClientOrderId=t1")
    w.http(f, 7000, status=503, body={"code": -1007, "msg": "Timeout waiting for response"})
    w.http(f, 8000, method="POST", path="/api/v3/order?newClientOrderId=t2")
    w.http(f, 8100, status=502, body="<html>bad gateway</html>", content_type="text/html")
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["endpoint"], r["kind"], r["client_order_id"], r["orig_client_order_id"],
             r["status"], r["error_code"], r["exchange_order_id"]) for r in lat] == [
        ("POST /api/v3/order", "new", "abc", None, "accepted", None, "28"),
        ("DELETE /api/v3/order", "cancel", "cancelMyOrder1", "myOrder1", "accepted", None, "4"),
        ("POST /api/v3/order", "new", "x/y-1", None, "rejected", "-2010", None),
        ("PUT /api/v3/order/amend/keepPriority", "amend", "amd1", "abc", "accepted", None, "28"),
        ("POST /api/v3/order", "new", "t1", None, "error", "-1007", None),
        ("POST /api/v3/order", "new", "t2", None, "error", "502", None),
    ]
    first = lat[0]
    assert (first["venue"], first["protocol"], first["leg"], first["decoded"]) == (
        "binance", "rest", "ack", True)
    assert first["order_ts"] == T0 + 100_000 and first["ack_ts"] == T0 + 1_100_000
    assert first["latency_ns"] == 1_000_000
    assert (first["network_rtt_ns"], first["exchange_ns"]) == (40_000, 960_000)
    assert lat[1]["network_rtt_ns"] is None  # no tcp_rtt row for that segment
    assert out.flow_venue == {0: "binance"}
    assert len(rows(out, "orders")) == 6 and len(rows(out, "acks")) == 6
    assert rows(out, "unmatched") == []


def test_error_response_without_ids_pairs_by_position(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="api.binance.com")
    w.http(f, 0, method="POST", path="/api/v3/order?newClientOrderId=a")
    w.http(f, 10, method="POST", path="/api/v3/order?newClientOrderId=b", index=1)
    # HTTP/1.1 pipelining: responses in request order, the second an id-less error
    w.http(f, 50, status=200, body={"orderId": 1, "clientOrderId": "a"}, index=0)
    w.http(f, 60, status=400, body={"code": -1102, "msg": "Mandatory parameter"}, index=1)
    lat = rows(w.match(tmp_path), "latency")
    assert [(r["client_order_id"], r["status"], r["latency_ns"]) for r in lat] == [
        ("a", "accepted", 50_000), ("b", "rejected", 50_000)]


def test_unanswered_request_and_orphan_response(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="api.binance.com")
    w.http(f, 0, status=200, body={"orderId": 5}, index=7)  # its request is not captured
    w.http(f, 100, method="POST", path="/api/v3/order?newClientOrderId=lost")
    out = w.match(tmp_path)
    un = rows(out, "unmatched")
    assert [(u["what"], u["kind"], u["correlation_id"], u["client_order_id"]) for u in un] == [
        ("reply", None, f"#0.7@{T0}", None),
        ("order", "new", f"lost#0@{T0 + 100_000}", "lost")]
    assert rows(out, "latency") == []


def test_okx_bybit_coinbase_kraken_bitmex_hyperliquid(tmp_path: Path) -> None:
    w = Wire()
    okx = w.flow(sni="www.okx.com")
    o3 = {"instId": "BTC-USDT-SWAP", "tdMode": "cross", "clOrdId": "testBTC0123",
          "side": "buy", "ordType": "limit", "px": "50912.4", "sz": "1"}
    w.http(okx, 0, method="POST", path="/api/v5/trade/order", body=o3)
    w.http(okx, 10, status=200, body={"code": "0", "msg": "", "data": [
        {"clOrdId": "testBTC0123", "ordId": "288981657420439575", "tag": "", "sCode": "0",
         "sMsg": ""}]})
    w.http(okx, 20, method="POST", path="/api/v5/trade/order", body=o3 | {"clOrdId": "big"})
    w.http(okx, 30, status=200, body={"code": "1", "msg": "", "data": [
        {"clOrdId": "big", "ordId": "", "sCode": "51008", "sMsg": "Insufficient"}]})
    w.http(okx, 40, method="POST", path="/api/v5/trade/cancel-order",
           body={"instId": "BTC-USDT-SWAP", "ordId": "288981657420439575"})
    w.http(okx, 50, status=200, body={"code": "0", "data": [
        {"clOrdId": "", "ordId": "288981657420439575", "sCode": "0"}]})
    bybit = w.flow(sni="api.bybit.com")
    y1 = {"category": "spot", "symbol": "BTCUSDT", "side": "Buy", "orderType": "Limit",
          "qty": "0.1", "price": "15600", "orderLinkId": "spot-test-01"}
    w.http(bybit, 100, method="POST", path="/v5/order/create", body=y1)
    w.http(bybit, 110, status=200, body={"retCode": 0, "retMsg": "OK", "result": {
        "orderId": "1321003749386327552", "orderLinkId": "spot-test-01"}})
    w.http(bybit, 120, method="POST", path="/v5/order/amend",
           body={"category": "spot", "orderLinkId": "spot-test-01", "qty": "0.2"})
    w.http(bybit, 130, status=200, body={"retCode": 110001, "retMsg": "order not exists"})
    cb = w.flow(sni="api.coinbase.com")
    w.http(cb, 200, method="POST", path="/api/v3/brokerage/orders",
           body={"client_order_id": "uuid-1", "product_id": "BTC-USD", "side": "BUY"})
    w.http(cb, 210, status=200, body={"success": True, "success_response": {
        "order_id": "cb-1", "client_order_id": "uuid-1"}})
    w.http(cb, 220, method="POST", path="/api/v3/brokerage/orders/batch_cancel",
           body={"order_ids": ["cb-1"]})
    w.http(cb, 230, status=200, body={"results": [{"success": True, "order_id": "cb-1"}]})
    kr = w.flow(sni="api.kraken.com")
    w.http(kr, 300, method="POST", path="/0/private/AddOrder",
           body="nonce=1&ordertype=limit&type=buy&volume=1.25&pair=XBTUSD&price=27500",
           content_type="application/x-www-form-urlencoded")
    w.http(kr, 310, status=200, body={"error": [], "result": {
        "descr": {"order": "buy 1.25 XBTUSD @ limit 27500"}, "txid": ["OUF4EM-FRGI2-MQMWZD"]}})
    w.http(kr, 320, method="POST", path="/0/private/CancelOrder", body="nonce=2&txid=OXXX",
           content_type="application/x-www-form-urlencoded")
    w.http(kr, 330, status=200, body={"error": ["EOrder:Unknown order"]})
    bm = w.flow(sni="www.bitmex.com")
    w.http(bm, 400, method="POST", path="/api/v1/order", body={"symbol": "XBTUSD",
                                                               "clOrdID": "bm1"})
    w.http(bm, 410, status=200, body={"orderID": "b-1", "clOrdID": "bm1"})
    hl = w.flow(sni="api.hyperliquid.xyz")
    w.http(hl, 500, method="POST", path="/exchange", body={"action": {
        "type": "order", "orders": [{"a": 0, "b": True, "p": "1", "s": "1", "r": False,
                                     "c": "0xabc"}], "grouping": "na"}, "nonce": 1})
    w.http(hl, 510, status=200, body={"status": "ok", "response": {"type": "order", "data": {
        "statuses": [{"resting": {"oid": 77738308}}]}}})
    w.http(hl, 520, method="POST", path="/info", body={"type": "openOrders"})
    w.http(hl, 530, status=200, body=[])
    lat = rows(w.match(tmp_path), "latency")
    assert [(r["venue"], r["endpoint"], r["kind"], r["client_order_id"],
             r["orig_client_order_id"], r["status"], r["error_code"], r["exchange_order_id"])
            for r in lat] == [
        ("okx", "POST /api/v5/trade/order", "new", "testBTC0123", None, "accepted", None,
         "288981657420439575"),
        ("okx", "POST /api/v5/trade/order", "new", "big", None, "rejected", "51008", None),
        # the cancel named the exchange id only: its client id is learned from the new
        ("okx", "POST /api/v5/trade/cancel-order", "cancel", None, "testBTC0123", "accepted",
         None, "288981657420439575"),
        ("bybit", "POST /v5/order/create", "new", "spot-test-01", None, "accepted", None,
         "1321003749386327552"),
        ("bybit", "POST /v5/order/amend", "amend", None, "spot-test-01", "rejected", "110001",
         None),
        ("coinbase", "POST /api/v3/brokerage/orders", "new", "uuid-1", None, "accepted", None,
         "cb-1"),
        ("coinbase", "POST /api/v3/brokerage/orders/batch_cancel", "cancel", None, "uuid-1",
         "accepted", None, "cb-1"),
        ("kraken", "POST /0/private/AddOrder", "new", None, None, "accepted", None,
         "OUF4EM-FRGI2-MQMWZD"),
        ("kraken", "POST /0/private/CancelOrder", "cancel", None, None, "rejected",
         "EOrder:Unknown order", None),
        ("bitmex", "POST /api/v1/order", "new", "bm1", None, "accepted", None, "b-1"),
        ("hyperliquid", "POST /exchange", "new", "0xabc", None, "accepted", None, "77738308"),
    ]
    # Kraken: HTTP pairing is the only key; the id names flow, request and time
    assert lat[7]["correlation_id"] == f"#3.0@{T0 + 300_000}"


def test_generic_rest_matcher_for_unknown_hosts(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="gw.colo.example", http_host="gw.colo.example")
    w.http(f, 0, method="POST", path="/api/v3/order?newClientOrderId=c1")
    w.http(f, 5, status=200, body={"orderId": 3, "clientOrderId": "c1"})
    w.http(f, 10, method="POST", path="/v5/order/create", body={"orderLinkId": "y1"})
    w.http(f, 15, status=200, body={"retCode": 10001, "retMsg": "params error"})
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["venue"], r["client_order_id"], r["status"], r["error_code"]) for r in lat] == [
        (None, "c1", "accepted", None), (None, "y1", "rejected", "10001")]
    assert out.flow_venue == {}


def test_malformed_bodies_and_parameters_do_not_stop_matching(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="api.binance.com")
    w.http(f, 0, method="POST", path="/api/v3/order?newClientOrderId=%ff%fe&x&=&a=b=c",
           body="newClientOrderId=ignored&&%zz", content_type="application/x-www-form-urlencoded")
    w.http(f, 10, status=200, body='{"orderId": 1, "clientOrderId": ')  # truncated JSON
    w.http(f, 20, method="POST", path="/api/v3/order", body="not json {",
           content_type="application/json")
    w.http(f, 30, status=400, body="Bad Request", content_type="text/plain")
    lat = rows(w.match(tmp_path), "latency")
    assert [(r["client_order_id"], r["status"], r["error_code"], r["exchange_order_id"])
            for r in lat] == [("%ff%fe", "accepted", None, None),  # query wins, kept as sent
                              (None, "rejected", "400", None)]
    assert lat[1]["correlation_id"] == f"#0.1@{T0 + 20_000}"


def test_cancels_without_an_id_of_their_own(tmp_path: Path) -> None:
    """ccxt cancels Binance orders with ``DELETE /api/v3/order?origClientOrderId=...``
    or ``?orderId=...`` and no newClientOrderId. Each such cancel gets an id of its
    own (never the cancelled order's, never one another connection's cancel has),
    and ``latency`` says what it targets, learned both ways from the order's reply."""
    w = Wire()
    sym = "/api/v3/order?symbol=BTCUSDT"
    flows = [w.flow(sni="api.binance.com", http_host="api.binance.com") for _ in range(2)]
    for k, f in enumerate(flows):  # the same requests, at the same positions, on two flows
        base = 100_000 * k
        w.http(f, base + 0, method="POST", path=f"{sym}&newClientOrderId=o{k}&side=BUY")
        w.http(f, base + 10, status=200, body={"orderId": 500 + k, "clientOrderId": f"o{k}"})
        w.http(f, base + 20, method="DELETE", path=f"{sym}&origClientOrderId=o{k}")
        w.http(f, base + 30, status=200, body={"orderId": 500 + k, "origClientOrderId": f"o{k}",
                                               "clientOrderId": "srv-gen", "status": "CANCELED"})
        w.http(f, base + 40, method="POST", path=f"{sym}&newClientOrderId=p{k}&side=SELL")
        w.http(f, base + 50, status=200, body={"orderId": 600 + k, "clientOrderId": f"p{k}"})
        w.http(f, base + 60, method="DELETE", path=f"{sym}&orderId={600 + k}")
        w.http(f, base + 70, status=200, body={"orderId": 600 + k, "status": "CANCELED"})
    out = w.match(tmp_path)
    lat = sorted(rows(out, "latency"), key=lambda r: r["order_ts"])
    assert len(lat) == 8
    ids = [r["correlation_id"] for r in lat]
    assert len(set(ids)) == 8  # unique per action, across connections
    for k, f in enumerate(flows):
        new_o, cxl_o, new_p, cxl_p = lat[4 * k : 4 * k + 4]
        at = T0 + 100_000 * k * 1000
        assert (new_o["kind"], new_o["correlation_id"]) == ("new", f"o{k}#{f.flow_id}@{at}")
        assert (new_p["kind"], new_p["correlation_id"]) == (
            "new", f"p{k}#{f.flow_id}@{at + 40_000}")
        assert cxl_o["kind"] == "cancel" and cxl_o["correlation_id"] != f"o{k}"
        assert cxl_o["correlation_id"] == f"#{f.flow_id}.1@{T0 + (100_000 * k + 20) * 1000}"
        assert (cxl_o["orig_client_order_id"], cxl_o["target_order_id"]) == (f"o{k}",
                                                                            str(500 + k))
        assert cxl_p["kind"] == "cancel" and cxl_p["correlation_id"].startswith("#")
        assert (cxl_p["orig_client_order_id"], cxl_p["target_order_id"]) == (f"p{k}",
                                                                            str(600 + k))
    orders = rows(out, "orders")
    assert len({o["correlation_id"] for o in orders}) == len(orders) == 8
