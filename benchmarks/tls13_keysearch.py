"""Cost of the TLS 1.3 key search per connection, against key log size and window.

How this works: a connection whose handshake was not captured is simulated by
sealing TLS 1.3 records (RFC 8446 §5.2, ``cryptography``) under one session's
traffic secrets at a chosen KeyUpdate generation and record sequence number, and
feeding them to a ``TlsSession`` with a key log of N sessions (N-1 decoys with
random secrets). The time measured is what the session spends on its first
records: the key search of both directions (the second one tries the first one's
key log entry first), key derivation included the first time ("cold": a new
``KeyLog``) and reused after it ("warm": the next connection of the same ingest).
"Not found" is a key log without the session: each direction tries
``SEARCH_RECORDS`` records against every candidate before giving up.

Rows:
- ``gcm``: TLS_AES_256_GCM_SHA384 (48-byte secrets), N = 10..10,000, found at
  KeyUpdate generation 2 and record 2^20 + 7, and not found; the window
  ``tls13_search_records`` from 2^10 to 2^32 (target at its last number) at N =
  1,000, to show that it costs nothing;
- ``gcm_forward``: the method of trying each sequence number (one AES block per
  number per key, ``cryptography`` ECB over all counter blocks at once), measured
  per key for the same windows and scaled to N keys x generations;
- ``chacha``: TLS_CHACHA20_POLY1305_SHA256 (32-byte secrets: AES-128-GCM is tried
  first), not found, per window ``tls13_search_chacha_records`` and N, and found at
  the window's last number;
- ``unit``: the kernels alone on a 300-byte record: seconds per AES-GCM key
  (``gcm_j0``: GHASH and J0 of 10,000 keys) and per ChaCha20 key and sequence number
  (``chacha_seqs``: 100 keys x 1,024 numbers), and per key derivation (HKDF, Python).

Usage:
    python benchmarks/tls13_keysearch.py [--quick] [--units] [--repeat 3]
                                         [--json benchmarks/results/tls13_keysearch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pcapflow.parsers.tls import KeyLog, TlsSession, suite_for
from pcapflow.parsers.tls import keysearch_native as kn
from pcapflow.parsers.tls.keyschedule import tls13_next_traffic_secret, tls13_traffic_keys
from pcapflow.parsers.tls.keysearch import DEFAULT_GENERATIONS, SEARCH_RECORDS, SearchLimits

AES256, CHACHA = suite_for(0x1302), suite_for(0x1303)
CTS, STS = "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"
REQUEST = (b"POST /api/v3/order?symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
           b"&quantity=0.001&price=30000&newClientOrderId=pcf_0001&timestamp=1700000000000"
           b"&signature=" + b"0" * 64 + b" HTTP/1.1\r\nHost: api.binance.com\r\n"
           b"X-MBX-APIKEY: " + b"k" * 64 + b"\r\n\r\n")  # a 300-byte order request
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b"{}" * 60


def seal(suite, secret: bytes, seq: int, content: bytes) -> bytes:
    key, iv = tls13_traffic_keys(secret, suite.key_length, 12, suite.prf_hash)
    aead = ChaCha20Poly1305(key) if suite is CHACHA else AESGCM(key)
    body = content + b"\x17"
    header = bytes([23, 3, 3]) + (len(body) + 16).to_bytes(2, "big")
    return header + aead.encrypt((int.from_bytes(iv, "big") ^ seq).to_bytes(12, "big"),
                                 body, header)


def keylog_text(sessions: int, length: int, seed: int, target: tuple | None) -> str:
    rng = random.Random(seed)
    lines = []
    for _ in range(sessions - (target is not None)):
        r = rng.randbytes(32).hex()
        lines += [f"{CTS} {r} {rng.randbytes(length).hex()}",
                  f"{STS} {r} {rng.randbytes(length).hex()}"]
    if target is not None:
        r, c, s = target
        at = rng.randrange(len(lines) // 2 + 1) * 2
        lines[at:at] = [f"{CTS} {r.hex()} {c.hex()}", f"{STS} {r.hex()} {s.hex()}"]
    return "\n".join(lines) + "\n"


def connection(suite, generation: int, seq: int) -> tuple[tuple, list[tuple[str, bytes]]]:
    """One session's secrets and its first records (2 per direction)."""
    r, c, s = os.urandom(32), os.urandom(secret_length(suite)), os.urandom(secret_length(suite))
    cg, sg = c, s
    for _ in range(generation):
        cg = tls13_next_traffic_secret(cg, suite.prf_hash)
        sg = tls13_next_traffic_secret(sg, suite.prf_hash)
    pieces = [("out", seal(suite, cg, seq, REQUEST)), ("in", seal(suite, sg, seq, RESPONSE)),
              ("out", seal(suite, cg, seq + 1, REQUEST)),
              ("in", seal(suite, sg, seq + 1, RESPONSE))]
    return (r, c, s), pieces


def secret_length(suite) -> int:
    return 48 if suite.prf_hash == "sha384" else 32


def timed_connection(log: KeyLog, pieces: list[tuple[str, bytes]], limits: SearchLimits
                     ) -> tuple[float, dict]:
    session = TlsSession(1, log, search=limits)
    t0 = time.perf_counter()
    events = []
    for i, (d, data) in enumerate(pieces):
        events += session.feed(d, data, i, i)  # type: ignore[arg-type]
    dt = time.perf_counter() - t0
    codes = [getattr(e, "code", None) for e in events]
    decrypted = sum(1 for e in events if getattr(e, "decrypted", False))
    return dt, {"found": codes.count("handshake_not_captured"),
                "not_found": codes.count("tls13_secret_not_found"), "decrypted": decrypted}


def measure(suite, sessions: int, limits: SearchLimits, *, found: bool, generation: int,
            seq: int, repeat: int) -> dict:
    """Cold (first connection of a new KeyLog) and warm (a second one) seconds."""
    target, pieces = connection(suite, generation, seq)
    text = keylog_text(sessions, secret_length(suite), sessions, target if found else None)
    cold, warm, check = [], [], {}
    for _ in range(repeat):
        log = KeyLog.from_text(text)
        dt, check = timed_connection(log, pieces, limits)
        cold.append(dt)
        dt, check = timed_connection(log, pieces, limits)
        warm.append(dt)
    expect = {"found": 2, "not_found": 0, "decrypted": 4} if found else {
        "found": 0, "not_found": 2, "decrypted": 0}
    assert check == expect, (check, expect)
    return {"sessions": sessions, "found": found, "generation": generation, "seq": seq,
            "cold_s": min(cold), "warm_s": min(warm)}


def forward_per_key(window: int, repeat: int) -> float:
    """Seconds per key of trying every sequence number: one AES block each."""
    key = os.urandom(32)
    iv = int.from_bytes(os.urandom(12), "big")
    blocks = b"".join(((iv ^ s).to_bytes(12, "big") + b"\0\0\0\1") for s in range(window))
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        Cipher(algorithms.AES(key), modes.ECB()).encryptor().update(blocks)
        best = min(best, time.perf_counter() - t0)
    return best


def units(repeat: int) -> list[dict]:
    """Unit costs of the kernels and of key derivation (best of ``repeat``)."""
    import numpy as np
    from pcapflow.parsers.tls import keysearch as ks

    rng = np.random.default_rng(1)
    aad, body = b"\x17\x03\x03\x01\x3c", rng.bytes(300)
    ct, tag = body[:-16], body[-16:]
    rows = []
    for native in (True, False):
        n = 10_000 if native else 1_000
        keys = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        best = min(_timed(lambda k=keys, nat=native: ks.gcm_j0(k, aad, ct, tag, use_native=nat))
                   for _ in range(repeat))
        rows.append({"kind": "unit", "what": "gcm_key", "native": native, "seconds": best / n})
        keys, ivs = keys[:100], rng.integers(0, 256, (100, 12), dtype=np.uint8)
        w = 1024 if native else 64
        best = min(_timed(lambda k=keys, v=ivs, nat=native, w=w: ks.chacha_seqs(
            k, v, aad, ct, tag, w, use_native=nat)) for _ in range(repeat))
        rows.append({"kind": "unit", "what": "chacha_key_seq", "native": native,
                     "seconds": best / (100 * w)})
    secrets = [os.urandom(48) for _ in range(2000)]
    best = min(_timed(lambda: [tls13_traffic_keys(tls13_next_traffic_secret(s, "sha384"), 32,
                                                  12, "sha384") for s in secrets])
               for _ in range(repeat))
    rows.append({"kind": "unit", "what": "derive_generation_sha384", "native": False,
                 "seconds": best / len(secrets)})
    for r in rows:
        print(f"unit {r['what']:<26} {'native' if r['native'] else 'python':<7}"
              f" {r['seconds'] * 1e6:8.3f} µs", flush=True)
    return rows


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    ap.add_argument("--units", action="store_true", help="the unit costs only")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default="benchmarks/results/tls13_keysearch.json")
    args = ap.parse_args()
    if args.units and args.json == ap.get_default("json"):
        args.json = args.json.replace(".json", "_units.json")
    sizes = [10, 100] if args.quick else [10, 100, 1000, 10000]
    windows = [10, 14] if args.quick else [10, 12, 14, 16, 18, 20, 32]
    chacha_windows = [6, 8] if args.quick else [6, 7, 8, 9, 10, 12]
    chacha_sizes = [10, 100] if args.quick else [10, 100, 1000]
    big = 100 if args.quick else 1000
    rows: list[dict] = units(args.repeat)

    def show(row: dict) -> None:
        rows.append(row)
        cold, warm = row.get("cold_s"), row.get("warm_s")
        est = row.get("estimated_s")
        extra = f"cold {cold * 1e3:9.1f} ms  warm {warm * 1e3:9.1f} ms" if cold is not None \
            else f"estimated {est * 1e3:11.1f} ms"
        print(f"{row['kind']:<12} sessions {row['sessions']:>6}  window 2^{row['window_log2']:<3}"
              f" {'found' if row.get('found') else 'not found':<9}  {extra}", flush=True)

    default = SearchLimits()
    if args.units:
        sizes = windows = chacha_sizes = []
    # load the compiled kernels (Numba cache) before anything is timed
    measure(AES256, 10, default, found=True, generation=0, seq=5, repeat=1)
    measure(CHACHA, 10, SearchLimits(chacha_records=8), found=True, generation=0, seq=5,
            repeat=1)
    for n in sizes:
        for found in (True, False):
            r = measure(AES256, n, default, found=found, generation=2, seq=(1 << 20) + 7,
                        repeat=args.repeat)
            show({"kind": "gcm", "window_log2": 32, **r})
    for w in windows:
        limits = SearchLimits(records=1 << w)
        r = measure(AES256, big, limits, found=True, generation=0, seq=(1 << w) - 1,
                    repeat=args.repeat)
        show({"kind": "gcm", "window_log2": w, **r})
        if w <= 20:
            per_key = forward_per_key(1 << w, args.repeat)
            show({"kind": "gcm_forward", "window_log2": w, "sessions": big, "found": False,
                  "per_key_s": per_key,
                  # per direction, one record, every secret and generation
                  "estimated_s": per_key * big * DEFAULT_GENERATIONS})
    for n in chacha_sizes:
        for w in chacha_windows:
            if n << w > 1 << 20:
                continue  # minutes each, and the cost is linear in both
            limits = SearchLimits(chacha_records=1 << w)
            r = measure(CHACHA, n, limits, found=False, generation=0, seq=0, repeat=1)
            show({"kind": "chacha", "window_log2": w, **r})
            r = measure(CHACHA, n, limits, found=True, generation=0, seq=(1 << w) - 2,
                        repeat=1)
            show({"kind": "chacha", "window_log2": w, **r})
    out = {"python": sys.version.split()[0], "machine": platform.machine(),
           "processor": platform.processor(), "cpus": os.cpu_count(),
           "native": kn.AVAILABLE, "search_records_per_direction": SEARCH_RECORDS,
           "generations": DEFAULT_GENERATIONS, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
