"""WebSocket JSON matching (websocket.sql, engine.sql) on fixtures from venues.md."""

from __future__ import annotations

from pathlib import Path

from helpers.match_util import T0, Wire, rows


def place(rid: object, coid: str, method: str = "order.place") -> dict:
    return {"id": rid, "method": method, "params": {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "price": "0.1", "quantity": "10",
        "newClientOrderId": coid, "apiKey": "REDACTED", "signature": "REDACTED"}}


def placed(rid: object, coid: str, oid: int) -> dict:
    return {"id": rid, "status": 200, "result": {"symbol": "BTCUSDT", "orderId": oid,
                                                 "clientOrderId": coid, "status": "NEW"}}


def test_binance_wsapi_ids_reuse_reorder_prefix_errors(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    # B3, with a string id
    w.ws(f, 0, "out", place("e2a85d9f-07a5", "a097fe"))
    w.ws(f, 5, "in", placed("e2a85d9f-07a5", "a097fe", 12510053279))
    # the same integer id used by a subscribe first, then reused by an order
    w.ws(f, 10, "out", {"id": 7, "method": "userDataStream.subscribe"})
    w.ws(f, 12, "in", {"id": 7, "status": 200, "result": {"subscriptionId": 0}})
    w.ws(f, 20, "out", place(7, "c-1"))
    # two ids in flight, replies out of order; the string "8" is not the number 8
    w.ws(f, 30, "out", place(8, "c-2", "v3/order.place"))
    w.ws(f, 31, "out", place("8", "c-3"))
    w.ws(f, 40, "in", placed("8", "c-3", 3))
    w.ws(f, 45, "in", placed(8, "c-2", 2))
    w.ws(f, 50, "in", placed(7, "c-1", 1))
    # the same id twice in flight: the oldest unanswered request gets the first reply
    w.ws(f, 60, "out", place(9, "c-4"))
    w.ws(f, 61, "out", place(9, "c-5"))
    w.ws(f, 70, "in", {"id": 9, "status": 400, "error": {"code": -2010, "msg": "balance"}})
    w.ws(f, 75, "in", placed(9, "c-5", 5))
    # cancel of an unknown order; 5xx = unknown outcome; an orphan reply; no reply
    w.ws(f, 80, "out", {"id": 10, "method": "order.cancel", "params": {
        "origClientOrderId": "gone", "newClientOrderId": "x-1"}})
    w.ws(f, 82, "in", {"id": 10, "status": 400, "error": {"code": -2011, "msg": "Unknown"}})
    w.ws(f, 90, "out", place(11, "c-6"))
    w.ws(f, 95, "in", {"id": 11, "status": 503, "error": {"code": -1008, "msg": "busy"}})
    w.ws(f, 100, "in", {"id": 99, "status": 200, "result": {}})
    w.ws(f, 110, "out", place(12, "c-7"))
    out = w.match(tmp_path)
    lat = rows(out, "latency", leg="ack")
    assert [(r["request_id"], r["client_order_id"], r["endpoint"], r["status"],
             r["error_code"], r["exchange_order_id"], r["latency_ns"]) for r in lat] == [
        ("e2a85d9f-07a5", "a097fe", "order.place", "accepted", None, "12510053279", 5000),
        ("7", "c-1", "order.place", "accepted", None, "1", 30_000),
        ("8", "c-2", "order.place", "accepted", None, "2", 15_000),
        ("8", "c-3", "order.place", "accepted", None, "3", 9_000),
        ("9", "c-4", "order.place", "rejected", "-2010", None, 10_000),
        ("9", "c-5", "order.place", "accepted", None, "5", 14_000),
        ("10", "x-1", "order.cancel", "rejected", "-2011", None, 2_000),
        ("11", "c-6", "order.place", "error", "-1008", None, 5_000),
    ]
    assert lat[6]["orig_client_order_id"] == "gone" and lat[6]["kind"] == "cancel"
    # the id as sent is request_id; correlation_id is one per action: the two 9s (and
    # the string "8" beside the number 8) are told apart by the order's time
    assert [r["correlation_id"] for r in lat] == [
        f"{r['request_id']}#{f.flow_id}@{r['order_ts']}" for r in lat]
    assert len({r["correlation_id"] for r in lat}) == len(lat)
    un = rows(out, "unmatched")
    assert [(u["what"], u["request_id"], u["client_order_id"], u["ts"], u["correlation_id"])
            for u in un] == [
        ("reply", "99", None, T0 + 100_000, f"99#0@{T0 + 100_000}"),
        ("order", "12", "c-7", T0 + 110_000, f"12#0@{T0 + 110_000}")]
    # acks carry their order's correlation_id
    acks = {a["correlation_id"] for a in rows(out, "acks") if a["kind"] is not None}
    assert acks == {r["correlation_id"] for r in lat}


def test_reply_before_any_request_is_an_orphan_not_a_pairing(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    w.ws(f, 0, "in", placed(1, "early", 1))      # answers something sent before the capture
    w.ws(f, 10, "out", place(1, "late"))
    w.ws(f, 20, "in", placed(1, "late", 2))
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["client_order_id"], r["exchange_order_id"], r["latency_ns"]) for r in lat] == [
        ("late", "2", 10_000)]
    assert [u["what"] for u in rows(out, "unmatched")] == ["reply"]


def test_okx_ws_orders_and_engine_leg(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="ws.okx.com", app_protocol="tls/websocket")
    o1 = {"id": "NEWtestBTC0123", "op": "order", "args": [{
        "instId": "BTC-USDT-SWAP", "tdMode": "cross", "clOrdId": "testBTC0123", "side": "buy",
        "ordType": "limit", "px": "50912.4", "sz": "1"}]}

    def push(state: str, amend: str = "", req: str = "") -> dict:
        return {"arg": {"channel": "orders", "instType": "SWAP"}, "data": [{
            "clOrdId": "testBTC0123", "ordId": "288981657420439575", "state": state,
            "reqId": req, "amendResult": amend}]}

    w.ws(f, 0, "out", {"op": "login", "args": [{"apiKey": "REDACTED"}]})
    w.ws(f, 2, "in", {"event": "login", "code": "0"})
    w.ws(f, 10, "out", o1)
    w.ws(f, 12, "in", {"id": "NEWtestBTC0123", "op": "order", "code": "0", "msg": "", "data": [
        {"clOrdId": "", "ordId": "288981657420439575", "tag": "", "sCode": "0", "sMsg": ""}]})
    w.ws(f, 15, "in", push("live"))
    w.ws(f, 20, "out", {"id": "a1", "op": "amend-order", "args": [{
        "instId": "BTC-USDT-SWAP", "clOrdId": "testBTC0123", "newSz": "2", "reqId": "r1"}]})
    w.ws(f, 21, "in", push("live", "0", "r1"))   # the engine event can beat the ack
    w.ws(f, 23, "in", {"id": "a1", "op": "amend-order", "code": "0", "data": [
        {"clOrdId": "testBTC0123", "ordId": "288981657420439575", "sCode": "0"}]})
    w.ws(f, 30, "out", {"id": "1512", "op": "cancel-order", "args": [
        {"instId": "BTC-USDT-SWAP", "ordId": "288981657420439575"}]})
    w.ws(f, 33, "in", {"id": "1512", "op": "cancel-order", "code": "0", "data": [
        {"clOrdId": "", "ordId": "288981657420439575", "sCode": "0"}]})
    w.ws(f, 36, "in", push("canceled"))
    w.ws(f, 40, "out", {"id": "x", "op": "order", "args": [{"clOrdId": "poor"}]})
    w.ws(f, 41, "in", {"id": "x", "op": "order", "code": "1", "data": [
        {"clOrdId": "poor", "ordId": "", "sCode": "51008", "sMsg": "Insufficient"}]})
    w.ws(f, 50, "in", "pong")
    out = w.match(tmp_path)
    acks = rows(out, "latency", leg="ack")
    assert [(r["endpoint"], r["kind"], r["client_order_id"], r["orig_client_order_id"],
             r["status"], r["error_code"], r["latency_ns"]) for r in acks] == [
        ("order", "new", "testBTC0123", None, "accepted", None, 2_000),
        ("amend-order", "amend", None, "testBTC0123", "accepted", None, 3_000),
        # the cancel named the exchange id; its client id is learned from the first ack
        ("cancel-order", "cancel", None, "testBTC0123", "accepted", None, 3_000),
        ("order", "new", "poor", None, "rejected", "51008", 1_000),
    ]
    engine = rows(out, "latency", leg="engine")
    assert [(r["kind"], r["latency_ns"], r["ack_flow_id"]) for r in engine] == [
        ("new", 5_000, 0), ("amend", 1_000, 0), ("cancel", 6_000, 0)]  # none for the reject
    assert rows(out, "unmatched") == []


def test_bybit_reqid_and_fifo_by_op_without_it(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="stream.bybit.com", app_protocol="tls/websocket")
    y2 = {"reqId": "test-005", "header": {"X-BAPI-TIMESTAMP": "1711001595207"},
          "op": "order.create", "args": [{"symbol": "ETHUSDT", "side": "Buy",
                                          "orderLinkId": "l-1"}]}
    w.ws(f, 0, "out", y2)
    w.ws(f, 4, "in", {"reqId": "test-005", "retCode": 0, "retMsg": "OK", "op": "order.create",
                      "data": {"orderId": "a4c1718e", "orderLinkId": "l-1"}})
    w.ws(f, 10, "out", {"op": "order.create", "args": [{"orderLinkId": "l-2"}]})
    w.ws(f, 11, "out", {"op": "order.create", "args": [{"orderLinkId": "l-3"}]})
    w.ws(f, 12, "out", {"op": "ping"})
    w.ws(f, 13, "in", {"op": "pong", "retCode": 0})
    w.ws(f, 15, "in", {"retCode": 0, "op": "order.create", "data": {"orderId": "o2"}})
    w.ws(f, 19, "in", {"retCode": 10001, "op": "order.create", "retMsg": "params error"})
    out = w.match(tmp_path)
    lat = rows(out, "latency", leg="ack")
    assert [(r["correlation_id"], r["request_id"], r["client_order_id"], r["status"],
             r["error_code"], r["latency_ns"]) for r in lat] == [
        (f"test-005#0@{T0}", "test-005", "l-1", "accepted", None, 4_000),
        (f"op:order.create#0@{T0 + 10_000}", None, "l-2", "accepted", None, 5_000),
        (f"op:order.create#0@{T0 + 11_000}", None, "l-3", "rejected", "10001", 8_000),
    ]
    assert rows(out, "unmatched") == []  # the pong answered the ping, not an order


def test_kraken_v2(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="ws-auth.kraken.com", app_protocol="tls/websocket")
    w.ws(f, 0, "out", {"method": "add_order", "params": {
        "order_type": "limit", "side": "buy", "symbol": "BTC/USD", "limit_price": 25000.0,
        "order_qty": 0.01, "token": "REDACTED", "cl_ord_id": "my-client-id-123"}, "req_id": 1})
    w.ws(f, 3, "in", {"method": "add_order", "success": True, "req_id": 1,
                      "result": {"order_id": "OABC"}})
    w.ws(f, 10, "out", {"method": "cancel_order", "params": {"cl_ord_id": ["nope"]},
                        "req_id": 2})
    w.ws(f, 12, "in", {"method": "cancel_order", "success": False, "req_id": 2,
                       "error": "EOrder:Unknown order"})
    w.ws(f, 14, "in", {"channel": "executions", "type": "update", "data": [
        {"order_id": "OABC", "cl_ord_id": "my-client-id-123", "exec_type": "new"}]})
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["leg"], r["kind"], r["client_order_id"], r["orig_client_order_id"],
             r["status"], r["error_code"], r["latency_ns"]) for r in lat] == [
        ("ack", "new", "my-client-id-123", None, "accepted", None, 3_000),
        ("engine", "new", "my-client-id-123", None, "accepted", None, 14_000),
        ("ack", "cancel", None, "nope", "rejected", "EOrder:Unknown order", 2_000),
    ]


def test_deribit_jsonrpc_labels_errors_and_user_orders(tmp_path: Path) -> None:
    w = Wire()
    f = w.flow(sni="www.deribit.com", app_protocol="tls/websocket")
    w.ws(f, 0, "out", {"jsonrpc": "2.0", "id": 5275, "method": "private/buy", "params": {
        "instrument_name": "ETH-PERPETUAL", "amount": 40, "type": "market",
        "label": "market0000234"}})
    w.ws(f, 2, "in", {"jsonrpc": "2.0", "id": 5275, "result": {"trades": [], "order": {
        "order_state": "open", "order_id": "ETH-584864807", "label": "market0000234"}},
        "usIn": 1, "usOut": 2, "usDiff": 1, "testnet": False})
    w.ws(f, 3, "in", {"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": "user.orders.ETH-PERPETUAL.raw", "data": {
            "order_id": "ETH-584864807", "label": "market0000234", "order_state": "open",
            "replaced": False}}})
    w.ws(f, 10, "out", {"jsonrpc": "2.0", "id": 3725, "method": "private/edit",
                        "params": {"order_id": "ETH-584864807", "amount": 4, "price": 222}})
    w.ws(f, 14, "in", {"jsonrpc": "2.0", "method": "subscription", "params": {
        "channel": "user.orders.ETH-PERPETUAL.raw", "data": {
            "order_id": "ETH-584864807", "label": "market0000234", "order_state": "open",
            "replaced": True}}})
    w.ws(f, 15, "in", {"jsonrpc": "2.0", "id": 3725, "result": {"order": {
        "order_id": "ETH-584864807", "label": "market0000234", "replaced": True}}})
    # a reused id, and a cancel of an unknown order answered by an error object
    w.ws(f, 20, "out", {"jsonrpc": "2.0", "id": 5275, "method": "private/cancel",
                        "params": {"order_id": "ETH-1"}})
    w.ws(f, 22, "in", {"jsonrpc": "2.0", "id": 5275, "error": {
        "code": 11044, "message": "not_open_order"}})
    out = w.match(tmp_path)
    lat = rows(out, "latency")
    assert [(r["leg"], r["endpoint"], r["kind"], r["request_id"], r["client_order_id"],
             r["orig_client_order_id"], r["status"], r["error_code"], r["latency_ns"])
            for r in lat] == [
        ("ack", "private/buy", "new", "5275", "market0000234", None, "accepted", None, 2_000),
        ("engine", "private/buy", "new", "5275", "market0000234", None, "accepted", None,
         3_000),
        ("ack", "private/edit", "amend", "3725", None, "market0000234", "accepted", None,
         5_000),
        ("engine", "private/edit", "amend", "3725", None, "market0000234", "accepted", None,
         4_000),
        ("ack", "private/cancel", "cancel", "5275", None, None, "rejected", "11044", 2_000),
    ]
    assert out.flow_venue == {0: "deribit"}


def test_binance_engine_leg_on_another_connection(tmp_path: Path) -> None:
    w = Wire()
    api = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    stream = w.flow(sni="stream.binance.com", app_protocol="tls/websocket", server_port=9443)
    other = w.flow(sni="ws.okx.com", app_protocol="tls/websocket")
    w.ws(api, 0, "out", place(1, "mUvoq"))
    w.ws(api, 3, "in", placed(1, "mUvoq", 4293153))
    # B4 on the raw user data stream of another connection
    w.ws(stream, 2, "in", {"e": "executionReport", "E": 1, "s": "ETHBTC", "c": "mUvoq",
                           "C": "", "x": "NEW", "X": "NEW", "i": 4293153})
    w.ws(api, 10, "out", {"id": 2, "method": "order.cancel", "params": {
        "origClientOrderId": "mUvoq", "newClientOrderId": "cx"}})
    w.ws(api, 12, "in", {"id": 2, "status": 200, "result": {"orderId": 4293153,
                                                           "clientOrderId": "cx"}})
    # an OKX push with the same client id must not be taken for Binance's
    w.ws(other, 13, "in", {"arg": {"channel": "orders"}, "data": [
        {"clOrdId": "mUvoq", "ordId": "1", "state": "canceled"}]})
    w.ws(stream, 14, "in", {"subscriptionId": 0, "event": {
        "e": "executionReport", "c": "cx", "C": "mUvoq", "x": "CANCELED", "X": "CANCELED",
        "i": 4293153}})
    out = w.match(tmp_path)
    engine = rows(out, "latency", leg="engine")
    assert [(r["kind"], r["flow_id"], r["ack_flow_id"], r["latency_ns"],
             r["exchange_order_id"]) for r in engine] == [
        ("new", 0, 1, 2_000, "4293153"), ("cancel", 0, 1, 4_000, "4293153")]
    acks = rows(out, "acks", leg="engine")
    assert [(a["flow_id"], a["protocol"], a["status"]) for a in acks] == [
        (1, "websocket", "accepted"), (1, "websocket", "accepted")]
