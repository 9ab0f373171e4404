"""permessage-deflate (RFC 7692): parameter negotiation and the per-direction inflater."""

from __future__ import annotations

import os
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers import native
from pcapflow.parsers.websocket.deflate import (
    INFLATE_CHUNK,
    MessageInflater,
    PerMessageDeflateParams,
    parse_extensions,
)

HELLO = b"Hello"

# Every behaviour below holds for both inflaters: the pure-Python one and the one
# the compiled batch path shares (zlib called from Numba), when its libraries exist.
IMPLEMENTATIONS = [MessageInflater] + ([native.NativeInflater] if native.AVAILABLE else [])


@pytest.fixture(params=IMPLEMENTATIONS, ids=lambda c: c.__name__, scope="module")
def Inflater(request: pytest.FixtureRequest) -> type:  # a class: named like one
    return request.param


def _deflate_message(comp: zlib._Compress, data: bytes) -> bytes:
    """Compress one message the way RFC 7692 §7.2.1 says a sender does."""
    out = comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


# ---- negotiation -----------------------------------------------------------------


def test_parse_extensions_splits_offers_and_params() -> None:
    header = 'permessage-deflate; client_max_window_bits; server_max_window_bits="10", x-foo'
    assert parse_extensions(header) == [
        ("permessage-deflate", {"client_max_window_bits": None, "server_max_window_bits": "10"}),
        ("x-foo", {}),
    ]
    assert parse_extensions(None) == []
    assert parse_extensions("") == []


def test_params_from_server_response() -> None:
    p = PerMessageDeflateParams.from_header(
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=12"
    )
    assert p is not None
    assert p.server_no_context_takeover and not p.client_no_context_takeover
    assert (p.server_max_window_bits, p.client_max_window_bits) == (15, 12)
    # out = client -> server uses the client's parameters
    assert p.for_direction("out") == (12, False)
    assert p.for_direction("in") == (15, True)
    assert PerMessageDeflateParams.from_header("x-webkit-deflate-frame") is None
    assert PerMessageDeflateParams.from_header(None) is None


@pytest.mark.parametrize("value", ["7", "16", "abc", ""])
def test_bad_window_bits_fall_back_to_15(value: str) -> None:
    p = PerMessageDeflateParams.from_header(f"permessage-deflate; server_max_window_bits={value}")
    assert p is not None and p.server_max_window_bits == 15


# ---- RFC 7692 §7.2.3 payloads, at the inflater level -----------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "f248cdc9c90700",  # §7.2.3.1: one compressed DEFLATE block
        "000500faff48656c6c6f00",  # §7.2.3.3: a block with no compression
        "f348cdc9c9070000",  # §7.2.3.4: a block with BFINAL set to 1
        "f248050000 00ffff cac9c90700",  # §7.2.3.5: two DEFLATE blocks in one message
    ],
)
def test_rfc7692_payloads(Inflater: type, payload: str) -> None:
    assert Inflater().inflate(bytes.fromhex(payload), 1000) == (HELLO, "ok")


def test_rfc7692_sliding_window_shared_between_messages(Inflater: type) -> None:
    """§7.2.3.2: the second "Hello" is only a back-reference into the first."""
    inf = Inflater()
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")
    assert inf.inflate(bytes.fromhex("f200110000"), 100) == (HELLO, "ok")


def test_no_context_takeover_resets_per_message(Inflater: type) -> None:
    inf = Inflater(no_context_takeover=True)
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")
    # the back-reference now points before the window: corrupt for this receiver
    _, status = inf.inflate(bytes.fromhex("f200110000"), 100)
    assert status == "failed"
    # and the next independent message decodes again
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")


def test_message_after_bfinal_block_keeps_its_window(Inflater: type) -> None:
    inf = Inflater()
    assert inf.inflate(bytes.fromhex("f348cdc9c9070000"), 100) == (HELLO, "ok")
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")
    # §7.2.3.2's back-reference payload refers to the "Hello" just inflated
    assert inf.inflate(bytes.fromhex("f200110000"), 100) == (HELLO, "ok")


def test_empty_message(Inflater: type) -> None:
    # §7.2.3.6: an empty stored block (a single 0x00 byte) inflates to nothing
    assert Inflater().inflate(b"\x00", 10) == (b"", "ok")


@pytest.mark.parametrize("bits", [8, 9, 10, 12, 15])
@pytest.mark.parametrize("takeover", [True, False])
def test_roundtrip_with_zlib_compressor(Inflater: type, bits: int, takeover: bool) -> None:
    inf = Inflater(bits, no_context_takeover=not takeover)
    comp = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9))
    rng = os.urandom(3000)
    messages = [b'{"op":"order","px":"%d"}' % i * (i % 7 + 1) for i in range(40)] + [rng, b""]
    for msg in messages:
        if not takeover:
            comp = zlib.compressobj(6, zlib.DEFLATED, -max(bits, 9))
        assert inf.inflate(_deflate_message(comp, msg), 1 << 20) == (msg, "ok")


def test_bomb_is_cut_at_the_cap_without_inflating_it_all(Inflater: type) -> None:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = _deflate_message(comp, bytes(200 << 20))  # 200 MiB of zeros, ~200 KB on the wire
    inf = Inflater()
    body, status = inf.inflate(bomb, 1 << 20)
    assert status == "bomb"
    assert body == bytes(1 << 20)
    # the context was reset: an independent message still decodes
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")


def test_exactly_max_length_is_not_a_bomb(Inflater: type) -> None:
    for size in (INFLATE_CHUNK - 1, INFLATE_CHUNK, INFLATE_CHUNK + 1, 3 * INFLATE_CHUNK):
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        msg = bytes(size)
        assert Inflater().inflate(_deflate_message(comp, msg), size) == (msg, "ok")


def test_garbage_fails_and_resets(Inflater: type) -> None:
    inf = Inflater()
    assert inf.inflate(b"\xff\xff\xff\xff", 100)[1] == "failed"
    assert inf.inflate(bytes.fromhex("f248cdc9c90700"), 100) == (HELLO, "ok")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=5), st.booleans())
def test_random_payloads_never_raise(Inflater: type, payloads: list[bytes],
                                     no_takeover: bool) -> None:
    inf = Inflater(15, no_takeover)
    for p in payloads:
        body, status = inf.inflate(p, 4096)
        assert status in ("ok", "failed", "bomb")
        assert len(body) <= 4096
