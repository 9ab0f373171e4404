"""Online change-point detection on latency: a rank CUSUM, distribution-free.

How this works. Latency is heavy-tailed and often multimodal (the ~40 ms
delayed-ACK mode beside a few-ms one), so a CUSUM of standardized log-latency
drifts on a stationary series: its increments do not have mean zero. This one
standardizes each observation by its rank in a reference window instead:

    u_i = F_ref(x_i)            mid-rank of x_i among the last ``reference`` values
                                before the segment started (0..1)
    z_i = (u_i - 1/2) * sqrt(12)      mean 0, variance 1 when nothing changed
    S+_i = max(0, S+_{i-1} + z_i - k)   S-_i = max(0, S-_{i-1} - z_i - k)
    alarm when S+ > h (latency went up) or S- > h (went down)

Whatever the latency's distribution, while it does not change u_i is (nearly)
uniform, so the false-alarm rate depends on (k, h, reference) only: it is
measured once on synthetic stationary series (``false_alarm_rate``; the tests
and the README give the figures). After an alarm the detector starts again:
the next ``reference`` values become the new reference (no alarm while it
fills). The change is placed at the last time the alarming sum was zero
(Page's estimate of the change point). One pass, O(n log reference), compiled.

Defaults (``K``, ``H``, ``REFERENCE``): k = 0.5 (tuned to shifts of about one
standard deviation of z, e.g. the median latency doubling when log-latency has
sd 0.6), h = 15: about one false alarm per million orders, a doubling found
after ~26 orders (median; the tests measure both).
"""

from __future__ import annotations

import numpy as np

from .parsers.jitload import kernel

# (no ``jitload.install()`` here: a kernel's dispatcher installs it when it is made)

K = 0.5
H = 15.0
REFERENCE = 200


@kernel(cache=True, nogil=True)
def rank_cusum_step(x: np.ndarray, first: int, base: int, k: float, h: float, reference: int,
                    st: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rank CUSUM (module docstring) over a series given in pieces, one piece a
    call (the whole series at once: ``detect``). ``x``: the values from global index
    ``base`` on (the kept history, then the new values from position ``first``);
    ``st``: the state, updated in place (float64: [segment start, values seen,
    reference filled 0/1, S+, S-, zero_p, zero_n], indices global); ``ref``: the
    reference values (sorted once filled). Rows of (alarm, change, direction, segment
    start), global indices, and each alarm's reference median; a caller keeps ``x``
    from ``history_start`` on for the next piece (the median since the change of a
    later alarm reads it)."""
    out = np.empty((x.shape[0] // max(reference, 1) + 1, 4), np.int64)
    med = np.empty(out.shape[0], np.float64)
    r = 0
    scale = np.sqrt(12.0)
    start = int(st[0])
    sp, sn = st[3], st[4]
    zero_p, zero_n = int(st[5]), int(st[6])
    for j in range(first, x.shape[0]):
        i = base + j
        if i < start + reference:  # filling the reference of this segment
            ref[i - start] = x[j]
            if i - start + 1 == reference:
                ref[:] = np.sort(ref)
                sp = 0.0
                sn = 0.0
                zero_p = start + reference
                zero_n = start + reference
            continue
        lo = np.searchsorted(ref, x[j], side="left")
        hi = np.searchsorted(ref, x[j], side="right")
        u = (lo + hi) / (2.0 * reference)
        z = (u - 0.5) * scale
        sp = max(0.0, sp + z - k)
        sn = max(0.0, sn - z - k)
        if sp == 0.0:
            zero_p = i + 1
        if sn == 0.0:
            zero_n = i + 1
        if sp > h or sn > h:
            direction = 1 if sp > h else -1
            if r == out.shape[0]:
                grown = np.empty((out.shape[0] * 2, 4), np.int64)
                grown[:r] = out[:r]
                out = grown
                gm = np.empty(grown.shape[0], np.float64)
                gm[:r] = med[:r]
                med = gm
            out[r, 0] = i
            out[r, 1] = zero_p if direction > 0 else zero_n
            out[r, 2] = direction
            out[r, 3] = start
            med[r] = np.median(ref)
            r += 1
            start = i + 1
    st[0] = start
    st[1] = base + x.shape[0]
    st[3], st[4] = sp, sn
    st[5], st[6] = zero_p, zero_n
    return out[:r], med[:r]


def new_state(reference: int = REFERENCE) -> tuple[np.ndarray, np.ndarray]:
    """The state of ``rank_cusum_step`` before any value: (st, ref)."""
    return np.zeros(7, np.float64), np.zeros(reference, np.float64)


def history_start(st: np.ndarray, reference: int = REFERENCE) -> int:
    """The first global index a later alarm can read (its change point: the segment's
    values after the reference, from the last time a sum was zero)."""
    start, seen = int(st[0]), int(st[1])
    if seen < start + reference:  # filling: the alarm is after the reference
        return start + reference
    return min(int(st[5]), int(st[6]))


def detect(x: np.ndarray, k: float = K, h: float = H, reference: int = REFERENCE) -> np.ndarray:
    """Alarms of the rank CUSUM over a whole latency series (any numeric dtype; one
    ``rank_cusum_step`` from a fresh state): rows of (alarm index, change index,
    direction +1/-1, segment start)."""
    st, ref = new_state(reference)
    found, _ = rank_cusum_step(np.ascontiguousarray(x, dtype=np.float64), 0, 0, float(k),
                               float(h), int(reference), st, ref)
    return found


def false_alarm_rate(n: int = 1_000_000, seed: int = 0, k: float = K, h: float = H,
                     reference: int = REFERENCE, mixture: bool = True) -> float:
    """Alarms per 10,000 orders on a stationary synthetic series: lognormal
    (median 3 ms, log-sd 0.6), with, when ``mixture``, a fifth of the orders in a
    second mode at 43 ms (the delayed-ACK mode of the samples)."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(np.log(3e6), 0.6, n)
    if mixture:
        slow = rng.random(n) < 0.2
        x[slow] = rng.lognormal(np.log(43e6), 0.05, int(slow.sum()))
    return len(detect(x, k, h, reference)) / n * 10_000
