"""Binance spot REST: an aiohttp mock server and an aiohttp keep-alive trading client.

How this works: the server implements just enough of `api.binance.com` for order
entry: `POST /api/v3/order` (new), `DELETE /api/v3/order` (cancel),
`PUT /api/v3/order/amend/keepPriority` (amend), `GET /api/v3/openOrders` (a
~150 KB body that spans many TCP segments and TLS records), `GET
/api/v3/exchangeInfo` (gzip + chunked) and `GET /api/v3/time`. It checks the
`X-MBX-APIKEY` header and the HMAC-SHA256 `signature` over "query string +
body", as Binance does, and answers errors with Binance's `{"code","msg"}` JSON:
-2010 insufficient balance (HTTP 400), -2011 unknown order (HTTP 400) and, once
per 25 new orders, -1007 backend timeout (HTTP 503, outcome unknown).

The client opens `conns` keep-alive connections (one aiohttp session each, pool of
one), sends the real host name as SNI and Host (a static resolver maps it to the
mock's address) and logs one truth record per order action. Parameters go in the
query string for some requests and in a form-urlencoded body for others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import socket
import string
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
import yarl
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
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

HOST = "api.binance.com"
PORT = 443
VENUE = "binance"
BIG_BODY_TARGET = 150_000  # bytes of the openOrders answer
BALANCE_LIMIT_QUOTE = 50_000.0  # notional above which a new order is -2010
TIMEOUT_EVERY = 25  # every 25th new order (17th, 42nd, ...) answers -1007 / 503


def _sign(payload: str) -> str:
    return hmac.new(BINANCE_API_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()


def _strip_signature(part: str) -> tuple[str, str | None]:
    """Remove `signature=` from a query or body, returning (rest, signature)."""
    kept, sig = [], None
    for item in part.split("&") if part else []:
        if item.startswith("signature="):
            sig = item[len("signature="):]
        else:
            kept.append(item)
    return "&".join(kept), sig


def _err(status: int, code: int, msg: str) -> web.Response:
    body = json.dumps({"code": code, "msg": msg}, separators=(",", ":"))
    return web.Response(status=status, text=body, content_type="application/json")


class BinanceRestServer:
    """State of the mock matching engine plus the aiohttp handlers."""

    def __init__(self, seed: int) -> None:
        self.delay = ServerDelay(seed)
        self.rng = random.Random(seed + 1)
        self.orders: dict[str, dict[str, Any]] = {}
        self.next_order_id = 4_000_000_000 + seed * 1000
        self.new_count = 0

    # -- helpers
    async def _params(self, request: web.Request) -> dict[str, str] | web.Response:
        if request.headers.get("X-MBX-APIKEY") != BINANCE_API_KEY:
            return _err(401, -2015, "Invalid API-key, IP, or permissions for action.")
        body = (await request.read()).decode()
        query, qsig = _strip_signature(request.query_string)
        body_rest, bsig = _strip_signature(body)
        if (qsig or bsig) != _sign(query + body_rest):
            return _err(400, -1022, "Signature for this request is not valid.")
        return dict(parse_qsl(query)) | dict(parse_qsl(body_rest))

    def _reply(self, payload: Any, status: int = 200) -> web.Response:
        resp = web.Response(
            status=status, text=json.dumps(payload, separators=(",", ":")),
            content_type="application/json",
        )
        resp.headers["x-mbx-uuid"] = "".join(self.rng.choices("0123456789abcdef", k=32))
        resp.headers["x-mbx-used-weight-1m"] = str(self.rng.randint(2, 40))
        return resp

    def _order_view(self, order: dict[str, Any], **over: Any) -> dict[str, Any]:
        view = {
            "symbol": order["symbol"], "orderId": order["orderId"], "orderListId": -1,
            "clientOrderId": order["clientOrderId"], "transactTime": now_ms(),
            "price": order["price"], "origQty": order["origQty"], "executedQty": "0.00000000",
            "cummulativeQuoteQty": "0.00000000", "status": order["status"],
            "timeInForce": "GTC", "type": "LIMIT", "side": order["side"],
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        view.update(over)
        return view

    # -- order entry
    async def new_order(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        await self.delay.sleep()
        self.new_count += 1
        if self.new_count % TIMEOUT_EVERY == 17:
            return _err(503, -1007, "Timeout waiting for response from backend server. "
                        "Send status unknown; execution status unknown.")
        if float(params["quantity"]) * float(params["price"]) > BALANCE_LIMIT_QUOTE:
            return _err(400, -2010, "Account has insufficient balance for requested action.")
        self.next_order_id += self.rng.randint(1, 9)
        order = {
            "symbol": params["symbol"], "orderId": self.next_order_id,
            "clientOrderId": params.get("newClientOrderId") or self._gen_id(),
            "price": f"{float(params['price']):.8f}", "origQty": f"{float(params['quantity']):.8f}",
            "side": params["side"], "status": "NEW",
        }
        self.orders[order["clientOrderId"]] = order
        view = self._order_view(order, workingTime=now_ms(), fills=[])
        return self._reply(view)

    async def cancel_order(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        await self.delay.sleep()
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            return _err(400, -2011, "Unknown order sent.")
        order["status"] = "CANCELED"
        view = self._order_view(order, origClientOrderId=order["clientOrderId"],
                                clientOrderId=params.get("newClientOrderId") or self._gen_id())
        return self._reply(view)

    async def amend_order(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        await self.delay.sleep()
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            return _err(400, -2011, "Unknown order sent.")
        if float(params["newQty"]) >= float(order["origQty"]):
            return _err(400, -2038, "Order amend (quantity increase) is not supported.")
        new_id = params.get("newClientOrderId") or self._gen_id()
        del self.orders[order["clientOrderId"]]
        order.update(clientOrderId=new_id, origQty=f"{float(params['newQty']):.8f}")
        self.orders[new_id] = order
        amended = self._order_view(order, origClientOrderId=params["origClientOrderId"])
        return self._reply({"transactTime": now_ms(), "executionId": self.rng.randint(1, 10**6),
                            "amendedOrder": amended})

    # -- queries
    async def open_orders(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        live = [self._order_view(o) for o in self.orders.values() if o["status"] == "NEW"]
        rows, size = list(live), 2
        while size < BIG_BODY_TARGET:
            self.next_order_id += 1
            filler = {"symbol": params.get("symbol", "BTCUSDT"), "orderId": self.next_order_id,
                      "clientOrderId": self._gen_id(), "price": f"{self.rng.uniform(1e4, 9e4):.2f}",
                      "origQty": "0.00100000", "side": self.rng.choice(["BUY", "SELL"]),
                      "status": "NEW"}
            row = self._order_view(filler, time=now_ms(), updateTime=now_ms(), isWorking=True)
            rows.append(row)
            size += len(json.dumps(row, separators=(",", ":"))) + 1
        return self._reply(rows)

    async def exchange_info(self, request: web.Request) -> web.Response:
        filters = [{"filterType": f"FILTER_{i}", "minPrice": "0.01", "maxPrice": "1000000.00",
                    "tickSize": "0.01"} for i in range(60)]
        info = {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [],
                "symbols": [{"symbol": request.query.get("symbol", "BTCUSDT"), "status": "TRADING",
                             "baseAsset": "BTC", "quoteAsset": "USDT", "filters": filters}]}
        resp = self._reply(info)
        resp.enable_compression()  # gzip (or deflate) per Accept-Encoding, chunked
        return resp

    async def server_time(self, request: web.Request) -> web.Response:
        return self._reply({"serverTime": now_ms()})

    def _gen_id(self) -> str:
        return "".join(self.rng.choices(string.ascii_letters + string.digits, k=22))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v3/order", self.new_order)
        app.router.add_delete("/api/v3/order", self.cancel_order)
        app.router.add_put("/api/v3/order/amend/keepPriority", self.amend_order)
        app.router.add_get("/api/v3/openOrders", self.open_orders)
        app.router.add_get("/api/v3/exchangeInfo", self.exchange_info)
        app.router.add_get("/api/v3/time", self.server_time)
        return app


async def serve(ctx: RunCtx) -> None:
    server = BinanceRestServer(ctx.seed)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    tls = server_tls(ctx, HOST, alpn=["http/1.1"])
    site = web.SockSite(runner, listen_socket(ctx.bind_ip, PORT), ssl_context=tls)
    await site.start()
    announce_ready()
    await wait_for_stop()
    await runner.cleanup()


# ====================================================================== client
class StaticResolver(AbstractResolver):
    """Resolve every venue host name to the mock's address (SNI stays the real name)."""

    def __init__(self, address: str) -> None:
        self._address = address

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=self._address, port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


class PortTrackingConnector(aiohttp.TCPConnector):
    """TCPConnector that remembers the local port of the connection it opened last."""

    local_port = 0

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:
        transport, proto = await super()._wrap_create_connection(*args, **kwargs)
        self.local_port = transport.get_extra_info("sockname")[1]
        return transport, proto


class RestTrader:
    """One keep-alive connection's worth of order flow."""

    def __init__(self, ctx: RunCtx, log: TruthLog, conn_id: int,
                 session: aiohttp.ClientSession, connector: PortTrackingConnector) -> None:
        self.ctx, self.log, self.conn_id, self.session = ctx, log, conn_id, session
        self.connector = connector
        self.rng = random.Random(ctx.seed * 100 + conn_id)
        self.live: list[str] = []
        self.local_port = 0
        self.seq = 0

    def _cid(self, prefix: str) -> str:
        self.seq += 1
        tail = "".join(self.rng.choices(string.ascii_letters + string.digits, k=6))
        return f"{prefix}{self.conn_id}_{self.seq:04d}_{tail}"

    async def call(self, method: str, path: str, params: dict[str, str], *, in_body: bool = False
                   ) -> tuple[int, Any]:
        params = params | {"recvWindow": "5000", "timestamp": str(now_ms())}
        encoded = urlencode(params)
        sig = self.log.secret(_sign(encoded))
        headers = {"X-MBX-APIKEY": BINANCE_API_KEY}
        url = f"https://{HOST}{path}"
        if in_body:
            data: str | None = f"{encoded}&signature={sig}"
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            url, data = f"{url}?{encoded}&signature={sig}", None
        async with self.session.request(method, yarl.URL(url, encoded=True), data=data,
                                        headers=headers) as resp:
            self.local_port = self.connector.local_port
            body = await resp.read()
            return resp.status, json.loads(body)

    async def action(self, kind: str, method: str, path: str, params: dict[str, str],
                     *, in_body: bool = False) -> TruthRecord:
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=f"{method} {path}", kind=kind,
            conn_id=self.conn_id, local_port=self.local_port, request_id=None,
            client_order_id=params.get("newClientOrderId"),
            orig_client_order_id=params.get("origClientOrderId"),
            extra={"params_in": "body" if in_body else "query"}))
        rec.mark_sent()
        status, body = await self.call(method, path, params, in_body=in_body)
        rec.mark_received()
        rec.local_port, rec.status = self.local_port, status
        rec.outcome = "accepted" if status == 200 else "rejected" if status < 500 else "error"
        if isinstance(body, dict) and "code" in body:
            rec.error_code = body["code"]
        order = body.get("amendedOrder", body) if isinstance(body, dict) else {}
        if "orderId" in order:
            rec.exchange_order_id = str(order["orderId"])
        return rec

    async def new(self, *, too_big: bool = False) -> None:
        cid = self._cid("pcf")
        qty = "5.00000000" if too_big else f"{self.rng.choice([0.001, 0.002, 0.005, 0.01]):.8f}"
        params = {"symbol": "BTCUSDT", "side": self.rng.choice(["BUY", "SELL"]), "type": "LIMIT",
                  "timeInForce": "GTC", "quantity": qty,
                  "price": f"{self.rng.uniform(60000, 70000):.2f}", "newClientOrderId": cid,
                  "newOrderRespType": "RESULT"}
        rec = await self.action("new", "POST", "/api/v3/order", params,
                                in_body=self.rng.random() < 0.5)
        if rec.outcome == "accepted":
            self.live.append(cid)

    async def cancel(self, target: str | None = None) -> None:
        if target is None:
            target = self.live.pop(self.rng.randrange(len(self.live)))
        params = {"symbol": "BTCUSDT", "origClientOrderId": target,
                  "newClientOrderId": self._cid("cxl")}
        await self.action("cancel", "DELETE", "/api/v3/order", params)

    async def amend(self) -> None:
        idx = self.rng.randrange(len(self.live))
        new_id = self._cid("amd")
        params = {"symbol": "BTCUSDT", "origClientOrderId": self.live[idx],
                  "newClientOrderId": new_id, "newQty": "0.00050000"}
        rec = await self.action("amend", "PUT", "/api/v3/order/amend/keepPriority", params)
        if rec.outcome == "accepted":
            self.live[idx] = new_id

    async def run(self, n_new: int, big_gets: int) -> None:
        _status, _ = await self.call("GET", "/api/v3/time", {})
        async with self.session.get(f"https://{HOST}/api/v3/exchangeInfo?symbol=BTCUSDT") as r:
            await r.read()
        for i in range(n_new):
            await self.new(too_big=(i % 11 == 5))
            await pause(self.rng)
            if i % 3 == 2 and self.live:
                await self.cancel()
            if i % 5 == 4 and self.live:
                await self.amend()
            if i == n_new // 2:
                await self.cancel(target=f"pcf{self.conn_id}_9999_unknwn")
                for _ in range(big_gets):
                    await self.call("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
            await pause(self.rng)
        while self.live:
            await self.cancel()


async def run_client(ctx: RunCtx, *, conns: int, n_new: int, big_gets: int) -> None:
    log = TruthLog(ctx)
    tls = client_tls(ctx, alpn=["http/1.1"])

    async def one(conn_id: int) -> None:
        connector = PortTrackingConnector(limit=1, ssl=tls, resolver=StaticResolver(ctx.connect_ip),
                                         keepalive_timeout=60)
        async with aiohttp.ClientSession(connector=connector) as session:
            trader = RestTrader(ctx, log, conn_id, session, connector)
            await trader.run(n_new, big_gets if conn_id == 1 else 0)

    await asyncio.gather(*(one(i + 1) for i in range(conns)))
    log.write()


async def client(ctx: RunCtx) -> None:
    if ctx.scenario == "lossy_rest_tls13":
        await run_client(ctx, conns=2, n_new=14, big_gets=2)
    elif ctx.small:
        await run_client(ctx, conns=1, n_new=10, big_gets=0)
    else:
        await run_client(ctx, conns=2, n_new=15, big_gets=1)
