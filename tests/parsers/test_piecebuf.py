"""PieceBuffer: bytes and piece times survive a view of the buffer that is still alive.

A bytearray refuses to resize while something exports it (a NumPy array or a
memoryview over it). Ingests once failed with ``BufferError: Existing exports of
data`` in ``consume``: the buffer must move its bytes to a new bytearray instead.
"""

from __future__ import annotations

import numpy as np
from pcapflow.parsers.events import Run
from pcapflow.parsers.piecebuf import PieceBuffer


def _filled() -> PieceBuffer:
    buf = PieceBuffer(start=100)
    buf.append(b"abcd", 1, 2)
    buf.append(b"efgh", 3, 4)
    return buf


def test_consume_while_a_numpy_view_is_alive() -> None:
    buf, ref = _filled(), _filled()
    view = np.frombuffer(buf.data, dtype=np.uint8)  # an export, as the parsers make
    buf.consume(5)
    ref.consume(5)
    assert bytes(buf.data) == bytes(ref.data) == b"fgh"
    assert buf.start == ref.start == 105
    assert buf.times_at(105) == ref.times_at(105) == (3, 4)
    assert bytes(view) == b"abcdefgh"  # the view still sees the old bytes, unchanged


def test_append_while_a_memoryview_is_alive() -> None:
    buf, ref = _filled(), _filled()
    with memoryview(buf.data) as mv:
        buf.append(b"ij", 5, 6)
        buf.append_run(Run(b"klm", np.array([1, 3]), np.array([7, 8]), np.array([7, 9])))
        ref.append(b"ij", 5, 6)
        ref.append_run(Run(b"klm", np.array([1, 3]), np.array([7, 8]), np.array([7, 9])))
        assert bytes(mv) == b"abcdefgh"
        buf.consume(9)
        ref.consume(9)
    assert bytes(buf.data) == bytes(ref.data) == b"jklm"
    assert buf.end == ref.end == 113
    for offset in range(109, 113):
        assert buf.times_at(offset) == ref.times_at(offset)
    buf.consume(4)  # and in place again once the view is gone
    assert buf.data == bytearray() and buf.start == 113
