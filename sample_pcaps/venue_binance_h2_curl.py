"""Binance spot REST over HTTP/2 sent by the `curl` command-line tool (libcurl + nghttp2).

How this works: the server is `venue_binance_h2`'s h2-based mock (same engine, same
errors), except that it never refuses a stream: curl retries a REFUSED_STREAM on a new
connection by itself, so one order action would be two requests on the wire. The client
is what many trading desks script with: one `curl --http2 --parallel` process per wave
of 2..7 order actions, all multiplexed on that process's one connection (so one TLS
connection per wave, each with its own handshake). curl's nghttp2 encodes headers its
own way (its own HPACK indexing and Huffman choices, its SETTINGS and WINDOW_UPDATE, a
`user-agent` and `accept` on every request), which is why this capture exists beside the
httpx one. curl writes the NSS key log itself (`SSLKEYLOGFILE`, OpenSSL back end).

Ground truth: order ids, outcomes, status and error codes come from curl's own report of
each transfer (`--write-out '%{json}'` plus the response body it saved). curl gives no
per-transfer wall clock, so `send_*_ns`/`recv_*_ns` are the wave's start plus curl's
`time_pretransfer`/`time_total`: right to ~1 ms, in order, and only used as such.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import urlencode

import venue_binance_h2 as h2mock
from common import (
    BINANCE_API_KEY,
    RunCtx,
    ServerDelay,
    TruthLog,
    TruthRecord,
    announce_ready,
    listen_socket,
    now_ms,
    server_tls,
    wait_for_stop,
)
from venue_binance_rest import _sign

HOST, PORT, VENUE = h2mock.HOST, h2mock.PORT, h2mock.VENUE
CURL_TIMEOUT_S = 30.0


async def serve(ctx: RunCtx) -> None:
    engine, delay = h2mock.Engine(ctx.seed, refuse_every=None), ServerDelay(ctx.seed)
    tls = server_tls(ctx, HOST, alpn=["h2"])
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: h2mock.H2ServerProtocol(engine, delay),
                                      sock=listen_socket(ctx.bind_ip, PORT), ssl=tls)
    announce_ready()
    await wait_for_stop()
    server.close()


# ====================================================================== client
class Action:
    """One order action in a wave: its curl config block and, after the run, its truth."""

    def __init__(self, n: int, kind: str, method: str, path: str, params: dict[str, str],
                 in_body: bool, sig: str) -> None:
        self.n, self.kind, self.method, self.path = n, kind, method, path
        self.params, self.in_body = params, in_body
        encoded = urlencode(params)
        self.url = f"https://{HOST}{path}"
        self.body: str | None = None
        if in_body:
            self.body = f"{encoded}&signature={sig}"
        else:
            self.url = f"{self.url}?{encoded}&signature={sig}"

    def config(self, out: Path, common: list[str]) -> str:
        lines = [*common, f'url = "{self.url}"', f'request = "{self.method}"',
                 f'header = "X-MBX-APIKEY: {BINANCE_API_KEY}"',
                 f'output = "{out / f"{self.n}.json"}"',
                 'write-out = "%{json}\\n"']
        if self.body is not None:
            lines.append(f'data-raw = "{self.body}"')
        return "\n".join(lines) + "\n"


class CurlTrader:
    """Waves of order actions, one `curl --parallel` process (one h2 connection) each."""

    def __init__(self, ctx: RunCtx, log: TruthLog, work: Path) -> None:
        self.ctx, self.log, self.work = ctx, log, work
        self.rng = random.Random(ctx.seed * 100 + 11)
        self.live: list[str] = []
        self.seq = 0
        self.n = 0
        self.conn = 0

    def _cid(self, prefix: str) -> str:
        self.seq += 1
        tail = "".join(self.rng.choices(string.ascii_letters + string.digits, k=6))
        return f"{prefix}curl_{self.seq:04d}_{tail}"

    def _action(self, kind: str, method: str, path: str, params: dict[str, str], *,
                in_body: bool = False) -> Action:
        self.n += 1
        params = params | {"recvWindow": "5000", "timestamp": str(now_ms())}
        sig = self.log.secret(_sign(urlencode(params)))
        return Action(self.n, kind, method, path, params, in_body, sig)

    def new(self, *, too_big: bool = False) -> Action:
        qty = "5.00000000" if too_big else f"{self.rng.choice([0.001, 0.002, 0.005]):.8f}"
        params = {"symbol": "BTCUSDT", "side": self.rng.choice(["BUY", "SELL"]),
                  "type": "LIMIT", "timeInForce": "GTC", "quantity": qty,
                  "price": f"{self.rng.uniform(60000, 70000):.2f}",
                  "newClientOrderId": self._cid("pcf"), "newOrderRespType": "RESULT"}
        return self._action("new", "POST", "/api/v3/order", params,
                            in_body=self.rng.random() < 0.5)

    def cancel(self, target: str) -> Action:
        params = {"symbol": "BTCUSDT", "origClientOrderId": target,
                  "newClientOrderId": self._cid("cxl")}
        return self._action("cancel", "DELETE", "/api/v3/order", params)

    def amend(self, target: str) -> Action:
        params = {"symbol": "BTCUSDT", "origClientOrderId": target,
                  "newClientOrderId": self._cid("amd"), "newQty": "0.00050000"}
        return self._action("amend", "PUT", "/api/v3/order/amend/keepPriority", params)

    async def wave(self, actions: list[Action]) -> None:
        """Run one curl process for `actions`; one truth record per action."""
        self.conn += 1
        out = self.work / f"wave{self.conn}"
        out.mkdir()
        cfg = out / "curl.cfg"
        # `next` resets per-transfer options, so each block repeats them
        common = ["http2", f'cacert = "{self.ctx.pki_dir / "ca.pem"}"',
                  f'resolve = "{HOST}:{PORT}:{self.ctx.connect_ip}"',
                  f"max-time = {CURL_TIMEOUT_S}"]
        cfg.write_text("next\n".join(a.config(out, common) for a in actions))
        cmd = ["curl", "--silent", "--show-error", "--parallel", "--parallel-max", "16",
               "--config", str(cfg)]
        mono0, wall0 = time.monotonic_ns(), time.time_ns()
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={"SSLKEYLOGFILE": str(self.ctx.keylog), "PATH": "/usr/bin:/bin"})
        stdout, stderr = await asyncio.wait_for(proc.communicate(), CURL_TIMEOUT_S + 5)
        if proc.returncode != 0:
            raise RuntimeError(f"curl exited {proc.returncode}: {stderr.decode()[:300]}")
        reports = [json.loads(line) for line in stdout.decode().splitlines() if line]
        by_file = {r["filename_effective"]: r for r in reports}  # URLs can repeat
        for a in actions:
            self._record(a, by_file[str(out / f"{a.n}.json")], out, mono0, wall0)

    def _record(self, a: Action, rep: dict, out: Path, mono0: int, wall0: int) -> None:
        assert rep["http_version"] == "2", rep["http_version"]
        sent, got = int(rep["time_pretransfer"] * 1e9), int(rep["time_total"] * 1e9)
        status = int(rep["http_code"])
        body = json.loads((out / f"{a.n}.json").read_text())
        rec = self.log.add(TruthRecord(
            scenario=self.ctx.scenario, venue=VENUE, endpoint=f"{a.method} {a.path}",
            kind=a.kind, conn_id=self.conn, local_port=int(rep["local_port"]),
            request_id=None, client_order_id=a.params.get("newClientOrderId"),
            orig_client_order_id=a.params.get("origClientOrderId"), status=status,
            send_mono_ns=mono0 + sent, recv_mono_ns=mono0 + got,
            send_wall_ns=wall0 + sent, recv_wall_ns=wall0 + got,
            extra={"params_in": "body" if a.in_body else "query", "http_version": "2",
                   "client": "curl"}))
        rec.outcome = "accepted" if status == 200 else "rejected" if status < 500 else "error"
        if isinstance(body, dict) and "code" in body:
            rec.error_code = body["code"]
        order = body.get("amendedOrder", body) if isinstance(body, dict) else {}
        if "orderId" in order:
            rec.exchange_order_id = str(order["orderId"])
        if rec.outcome == "accepted" and a.kind in ("new", "amend"):
            if a.kind == "amend":
                self.live.remove(a.params["origClientOrderId"])
            self.live.append(a.params["newClientOrderId"])

    async def run(self, waves: int) -> None:
        n = 0
        for _ in range(waves):
            actions = []
            for _ in range(self.rng.randint(2, 7)):
                n += 1
                actions.append(self.new(too_big=(n % 11 == 5)))
            if self.live and self.rng.random() < 0.7:
                actions.append(self.cancel(self.live.pop(self.rng.randrange(len(self.live)))))
            if len(self.live) > 1 and self.rng.random() < 0.5:
                actions.append(self.amend(self.live[self.rng.randrange(len(self.live))]))
            await self.wave(actions)
            await asyncio.sleep(self.rng.uniform(2, 8) / 1000)
        last = [self.cancel("pcfcurl_9999_unknwn")]
        last += [self.cancel(t) for t in self.live]
        self.live.clear()
        await self.wave(last)


async def client(ctx: RunCtx) -> None:
    log = TruthLog(ctx)
    with TemporaryDirectory(prefix="pcf-curl-") as tmp:
        await CurlTrader(ctx, log, Path(tmp)).run(waves=4 if ctx.small else 8)
    log.write()
