"""The shape of a protocol: ``ProtocolSpec`` (what the engine needs to know about
it) and ``SessionParser`` (the sans-IO object that parses one connection).

How this works (Suricata's app-layer registration is the model). A protocol
declares one ``ProtocolSpec``: a probe per direction for the first bytes of a
connection, a resync rule for captures that start mid-stream and, per direction,
how the protocol is recognised from the middle of a message; a factory that
makes its session for a connection (``SessionContext``: flow id, limits, key
material, and whether it runs inside TLS); for each event type its sessions emit,
what it becomes (``EventSpec``: a table row, a batch of rows, ``flows`` columns,
bytes for the next layer); the tables it owns (``TableSpec``), the limits it
reads and its matcher SQL family and gate. ``registry.REGISTRY`` lists the specs
in detection order; nothing else names a protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..events import Direction, Event, Run
from ..limits import Limits

if TYPE_CHECKING:
    import pyarrow as pa

    from ..tls.keylog import KeyLog


class SessionParser(Protocol):
    """The sans-IO shape of every per-connection application parser.

    ``feed`` takes the next in-order piece of one direction's stream (its first
    byte's capture time and its in-order availability time); ``feed_many`` a run
    of such pieces, with exactly the events ``feed`` piece by piece would give;
    ``gap`` says ``length`` bytes of that direction were never captured (the
    parser resynchronises or stops, recording an ``Anomaly``); ``finish`` flushes
    at the end of the connection or capture. All return a list of events
    (possibly empty) and never raise on bad traffic. ``independent``: do the two
    directions now parse without regard to each other (so the batch path may
    feed a run direction by direction)?
    """

    def feed(self, direction: Direction, data: bytes, ts_first: int,
             ts_last: int) -> list[Event]: ...

    def feed_many(self, direction: Direction, run: Run) -> list[Event]: ...

    def gap(self, direction: Direction, length: int, ts: int) -> list[Event]: ...

    def finish(self, ts: int) -> list[Event]: ...

    def independent(self) -> bool: ...


class PieceCarrier(Protocol):
    """An event with ``EventSpec.carrier == "piece"``: bytes for the next layer."""

    @property
    def direction(self) -> Direction: ...
    @property
    def data(self) -> bytes: ...
    @property
    def ts_first(self) -> int: ...
    @property
    def ts_last(self) -> int: ...


class RunCarrier(Protocol):
    """An event with ``EventSpec.carrier == "run"``: a ``Run`` for the next layer."""

    @property
    def direction(self) -> Direction: ...
    @property
    def run(self) -> Run: ...


class BatchEvent(Protocol):
    """An event with an ``EventSpec.batch`` converter: many rows as columns."""

    @property
    def ts_first(self) -> np.ndarray: ...


@runtime_checkable
class Resumable(Protocol):
    """The optional capability of a session whose state can outlive a capture file
    (capture sets): ``snapshot`` returns its state without key material (bounded,
    bytes); ``ProtocolSpec.resume`` rebuilds a session from it. Only protocols
    whose spec says ``resumable=True`` implement it; the engine asks the spec,
    never the object."""

    def snapshot(self) -> bytes: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionContext:
    """What a session factory gets for one connection (or one layer of it)."""

    flow_id: int
    limits: Limits
    keylog: KeyLog | None = None
    inner: bool = False
    """True when the session parses what an outer session (TLS) decrypted."""
    midstream: bool = False
    """The connection was open before the capture began: its first bytes may be
    inside a message (``detect.detect_midstream``)."""


Probe = Callable[[bytes], bool]
"""Does this prefix of a direction's stream look like the protocol's start?"""
Refusal = Callable[[bytes], bool]
"""Has the probe refused these bytes for good: is it False for them and for every
stream that begins with them? (False when unsure.)"""
Resync = Callable[[bytes], "int | None"]
"""Offset of the next plausible message start in these bytes, else None."""
MidstreamFinder = Callable[[bytes, bool], "int | None"]
"""``(data, final)``: offset of the next message start in bytes of one direction that
begin inside a message, else None; ``final``: no more bytes come (the connection
ended)."""


def both_ways(resync: Resync) -> tuple[MidstreamFinder, MidstreamFinder]:
    """A ``ProtocolSpec.midstream`` that is the resync rule in either direction."""
    def find(data: bytes, final: bool) -> int | None:
        return resync(data)
    return find, find


SessionFactory = Callable[[SessionContext], SessionParser]
FlowInfo = Callable[[dict[str, object], Any], None]
"""Update a connection's ``flows`` columns (by name) from one event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventSpec:
    """What one event type becomes. At most one of ``row`` and ``batch``.

    ``row``: the event is one row of ``table``, its values in the table's column
    order (redacted). ``batch``: events of this type are many rows each, turned
    into the table's column arrays all at once when the buffer flushes.
    ``flow_info``: it fills ``flows`` columns. ``carrier``: it carries bytes for
    the next layer (``"piece"``: ``data`` with times, ``"run"``: a ``Run``).
    """

    table: str | None = None
    row: Callable[[Any], tuple[Any, ...]] | None = None
    batch: Callable[[list[Any]], list[Any]] | None = None
    flow_info: FlowInfo | None = None
    carrier: Literal["piece", "run"] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSpec:
    """A message table a protocol owns: its schema (``capture_id`` first, one doc
    per column) and a line saying what one row is."""

    name: str
    schema: pa.Schema
    doc: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MatchSpec:
    """The protocol's matcher SQL family (``pipelines/sql/<sql>.sql``) and its
    gate: the table the file makes first (what it has to pair) and the outputs
    it leaves empty, without running the rest, when that table is empty."""

    sql: str
    gate: str
    outputs: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolSpec:
    """Everything the engine knows about one application protocol."""

    name: str
    """``flows.app_protocol`` names it (``tls/http`` for HTTP inside TLS)."""
    probe_out: Probe
    """The client's first bytes."""
    probe_in: Probe
    """The server's first bytes."""
    refuses: tuple[Refusal, Refusal] | None = None
    """Per direction (client's bytes, server's): ``probe_out``/``probe_in`` has read
    enough of a prefix to say no for good. Once every protocol refuses a direction,
    more of its bytes cannot name a protocol by probe, and the application layer
    takes them in bulk instead of probing again piece by piece
    (``detect.refused``). None: never sure (probed with every piece)."""
    resync: Resync | None = None
    """Mid-stream: where the next message starts (None: no rule)."""
    midstream: tuple[MidstreamFinder, MidstreamFinder] | None = None
    """How a connection open before the capture is recognised (``detect.detect_midstream``):
    per direction (client's bytes, server's), where its next message starts. Stricter
    than ``resync``, which only has to find a boundary once the protocol is known
    (None: never named from the middle of a message)."""
    probe_late: Probe | None = None
    """On plain TCP, when no probe matched: does the protocol start later in either
    direction's bytes (STARTTLS: plaintext, then a ClientHello; a capture that
    began inside a TLS record)? Monotone: a prefix it accepts, it accepts with any
    bytes appended (so one call over a stretch of pieces says whether any prefix
    in it would have been accepted)."""
    session: SessionFactory | None = None
    """None: detected but not decoded (see ``undecoded``)."""
    nests: bool = True
    """May run inside an outer session (TLS in TLS is not parsed)."""
    undecoded: str | None = None
    """Detail of the ``unsupported_protocol`` anomaly when there is no session
    (None: no anomaly)."""
    not_decrypted: Callable[[Mapping[str, object]], str | None] | None = None
    """A connection whose outer layer carries bytes for another (TLS) ended without
    any being decrypted: given its ``flows`` columns, is this protocol likely inside,
    and what does that cost? The detail of its ``<name>_not_decrypted`` coverage
    anomaly (layer: the outer protocol), or None."""
    events: Mapping[type, EventSpec] = field(default_factory=dict)
    tables: tuple[TableSpec, ...] = ()
    flow_columns: tuple[str, ...] = ()
    """``flows`` columns its events fill (``EventSpec.flow_info``)."""
    upgrade: tuple[str, str] | None = None
    """``(protocol, flows column)``: a connection detected as ``protocol`` whose
    ``column`` is set became this one (WebSocket after an HTTP upgrade)."""
    match: MatchSpec | None = None
    limits: tuple[str, ...] = ()
    """``Limits`` fields its sessions read."""
    resumable: bool = False
    """Its sessions implement ``Resumable`` and ``resume`` rebuilds one."""
    resume: Callable[[SessionContext, bytes], SessionParser] | None = None
