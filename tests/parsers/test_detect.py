"""Protocol detection by content and mid-stream resync points.

Byte vectors come from the RFCs (RFC 6455 §5.7 frames, RFC 9113 §3.4 preface,
RFC 8448 record headers); the public captures check detection on real first bytes
(their TCP streams are extracted with the dpkt helper in helpers/tcp_pieces.py).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from helpers.fix_messages import new_order_single
from helpers.paths import PUBLIC
from helpers.tcp_pieces import tcp_pieces
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.detect import UNKNOWN, detect, find_resync
from pcapflow.parsers.protocols.registry import BY_NAME

# RFC 8448 §3: the ClientHello record starts 16 03 01 00 c4 01 00 00 c0 03 03.
TLS_CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(0xC4 - 6)
TLS_APP_DATA = b"\x17\x03\x03\x00\x20" + bytes(32)
# RFC 6455 §5.7: a single-frame unmasked / masked text message "Hello".
WS_HELLO = bytes.fromhex("810548656c6c6f")
WS_HELLO_MASKED = bytes.fromhex("818537fa213d7f9f4d5158")
WS_PING = bytes.fromhex("890548656c6c6f")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SERVER_SETTINGS = bytes.fromhex("000006040000000000") + bytes.fromhex("000300000064")


@pytest.mark.parametrize(
    ("out_prefix", "in_prefix", "expected"),
    [
        (TLS_CLIENT_HELLO, b"", "tls"),
        (TLS_CLIENT_HELLO[:5], b"", "tls"),
        (b"", TLS_APP_DATA + TLS_APP_DATA[:5], "tls"),  # mid-stream, server side only
        (bytes.fromhex("802b0103010012"), b"", "tls"),  # SSLv2-compatible ClientHello
        (b"GET /api/v3/order?symbol=BTCUSDT HTTP/1.1\r\nHost: api.binance.com\r\n", b"", "http"),
        (b"POST ", b"", "http"),
        (b"PROPFIND /x HTTP/1.1\r\n", b"", "http"),
        (b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "http"),
        (b"\x00", b"HTTP/1.0 404 Not Found\r\n", "http"),
        (H2_PREFACE + H2_SERVER_SETTINGS, H2_SERVER_SETTINGS, "http2"),
        (H2_PREFACE[:10], b"", "http2"),
        (b"", H2_SERVER_SETTINGS, "http2"),
        (new_order_single(), b"", "fix"),
        (b"", b"8=FIXT.1.1\x019=", "fix"),
        (b"8=FIX.4.4", b"", "fix"),
        (WS_HELLO_MASKED + WS_HELLO_MASKED, WS_HELLO, "websocket"),
        (b"", WS_PING + WS_HELLO, "websocket"),
        (b"", b"", UNKNOWN),
        (b"\x16\x03\x05\x00\x10", b"", UNKNOWN),  # no TLS version 3.5
        (b"\x16\x03\x03\x48\x01", b"", UNKNOWN),  # 18433 > 2^14 + 2048
        (b"\x17\x03\x03\x00\x02ab\x99\x99\x99\x99\x99", b"", UNKNOWN),  # 2nd header junk
        (b"GET/ HTTP/1.1\r\n", b"", UNKNOWN),
        (b"get / HTTP/1.1\r\n", b"", UNKNOWN),
        (b"HTTP/1.1 2xx\r\n", b"", UNKNOWN),
        (b"8=FIX.4.4\x0135=D\x01", b"", UNKNOWN),  # no BodyLength
        (b"\x00\x00\x01\xbc\x00\x00\x00\x03\x00\x07rdkafka", b"", UNKNOWN),  # Kafka
        (WS_HELLO, WS_HELLO_MASKED, UNKNOWN),  # masking on the wrong sides (§5.1)
        (b"SSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.0-OpenSSH_9.2\r\n", UNKNOWN),
    ],
)
def test_vectors(out_prefix: bytes, in_prefix: bytes, expected: str) -> None:
    assert detect(out_prefix, in_prefix) == expected


def test_registry_lists_every_answer() -> None:
    assert set(BY_NAME) == {"tls", "http", "http2", "fix", "websocket"}


def test_find_resync() -> None:
    junk = b"\x00\x17\x03\x03\x7f\xff tail of an earlier record"
    assert find_resync("tls", junk + TLS_APP_DATA + TLS_APP_DATA[:5]) == len(junk)
    assert find_resync("tls", junk + TLS_APP_DATA) is None  # no second header to confirm
    nos = new_order_single()
    assert find_resync("fix", b"58=8=FIX bogus\x01" + nos) == len(b"58=8=FIX bogus\x01")
    assert find_resync("fix", nos[20:]) is None
    body = b'{"a": "GET / HTTP/1.1"}\r\n'
    assert find_resync("http", body + b"HTTP/1.1 200 OK\r\n") == len(body)
    assert find_resync("http", b"xx\nPOST /o HTTP/1.1\r\nHost: a\r\n") == 3
    assert find_resync("http", b"no boundary here") is None
    assert find_resync("http2", H2_PREFACE) is None  # the preface is not a frame
    # mid-connection HTTP/2: three chained frames (WINDOW_UPDATE, PING, a HEADERS)
    h2 = (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x01\x00\x00"
          b"\x00\x00\x08\x06\x00\x00\x00\x00\x0012345678"
          b"\x00\x00\x01\x01\x05\x00\x00\x00\x03\x82")
    assert find_resync("http2", b"\xff\x17body" + h2) == 6
    assert detect(h2, b"") == "http2" and detect(b"", h2) == "http2"
    assert detect(b"\x00" * 40, b"") == UNKNOWN  # zeros are no frame chain
    assert find_resync("nonsense", b"8=FIX.4.4\x019=5\x01") is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_random_bytes(out_prefix: bytes, in_prefix: bytes) -> None:
    assert detect(out_prefix, in_prefix) in {*BY_NAME, UNKNOWN}
    for protocol in ("tls", "fix", "http", "websocket"):
        found = find_resync(protocol, out_prefix + in_prefix)
        assert found is None or 0 <= found < len(out_prefix + in_prefix)


# --- Public captures ------------------------------------------------------------
STARTTLS = {
    "tls/lekensteyn/imap-ssl.pcapng",
    "tls/lekensteyn/smtp-ssl.pcapng",
    "tls/lekensteyn/mysql-ssl-larger.pcapng",
}
"""TLS started inside a plaintext protocol (IMAP/SMTP STARTTLS, MySQL SSL request):
the first bytes are rightly not TLS."""


def _first_bytes(items: list, limit: int = 512) -> bytes:
    out = b""
    for kind, value, _ in items:
        if kind != "data" or len(out) >= limit:
            break
        out += value
    return out[:limit]


def _connections(path: Path) -> list[tuple[bytes, bytes]]:
    """(client first bytes, server first bytes); client = the higher port."""
    dirs = tcp_pieces(path)
    out = []
    for (src, sport, dst, dport), items in dirs.items():
        if sport < dport:
            continue
        back = dirs.get((dst, dport, src, sport), [])
        out.append((_first_bytes(items), _first_bytes(back)))
    for (src, sport, dst, dport), items in dirs.items():
        if sport < dport and (dst, dport, src, sport) not in dirs:
            out.append((b"", _first_bytes(items)))  # only the server spoke
    return out


def _category(prefix: str) -> list[str]:
    if not PUBLIC.exists():
        pytest.skip("public captures absent")
    entries = json.loads((PUBLIC / "analysis.json").read_text())
    return [e["path"] for e in entries if e["path"].startswith(prefix)]


def test_public_tls_captures() -> None:
    seen: Counter[str] = Counter()
    for rel in _category("tls/"):
        results = Counter(detect(o, i) for o, i in _connections(PUBLIC / rel))
        seen.update(results)
        if rel in STARTTLS:
            assert results and "tls" not in results, rel
        else:
            assert set(results) <= {"tls"}, (rel, results)
    assert seen["tls"] > 100


def test_public_http_captures() -> None:
    for rel in _category("http/"):
        results = Counter(detect(o, i) for o, i in _connections(PUBLIC / rel))
        # h2c upgrades start as HTTP/1.1; one suricata capture also holds TLS flows.
        assert results["http"] + results["http2"] >= 1, (rel, results)
        assert set(results) <= {"http", "http2", "tls", UNKNOWN}, (rel, results)
        assert results[UNKNOWN] <= 1, (rel, results)  # http_chunk: a 1-byte side flow


def test_public_fix_captures() -> None:
    for rel in _category("fix/"):
        results = Counter(detect(o, i) for o, i in _connections(PUBLIC / rel))
        assert set(results) == {"fix"}, (rel, results)


def test_public_websocket_after_handshake() -> None:
    """Cut each WebSocket connection after its Upgrade exchange, as a capture that
    starts mid-connection would: the frames alone must detect as websocket."""
    checked = 0
    for rel in _category("websocket/"):
        dirs = tcp_pieces(PUBLIC / rel)
        after: dict[bool, bytes] = {}
        for items in dirs.values():
            data = b"".join(v for k, v, _ in items if k == "data")
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and rest:
                after[head.startswith(b"GET ")] = rest
        if rel.endswith("vmess-websocket.pcapng") or not after:
            continue  # vmess: several connections, one of them not WebSocket
        assert detect(after.get(True, b""), after.get(False, b"")) == "websocket", rel
        checked += 1
    assert checked >= 15


def test_detect_midstream_by_each_specs_rule() -> None:
    """A connection captured from inside a message is named by the spec whose next
    message start (``ProtocolSpec.midstream``) comes first, in either direction."""
    from pcapflow.parsers.detect import detect_midstream
    from pcapflow.parsers.protocols.registry import REGISTRY

    assert {s.name for s in REGISTRY if s.midstream} == {"tls", "fix", "http", "websocket"}
    body_tail = b'"price":"1.5"}\r\n'
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert detect_midstream(b"", body_tail + head) == "http"
    assert detect_midstream(b"", body_tail + head[:20]) == UNKNOWN  # no whole head yet
    # a request head in the server's bytes is not a server's message start
    assert detect_midstream(b"", b"x" + b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == UNKNOWN
    assert detect_midstream(b"\x00" * 7 + TLS_APP_DATA * 2, b"") == "tls"
    nos = new_order_single()
    assert detect_midstream(b"=1\x01" + nos, b"") == "fix"
    # the earliest start wins across protocols and directions
    assert detect_midstream(b"\x00" * 30 + TLS_APP_DATA * 2, body_tail + head) == "http"
    assert detect_midstream(b"", b"") == UNKNOWN


def test_http2_not_decrypted_note_from_alpn() -> None:
    """The HTTP/2 spec's coverage note: ALPN chose h2, or offered it when the choice
    is hidden (TLS 1.3 without keys); nothing for other ALPN values."""
    from pcapflow.parsers.http2.spec import not_decrypted

    assert "chose h2" in (not_decrypted({"alpn": "h2"}) or "")
    assert "offered h2" in (not_decrypted({"alpn": None, "alpn_offered": "h2,http/1.1"}) or "")
    assert not_decrypted({"alpn": "http/1.1", "alpn_offered": "h2,http/1.1"}) is None
    assert not_decrypted({"alpn": None, "alpn_offered": "http/1.1"}) is None
    assert not_decrypted({}) is None
