"""Compiled record-header scan for the TLS parser's batch path.

How this works: ``TlsSession.feed_many`` holds many whole records in its buffer
at once. Walking their headers in Python costs more than decrypting them, so
this Numba kernel walks the headers (RFC 8446 §5.1 / RFC 5246 §6.2.1: ``type(1)
version(2) length(2)``, declared in ``record``) and returns where each
application-data record starts and how long it is, stopping at the first one
that is incomplete or of another content type: the general, per-record code
takes that one.
"""

from __future__ import annotations

import numpy as np

from ..jitload import kernel
from .record import APPLICATION_DATA, HEADER_LENGTH, MAJOR_VERSION

MAX_UNITS = 1 << 16
"""Most records returned by one call (bounds the arrays allocated)."""


@kernel(cache=True)
def tls_app_records(buf: np.ndarray, pos: int, max_record: int):
    """Consecutive whole application-data records (``APPLICATION_DATA``, version 3.x,
    length <= ``max_record``) from ``pos``: ``(starts, lengths, versions)``;
    ``lengths`` are fragment lengths (header excluded)."""
    n = buf.shape[0]
    cap = min((n - pos) // HEADER_LENGTH + 1, MAX_UNITS)
    starts = np.empty(cap, np.int64)
    lengths = np.empty(cap, np.int64)
    versions = np.empty(cap, np.int64)
    k = 0
    while k < cap and n - pos >= HEADER_LENGTH:
        if buf[pos] != APPLICATION_DATA or buf[pos + 1] != MAJOR_VERSION:
            break
        length = (np.int64(buf[pos + 3]) << 8) | buf[pos + 4]
        end = pos + HEADER_LENGTH + length
        if length > max_record or end > n:
            break
        starts[k] = pos
        lengths[k] = length
        versions[k] = (np.int64(buf[pos + 1]) << 8) | buf[pos + 2]
        k += 1
        pos = end
    return starts[:k], lengths[:k], versions[:k]
