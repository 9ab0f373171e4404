"""Mid-stream permessage-deflate: inflating without the history before the capture.

``MidstreamInflater`` marks every byte that depends on history it never saw; the
properties: a byte reported known is right, and after a full window of known output
every byte is known (and the inflater hands over an exact running context).
"""

from __future__ import annotations

import random
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.parsers.websocket.deflate import UNKNOWN_BYTE, MessageInflater, MidstreamInflater

WINDOW = 1 << 15


def _compress_all(messages: list[bytes], *, takeover: bool = True, level: int = 6,
                  wbits: int = 15) -> list[bytes]:
    """Each message as an RFC 7692 sender writes it (sync flush, tail removed)."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = []
    for m in messages:
        if not takeover:
            comp = zlib.compressobj(level, zlib.DEFLATED, -wbits)
        data = comp.compress(m) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        out.append(data[:-4])
    return out


VOCAB = [b'{"id":', b'"method":"order.place"', b'"symbol":"BTCUSDT"', b'"price":"',
         b'"quantity":"0.01"', b'"side":"BUY"', b'"newClientOrderId":"', b"}", b",",
         b'"status":"NEW"', b'"e":"executionReport"']


@st.composite
def _stream(draw: st.DrawFn) -> tuple[list[bytes], int]:
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(1, 120))
    rng = random.Random(seed)
    messages = []
    for _ in range(n):
        parts = [rng.choice(VOCAB) + str(rng.randrange(10**9)).encode()
                 for _ in range(rng.randrange(1, 40))]
        if rng.random() < 0.1:  # now and then a big, barely compressible message
            parts.append(bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 9000))))
        messages.append(b"".join(parts))
    cut = draw(st.integers(0, n - 1))
    return messages, cut


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_stream())
def test_known_bytes_are_right_and_a_window_makes_it_exact(case: tuple[list[bytes], int]) -> None:
    messages, cut = case
    wire = _compress_all(messages)
    inf = MidstreamInflater()
    known_run = 0
    for original, compressed in zip(messages[cut:], wire[cut:], strict=True):
        was_exact = known_run >= WINDOW
        payload, status, unknown = inf.inflate_marked(compressed, 1 << 24)
        assert status == "ok" and len(payload) == len(original)
        wrong = [i for i, (g, w) in enumerate(zip(payload, original, strict=True)) if g != w]
        # every byte reported known is right; unknown ones are the marker
        assert all(payload[i] == UNKNOWN_BYTE for i in wrong)
        assert unknown >= len(wrong)
        unknown_at = [i for i, b in enumerate(payload) if b == UNKNOWN_BYTE]
        assert unknown == 0 or unknown_at  # the marker is where the unknown bytes are
        if was_exact:  # after a window of known output: every byte is known
            assert unknown == 0 and payload == original
        if unknown:
            known_run = len(payload) - 1 - unknown_at[-1]
        else:
            known_run += len(payload)
    assert inf.exact == (known_run >= WINDOW or inf.exact)


def test_cut_at_the_first_message_is_all_known() -> None:
    messages = [b'{"id":%d,"method":"order.place"}' % i for i in range(200)]
    inf = MidstreamInflater()
    out = [inf.inflate_marked(w, 1 << 20) for w in _compress_all(messages)]
    assert [p for p, _, _ in out] == messages and inf.unknown_messages == 0


def test_later_cut_marks_back_references_then_becomes_exact() -> None:
    rng = random.Random(7)
    chatty = [b'{"id":%d,"method":"order.place","symbol":"BTCUSDT","px":"%d"}'
              % (i, rng.randrange(10**6)) for i in range(300)]
    blob = rng.randbytes(WINDOW + 1000)  # a window of fresh output: nothing to copy
    messages = [*chatty, blob, *chatty]
    wire = _compress_all(messages)
    inf = MidstreamInflater()
    results = [inf.inflate_marked(w, 1 << 20) for w in wire[100:]]
    assert results[0][2] > 0  # the first message copies "method":... from history
    # a repetitive stream keeps copying its unknown strings from itself ...
    assert all(u > 0 for _, _, u in results[:200])
    for (p, _, _), m in zip(results, messages[100:], strict=True):
        assert all(a == b or a == UNKNOWN_BYTE for a, b in zip(p, m, strict=True))
    # ... until a window of known output: exact from then on
    after = results[201:]
    assert [p for p, _, _ in after] == messages[301:] and all(u == 0 for _, _, u in after)
    assert inf.exact and isinstance(inf.exact_inflater(), MessageInflater)


def test_no_context_takeover_is_known_from_the_first_message() -> None:
    messages = [b'{"id":%d,"method":"order.place","symbol":"BTCUSDT"}' % i for i in range(50)]
    wire = _compress_all(messages, takeover=False)
    inf = MidstreamInflater()
    for m, w in zip(messages[20:], wire[20:], strict=True):
        assert inf.inflate_marked(w, 1 << 20) == (m, "ok", 0)
    assert inf.unknown_messages == 0 and inf.messages == 30


@pytest.mark.parametrize("wbits", [9, 12, 15])
def test_smaller_sender_window(wbits: int) -> None:
    messages = [b"abc%d" % i * 50 for i in range(400)]
    wire = _compress_all(messages, wbits=wbits)
    inf = MidstreamInflater()
    for m, w in zip(messages[10:], wire[10:], strict=True):
        p, status, _ = inf.inflate_marked(w, 1 << 20)
        assert status == "ok"
        assert all(a == b or a == UNKNOWN_BYTE for a, b in zip(p, m, strict=True))


def test_corrupt_message_fails_and_history_is_unknown_again() -> None:
    inf = MidstreamInflater()
    _, status, _ = inf.inflate_marked(b"\xff\xff\xff\xff", 1 << 20)
    assert status == "failed" and not inf.exact
