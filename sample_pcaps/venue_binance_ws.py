"""Binance spot WebSocket API + market-data stream: `websockets` servers and client.

How this works: two TLS WebSocket servers run side by side, like Binance's:
`ws-api.binance.com:443/ws-api/v3` (order entry) and
`stream.binance.com:9443/stream?streams=...` (combined bookTicker + trade stream,
~300 messages/s while a client is connected). Both negotiate permessage-deflate
(the `websockets` default, with context takeover).

The WS API answers `order.place`, `order.cancel`, `order.amend.keepPriority`,
`userDataStream.subscribe`, `openOrders.status` and `exchangeInfo` with Binance's
`{"id","status","result"|"error"}` envelope. Each request is served in its own
task after a lognormal delay, so replies can come back out of request order. After
each accepted order action, an `executionReport` event is pushed on the same
connection (`{"subscriptionId":0,"event":{...}}`). `openOrders.status` returns a
single ~200 KB message (over 64 KB even after deflate: random ids), and
`exchangeInfo` is sent as a list of four fragments. The client sends bursts of up
to three requests in flight, mixes string and integer ids, reuses ids once they
are answered, and sends one order as three fragments.

The tick-to-trade scenario (``binance_tick_tls13``, ``TICK_SCENARIO``) keeps the
WS API and replaces the stream with Binance diff-depth events of two symbols
plus trades (``/stream?streams=btcusdt@depth/ethusdt@depth/btcusdt@trade``), ~200
messages/s, numbered as Binance numbers them (each event's ``U`` is the previous
``u`` + 1). The server plants feed gaps (``PLANTED_GAPS``: it skips ids at given
events) and one microburst (``BURST_EVENTS`` events of ``BURST_LEVELS`` levels back
to back), and writes
each one to ``NAME.feed.jsonl`` as it sends it. Now and then it sends a *signal*
(the best bid jumps by ``SIGNAL_MOVE``; ordinary moves stay under
``SIGNAL_MOVE / 2``) and then keeps the stream quiet for ``SIGNAL_QUIET_S``. The
client places an order on the signal's symbol as soon as it reads a signal, and
logs in its truth record which event made it send the order (``extra.trigger``:
symbol, ``U``, ``u``): the ground truth for tick-to-trade. Before the reply to
every ``BIG_PUSH_EVERY``-th order the WS API pushes a ~40 KB account snapshot,
listed in ``NAME.api.jsonl``: those replies wait behind it (head-of-line).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import string
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from common import (
    BINANCE_API_KEY,
    BINANCE_API_SECRET,
    RunCtx,
    ServerDelay,
    TruthLog,
    TruthRecord,
    announce_ready,
    client_tls,
    listen_socket,
    now_ms,
    pause,
    server_tls,
    wait_for_stop,
)
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from wsrpc import RpcClient, dumps, safe_send, serve_concurrently

API_HOST, API_PORT, API_PATH = "ws-api.binance.com", 443, "/ws-api/v3"
STREAM_HOST, STREAM_PORT = "stream.binance.com", 9443
STREAM_PATH = "/stream?streams=btcusdt@bookTicker/btcusdt@trade"
VENUE = "binance"
STREAM_RATE_HZ = 300.0
BIG_RESULT_ROWS = 900  # ~200 KB openOrders.status reply
BALANCE_LIMIT_QUOTE = 50_000.0
ALNUM = string.ascii_letters + string.digits
KINDS = {"order.place": "new", "order.cancel": "cancel", "order.amend.keepPriority": "amend"}


TICK_SCENARIO = "binance_tick_tls13"
TICK_STREAM_PATH = "/stream?streams=btcusdt@depth/ethusdt@depth/btcusdt@trade"
TICK_RATE_HZ = 200.0
TICK_SYMBOLS = {"BTCUSDT": 65_000.0, "ETHUSDT": 3_400.0}
SIGNAL_MOVE = 40.0
SIGNAL_QUIET_S = 0.030
SIGNALS = 16
"""Signals the server sends (one every ~40 events), then the stream ends."""
PLANTED_GAPS = {("BTCUSDT", 90): 3, ("ETHUSDT", 150): 17, ("BTCUSDT", 260): 1,
                ("ETHUSDT", 300): 250}
"""(symbol, its n-th depth event): update ids skipped before that event."""
PLANTED_TRADE_GAPS = {120: 2}
"""n-th trade: trade ids skipped before it."""
BURST_AT = 200
BURST_EVENTS = 150
BIG_PUSH_EVERY = 4
BIG_PUSH_ASSETS = 1500
"""Tick scenario: before the reply to every BIG_PUSH_EVERY-th order, the WS API pushes an
account snapshot of BIG_PUSH_ASSETS balances (~90 KB of JSON, ~40 KB deflated)."""
BURST_LEVELS = 40
"""After the BURST_AT-th event, BURST_EVENTS depth events of BURST_LEVELS price levels a
side (ordinary events have one) are sent with no pause: a microburst of ~1 MB of JSON."""


def _sign(params: dict[str, Any]) -> str:
    query = urlencode(sorted(params.items()))
    return hmac.new(BINANCE_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()


class ApiSession:
    """Server state for one WS API connection."""

    def __init__(self, ws: ServerConnection, seed: int, big_push_every: int = 0,
                 truth: Any = None) -> None:
        self.ws = ws
        self.big_push_every = big_push_every  # tick scenario: a big push before some replies
        self.truth = truth
        self.placed = 0
        self.delay = ServerDelay(seed)
        self.rng = random.Random(seed + 5)
        self.orders: dict[str, dict[str, Any]] = {}
        self.next_order_id = 7_100_000_000
        self.subscribed = False

    def _rid(self) -> str:
        return "".join(self.rng.choices(ALNUM, k=22))

    async def _reply(self, rid: Any, status: int, body: dict[str, Any] | None = None,
                     error: tuple[int, str] | None = None, fragments: int = 1) -> None:
        msg: dict[str, Any] = {"id": rid, "status": status}
        if error:
            msg["error"] = {"code": error[0], "msg": error[1]}
        else:
            msg["result"] = body
        msg["rateLimits"] = [{"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10,
                              "limit": 50, "count": self.rng.randint(1, 20)}]
        text = dumps(msg)
        if fragments > 1:
            step = -(-len(text) // fragments)
            await safe_send(self.ws, [text[i:i + step] for i in range(0, len(text), step)])
        else:
            await safe_send(self.ws, text)

    async def _big_push(self, before: str) -> None:
        """An account snapshot of ~BIG_PUSH_ASSETS balances pushed just before the reply to
        order ``before``: the reply comes behind it (head-of-line blocking)."""
        event = {"e": "outboundAccountPosition", "E": now_ms(), "u": now_ms(),
                 "B": [{"a": f"A{i:04d}", "f": f"{self.rng.uniform(0, 1e4):.8f}",
                        "l": f"{self.rng.uniform(0, 10):.8f}"} for i in range(BIG_PUSH_ASSETS)]}
        text = dumps({"subscriptionId": 0, "event": event})
        if self.truth is not None:
            self.truth(kind="big_push", before_reply_to=before, chars=len(text))
        await safe_send(self.ws, text)

    async def _report(self, order: dict[str, Any], exec_type: str, orig: str = "") -> None:
        if not self.subscribed:
            return
        await asyncio.sleep(self.delay.sample() / 4)
        event = {"e": "executionReport", "E": now_ms(), "s": order["symbol"],
                 "c": order["clientOrderId"], "S": order["side"], "o": "LIMIT", "f": "GTC",
                 "q": order["origQty"], "p": order["price"], "C": orig, "x": exec_type,
                 "X": order["status"], "r": "NONE", "i": order["orderId"], "l": "0.00000000",
                 "z": "0.00000000", "T": now_ms(), "t": -1, "w": True, "m": False,
                 "O": order["time"]}
        await safe_send(self.ws, dumps({"subscriptionId": 0, "event": event}))

    def _view(self, order: dict[str, Any], **over: Any) -> dict[str, Any]:
        view = {"symbol": order["symbol"], "orderId": order["orderId"], "orderListId": -1,
                "clientOrderId": order["clientOrderId"], "transactTime": now_ms(),
                "price": order["price"], "origQty": order["origQty"],
                "executedQty": "0.00000000", "status": order["status"], "timeInForce": "GTC",
                "type": "LIMIT", "side": order["side"]}
        return view | over

    async def place(self, rid: Any, p: dict[str, Any]) -> None:
        self.placed += 1
        if self.big_push_every and self.placed % self.big_push_every == 0:
            await self._big_push(p.get("newClientOrderId", ""))
        if float(p["quantity"]) * float(p["price"]) > BALANCE_LIMIT_QUOTE:
            await self._reply(rid, 400, error=(-2010, "Account has insufficient balance "
                                               "for requested action."))
            return
        self.next_order_id += self.rng.randint(1, 5)
        order = {"symbol": p["symbol"], "orderId": self.next_order_id,
                 "clientOrderId": p.get("newClientOrderId") or self._rid(), "side": p["side"],
                 "price": f"{float(p['price']):.8f}", "origQty": f"{float(p['quantity']):.8f}",
                 "status": "NEW", "time": now_ms()}
        self.orders[order["clientOrderId"]] = order
        await self._reply(rid, 200, self._view(order, workingTime=now_ms(), fills=[]))
        await self._report(order, "NEW")

    async def cancel(self, rid: Any, p: dict[str, Any]) -> None:
        order = self.orders.get(p.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            await self._reply(rid, 400, error=(-2011, "Unknown order sent."))
            return
        order["status"] = "CANCELED"
        cancel_id = p.get("newClientOrderId") or self._rid()
        await self._reply(rid, 200, self._view(order, origClientOrderId=order["clientOrderId"],
                                               clientOrderId=cancel_id))
        await self._report(order | {"clientOrderId": cancel_id}, "CANCELED",
                           orig=order["clientOrderId"])

    async def amend(self, rid: Any, p: dict[str, Any]) -> None:
        order = self.orders.get(p.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            await self._reply(rid, 400, error=(-2011, "Unknown order sent."))
            return
        new_id = p.get("newClientOrderId") or self._rid()
        del self.orders[order["clientOrderId"]]
        order.update(clientOrderId=new_id, origQty=f"{float(p['newQty']):.8f}")
        self.orders[new_id] = order
        amended = self._view(order, origClientOrderId=p["origClientOrderId"])
        await self._reply(rid, 200, {"transactTime": now_ms(),
                                     "executionId": self.rng.randint(1, 10**6),
                                     "amendedOrder": amended})
        await self._report(order, "REPLACED", orig=p["origClientOrderId"])

    async def big_open_orders(self, rid: Any) -> None:
        rows = [self._view(o) for o in self.orders.values() if o["status"] == "NEW"]
        for _ in range(BIG_RESULT_ROWS):
            self.next_order_id += 1
            fake = {"symbol": "BTCUSDT", "orderId": self.next_order_id,
                    "clientOrderId": self._rid(), "side": self.rng.choice(["BUY", "SELL"]),
                    "price": f"{self.rng.uniform(1e4, 9e4):.8f}",
                    "origQty": f"{self.rng.uniform(0, 2):.8f}", "status": "NEW"}
            rows.append(self._view(fake, time=now_ms(), isWorking=True,
                                   signatureTag="".join(self.rng.choices(ALNUM, k=40))))
        await self._reply(rid, 200, rows)  # type: ignore[arg-type]

    async def handle(self, raw: Any) -> None:
        req = json.loads(raw)
        rid, method, params = req.get("id"), req.get("method", ""), req.get("params", {})
        await self.delay.sleep()
        if method in KINDS and params.get("apiKey") != BINANCE_API_KEY:
            await self._reply(rid, 401, error=(-2015, "Invalid API-key, IP, or permissions."))
        elif method == "order.place":
            await self.place(rid, params)
        elif method == "order.cancel":
            await self.cancel(rid, params)
        elif method == "order.amend.keepPriority":
            await self.amend(rid, params)
        elif method == "userDataStream.subscribe":
            self.subscribed = True
            await self._reply(rid, 200, {"subscriptionId": 0})
        elif method == "openOrders.status":
            await self.big_open_orders(rid)
        elif method == "exchangeInfo":
            symbols = [{"symbol": f"SYM{i}USDT", "status": "TRADING", "baseAsset": f"SYM{i}",
                        "quoteAsset": "USDT", "filters": []} for i in range(300)]
            await self._reply(rid, 200, {"timezone": "UTC", "serverTime": now_ms(),
                                         "symbols": symbols}, fragments=4)
        else:
            await self._reply(rid, 400, error=(-1100, f"Unknown method {method!r}."))


async def _stream(ws: ServerConnection, seed: int) -> None:
    rng = random.Random(seed + 9)
    update_id, trade_id, price = 50_000_000_000, 3_000_000_000, 65_000.0
    while True:
        price += rng.gauss(0, 1.5)
        if rng.random() < 0.7:
            update_id += rng.randint(1, 40)
            data = {"u": update_id, "s": "BTCUSDT", "b": f"{price:.2f}",
                    "B": f"{rng.uniform(0, 3):.8f}", "a": f"{price + 0.01:.2f}",
                    "A": f"{rng.uniform(0, 3):.8f}"}
            msg = {"stream": "btcusdt@bookTicker", "data": data}
        else:
            trade_id += 1
            data = {"e": "trade", "E": now_ms(), "s": "BTCUSDT", "t": trade_id,
                    "p": f"{price:.2f}", "q": f"{rng.uniform(0, 0.5):.8f}", "T": now_ms(),
                    "m": rng.random() < 0.5, "M": True}
            msg = {"stream": "btcusdt@trade", "data": data}
        try:
            await ws.send(dumps(msg))
        except ConnectionClosed:
            return
        await asyncio.sleep(rng.expovariate(STREAM_RATE_HZ))


class TickStream:
    """The tick scenario's market data (module docstring): depth events numbered per
    symbol with planted gaps, trades, signals and one burst."""

    def __init__(self, ws: ServerConnection, ctx: RunCtx) -> None:
        self.ws = ws
        self.rng = random.Random(ctx.seed + 11)
        self.truth = (ctx.out_dir / f"{ctx.scenario}.feed.jsonl").open("w")
        self.last_u = {s: 40_000_000_000 + 10_000_000 * i for i, s in enumerate(TICK_SYMBOLS)}
        self.bid = dict(TICK_SYMBOLS)
        self.count = dict.fromkeys(TICK_SYMBOLS, 0)
        self.trade_id, self.trades = 5_000_000_000, 0

    def _log(self, **rec: Any) -> None:
        self.truth.write(dumps(rec) + "\n")
        self.truth.flush()

    def _depth(self, symbol: str, move: float, levels: int = 1) -> dict[str, Any]:
        self.count[symbol] += 1
        missing = PLANTED_GAPS.get((symbol, self.count[symbol]), 0)
        first = self.last_u[symbol] + 1 + missing
        last = first + self.rng.randint(0, 6)
        if missing:
            self._log(kind="gap", rule="binance_depth", stream=f"depthUpdate {symbol}",
                      expected=self.last_u[symbol] + 1, got=first, missing=missing)
        self.last_u[symbol] = last
        self.bid[symbol] += move
        b = self.bid[symbol]
        return {"stream": f"{symbol.lower()}@depth", "data": {
            "e": "depthUpdate", "E": now_ms(), "s": symbol, "U": first, "u": last,
            "b": [[f"{b - k * 0.01:.2f}", f"{self.rng.uniform(0, 3):.8f}"]
                  for k in range(levels)],
            "a": [[f"{b + 0.01 + k * 0.01:.2f}", f"{self.rng.uniform(0, 3):.8f}"]
                  for k in range(levels)]}}

    def _trade(self) -> dict[str, Any]:
        self.trades += 1
        missing = PLANTED_TRADE_GAPS.get(self.trades, 0)
        if missing:
            self._log(kind="gap", rule="binance_trade", stream="trade BTCUSDT",
                      expected=self.trade_id + 1, got=self.trade_id + 1 + missing,
                      missing=missing)
        self.trade_id += 1 + missing
        return {"stream": "btcusdt@trade", "data": {
            "e": "trade", "E": now_ms(), "s": "BTCUSDT", "t": self.trade_id,
            "p": f"{self.bid['BTCUSDT']:.2f}", "q": f"{self.rng.uniform(0, 0.5):.8f}",
            "T": now_ms(), "m": self.rng.random() < 0.5, "M": True}}

    async def run(self) -> None:
        signals, events = 0, 0
        try:
            while signals < SIGNALS:
                events += 1
                symbol = self.rng.choice(list(TICK_SYMBOLS))
                signal = events % 40 == 0
                if self.rng.random() < 0.2:
                    msg = self._trade()
                else:
                    move = (SIGNAL_MOVE * self.rng.choice([-1, 1]) if signal else
                            max(-SIGNAL_MOVE / 4, min(SIGNAL_MOVE / 4, self.rng.gauss(0, 1.5))))
                    msg = self._depth(symbol, move)
                    if signal:
                        signals += 1
                        d = msg["data"]
                        self._log(kind="signal", symbol=symbol, U=d["U"], u=d["u"])
                await self.ws.send(dumps(msg))
                if signal and "U" in msg["data"]:
                    await asyncio.sleep(SIGNAL_QUIET_S)
                if events == BURST_AT:
                    self._log(kind="burst_start", events=BURST_EVENTS)
                    for _ in range(BURST_EVENTS):
                        move = self.rng.gauss(0, 0.5)
                        await self.ws.send(dumps(self._depth(symbol, move, BURST_LEVELS)))
                    self._log(kind="burst_end", events=BURST_EVENTS)
                await asyncio.sleep(self.rng.expovariate(TICK_RATE_HZ))
            self._log(kind="end", events=events)
        except ConnectionClosed:
            return
        finally:
            self.truth.close()


async def serve(ctx: RunCtx) -> None:
    async def api(ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != API_PATH:
            await ws.close(1008, "unknown path")
            return
        if ctx.scenario == TICK_SCENARIO:
            log = (ctx.out_dir / f"{ctx.scenario}.api.jsonl").open("w")

            def note(**rec: Any) -> None:
                log.write(dumps(rec) + "\n")
                log.flush()

            session = ApiSession(ws, ctx.seed, BIG_PUSH_EVERY, note)
        else:
            session = ApiSession(ws, ctx.seed)
        await serve_concurrently(ws, session.handle)

    async def stream(ws: ServerConnection) -> None:
        task = asyncio.create_task(TickStream(ws, ctx).run() if ctx.scenario == TICK_SCENARIO
                                   else _stream(ws, ctx.seed))
        await ws.wait_closed()
        task.cancel()

    async with ws_serve(api, sock=listen_socket(ctx.bind_ip, API_PORT),
                     ssl=server_tls(ctx, API_HOST), ping_interval=1.0), \
            ws_serve(stream, sock=listen_socket(ctx.bind_ip, STREAM_PORT),
                  ssl=server_tls(ctx, STREAM_HOST), ping_interval=None):
        announce_ready()
        await wait_for_stop()


# ====================================================================== client
class WsTrader:
    def __init__(self, ctx: RunCtx, log: TruthLog, rpc: RpcClient) -> None:
        self.ctx, self.log, self.rpc = ctx, log, rpc
        self.rng = random.Random(ctx.seed * 31)
        self.live: list[str] = []
        self.seq = 0
        self.last_answered: Any = None
        self.inflight: set[Any] = set()

    def _cid(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq:04d}_{''.join(self.rng.choices(ALNUM, k=6))}"

    def _req_id(self) -> Any:
        roll = self.rng.random()
        if roll < 0.15 and self.last_answered not in (None, *self.inflight):
            return self.last_answered  # reuse an id once it has been answered
        if roll < 0.45:
            return self.rng.randint(1, 10**6)
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _signed(self, params: dict[str, Any]) -> dict[str, Any]:
        params = params | {"apiKey": BINANCE_API_KEY, "timestamp": now_ms()}
        return params | {"signature": self.log.secret(_sign(params))}

    async def action(self, method: str, params: dict[str, Any], *, fragments: int = 1) -> None:
        rid = self._req_id()
        self.inflight.add(rid)
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=method, kind=KINDS[method],
            conn_id=1, local_port=0, request_id=rid,
            client_order_id=params.get("newClientOrderId"),
            orig_client_order_id=params.get("origClientOrderId"),
            extra={"fragments": fragments} if fragments > 1 else {}))
        reply = await self.rpc.call(rid, {"id": rid, "method": method,
                                          "params": self._signed(params)}, rec,
                                    fragments=fragments)
        self.inflight.discard(rid)
        self.last_answered = rid
        rec.status = reply.get("status")
        rec.outcome = "accepted" if rec.status == 200 else (
            "rejected" if isinstance(rec.status, int) and rec.status < 500 else "error")
        result = reply.get("result") or {}
        if "error" in reply:
            rec.error_code = reply["error"].get("code")
        order = result.get("amendedOrder", result)
        if "orderId" in order:
            rec.exchange_order_id = str(order["orderId"])
        if rec.outcome == "accepted" and method == "order.place":
            self.live.append(params["newClientOrderId"])

    def _place(self, too_big: bool = False) -> dict[str, Any]:
        qty = 4.0 if too_big else self.rng.choice([0.001, 0.002, 0.004])
        return {"symbol": "BTCUSDT", "side": self.rng.choice(["BUY", "SELL"]), "type": "LIMIT",
                "timeInForce": "GTC", "price": f"{self.rng.uniform(60000, 70000):.2f}",
                "quantity": f"{qty:.8f}", "newClientOrderId": self._cid("wsn")}

    def _next(self, step: int) -> tuple[str, dict[str, Any]]:
        if step % 4 == 3 and self.live:
            target = self.live.pop(self.rng.randrange(len(self.live)))
            return "order.cancel", {"symbol": "BTCUSDT", "origClientOrderId": target,
                                    "newClientOrderId": self._cid("wsc")}
        if step % 7 == 6 and self.live:
            idx = self.rng.randrange(len(self.live))
            new_id = self._cid("wsa")
            params = {"symbol": "BTCUSDT", "origClientOrderId": self.live[idx],
                      "newClientOrderId": new_id, "newQty": "0.00050000"}
            self.live[idx] = new_id
            return "order.amend.keepPriority", params
        if step == 17:
            return "order.cancel", {"symbol": "BTCUSDT", "origClientOrderId": "wsn_9999_gone00",
                                    "newClientOrderId": self._cid("wsc")}
        return "order.place", self._place(too_big=step % 10 == 8)

    async def run(self, steps: int) -> None:
        await self.rpc.call("sub-0", {"id": "sub-0", "method": "userDataStream.subscribe"})
        step = 0
        while step < steps:
            burst = self.rng.choice([1, 1, 2, 3])
            calls = []
            for _ in range(burst):
                method, params = self._next(step)
                frags = 3 if step == 5 else 1
                calls.append(self.action(method, params, fragments=frags))
                step += 1
            await asyncio.gather(*calls)
            await pause(self.rng, 2.0, 12.0)
        await self.rpc.call("big-1", {"id": "big-1", "method": "openOrders.status",
                                      "params": self._signed({"symbol": "BTCUSDT"})})
        await self.rpc.call("info-1", {"id": "info-1", "method": "exchangeInfo",
                                       "params": {"symbol": "BTCUSDT"}})
        while self.live:
            method, params = "order.cancel", {"symbol": "BTCUSDT",
                                              "origClientOrderId": self.live.pop(),
                                              "newClientOrderId": self._cid("wsc")}
            await self.action(method, params)
        await asyncio.sleep(1.2)  # idle long enough for a server ping/pong


async def client(ctx: RunCtx) -> None:
    if ctx.scenario == TICK_SCENARIO:
        await tick_client(ctx)
        return
    log = TruthLog(ctx)
    tls = client_tls(ctx)
    counts = {"stream": 0, "push": 0}

    def on_stream(_: Any) -> None:
        counts["stream"] += 1

    def on_push(_: Any) -> None:
        counts["push"] += 1

    async with connect(f"wss://{STREAM_HOST}:{STREAM_PORT}{STREAM_PATH}", ssl=tls,
                       host=ctx.connect_ip, port=STREAM_PORT, proxy=None) as stream_ws:
        stream = RpcClient(stream_ws, lambda m: None, on_stream)
        await asyncio.sleep(0.3)
        async with connect(f"wss://{API_HOST}{API_PATH}", ssl=tls, host=ctx.connect_ip,
                           port=API_PORT, proxy=None, max_size=4 * 2**20) as api_ws:
            rpc = RpcClient(api_ws, lambda m: m.get("id"), on_push)
            await WsTrader(ctx, log, rpc).run(steps=44)
            await rpc.close()
        await stream.close()
    log.write()
    print(f"binance ws: {counts}", flush=True)


# ====================================================================== tick client
class TickTrader:
    """Places an order on a symbol as soon as a signal (a best-bid jump of at least
    ``SIGNAL_MOVE / 2``) arrives on its depth stream, and logs the event that made it."""

    def __init__(self, ctx: RunCtx, log: TruthLog, rpc: RpcClient) -> None:
        self.ctx, self.log, self.rpc = ctx, log, rpc
        self.rng = random.Random(ctx.seed * 37)
        self.bid: dict[str, float] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.seq = 0
        self.signals = 0

    def on_market_data(self, msg: Any) -> None:
        data = msg.get("data") if isinstance(msg, dict) else None
        if not isinstance(data, dict) or data.get("e") != "depthUpdate":
            return
        symbol, bid = data["s"], float(data["b"][0][0])
        prev = self.bid.get(symbol)
        self.bid[symbol] = bid
        if prev is not None and abs(bid - prev) >= SIGNAL_MOVE / 2:
            self.signals += 1
            trigger = {"symbol": symbol, "U": data["U"], "u": data["u"],
                       "read_mono_ns": time.monotonic_ns()}
            self.tasks.append(asyncio.ensure_future(self.order(symbol, bid, trigger)))

    async def order(self, symbol: str, bid: float, trigger: dict[str, Any]) -> None:
        self.seq += 1
        params = {"symbol": symbol, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                  "price": f"{bid - 5:.2f}", "quantity": "0.00100000",
                  "newClientOrderId": f"tick_{self.seq:04d}_{symbol[:3].lower()}"}
        params |= {"apiKey": BINANCE_API_KEY, "timestamp": now_ms()}
        params |= {"signature": self.log.secret(_sign(params))}
        rid = f"tick-{self.seq}"
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint="order.place", kind="new",
            conn_id=1, local_port=0, request_id=rid,
            client_order_id=params["newClientOrderId"], orig_client_order_id=None,
            extra={"trigger": trigger}))
        reply = await self.rpc.call(rid, {"id": rid, "method": "order.place",
                                          "params": params}, rec)
        trigger["reaction_mono_ns"] = rec.send_mono_ns - trigger.pop("read_mono_ns")
        rec.status = reply.get("status")
        rec.outcome = "accepted" if rec.status == 200 else "rejected"
        result = reply.get("result") or {}
        if "orderId" in result:
            rec.exchange_order_id = str(result["orderId"])


async def tick_client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    tls = client_tls(ctx)
    async with connect(f"wss://{API_HOST}{API_PATH}", ssl=tls, host=ctx.connect_ip,
                       port=API_PORT, proxy=None) as api_ws:
        rpc = RpcClient(api_ws, lambda m: m.get("id"), lambda m: None)
        trader = TickTrader(ctx, log, rpc)
        async with connect(f"wss://{STREAM_HOST}:{STREAM_PORT}{TICK_STREAM_PATH}", ssl=tls,
                           host=ctx.connect_ip, port=STREAM_PORT, proxy=None) as stream_ws:
            stream = RpcClient(stream_ws, lambda m: None, trader.on_market_data)
            deadline = time.monotonic() + 60.0  # bounded: the server sends SIGNALS and stops
            while trader.signals < SIGNALS and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            await asyncio.gather(*trader.tasks)
            await stream.close()
        await rpc.close()
    log.write()
    print(f"binance tick: {trader.signals} signals, {len(log.records)} orders", flush=True)
