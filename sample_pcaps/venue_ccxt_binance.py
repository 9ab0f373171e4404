"""ccxt (a real trading library) against a Binance-like mock: REST and the WebSocket API.

How this works. The server side reuses the aiohttp REST mock (`venue_binance_rest`)
and the WebSocket API session (`venue_binance_ws`) and adds what ccxt uses and
they lack: a spot `exchangeInfo` that ccxt's `load_markets` parses, cancels by
`orderId` (ccxt's `cancel_order(id, symbol)` sends `DELETE
/api/v3/order?orderId=...` and no client id of its own), and cancel-replace
(`POST /api/v3/order/cancelReplace`, WS `order.cancelReplace`: ccxt's
`edit_order` for spot). REST listens on 443 (`api.binance.com`), the WS API on
9443 (`ws-api.binance.com:9443/ws-api/v3`, a real Binance endpoint); the WS
server negotiates permessage-deflate when the client offers it (`websockets`
default: context takeover).

The client is `ccxt.pro.binance` as users run it, with two changes only: its
aiohttp session is ours (a resolver that maps the venue's names to the mock's
address, so SNI and Host stay the real names; an `ssl.SSLContext` that trusts
the mock CA and writes the NSS key log; a connector that remembers the local
port), and the WS API URL points at port 9443. Each trader owns one exchange
instance and so one connection: REST keep-alive (pool of one) or one WS API
connection. Rate limiting is off (ccxt's throttle would sleep between the send
time we record and the real send).

Scenarios:
- `rotated_binance`: REST (TLS 1.3) and WS API (TLS 1.3, permessage-deflate)
  trading for ~12 s while `tcpdump -G 2 -z gzip` rotates the capture.
- `midsession_binance`: REST TLS 1.3, WS API TLS 1.3 with permessage-deflate,
  WS API TLS 1.3 without compression, and REST TLS 1.2 open their sessions and
  trade (phase "before"); the client then prints `OPEN` and waits for `GO` on
  stdin, which the orchestrator sends once a second tcpdump is listening; every
  trader trades on (phase "after"). Truth `extra.phase` says which.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from typing import Any

import aiohttp
import ccxt.pro as ccxtpro
from aiohttp import web
from common import (
    BINANCE_API_KEY,
    BINANCE_API_SECRET,
    RunCtx,
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
from venue_binance_rest import (
    BinanceRestServer,
    PortTrackingConnector,
    StaticResolver,
    _err,
)
from venue_binance_ws import ApiSession
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from wsrpc import serve_concurrently

REST_HOST, REST_PORT = "api.binance.com", 443
WS_HOST, WS_PORT, WS_PATH = "ws-api.binance.com", 9443, "/ws-api/v3"
WS_URL = f"wss://{WS_HOST}:{WS_PORT}{WS_PATH}"
VENUE = "binance"
SYMBOL, MARKET = "BTCUSDT", "BTC/USDT"
CODE = re.compile(r'"code"\s*:\s*(-?\d+)')


# ====================================================================== server
def _exchange_info() -> dict[str, Any]:
    filters = [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
         "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
         "stepSize": "0.00001000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
    ]
    symbol = {
        "symbol": SYMBOL, "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
        "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
        "cancelReplaceAllowed": True, "amendAllowed": True, "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False, "filters": filters, "permissions": [],
        "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER"],
    }
    return {"timezone": "UTC", "serverTime": now_ms(), "rateLimits": [],
            "exchangeFilters": [], "symbols": [symbol]}


class CcxtRestServer(BinanceRestServer):
    """The REST mock plus cancel by orderId and cancel-replace."""

    def _find(self, params: dict[str, str], id_key: str, coid_key: str) -> dict[str, Any] | None:
        if params.get(coid_key):
            return self.orders.get(params[coid_key])
        oid = params.get(id_key)
        return next((o for o in self.orders.values() if str(o["orderId"]) == oid), None)

    async def cancel_order(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        await self.delay.sleep()
        order = self._find(params, "orderId", "origClientOrderId")
        if order is None or order["status"] != "NEW":
            return _err(400, -2011, "Unknown order sent.")
        order["status"] = "CANCELED"
        view = self._order_view(order, origClientOrderId=order["clientOrderId"],
                                clientOrderId=params.get("newClientOrderId") or self._gen_id())
        return self._reply(view)

    async def cancel_replace(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        if isinstance(params, web.Response):
            return params
        await self.delay.sleep()
        order = self._find(params, "cancelOrderId", "cancelOrigClientOrderId")
        if order is None or order["status"] != "NEW":
            body = {"code": -2022, "msg": "Order cancel-replace failed.",
                    "data": {"cancelResult": "FAILURE", "newOrderResult": "NOT_ATTEMPTED",
                             "cancelResponse": {"code": -2011, "msg": "Unknown order sent."},
                             "newOrderResponse": None}}
            return self._reply(body, status=400)
        order["status"] = "CANCELED"
        cancelled = self._order_view(order, origClientOrderId=order["clientOrderId"],
                                     clientOrderId=self._gen_id())
        self.next_order_id += self.rng.randint(1, 9)
        new = {"symbol": params["symbol"], "orderId": self.next_order_id,
               "clientOrderId": params.get("newClientOrderId") or self._gen_id(),
               "price": f"{float(params['price']):.8f}",
               "origQty": f"{float(params['quantity']):.8f}", "side": params["side"],
               "status": "NEW"}
        self.orders[new["clientOrderId"]] = new
        return self._reply({"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                            "cancelResponse": cancelled,
                            "newOrderResponse": self._order_view(new, fills=[])})

    async def exchange_info(self, request: web.Request) -> web.Response:
        resp = self._reply(_exchange_info())
        resp.enable_compression()
        return resp

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/api/v3/order/cancelReplace", self.cancel_replace)
        return app


class CcxtApiSession(ApiSession):
    """The WS API session plus cancel by orderId and order.cancelReplace. Order ids are
    unique across connections, as a venue's are (the base session numbers each
    connection's orders from the same start)."""

    sessions = 0

    def __init__(self, ws: ServerConnection, seed: int) -> None:
        super().__init__(ws, seed)
        CcxtApiSession.sessions += 1
        self.next_order_id += 10_000_000 * CcxtApiSession.sessions

    def _find(self, p: dict[str, Any], id_key: str, coid_key: str) -> dict[str, Any] | None:
        if p.get(coid_key):
            return self.orders.get(p[coid_key])
        oid = str(p.get(id_key))
        return next((o for o in self.orders.values() if str(o["orderId"]) == oid), None)

    async def cancel(self, rid: Any, p: dict[str, Any]) -> None:
        order = self._find(p, "orderId", "origClientOrderId")
        if order is not None:
            p = p | {"origClientOrderId": order["clientOrderId"]}
        await super().cancel(rid, p)

    async def cancel_replace(self, rid: Any, p: dict[str, Any]) -> None:
        order = self._find(p, "cancelOrderId", "cancelOrigClientOrderId")
        if order is None or order["status"] != "NEW":
            await self._reply(rid, 400, error=(-2022, "Order cancel-replace failed."))
            return
        order["status"] = "CANCELED"
        cancelled = self._view(order, origClientOrderId=order["clientOrderId"],
                               clientOrderId=self._rid())
        self.next_order_id += self.rng.randint(1, 5)
        new = {"symbol": p["symbol"], "orderId": self.next_order_id,
               "clientOrderId": p.get("newClientOrderId") or self._rid(), "side": p["side"],
               "price": f"{float(p['price']):.8f}", "origQty": f"{float(p['quantity']):.8f}",
               "status": "NEW", "time": now_ms()}
        self.orders[new["clientOrderId"]] = new
        await self._reply(rid, 200, {"cancelResult": "SUCCESS", "newOrderResult": "SUCCESS",
                                     "cancelResponse": cancelled,
                                     "newOrderResponse": self._view(new, fills=[])})

    async def big_open_orders(self, rid: Any) -> None:
        """ccxt opens its WS API connection with this read: the live orders only."""
        rows = [self._view(o) for o in self.orders.values() if o["status"] == "NEW"]
        await self._reply(rid, 200, rows)  # type: ignore[arg-type]

    async def handle(self, raw: Any) -> None:
        req = json.loads(raw)
        if req.get("method") == "order.cancelReplace":
            await self.delay.sleep()
            if req.get("params", {}).get("apiKey") != BINANCE_API_KEY:
                await self._reply(req.get("id"), 401, error=(-2015, "Invalid API-key."))
                return
            await self.cancel_replace(req.get("id"), req.get("params", {}))
            return
        await super().handle(raw)


async def serve(ctx: RunCtx) -> None:
    rest = CcxtRestServer(ctx.seed)
    runner = web.AppRunner(rest.app(), access_log=None)
    await runner.setup()
    # TLS 1.2 and 1.3 both accepted: the client chooses (midsession: one TLS 1.2 conn)
    site = web.SockSite(runner, listen_socket(ctx.bind_ip, REST_PORT),
                        ssl_context=server_tls(ctx, REST_HOST, alpn=["http/1.1"]))
    await site.start()

    async def api(ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != WS_PATH:
            await ws.close(1008, "unknown path")
            return
        await serve_concurrently(ws, CcxtApiSession(ws, ctx.seed).handle)

    async with ws_serve(api, sock=listen_socket(ctx.bind_ip, WS_PORT),
                        ssl=server_tls(ctx, WS_HOST), ping_interval=3.0):
        announce_ready()
        await wait_for_stop()
    await runner.cleanup()


# ====================================================================== client
class Trader:
    """One ccxt exchange instance (one connection) and its order flow."""

    def __init__(self, ctx: RunCtx, log: TruthLog, conn_id: int, *, ws: bool,
                 tls12: bool = False, compress: bool = True) -> None:
        self.ctx, self.log, self.conn_id, self.ws = ctx, log, conn_id, ws
        self.tls12, self.compress = tls12, compress
        self.rng = random.Random(ctx.seed * 1000 + conn_id)
        self.live: list[tuple[str, str]] = []  # (exchange order id, client order id)
        self.seq = 0
        self.phase = "before" if ctx.scenario == "midsession_binance" else None
        self.status: int | None = None
        tls = client_tls(ctx, tls12=tls12, alpn=None if ws else ["http/1.1"])
        self.connector = PortTrackingConnector(limit=1, ssl=tls,
                                               resolver=StaticResolver(ctx.connect_ip),
                                               keepalive_timeout=120)
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_end)
        self.session = aiohttp.ClientSession(connector=self.connector, trace_configs=[trace])
        options: dict[str, Any] = {"fetchMarkets": {"types": ["spot"]},
                                   "fetchCurrencies": False, "fetchMargins": False,
                                   "defaultType": "spot"}
        if not compress:
            options["ws"] = {"options": {"compress": 0}}
        self.ex = ccxtpro.binance({"apiKey": BINANCE_API_KEY, "secret": BINANCE_API_SECRET,
                                   "enableRateLimit": False, "session": self.session,
                                   "options": options})
        self.ex.urls["api"]["ws"]["ws-api"]["spot"] = WS_URL
        sign = self.ex.hmac

        def hmac_noted(*args: Any, **kwargs: Any) -> Any:  # secrets.json: per-run signatures
            return log.secret(sign(*args, **kwargs))

        self.ex.hmac = hmac_noted
        handle_errors = self.ex.handle_errors
        self.last_code: int | None = None

        def errors_noted(*args: Any) -> Any:  # the venue's error code, REST or WS
            response = args[6] if len(args) > 6 else None
            if isinstance(response, dict) and "code" in response:
                self.last_code = int(response["code"])
            return handle_errors(*args)

        self.ex.handle_errors = errors_noted

    async def _on_end(self, _s: Any, _c: Any, params: aiohttp.TraceRequestEndParams) -> None:
        self.status = params.response.status

    @property
    def tag(self) -> str:
        return ("ws" if self.ws else "r") + str(self.conn_id)

    def _cid(self, kind: str) -> str:
        self.seq += 1
        tail = "".join(self.rng.choices("abcdefghjkmnpqrstuvwxyz23456789", k=5))
        return f"pcx{self.tag}{kind}{self.seq:04d}{tail}"

    def _local_port(self) -> int:
        if not self.ws:
            return self.connector.local_port
        client = self.ex.clients.get(WS_URL)
        conn = getattr(client, "connection", None)
        sock = conn.get_extra_info("sockname") if conn is not None else None
        return int(sock[1]) if sock else 0

    async def open(self, markets: dict[str, Any] | None) -> None:
        if markets is None:
            await self.ex.load_markets()
        else:
            self.ex.set_markets(markets)
        if self.ws:  # open the WS API connection (a signed read-only request)
            await self.ex.fetch_open_orders_ws(MARKET)

    async def close(self) -> None:
        await self.ex.close()
        await self.session.close()

    async def action(self, kind: str, endpoint: str, coid: str | None, orig: str | None,
                     call: Any, extra: dict[str, Any]) -> dict[str, Any] | None:
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=endpoint, kind=kind,
            conn_id=self.conn_id, local_port=self._local_port(), request_id=None,
            client_order_id=coid, orig_client_order_id=orig,
            extra={**({"phase": self.phase} if self.phase else {}),
                   "transport": "websocket" if self.ws else "rest",
                   "tls": "1.2" if self.tls12 else "1.3",
                   "deflate": self.ws and self.compress, **extra}))
        self.status, self.last_code = None, None
        rec.mark_sent()
        result: dict[str, Any] | None = None
        try:
            result = await call
            rec.mark_received()
            rec.outcome, rec.status = "accepted", self.status or 200
            if result and result.get("id"):
                rec.exchange_order_id = str(result["id"])
        except Exception as exc:  # ccxt maps the venue's error codes to exceptions
            rec.mark_received()
            code = CODE.search(str(exc))
            rec.error_code = self.last_code if self.last_code is not None else (
                int(code[1]) if code else None)
            rec.status = self.status or 400
            rec.outcome = "error" if rec.status >= 500 else "rejected"
            rec.extra["exception"] = type(exc).__name__
        rec.local_port = self._local_port()
        if self.ws:
            rec.request_id = str(self.ex.options["requestId"][WS_URL])
        return result

    async def new(self, *, too_big: bool = False) -> None:
        cid = self._cid("n")
        qty = 5.0 if too_big else self.rng.choice([0.001, 0.002, 0.005])
        side = self.rng.choice(["buy", "sell"])
        price = round(self.rng.uniform(60000, 70000), 2)
        params = {"clientOrderId": cid}
        if self.ws:
            call = self.ex.create_order_ws(MARKET, "limit", side, qty, price, params)
            endpoint = "order.place"
        else:
            call = self.ex.create_order(MARKET, "limit", side, qty, price, params)
            endpoint = "POST /api/v3/order"
        res = await self.action("new", endpoint, cid, None, call, {})
        if res is not None:
            self.live.append((str(res["id"]), cid))

    async def cancel(self, *, by_coid: bool, unknown: bool = False) -> None:
        if unknown:
            oid, coid = "9999999999", "pcxgone0000"
        else:
            oid, coid = self.live.pop(self.rng.randrange(len(self.live)))
        params = {"origClientOrderId": coid} if by_coid else {}
        if self.ws:
            call = self.ex.cancel_order_ws(oid, MARKET, params)
            endpoint = "order.cancel"
        else:
            call = self.ex.cancel_order(oid, MARKET, params)
            endpoint = "DELETE /api/v3/order"
        await self.action("cancel", endpoint, None, coid if by_coid else None, call,
                          {"target_order_id": None if by_coid else oid,
                           "target_client_order_id": coid})

    async def edit(self) -> None:
        idx = self.rng.randrange(len(self.live))
        oid, coid = self.live[idx]
        cid = self._cid("e")
        side = self.rng.choice(["buy", "sell"])
        price = round(self.rng.uniform(60000, 70000), 2)
        params = {"clientOrderId": cid}
        if self.ws:
            call = self.ex.edit_order_ws(oid, MARKET, "limit", side, 0.001, price, params)
            endpoint = "order.cancelReplace"
        else:
            call = self.ex.edit_order(oid, MARKET, "limit", side, 0.001, price, params)
            endpoint = "POST /api/v3/order/cancelReplace"
        res = await self.action("amend", endpoint, cid, None, call,
                                {"target_order_id": oid, "target_client_order_id": coid})
        if res is not None:
            self.live[idx] = (str(res["id"]), cid)

    async def trade(self, steps: int, lo_ms: float, hi_ms: float) -> None:
        for i in range(steps):
            await self.new(too_big=i % 9 == 4)
            await pause(self.rng, lo_ms, hi_ms)
            if i % 3 == 2 and self.live:
                await self.cancel(by_coid=self.rng.random() < 0.4)
                await pause(self.rng, lo_ms, hi_ms)
            if i % 4 == 3 and self.live:
                await self.edit()
                await pause(self.rng, lo_ms, hi_ms)
            if i == steps // 2:
                await self.cancel(by_coid=False, unknown=True)

    async def drain(self) -> None:
        while self.live:
            await self.cancel(by_coid=self.rng.random() < 0.5)


async def _wait_for_go() -> None:
    """Tell the orchestrator every session is open; wait until its capture listens."""
    print("OPEN", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise RuntimeError(f"expected GO on stdin, got {line!r}")


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    if ctx.scenario == "midsession_binance":
        traders = [Trader(ctx, log, 1, ws=False), Trader(ctx, log, 2, ws=True),
                   Trader(ctx, log, 3, ws=True, compress=False),
                   Trader(ctx, log, 4, ws=False, tls12=True)]
    else:
        traders = [Trader(ctx, log, 1, ws=False), Trader(ctx, log, 2, ws=True)]
    try:
        await traders[0].open(None)
        markets = traders[0].ex.markets
        for t in traders[1:]:
            await t.open(markets)
        if ctx.scenario == "midsession_binance":
            await asyncio.gather(*(t.trade(6, 5, 25) for t in traders))
            await asyncio.sleep(0.2)  # replies and ACKs of the last orders are in
            await _wait_for_go()
            t0 = time.time_ns()
            for t in traders:
                t.phase = "after"
            await asyncio.gather(*(t.trade(14, 5, 30) for t in traders))
            await asyncio.gather(*(t.drain() for t in traders))
            print(f"capture phase: {(time.time_ns() - t0) / 1e9:.1f} s", flush=True)
        else:
            # ~12 s of trading so that `tcpdump -G 2` cuts the sessions several times
            await asyncio.gather(*(t.trade(40, 80, 180) for t in traders))
            await asyncio.gather(*(t.drain() for t in traders))
    finally:
        for t in traders:
            await t.close()
    log.write()
