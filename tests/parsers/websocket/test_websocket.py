"""WebSocket session parser: RFC 6455 / RFC 7692 vectors, websockets cross-check, anomalies.

Every byte vector runs whole, one byte at a time, and split at every offset; the events
must be identical except for their times, and the times must be those of the pieces
holding each message's first and last bytes.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.events import Anomaly, Direction
from pcapflow.parsers.websocket import WebSocketSession, WsMessage, unmask
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

PMD = "permessage-deflate"


# ---- feeding helpers ---------------------------------------------------------------


def _ts_first(offset: int) -> int:
    return 1_000 * offset + 7


def _ts_last(end: int) -> int:
    return 1_000 * end + 3


def feed_pieces(session: WebSocketSession, direction: Direction, data: bytes,
                cuts: list[int]) -> list[object]:
    """Feed ``data`` cut at ``cuts``; a piece [a, b) gets ts_first f(a), ts_last g(b)."""
    events: list[object] = []
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]
    for a, b in itertools.pairwise(bounds):
        events += session.feed(direction, data[a:b], _ts_first(a), _ts_last(b))
    return events


def splits(n: int) -> list[list[int]]:
    """Whole, byte by byte, and every single cut point."""
    return [[], list(range(1, n)), *([k] for k in range(1, n))]


def expected_times(cuts: list[int], n: int, first: int, last: int) -> tuple[int, int]:
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < n)), n]
    start = max(b for b in bounds[:-1] if b <= first)
    end = min(b for b in bounds[1:] if b > last)
    return _ts_first(start), _ts_last(end)


def strip_times(e: object) -> object:
    if isinstance(e, WsMessage):
        return dataclasses.replace(e, ts_first=0, ts_last=0)
    if isinstance(e, Anomaly):
        return dataclasses.replace(e, ts=0)
    return e


def check_vector(data: bytes, direction: Direction, want: list[tuple[bytes, str, int, int]],
                 extensions: str | None = "", trailing: bytes = b"") -> list[WsMessage]:
    """``want``: (payload, opcode, first byte offset, last byte offset) per message."""
    reference: list[object] | None = None
    for cuts in splits(len(data)):
        s = WebSocketSession(1, extensions=extensions)
        events = feed_pieces(s, direction, data, cuts)
        if trailing:
            events += s.feed(direction, trailing, 10**9, 10**9)
        msgs = [e for e in events if isinstance(e, WsMessage)]
        assert [(m.payload, m.opcode, m.stream_offset) for m in msgs] == [
            (p, op, first) for p, op, first, _ in want
        ], cuts
        for m, (_, _, first, last) in zip(msgs, want, strict=True):
            assert (m.ts_first, m.ts_last) == expected_times(cuts, len(data), first, last), cuts
        assert not [e for e in events if isinstance(e, Anomaly)]
        stripped = [strip_times(e) for e in events]
        if reference is None:
            reference = stripped
        assert stripped == reference, cuts
    assert reference is not None
    return [e for e in reference if isinstance(e, WsMessage)]  # type: ignore[misc]


# ---- RFC 6455 §5.7 examples -----------------------------------------------------------

HELLO = b"Hello"
MASKED_HELLO = bytes.fromhex("818537fa213d7f9f4d5158")


def test_rfc6455_single_frame_unmasked_text() -> None:
    (m,) = check_vector(bytes.fromhex("810548656c6c6f"), "in", [(HELLO, "text", 0, 6)],
                        trailing=b"\x81")
    assert (m.fin, m.frames, m.masked, m.compressed, m.wire_length) == (True, 1, False, False, 7)


def test_rfc6455_single_frame_masked_text() -> None:
    (m,) = check_vector(MASKED_HELLO, "out", [(HELLO, "text", 0, 10)])
    assert m.masked and m.wire_length == 11


def test_rfc6455_fragmented_unmasked_text() -> None:
    (m,) = check_vector(bytes.fromhex("010348656c80026c6f"), "in", [(HELLO, "text", 0, 8)])
    assert (m.frames, m.wire_length) == (2, 9)


def test_rfc6455_ping_and_masked_pong() -> None:
    check_vector(bytes.fromhex("890548656c6c6f"), "in", [(HELLO, "ping", 0, 6)])
    check_vector(bytes.fromhex("8a8537fa213d7f9f4d5158"), "out", [(HELLO, "pong", 0, 10)])


def test_control_frame_between_fragments() -> None:
    # §5.4: "Control frames MAY be injected in the middle of a fragmented message."
    data = bytes.fromhex("010348656c" "8900" "80026c6f")
    msgs = check_vector(data, "in", [(b"", "ping", 5, 6), (HELLO, "text", 0, 10)])
    assert msgs[1].wire_length == 9  # the ping's two bytes are not the text's


def test_rfc6455_256_bytes_binary_16_bit_length() -> None:
    payload = bytes(range(256))
    data = bytes.fromhex("827e0100") + payload
    (m,) = check_vector(data, "in", [(payload, "binary", 0, 259)])
    assert m.message_length == 256


def test_rfc6455_64k_binary_64_bit_length() -> None:
    payload = os.urandom(65536)
    data = bytes.fromhex("827f0000000000010000") + payload
    # whole, one byte at a time, and cuts in and around the header (all 65545 cut points
    # would only repeat the payload case many times over)
    for cuts in ([], list(range(1, len(data))), *([k] for k in range(1, 40)),
                 [len(data) - 1], [5000, 40000]):
        s = WebSocketSession(1, extensions="")
        (m,) = feed_pieces(s, "in", data, cuts)
        assert isinstance(m, WsMessage) and m.payload == payload and m.wire_length == len(data)
        assert (m.ts_first, m.ts_last) == expected_times(cuts, len(data), 0, len(data) - 1)


def test_masked_64k_frame_unmasks() -> None:
    payload = os.urandom(70001)
    key = b"\x01\x02\xfe\xff"
    data = bytes.fromhex("82ff") + len(payload).to_bytes(8, "big") + key + unmask(payload, key)
    s = WebSocketSession(1, extensions="")
    (m,) = s.feed("out", data, 1, 2)
    assert isinstance(m, WsMessage) and m.payload == payload and m.masked


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 1023, 1024, 1025, 4099, 65537])
def test_unmask_matches_definition(n: int) -> None:
    payload, key = os.urandom(n), os.urandom(4)
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_close_code_and_reason() -> None:
    data = b"\x88\x08" + (1000).to_bytes(2, "big") + b"bye!!!"
    (m,) = check_vector(data, "in", [(data[2:], "close", 0, 9)])
    assert (m.close_code, m.close_reason) == (1000, "bye!!!")


# ---- RFC 7692 §7.2.3 examples -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hex_frames", "payloads"),
    [
        ("7.2.3.1 one compressed block", ["c107f248cdc9c90700"], [HELLO]),
        ("7.2.3.1 fragmented", ["4103f248cd", "8004c9c90700"], [HELLO]),
        ("7.2.3.2 shared sliding window", ["c107f248cdc9c90700", "c105f200110000"],
         [HELLO, HELLO]),
        ("7.2.3.3 block with no compression", ["c10b000500faff48656c6c6f00"], [HELLO]),
        ("7.2.3.4 BFINAL set to 1", ["c108f348cdc9c9070000"], [HELLO]),
        ("7.2.3.5 two DEFLATE blocks", ["c10df24805000000ffffcac9c90700"], [HELLO]),
        ("7.2.3.6 empty fragment", ["c10100"], [b""]),
    ],
)
def test_rfc7692_examples(name: str, hex_frames: list[str], payloads: list[bytes]) -> None:
    frames = [bytes.fromhex(h) for h in hex_frames]
    data = b"".join(frames)
    if name.endswith("fragmented"):
        want = [(payloads[0], "text", 0, len(data) - 1)]
    else:
        offsets = [sum(map(len, frames[:i])) for i in range(len(frames))]
        want = [(p, "text", o, o + len(f) - 1)
                for p, o, f in zip(payloads, offsets, frames, strict=True)]
    for m in check_vector(data, "in", want, extensions=PMD):
        assert m.compressed and m.message_length == len(m.payload)


def test_rfc7692_without_context_takeover_second_message_fails() -> None:
    s = WebSocketSession(1, extensions=f"{PMD}; server_no_context_takeover")
    events = s.feed("in", bytes.fromhex("c107f248cdc9c90700c105f200110000"), 1, 2)
    assert [e.payload for e in events if isinstance(e, WsMessage)] == [HELLO, b""]
    assert [e.code for e in events if isinstance(e, Anomaly)] == ["inflate_failed"]


# ---- cross-check against the websockets library's own encoder --------------------------


def _extension_header(server_bits: int, client_bits: int, server_nct: bool,
                      client_nct: bool) -> str:
    parts = [PMD, f"server_max_window_bits={server_bits}", f"client_max_window_bits={client_bits}"]
    if server_nct:
        parts.append("server_no_context_takeover")
    if client_nct:
        parts.append("client_no_context_takeover")
    return "; ".join(parts)


def _random_message(rng: random.Random) -> tuple[Opcode, bytes]:
    kind = rng.randrange(4)
    if kind == 0:
        return Opcode.TEXT, b'{"e":"trade","p":"%d.%02d","q":"%d"}' % (
            rng.randrange(100000), rng.randrange(100), rng.randrange(10**6))
    if kind == 1:
        return Opcode.BINARY, rng.randbytes(rng.randrange(0, 3000))
    if kind == 2:
        return Opcode.TEXT, b"".join(rng.choice([b"bid ", b"ask ", b"px=1.25 "])
                                     for _ in range(rng.randrange(0, 5000)))
    return Opcode.TEXT, b""


def _encode_stream(rng: random.Random, ext: PerMessageDeflate, mask: bool,
                   messages: list[tuple[Opcode, bytes]]) -> bytes:
    """Frames for ``messages`` made by websockets, with random fragmentation and pings."""
    wire = bytearray()
    for opcode, data in messages:
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(len(data) + 1, rng.randrange(3))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for i, piece in enumerate(pieces):
            op = opcode if i == 0 else Opcode.CONT
            frame = Frame(op, piece, fin=i == len(pieces) - 1)
            wire += frame.serialize(mask=mask, extensions=[ext])
            if rng.random() < 0.2:
                wire += Frame(Opcode.PING, b"hb").serialize(mask=mask)
    return bytes(wire)


@pytest.mark.parametrize("seed", range(12))
def test_websockets_library_cross_check(seed: int) -> None:
    rng = random.Random(seed)
    server_bits, client_bits = rng.choice([9, 10, 12, 15]), rng.choice([9, 11, 15])
    server_nct, client_nct = rng.random() < 0.5, rng.random() < 0.5
    header = _extension_header(server_bits, client_bits, server_nct, client_nct)
    # each side's encoder: "local" = the sender's own parameters
    server_ext = PerMessageDeflate(client_nct, server_nct, client_bits, server_bits)
    client_ext = PerMessageDeflate(server_nct, client_nct, server_bits, client_bits)
    session = WebSocketSession(seed, extensions=header)
    for direction, ext, mask in (("in", server_ext, False), ("out", client_ext, True)):
        messages = [_random_message(rng) for _ in range(60)]
        wire = _encode_stream(rng, ext, mask, messages)
        cuts = sorted(rng.sample(range(1, len(wire)), k=min(len(wire) - 1, 200)))
        events = feed_pieces(session, direction, wire, cuts)
        assert not [e for e in events if isinstance(e, Anomaly)]
        data_msgs = [e for e in events if isinstance(e, WsMessage) and e.opcode != "ping"]
        assert [(m.opcode, m.payload) for m in data_msgs] == [
            ("text" if op == Opcode.TEXT else "binary", d) for op, d in messages
        ]
        assert all(m.compressed for m in data_msgs)


def test_without_handshake_compressed_frames_still_inflate() -> None:
    """Capture starts mid-stream: RSV1 messages inflate, with the bytes that copy from
    history before the capture marked unknown (NUL) instead of failing."""
    ext = PerMessageDeflate(False, False, 15, 15)
    rng = random.Random(5)
    messages = [(Opcode.TEXT, b'{"seq":%d,"px":"42.0"}' % i * 3) for i in range(30)]
    wire = _encode_stream(rng, ext, False, messages)
    s = WebSocketSession(1, extensions=None)
    events = s.feed("in", wire, 1, 2)
    got = [e.payload for e in events if isinstance(e, WsMessage) and e.opcode == "text"]
    assert got == [d for _, d in messages]
    later = WebSocketSession(2, extensions=None)
    second_on = wire[len(_encode_stream(random.Random(5), PerMessageDeflate(False, False, 15, 15),
                                        False, messages[:1])):]
    events = later.feed("in", second_on, 1, 2) + later.finish(3)
    codes = [e.code for e in events if isinstance(e, Anomaly)]
    assert "inflate_without_handshake" not in codes
    assert codes[0] == "websocket_without_upgrade" and "inflate_history_unknown" in codes
    got_msgs = [e for e in events if isinstance(e, WsMessage) and e.opcode == "text"]
    assert len(got_msgs) == 29 and got_msgs[0].payload_unknown
    for m, (_, want) in zip(got_msgs, messages[1:], strict=True):
        assert all(a == b or a == 0 for a, b in zip(m.payload, want, strict=True))
        assert (m.payload_unknown or 0) == sum(a != b for a, b in zip(m.payload, want,
                                                                      strict=True))


# ---- malformed input -------------------------------------------------------------------


def _codes(events: list[object]) -> list[str]:
    return [e.code for e in events if isinstance(e, Anomaly)]


def _messages(events: list[object]) -> list[tuple[str, bytes]]:
    return [(e.opcode, e.payload) for e in events if isinstance(e, WsMessage)]


GOOD = bytes.fromhex("810548656c6c6f")


def test_bad_opcode_stops_the_direction() -> None:
    s = WebSocketSession(1, extensions="")
    events = s.feed("in", bytes.fromhex("830100") + GOOD, 1, 2)
    assert _codes(events) == ["bad_opcode"] and _messages(events) == []
    assert s.feed("in", GOOD, 3, 4) == []
    assert _messages(s.feed("out", MASKED_HELLO, 5, 6)) == [("text", HELLO)]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("a10548656c6c6f", "reserved_bits"),  # RSV2 set
        ("c10548656c6c6f", "reserved_bits"),  # RSV1 without permessage-deflate
        ("897e007e" + "00" * 126, "control_too_long"),
        ("800548656c6c6f", "unexpected_continuation"),
        ("090548656c6c6f", "fragmented_control"),
        ("81850000000048656c6c6f", "masked_server_frame"),
    ],
)
def test_frame_level_anomalies_and_recovery(frame: str, code: str) -> None:
    s = WebSocketSession(1, extensions="")
    events = s.feed("in", bytes.fromhex(frame) + GOOD, 1, 2)
    assert code in _codes(events)
    assert _messages(events)[-1] == ("text", HELLO)  # the next frame still decodes


def test_unmasked_client_frame() -> None:
    s = WebSocketSession(1, extensions="")
    events = s.feed("out", GOOD, 1, 2)
    assert _codes(events) == ["unmasked_client_frame"] and _messages(events) == [("text", HELLO)]


def test_message_too_long_is_skipped_without_buffering() -> None:
    s = WebSocketSession(1, extensions="", max_message=100)
    big = b"\x02\x7e\x00\xc8" + bytes(200)  # 200-byte first fragment of a binary message
    cont = b"\x80\x05" + HELLO  # its last fragment
    events = []
    for i in range(0, len(big), 7):
        events += s.feed("in", big[i:i + 7], 1, 2)
        assert len(s._dirs["in"].buf.data) <= 14
    events += s.feed("in", cont + GOOD, 3, 4)
    assert _codes(events) == ["message_too_long"]
    assert _messages(events) == [("text", HELLO)]


def test_inflate_bomb_is_truncated() -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = (comp.compress(bytes(50 << 20)) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = b"\xc2\x7f" + len(body).to_bytes(8, "big") + body
    s = WebSocketSession(1, extensions=PMD, max_inflated=1 << 20)
    events = s.feed("in", frame, 1, 2)
    assert _codes(events) == ["inflate_bomb"]
    (m,) = [e for e in events if isinstance(e, WsMessage)]
    assert m.payload_truncated and m.payload == bytes(1 << 20) and m.message_length == 1 << 20


def test_gap_inside_a_frame_drops_it_and_resyncs() -> None:
    s = WebSocketSession(1, extensions="")
    frame = b"\x82\x7e\x01\x00" + bytes(256)
    assert s.feed("in", frame[:50], 1, 2) == []
    events = s.gap("in", 100, 3)
    events += s.feed("in", frame[150:] + GOOD, 4, 5)
    assert _codes(events) == ["stream_gap"]
    (m,) = [e for e in events if isinstance(e, WsMessage)]
    assert m.payload == HELLO and m.stream_offset == len(frame)


def test_gap_between_frames_hunts_for_the_next_frame() -> None:
    s = WebSocketSession(1, extensions="")
    s.feed("in", GOOD, 1, 2)
    assert _codes(s.gap("in", 10, 3)) == ["stream_gap"]
    text = b'{"id":1,"result":"ok","usIn":1}'
    frame = bytes([0x81, len(text)]) + text
    events = s.feed("in", b"\x05lo" + frame + frame, 4, 5)  # a frame's tail, then frames
    assert _codes(events) == ["midstream_resync"]
    assert [e.payload for e in events if isinstance(e, WsMessage)] == [text, text]


def test_finish_flushes_unfinished_message() -> None:
    s = WebSocketSession(1, extensions="")
    s.feed("in", bytes.fromhex("010348656c") + b"\x80", 1, 2)
    events = s.finish(9)
    assert _codes(events) == ["incomplete_message", "truncated_frame"]
    (m,) = [e for e in events if isinstance(e, WsMessage)]
    assert (m.payload, m.fin) == (b"Hel", False)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["out", "in", "gap"]), st.binary(max_size=80)),
             max_size=12),
    st.sampled_from([None, "", PMD, f"{PMD}; server_no_context_takeover"]),
)
def test_random_bytes_never_raise(pieces: list[tuple[str, bytes]], ext: str | None) -> None:
    s = WebSocketSession(1, extensions=ext, max_message=1 << 12, max_inflated=1 << 14)
    for i, (kind, data) in enumerate(pieces):
        if kind == "gap":
            s.gap("in", len(data) + 1, i)
        else:
            s.feed(kind, data, i, i)  # type: ignore[arg-type]
    s.finish(99)
