"""Capture clock steps: packet times that go backwards in capture order.

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
"""

from __future__ import annotations

import numpy as np

from ..events import Anomaly
from .chunk import PacketChunk

STEP_BACK_NS = 10_000_000
"""A packet stamped more than this before the latest earlier packet marks a clock step
(10 ms: ten times the reordering tcpdump itself shows)."""


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
