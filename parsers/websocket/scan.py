"""Compiled frame-header scan for the WebSocket parser's batch path.

How this works: ``feed_many`` holds many whole frames in its buffer at once.
Walking their headers in Python costs more than inflating them, so this Numba
kernel walks the headers and returns where each frame starts and how long it
is, stopping at the first one that is incomplete or that the general, per-frame
code must see (a control frame, a header worth an anomaly). The caller then
does only the per-frame work that needs Python objects (zlib).

Header layout: RFC 6455 §5.2 (``FIN|RSV|opcode``, ``MASK|len7``, 16/64-bit
extended length, 4-byte masking key).
"""

from __future__ import annotations

import numpy as np

from ..jitload import kernel

MAX_UNITS = 1 << 16
"""Most frames returned by one call (bounds the arrays allocated)."""

# Why a WebSocket scan stopped.
NEED_MORE = 0  # the next frame is not all buffered yet
SPECIAL = 1  # the next frame must go through the general path
FULL = 2  # MAX_UNITS frames returned; call again


@kernel(cache=True)
def ws_simple_frames(buf: np.ndarray, masked_dir: bool, rsv1_ok: bool,
                     max_message: int):
    """Consecutive whole, simple frames from the start of ``buf``.

    Simple: FIN set, opcode text or binary, RSV2/RSV3 clear, RSV1 only when
    ``rsv1_ok``, masked exactly when ``masked_dir``, payload <= ``max_message``.
    Returns ``(starts, header_lengths, payload_lengths, rsv1, opcodes, stop)``
    with ``stop`` one of ``NEED_MORE``, ``SPECIAL``, ``FULL``.
    """
    n = buf.shape[0]
    cap = min(n // 2 + 1, MAX_UNITS)
    starts = np.empty(cap, np.int64)
    hls = np.empty(cap, np.int64)
    lens = np.empty(cap, np.int64)
    rsv1 = np.empty(cap, np.bool_)
    ops = np.empty(cap, np.int8)
    k = 0
    pos = 0
    stop = NEED_MORE
    while True:
        if k == cap:
            stop = FULL
            break
        if n - pos < 2:
            break
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = np.int64(b1 & 0x7F)
        hl = 2
        if length == 126:
            hl = 4
            if n - pos < hl:
                break
            length = (np.int64(buf[pos + 2]) << 8) | buf[pos + 3]
        elif length == 127:
            hl = 10
            if n - pos < hl:
                break
            if buf[pos + 2] & 0x80:
                stop = SPECIAL  # 64-bit length with the top bit set
                break
            length = 0  # type: ignore[assignment]  # Numba: int64 throughout
            for j in range(8):
                length = (length << 8) | buf[pos + 2 + j]
        masked = (b1 & 0x80) != 0
        if masked:
            hl += 4
        opcode = b0 & 0x0F
        rsv = b0 & 0x70
        if ((b0 & 0x80) == 0 or (opcode != 1 and opcode != 2)
                or (rsv != 0 and (rsv != 0x40 or not rsv1_ok)) or masked != masked_dir
                or length > max_message):
            stop = SPECIAL
            break
        end = pos + hl + length
        if end > n:
            break
        starts[k] = pos
        hls[k] = hl
        lens[k] = length
        rsv1[k] = rsv != 0
        ops[k] = opcode
        k += 1
        pos = end  # type: ignore[assignment]  # Numba: int64 throughout
    return starts[:k], hls[:k], lens[:k], rsv1[:k], ops[:k], stop
