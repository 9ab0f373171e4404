"""The microburst detector's intervals (``pcapflow.alerts._bursts``) in one compiled pass.

How this works. ``_bursts`` needs, per connection and direction (``g = flow << 1 |
direction``) and ``w``-ns interval of ``ts_sent``: the bytes first sent (each
segment's ``end_offset`` less the one before on its connection and direction, in
``end_offset`` order), the segments, the first and last time; the intervals in
(``g``, interval) order. In NumPy that is two sorts of every ``tcp_rtt`` row. Here:

- the rows are put in ``g`` order by a counting sort (stable: the file's order within
  a ``g``), the ``g``s ranked through a table indexed by ``g`` (``_bursts`` checks
  ``flow < 2**20``);
- within a ``g`` the rows are usually in ``end_offset`` order already, and their
  times too (each segment's first transmission, in capture order; ``tcp_rtt``'s rows
  are written as segments are acknowledged, and those still unacknowledged at the end
  last). A ``g`` out of either order is sorted alone, stably (NumPy's ``lexsort``
  order; an interval's sums, counts, first and last times do not depend on the order
  within it). The intervals are then runs of that order: one pass gives each one's
  bytes, segments, first and last time.

The same intervals as the sorts of ``_intervals_sorted``
(``tests/pipelines/test_derive_numpy.py``), which ``alerts._bursts`` used before.
"""

from __future__ import annotations

import numba
import numpy as np

from ..parsers.jitload import install as _lighter_kernel_loads

_lighter_kernel_loads()  # cached kernels load without Numba's compiler set-up


@numba.njit(cache=True, nogil=True)
def _intervals(f, d, t, o, w, base, bin_bits):
    """(key, bytes, segments, first t, last t) per interval, by key (``g << bin_bits
    | interval - base``)."""
    n = f.shape[0]
    size = 2 * (int(f.max()) + 1)
    rank = np.zeros(size, np.int64)  # count, then the first position, of each g
    for i in range(n):
        rank[2 * f[i] + d[i] - 1] += 1
    at = 0
    for g in range(size):
        c = rank[g]
        if c > 0:
            rank[g] = at
            at += c
        else:
            rank[g] = -1
    perm = np.empty(n, np.int64)
    for i in range(n):
        g = 2 * f[i] + d[i] - 1
        perm[rank[g]] = i
        rank[g] += 1
    cap = max(16, n // 16)  # (intervals are fewer than segments: grown when not)
    keys = np.empty(cap, np.int64)
    nbytes = np.empty(cap, np.int64)
    count = np.empty(cap, np.int64)
    t0 = np.empty(cap, np.int64)
    t1 = np.empty(cap, np.int64)
    m = 0
    j = 0
    while j < n:
        g = 2 * f[perm[j]] + d[perm[j]] - 1
        z = j + 1
        while z < n and 2 * f[perm[z]] + d[perm[z]] - 1 == g:
            z += 1
        # the rows of g (perm[j:z]) in end_offset order (stable: ties stay in file order)
        for q in range(j + 1, z):
            if o[perm[q]] < o[perm[q - 1]]:
                part = perm[j:z].copy()
                perm[j:z] = part[np.argsort(o[part], kind="mergesort")]
                break
        # ... then in time order: each row's bytes taken first (an interval's sums,
        # counts, least and greatest times do not depend on the order within it)
        in_time = True
        for q in range(j + 1, z):
            if t[perm[q]] < t[perm[q - 1]]:
                in_time = False
                break
        b = np.zeros(0, np.int64)
        if not in_time:
            b = np.zeros(z - j, np.int64)
            for q in range(j + 1, z):
                b[q - j] = o[perm[q]] - o[perm[q - 1]]
            by_t = np.argsort(t[perm[j:z]], kind="mergesort")
            perm[j:z] = perm[j:z][by_t]
            b = b[by_t]
        key = -1
        for q in range(j, z):
            ti = t[perm[q]]
            k = (g << bin_bits) | (ti // w - base)
            if k != key:
                if key >= 0:
                    m += 1
                if m == keys.shape[0]:
                    keys, nbytes, count = _grow(keys), _grow(nbytes), _grow(count)
                    t0, t1 = _grow(t0), _grow(t1)
                key = k
                keys[m], nbytes[m], count[m], t0[m] = key, 0, 0, ti
            if not in_time:
                nbytes[m] += b[q - j]
            elif q > j:
                nbytes[m] += o[perm[q]] - o[perm[q - 1]]
            count[m] += 1
            t1[m] = ti
        m += 1
        j = z
    return keys[:m].copy(), nbytes[:m].copy(), count[:m].copy(), t0[:m].copy(), t1[:m].copy()


@numba.njit(cache=True, nogil=True)
def _grow(a):
    out = np.empty(2 * a.shape[0], a.dtype)
    out[: a.shape[0]] = a
    return out


def intervals(f: np.ndarray, d: np.ndarray, t: np.ndarray, o: np.ndarray, w: int, base: int,
              bin_bits: int) -> tuple[np.ndarray, ...]:
    """``_intervals`` over int64 arrays (``d``: 1 in, 2 out; ``f``: 0 .. 2**20; ``t //
    w >= base``): (key, bytes, segments, first t, last t), by key."""
    return tuple(_intervals(f, d, t, o, np.int64(w), np.int64(base), np.int64(bin_bits)))
