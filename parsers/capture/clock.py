"""Capture clock steps: packet times that go backwards, or jump forward, in capture order.

How this works. A capture's packets are written in the order the capture saw
them, and their times should not decrease. tcpdump's own output is not quite in
time order (a sent packet can be written after a received one with a later
time: steps back of up to ~1 ms are seen on a busy host, DESIGN.md), so a step
back counts only beyond ``STEP_BACK_NS``: then the clock that stamps the packets
was set back (NTP or PTP stepping it, a VM resumed, a hardware clock resynced),
and every duration that straddles the step is wrong by its size. ``ClockWatch``
keeps the latest time seen across chunks (and the files of a set, read as one
stream) and, per chunk, with NumPy, finds each packet whose time is more than
``STEP_BACK_NS`` before that running maximum and after a packet that was not:
the first packet of each step back. Each is an ``anomalies`` row (layer
``clock``, code ``clock_step_back``) and, at ingest, a ``clock_step`` alert.

A step *forward* looks like any quiet moment (a gap between two packets), so the
capture's own times cannot tell them apart; the hosts' TCP timestamps can. A host
stamps each segment with its own clock (TSval; Linux: the monotonic clock in ms,
which no one steps), so across a real gap a side's TSval advances as much as the
capture clock, and across a step forward by J it advances J less. The flow
tracker's kernel measures, per side, the capture clock's gain on that side's TSval
clock between its consecutive TS packets (``analysis._ts_clock``: only for sides
whose clock is shown to tick at 1 kHz on this capture's clock). ``ForwardWatch``
then applies the rule: a step forward at packet P when

1. P is stamped more than ``STEP_NS`` after every packet before it (a gap);
2. some side's consecutive TS packets straddle P (the first before it, the second
   at or after it) and the capture clock gained more than ``STEP_NS`` plus the
   measurement's slack on that side's clock between them, the gap at P being
   large enough to hold that gain and the only gap between them that is;
3. such sides are found in both directions (a client's and a server's clock: two
   hosts, so not one path's queue holding packets between a host and the capture
   point, which looks the same on one side: seen on a router capture);
4. no side whose consecutive TS packets straddle P (and end in the same chunk)
   kept to the capture clock across it (gained less than ``STEP_NS / 2``): a host
   that saw the whole gap pass says it was real.

Each is an ``anomalies`` row (code ``clock_step_forward``) and a ``clock_step``
alert. Captures without TCP timestamps (or with none straddling the step) cannot
show a forward step: none is claimed.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..events import Anomaly
from .chunk import PacketChunk

STEP_BACK_NS = 10_000_000
"""A packet stamped more than this before the latest earlier packet marks a clock step
(10 ms: ten times the reordering tcpdump itself shows)."""


STEP_NS = STEP_BACK_NS
"""A forward step counts beyond this (as a step back)."""
TS_SLACK_NS = 2_000_000
TS_DRIFT_NS_PER_TICK = 1_000
"""The TSval comparison's tolerance: a 1 ms tick of rounding at either end, and 0.1%
of the elapsed time for the two clocks' rates (as ``analysis._ts_clock``)."""
NO_EXCESS = -(1 << 63)
RECENT_GAPS = 256
"""Gaps of earlier chunks kept for pairs of TS packets that straddle a chunk boundary."""


class ForwardWatch:
    """Finds the forward steps of one capture's clock, chunk by chunk (module docstring)."""

    __slots__ = ("gaps", "latest", "reported")

    def __init__(self) -> None:
        self.latest: int | None = None
        # (capture index, time of the latest earlier packet, time) of recent gaps
        self.gaps: deque[tuple[int, int, int]] = deque(maxlen=RECENT_GAPS)
        self.reported: deque[int] = deque(maxlen=RECENT_GAPS)

    def check(self, ts: np.ndarray, index: np.ndarray, direction: np.ndarray,
              excess: np.ndarray, ticks: np.ndarray, prev: np.ndarray) -> list[Anomaly]:
        """One chunk: packet times, capture indexes and flow directions, and the
        tracker's ``clock_excess``/``clock_ticks``/``clock_prev`` of each packet."""
        if ts.size == 0:
            return []
        start = np.int64(ts[0] if self.latest is None else self.latest)
        before = np.maximum.accumulate(np.concatenate(([start], ts)))[:-1]
        self.latest = int(max(int(before[-1]), int(ts[-1])))
        for g in np.flatnonzero(ts - before > STEP_NS).tolist():
            self.gaps.append((int(index[g]), int(before[g]), int(ts[g])))
        measured = excess != NO_EXCESS
        slack = TS_SLACK_NS + np.maximum(ticks, 0) * TS_DRIFT_NS_PER_TICK
        suspect = np.flatnonzero(measured & (excess > STEP_NS + slack))
        if not suspect.size:
            return []
        by_gap: dict[int, list[int]] = {}
        for k in suspect.tolist():  # rare: only where a side's clock disagrees
            inside = [g for g in self.gaps if prev[k] < g[0] <= index[k]
                      and g[2] - g[1] >= excess[k] - slack[k]]
            if len(inside) == 1:  # else it cannot say which gap was the step
                by_gap.setdefault(inside[0][0], []).append(k)
        out = []
        gaps = {g[0]: g for g in self.gaps}
        for at, ks in sorted(by_gap.items()):
            straddle = measured & (prev < at) & (index >= at)
            if (at in self.reported or (straddle & (excess < STEP_NS // 2)).any()
                    or np.unique(direction[ks]).size < 2):
                continue
            self.reported.append(at)
            _, t0, t1 = gaps[at]
            gain = int(np.median(excess[ks]))
            out.append(Anomaly(
                ts=t1, flow_id=-1, direction=None, layer="clock", code="clock_step_forward",
                detail=f"packet {at} is stamped {(t1 - t0) / 1e6:,.3f} ms after the packet "
                       f"it follows, but by the TCP timestamps of {len(ks)} connection "
                       f"side(s) with packets either side of it ~{gain / 1e6:,.3f} ms less "
                       f"passed: the capture clock was set forward by ~{gain / 1e6:,.3f} ms "
                       "(durations across it are wrong)"))
        return out


class ClockWatch:
    """Finds the steps back of one capture's packet times, chunk by chunk."""

    __slots__ = ("latest", "step_ns")

    def __init__(self, step_ns: int = STEP_BACK_NS) -> None:
        self.latest: int | None = None
        self.step_ns = step_ns

    def check(self, chunk: PacketChunk) -> list[Anomaly]:
        ts = chunk.ts_ns
        if ts.size == 0:
            return []
        start = np.int64(ts[0] if self.latest is None else self.latest)
        before = np.maximum.accumulate(np.concatenate(([start], ts)))[:-1]
        back = (before - ts) > self.step_ns
        self.latest = int(max(int(before[-1]), int(ts[-1])))
        if not back.any():
            return []
        first = np.flatnonzero(back & ~np.concatenate(([False], back[:-1])))
        return [Anomaly(
            ts=int(ts[i]), flow_id=-1, direction=None, layer="clock", code="clock_step_back",
            detail=f"packet {int(chunk.index[i])} is stamped "
                   f"{(int(before[i]) - int(ts[i])) / 1e6:,.3f} ms before the packet it "
                   "follows (the capture clock was set back; durations across it are wrong)")
            for i in first.tolist()]
