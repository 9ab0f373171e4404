"""OKX v5 private WebSocket over TLS 1.2: a `websockets` mock server and client.

How this works: the server listens as `ws.okx.com:8443/ws/v5/private` and speaks
OKX's op protocol: `login` (apiKey, passphrase, timestamp, base64 HMAC-SHA256
sign of "timestamp + GET + /users/self/verify"), `subscribe` to the `orders`
channel, then `order`, `cancel-order` and `amend-order`, each carrying an `id`
that the reply echoes: `{"id","op","code":"0"|"1","msg","data":[{...,"sCode",
"sMsg"}],"inTime","outTime"}`. Accepted actions are followed by an `orders`
channel push (`state` live / canceled, `amendResult` + `reqId` for amends).
Rejects (sCode 51008 insufficient balance, 51400 cancel of an unknown order,
51503 amend of an unknown order) get code "1" and no push, as on OKX. The text
heartbeat "ping" is answered with "pong". The client pins TLS 1.2 with
ECDHE-ECDSA-AES128-GCM-SHA256 and offers permessage-deflate (OKX v5 requires it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import string
import time
from typing import Any

from common import (
    OKX_API_KEY,
    OKX_API_SECRET,
    OKX_PASSPHRASE,
    RunCtx,
    ServerDelay,
    TruthLog,
    TruthRecord,
    announce_ready,
    client_tls,
    listen_socket,
    now_ms,
    now_us,
    pause,
    server_tls,
    wait_for_stop,
)
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from wsrpc import RpcClient, dumps, safe_send, serve_concurrently

HOST, PORT, PATH = "ws.okx.com", 8443, "/ws/v5/private"
VENUE = "okx"
KINDS = {"order": "new", "cancel-order": "cancel", "amend-order": "amend"}
BALANCE_LIMIT_QUOTE = 50_000.0
ALNUM = string.ascii_letters + string.digits


def login_sign(timestamp: str) -> str:
    mac = hmac.new(OKX_API_SECRET.encode(), f"{timestamp}GET/users/self/verify".encode(),
                   hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class OkxSession:
    def __init__(self, ws: ServerConnection, seed: int) -> None:
        self.ws = ws
        self.delay = ServerDelay(seed + 11)
        self.rng = random.Random(seed + 12)
        self.conn_id = "".join(self.rng.choices("0123456789abcdef", k=8))
        self.orders: dict[str, dict[str, Any]] = {}  # by clOrdId
        self.next_ord_id = 2_100_000_000_000_000_000
        self.logged_in = False

    async def handle(self, raw: Any) -> None:
        if raw == "ping":
            await safe_send(self.ws, "pong")
            return
        req = json.loads(raw)
        op, rid, args = req.get("op"), req.get("id"), req.get("args", [{}])
        in_time = str(now_us())
        await self.delay.sleep()
        if op == "login":
            a = args[0]
            ok = (a.get("apiKey") == OKX_API_KEY and a.get("passphrase") == OKX_PASSPHRASE
                  and a.get("sign") == login_sign(a.get("timestamp", "")))
            self.logged_in = ok
            await safe_send(self.ws, dumps({"event": "login" if ok else "error",
                                            "code": "0" if ok else "60009",
                                            "msg": "" if ok else "Login failed.",
                                            "connId": self.conn_id}))
        elif op == "subscribe":
            await safe_send(self.ws, dumps({"id": rid, "event": "subscribe", "arg": args[0],
                                            "connId": self.conn_id}))
        elif op in KINDS and self.logged_in:
            item, push = getattr(self, op.replace("-", "_"))(args[0])
            code = "0" if item["sCode"] == "0" else "1"
            await safe_send(self.ws, dumps({
                "id": rid, "op": op, "code": code,
                "msg": "" if code == "0" else "All operations failed", "data": [item],
                "inTime": in_time, "outTime": str(now_us())}))
            if push is not None:
                await asyncio.sleep(self.delay.sample() / 3)
                await safe_send(self.ws, dumps({"arg": {"channel": "orders", "instType": "ANY",
                                                        "uid": "448808172066"}, "data": [push]}))
        else:
            await safe_send(self.ws, dumps({"id": rid, "event": "error", "code": "60012",
                                            "msg": f"Invalid request: {raw}",
                                            "connId": self.conn_id}))

    def _push(self, order: dict[str, Any], **over: str) -> dict[str, Any]:
        return {"instType": "SPOT", "instId": order["instId"], "ordId": order["ordId"],
                "clOrdId": order["clOrdId"], "tag": "", "px": order["px"], "sz": order["sz"],
                "ordType": "limit", "side": order["side"], "tdMode": "cash",
                "state": order["state"], "accFillSz": "0", "fillPx": "", "fillSz": "0",
                "reqId": "", "amendResult": "", "code": "0", "msg": "",
                "cTime": order["cTime"], "uTime": str(now_ms())} | over

    def order(self, a: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        ts = str(now_ms())
        if float(a["px"]) * float(a["sz"]) > BALANCE_LIMIT_QUOTE:
            return {"clOrdId": a.get("clOrdId", ""), "ordId": "", "tag": "", "ts": ts,
                    "sCode": "51008",
                    "sMsg": "Order failed. Insufficient USDT balance in account."}, None
        self.next_ord_id += self.rng.randint(1, 999)
        order = {"instId": a["instId"], "ordId": str(self.next_ord_id), "clOrdId": a["clOrdId"],
                 "px": a["px"], "sz": a["sz"], "side": a["side"], "state": "live", "cTime": ts}
        self.orders[a["clOrdId"]] = order
        return ({"clOrdId": a["clOrdId"], "ordId": order["ordId"], "tag": "", "ts": ts,
                 "sCode": "0", "sMsg": "Order placed"}, self._push(order))

    def cancel_order(self, a: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        order = self.orders.get(a.get("clOrdId", ""))
        ts = str(now_ms())
        if order is None or order["state"] != "live":
            return {"clOrdId": a.get("clOrdId", ""), "ordId": a.get("ordId", ""), "ts": ts,
                    "sCode": "51400", "sMsg": "Order cancellation failed as the order has been "
                    "filled, canceled or does not exist."}, None
        order["state"] = "canceled"
        return ({"clOrdId": order["clOrdId"], "ordId": order["ordId"], "ts": ts, "sCode": "0",
                 "sMsg": ""}, self._push(order))

    def amend_order(self, a: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        order = self.orders.get(a.get("clOrdId", ""))
        ts = str(now_ms())
        if order is None or order["state"] != "live":
            return {"clOrdId": a.get("clOrdId", ""), "ordId": "", "reqId": a.get("reqId", ""),
                    "ts": ts, "sCode": "51503", "sMsg": "Order modification failed as the "
                    "order has been filled, canceled or does not exist."}, None
        order.update(px=a.get("newPx", order["px"]), sz=a.get("newSz", order["sz"]))
        return ({"clOrdId": order["clOrdId"], "ordId": order["ordId"],
                 "reqId": a.get("reqId", ""), "ts": ts, "sCode": "0", "sMsg": ""},
                self._push(order, amendResult="0", reqId=a.get("reqId", "")))


async def serve(ctx: RunCtx) -> None:
    async def handler(ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != PATH:
            await ws.close(1008, "unknown path")
            return
        await serve_concurrently(ws, OkxSession(ws, ctx.seed).handle)

    async with ws_serve(handler, sock=listen_socket(ctx.bind_ip, PORT),
                        ssl=server_tls(ctx, HOST), ping_interval=None):
        announce_ready()
        await wait_for_stop()


# ====================================================================== client
class OkxTrader:
    def __init__(self, ctx: RunCtx, log: TruthLog, rpc: RpcClient) -> None:
        self.ctx, self.log, self.rpc = ctx, log, rpc
        self.rng = random.Random(ctx.seed * 37)
        self.live: list[str] = []
        self.seq = 0

    def _id(self) -> str:
        self.seq += 1
        return f"{self.seq}{''.join(self.rng.choices(ALNUM, k=5))}"

    async def action(self, op: str, arg: dict[str, Any]) -> None:
        rid = self._id()
        cl = arg.get("clOrdId")
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=op, kind=KINDS[op], conn_id=1,
            local_port=0, request_id=rid, client_order_id=cl if op == "order" else None,
            orig_client_order_id=cl if op != "order" else None,
            extra={"amend_req_id": arg["reqId"]} if "reqId" in arg else {}))
        reply = await self.rpc.call(rid, {"id": rid, "op": op, "args": [arg]}, rec)
        item = (reply.get("data") or [{}])[0]
        rec.status, rec.error_code = reply.get("code"), item.get("sCode")
        rec.outcome = "accepted" if item.get("sCode") == "0" else "rejected"
        rec.exchange_order_id = item.get("ordId") or None
        if rec.outcome == "accepted" and op == "order":
            self.live.append(cl or "")

    def _next(self, step: int) -> tuple[str, dict[str, Any]]:
        if step % 4 == 3 and self.live:
            target = self.live.pop(self.rng.randrange(len(self.live)))
            return "cancel-order", {"instId": "BTC-USDT", "clOrdId": target}
        if step % 5 == 1 and self.live:
            return "amend-order", {"instId": "BTC-USDT", "clOrdId": self.rng.choice(self.live),
                                   "newSz": "0.0005", "reqId": f"amd{step:03d}"}
        if step == 13:
            return "cancel-order", {"instId": "BTC-USDT", "clOrdId": "pcfokxGone0000"}
        if step == 22:
            return "amend-order", {"instId": "BTC-USDT", "clOrdId": "pcfokxGone0001",
                                   "newPx": "61000.1", "reqId": "amdgone"}
        sz = "3" if step % 9 == 7 else self.rng.choice(["0.001", "0.002", "0.005"])
        return "order", {"instId": "BTC-USDT", "tdMode": "cash",
                         "clOrdId": f"pcfokx{step:04d}{''.join(self.rng.choices(ALNUM, k=4))}",
                         "side": self.rng.choice(["buy", "sell"]), "ordType": "limit",
                         "px": f"{self.rng.uniform(60000, 70000):.1f}", "sz": sz}

    async def run(self, steps: int) -> None:
        ts = f"{time.time():.3f}"
        login = {"apiKey": OKX_API_KEY, "passphrase": OKX_PASSPHRASE, "timestamp": ts,
                 "sign": self.log.secret(login_sign(ts))}
        reply = await self.rpc.call("login", {"op": "login", "args": [login]})
        if reply.get("code") != "0":
            raise RuntimeError(f"okx login failed: {reply}")
        await self.rpc.call("sub1", {"id": "sub1", "op": "subscribe",
                                     "args": [{"channel": "orders", "instType": "ANY"}]})
        step = 0
        while step < steps:
            burst = []
            for _ in range(self.rng.choice([1, 1, 2])):
                burst.append(self.action(*self._next(step)))
                step += 1
            await asyncio.gather(*burst)
            if step % 15 == 0:
                await self.rpc.ws.send("ping")
            await pause(self.rng, 2.0, 10.0)
        while self.live:
            await self.action("cancel-order", {"instId": "BTC-USDT", "clOrdId": self.live.pop()})


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    pushes: list[Any] = []
    async with connect(f"wss://{HOST}:{PORT}{PATH}", ssl=client_tls(ctx, tls12=True),
                       host=ctx.connect_ip, port=PORT, proxy=None) as ws:
        rpc = RpcClient(ws, lambda m: m.get("id") or m.get("event"), pushes.append)
        await OkxTrader(ctx, log, rpc).run(steps=44)
        await asyncio.sleep(0.05)
        await rpc.close()
    log.write()
    print(f"okx: {len(pushes)} pushes", flush=True)
