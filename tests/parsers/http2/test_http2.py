"""HTTP/2 (RFC 9113) and HPACK (RFC 7541): byte vectors from the RFCs, an independent
encoder (``h2`` / ``hpack``), mid-connection starts, capture gaps, and fuzzing.

The RFC 7541 Appendix C blocks are transcribed from the RFC's hex dumps. RFC 9113 has no
hex examples; its frame vectors here are encoded by hand from the frame layouts of §4.1
and §6 (``_frame`` below knows nothing of the parser), and a conversation produced by the
``h2`` library checks the same parser against a real implementation.
"""

from __future__ import annotations

import contextlib
import gzip
import struct

import h2.config
import h2.connection
import hpack
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.events import Anomaly
from pcapflow.parsers.http import HttpMessage
from pcapflow.parsers.http2 import PREFACE, HpackDecoder, HpackError, Http2Session
from pcapflow.parsers.http2.frames import find_boundary
from pcapflow.parsers.http2.hpack_decode import decode_huffman


def octets(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# ---- RFC 7541 Appendix C -------------------------------------------------------------------
REQ1 = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
REQ2 = [*REQ1, ("cache-control", "no-cache")]
REQ3 = [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"),
        (":authority", "www.example.com"), ("custom-key", "custom-value")]
REQ_TABLES = [
    [(":authority", "www.example.com")],
    [("cache-control", "no-cache"), (":authority", "www.example.com")],
    [("custom-key", "custom-value"), ("cache-control", "no-cache"),
     (":authority", "www.example.com")],
]
DATE1, DATE2 = "Mon, 21 Oct 2013 20:13:21 GMT", "Mon, 21 Oct 2013 20:13:22 GMT"
COOKIE = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"
RESP1 = [(":status", "302"), ("cache-control", "private"), ("date", DATE1),
         ("location", "https://www.example.com")]
RESP2 = [(":status", "307"), *RESP1[1:]]
RESP3 = [(":status", "200"), ("cache-control", "private"), ("date", DATE2),
         ("location", "https://www.example.com"), ("content-encoding", "gzip"),
         ("set-cookie", COOKIE)]
RESP_TABLES = [
    [("location", "https://www.example.com"), ("date", DATE1), ("cache-control", "private"),
     (":status", "302")],
    [(":status", "307"), ("location", "https://www.example.com"), ("date", DATE1),
     ("cache-control", "private")],
    [("set-cookie", COOKIE), ("content-encoding", "gzip"), ("date", DATE2)],
]
# (table size, blocks, header lists, dynamic tables after each block; sizes 164/... in C.3.3)
CHAINS = {
    "C.3": (4096, [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ], [REQ1, REQ2, REQ3], REQ_TABLES, [57, 110, 164]),
    "C.4": (4096, [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ], [REQ1, REQ2, REQ3], REQ_TABLES, [57, 110, 164]),
    "C.5": (256, [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
        "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
        "6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
        "54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
        "5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
        "3d31",
    ], [RESP1, RESP2, RESP3], RESP_TABLES, [222, 222, 215]),
    "C.6": (256, [
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
        "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
        "77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
        "9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ], [RESP1, RESP2, RESP3], RESP_TABLES, [222, 222, 215]),
}
SINGLE = {  # C.2: one representation each, (block, field, dynamic table after)
    "C.2.1": ("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
              ("custom-key", "custom-header"), [("custom-key", "custom-header")]),
    "C.2.2": ("040c 2f73 616d 706c 652f 7061 7468", (":path", "/sample/path"), []),
    "C.2.3": ("1008 7061 7373 776f 7264 0673 6563 7265 74", ("password", "secret"), []),
    "C.2.4": ("82", (":method", "GET"), []),
}


def _table(dec: HpackDecoder) -> list[tuple[str, str]]:
    return [(n, v) for n, v, _ in dec.entries]


@pytest.mark.parametrize("label", sorted(SINGLE))
def test_hpack_c2_representations(label: str) -> None:
    block, field, table = SINGLE[label]
    dec = HpackDecoder()
    assert dec.decode(octets(block)).headers == [field]
    assert _table(dec) == table


@pytest.mark.parametrize("label", sorted(CHAINS))
def test_hpack_c3_to_c6_chains(label: str) -> None:
    size, blocks, lists, tables, sizes = CHAINS[label]
    dec = HpackDecoder(max_size=size)
    for block, expected, table, total in zip(blocks, lists, tables, sizes, strict=True):
        out = dec.decode(octets(block))
        assert out.headers == expected and out.unknown == 0
        assert _table(dec) == table
        assert dec.known_size == total


def test_hpack_c1_integers_and_size_update() -> None:
    # C.1.2: 1337 with a 5-bit prefix is 1f 9a 0a; as a size update (001 prefix) it is
    # over the 4096 default limit, so the decoder refuses it; 3f e1 1f is 4096 exactly
    with pytest.raises(HpackError) as err:
        HpackDecoder(max_size=1024).decode(octets("3f e2 1f"))  # 4097 > limit 1024
    assert err.value.code == "hpack_size_over_limit"
    dec = HpackDecoder()
    dec.decode(octets(CHAINS["C.3"][1][0]))
    out = dec.decode(octets("20 82"))  # size 0 empties the table (§4.3)
    assert out.headers == [(":method", "GET")] and dec.entries == [] and dec.max_size == 0


@pytest.mark.parametrize(("block", "code"), [
    ("80", "hpack_bad_index"),  # index 0
    ("be", "hpack_bad_index"),  # index 62 with an empty table
    ("82 20", "hpack_late_size_update"),  # a size update after a field
    ("400a 6375", "hpack_truncated"),  # name runs past the block
    ("41", "hpack_truncated"),  # value missing
    ("ff ff ff ff ff ff ff", "hpack_bad_integer"),
    ("0085 ffff ffff ff 00", "hpack_bad_huffman"),  # EOS inside a Huffman string
    ("0081 00 00", "hpack_bad_huffman"),  # padding not all ones
])
def test_hpack_decoding_errors(block: str, code: str) -> None:
    dec = HpackDecoder()
    with pytest.raises(HpackError) as err:
        dec.decode(octets(block))
    assert err.value.code == code
    assert dec.tail_unknown  # after a failed block the table is not trusted


def test_hpack_unknown_table_flags_never_guesses() -> None:
    """Mid-connection: C.3's second request alone; ``be`` (index 62) is unknown."""
    dec = HpackDecoder(known=False)
    out = dec.decode(octets(CHAINS["C.3"][1][1]))
    assert out.headers == [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                           ("cache-control", "no-cache")]
    assert out.unknown == 1
    # the new entry is known (index 62) though older ones are not
    out = dec.decode(octets("be bf"))
    assert out.headers == [("cache-control", "no-cache")] and out.unknown == 1
    # a size update to 0 empties the table: it is exact again
    dec.decode(octets("20"))
    assert not dec.tail_unknown
    with pytest.raises(HpackError):
        dec.decode(octets("be"))


def test_hpack_unknown_tail_evicted_by_known_entries() -> None:
    """§4.4: entries are evicted oldest first, so the unknown (oldest) ones go first;
    once the known entries leave no room for another entry, the table is exact."""
    dec = HpackDecoder(known=False, max_size=100)
    dec.decode(octets("40 01 61 01 62"))  # a: b, 34 octets: room for an older entry
    assert dec.tail_unknown
    dec.decode(bytes([0x40, 1]) + b"k" + bytes([60]) + b"v" * 60)  # 93 octets, evicts a: b
    assert not dec.tail_unknown and _table(dec) == [("k", "v" * 60)]
    with pytest.raises(HpackError):
        dec.decode(octets("bf"))  # index 63: nothing there, certainly


@given(st.lists(st.tuples(st.sampled_from(["x-a", "content-type", ":path", "date", "x-mbx-apikey"]),
                          st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80)),
                min_size=1, max_size=12), st.booleans())
@settings(max_examples=150, deadline=None)
def test_hpack_against_hpack_encoder(headers: list[tuple[str, str]], huffman: bool) -> None:
    enc, dec = hpack.Encoder(), HpackDecoder()
    for _ in range(3):  # the dynamic table is reused from block to block
        assert dec.decode(enc.encode(headers, huffman=huffman)).headers == headers


def test_huffman_cache_gives_the_same_text() -> None:
    text = "/api/v3/order?symbol=BTCUSDT"
    coded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(text.encode())
    assert decode_huffman(coded) == decode_huffman(coded) == text


# ---- RFC 9113 frames, encoded from §4.1 and §6 ----------------------------------------------
def _frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    """§4.1: Length (24), Type (8), Flags (8), R (1), Stream Identifier (31), payload."""
    head = len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big")
    return head + payload


DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINDOW, CONT = range(10)
ES, EH, PAD, PRIO = 0x1, 0x4, 0x8, 0x20


def _settings(*pairs: tuple[int, int]) -> bytes:
    return _frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def _client_bytes() -> bytes:
    """C.4's three requests on streams 1, 3, 5 with every framing feature of §6."""
    blocks = [octets(b) for b in CHAINS["C.4"][1]]
    return b"".join([
        PREFACE,
        _settings((0x1, 4096), (0x5, 32768), (0x3, 100)),
        _frame(WINDOW, 0, 0, (1 << 20).to_bytes(4, "big")),
        # stream 1: HEADERS with PADDED + PRIORITY (§6.2), END_STREAM
        _frame(HEADERS, ES | EH | PAD | PRIO, 1,
               bytes([3]) + struct.pack(">IB", 0x80000000, 15) + blocks[0] + b"\0\0\0"),
        # stream 3: HEADERS without END_HEADERS, then CONTINUATION (§6.10), DATA padded
        _frame(HEADERS, 0, 3, blocks[1][:4]),
        _frame(CONT, 0, 3, blocks[1][4:9]),
        _frame(CONT, EH, 3, blocks[1][9:]),
        _frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 200)),
        _frame(DATA, PAD, 3, bytes([2]) + b'{"a":' + b"\0\0"),
        _frame(DATA, 0, 3, b"1}"),
        _frame(0xFA, 0xFF, 3, b"unknown type: discarded"),  # §5.5
        _frame(DATA, ES, 3, b""),  # a trailing empty DATA frame ends the stream
        _frame(PING, 0, 0, b"12345678"),
        _frame(HEADERS, EH, 5, blocks[2]),
        _frame(RST, 0, 5, (0x8).to_bytes(4, "big")),  # the client cancels stream 5
        _frame(SETTINGS, 0x1, 0, b""),  # ACK
    ])


def _server_bytes() -> bytes:
    blocks = [octets(b) for b in CHAINS["C.6"][1]]
    body = b'{"orderId":3}'
    pushed = gzip.compress(b"<html>pushed</html>")
    return b"".join([
        _settings((0x1, 256)),
        _frame(SETTINGS, 0x1, 0, b""),
        # C.6 needs a 256-octet table: the size update of §6.3 in the first block
        _frame(HEADERS, EH, 3, b"\x3f\xe1\x01" + blocks[0]),
        _frame(DATA, 0, 3, body[:10]),
        _frame(DATA, ES, 3, body[10:]),
        _frame(PUSH, EH | PAD, 1,
               bytes([1]) + (2).to_bytes(4, "big") + octets("8286 84be") + b"\0"),
        _frame(HEADERS, EH | ES, 1, blocks[1]),
        _frame(HEADERS, EH, 2, blocks[2]),  # the pushed response (RESP3: gzip)
        _frame(DATA, ES, 2, pushed),
        _frame(GOAWAY, 0, 0, struct.pack(">II", 5, 0) + b"bye"),
    ])


def _feed(session: Http2Session, direction: str, data: bytes, cuts: list[int]) -> list[object]:
    """Feed ``data`` in pieces ending at ``cuts``; each byte's times are its offset."""
    events: list[object] = []
    start = 0
    for end in [*cuts, len(data)]:
        if end > start:
            events += session.feed(direction, data[start:end], start, end - 1)  # type: ignore[arg-type]
            start = end
    return events


def _run(out_cuts: list[int] | None = None, in_cuts: list[int] | None = None) -> list[object]:
    s = Http2Session(1)
    ev = _feed(s, "out", _client_bytes(), out_cuts or [])
    ev += _feed(s, "in", _server_bytes(), in_cuts or [])
    return ev + s.finish(10**9)


def _messages(events: list[object]) -> list[HttpMessage]:
    return [e for e in events if isinstance(e, HttpMessage)]


def test_frames_decode_whole() -> None:
    ev = _run()
    assert [e for e in ev if isinstance(e, Anomaly)] == []
    msgs = _messages(ev)
    assert [(m.kind, m.direction, m.stream_id) for m in msgs] == [
        ("request", "out", 1), ("request", "out", 3), ("request", "out", 5), ("reset", "out", 5),
        ("response", "in", 3), ("response", "in", 1), ("response", "in", 2)]
    r1, r3, r5, reset, a3, a1, push = msgs
    # the request cut by the client's RST_STREAM is kept, truncated, before the reset row
    assert r5.headers == REQ3 and r5.body_truncated and r5.ts_last == reset.ts_last
    assert r1.headers == REQ1 and r1.method == "GET" and r1.path == "/" and r1.body == b""
    assert r3.headers == REQ2 and r3.body == b'{"a":1}' and r3.body_length == 7
    assert reset.reason == "CANCEL" and reset.request_index == 2
    assert a3.status == 302 and a3.body == b'{"orderId":3}' and a3.body_length == 13
    assert (a3.request_index, a1.request_index, push.request_index) == (1, 0, None)
    assert a1.status == 307 and push.status == 200 and push.headers == RESP3
    assert push.body == b"<html>pushed</html>" and push.content_encoding == "gzip"
    assert all(m.version == "HTTP/2" for m in msgs)


def _time_of(data: bytes, needle: bytes) -> int:
    return data.index(needle)


def test_frames_times_are_the_frames() -> None:
    """ts_first: first octet of the HEADERS frame; ts_last: last octet of the END_STREAM
    frame (the trailing empty DATA frame for stream 3)."""
    out = _client_bytes()
    every = list(range(1, len(out)))
    msgs = _messages(_run(every, list(range(1, len(_server_bytes())))))
    r3 = msgs[1]
    assert r3.stream_id == 3
    h3 = _frame(HEADERS, 0, 3, octets(CHAINS["C.4"][1][1])[:4])
    end3 = _frame(DATA, ES, 3, b"")
    assert r3.ts_first == out.index(h3) == r3.stream_offset
    assert r3.ts_last == out.index(end3) + len(end3) - 1


def test_frames_byte_by_byte_and_every_split() -> None:
    def strip(events: list[object]) -> list[tuple[object, ...]]:
        return [(m.kind, m.stream_id, m.headers, m.body, m.status, m.stream_offset)
                for m in _messages(events)]

    whole = _run()
    out, inn = _client_bytes(), _server_bytes()
    assert strip(_run(list(range(1, len(out))), list(range(1, len(inn))))) == strip(whole)
    for k in range(1, len(out)):
        assert strip(_run([k])) == strip(whole), k
    for k in range(1, len(inn)):
        assert strip(_run(None, [k])) == strip(whole), k


def test_frame_errors_are_anomalies() -> None:
    s = Http2Session(1)
    data = PREFACE + b"".join([
        _frame(RST, 0, 1, b"\0\0"),  # wrong fixed length
        _frame(DATA, 0, 0, b"x"),  # DATA on stream 0
        _frame(DATA, PAD, 1, bytes([9]) + b"ab"),  # padding longer than the payload
        _frame(CONT, EH, 7, b"\x82"),  # CONTINUATION without HEADERS
        _frame(HEADERS, 0, 9, b"\x82"),
        _frame(DATA, 0, 9, b"x"),  # not a CONTINUATION
        _frame(HEADERS, EH | ES, 11, b"\x82\x84\x86\x41\x81"),  # truncated literal
    ])
    codes = [e.code for e in s.feed("out", data, 0, 0) if isinstance(e, Anomaly)]
    assert codes == ["frame_size_error", "bad_stream_id", "data_without_headers", "bad_padding",
                     "unexpected_continuation", "continuation_expected",
                     "data_without_headers", "hpack_truncated"]


# ---- an independent implementation: the h2 library -------------------------------------------
def _h2_conversation(n: int = 6) -> tuple[bytes, bytes, list[int]]:
    cfg = h2.config.H2Configuration
    c = h2.connection.H2Connection(cfg(client_side=True, header_encoding=None))
    s = h2.connection.H2Connection(cfg(client_side=False, header_encoding=None))
    c.initiate_connection()
    out = [c.data_to_send()]
    s.initiate_connection()
    s.receive_data(out[0])
    inn = [s.data_to_send()]
    c.receive_data(inn[0])
    ids = []
    for i in range(n):  # n requests in flight at once
        sid = c.get_next_available_stream_id()
        ids.append(sid)
        c.send_headers(sid, [(":method", "POST"), (":scheme", "https"),
                             (":authority", "api.binance.com"),
                             (":path", f"/api/v3/order?newClientOrderId=c{i}&signature={i:064x}"),
                             ("x-mbx-apikey", "k" * 64)])
        c.send_data(sid, b"quantity=1&price=%d" % i, end_stream=True)
    out.append(c.data_to_send())
    s.receive_data(out[-1])
    for sid in reversed(ids):  # answered in reverse order
        if sid == ids[2]:
            s.reset_stream(sid, 7)  # REFUSED_STREAM
            continue
        body = b'{"orderId":%d}' % sid
        s.send_headers(sid, [(":status", "200"), ("content-type", "application/json"),
                             ("content-length", str(len(body)))])
        s.send_data(sid, body, end_stream=True)
    inn.append(s.data_to_send())
    return b"".join(out), b"".join(inn), ids


def test_h2_library_conversation() -> None:
    out, inn, ids = _h2_conversation()
    s = Http2Session(1)
    ev = s.feed("out", out, 1, 1) + s.feed("in", inn, 2, 2) + s.finish(3)
    assert [e for e in ev if isinstance(e, Anomaly)] == []
    msgs = _messages(ev)
    req = {m.stream_id: m for m in msgs if m.kind == "request"}
    resp = {m.stream_id: m for m in msgs if m.kind == "response"}
    resets = [m for m in msgs if m.kind == "reset"]
    assert sorted(req) == ids and sorted(resp) == sorted(set(ids) - {ids[2]})
    assert [(r.stream_id, r.reason, r.direction) for r in resets] == [(ids[2], "REFUSED_STREAM",
                                                                       "in")]
    for sid, m in resp.items():
        assert m.body == b'{"orderId":%d}' % sid
        assert m.request_index == req[sid].request_index
    assert req[ids[3]].path.startswith("/api/v3/order?newClientOrderId=c3&")


def test_mid_stream_resync_flags_and_decodes_data() -> None:
    """Captured from the middle of a frame: resync on the next boundary; fields that need
    the dynamic table are flagged, the rest and DATA still decode."""
    out, inn, ids = _h2_conversation(8)
    second = out.index(b"\x01\x00\x00\x00\x03")  # inside the first request's frames
    s = Http2Session(1)
    ev = s.feed("out", out[second - 20:], 1, 1) + s.feed("in", inn[40:], 2, 2) + s.finish(3)
    codes = {e.code for e in ev if isinstance(e, Anomaly)}
    assert {"mid_stream", "hpack_unknown_entry"} <= codes
    msgs = _messages(ev)
    req = [m for m in msgs if m.kind == "request"]
    assert len(req) >= 6
    assert all(m.body.startswith(b"quantity=1") for m in req)
    # :authority and x-mbx-apikey were indexed in the first request: now unknown, left out
    assert all(("x-mbx-apikey", "k" * 64) not in m.headers for m in req)
    assert all(m.path is None or m.path.startswith("/api/v3/order") for m in req)
    resp = [m for m in msgs if m.kind == "response"]
    assert [m.body for m in resp][-1] == b'{"orderId":%d}' % ids[0]


def test_gap_inside_data_skips_that_frame_only() -> None:
    out, inn, ids = _h2_conversation(3)
    s = Http2Session(1)
    ev = s.feed("out", out, 1, 1)
    # the last response's DATA frame is the last 9 + len octets; lose 5 of its payload
    body = b'{"orderId":%d}' % ids[0]
    cut = len(inn) - len(body) + 3
    ev += s.feed("in", inn[:cut], 2, 2)
    ev += s.gap("in", 5, 3)
    ev += s.feed("in", inn[cut + 5:], 4, 4) + s.finish(5)
    codes = [e.code for e in ev if isinstance(e, Anomaly)]
    assert codes == ["body_gap"]
    last = [m for m in _messages(ev) if m.kind == "response"][-1]
    assert last.stream_id == ids[0] and last.body_truncated and last.ts_last == 4


def test_gap_across_frames_resyncs() -> None:
    out, _, _ = _h2_conversation(6)
    s = Http2Session(1)
    a = len(out) // 2
    ev = s.feed("out", out[:a], 1, 1) + s.gap("out", 7, 2) + s.feed("out", out[a + 7:], 3, 3)
    ev += s.finish(4)
    codes = [e.code for e in ev if isinstance(e, Anomaly)]
    assert codes[0] in ("stream_gap", "body_gap", "header_block_gap", "frame_gap")
    assert len([m for m in _messages(ev) if m.kind == "request"]) >= 4


def test_find_boundary() -> None:
    frames = _frame(PING, 0, 0, b"12345678") + _frame(WINDOW, 0, 0, b"\0\0\0\1")
    assert find_boundary(b"\x17\x03garbage" + frames, 16384) == 9
    assert find_boundary(b"\0\0", 16384) is None


# ---- fuzzing: anything decodes or is an anomaly, never an exception ----------------------------
_frames = st.builds(
    _frame, st.integers(0, 12), st.integers(0, 255), st.integers(0, 9),
    st.binary(max_size=40))


@given(st.lists(_frames, max_size=12), st.lists(_frames, max_size=12),
       st.lists(st.integers(0, 400), max_size=5), st.booleans())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_frames_never_raise(out_frames: list[bytes], in_frames: list[bytes],
                                   cuts: list[int], preface: bool) -> None:
    s = Http2Session(1)
    out = (PREFACE if preface else b"") + b"".join(out_frames)
    events = _feed(s, "out", out, sorted(c for c in cuts if c < len(out)))
    events += _feed(s, "in", b"".join(in_frames), [])
    events += s.gap("in", 3, 5) + s.feed("in", b"".join(in_frames), 6, 6) + s.finish(7)
    assert all(isinstance(e, HttpMessage | Anomaly) for e in events)


@given(st.binary(max_size=300), st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(a: bytes, b: bytes) -> None:
    s = Http2Session(1)
    s.feed("out", PREFACE + a, 0, 0)
    s.feed("in", b, 0, 0)
    s.finish(1)


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_hpack_blocks_raise_only_hpack_errors(block: bytes) -> None:
    for known in (True, False):
        with contextlib.suppress(HpackError):
            HpackDecoder(known=known).decode(block)


def test_too_many_open_streams_is_an_anomaly(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapflow.parsers.http2 import session as h2session

    monkeypatch.setattr(h2session, "MAX_OPEN_STREAMS", 3)
    s = Http2Session(1)
    data = PREFACE + b"".join(_frame(HEADERS, EH, sid, b"\x83\x84\x87")  # POST / https
                              for sid in (1, 3, 5, 7, 9))
    events = s.feed("out", data, 0, 0)
    assert [e.code for e in events if isinstance(e, Anomaly)] == ["too_many_streams"] * 2
    assert len(_messages(s.finish(1))) == 3


@pytest.mark.parametrize("label", sorted(CHAINS))
def test_hpack_chains_through_frames_split_at_every_offset(label: str) -> None:
    """Each Appendix C block as one header block cut at every offset into HEADERS +
    CONTINUATION, the three blocks on streams 1, 3, 5 of one connection (one table)."""
    size, blocks, lists, _, _ = CHAINS[label]
    direction = "out" if label in ("C.3", "C.4") else "in"
    update = b"" if size == 4096 else b"\x3f\xe1\x01"  # §6.3: the table is 256 octets
    raw = [octets(b) for b in blocks]
    raw[0] = update + raw[0]
    for k in range(max(map(len, raw)) + 1):
        frames = []
        for sid, block in zip((1, 3, 5), raw, strict=True):
            cut = min(k, len(block))
            frames += [_frame(HEADERS, ES, sid, block[:cut]), _frame(CONT, EH, sid, block[cut:])]
        s = Http2Session(1)
        if direction == "out":
            events = s.feed("out", PREFACE + b"".join(frames), 0, 0)
        else:
            events = s.feed("in", _settings() + b"".join(frames), 0, 0)
        assert [m.headers for m in _messages(events)] == lists, k
        assert not [e for e in events if isinstance(e, Anomaly)], k
