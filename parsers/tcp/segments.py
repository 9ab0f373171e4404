"""Compiled walks over one connection's packets: simple in-order runs and RTT samples.

How this works. ``AppLayer`` hands the application layer one connection's packets
of a chunk at a time (capture order). Most of them are *simple*: in-order data
that the reassembler would deliver at once, copies of bytes the run already
delivered (retransmissions, equal byte for byte), or pure ACKs, with no FIN/RST
and no held data waiting on a hole. ``simple_prefix`` finds how far such a run goes;
the run is then handled in bulk (its payload gathered with ``gather``, delivered
to the parsers as a few ``Run``s, and its ``tcp_rtt`` samples computed by
``rtt_walk``), and the packet that ended it goes through the general
per-packet code. Both kernels reproduce the per-packet rules of
``reassembly.StreamReassembler`` and ``pipelines.ingest.app_layer.Connection``
exactly (a test compares the two paths table by table); they exist because
a Python loop over packets costs microseconds each.
"""

from __future__ import annotations

import numpy as np

from ..decode import FIN, RST
from ..jitload import kernel

# How far back (in packets) ``simple_prefix`` looks for the first copy of a
# retransmitted segment; a copy of older bytes ends the run.
RETRANSMIT_LOOKBACK = 4096


NO_ROOM = np.iinfo(np.int64).max
"""``bounded_prefix``'s room when new bytes of a direction may run on without end."""


@kernel(cache=True)
def simple_prefix(d: np.ndarray, off: np.ndarray, plen: np.ndarray, cap: np.ndarray,
                  flags: np.ndarray, start: int, next0: int, next1: int,
                  buf: np.ndarray, pos: np.ndarray) -> int:
    """End (exclusive) of the run of simple packets from ``start``.

    Simple: no FIN/RST; data (if any) fully captured and either exactly at the
    direction's next in-order offset, or entirely old bytes this run already
    delivered, byte for byte the same (a retransmission: the reassembler would
    drop it without a word; a copy that differs is a ``Conflict`` for the
    general path). ``buf``/``pos``: the chunk's bytes and each packet's payload
    position in it. The caller checks that nothing is held.
    """
    return bounded_prefix(d, off, plen, cap, flags, start, next0, next1, buf, pos,
                          NO_ROOM, NO_ROOM, np.empty(0, np.bool_))


@kernel(cache=True)
def bounded_prefix(d: np.ndarray, off: np.ndarray, plen: np.ndarray, cap: np.ndarray,
                   flags: np.ndarray, start: int, next0: int, next1: int,
                   buf: np.ndarray, pos: np.ndarray, room0: int, room1: int,
                   fresh: np.ndarray) -> int:
    """``simple_prefix``, ending also before the packet whose new bytes bring the
    direction's new bytes since ``start`` to ``room0``/``room1`` (0: its first new
    byte ends the run). ``fresh`` (empty, or one flag per packet): set for the
    packets of the run that bring new bytes (the others are copies or carry none).
    """
    nxt = np.empty(2, np.int64)
    nxt[0] = next0
    nxt[1] = next1
    first = nxt.copy()
    room = np.empty(2, np.int64)
    room[0] = room0
    room[1] = room1
    keep = fresh.shape[0] > 0
    i = start
    n = d.shape[0]
    while i < n:
        if flags[i] & (FIN | RST):
            break
        c = cap[i]
        new = False
        if c > 0:
            k = d[i]
            if c != plen[i]:
                break
            if off[i] != nxt[k]:
                if (off[i] < first[k] or off[i] + c > nxt[k]
                        or not _same_as_delivered(d, off, cap, buf, pos, start, i)):
                    break
            else:
                if nxt[k] - first[k] + c >= room[k]:
                    break
                nxt[k] += c
                new = True
        if keep:
            fresh[i] = new
        i += 1
    return i


@kernel(cache=True)
def _same_as_delivered(d: np.ndarray, off: np.ndarray, cap: np.ndarray, buf: np.ndarray,
                       pos: np.ndarray, start: int, i: int) -> bool:
    """Packet ``i``'s bytes equal the first copies the run delivered since ``start``.

    The run's in-order packets of that direction tile its offsets without overlap,
    so walking back from ``i`` over those that overlap it compares every byte once.
    """
    k = d[i]
    lo = off[i]
    hi = lo + cap[i]
    covered = 0
    seen = -1  # offset of the newest first copy met so far: older copies come before it
    for j in range(i - 1, max(start, i - RETRANSMIT_LOOKBACK) - 1, -1):
        if d[j] != k or cap[j] == 0:
            continue
        a = off[j]
        b = a + cap[j]
        if seen >= 0 and b > seen:
            continue  # itself a copy of later bytes, not a first copy
        seen = a
        if b <= lo:
            break
        s = max(a, lo)
        e = min(b, hi)
        if s < e:
            pj = pos[j] + (s - a)
            pi = pos[i] + (s - lo)
            for t in range(e - s):
                if buf[pj + t] != buf[pi + t]:
                    return False
            covered += e - s
    return covered == hi - lo


@kernel(cache=True)
def gather(buf: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The bytes ``buf[starts[i]:starts[i]+lengths[i]]`` of every i, concatenated."""
    total = 0
    for i in range(lengths.shape[0]):
        total += lengths[i]
    out = np.empty(total, np.uint8)
    pos = 0
    for i in range(lengths.shape[0]):
        s = starts[i]
        n = lengths[i]
        out[pos:pos + n] = buf[s:s + n]  # a slice copy: ~3x a byte loop
        pos += n
    return out


@kernel(cache=True)
def _queue_rows(qe: np.ndarray, qt: np.ndarray, qr: np.ndarray, head: int,
                tail: int) -> np.ndarray:
    out = np.empty((tail - head, 3), np.int64)
    for j in range(head, tail):
        out[j - head, 0] = qe[j]
        out[j - head, 1] = qt[j]
        out[j - head, 2] = qr[j]
    return out


@kernel(cache=True)
def rtt_walk(d: np.ndarray, off: np.ndarray, plen: np.ndarray, cap: np.ndarray,
             ack: np.ndarray, ts: np.ndarray, q0: np.ndarray, q1: np.ndarray,
             sent_end0: int, sent_end1: int, max_unacked: int):
    """``Connection.sent``/``acked`` over a run of packets.

    ``q0``/``q1``: each direction's unacknowledged segments, rows of
    ``(end_offset, ts_sent, resent)``. Returns the RTT rows (direction, ts_sent,
    ts_ack, end, resent, piggybacked), the two queues after the run and the two
    ``sent_end`` values.
    """
    n = d.shape[0]
    cap_q = max(q0.shape[0], q1.shape[0]) + n + 1
    qe = np.empty((2, cap_q), np.int64)
    qt = np.empty((2, cap_q), np.int64)
    qr = np.empty((2, cap_q), np.int64)
    head = np.zeros(2, np.int64)
    tail = np.zeros(2, np.int64)
    for k in range(q0.shape[0]):
        qe[0, k], qt[0, k], qr[0, k] = q0[k, 0], q0[k, 1], q0[k, 2]
    tail[0] = q0.shape[0]
    for k in range(q1.shape[0]):
        qe[1, k], qt[1, k], qr[1, k] = q1[k, 0], q1[k, 1], q1[k, 2]
    tail[1] = q1.shape[0]
    sent_end = np.empty(2, np.int64)
    sent_end[0] = sent_end0
    sent_end[1] = sent_end1
    rows = np.empty((q0.shape[0] + q1.shape[0] + n, 6), np.int64)
    r = 0
    for i in range(n):
        k = d[i]
        if cap[i] > 0:
            end = off[i] + plen[i]
            if end > sent_end[k]:
                sent_end[k] = end
                if tail[k] - head[k] < max_unacked:
                    qe[k, tail[k]] = end
                    qt[k, tail[k]] = ts[i]
                    qr[k, tail[k]] = 0
                    tail[k] += 1
            else:
                for j in range(head[k], tail[k]):
                    if qe[k, j] > off[i]:
                        qr[k, j] = 1
        a = ack[i]
        if a >= 0:
            p = 1 - k
            while head[p] < tail[p] and qe[p, head[p]] <= a:
                h = head[p]
                rows[r, 0] = p
                rows[r, 1] = qt[p, h]
                rows[r, 2] = ts[i]
                rows[r, 3] = qe[p, h]
                rows[r, 4] = qr[p, h]
                rows[r, 5] = 1 if cap[i] > 0 else 0
                r += 1
                head[p] += 1
    out0 = _queue_rows(qe[0], qt[0], qr[0], head[0], tail[0])
    out1 = _queue_rows(qe[1], qt[1], qr[1], head[1], tail[1])
    return rows[:r], out0, out1, sent_end[0], sent_end[1]
