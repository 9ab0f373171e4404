"""Binance spot REST over HTTP/2: an h2-based mock server and an httpx (http2=True) client.

How this works: the server is an asyncio TLS server (ALPN `h2` only) driving the `h2`
library's state machine directly, so the capture shows what a real HTTP/2 front end
sends, including the frames an ordinary ASGI server never lets an application choose:
every `REFUSE_EVERY`-th new order is refused with RST_STREAM(REFUSED_STREAM) (what a
front end under load does); the client's close is a GOAWAY. Order
entry is the same mock engine as `venue_binance_rest`: `POST /api/v3/order` (new),
`DELETE /api/v3/order` (cancel), `PUT /api/v3/order/amend/keepPriority` (amend),
`GET /api/v3/time`, `GET /api/v3/exchangeInfo` (gzip); the `X-MBX-APIKEY` header and
the HMAC-SHA256 `signature` are checked; errors are Binance's `{"code","msg"}` JSON
(-2010 insufficient balance 400, -2011 unknown order 400, -1007 timeout 503). Each
request is answered after its own lognormal delay, so responses come back out of
request order on the one connection.

The client is `httpx.AsyncClient(http2=True)` (httpcore + h2 + hpack), one connection,
sending waves of 2..7 concurrent order actions (several streams in flight), with the
real host name as SNI and `:authority` while dialling the mock's address. One truth
record per order action; a refused stream is outcome `error` with error_code
`REFUSED_STREAM` and no status.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import ssl
import string
from typing import Any
from urllib.parse import parse_qsl, urlencode

import h2.config
import h2.connection
import h2.errors
import h2.events
import httpx
from common import (
    BINANCE_API_KEY,
    RunCtx,
    ServerDelay,
    TruthLog,
    TruthRecord,
    announce_ready,
    client_tls,
    listen_socket,
    now_ms,
    server_tls,
    wait_for_stop,
)
from venue_binance_rest import _sign, _strip_signature

HOST = "api.binance.com"
PORT = 443
VENUE = "binance"
BALANCE_LIMIT_QUOTE = 50_000.0
TIMEOUT_EVERY = 25  # new order 17, 42, ... answers -1007 / 503
REFUSE_EVERY = 13  # new order 6, 19, 32, ... is refused with RST_STREAM(REFUSED_STREAM)


class Engine:
    """The mock matching engine: (method, path, params) -> (status, JSON) or a refusal."""

    def __init__(self, seed: int, refuse_every: int | None = REFUSE_EVERY) -> None:
        self.refuse_every = refuse_every  # None: never refuse (clients that retry refusals)
        self.rng = random.Random(seed + 1)
        self.orders: dict[str, dict[str, Any]] = {}
        self.next_order_id = 5_000_000_000 + seed * 1000
        self.new_count = 0

    def handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any] | None:
        if method == "POST" and path == "/api/v3/order":
            return self.new(params)
        if method == "DELETE" and path == "/api/v3/order":
            return self.cancel(params)
        if method == "PUT" and path == "/api/v3/order/amend/keepPriority":
            return self.amend(params)
        if path == "/api/v3/time":
            return 200, {"serverTime": now_ms()}
        return 404, {"code": -1000, "msg": "Unknown path."}

    def _view(self, order: dict[str, Any], **over: Any) -> dict[str, Any]:
        view = {"symbol": order["symbol"], "orderId": order["orderId"], "orderListId": -1,
                "clientOrderId": order["clientOrderId"], "transactTime": now_ms(),
                "price": order["price"], "origQty": order["origQty"],
                "executedQty": "0.00000000", "status": order["status"], "timeInForce": "GTC",
                "type": "LIMIT", "side": order["side"]}
        view.update(over)
        return view

    def new(self, params: dict[str, str]) -> tuple[int, Any] | None:
        self.new_count += 1
        if self.refuse_every and self.new_count % self.refuse_every == 6:
            return None
        if self.new_count % TIMEOUT_EVERY == 17:
            return 503, {"code": -1007, "msg": "Timeout waiting for response from backend "
                         "server. Send status unknown; execution status unknown."}
        if float(params["quantity"]) * float(params["price"]) > BALANCE_LIMIT_QUOTE:
            return 400, {"code": -2010, "msg": "Account has insufficient balance for "
                         "requested action."}
        self.next_order_id += self.rng.randint(1, 9)
        order = {"symbol": params["symbol"], "orderId": self.next_order_id,
                 "clientOrderId": params["newClientOrderId"],
                 "price": f"{float(params['price']):.8f}",
                 "origQty": f"{float(params['quantity']):.8f}", "side": params["side"],
                 "status": "NEW"}
        self.orders[order["clientOrderId"]] = order
        return 200, self._view(order, workingTime=now_ms(), fills=[])

    def cancel(self, params: dict[str, str]) -> tuple[int, Any]:
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        order["status"] = "CANCELED"
        return 200, self._view(order, origClientOrderId=order["clientOrderId"],
                               clientOrderId=params["newClientOrderId"])

    def amend(self, params: dict[str, str]) -> tuple[int, Any]:
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order["status"] != "NEW":
            return 400, {"code": -2011, "msg": "Unknown order sent."}
        new_id = params["newClientOrderId"]
        del self.orders[order["clientOrderId"]]
        order.update(clientOrderId=new_id, origQty=f"{float(params['newQty']):.8f}")
        self.orders[new_id] = order
        return 200, {"transactTime": now_ms(), "executionId": self.rng.randint(1, 10**6),
                     "amendedOrder": self._view(order,
                                                origClientOrderId=params["origClientOrderId"])}


class H2ServerProtocol(asyncio.Protocol):
    """One HTTP/2 connection, driven by h2's state machine (sans-IO) on asyncio."""

    def __init__(self, engine: Engine, delay: ServerDelay) -> None:
        self.engine, self.delay = engine, delay
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.rng = random.Random(engine.rng.random())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                self.requests[ev.stream_id] = (dict(ev.headers), bytearray())
            elif isinstance(ev, h2.events.DataReceived):
                self.requests[ev.stream_id][1].extend(ev.data)
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                asyncio.get_running_loop().create_task(self.answer(ev.stream_id))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.conn.close_connection()
        self._flush()

    async def answer(self, sid: int) -> None:
        headers, body = self.requests.pop(sid)
        method, target = headers[":method"], headers[":path"]
        path, _, query = target.partition("?")
        await self.delay.sleep()
        if path == "/api/v3/exchangeInfo":
            return self._send(sid, 200, {"timezone": "UTC", "serverTime": now_ms(),
                                         "symbols": [{"symbol": "BTCUSDT", "filters": [
                                             {"filterType": f"F{i}", "tickSize": "0.01"}
                                             for i in range(40)]}]}, gzip_it=True)
        if headers.get("x-mbx-apikey") != BINANCE_API_KEY:
            return self._send(sid, 401, {"code": -2015, "msg": "Invalid API-key."})
        query_rest, qsig = _strip_signature(query)
        body_rest, bsig = _strip_signature(body.decode())
        if path != "/api/v3/time" and (qsig or bsig) != _sign(query_rest + body_rest):
            return self._send(sid, 400, {"code": -1022, "msg": "Signature is not valid."})
        params = dict(parse_qsl(query_rest)) | dict(parse_qsl(body_rest))
        answer = self.engine.handle(method, path, params)
        if answer is None:
            self.conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            self._flush()
            return None
        return self._send(sid, *answer)

    def _send(self, sid: int, status: int, payload: Any, *, gzip_it: bool = False) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = [(":status", str(status)), ("content-type", "application/json")]
        if gzip_it:
            data = gzip.compress(data)
            headers.append(("content-encoding", "gzip"))
        headers += [("content-length", str(len(data))),
                    ("x-mbx-uuid", "".join(self.rng.choices("0123456789abcdef", k=32))),
                    ("x-mbx-used-weight-1m", str(self.rng.randint(2, 40)))]
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, data, end_stream=True)
        self._flush()


async def serve(ctx: RunCtx) -> None:
    engine, delay = Engine(ctx.seed), ServerDelay(ctx.seed)
    tls = server_tls(ctx, HOST, alpn=["h2"])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: H2ServerProtocol(engine, delay),
                                      sock=listen_socket(ctx.bind_ip, PORT), ssl=tls)
    announce_ready()
    await wait_for_stop()
    server.close()


# ====================================================================== client
class H2Trader:
    """Order flow over one HTTP/2 connection, several requests in flight."""

    def __init__(self, ctx: RunCtx, log: TruthLog, client: httpx.AsyncClient) -> None:
        self.ctx, self.log, self.client = ctx, log, client
        self.rng = random.Random(ctx.seed * 100 + 7)
        self.live: list[str] = []
        self.seq = 0
        self.local_port = 0

    def _cid(self, prefix: str) -> str:
        self.seq += 1
        tail = "".join(self.rng.choices(string.ascii_letters + string.digits, k=6))
        return f"{prefix}h2_{self.seq:04d}_{tail}"

    async def call(self, method: str, path: str, params: dict[str, str], *,
                   in_body: bool = False) -> httpx.Response:
        params = params | {"recvWindow": "5000", "timestamp": str(now_ms())}
        encoded = urlencode(params)
        sig = self.log.secret(_sign(encoded))
        headers = {"X-MBX-APIKEY": BINANCE_API_KEY, "Host": HOST}
        url = f"https://{self.ctx.connect_ip}{path}"
        content: bytes | None = None
        if in_body:
            content = f"{encoded}&signature={sig}".encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            url = f"{url}?{encoded}&signature={sig}"
        resp = await self.client.request(method, url, content=content, headers=headers,
                                         extensions={"sni_hostname": HOST})
        stream = resp.extensions.get("network_stream")
        if stream is not None and not self.local_port:
            self.local_port = stream.get_extra_info("client_addr")[1]
        assert resp.http_version == "HTTP/2", resp.http_version
        return resp

    async def action(self, kind: str, method: str, path: str, params: dict[str, str],
                     *, in_body: bool = False) -> TruthRecord:
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=f"{method} {path}", kind=kind,
            conn_id=1, local_port=self.local_port, request_id=None,
            client_order_id=params.get("newClientOrderId"),
            orig_client_order_id=params.get("origClientOrderId"),
            extra={"params_in": "body" if in_body else "query", "http_version": "2"}))
        rec.mark_sent()
        try:
            resp = await self.call(method, path, params, in_body=in_body)
        except httpx.RemoteProtocolError as err:  # RST_STREAM from the server
            rec.mark_received()
            rec.outcome, rec.error_code = "error", "REFUSED_STREAM"
            rec.extra["reset"] = str(err)[:80]
            return rec
        rec.mark_received()
        body = resp.json()
        rec.local_port, rec.status = self.local_port, resp.status_code
        status = resp.status_code
        rec.outcome = "accepted" if status == 200 else "rejected" if status < 500 else "error"
        if isinstance(body, dict) and "code" in body:
            rec.error_code = body["code"]
        order = body.get("amendedOrder", body) if isinstance(body, dict) else {}
        if "orderId" in order:
            rec.exchange_order_id = str(order["orderId"])
        return rec

    async def new(self, *, too_big: bool = False) -> None:
        cid = self._cid("pcf")
        qty = "5.00000000" if too_big else f"{self.rng.choice([0.001, 0.002, 0.005]):.8f}"
        params = {"symbol": "BTCUSDT", "side": self.rng.choice(["BUY", "SELL"]),
                  "type": "LIMIT", "timeInForce": "GTC", "quantity": qty,
                  "price": f"{self.rng.uniform(60000, 70000):.2f}", "newClientOrderId": cid,
                  "newOrderRespType": "RESULT"}
        rec = await self.action("new", "POST", "/api/v3/order", params,
                                in_body=self.rng.random() < 0.5)
        if rec.outcome == "accepted":
            self.live.append(cid)

    async def cancel(self, target: str) -> None:
        params = {"symbol": "BTCUSDT", "origClientOrderId": target,
                  "newClientOrderId": self._cid("cxl")}
        await self.action("cancel", "DELETE", "/api/v3/order", params)

    async def amend(self, idx: int) -> None:
        new_id = self._cid("amd")
        params = {"symbol": "BTCUSDT", "origClientOrderId": self.live[idx],
                  "newClientOrderId": new_id, "newQty": "0.00050000"}
        rec = await self.action("amend", "PUT", "/api/v3/order/amend/keepPriority", params)
        if rec.outcome == "accepted":
            self.live[idx] = new_id

    async def run(self, waves: int) -> None:
        await self.call("GET", "/api/v3/time", {})
        await self.client.get(f"https://{self.ctx.connect_ip}/api/v3/exchangeInfo",
                              headers={"Host": HOST}, extensions={"sni_hostname": HOST})
        n = 0
        for _ in range(waves):
            width = self.rng.randint(2, 7)
            jobs = []
            for _ in range(width):
                n += 1
                jobs.append(self.new(too_big=(n % 11 == 5)))
            if self.live and self.rng.random() < 0.6:
                jobs.append(self.cancel(self.live.pop(self.rng.randrange(len(self.live)))))
            if len(self.live) > 1 and self.rng.random() < 0.4:
                jobs.append(self.amend(self.rng.randrange(len(self.live))))
            await asyncio.gather(*jobs)  # several streams in flight at once
            await asyncio.sleep(self.rng.uniform(2, 8) / 1000)
        await self.cancel("pcfh2_9999_unknwn")
        while self.live:
            batch = [self.live.pop() for _ in range(min(4, len(self.live)))]
            await asyncio.gather(*(self.cancel(t) for t in batch))


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    tls: ssl.SSLContext = client_tls(ctx, alpn=["h2"])
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(http2=True, verify=tls, limits=limits, timeout=10.0) as http:
        await H2Trader(ctx, log, http).run(waves=6 if ctx.small else 12)
    log.write()
