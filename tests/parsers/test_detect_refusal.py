"""``ProtocolSpec.refuses`` and ``probe_late``: the promises the application layer's
bulk path for undetected connections (``AppLayer._quiet``) relies on.

A refusal says a probe is False for these bytes and for every stream that begins
with them; ``probe_late`` is monotone (a prefix it accepts, every longer prefix is
accepted too). Both are checked on every prefix of byte strings made to sit near the
edges: real protocol starts cut, mutated and continued with random bytes.
"""

from __future__ import annotations

from helpers.fix_messages import new_order_single
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.detect import refused
from pcapflow.parsers.protocols.registry import REGISTRY

SEEDS = [
    bytes.fromhex("16030100c4010000c00303") + bytes(0xC4 - 6),  # RFC 8448 ClientHello
    (b"\x17\x03\x03\x00\x20" + bytes(32)) * 2,
    bytes.fromhex("802b0103010012"),  # SSLv2-compatible ClientHello
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000006040000000000000300000064"),
    bytes.fromhex("000006040000000000000300000064") + bytes.fromhex("0000040800000000000000ffff"),
    bytes.fromhex("810548656c6c6f") * 3,  # RFC 6455 §5.7
    bytes.fromhex("818537fa213d7f9f4d5158") * 2,
    bytes.fromhex("817e0080") + bytes(128),
    b"GET /api/v3/order HTTP/1.1\r\nHost: a\r\n\r\n",
    b"PROPFIND /x HTTP/1.1\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    new_order_single(),
    b"8=FIXT.1.1\x019=12\x0135=A\x01",
    b'{"e":"depthUpdate","E":1717421400000,"s":"BTCUSDT"}\n',
    b"SSH-2.0-OpenSSH_9.2\r\n",
]


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """A seed cut anywhere, maybe one byte changed, then random bytes; or pure noise."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=160))
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    seed = seed[: draw(st.integers(0, len(seed)))]
    if seed and draw(st.booleans()):
        seed[draw(st.integers(0, len(seed) - 1))] = draw(st.integers(0, 255))
    return bytes(seed) + draw(st.binary(max_size=60))


@settings(max_examples=600, deadline=None)
@given(streams())
def test_a_refused_prefix_is_refused_whatever_follows(data: bytes) -> None:
    for spec in REGISTRY:
        assert spec.refuses is not None, spec.name
        for d, (probe, refuses) in enumerate(zip((spec.probe_out, spec.probe_in),
                                                 spec.refuses, strict=True)):
            first = next((n for n in range(1, len(data) + 1) if refuses(data[:n])), None)
            if first is None:
                continue
            for n in range(first, len(data) + 1):
                assert not probe(data[:n]), (spec.name, d, data[:first], data[:n])
    for d in (0, 1):  # all protocols: ``detect.refused``
        first = next((n for n in range(1, len(data) + 1) if refused(d, data[:n])), None)
        if first is not None:
            assert all(refused(d, data[:n]) for n in range(first, len(data) + 1))


@settings(max_examples=300, deadline=None)
@given(st.lists(streams(), min_size=1, max_size=4))
def test_probe_late_is_monotone(parts: list[bytes]) -> None:
    data = b"".join(parts)
    for spec in REGISTRY:
        if spec.probe_late is None:
            continue
        said = [spec.probe_late(data[:n]) for n in range(len(data) + 1)]
        if True in said:
            assert all(said[said.index(True):]), spec.name


def test_refusals_say_no_to_what_the_benchmark_capture_carries() -> None:
    """JSON and text lines are refused at their first bytes (so such a connection's
    later bytes skip the probes), while real protocol starts never are."""
    for text in (b'{"e":"depthUpdate"}', b"SSH-2.0-OpenSSH_9.2\r\n", b"220 mail.example ESMTP\r\n"):
        assert refused(0, text) and refused(1, text)
    for seed in SEEDS[:-2]:
        for n in range(1, min(len(seed), 12) + 1):
            assert not (refused(0, seed[:n]) and refused(1, seed[:n])), seed[:n]
