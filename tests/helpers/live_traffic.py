"""Real order traffic on 127.0.0.1 for the live tests: a Binance-style REST mock over
plain HTTP/1.1 keep-alive, and a client that places orders on a few connections in
turn (so some connections run across a rotation and some do not).

``python tests/helpers/live_traffic.py PORT SECONDS RATE [BULK_PORT BYTES_PER_S]`` runs the
server in a thread and the client in the foreground, then prints one JSON line: the orders
sent. With ``BULK_PORT``, one more connection carries ``BYTES_PER_S`` of filler to a sink
there, for as long, so a size rotation (``tcpdump -C``: whole megabytes) turns over every
second or so. Everything stays on loopback; every loop is bounded by SECONDS.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "api.binance.com"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n).decode()
        fields = dict(kv.split("=", 1) for kv in body.split("&") if "=" in kv)
        reply = json.dumps({"symbol": fields.get("symbol", "BTCUSDT"), "orderId": int(
            time.time_ns() % 10**9), "clientOrderId": fields.get("newClientOrderId", ""),
            "status": "NEW"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def serve(port: int) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def client(port: int, seconds: float, rate: float, conns: int = 3) -> int:
    """Orders at ``rate`` per second for ``seconds``, on ``conns`` keep-alive
    connections used in turn; each connection is replaced every ~0.8 s."""
    pool = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(conns)]
    born = [time.monotonic()] * conns
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        k = sent % conns
        if time.monotonic() - born[k] > 0.8 * (k + 1):
            pool[k].close()
            pool[k] = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            born[k] = time.monotonic()
        body = ("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.01&price=30000"
                f"&newClientOrderId=o{sent}")
        pool[k].request("POST", "/api/v3/order", body=body, headers={
            "Host": HOST, "Content-Type": "application/x-www-form-urlencoded"})
        pool[k].getresponse().read()
        sent += 1
        time.sleep(1 / rate)
    for c in pool:
        c.close()
    return sent


def bulk(port: int, seconds: float, per_s: int) -> threading.Thread:
    """A sink on ``port`` and a thread sending it ``per_s`` bytes a second in writes of
    up to 64 KiB, for ``seconds`` (one connection all along: it spans the rotation)."""
    sink = socket.create_server(("127.0.0.1", port))

    def drain() -> None:
        conn, _ = sink.accept()
        with conn:
            while conn.recv(1 << 20):
                pass
        sink.close()

    def send() -> None:
        block = (bytes(range(256)) * 256)[:max(1024, min(1 << 16, per_s // 10))]
        with socket.create_connection(("127.0.0.1", port)) as s:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                t0 = time.monotonic()
                for _ in range(max(1, per_s // len(block) // 10)):
                    s.sendall(block)
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

    threading.Thread(target=drain, daemon=True).start()
    t = threading.Thread(target=send, daemon=True)
    t.start()
    return t


if __name__ == "__main__":
    port, seconds, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    srv = serve(port)
    filler = bulk(int(sys.argv[4]), seconds, int(sys.argv[5])) if len(sys.argv) > 5 else None
    n = client(port, seconds, rate)
    if filler is not None:
        filler.join(timeout=seconds + 5)
    srv.shutdown()
    print(json.dumps({"orders": n}))
