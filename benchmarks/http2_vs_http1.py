#!/usr/bin/env python3
"""Order traffic over HTTP/2 against HTTP/1.1: parser cost per message, same orders.

    python benchmarks/http2_vs_http1.py [--orders 20000] [--in-flight 5] [--repeat 3]

How this works: the same Binance-style order flow (a signed ``POST /api/v3/order`` with
its query string, an API-key header, a ~300-byte JSON reply) is written twice:
as HTTP/1.1 bytes (what an HTTP/1.1 client and server put on a keep-alive connection)
and as HTTP/2 bytes produced by the ``h2`` library on both ends (HPACK with its dynamic
table and Huffman coding, ``--in-flight`` streams open at once, replies in reverse
order). Each direction is cut into 1448-byte pieces, as TCP segments deliver it, and
fed to ``HttpSession`` / ``Http2Session`` (the per-connection parsers ``pcapflow
ingest`` runs after TCP and TLS). The time per message (request or response) is the
best of ``--repeat`` runs, warm (the HPACK Huffman kernel compiled first).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from urllib.parse import urlencode

import h2.config
import h2.connection
import h2.events
from pcapflow.parsers.http import HttpMessage, HttpSession
from pcapflow.parsers.http2 import Http2Session

SEGMENT = 1448
API_KEY = "pcfFakeBnbKey0vQ7mB2xY9kL3nR8sT1uW4zA6cD5eF0gH2jK4mN6pQ8rS0tU"


def _orders(n: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        q = urlencode({"symbol": "BTCUSDT", "side": rng.choice(["BUY", "SELL"]),
                       "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.00100000",
                       "price": f"{rng.uniform(6e4, 7e4):.2f}",
                       "newClientOrderId": f"pcf1_{i:06d}_{rng.getrandbits(30):08x}",
                       "recvWindow": "5000", "timestamp": str(1796507900000 + i)})
        path = f"/api/v3/order?{q}&signature={rng.getrandbits(256):064x}"
        reply = json.dumps({"symbol": "BTCUSDT", "orderId": 5_000_000_000 + i,
                            "orderListId": -1, "clientOrderId": f"pcf1_{i:06d}",
                            "transactTime": 1796507900000 + i, "price": "65000.00000000",
                            "origQty": "0.00100000", "executedQty": "0.00000000",
                            "status": "NEW", "timeInForce": "GTC", "type": "LIMIT",
                            "side": "BUY", "workingTime": 1796507900000 + i, "fills": []},
                           separators=(",", ":")).encode()
        out.append((path, reply))
    return out


def http1_bytes(orders: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    req, resp = [], []
    for path, reply in orders:
        req.append(f"POST {path} HTTP/1.1\r\nHost: api.binance.com\r\nAccept: */*\r\n"
                   f"Accept-Encoding: gzip, deflate\r\nUser-Agent: python-httpx/0.29.0\r\n"
                   f"X-MBX-APIKEY: {API_KEY}\r\nContent-Length: 0\r\n\r\n".encode())
        resp.append(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nx-mbx-uuid: 0f0e0d0c0b0a09080706050403020100\r\n"
                    b"x-mbx-used-weight-1m: 7\r\nDate: Sat, 05 Dec 2026 22:00:00 GMT\r\n"
                    b"Server: mock\r\n\r\n" % len(reply) + reply)
    return b"".join(req), b"".join(resp)


def http2_bytes(orders: list[tuple[str, bytes]], in_flight: int) -> tuple[bytes, bytes]:
    cfg = h2.config.H2Configuration
    c = h2.connection.H2Connection(cfg(client_side=True, header_encoding="utf-8"))
    s = h2.connection.H2Connection(cfg(client_side=False, header_encoding="utf-8"))
    c.initiate_connection()
    s.initiate_connection()
    out, inn = [c.data_to_send()], [s.data_to_send()]
    s.receive_data(out[0])
    c.receive_data(inn[0])
    for k in range(0, len(orders), in_flight):
        wave = orders[k : k + in_flight]
        sids = []
        for path, _ in wave:
            sid = c.get_next_available_stream_id()
            sids.append(sid)
            c.send_headers(sid, [(":method", "POST"), (":authority", "api.binance.com"),
                                 (":scheme", "https"), (":path", path), ("accept", "*/*"),
                                 ("accept-encoding", "gzip, deflate"),
                                 ("user-agent", "python-httpx/0.29.0"),
                                 ("x-mbx-apikey", API_KEY), ("content-length", "0")],
                           end_stream=True)
        out.append(c.data_to_send())
        s.receive_data(out[-1])
        for sid, (_, reply) in reversed(list(zip(sids, wave, strict=True))):
            s.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                                 ("content-length", str(len(reply))),
                                 ("x-mbx-uuid", "0f0e0d0c0b0a09080706050403020100"),
                                 ("x-mbx-used-weight-1m", "7"),
                                 ("date", "Sat, 05 Dec 2026 22:00:00 GMT"),
                                 ("server", "mock")])
            s.send_data(sid, reply, end_stream=True)
        inn.append(s.data_to_send())
        for ev in c.receive_data(inn[-1]):
            if isinstance(ev, h2.events.DataReceived):  # as a client does: WINDOW_UPDATE
                c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        out.append(c.data_to_send())
        s.receive_data(out[-1])
    return b"".join(out), b"".join(inn)


def _feed(session: object, out: bytes, inn: bytes) -> int:
    """Both directions in segment-sized pieces, interleaved in order of stream position
    (a request's bytes before its response's); returns the messages emitted."""
    n = 0
    feed = session.feed  # type: ignore[attr-defined]
    ratio = len(inn) / max(1, len(out))
    j = 0
    for i in range(0, len(out), SEGMENT):
        n += sum(isinstance(e, HttpMessage) for e in feed("out", out[i : i + SEGMENT], i, i))
        while j < len(inn) and j <= (i + SEGMENT) * ratio:
            n += sum(isinstance(e, HttpMessage) for e in feed("in", inn[j : j + SEGMENT], i, i))
            j += SEGMENT
    while j < len(inn):
        n += sum(isinstance(e, HttpMessage) for e in feed("in", inn[j : j + SEGMENT], 0, 0))
        j += SEGMENT
    n += sum(isinstance(e, HttpMessage) for e in session.finish(0))  # type: ignore[attr-defined]
    return n


def measure(make: type, out: bytes, inn: bytes, repeat: int) -> tuple[float, int]:
    best, msgs = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        msgs = _feed(make(1), out, inn)
        best = min(best, time.perf_counter() - t)
    return best, msgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=20000)
    ap.add_argument("--in-flight", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args(argv)
    orders = _orders(args.orders, args.seed)
    h1 = http1_bytes(orders)
    h2b = http2_bytes(orders, args.in_flight)
    _feed(Http2Session(0), *http2_bytes(orders[:50], args.in_flight))  # compile the kernel
    t1, m1 = measure(HttpSession, *h1, args.repeat)
    t2, m2 = measure(Http2Session, *h2b, args.repeat)
    assert m1 == m2 == 2 * args.orders, (m1, m2)
    res = {"orders": args.orders, "in_flight": args.in_flight,
           "http1": {"bytes": len(h1[0]) + len(h1[1]), "s": t1, "us_per_message": t1 / m1 * 1e6},
           "http2": {"bytes": len(h2b[0]) + len(h2b[1]), "s": t2,
                     "us_per_message": t2 / m2 * 1e6}}
    res["http2_over_http1"] = res["http2"]["us_per_message"] / res["http1"]["us_per_message"]
    print(f"{args.orders} orders ({2 * args.orders} messages), {args.in_flight} in flight")
    for k in ("http1", "http2"):
        r = res[k]
        print(f"  {k}: {r['bytes'] / 1e6:6.2f} MB on the wire  {r['s']:.3f} s  "
              f"{r['us_per_message']:.2f} µs/message")
    print(f"  HTTP/2 / HTTP/1.1 per message: {res['http2_over_http1']:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
