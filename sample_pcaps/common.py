"""Pieces shared by the mock exchanges and the trading clients.

How this works: `generate.py` starts every server and client as its own process
(`generate.py --role server|client --only NAME`), inside a network namespace it
owns. Both roles receive a `RunCtx` that says where the PKI, the key log, the
ground-truth log and the fake secrets live, and which address to bind or dial.

The client records one `TruthLog` line per order action: what it sent, what came
back, and its own monotonic send/receive times. Those lines are the ground truth
pcapflow's matcher is checked against.

All secrets below are FAKE; they are listed in `secrets.json` so tests can assert
that none of them ever reaches a pcapflow table.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import signal
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------- fake secrets
BINANCE_API_KEY = "pcfFakeBnbKey0vQ7mB2xY9kL3nR8sT1uW4zA6cD5eF0gH2jK4mN6pQ8rS0tU"
BINANCE_API_SECRET = "pcfFakeBnbSecret9Zx8Wv7Ut6Sr5Qp4On3Ml2Kj1Ih0Gf9Ed8Cb7Ya6Xw5V"
OKX_API_KEY = "pcf0fake-0kx0-4a1b-9c2d-3e4f5a6b7c8d"
OKX_API_SECRET = "PCFFAKEOKXSECRET1A2B3C4D5E6F7A8B9C"
OKX_PASSPHRASE = "pcf-Fake-Passphrase-42!"
DERIBIT_CLIENT_ID = "pcfFakeDrbtId7"
DERIBIT_CLIENT_SECRET = "pcfFakeDrbtSecret_q1w2e3r4t5y6u7i8o9p0"
DERIBIT_ACCESS_TOKEN = "pcfFakeDrbtAccessToken.1699999999999.Qm9ndXNUb2tlbg"
DERIBIT_REFRESH_TOKEN = "pcfFakeDrbtRefreshToken.1699999999999.UmVmcmVzaA"
FIX_USERNAME = "pcf-fix-user"
FIX_PASSWORD = "pcfFakeFixPassw0rd!"
FIX_RAW_DATA = "pcfFakeFixRawDataSignature/base64+AbCdEfGh=="

FIXED_SECRETS: dict[str, str] = {
    "binance_api_key": BINANCE_API_KEY,
    "binance_api_secret": BINANCE_API_SECRET,
    "okx_api_key": OKX_API_KEY,
    "okx_api_secret": OKX_API_SECRET,
    "okx_passphrase": OKX_PASSPHRASE,
    "deribit_client_id": DERIBIT_CLIENT_ID,
    "deribit_client_secret": DERIBIT_CLIENT_SECRET,
    "deribit_access_token": DERIBIT_ACCESS_TOKEN,
    "deribit_refresh_token": DERIBIT_REFRESH_TOKEN,
    "fix_username": FIX_USERNAME,
    "fix_password": FIX_PASSWORD,
    "fix_raw_data": FIX_RAW_DATA,
}

# Server-side processing delay: lognormal, median 1 ms, clipped to [0.2, 20] ms.
DELAY_MEDIAN_S = 0.001
DELAY_SIGMA = 0.9
DELAY_MIN_S = 0.0002
DELAY_MAX_S = 0.020


@dataclass(kw_only=True)
class RunCtx:
    """What one role process needs to know about its scenario."""

    scenario: str
    out_dir: Path
    pki_dir: Path
    bind_ip: str = "127.0.0.1"
    connect_ip: str = "127.0.0.1"
    seed: int = 1
    small: bool = False  # shorter variant (used by the pcapng and SLL2 scenarios)

    @property
    def keylog(self) -> Path:
        return self.out_dir / f"{self.scenario}.keylog"

    @property
    def truth(self) -> Path:
        return self.out_dir / f"{self.scenario}.truth.jsonl"

    @property
    def derived_secrets(self) -> Path:
        """Signatures and other per-run secret strings, merged into secrets.json."""
        return self.out_dir / f".{self.scenario}.derived.json"


class ServerDelay:
    """Seeded lognormal 'matching engine' delay."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def sample(self) -> float:
        raw = self._rng.lognormvariate(math.log(DELAY_MEDIAN_S), DELAY_SIGMA)
        return min(DELAY_MAX_S, max(DELAY_MIN_S, raw))

    async def sleep(self) -> None:
        await asyncio.sleep(self.sample())


@dataclass(kw_only=True)
class TruthRecord:
    """One order action as the client saw it (one line of NAME.truth.jsonl)."""

    scenario: str
    venue: str
    endpoint: str
    kind: str  # new | cancel | amend
    conn_id: int
    local_port: int
    request_id: str | int | None
    client_order_id: str | None
    orig_client_order_id: str | None
    exchange_order_id: str | None = None
    outcome: str = "error"  # accepted | rejected | error
    status: str | int | None = None
    error_code: str | int | None = None
    send_mono_ns: int = 0
    recv_mono_ns: int = 0
    send_wall_ns: int = 0
    recv_wall_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def mark_sent(self) -> None:
        self.send_mono_ns = time.monotonic_ns()
        self.send_wall_ns = time.time_ns()

    def mark_received(self) -> None:
        self.recv_mono_ns = time.monotonic_ns()
        self.recv_wall_ns = time.time_ns()


class TruthLog:
    """Collects TruthRecords and writes them in send order."""

    def __init__(self, ctx: RunCtx) -> None:
        self._ctx = ctx
        self.records: list[TruthRecord] = []
        self.secrets: list[str] = []

    def add(self, record: TruthRecord) -> TruthRecord:
        self.records.append(record)
        return record

    def secret(self, value: str) -> str:
        """Remember a per-run secret string (e.g. a signature) and return it."""
        self.secrets.append(value)
        return value

    def write(self) -> None:
        rows = sorted(self.records, key=lambda r: r.send_mono_ns)
        with self._ctx.truth.open("w") as fh:
            for rec in rows:
                fh.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
        self._ctx.derived_secrets.write_text(json.dumps(sorted(set(self.secrets))))


# ---------------------------------------------------------------- TLS
def server_tls(ctx: RunCtx, host: str, alpn: list[str] | None = None) -> ssl.SSLContext:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(ctx.pki_dir / f"{host}.pem", ctx.pki_dir / f"{host}.key")
    if alpn:
        tls.set_alpn_protocols(alpn)
    return tls


def client_tls(
    ctx: RunCtx, *, tls12: bool = False, alpn: list[str] | None = None
) -> ssl.SSLContext:
    """Client context that trusts the mock CA and writes the NSS key log."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.load_verify_locations(ctx.pki_dir / "ca.pem")
    tls.keylog_filename = str(ctx.keylog)
    if tls12:
        tls.maximum_version = ssl.TLSVersion.TLSv1_2
        tls.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    if alpn:
        tls.set_alpn_protocols(alpn)
    return tls


# ---------------------------------------------------------------- sockets
def listen_socket(ip: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((ip, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def announce_ready() -> None:
    """Tell the orchestrator (reading our stdout) that we are listening."""
    print("READY", flush=True)


async def wait_for_stop() -> None:
    """Block until SIGTERM/SIGINT; the orchestrator stops servers that way."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    await stop


async def pause(rng: random.Random, lo_ms: float = 1.0, hi_ms: float = 8.0) -> None:
    """Client think time between order actions."""
    await asyncio.sleep(rng.uniform(lo_ms, hi_ms) / 1000.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def now_us() -> int:
    return time.time_ns() // 1_000
