"""correlation_id is one per action (combine.sql, common.sql ``scoped_id``): request
ids numbered per connection, client order ids a capture holds twice, actions with no
id at all. The raw JSON id stays in ``request_id``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from helpers.match_util import T0, Wire, rows

from pcapflow.venues import MapEntry, VenueRegistry


def place(rid: object, coid: str) -> dict:
    return {"id": rid, "method": "order.place", "params": {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "price": "0.1", "quantity": "1",
        "newClientOrderId": coid}}


def placed(rid: object, coid: str, oid: int) -> dict:
    return {"id": rid, "status": 200, "result": {"orderId": oid, "clientOrderId": coid}}


def _one_per_action(out: object) -> None:
    """Every order has a correlation_id of its own; every latency row and every reply
    to an order carries its order's."""
    orders = rows(out, "orders")
    ids = [o["correlation_id"] for o in orders]
    assert None not in ids and len(set(ids)) == len(ids), Counter(ids).most_common(3)
    lat = rows(out, "latency")
    assert len({(r["correlation_id"], r["leg"]) for r in lat}) == len(lat)
    assert {r["correlation_id"] for r in lat} <= set(ids)
    answered = [a for a in rows(out, "acks") if a["kind"] is not None]
    assert len({(a["correlation_id"], a["leg"]) for a in answered}) == len(answered)
    assert {a["correlation_id"] for a in answered} <= set(ids)


def test_ccxt_numbers_each_connection_from_one(tmp_path: Path) -> None:
    """Two WS-API connections, each numbering its requests 1, 2, 3 (ccxt), the engine
    leg on a third connection: the same request ids, one correlation id per action."""
    w = Wire()
    a = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    b = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    stream = w.flow(sni="stream.binance.com", app_protocol="tls/websocket", server_port=9443)
    for k, f in enumerate((a, b)):
        base = 1000 * k
        for i in (1, 2, 3):
            coid = f"c{k}{i}"
            w.ws(f, base + 10 * i, "out", place(i, coid))
            w.ws(f, base + 10 * i + 2, "in", placed(i, coid, 100 * k + i))
            w.ws(stream, base + 10 * i + 3, "in",
                 {"e": "executionReport", "c": coid, "C": "", "x": "NEW", "i": 100 * k + i})
    # ... and after a reconnect the first connection reuses id 1
    w.ws(a, 2000, "out", place(1, "again"))
    w.ws(a, 2004, "in", placed(1, "again", 999))
    out = w.match(tmp_path)
    _one_per_action(out)
    lat = rows(out, "latency", leg="ack")
    assert [r["request_id"] for r in lat] == ["1", "2", "3", "1", "2", "3", "1"]
    assert [r["correlation_id"] for r in lat] == [
        f"{r['request_id']}#{r['flow_id']}@{r['order_ts']}" for r in lat]
    assert lat[0]["correlation_id"] == f"1#{a.flow_id}@{T0 + 10_000}"
    assert lat[3]["correlation_id"] == f"1#{b.flow_id}@{T0 + 1_010_000}"
    # the engine leg (on the stream connection) carries the same id, in latency and acks
    engine = rows(out, "latency", leg="engine")
    assert len(engine) == 6 and {r["ack_flow_id"] for r in engine} == {stream.flow_id}
    want = sorted(r["correlation_id"] for r in lat[:6])  # "again" has no engine event
    assert sorted(r["correlation_id"] for r in engine) == want
    assert sorted(r["correlation_id"] for r in rows(out, "acks", leg="engine")) == want


def test_the_same_id_twice_in_one_segment(tmp_path: Path) -> None:
    """Two requests with one id at one time on one connection (one segment): numbered."""
    w = Wire()
    f = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    w.ws(f, 10, "out", place(5, "x1"))
    w.ws(f, 10, "out", place(5, "x2"))
    w.ws(f, 12, "in", placed(5, "x1", 1))
    w.ws(f, 13, "in", placed(5, "x2", 2))
    out = w.match(tmp_path)
    _one_per_action(out)
    lat = rows(out, "latency")
    assert sorted((r["client_order_id"], r["correlation_id"]) for r in lat) == [
        ("x1", f"5#0@{T0 + 10_000}.1"), ("x2", f"5#0@{T0 + 10_000}.2")]


def test_a_client_order_id_on_two_actions_is_scoped_on_both(tmp_path: Path) -> None:
    """A REST resend of one newClientOrderId (refused as a duplicate) on another
    connection, and one FIX ClOrdID sent twice: each action gets ``<id>#<flow>@<ts>``,
    as does an id used once (its id depends on that action alone, not on whether a
    later file of its capture set holds the id again); a FIX order without ClOrdID
    gets ``#<flow>@<ts>``."""
    w = Wire()
    r1 = w.flow(sni="api.binance.com", http_host="api.binance.com")
    r2 = w.flow(sni="api.binance.com", http_host="api.binance.com")
    w.http(r1, 100, method="POST", path="/api/v3/order?newClientOrderId=dup")
    w.http(r1, 200, status=200, body={"orderId": 1, "clientOrderId": "dup"})
    w.http(r1, 300, method="POST", path="/api/v3/order?newClientOrderId=once")
    w.http(r1, 400, status=200, body={"orderId": 2, "clientOrderId": "once"})
    w.http(r2, 500, method="POST", path="/api/v3/order?newClientOrderId=dup")
    w.http(r2, 600, status=400, body={"code": -2010, "msg": "Duplicate order sent."})
    fx = w.flow(app_protocol="fix", server_port=9878, tls_version=None)
    us, ex = "49=PCFTRADER1|56=MOCKEX", "49=MOCKEX|56=PCFTRADER1"
    w.fix(fx, 700, "out", f"35=D|34=2|{us}|11=F1|54=1")
    w.fix(fx, 710, "in", f"35=8|34=2|{ex}|11=F1|37=7|39=0|150=0")
    w.fix(fx, 720, "out", f"35=D|34=3|{us}|11=F1|54=1")
    w.fix(fx, 730, "in", f"35=8|34=3|{ex}|11=F1|37=NONE|39=8|150=8|103=6")
    w.fix(fx, 740, "out", f"35=D|34=4|{us}|54=1")
    w.fix(fx, 750, "in", f"35=3|34=4|{ex}|45=4|373=1")
    registry = VenueRegistry(entries=[MapEntry(name="mockfix", sender_comp_id="PCFTRADER1",
                                       target_comp_id="MOCKEX", ports=(9878,))])
    out = w.match(tmp_path, registry)
    _one_per_action(out)
    got = [(r["flow_id"], r["client_order_id"], r["correlation_id"], r["status"])
           for r in rows(out, "latency")]
    assert got == [
        (r1.flow_id, "dup", f"dup#{r1.flow_id}@{T0 + 100_000}", "accepted"),
        (r1.flow_id, "once", f"once#{r1.flow_id}@{T0 + 300_000}", "accepted"),
        (r2.flow_id, "dup", f"dup#{r2.flow_id}@{T0 + 500_000}", "rejected"),
        (fx.flow_id, "F1", f"F1#{fx.flow_id}@{T0 + 700_000}", "accepted"),
        (fx.flow_id, "F1", f"F1#{fx.flow_id}@{T0 + 720_000}", "rejected"),
        (fx.flow_id, None, f"#{fx.flow_id}@{T0 + 740_000}", "rejected"),
    ]
