"""Checks on the committed sample captures in sample_pcaps/ (no regeneration here).

MANIFEST.md is the contract: every capture it lists must exist with the stated
sha256; tshark (an independent decoder) must read the stated packet count, decrypt
the TLS ones with their key log (or the embedded Decryption Secrets Block), see the
special features the manifest claims (retransmissions and out-of-order segments,
compressed and fragmented WebSocket frames, FIX framing quirks), and each ground
truth log must hold as many order actions as the manifest says.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
MANIFEST = SAMPLES / "MANIFEST.md"
TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")

# Server names each TLS scenario must announce in its ClientHello (SNI).
EXPECTED_SNI = {
    "binance_rest_tls13": {"api.binance.com"},
    "binance_wsapi_tls13": {"ws-api.binance.com", "stream.binance.com"},
    "okx_ws_tls12": {"ws.okx.com"},
    "deribit_jsonrpc_tls13": {"www.deribit.com"},
    "binance_rest_dsb": {"api.binance.com"},
    "lossy_rest_tls13": {"api.binance.com"},
    "binance_rest_h2": {"api.binance.com"},
    "binance_rest_h2_curl": {"api.binance.com"},
}
TRUTH_FIELDS = {"scenario", "venue", "endpoint", "kind", "conn_id", "local_port", "request_id",
                "client_order_id", "orig_client_order_id", "outcome", "send_mono_ns",
                "recv_mono_ns"}
FIX_HEADER = re.compile(rb"8=FIX\.4\.4\x019=(\d+)\x01")


def _table(title: str) -> list[dict[str, str]]:
    """Rows of the Markdown table that follows the heading `## title`."""
    text = MANIFEST.read_text()
    section = text.split(f"## {title}", 1)[1]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    end = next((i for i, ln in enumerate(lines[2:], 2) if ln.startswith("| file |")), len(lines))
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")), strict=True))
            for ln in lines[2:end]]


CAPTURES = _table("Captures")
SETS = _table("Capture sets")
COMPANIONS = _table("Companion files")
BY_SCENARIO = {row["scenario"]: row for row in CAPTURES}
TLS_ROWS = [r for r in CAPTURES if r["TLS"] != "-"]


def _ids(rows: list[dict[str, str]]) -> list[str]:
    return [r["file"] for r in rows]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tshark(path: Path, *args: str, keylog: bool = True) -> list[str]:
    cmd = [TSHARK or "tshark", "-n", "-r", str(path)]
    log = SAMPLES / f"{path.stem}.keylog"
    if keylog and log.exists():
        cmd += ["-o", f"tls.keylog_file:{log}"]
    out = subprocess.run(cmd + list(args), check=True, capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def _count(path: Path, display_filter: str, *extra: str, keylog: bool = True) -> int:
    return len(_tshark(path, *extra, "-Y", display_filter, "-T", "fields", "-e",
                       "frame.number", keylog=keylog))


# ----------------------------------------------------------------- manifest & files
def test_manifest_lists_every_scenario() -> None:
    assert {r["scenario"] for r in CAPTURES} >= {
        "binance_rest_tls13", "binance_wsapi_tls13", "okx_ws_tls12", "deribit_jsonrpc_tls13",
        "fix44_plain", "binance_rest_dsb", "fix44_sll2", "lossy_rest_tls13"}
    total = sum((SAMPLES / r["file"]).stat().st_size for r in CAPTURES)
    assert total < 5 * 2**20, "committed captures should stay small"


@pytest.mark.parametrize("row", CAPTURES, ids=_ids(CAPTURES))
def test_capture_sha256(row: dict[str, str]) -> None:
    path = SAMPLES / row["file"]
    assert path.exists()
    assert _sha256(path) == row["sha256"]


@pytest.mark.parametrize("row", COMPANIONS, ids=_ids(COMPANIONS))
def test_companion_sha256(row: dict[str, str]) -> None:
    assert _sha256(SAMPLES / row["file"]) == row["sha256"]


@pytest.mark.parametrize("row", CAPTURES, ids=_ids(CAPTURES))
def test_truth_log_matches_manifest(row: dict[str, str]) -> None:
    lines = (SAMPLES / f"{row['scenario']}.truth.jsonl").read_text().splitlines()
    records = [json.loads(ln) for ln in lines]
    assert len(records) == int(row["order actions"]) > 0
    for rec in records:
        assert rec.keys() >= TRUTH_FIELDS
        assert rec["scenario"] == row["scenario"]
        assert rec["kind"] in {"new", "cancel", "amend"}
        assert rec["outcome"] in {"accepted", "rejected", "error"}
        assert 0 < rec["send_mono_ns"] < rec["recv_mono_ns"]
        assert rec["local_port"] > 0
    kinds = {r["kind"] for r in records}
    assert kinds == {"new", "cancel", "amend"} or row["scenario"] == "fix44_sll2"
    assert any(r["outcome"] == "rejected" for r in records)


def test_secrets_file_lists_fixed_and_derived() -> None:
    data = json.loads((SAMPLES / "secrets.json").read_text())
    assert len(data["fixed"]) >= 10
    assert all(len(v) >= 8 for v in data["fixed"].values())
    for scenario in ("binance_rest_tls13", "binance_wsapi_tls13", "okx_ws_tls12"):
        assert data["derived"][scenario], scenario


# ----------------------------------------------------------------- capture sets (folders)
SET_FILES = {r["scenario"]: sorted(SAMPLES / c["file"] for c in COMPANIONS
                                   if c["kind"] == "capture set file"
                                   and c["file"].startswith(r["file"]))
             for r in SETS}


def test_capture_sets_are_listed() -> None:
    assert {r["scenario"] for r in SETS} == {"rotated_binance", "midsession_binance"}
    total = sum(p.stat().st_size for p in SAMPLES.glob("*_binance/**/*") if p.is_file())
    assert total < 2 * 2**20, "committed capture sets should stay small"


@pytest.mark.parametrize("row", SETS, ids=_ids(SETS))
def test_capture_set_files_and_id(row: dict[str, str]) -> None:
    folder = SAMPLES / row["file"]
    files = SET_FILES[row["scenario"]]
    # every capture file in the folder is listed, and only those (not reference/)
    on_disk = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(
        "binance-"))
    assert files == on_disk and len(files) == int(row["files"])
    shas = sorted(_sha256(p) for p in files)
    assert hashlib.sha256("".join(shas).encode()).hexdigest() == row["sha256"]
    truth = [json.loads(ln) for ln in
             (folder / f"{row['scenario']}.truth.jsonl").read_text().splitlines()]
    assert len(truth) == int(row["order actions"])
    for rec in truth:
        assert rec.keys() >= TRUTH_FIELDS and rec["scenario"] == row["scenario"]
        assert 0 < rec["send_mono_ns"] < rec["recv_mono_ns"] and rec["local_port"] > 0
    assert {r["kind"] for r in truth} == {"new", "cancel", "amend"}
    assert {r["outcome"] for r in truth} == {"accepted", "rejected", "error"}
    # ccxt cancels by orderId: no client id of the cancel's own
    assert any(r["kind"] == "cancel" and r["client_order_id"] is None
               and r["orig_client_order_id"] is None for r in truth)
    data = json.loads((SAMPLES / "secrets.json").read_text())
    assert data["derived"][row["scenario"]]  # the signatures ccxt computed


@needs_tshark
@pytest.mark.parametrize("row", SETS, ids=_ids(SETS))
def test_tshark_reads_the_capture_sets(row: dict[str, str]) -> None:
    files = SET_FILES[row["scenario"]]
    frames = sum(len(_tshark(p, "-T", "fields", "-e", "frame.number", keylog=False))
                 for p in files)
    assert frames == int(row["packets"])
    ports = {tuple(sorted(r.split("\t"))) for p in files
             for r in _tshark(p, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.dstport",
                              keylog=False)}
    assert len(ports) == int(row["connections"])
    if row["scenario"] == "rotated_binance":
        assert [p.suffix for p in files] == [".gz"] * (len(files) - 1) + [".pcap"]
        assert row["TLS"] == "TLS 1.3"
    else:  # begun mid-session: not one handshake in it; all of them in reference/
        hellos = _count(files[0], "tls.handshake", keylog=False)
        assert hellos == 0
        ref = SAMPLES / row["file"] / "reference" / "binance-full.pcap"
        assert _count(ref, "tls.handshake.type == 1", keylog=False) == 4
        assert row["TLS"] == "TLS 1.2, TLS 1.3"


# ----------------------------------------------------------------- tshark cross-checks
@needs_tshark
@pytest.mark.parametrize("row", CAPTURES, ids=_ids(CAPTURES))
def test_tshark_packet_count(row: dict[str, str]) -> None:
    frames = _tshark(SAMPLES / row["file"], "-T", "fields", "-e", "frame.number")
    assert len(frames) == int(row["packets"])
    streams = _tshark(SAMPLES / row["file"], "-T", "fields", "-e", "tcp.stream")
    assert len(set(streams)) == int(row["connections"])


@needs_tshark
@pytest.mark.parametrize("row", TLS_ROWS, ids=_ids(TLS_ROWS))
def test_tls_decrypts_with_key_log(row: dict[str, str]) -> None:
    path = SAMPLES / row["file"]
    app = "http || websocket || http2"
    prefs = ["-o", "tcp.reassemble_out_of_order:TRUE"]
    decrypted = _count(path, app, *prefs)
    assert decrypted > 0
    if path.suffix == ".pcapng":
        assert not (SAMPLES / f"{path.stem}.keylog").exists()  # secrets are embedded
    else:
        assert _count(path, app, *prefs, keylog=False) == 0  # only the key log unlocks it
    sni = set(_tshark(path, "-Y", "tls.handshake.type == 1", "-T", "fields",
                      "-e", "tls.handshake.extensions_server_name"))
    assert sni == EXPECTED_SNI[row["scenario"]]


@needs_tshark
def test_rest_requests_carry_host_and_signed_key() -> None:
    path = SAMPLES / BY_SCENARIO["binance_rest_tls13"]["file"]
    secrets = json.loads((SAMPLES / "secrets.json").read_text())
    rows = _tshark(path, "-Y", "http.request", "-T", "fields", "-e", "http.host",
                   "-e", "http.request.uri", "-e", "http.request.line")
    assert rows and all(r.startswith("api.binance.com\t") for r in rows)
    keyed = [r for r in rows if "X-MBX-APIKEY" in r]
    assert keyed and all(secrets["fixed"]["binance_api_key"] in r for r in keyed)
    signed = [r for r in rows if "/api/v3/order?" in r and "signature=" in r]
    derived = set(secrets["derived"]["binance_rest_tls13"])
    assert signed and all(re.search(r"signature=([0-9a-f]{64})", r)[1] in derived  # type: ignore[index]
                          for r in signed)


@needs_tshark
def test_binance_ws_frames_are_compressed_fragmented_and_large() -> None:
    path = SAMPLES / BY_SCENARIO["binance_wsapi_tls13"]["file"]
    rows = _tshark(path, "-Y", "websocket", "-T", "fields", "-E", "occurrence=a",
                   "-e", "websocket.opcode", "-e", "websocket.rsv",
                   "-e", "websocket.payload_length_ext_64")
    opcodes = {op for r in rows for op in r.split("\t")[0].split(",")}
    assert {"0", "1", "8", "9", "10"} <= opcodes  # continuation, text, close, ping, pong
    assert any("0x04" in r.split("\t")[1] for r in rows)  # RSV1: permessage-deflate
    ext = [int(v) for r in rows for v in r.split("\t")[2].split(",") if v]
    assert ext and max(ext) > 65_535


@needs_tshark
def test_lossy_capture_has_real_tcp_trouble() -> None:
    path = SAMPLES / BY_SCENARIO["lossy_rest_tls13"]["file"]
    assert _count(path, "tcp.analysis.retransmission") > 0
    assert _count(path, "tcp.analysis.out_of_order") > 0
    assert _count(path, "tcp.analysis.duplicate_ack") > 0


@needs_tshark
def test_sll2_link_type() -> None:
    path = SAMPLES / BY_SCENARIO["fix44_sll2"]["file"]
    protos = _tshark(path, "-T", "fields", "-e", "frame.protocols")
    assert protos and all(p.startswith("sll:") for p in protos)


# ----------------------------------------------------------------- FIX framing
def _fix_streams(path: Path) -> dict[str, list[bytes]]:
    """TCP payloads per source port, in capture order (loopback: no loss)."""
    out: dict[str, list[bytes]] = defaultdict(list)
    for row in _tshark(path, "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.srcport",
                       "-e", "tcp.payload"):
        port, _, hexdata = row.partition("\t")
        out[port].append(bytes.fromhex(hexdata.replace(":", "")))
    return out


def _fix_messages(stream: bytes) -> list[bytes]:
    """Split a FIX byte stream, checking BodyLength (9) and CheckSum (10) of each message."""
    msgs, pos = [], 0
    while pos < len(stream):
        head = FIX_HEADER.match(stream, pos)
        assert head, f"no FIX header at {pos}"
        body_end = head.end() + int(head[1])
        trailer = stream[body_end:body_end + 7]
        assert re.fullmatch(rb"10=\d{3}\x01", trailer), trailer
        assert int(trailer[3:6]) == sum(stream[pos:body_end]) % 256
        msgs.append(stream[pos:body_end + 7])
        pos = body_end + 7
    return msgs


@needs_tshark
def test_fix_framing_and_special_segments() -> None:
    path = SAMPLES / BY_SCENARIO["fix44_plain"]["file"]
    streams = _fix_streams(path)
    assert len(streams) == 2
    all_msgs = {port: _fix_messages(b"".join(segs)) for port, segs in streams.items()}
    types = {re.search(rb"\x0135=([^\x01]+)", m)[1] for ms in all_msgs.values()  # type: ignore[index]
             for m in ms}
    assert {b"A", b"0", b"1", b"2", b"D", b"F", b"G", b"8", b"9", b"5"} <= types
    assert any(b"\x0143=Y\x01" in m and b"\x01122=" in m for ms in all_msgs.values() for m in ms)
    segments = [s for segs in streams.values() for s in segs]
    assert any(len(FIX_HEADER.findall(s)) >= 3 for s in segments)  # several in one segment
    assert any(not s.startswith(b"8=FIX") for s in segments)  # a message split across two
