#!/usr/bin/env python3
"""Regenerate pcapflow's sample captures from a mock exchange and a trading client.

Usage (as root: it creates network namespaces and runs tcpdump/dumpcap):

    python sample_pcaps/generate.py [NAME ...] [--only NAME] [--out DIR] [--seed N]
                                    [--manifest-only]

How this works. For each scenario the script
1. creates a private network namespace (`pcfgen-<pid>`) whose loopback has an
   Ethernet-like MTU of 1500 and `gso_max_segs 1`, so the capture shows real
   1448-byte TCP segments instead of 64 KB loopback super-packets; the lossy
   scenario instead builds three namespaces (`pcf-cli`, `pcf-srv`, `pcf-rly`)
   joined by veth pairs through a userspace relay (`relay.py`) that drops,
   duplicates, reorders and delays TCP segments (the kernel has no netem);
2. starts the capture inside that namespace (`tcpdump -i lo
   --time-stamp-precision=nano`, `tcpdump -i any` for SLL2, or `dumpcap` for
   pcapng) and waits until it prints that it is listening;
3. starts the mock exchange (`generate.py --role server`, a separate process with
   real aiohttp / websockets / asyncio-FIX servers) and waits for its READY line;
4. runs the trading client (`generate.py --role client`), which writes the TLS key
   log (`ssl.SSLContext.keylog_filename`), the ground truth `NAME.truth.jsonl` and
   the per-run signatures it computed;
5. stops the server with SIGTERM and the capture with SIGINT (complete file),
   deletes the namespaces (also on error), injects the key log into the pcapng
   where asked (`editcap --inject-secrets`), and rewrites MANIFEST.md and
   secrets.json.

Two scenarios are recordings kept in their own folder (``Scenario.folder``; MANIFEST.md,
"Capture sets"): ``rotated_binance`` runs tcpdump with ``-G 2 -z gzip`` and a strftime
file name, so tcpdump itself rotates and compresses; ``midsession_binance`` starts a
reference tcpdump first, lets the client open its sessions and trade until it prints
``OPEN``, then starts the capture proper and writes ``GO`` to the client's stdin.

Every secret is fake (see common.py). The PKI is fresh on every run and not kept.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pki
import relay
import venue_binance_h2
import venue_binance_h2_curl
import venue_binance_rest
import venue_binance_ws
import venue_ccxt_binance
import venue_deribit
import venue_fix
import venue_okx
from common import FIXED_SECRETS, RunCtx

HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 20.0
CLIENT_TIMEOUT_S = 240.0
LOSSY_NETNS = ("pcf-cli", "pcf-srv", "pcf-rly")
LOSSY_CLIENT_IP, LOSSY_SERVER_IP = "10.99.0.1", "10.99.0.2"


@dataclass(frozen=True, kw_only=True)
class Scenario:
    name: str
    file: str
    module: ModuleType
    ports: tuple[int, ...]
    hosts: tuple[str, ...]  # TLS server names (empty for plain TCP)
    capture: str = "tcpdump"  # tcpdump | tcpdump-any | dumpcap | rotate | midsession
    small: bool = False
    lossy: bool = False
    special: str = ""

    @property
    def folder(self) -> bool:
        """A recording kept in its own folder (``file`` names it): rotated files, or a
        capture begun mid-session with its reference capture (see FOLDER_SCENARIOS)."""
        return self.capture in ("rotate", "midsession")


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(name="binance_rest_tls13", file="binance_rest_tls13.pcap",
             module=venue_binance_rest, ports=(443,), hosts=("api.binance.com",),
             special="2 keep-alive conns; query and form-body params; -2010/-2011/-1007 "
                     "errors; ~150 KB openOrders body over many segments; gzip+chunked "
                     "exchangeInfo; PUT amend keepPriority"),
    Scenario(name="binance_wsapi_tls13", file="binance_wsapi_tls13.pcap",
             module=venue_binance_ws, ports=(443, 9443),
             hosts=("ws-api.binance.com", "stream.binance.com"),
             special="WS API + market-data stream (~300 msg/s); permessage-deflate; "
                     "out-of-order replies; reused ids; executionReport pushes; fragmented "
                     "client and server messages; >64 KB message; pings"),
    Scenario(name="okx_ws_tls12", file="okx_ws_tls12.pcap", module=venue_okx,
             ports=(8443,), hosts=("ws.okx.com",),
             special="TLS 1.2 AES-GCM; login op; order/cancel-order/amend-order with id; "
                     "sCode rejects; orders-channel pushes; text ping/pong; permessage-deflate"),
    Scenario(name="deribit_jsonrpc_tls13", file="deribit_jsonrpc_tls13.pcap",
             module=venue_deribit, ports=(443,), hosts=("www.deribit.com",),
             special="JSON-RPC 2.0 over uncompressed WS; public/auth client_credentials; "
                     "buy/sell/cancel/edit; JSON-RPC error objects; reused ids; "
                     "user.orders subscription pushes"),
    Scenario(name="fix44_plain", file="fix44_plain.pcap", module=venue_fix,
             ports=(9878,), hosts=(),
             special="FIX 4.4 plain TCP; Logon with 554/96; heartbeats + TestRequest; "
                     "D/F/G; 8 new/canceled/replaced/rejected; 9 reject; ResendRequest -> "
                     "43=Y resend; several msgs per segment; one msg split over 2 segments"),
    Scenario(name="binance_rest_dsb", file="binance_rest_dsb.pcapng",
             module=venue_binance_rest, ports=(443,), hosts=("api.binance.com",),
             capture="dumpcap", small=True,
             special="dumpcap pcapng; TLS key log embedded in a Decryption Secrets Block"),
    Scenario(name="fix44_sll2", file="fix44_sll2.pcap", module=venue_fix, ports=(9878,),
             hosts=(), capture="tcpdump-any", small=True,
             special="tcpdump -i any: Linux cooked capture v2 (SLL2) link type"),
    Scenario(name="lossy_rest_tls13", file="lossy_rest_tls13.pcap",
             module=venue_binance_rest, ports=(443,), hosts=("api.binance.com",), lossy=True,
             special="through a userspace relay: ~2% drop, ~1% dup, ~2% reorder, 1 ms "
                     "delay; real retransmissions, dup ACKs, out-of-order; client-side "
                     "capture on a veth (tx checksums left to offload)"),
    Scenario(name="binance_rest_h2", file="binance_rest_h2.pcap", module=venue_binance_h2,
             ports=(443,), hosts=("api.binance.com",),
             special="HTTP/2 (ALPN h2): httpx http2=True against an h2 server; 2-7 "
                     "streams in flight, answered out of order; RST_STREAM REFUSED_STREAM "
                     "refusals; -2010/-2011/-1007 errors; gzip exchangeInfo; HPACK "
                     "dynamic table; GOAWAY at close"),
    Scenario(name="binance_rest_h2_curl", file="binance_rest_h2_curl.pcap",
             module=venue_binance_h2_curl, ports=(443,), hosts=("api.binance.com",),
             special="HTTP/2 sent by the curl CLI (libcurl + nghttp2): one `curl --parallel` "
                     "process per wave, 2-9 streams multiplexed on its connection; nghttp2's "
                     "HPACK and SETTINGS; user-agent/accept on every request; "
                     "-2010/-2011/-1007 errors"),
    Scenario(name="rotated_binance", file="rotated_binance", module=venue_ccxt_binance,
             ports=(443, 9443), hosts=("api.binance.com", "ws-api.binance.com"),
             capture="rotate",
             special="ccxt 4.5 (REST + ccxt.pro WS API) trading ~12 s; tcpdump -G 2 -z gzip "
                     "rotation (files named by tcpdump, the last one left uncompressed); "
                     "cancels by orderId without a client id; cancelReplace amends; "
                     "permessage-deflate"),
    Scenario(name="midsession_binance", file="midsession_binance", module=venue_ccxt_binance,
             ports=(443, 9443), hosts=("api.binance.com", "ws-api.binance.com"),
             capture="midsession",
             special="tcpdump started after every session opened and traded (ccxt REST TLS "
                     "1.3, WS API TLS 1.3 with and without permessage-deflate, REST TLS 1.2); "
                     "truth extra.phase before/after; reference/ holds the whole session "
                     "captured from the start (the oracle)"),
)}
ROTATE_SECONDS = 2
ROTATE_NAME = "binance-%Y%m%d-%H%M%S.pcap"
MIDSESSION_NAME = "binance-midsession.pcap"
REFERENCE_NAME = "reference/binance-full.pcap"


# ===================================================================== processes
def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def _netns_exec(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def _read_until(proc: subprocess.Popen[str], stream_name: str, marker: str,
                timeout: float) -> None:
    """Wait until `marker` appears on a line of the process's stdout or stderr."""
    stream = getattr(proc, stream_name)
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            continue
        line = stream.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            sel.close()
            return
    sel.close()
    raise RuntimeError(f"{proc.args!r}: no {marker!r} within {timeout}s: {''.join(seen)!r}")


def _stop(proc: subprocess.Popen[str], sig: int, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_capture(ns: str, scn: Scenario, iface: str, path: Path, *, rotate: bool = False
                  ) -> subprocess.Popen[str]:
    bpf = " or ".join(f"tcp port {p}" for p in scn.ports)
    if scn.capture == "dumpcap":
        cmd = ["dumpcap", "-q", "-i", iface, "-f", bpf, "-w", str(path)]
        marker = "Capturing on"
    else:
        cmd = ["tcpdump", "-i", "any" if scn.capture == "tcpdump-any" else iface,
               "--time-stamp-precision=nano", "-Z", "root", "-n", "-w", str(path), bpf]
        if rotate:  # path is a strftime pattern; each closed file is gzip'd
            cmd[-1:-1] = ["-G", str(ROTATE_SECONDS), "-z", "gzip"]
        marker = "listening on"
    proc = subprocess.Popen(_netns_exec(ns, *cmd), stderr=subprocess.PIPE, text=True)
    _read_until(proc, "stderr", marker, READY_TIMEOUT_S)
    time.sleep(0.3)  # the marker is printed after activation; give the ring a moment
    return proc


def spawn_role(ns: str, role: str, scn: Scenario, args: argparse.Namespace, pki_dir: Path,
               bind_ip: str = "127.0.0.1", connect_ip: str = "127.0.0.1",
               extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(HERE / "generate.py"), "--role", role, "--only", scn.name,
           "--out", str(args.out), "--pki", str(pki_dir), "--seed", str(args.seed),
           "--bind", bind_ip, "--connect", connect_ip, *extra]
    out = None if role == "client" else subprocess.PIPE
    if role == "client" and scn.capture == "midsession":  # OPEN on stdout, GO on stdin
        return subprocess.Popen(_netns_exec(ns, *cmd), stdout=subprocess.PIPE,
                                stdin=subprocess.PIPE, text=True)
    return subprocess.Popen(_netns_exec(ns, *cmd), stdout=out, text=True)


# ===================================================================== namespaces
@contextlib.contextmanager
def loopback_netns() -> Iterator[str]:
    ns = f"pcfgen-{os.getpid()}"
    _sh("ip", "netns", "add", ns)
    try:
        _sh("ip", "-n", ns, "link", "set", "lo", "mtu", "1500", "up")
        _sh("ip", "-n", ns, "link", "set", "dev", "lo", "gso_max_segs", "1")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


@contextlib.contextmanager
def lossy_netns() -> Iterator[None]:
    cli, srv, rly = LOSSY_NETNS
    for ns in LOSSY_NETNS:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    try:
        for ns in LOSSY_NETNS:
            _sh("ip", "netns", "add", ns)
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw",
                "net.ipv6.conf.default.disable_ipv6=1")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for ns, ip, peer in ((cli, LOSSY_CLIENT_IP, relay.CLIENT_SIDE),
                             (srv, LOSSY_SERVER_IP, relay.SERVER_SIDE)):
            _sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
                "netns", rly)
            _sh("ip", "-n", ns, "link", "set", "dev", "eth0", "gso_max_segs", "1")
            _sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _sh("ip", "-n", ns, "link", "set", "eth0", "up")
            _sh("ip", "-n", rly, "link", "set", peer, "promisc", "on", "up")
        yield
    finally:
        for ns in LOSSY_NETNS:
            subprocess.run(["ip", "netns", "del", ns], check=False)


# ===================================================================== one scenario
def _run_traffic(scn: Scenario, args: argparse.Namespace, pki_dir: Path, cap_path: Path,
                 cap_ns: str, iface: str, srv_ns: str, cli_ns: str,
                 bind_ip: str, connect_ip: str) -> None:
    cap = start_capture(cap_ns, scn, iface, cap_path)
    srv: subprocess.Popen[str] | None = None
    try:
        srv = spawn_role(srv_ns, "server", scn, args, pki_dir, bind_ip=bind_ip)
        assert srv.stdout is not None
        _read_until(srv, "stdout", "READY", READY_TIMEOUT_S)
        cli = spawn_role(cli_ns, "client", scn, args, pki_dir, connect_ip=connect_ip)
        if cli.wait(timeout=CLIENT_TIMEOUT_S) != 0:
            raise RuntimeError(f"{scn.name}: client exited with {cli.returncode}")
        time.sleep(0.5)  # let FIN/ACKs and delayed segments land in the capture
    finally:
        if srv is not None:
            _stop(srv, signal.SIGTERM)
        time.sleep(0.3)
        _stop(cap, signal.SIGINT)


def _midsession(scn: Scenario, args: argparse.Namespace, pki_dir: Path, ns: str,
                folder: Path) -> None:
    """The reference capture from the start; the client opens its sessions and trades;
    then the second capture starts and the client is told to trade on."""
    (folder / "reference").mkdir()
    ref = start_capture(ns, scn, "lo", folder / REFERENCE_NAME)
    srv: subprocess.Popen[str] | None = None
    mid: subprocess.Popen[str] | None = None
    cli: subprocess.Popen[str] | None = None
    try:
        srv = spawn_role(ns, "server", scn, args, pki_dir)
        _read_until(srv, "stdout", "READY", READY_TIMEOUT_S)
        cli = spawn_role(ns, "client", scn, args, pki_dir)
        _read_until(cli, "stdout", "OPEN", CLIENT_TIMEOUT_S)
        mid = start_capture(ns, scn, "lo", folder / MIDSESSION_NAME)
        assert cli.stdin is not None and cli.stdout is not None
        cli.stdin.write("GO\n")
        cli.stdin.flush()
        if cli.wait(timeout=CLIENT_TIMEOUT_S) != 0:
            raise RuntimeError(f"{scn.name}: client exited with {cli.returncode}")
        print(cli.stdout.read().strip(), flush=True)
        time.sleep(0.5)
    finally:
        if cli is not None and cli.poll() is None:
            cli.kill()
        if srv is not None:
            _stop(srv, signal.SIGTERM)
        time.sleep(0.3)
        if mid is not None:
            _stop(mid, signal.SIGINT)
        _stop(ref, signal.SIGINT)


def run_folder_scenario(scn: Scenario, args: argparse.Namespace, pki_dir: Path) -> None:
    """A recording in its own folder: rotated files, or a capture begun mid-session."""
    import shutil

    folder = args.out / scn.file
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sub = argparse.Namespace(**vars(args))
    sub.out = folder  # key log, truth and derived secrets go into the folder
    print(f"== {scn.name}", flush=True)
    with loopback_netns() as ns:
        if scn.capture == "midsession":
            _midsession(scn, sub, pki_dir, ns, folder)
            return
        cap = start_capture(ns, scn, "lo", folder / ROTATE_NAME, rotate=True)
        srv = None
        try:
            srv = spawn_role(ns, "server", scn, sub, pki_dir)
            _read_until(srv, "stdout", "READY", READY_TIMEOUT_S)
            cli = spawn_role(ns, "client", scn, sub, pki_dir)
            if cli.wait(timeout=CLIENT_TIMEOUT_S) != 0:
                raise RuntimeError(f"{scn.name}: client exited with {cli.returncode}")
            time.sleep(0.5)
        finally:
            if srv is not None:
                _stop(srv, signal.SIGTERM)
            time.sleep(0.3)
            _stop(cap, signal.SIGINT)
    deadline = time.monotonic() + 20  # gzip children of -z may still be running
    while any(p.suffix == ".pcap" and p.with_name(p.name + ".gz").exists()
              for p in folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)


def run_scenario(scn: Scenario, args: argparse.Namespace, pki_dir: Path) -> None:
    out: Path = args.out
    if scn.folder:
        run_folder_scenario(scn, args, pki_dir)
        return
    for suffix in (".keylog", ".truth.jsonl"):
        (out / f"{scn.name}{suffix}").unlink(missing_ok=True)
    final = out / scn.file
    raw = out / (f".{scn.name}.raw.pcapng" if scn.capture == "dumpcap" else scn.file)
    print(f"== {scn.name}", flush=True)
    if scn.lossy:
        cli, srv, rly = LOSSY_NETNS
        with lossy_netns():
            rel = spawn_role(rly, "relay", scn, args, pki_dir)
            try:
                assert rel.stdout is not None
                _read_until(rel, "stdout", "READY", READY_TIMEOUT_S)
                _run_traffic(scn, args, pki_dir, raw, cli, "eth0", srv, cli,
                             LOSSY_SERVER_IP, LOSSY_SERVER_IP)
            finally:
                _stop(rel, signal.SIGTERM)
                if rel.stdout is not None:
                    print(rel.stdout.read().strip(), flush=True)
    else:
        with loopback_netns() as ns:
            _run_traffic(scn, args, pki_dir, raw, ns, "lo", ns, ns, "127.0.0.1", "127.0.0.1")
    if scn.capture == "dumpcap":
        keylog = out / f"{scn.name}.keylog"
        _sh("editcap", "--inject-secrets", f"tls,{keylog}", str(raw), str(final))
        raw.unlink()
        keylog.unlink()  # embedded in the pcapng now; no separate file on purpose


# ===================================================================== role mode
def run_role(args: argparse.Namespace) -> None:
    scn = SCENARIOS[args.only]
    ctx = RunCtx(scenario=scn.name, out_dir=args.out, pki_dir=args.pki, bind_ip=args.bind,
                 connect_ip=args.connect, seed=args.seed, small=scn.small)
    if args.role == "relay":
        relay.main(seed=args.seed)
    elif args.role == "server":
        asyncio.run(scn.module.serve(ctx))
    else:
        asyncio.run(scn.module.client(ctx))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", choices=[[], *sorted(SCENARIOS)],
                        metavar="NAME", help="generate only these scenarios (same as --only)")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append",
                        help="generate only this scenario (repeatable)")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--manifest-only", action="store_true",
                        help="only rewrite MANIFEST.md from the files already in --out")
    parser.add_argument("--role", choices=("server", "client", "relay"), help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bind", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--connect", default="127.0.0.1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.names:
        args.only = [*(args.only or []), *args.names]
    if args.role:
        args.only = args.only[0]
        run_role(args)
        return 0
    if args.manifest_only:
        import manifest

        manifest.write_manifest(args.out, SCENARIOS)
        return 0
    if os.geteuid() != 0:
        parser.error("must run as root (network namespaces, tcpdump)")
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SCENARIOS)
    hosts = sorted({h for s in SCENARIOS.values() for h in s.hosts})
    with tempfile.TemporaryDirectory(prefix="pcf-pki-") as tmp:
        pki_dir = Path(tmp)
        pki.make_pki(pki_dir, hosts)
        os.chmod(tmp, 0o755)
        for name in names:
            run_scenario(SCENARIOS[name], args, pki_dir)
            side = args.out / name / f".{name}.derived.json"
            if SCENARIOS[name].folder and side.exists():
                side.rename(args.out / side.name)
    import manifest  # late: only needed by the orchestrator

    manifest.update_secrets(args.out, names, FIXED_SECRETS)
    manifest.write_manifest(args.out, SCENARIOS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
