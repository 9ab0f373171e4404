"""TCP stream reassembly against a slow, obviously-correct reference model.

Property (DESIGN.md "Tests"): any segmentation, reordering, duplication and
retransmission of a byte stream reassembles to the same bytes, and every byte
gets the same two times as the reference model computes:
- ts_first = time of the first captured copy of that byte;
- ts_avail = the first time at which that byte and all bytes before it had arrived.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.tcp.reassembly import Conflict, Gap, Piece, StreamReassembler


def reference(stream: bytes, segments: list[tuple[int, int, int]]) -> tuple[list[int], list[int]]:
    """Per-byte (ts_first, ts_avail) by brute force over arrival order."""
    n = len(stream)
    first = [None] * n
    avail = [None] * n
    have = [False] * n
    for off, ln, ts in segments:
        for o in range(off, min(off + ln, n)):
            if first[o] is None:
                first[o] = ts
            have[o] = True
        k = 0
        while k < n and have[k]:
            if avail[k] is None:
                avail[k] = ts
            k += 1
    return first, avail


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, int, int]]]:
    stream = draw(st.binary(min_size=1, max_size=300))
    n = len(stream)
    # a covering segmentation, then extra copies (retransmissions, overlaps)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=20))) | {0, n})
    segs = [(a, b - a) for a, b in itertools.pairwise(cuts) if b > a]
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 64)), max_size=15))
    segs += [(o, min(ln, n - o)) for o, ln in extra]
    order = draw(st.permutations(range(len(segs))))
    arrival = [segs[i] for i in order]
    return stream, [(o, ln, 1000 + 10 * k) for k, (o, ln) in enumerate(arrival)]


def run(
    stream: bytes, segments: list[tuple[int, int, int]], **kw: int
) -> list[Piece | Gap | Conflict]:
    r = StreamReassembler(**kw)
    out: list[Piece | Gap | Conflict] = []
    for off, ln, ts in segments:
        out += r.segment(off, stream[off : off + ln], ts)
    out += r.finish(10**9)
    return out


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_any_segmentation_reassembles_with_reference_times(scn) -> None:
    stream, segments = scn
    out = run(stream, segments)
    assert not [e for e in out if isinstance(e, (Gap, Conflict))]
    pieces = [e for e in out if isinstance(e, Piece)]
    assert b"".join(p.data for p in pieces) == stream
    first, avail = reference(stream, segments)
    for p in pieces:
        for k in range(len(p.data)):
            o = p.offset + k
            assert p.ts_first == first[o], (o, p)
            assert p.ts_avail == avail[o], (o, p)


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.data())
def test_missing_bytes_become_gaps_and_rest_is_exact(scn, data) -> None:
    stream, segments = scn
    # drop every copy covering one byte: it was never captured
    hole = data.draw(st.integers(0, len(stream) - 1))
    kept = []
    for off, ln, ts in segments:
        if off <= hole < off + ln:
            if hole > off:
                kept.append((off, hole - off, ts))
            if off + ln > hole + 1:
                kept.append((hole + 1, off + ln - hole - 1, ts))
        else:
            kept.append((off, ln, ts))
    out = run(stream, kept)
    gaps = [e for e in out if isinstance(e, Gap)]
    if hole == len(stream) - 1:
        # nothing was captured after the hole, so nothing shows it was a hole
        assert gaps == []
        assert b"".join(e.data for e in out if isinstance(e, Piece)) == stream[:hole]
        return
    assert [(g.offset, g.length) for g in gaps] == [(hole, 1)]
    got = bytearray()
    for e in out:
        if isinstance(e, Piece):
            got += e.data
        elif isinstance(e, Gap):
            got += b"?" * e.length
    assert bytes(got) == stream[:hole] + b"?" + stream[hole + 1 :]


def test_conflicting_retransmission_is_reported_and_first_copy_wins() -> None:
    r = StreamReassembler()
    assert r.segment(5, b"fghij", 2) == []
    out = r.segment(0, b"abcde", 3)
    assert b"".join(p.data for p in out if isinstance(p, Piece)) == b"abcdefghij"
    assert [p.ts_first for p in out] == [3, 2] and [p.ts_avail for p in out] == [3, 3]
    assert r.segment(3, b"dX", 4) == [Conflict(3, 2, 4)]  # differs from delivered bytes
    assert r.segment(12, b"mn", 5) == []
    assert r.segment(11, b"ZZ", 6) == [Conflict(12, 1, 6)]  # differs from held bytes
    out = r.ack(20, 7)  # the receiver has everything: bytes 10.. were never captured
    assert out[0] == Gap(10, 1, 7)
    assert b"".join(p.data for p in out[1:]) == b"Zmn"


def test_held_bytes_are_bounded() -> None:
    r = StreamReassembler(max_held=1000)
    out = []
    for k in range(10):
        out += r.segment(10 + 300 * k, b"x" * 300, k)
    assert r.held_bytes <= 1000
    assert isinstance(out[0], Gap) and out[0].offset == 0 and out[0].length == 10
