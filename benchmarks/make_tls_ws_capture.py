"""Record real TLS 1.3 WebSocket market data and order traffic, with its key log.

How this works: everything runs inside a private network namespace whose loopback
has an Ethernet MTU (1500) and ``gso_max_segs 1``, so the capture holds real
1448-byte TCP segments, and nothing touches the host's own network. Inside it:

1. ``tcpdump -i lo -B 65536 --time-stamp-precision=nano -w OUT`` starts first;
2. a ``websockets`` server (a child process) speaks TLS 1.3 only, with the
   default permessage-deflate, on 127.0.0.1: ``/stream`` pushes Binance-like
   depth updates and trades (now and then a large snapshot, sent as a
   fragmented message), ``/ws-api/v3`` answers ``order.place`` requests with
   ``{"id", "status": 200, "result"}`` and an ``executionReport`` event;
3. the client (this process) opens ``--md-conns`` market-data connections (SNI
   ``stream.binance.com``) and one order connection (SNI ``ws-api.binance.com``),
   writes the NSS key log through ``SSLContext.keylog_filename``, and stops when
   the server has sent ``--messages`` market-data messages or after
   ``--max-seconds``;
4. tcpdump is stopped with SIGINT and its "dropped by kernel" count is reported.

With ``--rest-conns N`` the server also answers Binance-like REST orders
(``POST /api/v3/order``, aiohttp, TLS 1.3, on ``--port`` + 1) and the client opens N
keep-alive REST order connections (SNI and Host ``api.binance.com``), the k-th
``--rest-stagger`` seconds after the first, each sending orders until the market
data ends (issue 15's figures: "2 of 3 handshakes before the capture").

Usage (root: network namespaces and tcpdump):
    python benchmarks/make_tls_ws_capture.py --out ws.pcap [--messages 400000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")
MD_BURST = 8  # market-data messages per event-loop turn, then a short sleep
MD_PAUSE_S = 0.0004
SNAPSHOT_EVERY = 2_000  # one large fragmented snapshot per this many updates
TCPDUMP_FLUSH_S = 2.5  # wait this long after the traffic before stopping tcpdump


# ----------------------------------------------------------------------------------
# TLS material

def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for the venues' host names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mock-exchange")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName(h) for h in (
        "stream.binance.com", "ws-api.binance.com", "api.binance.com", "localhost")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(san, critical=False).sign(key, hashes.SHA256()))
    cpath, kpath = directory / "cert.pem", directory / "key.pem"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


# ----------------------------------------------------------------------------------
# server (child process)

def _depth(rng: random.Random, first: int, last: int, sym: str) -> str:
    """A depth update covering update ids ``first``..``last``; ``pu``: the previous
    update's ``u`` (Binance futures carry it; spot's rule is ``U`` = previous ``u`` + 1,
    which holds too)."""
    px = 67_000 + rng.uniform(-300, 300)
    lvls = rng.randint(1, 6)
    bids = [[f"{px - k * 0.1:.2f}", f"{rng.random():.5f}"] for k in range(lvls)]
    asks = [[f"{px + k * 0.1:.2f}", f"{rng.random():.5f}"] for k in range(rng.randint(1, 6))]
    return json.dumps({"stream": f"{sym.lower()}@depth@100ms", "data": {
        "e": "depthUpdate", "E": int(time.time() * 1000), "s": sym, "U": first,
        "u": last, "pu": first - 1, "b": bids, "a": asks}}, separators=(",", ":"))


def _trade(rng: random.Random, trade_id: int, sym: str) -> str:
    return json.dumps({"stream": f"{sym.lower()}@trade", "data": {
        "e": "trade", "E": int(time.time() * 1000), "s": sym, "t": trade_id,
        "p": f"{67_000 + rng.uniform(-300, 300):.2f}", "q": f"{rng.random():.5f}",
        "T": int(time.time() * 1000), "m": rng.random() < 0.5}}, separators=(",", ":"))


async def _stream(ws: ServerConnection, per_conn: int, seed: int) -> None:
    rng = random.Random(seed)
    await ws.recv()  # the SUBSCRIBE request
    sym = SYMBOLS[seed % len(SYMBOLS)]
    # a consistent feed, as a real one is: each depth update starts where the one
    # before it ended (U = previous u + 1, pu = previous u), trade ids count up by one
    last_u, trade_id = 40_000_000_000 + seed * 1_000_000_000, 1_000_000
    for i in range(per_conn):
        if i % SNAPSHOT_EVERY == SNAPSHOT_EVERY - 1:
            snap = json.dumps({"lastUpdateId": last_u, "bids": [[f"{67000 - k:.2f}", "1.0"]
                                                                for k in range(400)]})
            parts = [snap[k:k + 4096] for k in range(0, len(snap), 4096)]
            await ws.send(iter(parts))  # a fragmented (compressed) message
        elif rng.random() < 0.3:
            trade_id += 1
            await ws.send(_trade(rng, trade_id, sym))
        else:
            first, last_u = last_u + 1, last_u + rng.randint(1, 4)
            await ws.send(_depth(rng, first, last_u, sym))
        if i % MD_BURST == MD_BURST - 1:
            await asyncio.sleep(MD_PAUSE_S)
    await ws.close()


async def _orders(ws: ServerConnection, seed: int) -> None:
    rng = random.Random(seed)
    order_id = 12_510_000_000
    async for raw in ws:
        req = json.loads(raw)
        order_id += 1
        p = req.get("params", {})
        await asyncio.sleep(rng.choice((0, 0, 0, 0.001, 0.002)))  # exchange "processing"
        await ws.send(json.dumps({"id": req["id"], "status": 200, "result": {
            "symbol": p.get("symbol"), "orderId": order_id, "orderListId": -1,
            "clientOrderId": p.get("newClientOrderId"),
            "transactTime": int(time.time() * 1000), "status": "NEW"}},
            separators=(",", ":")))
        await ws.send(json.dumps({"subscriptionId": 0, "event": {
            "e": "executionReport", "E": int(time.time() * 1000), "s": p.get("symbol"),
            "c": p.get("newClientOrderId"), "x": "NEW", "X": "NEW", "i": order_id}},
            separators=(",", ":")))


async def serve(port: int, cert: str, key: str, per_conn: int) -> None:
    from websockets.asyncio.server import serve as ws_serve

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    seeds = iter(range(1, 1_000_000))

    async def handler(ws: ServerConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        path = ws.request.path
        try:
            if path.startswith("/ws-api"):
                await _orders(ws, next(seeds))
            else:
                await _stream(ws, per_conn, next(seeds))
        except ConnectionClosed:
            pass  # the client stopped at --max-seconds: the capture's expected end

    runner = await _rest_server(port + 1, ctx)
    async with ws_serve(handler, "127.0.0.1", port, ssl=ctx, max_size=None):
        print("ready", flush=True)
        await asyncio.get_running_loop().create_future()  # until killed
    await runner.cleanup()


async def _rest_server(port: int, ctx: ssl.SSLContext) -> object:
    """Binance-like ``POST /api/v3/order`` (form body in, order JSON out)."""
    from aiohttp import web

    rng = random.Random(7)
    state = {"order_id": 4_000_000_000}

    async def order(request: web.Request) -> web.Response:
        form = await request.post()
        state["order_id"] += 1
        await asyncio.sleep(rng.choice((0, 0, 0.001, 0.002)))
        return web.json_response({
            "symbol": form.get("symbol"), "orderId": state["order_id"], "orderListId": -1,
            "clientOrderId": form.get("newClientOrderId"),
            "transactTime": int(time.time() * 1000), "status": "NEW"})

    app = web.Application()
    app.router.add_post("/api/v3/order", order)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    return runner


# ----------------------------------------------------------------------------------
# client (this process)

async def client(port: int, keylog: str, md_conns: int, max_seconds: float,
                 rest_conns: int = 0, rest_stagger: float = 0.0) -> dict[str, int]:
    from websockets.asyncio.client import connect

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the mock's self-signed certificate
    ctx.keylog_filename = keylog
    counts = {"md_messages": 0, "orders": 0, "acks": 0, "rest_orders": 0, "rest_acks": 0}
    done = asyncio.Event()

    async def rest(k: int) -> None:
        import aiohttp

        await asyncio.sleep(k * rest_stagger)
        rng = random.Random(1000 + k)
        conn = aiohttp.TCPConnector(limit=1, ssl=ctx)
        async with aiohttp.ClientSession(connector=conn) as session:
            n = 0
            while not done.is_set():
                n += 1
                form = {"symbol": rng.choice(SYMBOLS), "side": rng.choice(("BUY", "SELL")),
                        "type": "LIMIT", "timeInForce": "GTC",
                        "quantity": f"{rng.random():.4f}", "price": f"{rng.uniform(1, 9e4):.2f}",
                        "newClientOrderId": f"rest{k}-{n:07d}",
                        "timestamp": str(int(time.time() * 1000))}
                form["signature"] = f"{zlib.crc32(str(form).encode()):08x}" * 8
                counts["rest_orders"] += 1
                async with session.post(f"https://127.0.0.1:{port + 1}/api/v3/order", data=form,
                                        headers={"Host": "api.binance.com",
                                                 "X-MBX-APIKEY": "FAKEKEY"},
                                        server_hostname="api.binance.com") as resp:
                    await resp.read()
                counts["rest_acks"] += 1
                await asyncio.sleep(rng.uniform(0.002, 0.02))

    async def md(i: int) -> None:
        uri = f"wss://127.0.0.1:{port}/stream?streams={SYMBOLS[i % 5].lower()}@depth"
        async with connect(uri, ssl=ctx, server_hostname="stream.binance.com",
                           max_size=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": [
                f"{SYMBOLS[i % 5].lower()}@depth@100ms"], "id": i}))
            async for _ in ws:
                counts["md_messages"] += 1

    async def orders() -> None:
        rng = random.Random(99)
        async with connect(f"wss://127.0.0.1:{port}/ws-api/v3", ssl=ctx,
                           server_hostname="ws-api.binance.com") as ws:
            while not done.is_set():
                await ws.send(json.dumps({"id": str(uuid.UUID(int=rng.getrandbits(128))),
                                          "method": "order.place", "params": {
                    "symbol": rng.choice(SYMBOLS), "side": rng.choice(("BUY", "SELL")),
                    "type": "LIMIT", "timeInForce": "GTC", "price": f"{rng.uniform(1, 9e4):.2f}",
                    "quantity": f"{rng.random():.4f}",
                    "newClientOrderId": f"mm-{counts['orders']:08d}",
                    "timestamp": int(time.time() * 1000), "apiKey": "FAKEKEY",
                    "signature": f"{zlib.crc32(str(counts['orders']).encode()):08x}" * 8}}))
                counts["orders"] += 1
                await ws.recv()
                await ws.recv()
                counts["acks"] += 1
                await asyncio.sleep(rng.uniform(0.001, 0.01))

    order_task = asyncio.create_task(orders())
    rest_tasks = [asyncio.create_task(rest(k)) for k in range(rest_conns)]
    try:
        await asyncio.wait_for(asyncio.gather(*(md(i) for i in range(md_conns))), max_seconds)
    except TimeoutError:
        print(f"stopped after {max_seconds} s", file=sys.stderr)
    done.set()
    await asyncio.wait_for(asyncio.gather(order_task, *rest_tasks), 10)
    return counts


# ----------------------------------------------------------------------------------
# the capture around it

def _tcpdump(out: str, port: int) -> subprocess.Popen[str]:
    cmd = ["tcpdump", "-i", "lo", "-B", "65536", "--time-stamp-precision=nano", "-s", "0",
           "-w", out, f"tcp port {port} or tcp port {port + 1}"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline() if proc.stderr else ""
    if "listening" not in line:
        proc.kill()
        raise RuntimeError(f"tcpdump did not start: {line.strip()}")
    return proc


def inside(a: argparse.Namespace) -> int:
    """Run server, client and tcpdump (already inside the namespace)."""
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(Path(tmp))
        port = a.port
        dump = _tcpdump(a.out, port)
        per_conn = a.messages // a.md_conns
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(cert),
                                   str(key), str(per_conn)], stdout=subprocess.PIPE, text=True)
        try:
            if server.stdout is None or server.stdout.readline().strip() != "ready":
                raise RuntimeError("server did not start")
            t0 = time.perf_counter()
            counts = asyncio.run(client(port, a.keylog, a.md_conns, a.max_seconds,
                                        a.rest_conns, a.rest_stagger))
            seconds = time.perf_counter() - t0
            # tcpdump reads the kernel ring a block at a time (1 s block timeout); a
            # block still open at SIGINT is lost without being counted as dropped
            time.sleep(TCPDUMP_FLUSH_S)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(10)
            dump.send_signal(signal.SIGINT)
            _, err = dump.communicate(timeout=30)
    got = {k: int(v) for v, k in re.findall(r"(\d+) packets? (captured|received by filter|"
                                               r"dropped by kernel)", err)}
    print(json.dumps({"out": a.out, "keylog": a.keylog, "seconds": round(seconds, 2),
                      **counts, **{k.replace(" ", "_"): v for k, v in got.items()}}))
    return 0 if got.get("dropped by kernel", 1) == 0 else 3


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve":
        port, cert, key, per_conn = argv[1:5]
        asyncio.run(serve(int(port), cert, key, int(per_conn)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="ws_tls13.pcap")
    ap.add_argument("--keylog", default=None, help="default: OUT with .keylog")
    ap.add_argument("--messages", type=int, default=400_000,
                    help="market-data messages in all (split over --md-conns)")
    ap.add_argument("--md-conns", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--port", type=int, default=9443)
    ap.add_argument("--rest-conns", type=int, default=0,
                    help="REST order connections (aiohttp, on --port + 1)")
    ap.add_argument("--rest-stagger", type=float, default=0.0,
                    help="seconds between the REST connections' starts")
    ap.add_argument("--no-netns", action="store_true",
                    help="use the host's loopback (MTU 64 KiB) instead of a namespace")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.out = os.path.abspath(a.out)
    a.keylog = os.path.abspath(a.keylog or str(Path(a.out).with_suffix(".keylog")))
    Path(a.keylog).unlink(missing_ok=True)
    if a.inside or a.no_netns:
        return inside(a)
    ns = f"pcapflow-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", "lo", "gso_max_segs", "1"],
                       check=True)
        cmd = ["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), "--inside",
               "--out", a.out, "--keylog", a.keylog, "--messages", str(a.messages),
               "--md-conns", str(a.md_conns), "--max-seconds", str(a.max_seconds),
               "--port", str(a.port), "--rest-conns", str(a.rest_conns),
               "--rest-stagger", str(a.rest_stagger)]
        return subprocess.run(cmd, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    sys.exit(main())
