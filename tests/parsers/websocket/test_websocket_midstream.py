"""WebSocket without its upgrade: frames found mid-stream, messages assembled.

Streams are encoded by the ``websockets`` library (an independent encoder: masking,
fragmentation, pings, permessage-deflate with context takeover), cut at many offsets
and fed to a ``WebSocketSession`` that never saw the handshake, in random pieces.

What is found: every message from the first frame ``find_frame_start`` believes,
exactly; before it, at most a few messages right after the cut are passed over when
the cut is inside a frame (a short frame, a ping or a small compressed one, cannot be
told from noise until a frame whose content can be checked follows). Fragments are at
least ``RESYNC_CHECK_MIN`` bytes here, as real senders' are (they fragment at KiB).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import websockets.frames
from pcapflow.parsers.events import Anomaly, Direction, Run
from pcapflow.parsers.websocket.deflate import UNKNOWN_BYTE
from pcapflow.parsers.websocket.session import (
    RESYNC_CHECK_MIN,
    WebSocketSession,
    WsMessage,
    find_frame_start,
)
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode


@pytest.fixture(autouse=True)
def _seeded_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """websockets draws masking keys from ``secrets``: seeded here, so runs repeat."""
    rng = random.Random(1)
    monkeypatch.setattr(websockets.frames.secrets, "token_bytes", rng.randbytes)


def _encode(rng: random.Random, mask: bool, n: int, compress: bool
            ) -> tuple[bytes, list[tuple[int, str, bytes]]]:
    """``(wire, [(offset of first frame, opcode, payload)])`` of ``n`` messages."""
    ext = [PerMessageDeflate(False, False, 15, 15)] if compress else []
    wire = bytearray()
    messages = []
    for i in range(n):
        data = b'{"id":%d,"method":"order.place","params":{"price":"%d"}}' % (
            i, rng.randrange(10**6)) * rng.randrange(1, 4)
        cuts = sorted(rng.sample(range(RESYNC_CHECK_MIN, len(data) - RESYNC_CHECK_MIN),
                                 k=rng.randrange(3)))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        messages.append((len(wire), "text", data))
        for k, piece in enumerate(pieces):
            op = Opcode.TEXT if k == 0 else Opcode.CONT
            wire += Frame(op, piece, fin=k == len(pieces) - 1).serialize(mask=mask,
                                                                        extensions=ext)
            if rng.random() < 0.15 and k == len(pieces) - 1:
                messages.append((len(wire), "ping", b"hb"))
                wire += Frame(Opcode.PING, b"hb").serialize(mask=mask)
    return bytes(wire), messages


def _feed(s: WebSocketSession, direction: Direction, data: bytes, rng: random.Random
          ) -> list[object]:
    events: list[object] = []
    pos = 0
    while pos < len(data):
        n = rng.randrange(1, 1500)
        events += s.feed(direction, data[pos:pos + n], pos, pos + n)
        pos += n
    return events + s.finish(pos + 1)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("direction", ["out", "in"])
def test_cut_anywhere_yields_every_later_message(direction: Direction, compress: bool) -> None:
    rng = random.Random(f"{direction}{compress}")
    wire, messages = _encode(rng, direction == "out", 80, compress)
    cuts = sorted(rng.sample(range(len(wire) - 200), 60))
    for cut in cuts:
        s = WebSocketSession(7, extensions=None)
        events = _feed(s, direction, wire[cut:], random.Random(cut))
        got = [e for e in events if isinstance(e, WsMessage)]
        want = [m for m in messages if m[0] >= cut]
        skipped = len(want) - len(got)
        assert skipped >= 0 and all(o < cut + 1024 for o, _, _ in want[:skipped]), (cut, skipped)
        if skipped and want[0][0] == cut:
            assert want[0][1] == "ping" or compress, cut  # cut on a boundary: believed
        want = want[skipped:]
        assert [(cut + g.stream_offset, g.opcode) for g in got] == [(o, op) for o, op, _ in want]
        for g, (_, _, payload) in zip(got, want, strict=True):
            wrong = [i for i, (a, b) in enumerate(zip(g.payload, payload, strict=True)) if a != b]
            assert all(g.payload[i] == UNKNOWN_BYTE for i in wrong)
            assert (g.payload_unknown or 0) >= len(wrong)
            if not compress:
                assert g.payload == payload and g.payload_unknown is None
        codes = [e.code for e in events if isinstance(e, Anomaly)]
        assert codes[0] == "websocket_without_upgrade"
        assert not {"unexpected_continuation", "bad_opcode", "inflate_without_handshake",
                    "truncated_frame", "no_frames_found"} & set(codes), (cut, codes)
        for e in events:  # the resync note points at the first frame believed
            if isinstance(e, Anomaly) and e.code == "midstream_resync":
                assert got and 0 < e.stream_offset <= got[0].stream_offset


def test_batch_path_matches_piece_by_piece() -> None:
    rng = random.Random(3)
    wire, _ = _encode(rng, False, 300, True)
    cut = 777
    data = wire[cut:]
    ends = np.array(sorted({*rng.sample(range(1, len(data)), 200), len(data)}), dtype=np.int64)
    ts = np.arange(ends.size, dtype=np.int64)
    a = WebSocketSession(1, extensions=None)
    batch = a.feed_many("in", Run(data, ends, ts, ts)) + a.finish(10**6)
    b = WebSocketSession(1, extensions=None)
    single: list[object] = []
    for i, (x, y) in enumerate(zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True)):
        single += b.feed("in", data[x:y], i, i)
    single += b.finish(10**6)
    msgs = [(e.stream_offset, e.payload, e.ts_last, e.payload_unknown) for e in batch
            if isinstance(e, WsMessage)]
    assert msgs == [(e.stream_offset, e.payload, e.ts_last, e.payload_unknown) for e in single
                    if isinstance(e, WsMessage)]


def test_find_frame_start_rejects_noise() -> None:
    rng = random.Random(11)
    false = 0
    for _ in range(200):
        noise = rng.randbytes(3000)
        at, _ = find_frame_start(noise, True, 1 << 24)
        false += at is not None
    assert false <= 2


def test_no_frames_in_garbage_is_an_anomaly() -> None:
    s = WebSocketSession(1, extensions=None)
    events = s.feed("in", b"\x7f" * 100, 1, 2) + s.finish(3)
    assert [e.code for e in events if isinstance(e, Anomaly)] == [
        "websocket_without_upgrade", "no_frames_found"]
