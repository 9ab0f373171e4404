"""``pcapflow.feed.StreamWalk``'s checks of one part in one compiled pass.

How this works. ``StreamWalk`` sorts each part's rows by stream, then within a stream
by (offset, time) for the gap checks and by (time, offset) for the silences, each
stream's carried last message put first, and compares each row with the one before
it. An ingest writes a stream's messages in both orders already, so the sorts keep
each stream's rows in the part's order. ``walk`` checks that first, stream by stream
(every row's key at least the one before it, the carried message's included); only
then does it compare each row with the stream's row before it, in the part's order,
and update the carried state: the same comparisons as the sorted arrays' (a stable
sort changes nothing here), their rows put in the sorted order after (by stream, then
the part's order). A part out of either order changes nothing (``walk`` gives False)
and ``StreamWalk`` sorts it as before (``tests/pipelines/test_derive_numpy.py`` holds
both to ``feed.prepare``).
"""

from __future__ import annotations

import numpy as np

from ..parsers.jitload import kernel

# (no ``jitload.install()`` here: a kernel's dispatcher installs it when it is made)


@kernel(cache=True, nogil=True)
def _in_order(local, ids, a, b, rows, state, has, ia, ib):
    """Are the rows ``rows`` of each stream in (a, b) order, after the stream's carried
    message (``state[id, ia]``, ``state[id, ib]``) when it has one?"""
    k = ids.shape[0]
    seen = np.zeros(k, np.bool_)
    la = np.zeros(k, np.int64)
    lb = np.zeros(k, np.int64)
    for c in range(k):
        if has[ids[c]]:
            seen[c] = True
            la[c], lb[c] = state[ids[c], ia], state[ids[c], ib]
    for i in rows:
        c = local[i]
        if seen[c] and (a[i] < la[c] or (a[i] == la[c] and b[i] < lb[c])):
            return False
        seen[c] = True
        la[c], lb[c] = a[i], b[i]
    return True


@kernel(cache=True, nogil=True)
def walk(local, ids, ts, off, has_last, last_id, prev_id, prev_ok, first_id, first_ok,
         reset, not_fix, g_state, g_has, s_state, s_has, stale_ns):
    """(ok, gaps: row, stream id, prev ts, expected, got; silences: row, stream id, t0,
    o0) of a part, the carried states (``g_state``: last id, ts, offset;
    ``s_state``: ts, offset) updated; ok False (nothing changed) when a stream's rows
    are out of order. ``local``: each row's stream code in the part, ``ids[code]`` its
    stream id."""
    n = local.shape[0]
    gap_rows = np.flatnonzero(has_last)
    sil_rows = np.flatnonzero(not_fix)
    if not (_in_order(local, ids, off, ts, gap_rows, g_state, g_has, 2, 1)
            and _in_order(local, ids, ts, off, sil_rows, s_state, s_has, 0, 1)):
        e = np.zeros(0, np.int64)
        return False, e, e, e, e, e, e, e, e, e
    # gaps: each row with a last id against the stream's one before
    g_found = np.empty(n, np.int64)
    g_prev_ts = np.empty(n, np.int64)
    g_expected = np.empty(n, np.int64)
    g_got = np.empty(n, np.int64)
    m = 0
    for i in gap_rows:
        gid = ids[local[i]]
        if g_has[gid]:
            expected = g_state[gid, 0] + (0 if prev_ok[i] else 1)
            got = prev_id[i] if prev_ok[i] else first_id[i]
            if not reset[i] and (prev_ok[i] or first_ok[i]) and got != expected:
                g_found[m], g_prev_ts[m] = i, g_state[gid, 1]
                g_expected[m], g_got[m] = expected, got
                m += 1
        g_state[gid, 0], g_state[gid, 1], g_state[gid, 2] = last_id[i], ts[i], off[i]
        g_has[gid] = True
    # silences: each row against the stream's one before
    s_found = np.empty(n, np.int64)
    s_t0 = np.empty(n, np.int64)
    s_o0 = np.empty(n, np.int64)
    q = 0
    for i in sil_rows:
        gid = ids[local[i]]
        if s_has[gid] and ts[i] - s_state[gid, 0] > stale_ns:
            s_found[q], s_t0[q], s_o0[q] = i, s_state[gid, 0], s_state[gid, 1]
            q += 1
        s_state[gid, 0], s_state[gid, 1] = ts[i], off[i]
        s_has[gid] = True
    # by stream, then the part's order (what the sorted arrays give)
    go = np.argsort(local[g_found[:m]], kind="mergesort")
    so = np.argsort(local[s_found[:q]], kind="mergesort")
    g_rows = g_found[:m][go]
    s_rows = s_found[:q][so]
    g_ids = np.empty(m, np.int64)
    for j in range(m):
        g_ids[j] = ids[local[g_rows[j]]]
    s_ids = np.empty(q, np.int64)
    for j in range(q):
        s_ids[j] = ids[local[s_rows[j]]]
    return (True, g_rows, g_ids, g_prev_ts[:m][go], g_expected[:m][go], g_got[:m][go],
            s_rows, s_ids, s_t0[:q][so], s_o0[:q][so])
