"""Defined behaviour for broken input (issue 6, scope 2), one defect per test.

Captures are built byte by byte (``tests/fuzz/craft.py``) so each test breaks
exactly one field and asserts the documented outcome: a ``CaptureError`` with a
stable ``code`` for a file that is not a readable capture, otherwise an ingest
that finishes with what was readable and an ``anomalies`` row with a stable
code. Parser-level defects (TLS, WebSocket, inflate, FIX, key logs) are fed to
the session parsers directly.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

import craft
from pcapflow.parsers.errors import CaptureError
from pcapflow.parsers.events import Anomaly
from pcapflow.pipelines.ingest import IngestResult, ingest_capture
from pcapflow.pipelines.ingest.app_layer import AppLayer
from targets import _deflate, _frame

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_pcaps"

HTTP_GET = b"GET /api/v3/time HTTP/1.1\r\nHost: api.binance.com\r\n\r\n"
HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def conversation(port: int = 80) -> list[bytes]:
    """A complete little HTTP exchange: handshake, request, response, ACK."""
    return [*craft.handshake(port), craft.packet(HTTP_GET, seq=1000, ack=5000, port=port),
            craft.packet(HTTP_OK, out=False, seq=5000, ack=1000 + len(HTTP_GET), port=port),
            craft.packet(seq=1000 + len(HTTP_GET), ack=5000 + len(HTTP_OK), port=port,
                         flags=craft.TCP_ACK)]


def ingest(tmp_path: Path, data: bytes, name: str = "in.pcap") -> IngestResult:
    path = tmp_path / name
    path.write_bytes(data)
    return ingest_capture(str(path), tmp_path / "data", app_layer=AppLayer.factory([]))


def anomaly_rows(tmp_path: Path) -> list[dict]:
    root = tmp_path / "data" / "anomalies"
    return pq.read_table(root).to_pylist() if root.exists() else []


# --- capture files ------------------------------------------------------------------
def test_clean_conversation_has_no_anomaly(tmp_path: Path) -> None:
    r = ingest(tmp_path, craft.pcap(conversation()))
    assert r.packets == 6 and r.flows == 1 and r.anomaly_codes == {}
    assert r.rows["http_messages"] == 2


@pytest.mark.parametrize("cut", [1, 10, 30])
def test_truncated_mid_record_keeps_what_is_there(tmp_path: Path, cut: int) -> None:
    whole = craft.pcap(conversation())
    r = ingest(tmp_path, whole[:-cut])
    assert r.packets == 5  # the last record is cut: every earlier one is ingested
    assert r.anomaly_codes == {"truncated_record": 1}
    row = anomaly_rows(tmp_path)[0]
    assert row["layer"] == "capture" and row["code"] == "truncated_record"
    assert "packet 5" in row["detail"] and "byte offset" in row["detail"]


def test_truncated_inside_first_record_header(tmp_path: Path) -> None:
    r = ingest(tmp_path, craft.pcap(conversation())[:24 + 7])
    assert r.packets == 0 and r.anomaly_codes == {"truncated_record": 1}


@pytest.mark.parametrize(("data", "code"), [
    (b"", "truncated_header"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", "truncated_header"),  # pcap magic, 6 of 24 bytes
    (b"\x0a\x0d\x0d\x0a\x1c\x00", "truncated_header"),  # pcapng SHB type, then nothing
    (b"\x0a\x0d\x0d\x0a", "truncated_header"),  # found by the fuzzer (struct.error before)
    (b"GET / HTTP/1.1\r\nHost: example\r\n\r\n", "not_a_capture"),
    (b"\x1f\x8b\x08\x00garbage-after-gzip-magic", "bad_compression"),
], ids=["empty", "pcap_cut", "pcapng_cut", "pcapng_magic_only", "http_text", "bad_gzip"])
def test_unreadable_files_raise_capture_error(tmp_path: Path, data: bytes, code: str) -> None:
    with pytest.raises(CaptureError) as info:
        ingest(tmp_path, data)
    assert info.value.code == code
    assert str(tmp_path / "in.pcap") in str(info.value)  # the message names the file
    assert not list((tmp_path / "data").glob("*/capture_id=*")), "nothing committed"
    assert not list((tmp_path / "data" / ".staging").glob("*")), "staging cleaned up"


def test_pcapng_block_with_bad_length_stops_there(tmp_path: Path) -> None:
    r = ingest(tmp_path, craft.pcapng(conversation(), bad_length_at=3))
    assert r.packets == 3 and r.anomaly_codes == {"bad_block_length": 1}


@pytest.mark.parametrize("length", [7, 13, 1 << 30, 0xFFFFFFFC])
def test_pcapng_absurd_block_lengths_do_not_allocate(tmp_path: Path, length: int) -> None:
    r = ingest(tmp_path, craft.pcapng(conversation(), bad_length_at=0, bad_length=length))
    assert r.packets == 0 and r.anomaly_codes == {"bad_block_length": 1}


def test_caplen_over_snaplen_is_kept_and_noted_once(tmp_path: Path) -> None:
    data = craft.pcap_header(snaplen=64) + b"".join(
        craft.pcap_record(p, 10 * i) for i, p in enumerate(conversation()))
    r = ingest(tmp_path, data)
    assert r.packets == 6 and r.anomaly_codes == {"caplen_exceeds_snaplen": 1}
    assert r.rows["http_messages"] == 2  # the packets were kept whole


@pytest.mark.parametrize("caplen", [262145, 1 << 31, 0xFFFFFFFF])
def test_caplen_over_256k_stops_the_file(tmp_path: Path, caplen: int) -> None:
    data = craft.pcap(conversation()[:2]) + craft.pcap_record(b"\0" * 64, 99, caplen=caplen)
    r = ingest(tmp_path, data)
    assert r.packets == 2 and r.anomaly_codes == {"caplen_too_large": 1}


def test_zero_length_packets(tmp_path: Path) -> None:
    conv = conversation()
    data = craft.pcap_header() + b"".join(
        craft.pcap_record(p, 10 * i) for i, p in enumerate([b"", *conv, b""]))
    r = ingest(tmp_path, data)
    assert r.packets == 8 and r.anomaly_codes == {"truncated_link_header": 2}
    assert r.rows["http_messages"] == 2


@pytest.mark.parametrize(("pkt", "code"), [
    (craft.ETH_HEADER + craft.ipv4(craft.tcp(b"x"), ihl=4), "bad_ip_header"),
    (craft.ETH_HEADER + craft.ipv4(craft.tcp(b"x"), ihl=0), "bad_ip_header"),
    (craft.ETH_HEADER + craft.ipv4(craft.tcp(b"x"), total_length=9000),
     "ip_length_past_wire_length"),
    (craft.ETH_HEADER + craft.ipv4(craft.tcp(b"x"), total_length=10), "bad_ip_header"),
    (craft.packet(b"x", data_offset=4), "bad_tcp_data_offset"),
    (craft.packet(b"x", data_offset=0), "bad_tcp_data_offset"),
    (craft.ETH_HEADER + craft.ipv4(craft.tcp(b"", data_offset=15)[:20]), "bad_tcp_data_offset"),
    (craft.ETH_HEADER + b"\x45\x00", "truncated_ip_header"),
], ids=["ihl4", "ihl0", "total_length_past_wire", "total_length_under_header", "doff4", "doff0",
        "doff15_past_ip", "ip_cut"])
def test_bad_headers_are_anomalies(tmp_path: Path, pkt: bytes, code: str) -> None:
    r = ingest(tmp_path, craft.pcap([*conversation(), pkt]))
    expected = {code: 1}
    if code == "ip_length_past_wire_length":
        # the packet still carries its TCP byte: a flow begun without its SYN whose
        # byte starts no message of any protocol, which (no silent loss) says so
        expected["midstream_undetected"] = 1
    assert r.anomaly_codes == expected
    assert r.rows["http_messages"] == 2  # the good packets around it are unaffected
    (row,) = [a for a in anomaly_rows(tmp_path) if a["code"] == code]
    assert row["packet"] == 6 and "packet 6" in row["detail"]


def test_snaplen_cut_inside_tcp_header(tmp_path: Path) -> None:
    full = craft.packet(b"", data_offset=15)
    cut = craft.pcap_record(full[:14 + 20 + 20], 99, wirelen=len(full))
    r = ingest(tmp_path, craft.pcap(conversation()) + cut)
    # the cut record is stamped 99 s, before the conversation: a real clock step back
    assert r.anomaly_codes == {"truncated_transport_header": 1, "clock_step_back": 1}


def test_gigabyte_sequence_jumps_allocate_nothing(tmp_path: Path) -> None:
    """A segment 3 GiB ahead, and one 2^31 behind: a gap, no buffer of that size.

    Runs the ingest in a child allowed 1 GiB of address space beyond its loaded
    modules, so an allocation sized by the jump fails the test with MemoryError.
    """
    pkts = [*craft.handshake(80), craft.packet(HTTP_GET, seq=1000, ack=5000, port=80),
            craft.packet(b"z" * 1000, seq=1000 + (3 << 30), ack=5000, port=80),
            craft.packet(b"y" * 1000, seq=1000 - (1 << 31), ack=5000, port=80),
            craft.packet(HTTP_OK, out=False, seq=5000, ack=1000 + len(HTTP_GET), port=80),
            craft.packet(b"w" * 1000, out=False, seq=5000 + (1 << 31) + 5, ack=1000, port=80)]
    cap = tmp_path / "jump.pcap"
    cap.write_bytes(craft.pcap(pkts))
    code = textwrap.dedent(f"""
        import resource, pathlib
        from pcapflow.pipelines.ingest.app_layer import AppLayer
        from pcapflow.pipelines.ingest import ingest_capture
        vm = next(int(ln.split()[1]) for ln in open("/proc/self/status")
                  if ln.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
        r = ingest_capture({str(cap)!r}, pathlib.Path({str(tmp_path / 'data')!r}),
                           app_layer=AppLayer.factory([]))
        print(r.packets, r.rows.get("http_messages"), sorted(r.anomaly_codes))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_CORE, (0, 0)))
    assert out.returncode == 0, out.stderr[-3000:]
    packets, http, _codes = out.stdout.split(maxsplit=2)
    assert int(packets) == 8 and int(http) >= 1


# --- TLS ----------------------------------------------------------------------------
def _tls_record(ctype: int, body: bytes, length: int | None = None) -> bytes:
    n = len(body) if length is None else length
    return bytes([ctype, 3, 3]) + n.to_bytes(2, "big") + body


def _feed_all(session: object, pieces: list[tuple[str, bytes]]) -> list[object]:
    out: list[object] = []
    for i, (d, data) in enumerate(pieces):
        out += session.feed(d, data, 1000 * i, 1000 * i + 1)  # type: ignore[attr-defined]
    return out + session.finish(10**6)  # type: ignore[attr-defined]


def _codes(events: list[object]) -> list[str]:
    return [e.code for e in events if isinstance(e, Anomaly)]


@pytest.mark.parametrize("length", [(1 << 14) + 2048 + 1, 0xFFFF])
def test_tls_record_past_protocol_maximum_stops_direction(length: int) -> None:
    from pcapflow.parsers.tls import TlsSession

    hello = _tls_record(22, b"\x01\x00\x00\x00")  # an (empty) ClientHello
    events = _feed_all(TlsSession(1), [("out", hello),
                                       ("out", _tls_record(23, b"\0" * 64, length=length)),
                                       ("out", b"\0" * 70000)])
    assert "record_too_long" in _codes(events)
    records = [e for e in events if type(e).__name__ == "TlsRecord"]
    assert len(records) == 1  # nothing parsed after the bad header


def test_keylog_for_another_capture_is_missing_keys_not_corruption(tmp_path: Path) -> None:
    """The okx key log on a binance capture: every session reports missing keys."""
    cap = SAMPLES / "binance_rest_tls13.pcap"
    r = ingest_capture(str(cap), tmp_path / "data",
                       app_layer=AppLayer.factory([str(SAMPLES / "okx_ws_tls12.keylog")]))
    assert r.anomaly_codes.get("missing_keys") == r.flows
    assert set(r.anomaly_codes) == {"missing_keys"}, r.anomaly_codes
    assert "http_messages" not in r.rows


def test_keylog_with_garbage_lines_still_decrypts(tmp_path: Path) -> None:
    from pcapflow.parsers.tls import KeyLog

    good = (SAMPLES / "binance_rest_tls13.keylog").read_bytes()
    garbage = (b"# comment\n\nnot a key line\nCLIENT_RANDOM zz zz\n" + b"A" * 5000 + b"\n"
               b"CLIENT_RANDOM " + b"00" * 32 + b" " + b"11" * 200 + b"\n\xff\xfe\x00\x01\n")
    mixed = tmp_path / "mixed.keylog"
    mixed.write_bytes(garbage + good.replace(b"\n", b"\r\n") + garbage)
    log = KeyLog.from_file(mixed)
    keys = [ln for ln in good.splitlines() if ln.strip() and not ln.startswith(b"#")]
    assert log.bad_lines == 2 * 5 and log.lines == len(keys)
    r = ingest_capture(str(SAMPLES / "binance_rest_tls13.pcap"), tmp_path / "data",
                       app_layer=AppLayer.factory([str(mixed)]))
    assert "missing_keys" not in r.anomaly_codes
    assert r.rows["http_messages"] > 100


# --- WebSocket, inflate, HTTP bodies, FIX ----------------------------------------------
def test_websocket_64bit_length_is_refused_without_allocating() -> None:
    from pcapflow.parsers.websocket import WebSocketSession, WsMessage

    ws = WebSocketSession(1, extensions="permessage-deflate", max_message=1 << 20)
    events = _feed_all(ws, [("in", _frame(2, b"", length=(1 << 63) - 1)),
                            ("in", b"\0" * 100_000)])
    assert "message_too_long" in _codes(events)
    assert not [e for e in events if isinstance(e, WsMessage)]


def test_websocket_inflate_bomb_is_cut_at_max_inflated() -> None:
    from pcapflow.parsers.websocket import WebSocketSession, WsMessage

    ws = WebSocketSession(1, extensions="permessage-deflate", max_inflated=1 << 20)
    bomb = _frame(1, _deflate(b"\0" * 200_000_000), rsv1=True)  # ~200 KB -> 200 MB
    events = _feed_all(ws, [("in", bomb), ("in", _frame(1, b"after"))])
    msgs = [e for e in events if isinstance(e, WsMessage)]
    assert "inflate_bomb" in _codes(events)
    assert len(msgs[0].payload) == 1 << 20 and msgs[0].payload_truncated
    assert msgs[1].payload == b"after"  # the stream goes on


def test_http_gzip_bomb_body_is_cut_at_max_body() -> None:
    from pcapflow.parsers.http import HttpMessage, HttpSession

    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = gz.compress(b"\0" * 200_000_000) + gz.flush()
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb)
    events = _feed_all(HttpSession(1, max_body=1 << 20),
                       [("out", HTTP_GET), ("in", head + bomb), ("out", HTTP_GET),
                        ("in", HTTP_OK)])
    msgs = [e for e in events if isinstance(e, HttpMessage) and e.kind == "response"]
    assert len(msgs[0].body) == 1 << 20 and msgs[0].body_truncated
    assert msgs[1].body == b"{}"


def _fix(body_length_delta: int) -> bytes:
    body = b"35=D\x0134=2\x0149=PCFTRADER1\x0156=MOCKEX\x0111=ord-1\x01"
    head = b"8=FIX.4.4\x019=%d\x01" % (len(body) + body_length_delta) + body
    return head + b"10=%03d\x01" % (sum(head) % 256)


@pytest.mark.parametrize("delta", [-7, -1, 1, 9, 10**9])
def test_fix_body_length_lies_are_salvaged(delta: int) -> None:
    from pcapflow.parsers.fix import FixMessage, FixSession

    events = _feed_all(FixSession(1), [("out", _fix(0) + _fix(delta) + _fix(0))])
    msgs = [e for e in events if isinstance(e, FixMessage)]
    assert _codes(events) == ["bad_body_length"]
    assert [m.cl_ord_id for m in msgs] == ["ord-1"] * 3  # the liar is salvaged, the next kept


def test_fix_body_length_lie_split_across_pieces() -> None:
    from pcapflow.parsers.fix import FixMessage, FixSession

    stream = _fix(0) + _fix(25) + _fix(0)
    pieces = [("out", stream[i : i + 7]) for i in range(0, len(stream), 7)]
    events = _feed_all(FixSession(1), pieces)
    assert len([e for e in events if isinstance(e, FixMessage)]) == 3


def test_keylog_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """``--keylog /dev/zero`` (or a capture given as key log) must not eat all memory.

    Found in this review: ``KeyLog.from_files`` read the whole file at once.
    """
    from pcapflow.parsers.errors import ConfigError
    from pcapflow.parsers.tls import KeyLog, keylog

    monkeypatch.setattr(keylog, "MAX_FILE_BYTES", 8 << 20)
    with pytest.raises(ConfigError) as info:
        KeyLog.from_files(["/dev/zero"])
    assert info.value.code == "keylog_too_large" and "/dev/zero" in str(info.value)


@pytest.mark.parametrize("block", [1, 2, 5, 64])
def test_keylog_read_in_blocks_equals_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             block: int) -> None:
    from pcapflow.parsers.tls import KeyLog, keylog

    text = (SAMPLES / "binance_rest_tls13.keylog").read_bytes()
    text = text.replace(b"\n", b"\r\n", 3) + b"garbage " * 300 + b"\nCLIENT_RANDOM 00 11"
    path = tmp_path / "k.log"
    path.write_bytes(text)
    monkeypatch.setattr(keylog, "READ_BLOCK", block)
    a, b = KeyLog.from_file(path), KeyLog.from_text(text)
    assert (a.lines, a.bad_lines, a.comment_lines) == (b.lines, b.bad_lines, b.comment_lines)
    assert all(a.get(r, lab) == v for r, labs in b._secrets.items() for lab, v in labs.items())


def test_many_out_of_order_segments_finish_quickly() -> None:
    """150,000 one-byte segments, each before the previous (worst case for a sorted list)."""
    code = textwrap.dedent("""
        from pcapflow.parsers.tcp.reassembly import StreamReassembler
        r = StreamReassembler(0)
        for i in range(150_000, 0, -1):
            r.segment(2 * i, b"x", i)
        r.finish(0)
    """)
    try:
        subprocess.run([sys.executable, "-c", code], timeout=8, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("150k out-of-order segments took more than 8 s")
