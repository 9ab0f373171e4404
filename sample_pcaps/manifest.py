"""Describe the generated captures: MANIFEST.md (human + test readable) and secrets.json.

How this works: after the generator has run, every capture named in the scenario
registry that exists in the output directory is measured with the Wireshark
tools (capinfos for format / link type / packet count, tshark for the TCP
connections and the TLS version and cipher from the ServerHello), its truth log
lines are counted, and the two Markdown tables in MANIFEST.md are rewritten.
`tests/e2e/test_samples.py` parses the first table, so keep its columns stable:

    | file | scenario | format | link type | TLS | cipher | packets | connections |
    | order actions | special | sha256 |
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LINK_TYPES = {
    "ether": "Ethernet (LINKTYPE_ETHERNET 1)",
    "linux-sll2": "Linux cooked v2 (LINKTYPE_LINUX_SLL2 276)",
    "linux-sll": "Linux cooked (LINKTYPE_LINUX_SLL 113)",
}
FORMATS = {
    "nsecpcap": "pcap (ns)",
    "pcap": "pcap (µs)",
    "pcapng": "pcapng",
}
TLS_VERSIONS = {"0x0304": "TLS 1.3", "0x0303": "TLS 1.2"}
CIPHERS = {
    "0x1301": "TLS_AES_128_GCM_SHA256",
    "0x1302": "TLS_AES_256_GCM_SHA384",
    "0x1303": "TLS_CHACHA20_POLY1305_SHA256",
    "0xc02b": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "0xc02c": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "0xc02f": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
}

HEADER = """# sample_pcaps — real captures of a mock exchange

Every file here is produced by `python sample_pcaps/generate.py` (as root; see the
docstring at the top of that script). Real network stacks and real libraries on both
sides: aiohttp (HTTPS REST server and client), httpx with `http2=True` against an
`h2`-based server (REST over HTTP/2), `websockets` (WebSocket servers and
clients, default permessage-deflate), an asyncio FIX 4.4 acceptor/initiator built
on simplefix, and ccxt 4.5 (`ccxt.pro.binance`: REST and the WebSocket API, as users
run it) for the two recordings kept in folders. Each scenario runs in a private
network namespace whose loopback has MTU 1500 and `gso_max_segs 1`, so segments are
real 1448-byte TCP segments; the lossy scenario goes through a userspace relay
between three namespaces. TLS clients send the venue's real host name as SNI and
Host while dialling the mock's address.

Next to each capture `NAME.*`:
- `NAME.keylog`: NSS key log written by the client (`SSLContext.keylog_filename`);
  for the pcapng the key log is embedded as a Decryption Secrets Block instead;
- `NAME.truth.jsonl`: the client's ground truth, one JSON object per order action
  (scenario, venue, endpoint, kind new/cancel/amend, conn_id, local_port, request_id,
  client_order_id, orig_client_order_id, exchange_order_id, outcome
  accepted/rejected/error, status, error_code, client-side send/receive monotonic and
  wall-clock ns);
- `secrets.json`: every fake secret the generator used (`fixed`) and the per-run
  signatures it computed (`derived`), so tests can assert none reaches a table.

Server delay per order is lognormal (median ~1 ms, clipped to 20 ms, seeded).
WebSocket replies may come back out of request order where the venue allows it.

Notes for readers of these files:
- Loopback captures have link type Ethernet with all-zero MACs, 127.0.0.1 on both
  ends; the venue is only visible through SNI / Host (or FIX comp ids 49/56 =
  PCFTRADER1 / MOCKEX on port 9878).
- Python's `ssl` always negotiates TLS_AES_256_GCM_SHA384 for TLS 1.3; the other
  suites are covered by `../shared/public-captures/`.
- `lossy_rest_tls13` is captured on the client's veth: outgoing segments carry
  partial TCP checksums (checksum offload), as on real hosts. tshark needs
  `-o tcp.reassemble_out_of_order:TRUE` to decode every HTTP message in it.
- tshark 4.0 stops inflating a permessage-deflate direction after its first
  fragmented compressed message (`binance_wsapi_tls13` has such messages in both
  directions); use another decoder as the oracle there.
- Truth times: `*_mono_ns` are the client's monotonic clock; `*_wall_ns` are
  `time.time_ns()` on the same host as the capture, so they are comparable to
  packet timestamps (send happens just before the first request byte is written).
- Regenerate with `python sample_pcaps/generate.py` (all) or `generate.py NAME`; rewrite
  this file alone with `--manifest-only`. Outputs differ per run (keys, times).

"""


SETS_NOTE = """Each of these is a folder holding one recording, with its key log and truth
beside the captures (`pcapflow ingest FOLDER --keylog FOLDER/NAME.keylog` takes the
capture files in it as one capture; the key log and truth are skipped by their first
bytes). `packets` and `connections` count the set's files (not `reference/`); `sha256`
is the SHA-256 of the files' SHA-256s, sorted (each file's is under Companion files).
`rotated_binance/`: tcpdump names the files by the time it opened each one; the first
file holds no packet (tcpdump opens it at start and rotates at the first packet 2 s
later); every closed file is gzip'd by `-z gzip`, the one open at SIGINT is not.
`midsession_binance/`: `binance-midsession.pcap` was started after every session had
its TLS handshake (and WebSocket upgrade) and had traded; `reference/` is a second
tcpdump that ran from before the client started: the mid-session capture is byte for
byte its tail, but each tcpdump's socket stamps packets itself (times differ by ~1 µs),
so tests stitch the reference's head to the mid-session capture for a nanosecond
oracle. Truth `extra.phase` is `before` (sent before the capture began) or `after`.
"""


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def capinfo(path: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    for line in _run("capinfos", "-t", "-E", "-c", "-M", str(path)).splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def tls_info(path: Path, keylog: Path | None) -> tuple[str, str]:
    cmd = ["tshark", "-n", "-r", str(path), "-Y", "tls.handshake.type == 2", "-T", "fields",
           "-e", "tls.handshake.extensions.supported_version", "-e", "tls.handshake.ciphersuite"]
    if keylog is not None:
        cmd[1:1] = ["-o", f"tls.keylog_file:{keylog}"]
    versions, ciphers = set(), set()
    for line in _run(*cmd).splitlines():
        ver, _, suite = line.partition("\t")
        versions.add(TLS_VERSIONS.get(ver, ver if ver else "TLS 1.2"))
        ciphers.add(CIPHERS.get(suite, suite))
    return ", ".join(sorted(versions)) or "-", ", ".join(sorted(ciphers)) or "-"


def connections(path: Path) -> int:
    out = _run("tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.stream")
    return len({s for s in out.split() if s})


def describe(out: Path, scn: Any) -> dict[str, Any]:
    path = out / scn.file
    info = capinfo(path)
    keylog = out / f"{scn.name}.keylog"
    tls = tls_info(path, keylog if keylog.exists() else None) if scn.hosts else ("-", "-")
    truth = out / f"{scn.name}.truth.jsonl"
    return {
        "file": scn.file, "scenario": scn.name,
        "format": FORMATS.get(info.get("File type", ""), info.get("File type")),
        "link": LINK_TYPES.get(info.get("File encapsulation", ""), info.get("File encapsulation")),
        "tls": tls[0], "cipher": tls[1], "packets": int(info["Number of packets"]),
        "connections": connections(path),
        "orders": sum(1 for _ in truth.open()) if truth.exists() else 0,
        "special": scn.special, "sha256": sha256_of(path),
    }


def _format(kind: str) -> str:
    base, gz = (kind[: -len(" (gzip compressed)")], True) if kind.endswith(
        " (gzip compressed)") else (kind, False)
    return FORMATS.get(base, base) + (" gzip" if gz else "")


def set_files(folder: Path) -> list[Path]:
    """The capture files of a folder scenario (top level only: reference/ is apart)."""
    return sorted(p for p in folder.iterdir() if p.is_file()
                  and (p.name.endswith((".pcap", ".pcapng", ".pcap.gz"))))


def _ports(path: Path) -> set[tuple[str, ...]]:
    out = _run("tshark", "-n", "-r", str(path), "-T", "fields", "-e", "tcp.srcport",
               "-e", "tcp.dstport")
    return {tuple(sorted(line.split("\t"))) for line in out.splitlines() if line.strip()}


def describe_set(out: Path, scn: Any) -> dict[str, Any]:
    """One row of the "Capture sets" table: a folder holding one recording."""
    folder = out / scn.file
    files = set_files(folder)
    infos = [capinfo(p) for p in files]
    keylog = folder / f"{scn.name}.keylog"
    tls_from = [folder / "reference" / p.name for p in (folder / "reference").iterdir()] \
        if (folder / "reference").is_dir() else files
    versions, ciphers = set(), set()
    for p in tls_from:
        v, c = tls_info(p, keylog if keylog.exists() else None)
        versions.update(x for x in v.split(", ") if x != "-")
        ciphers.update(x for x in c.split(", ") if x != "-")
    conns: set[tuple[str, ...]] = set()
    for p in files:
        conns |= _ports(p)
    truth = folder / f"{scn.name}.truth.jsonl"
    shas = sorted(sha256_of(p) for p in files)
    layout = {"rotate": "tcpdump -G rotation", "midsession": "begun mid-session"}[scn.capture]
    return {
        "file": f"{scn.file}/", "scenario": scn.name, "layout": layout, "files": len(files),
        "format": "+".join(sorted({_format(i.get("File type", "")) for i in infos})),
        "link": "+".join(sorted({LINK_TYPES.get(i.get("File encapsulation", ""), "?")
                                 for i in infos})),
        "tls": ", ".join(sorted(versions)) or "-", "cipher": ", ".join(sorted(ciphers)) or "-",
        "packets": sum(int(i["Number of packets"]) for i in infos), "connections": len(conns),
        "orders": sum(1 for _ in truth.open()) if truth.exists() else 0,
        "special": scn.special,
        "sha256": hashlib.sha256("".join(shas).encode()).hexdigest(),
    }


def write_manifest(out: Path, scenarios: Mapping[str, Any]) -> None:
    rows = [describe(out, s) for s in scenarios.values()
            if not s.folder and (out / s.file).exists()]
    sets = [describe_set(out, s) for s in scenarios.values()
            if s.folder and (out / s.file).is_dir()]
    lines = [HEADER, "## Captures\n",
             "| file | scenario | format | link type | TLS | cipher | packets | connections "
             "| order actions | special | sha256 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['file']} | {r['scenario']} | {r['format']} | {r['link']} | "
                     f"{r['tls']} | {r['cipher']} | {r['packets']} | {r['connections']} | "
                     f"{r['orders']} | {r['special']} | {r['sha256']} |")
    lines += ["", "## Capture sets\n", SETS_NOTE,
              "| file | scenario | layout | files | format | link type | TLS | cipher | packets "
              "| connections | order actions | special | sha256 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sets:
        lines.append(f"| {r['file']} | {r['scenario']} | {r['layout']} | {r['files']} | "
                     f"{r['format']} | {r['link']} | {r['tls']} | {r['cipher']} | "
                     f"{r['packets']} | {r['connections']} | {r['orders']} | {r['special']} | "
                     f"{r['sha256']} |")
    lines += ["", "## Companion files\n", "| file | kind | sha256 |", "|---|---|---|"]
    for s in scenarios.values():
        base = out / s.file if s.folder else out
        if s.folder and base.is_dir():
            for p in set_files(base):
                lines.append(f"| {s.file}/{p.name} | capture set file | {sha256_of(p)} |")
            ref = base / "reference"
            for p in sorted(ref.iterdir()) if ref.is_dir() else []:
                lines.append(f"| {s.file}/reference/{p.name} | reference capture (from the "
                             f"start) | {sha256_of(p)} |")
        for suffix, kind in ((".keylog", "TLS key log (NSS)"), (".truth.jsonl", "ground truth")):
            p = base / f"{s.name}{suffix}"
            if p.exists():
                name = f"{s.file}/{p.name}" if s.folder else p.name
                lines.append(f"| {name} | {kind} | {sha256_of(p)} |")
    lines.append(f"| secrets.json | fake secrets | {sha256_of(out / 'secrets.json')} |")
    (out / "MANIFEST.md").write_text("\n".join(lines) + "\n")


def update_secrets(out: Path, names: list[str], fixed: Mapping[str, str]) -> None:
    """Merge this run's per-scenario derived secrets into secrets.json."""
    path = out / "secrets.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data["fixed"] = dict(fixed)
    derived: dict[str, list[str]] = data.setdefault("derived", {})
    for name in names:
        side = out / f".{name}.derived.json"
        if side.exists():
            derived[name] = json.loads(side.read_text())
            side.unlink()
    data["derived"] = dict(sorted(derived.items()))
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
