"""Deribit JSON-RPC 2.0 over WebSocket (TLS 1.3, no compression): mock server and client.

How this works: the server listens as `www.deribit.com:443/ws/api/v2` and answers
JSON-RPC 2.0 requests `{"jsonrpc":"2.0","id","method","params"}` with either
`{"jsonrpc","id","result",...}` or `{"jsonrpc","id","error":{"code","message"}}`,
always with Deribit's gateway times `usIn`, `usOut`, `usDiff` (µs). Methods:
`public/auth` (grant_type client_credentials; the fake client_secret must match),
`private/subscribe` to `user.orders.BTC-PERPETUAL.raw`, `private/buy`,
`private/sell`, `private/cancel`, `private/edit`. Errors: 10009 not_enough_funds,
11044 not_open_order, 13009 unauthorized. Accepted actions are followed by a
`subscription` notification with the order. Deribit documents no
permessage-deflate, so this capture is uncompressed on purpose (tshark can decode
every message). The client reuses a few ids once they have been answered and keeps
up to two requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from typing import Any

from common import (
    DERIBIT_ACCESS_TOKEN,
    DERIBIT_CLIENT_ID,
    DERIBIT_CLIENT_SECRET,
    DERIBIT_REFRESH_TOKEN,
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

HOST, PORT, PATH = "www.deribit.com", 443, "/ws/api/v2"
VENUE = "deribit"
KINDS = {"private/buy": "new", "private/sell": "new", "private/cancel": "cancel",
         "private/edit": "amend"}
CHANNEL = "user.orders.BTC-PERPETUAL.raw"
MAX_AMOUNT = 50_000  # USD contracts above which buys fail with not_enough_funds
ALNUM = string.ascii_letters + string.digits


class DeribitSession:
    def __init__(self, ws: ServerConnection, seed: int) -> None:
        self.ws = ws
        self.delay = ServerDelay(seed + 21)
        self.rng = random.Random(seed + 22)
        self.orders: dict[str, dict[str, Any]] = {}
        self.next_id = 31_000_000_000
        self.authed = False
        self.subscribed = False

    async def _send(self, rid: Any, us_in: int, result: Any = None,
                    error: tuple[int, str] | None = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if error:
            msg["error"] = {"code": error[0], "message": error[1]}
        else:
            msg["result"] = result
        us_out = now_us()
        msg |= {"usIn": us_in, "usOut": us_out, "usDiff": us_out - us_in, "testnet": False}
        await safe_send(self.ws, dumps(msg))

    def _order(self, o: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": o["order_id"], "label": o["label"], "instrument_name": o["instrument"],
                "direction": o["direction"], "order_type": "limit", "order_state": o["state"],
                "price": o["price"], "amount": o["amount"], "filled_amount": 0,
                "average_price": 0, "time_in_force": "good_til_cancelled", "post_only": False,
                "creation_timestamp": o["created"], "last_update_timestamp": now_ms(),
                "api": True, "replaced": o.get("replaced", False)}

    async def _notify(self, o: dict[str, Any]) -> None:
        if self.subscribed:
            await asyncio.sleep(self.delay.sample() / 3)
            await safe_send(self.ws, dumps({"jsonrpc": "2.0", "method": "subscription",
                                            "params": {"channel": CHANNEL,
                                                       "data": self._order(o)}}))

    async def trade(self, method: str, p: dict[str, Any]) -> tuple[Any, tuple[int, str] | None,
                                                                    dict[str, Any] | None]:
        if method in ("private/buy", "private/sell"):
            if float(p["amount"]) > MAX_AMOUNT:
                return None, (10009, "not_enough_funds"), None
            self.next_id += self.rng.randint(1, 99)
            o = {"order_id": str(self.next_id), "label": p.get("label", ""),
                 "instrument": p["instrument_name"], "price": float(p["price"]),
                 "direction": method.split("/")[1], "amount": float(p["amount"]),
                 "state": "open", "created": now_ms()}
            self.orders[o["order_id"]] = o
            return {"order": self._order(o), "trades": []}, None, o
        o = self.orders.get(str(p.get("order_id")))
        if o is None or o["state"] != "open":
            return None, (11044, "not_open_order"), None
        if method == "private/cancel":
            o["state"] = "cancelled"
            return self._order(o), None, o
        o.update(amount=float(p.get("amount", o["amount"])),
                 price=float(p.get("price", o["price"])), replaced=True)
        return {"order": self._order(o), "trades": []}, None, o

    async def handle(self, raw: Any) -> None:
        us_in = now_us()
        req = json.loads(raw)
        rid, method, params = req.get("id"), req.get("method", ""), req.get("params", {})
        await self.delay.sleep()
        if method == "public/auth":
            ok = (params.get("grant_type") == "client_credentials"
                  and params.get("client_id") == DERIBIT_CLIENT_ID
                  and params.get("client_secret") == DERIBIT_CLIENT_SECRET)
            self.authed = ok
            result = {"access_token": DERIBIT_ACCESS_TOKEN, "expires_in": 900,
                      "refresh_token": DERIBIT_REFRESH_TOKEN,
                      "scope": "connection trade:read_write",
                      "token_type": "bearer", "enabled_features": []}
            await self._send(rid, us_in, result if ok else None,
                             None if ok else (13004, "invalid_credentials"))
        elif method == "public/test":
            await self._send(rid, us_in, {"version": "1.2.26"})
        elif not self.authed:
            await self._send(rid, us_in, error=(13009, "unauthorized"))
        elif method == "private/subscribe":
            self.subscribed = True
            await self._send(rid, us_in, params.get("channels", []))
        elif method in KINDS:
            result, error, order = await self.trade(method, params)
            await self._send(rid, us_in, result, error)
            if order is not None:
                await self._notify(order)
        else:
            await self._send(rid, us_in, error=(-32601, "Method not found"))


async def serve(ctx: RunCtx) -> None:
    async def handler(ws: ServerConnection) -> None:
        if ws.request is None or ws.request.path != PATH:
            await ws.close(1008, "unknown path")
            return
        await serve_concurrently(ws, DeribitSession(ws, ctx.seed).handle)

    async with ws_serve(handler, sock=listen_socket(ctx.bind_ip, PORT), compression=None,
                        ssl=server_tls(ctx, HOST), ping_interval=None):
        announce_ready()
        await wait_for_stop()


# ====================================================================== client
class DeribitTrader:
    def __init__(self, ctx: RunCtx, log: TruthLog, rpc: RpcClient) -> None:
        self.ctx, self.log, self.rpc = ctx, log, rpc
        self.rng = random.Random(ctx.seed * 41)
        self.live: list[tuple[str, str]] = []  # (order_id, label)
        self.next_rid = 100
        self.answered: list[int] = []
        self.inflight: set[int] = set()

    def _rid(self) -> int:
        free = [r for r in self.answered[-5:] if r not in self.inflight]
        if free and self.rng.random() < 0.12:
            return self.rng.choice(free)  # reuse an answered id
        self.next_rid += 1
        return self.next_rid

    async def action(self, method: str, params: dict[str, Any], label: str | None,
                     orig: str | None) -> dict[str, Any]:
        rid = self._rid()
        self.inflight.add(rid)
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=method, kind=KINDS[method],
            conn_id=1, local_port=0, request_id=rid, client_order_id=label,
            orig_client_order_id=orig))
        reply = await self.rpc.call(rid, {"jsonrpc": "2.0", "id": rid, "method": method,
                                          "params": params}, rec)
        self.inflight.discard(rid)
        self.answered.append(rid)
        if "error" in reply:
            rec.outcome, rec.error_code = "rejected", reply["error"].get("code")
            return reply
        rec.outcome = "accepted"
        result = reply.get("result") or {}
        order = result.get("order", result)
        rec.exchange_order_id = order.get("order_id")
        return reply

    async def new(self, step: int) -> None:
        method = self.rng.choice(["private/buy", "private/sell"])
        label = f"pcfdrb{step:04d}{''.join(self.rng.choices(ALNUM, k=4))}"
        amount = 90_000 if step % 9 == 4 else self.rng.choice([10, 20, 50, 100])
        reply = await self.action(method, {"instrument_name": "BTC-PERPETUAL", "amount": amount,
                                           "type": "limit", "label": label,
                                           "price": round(self.rng.uniform(60000, 70000) * 2) / 2},
                                  label, None)
        if "result" in reply:
            self.live.append((reply["result"]["order"]["order_id"], label))

    async def step(self, step: int) -> None:
        if step % 4 == 3 and self.live:
            oid, label = self.live.pop(self.rng.randrange(len(self.live)))
            await self.action("private/cancel", {"order_id": oid}, None, label)
        elif step % 5 == 2 and self.live:
            oid, label = self.rng.choice(self.live)
            await self.action("private/edit", {"order_id": oid, "amount": 10,
                                               "price": round(self.rng.uniform(6e4, 7e4))},
                              None, label)
        elif step in (10, 26):
            await self.action("private/cancel", {"order_id": "31000000001"}, None, None)
        else:
            await self.new(step)

    async def run(self, steps: int) -> None:
        auth = await self.rpc.call(1, {"jsonrpc": "2.0", "id": 1, "method": "public/auth",
                                       "params": {"grant_type": "client_credentials",
                                                  "client_id": DERIBIT_CLIENT_ID,
                                                  "client_secret": DERIBIT_CLIENT_SECRET}})
        if "result" not in auth:
            raise RuntimeError(f"deribit auth failed: {auth}")
        await self.rpc.call(2, {"jsonrpc": "2.0", "id": 2, "method": "private/subscribe",
                                "params": {"channels": [CHANNEL]}})
        await self.rpc.call(3, {"jsonrpc": "2.0", "id": 3, "method": "public/test",
                                "params": {}})
        step = 0
        while step < steps:
            width = self.rng.choice([1, 1, 2])
            await asyncio.gather(*(self.step(step + i) for i in range(width)))
            step += width
            await pause(self.rng, 2.0, 10.0)
        while self.live:
            oid, label = self.live.pop()
            await self.action("private/cancel", {"order_id": oid}, None, label)


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    pushes: list[Any] = []
    async with connect(f"wss://{HOST}{PATH}", ssl=client_tls(ctx), host=ctx.connect_ip,
                       port=PORT, proxy=None, compression=None) as ws:
        rpc = RpcClient(ws, lambda m: m.get("id"), pushes.append)
        await DeribitTrader(ctx, log, rpc).run(steps=44)
        await asyncio.sleep(0.05)
        await rpc.close()
    log.write()
    print(f"deribit: {len(pushes)} notifications", flush=True)
