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

import numpy as np

from ..parsers.jitload import kernel

# (no ``jitload.install()`` here: a kernel's dispatcher installs it when it is made)


@kernel(cache=True, nogil=True)
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


@kernel(cache=True, nogil=True)
def _grow(a):
    out = np.empty(2 * a.shape[0], a.dtype)
    out[: a.shape[0]] = a
    return out


def intervals(f: np.ndarray, d: np.ndarray, t: np.ndarray, o: np.ndarray, w: int, base: int,
              bin_bits: int) -> tuple[np.ndarray, ...]:
    """``_intervals`` over int64 arrays (``d``: 1 in, 2 out; ``f``: 0 .. 2**20; ``t //
    w >= base``): (key, bytes, segments, first t, last t), by key."""
    return tuple(_intervals(f, d, t, o, np.int64(w), np.int64(base), np.int64(bin_bits)))


# --- The episodes' hot intervals a batch of rows at a time --------------------------
#
# ``_bursts``' intervals above need every row of a connection and direction at once
# (the sort), so their memory grows with the capture. Where each ``g``'s rows come in
# ``end_offset`` and time order in the file (the usual case: ``tcp_rtt``'s rows are
# written as segments are acknowledged), the same intervals close one after another
# per ``g`` as the rows stream by, and each one's trailing sum over the ``span``
# intervals before it only needs those intervals: a queue per ``g`` (a pool of nodes
# with a free list). What is kept: per ``g`` its open interval and its queue, and the
# hot intervals; not the rows, nor every interval.

_G_LAST_O, _G_LAST_T, _G_SEEN, _G_BIN, _G_BYTES, _G_N, _G_T0, _G_T1, _G_HEAD, _G_TAIL, \
    _G_SUM, _G_BAD = range(12)
_G_FIELDS = 12
"""The per-``g`` state's columns (one int64 array of ``_G_FIELDS`` rows)."""
_S_FREE, _S_USED, _S_HOT, _S_BAD = range(4)
"""The scalar state: the free list's head, the nodes used, the hot intervals, a row out
of order (then the caller reads every row: ``intervals``)."""


@kernel(cache=True, nogil=True)
def _close(g, st, sc, nxt, nbin, nby, hot_i, hot_f, first_bin, w_span, min_bytes, factor):
    """Close ``g``'s open interval: its trailing sum, hot or not, then queued. False,
    with nothing done: the hot arrays or the pool full (the caller grows them)."""
    if sc[_S_HOT] == hot_i.shape[1] or (sc[_S_FREE] < 0 and sc[_S_USED] == nxt.shape[0]):
        return False
    b = st[_G_BIN, g]
    head = st[_G_HEAD, g]
    while head >= 0 and nbin[head] < b - w_span:  # out of the baseline: freed
        st[_G_SUM, g] -= nby[head]
        after = nxt[head]
        nxt[head] = sc[_S_FREE]
        sc[_S_FREE] = head
        head = after
    st[_G_HEAD, g] = head
    if head < 0:
        st[_G_TAIL, g] = -1
    fl = g >> 1
    start = first_bin[fl] if fl < first_bin.shape[0] and first_bin[fl] >= 0 else 0
    mean_w = st[_G_SUM, g] / max(min(w_span, b - start), 1)
    nbytes = st[_G_BYTES, g]
    if nbytes >= max(min_bytes, factor * mean_w):
        m = sc[_S_HOT]
        hot_i[0, m], hot_i[1, m], hot_i[2, m] = g, b, nbytes
        hot_i[3, m], hot_i[4, m], hot_i[5, m] = st[_G_N, g], st[_G_T0, g], st[_G_T1, g]
        hot_f[m] = mean_w
        sc[_S_HOT] = m + 1
    node = sc[_S_FREE]
    if node >= 0:
        sc[_S_FREE] = nxt[node]
    else:
        node = sc[_S_USED]
        sc[_S_USED] = node + 1
    nxt[node], nbin[node], nby[node] = -1, b, nbytes
    if st[_G_TAIL, g] >= 0:
        nxt[st[_G_TAIL, g]] = node
    else:
        st[_G_HEAD, g] = node
    st[_G_TAIL, g] = node
    st[_G_SUM, g] += nbytes
    st[_G_BIN, g] = -1  # (closed)
    return True


@kernel(cache=True, nogil=True)
def _stream(f, d, t, o, start, w, st, sc, nxt, nbin, nby, hot_i, hot_f, first_bin, w_span,
            min_bytes, factor):
    """Rows ``start`` .. of a batch into the state; the row it stopped at (the pool or
    the hot arrays full: the caller grows them and goes on from there) or the batch's
    length."""
    n = f.shape[0]
    for i in range(start, n):
        g = 2 * f[i] + d[i] - 1
        if st[_G_BAD, g]:
            continue
        ti = t[i]
        oi = o[i]
        b = ti // w
        if st[_G_SEEN, g]:
            if oi < st[_G_LAST_O, g] or ti < st[_G_LAST_T, g]:
                st[_G_BAD, g] = 1  # (its rows read again, all at once: the caller)
                sc[_S_BAD] += 1
                continue
            if b != st[_G_BIN, g] and not _close(g, st, sc, nxt, nbin, nby, hot_i, hot_f,
                                                  first_bin, w_span, min_bytes, factor):
                return i
            add = oi - st[_G_LAST_O, g]
        else:
            st[_G_SEEN, g] = 1
            add = 0
        if st[_G_BIN, g] != b:  # (a new interval)
            st[_G_BIN, g], st[_G_BYTES, g], st[_G_N, g], st[_G_T0, g] = b, 0, 0, ti
        st[_G_BYTES, g] += add
        st[_G_N, g] += 1
        st[_G_T1, g] = ti
        st[_G_LAST_O, g], st[_G_LAST_T, g] = oi, ti
    return n


@kernel(cache=True, nogil=True)
def _finish(st, sc, nxt, nbin, nby, hot_i, hot_f, first_bin, w_span, min_bytes, factor):
    """Close every open interval; False: a pool or the hot arrays full (grow, call again)."""
    for g in range(st.shape[1]):
        if (st[_G_SEEN, g] and st[_G_BIN, g] >= 0 and not st[_G_BAD, g]
                and not _close(g, st, sc, nxt, nbin, nby, hot_i, hot_f, first_bin, w_span,
                               min_bytes, factor)):
            return False
    return True


def _grown(a: np.ndarray, fill: int = 0) -> np.ndarray:
    out = np.full((*a.shape[:-1], 2 * a.shape[-1]), fill, a.dtype)
    out[..., : a.shape[-1]] = a
    return out


class HotIntervals:
    """The hot intervals of ``_bursts`` (``alerts._bursts_streamed``) from batches of
    ``tcp_rtt`` rows (``add``: int64 arrays f, d, t, o as ``intervals`` takes them, t
    >= 0), in file order. ``first_bin[flow]``: the interval of the flow's first packet
    (-1: a flow not listed). A ``g`` whose rows go back in offset or time is left out
    from there on (``out_of_order``: the caller reads its rows again and runs
    ``intervals`` over them; in ``tcp_rtt`` these are a connection's last rows, the
    segments still unacknowledged at its end)."""

    def __init__(self, first_bin: np.ndarray, w: int, span: int, min_bytes: float,
                 factor: float) -> None:
        self.first_bin = first_bin
        self.w, self.span = np.int64(w), np.int64(span)
        self.min_bytes, self.factor = float(min_bytes), float(factor)
        self.st = self._state(0)
        self.sc = np.array([-1, 0, 0, 0], np.int64)
        self.nxt = np.full(1024, -1, np.int64)
        self.nbin = np.zeros(1024, np.int64)
        self.nby = np.zeros(1024, np.int64)
        self.hot_i = np.zeros((6, 256), np.int64)
        self.hot_f = np.zeros(256, np.float64)

    @staticmethod
    def _state(gs: int) -> np.ndarray:
        st = np.zeros((_G_FIELDS, gs), np.int64)
        st[_G_BIN], st[_G_HEAD], st[_G_TAIL] = -1, -1, -1
        return st

    def out_of_order(self) -> np.ndarray:
        """The ``g``s left out (rows out of order), ascending."""
        return np.flatnonzero(self.st[_G_BAD]).astype(np.int64)

    def _grow_full(self) -> None:
        if self.sc[_S_HOT] == self.hot_i.shape[1]:
            self.hot_i, self.hot_f = _grown(self.hot_i), _grown(self.hot_f)
        if self.sc[_S_FREE] < 0 and self.sc[_S_USED] == self.nxt.shape[0]:
            self.nxt, self.nbin = _grown(self.nxt, -1), _grown(self.nbin)
            self.nby = _grown(self.nby)

    def add(self, f: np.ndarray, d: np.ndarray, t: np.ndarray, o: np.ndarray) -> None:
        if not len(f):
            return
        gs = 2 * (int(f.max()) + 1)
        if gs > self.st.shape[1]:
            st = self._state(max(gs, 2 * self.st.shape[1]))
            st[:, : self.st.shape[1]] = self.st
            self.st = st
        at = 0
        while at < len(f):
            at = _stream(f, d, t, o, at, self.w, self.st, self.sc, self.nxt, self.nbin,
                         self.nby, self.hot_i, self.hot_f, self.first_bin, self.span,
                         self.min_bytes, self.factor)
            if at < len(f):
                self._grow_full()

    def finish(self) -> tuple[np.ndarray, ...]:
        """(g, interval, bytes, segments, first t, last t, mean over the baseline) of
        each hot interval of the ``g``s in order, by g and interval."""
        while not _finish(self.st, self.sc, self.nxt, self.nbin, self.nby,
                                      self.hot_i, self.hot_f, self.first_bin, self.span,
                                      self.min_bytes, self.factor):
            self._grow_full()
        m = int(self.sc[_S_HOT])
        hot_i, hot_f = self.hot_i[:, :m], self.hot_f[:m]
        keep = self.st[_G_BAD][hot_i[0]] == 0
        hot_i, hot_f = hot_i[:, keep], hot_f[keep]
        order = np.lexsort((hot_i[1], hot_i[0]))
        return (*(hot_i[k][order] for k in range(6)), hot_f[order])
