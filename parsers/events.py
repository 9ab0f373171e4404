"""Events shared by every session parser: directions, anomalies, pieces and runs.

How this works: after TCP reassembly, each connection's two byte streams are
handed to a per-connection *session* parser in pieces. A piece is a run of
contiguous stream bytes that share times:

- ``ts_first``: capture time (ns) of the packet that first carried these bytes;
- ``ts_last``: when these bytes became available in order (for ``out`` the first
  transmission; for ``in`` the time every earlier byte had also arrived).

A message made of several pieces takes ``ts_first`` of the piece holding its first
byte and ``ts_last`` of the piece holding its last byte. A parser that produces
plaintext for another parser (TLS) hands it on as pieces with the enclosing
record's times, so the same rule composes through layers.

Every event is a frozen, slotted, keyword-only dataclass (STYLE.md rule 3).
The session protocol itself is ``protocols.base.SessionParser``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Direction = Literal["out", "in"]
"""``out`` = client (us, the SYN sender) to server (exchange); ``in`` = back."""

OUT: Direction = "out"
IN: Direction = "in"
DIRECTIONS: tuple[Direction, Direction] = (OUT, IN)
"""Indexed by direction code: 0 = ``out``, 1 = ``in`` (as ``PacketFlows.direction``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Anomaly:
    """A decode problem (Zeek's "weird"): one row of the ``anomalies`` table."""

    ts: int
    flow_id: int
    direction: Direction | None
    layer: str
    code: str
    detail: str = ""
    stream_offset: int | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """Consecutive in-order pieces of one direction, joined (the batch form of ``feed``).

    Piece ``i`` is ``data[ends[i-1]:ends[i]]`` (``ends`` are relative, increasing,
    int64; ``ends[-1] == len(data)``) with times ``ts_first[i]``, ``ts_last[i]``.
    Feeding a ``Run`` to ``feed_many`` must give exactly the events of feeding its
    pieces one by one to ``feed``.
    """

    data: bytes
    ends: np.ndarray
    ts_first: np.ndarray
    ts_last: np.ndarray

    def pieces(self) -> Iterator[tuple[bytes, int, int]]:
        """The pieces as ``(data, ts_first, ts_last)``."""
        data, start = self.data, 0
        for end, t1, t2 in zip(self.ends.tolist(), self.ts_first.tolist(),
                               self.ts_last.tolist(), strict=True):
            yield data[start:end], t1, t2
            start = end


class Event(Protocol):
    """What a session parser returns: a frozen dataclass naming its connection.

    Structural on purpose: the set of event types is the registry's
    (``protocols.registry``: each ``ProtocolSpec.events`` says what each of its
    types becomes), so a new protocol adds its events without editing a central
    union; ``tests/parsers/test_registry.py`` checks that every event type is registered.
    """

    @property
    def flow_id(self) -> int: ...


class Feeder(Protocol):
    """Anything with the piece-by-piece ``feed`` of ``protocols.base.SessionParser``."""

    def feed(self, direction: Direction, data: bytes, ts_first: int,
             ts_last: int) -> list[Event]: ...


def feed_pieces(parser: Feeder, direction: Direction, run: Run) -> list[Event]:
    """``feed_many`` for parsers without a batch path: ``feed`` piece by piece."""
    out: list[Event] = []
    feed = parser.feed
    for data, t1, t2 in run.pieces():
        out += feed(direction, data, t1, t2)
    return out
