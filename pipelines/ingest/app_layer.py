"""The application layer: reassembled TCP connections -> parsers -> table rows.

How this works. ``AppLayer.process`` selects, with NumPy masks, the packets the
application layer needs (TCP payload, FIN/RST, and ACKs of flows waiting on a
hole) and walks only those in capture order. Each TCP connection gets a
``Connection``: two ``StreamReassembler``s and, once the first bytes are seen, a
session parser chosen by content (``parsers.detect`` over the protocol registry).
A session whose events carry bytes (``EventSpec.carrier``: decrypted plaintext)
feeds an inner layer chosen the same way, with each piece's times. Events become
rows (``rows.RowBuffers``, redacted) or update the connection's ``flows`` columns
(``EventSpec.flow_info``). Nothing here names a protocol: what differs between
protocols is in their ``ProtocolSpec``.

A reassembled piece's ``ts_last`` is its first transmission for ``out`` and its
in-order availability for ``in`` (DESIGN.md, "Time").

Two paths, one result. The *general path* (``_packet``) takes one packet at a
time: reassembler, RTT queue, parser ``feed`` per piece, one event per record,
frame and message. The *batch path* exists because that costs tens of µs per
message in Python: when no eviction can happen in a chunk, the chunk is taken
connection by connection (each connection's packets in capture order), and a run
of *simple* packets (in order or an equal copy of bytes the run delivered, fully
captured, no FIN/RST, nothing held; ``segments.simple_prefix``) of a connection
whose protocol is known is handled in bulk by ``_run``: RTT samples by
``segments.rtt_walk``, payload gathered into one ``Run`` per same-direction
stretch and handed to the parsers' ``feed_many``, which frame, decrypt and
inflate in tight loops and return column batches (``TlsRecordRun``,
``WsMessageRun``). Request/response traffic alternates one segment at a time,
where a ``Run`` per segment would cost more than the general path; once such a
connection's two directions parse independently (``Connection.independent``:
TLS 1.3 carrying WebSocket or FIX, plain FIX or WebSocket), a run is fed as one
``Run`` per direction. Every other packet goes through the general path.
``tests/pipelines/test_fast_path.py`` checks that both paths write the same tables on
every sample and public capture, and the fuzz targets check ``feed_many``
against ``feed`` piece by piece.

Before detection names a protocol, every piece is probed again (``_Layer.feed``);
once every protocol's probe has refused a direction's first bytes for good
(``ProtocolSpec.refuses``), its further bytes cannot change the answer until
``Limits.detect_bytes``, so a simple run of such a connection is taken in bulk too
(``_quiet``: RTT samples and the bytes kept for detection), up to the packet that
may change what detection says, which goes through the general path. On plain TCP
that no protocol claims this is most of the application layer's work.

A connection whose protocol is unknown after ``Limits.detect_bytes`` is dropped from
the application layer (only its TCP-level rows remain); one closed by RST or by
FIN in both directions is finished and freed at once, so memory follows the
number of *open* connections, not the capture's size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
import pyarrow as pa

from ...parsers.capture.chunk import PacketChunk
from ...parsers.decode import ACK, FIN, IPPROTO_TCP, RST, DecodedChunk
from ...parsers.detect import UNKNOWN, detect, detect_midstream, refused
from ...parsers.events import DIRECTIONS, Anomaly, Event, Run
from ...parsers.limits import Limits
from ...parsers.protocols.base import PieceCarrier, RunCarrier, SessionContext, SessionParser
from ...parsers.protocols.registry import BY_NAME, EVENTS, KEY_MATERIAL, REGISTRY
from ...parsers.tcp.analysis import (
    TS_ECHO_DATA,
    TS_RETRANSMITTED,
    TS_SOURCE_DATA,
    FlowTracker,
    PacketFlows,
)
from ...parsers.tcp.reassembly import Conflict, Gap, Piece, StreamReassembler
from ...parsers.tcp.segments import bounded_prefix, gather, rtt_walk, simple_prefix
from ..tables.rows import FlushHook, RowBuffers, TableSink

if TYPE_CHECKING:
    from ...parsers.tls.keylog import KeyLog  # (the registry's ``KEY_MATERIAL``)

_DIRECTIONS = pa.array(DIRECTIONS, pa.string())  # by direction code 0 / 1
_RTT_METHODS = pa.array(["ack", "tsecr"], pa.string())  # tcp_rtt.method by code
_CARRIER = {t: e.carrier for t, e in EVENTS.items() if e.carrier is not None}
"""Event types that carry bytes for the next layer (TLS plaintext): piece or run."""
_FLOW_INFO = {t: e.flow_info for t, e in EVENTS.items() if e.flow_info is not None}
_UPGRADES = [(s.upgrade, s.name) for s in REGISTRY if s.upgrade is not None]
_CARRIES = frozenset(s.name for s in REGISTRY if any(e.carrier for e in s.events.values()))
"""Protocols whose sessions hand bytes to an inner layer (TLS: its plaintext)."""
_NOT_DECRYPTED = [(s.name, s.not_decrypted) for s in REGISTRY if s.not_decrypted is not None]
_LATE = [s.probe_late for s in REGISTRY if s.probe_late is not None]

# Batch path (``segments``): on unless PCAPFLOW_SLOW_PATH=1 (tests compare the two).
FAST_PATH = os.environ.get("PCAPFLOW_SLOW_PATH") != "1"
# Shortest run of simple packets worth the batch path's fixed cost, and the
# fewest data packets per same-direction stretch (on average) in such a run.
MIN_RUN = 4
MIN_STRETCH = 4
# Packets ``simple_prefix`` looks at per call (a longer run is taken in pieces), and
# packets taken one by one before a run not worth batching is looked at again.
MAX_SCAN = 1 << 16
RECHECK = 256
# Events buffered before they are turned into rows.
DISPATCH_EVENTS = 4096

MIDSTREAM_DETECT_FACTOR = 16
"""A connection open before the capture may begin inside a long message (a 16 KiB TLS
record, an HTTP body, a WebSocket frame): it is looked at for this many times
``Limits.detect_bytes`` before its protocol is called unknown."""
AnomalyFn = Callable[[list[Anomaly]], None]
_T = TypeVar("_T", int, np.ndarray)


def _session_for(proto: str, ctx: SessionContext) -> SessionParser | None:
    """The registry's session for ``proto`` (None = detected, not parsed)."""
    spec = BY_NAME[proto]
    if spec.session is None or (ctx.inner and not spec.nests):
        return None
    return spec.session(ctx)


def _not_decrypted(conn: Connection, info: dict[str, object]) -> list[Anomaly]:
    """Coverage notes of a connection whose outer layer decrypted nothing: the
    protocols that say they are likely inside (``ProtocolSpec.not_decrypted``)."""
    out = []
    for name, note in _NOT_DECRYPTED:
        detail = note(info)
        if detail is not None:
            out.append(Anomaly(ts=conn.last_ts, flow_id=conn.flow_id, direction=None,
                               layer=conn.outer.name or "tcp", code=f"{name}_not_decrypted",
                               detail=detail))
    return out


def _ts_last(d: int, ts_first: _T, ts_avail: _T) -> _T:
    """A reassembled piece's ``ts_last`` (one piece's or a run's array): its first
    transmission for ``out`` (``d`` 0), its in-order availability for ``in`` (DESIGN.md,
    "Time"). The general path (``Connection.deliver``) and the batch path (``_run``)."""
    return ts_first if d == 0 else ts_avail


def _worth_batching(d: np.ndarray, cap: np.ndarray) -> bool:
    """Do the run's data packets come in same-direction stretches long enough for the
    batch path? (Request/response traffic alternates one segment at a time: there the
    batch path's fixed cost per stretch exceeds the per-packet path's.)"""
    dirs = d[cap > 0]
    if dirs.size == 0:
        return True
    stretches = 1 + int(np.count_nonzero(dirs[1:] != dirs[:-1]))
    return dirs.size >= MIN_STRETCH * stretches


def _first_copies(d: np.ndarray, ends: np.ndarray, next0: int, next1: int) -> np.ndarray:
    """Which data packets of a run bring new bytes: in a simple run every other one
    is an equal copy of bytes already delivered (``segments.simple_prefix``)."""
    fresh = np.empty(d.size, dtype=bool)
    for k, start in ((0, next0), (1, next1)):
        mine = d == k
        e = ends[mine]
        fresh[mine] = e > np.maximum.accumulate(np.concatenate(([start], e)))[:-1]
    return fresh


def _gives_up(conn: Connection, q: int, p: int, d: np.ndarray, off: np.ndarray,
              plen: np.ndarray, cap: np.ndarray, flags: np.ndarray, fresh: np.ndarray,
              limit: int) -> bool:
    """Is packet ``q``, where ``segments.bounded_prefix`` ended a run of an undetected
    connection begun at ``p``, the one that brings a direction every probe refused to
    ``limit`` (``Limits.detect_bytes``) and nothing else: fully captured, in order, no
    FIN/RST? Detection then looks no further and names the protocol unknown (unless
    ``ProtocolSpec.probe_late`` accepts: ``AppLayer._quiet`` looks)."""
    c = int(cap[q])
    if c == 0 or c != int(plen[q]) or int(flags[q]) & (FIN | RST):
        return False
    k = int(d[q])
    layer = conn.outer
    # (in order, it follows the run's new bytes of its direction: ``off[q] - next`` of them)
    if not layer.refused[k] or len(layer.seen[k]) + int(off[q]) - conn.reasm[k].next + c < limit:
        return False
    run = slice(p, q)
    new = int(cap[run][fresh[run] & (d[run] == k)].sum())
    return int(off[q]) == conn.reasm[k].next + new


def _queue_array(q: deque[list[int]]) -> np.ndarray:
    """An unacknowledged-segment queue as rows ``(end_offset, ts_sent, resent)``."""
    return np.array(q, dtype=np.int64).reshape(-1, 3)


class _Layer:
    """One protocol layer of a connection: detect by content, then parse."""

    __slots__ = ("below", "flow_id", "inner", "keylog", "limits", "midstream", "name", "pending",
                 "refused", "seen", "session")

    def __init__(self, flow_id: int, keylog: KeyLog | None, *, inner: bool,
                 limits: Limits, midstream: bool = False, below: str = "tcp") -> None:
        self.flow_id = flow_id
        self.below = below  # the layer under this one: its anomalies' ``layer``
        self.midstream = midstream  # the connection was open before the capture began
        self.keylog = keylog
        self.inner = inner
        self.limits = limits
        self.name: str | None = None  # protocol once detected, "unknown" when given up
        self.session: SessionParser | None = None
        self.pending: list[tuple[int, bytes, int, int] | tuple[int, int, int]] = []
        self.seen = [b"", b""]
        # per direction: every protocol's probe refused its first bytes for good
        # (``detect.refused``): only its length and ``probe_late`` can still matter
        self.refused = [False, False]

    def __setstate__(self, state: tuple[object, dict[str, object]]) -> None:
        """Unpickling (``resume``): a layer kept by an older pcapflow has no
        ``refused``; not refused is always right (its probes simply run again)."""
        self.refused = [False, False]
        for name, value in state[1].items():
            setattr(self, name, value)

    def feed(self, d: int, data: bytes, ts_first: int, ts_last: int) -> list[Event]:
        if self.session is not None:
            return self.session.feed(DIRECTIONS[d], data, ts_first, ts_last)
        if self.name is not None:
            return []
        self.pending.append((d, data, ts_first, ts_last))
        detect_bytes = self.limits.detect_bytes * (MIDSTREAM_DETECT_FACTOR if self.midstream
                                                   else 1)
        if len(self.seen[d]) < detect_bytes:
            self.seen[d] += data[: detect_bytes - len(self.seen[d])]
        events = self._try_detect(ts_last)
        if self.name is None and self.quiet and not self.refused[d]:
            self.refused[d] = refused(d, self.seen[d])
        return events

    @property
    def quiet(self) -> bool:
        """Undetected, on plain TCP, from the connection's start: what detection
        says can be worked out for a stretch of pieces at once (``AppLayer._quiet``)."""
        return self.name is None and not self.inner and not self.midstream

    def hold(self, d: int, data: bytes, ts_first: int, ts_last: int) -> None:
        """A piece that cannot change what detection says (``AppLayer._quiet``: its
        direction is refused and stays under ``Limits.detect_bytes``): kept as
        ``feed`` keeps it, for the session a later piece may name."""
        self.pending.append((d, data, ts_first, ts_last))
        self.seen[d] += data

    def late(self, d: int, more: bytes) -> bool:
        """Would ``ProtocolSpec.probe_late`` accept direction ``d``'s first bytes with
        ``more`` appended (so, being monotone, some prefix of them)?"""
        data = self.seen[d] + more
        return any(probe(data) for probe in _LATE)

    def feed_many(self, d: int, run: Run) -> list[Event]:
        """A run of in-order pieces: the session's batch path, or piece by piece."""
        if self.session is not None:
            return self.session.feed_many(DIRECTIONS[d], run)
        out: list[Event] = []
        for data, t1, t2 in run.pieces():
            out += self.feed(d, data, t1, t2)
        return out

    def gap(self, d: int, length: int, ts: int) -> list[Event]:
        if self.session is not None:
            return self.session.gap(DIRECTIONS[d], length, ts)
        if self.name is None:
            self.pending.append((d, length, ts))
        return []

    def _try_detect(self, ts: int, final: bool = False) -> list[Event]:
        # a direction every probe refused for good cannot name a protocol by probe
        proto = detect(b"" if self.refused[0] else self.seen[0],
                       b"" if self.refused[1] else self.seen[1])
        if proto == UNKNOWN and not self.inner:
            # a protocol that starts later in a direction's bytes (STARTTLS; a capture
            # that began inside a TLS record)
            proto = next((s.name for s in REGISTRY if s.probe_late is not None
                          and any(s.probe_late(seen) for seen in self.seen)), UNKNOWN)
        if proto == UNKNOWN and self.midstream:  # the capture may begin inside a message
            proto = detect_midstream(self.seen[0], self.seen[1], final=final)
        if proto == UNKNOWN:
            if max(len(self.seen[0]), len(self.seen[1])) >= self.limits.detect_bytes * (
                    MIDSTREAM_DETECT_FACTOR if self.midstream else 1):
                self.name = UNKNOWN
                self.pending.clear()
            return []
        self.name = proto
        session = self.session = _session_for(proto, SessionContext(
            flow_id=self.flow_id, limits=self.limits, keylog=self.keylog, inner=self.inner,
            midstream=self.midstream))
        events: list[Event] = []
        if session is None:
            self.pending.clear()
            undecoded = BY_NAME[proto].undecoded
            if undecoded is not None:
                events.append(Anomaly(
                    ts=ts, flow_id=self.flow_id, direction=None,
                    layer=self.below, code="unsupported_protocol",
                    detail=undecoded))
            return events
        for item in self.pending:
            if len(item) == 4:
                d, data, t1, t2 = item
                events += session.feed(DIRECTIONS[d], data, t1, t2)
            else:
                d, length, t = item
                events += session.gap(DIRECTIONS[d], length, t)
        self.pending.clear()
        return events

    def finish(self, ts: int) -> list[Event]:
        events: list[Event] = []
        if self.session is None and self.name is None and self.pending:
            events = self._try_detect(ts, final=True)  # all its bytes are here now
            if self.name is None:  # ended before detect_bytes, claimed by no protocol
                self.name = UNKNOWN
        if self.session is not None:
            return events + self.session.finish(ts)
        if self.midstream and self.name in (None, UNKNOWN) and any(self.seen):
            events.append(Anomaly(
                ts=ts, flow_id=self.flow_id, direction=None,
                layer=self.below, code="midstream_undetected",
                detail=f"the connection was open before the capture began and its "
                f"{len(self.seen[0])}+{len(self.seen[1])} first bytes (out+in) hold no "
                "message start of a protocol pcapflow decodes (the capture may begin "
                "inside a long message): capture from the connection's start"))
        return events


class Connection:
    """Reassembly and parsing state of one TCP connection."""

    __slots__ = ("fin", "flow_id", "info", "inner", "last_ts", "limits", "outer", "reasm",
                 "sent_end", "unacked")

    def __init__(self, flow_id: int, keylog: KeyLog | None, limits: Limits,
                 midstream: bool = False) -> None:
        self.flow_id = flow_id
        self.limits = limits
        self.reasm = tuple(
            StreamReassembler(max_held=limits.reassembly_held_bytes,
                              max_held_segments=limits.reassembly_held_segments)
            for _ in range(2))
        self.outer = _Layer(flow_id, keylog, inner=False, limits=limits, midstream=midstream)
        self.inner: _Layer | None = None
        self.info: dict[str, object] = {}
        self.fin = [False, False]
        self.last_ts = 0
        # per direction: data segments not yet acknowledged, [end_offset, ts_sent, resent]
        self.unacked: tuple[deque[list[int]], deque[list[int]]] = (deque(), deque())
        self.sent_end = [0, 0]

    def sent(self, d: int, offset: int, length: int, ts: int) -> None:
        """Remember a data segment's first transmission for ``tcp_rtt``."""
        end = offset + length
        q = self.unacked[d]
        if end > self.sent_end[d]:
            self.sent_end[d] = end
            if len(q) < self.limits.max_unacked:
                q.append([end, ts, 0])
        elif q:
            for item in q:  # a retransmission: Karn's rule marks the samples it covers
                if item[0] > offset:
                    item[2] = 1

    def acked(self, d: int, ack: int, ts: int, with_data: bool,
              rows: list[tuple[int, ...]]) -> None:
        """The peer acknowledged direction ``d`` up to ``ack``: emit RTT samples."""
        q = self.unacked[d]
        while q and q[0][0] <= ack:
            end, ts_sent, resent = q.popleft()
            rows.append((self.flow_id, d, ts_sent, ts, end, resent, int(with_data)))

    @property
    def waiting(self) -> bool:
        return self.reasm[0].held_bytes > 0 or self.reasm[1].held_bytes > 0

    @property
    def independent(self) -> bool:
        """Do both directions now parse without regard to each other, so that a run's
        pieces may be fed direction by direction instead of in capture order? (The
        same events come out, in another order across directions, which no table
        depends on.)"""
        layers = [self.outer] if self.outer.name not in _CARRIES else [self.outer, self.inner]
        for layer in layers:
            session = layer.session if layer is not None else None
            if session is None or not session.independent():
                return False
        return True

    @property
    def dead(self) -> bool:
        return self.outer.name == "unknown" or (
            self.outer.name is not None and self.outer.session is None)

    def deliver(self, d: int, items: list[Piece | Gap | Conflict], out: list[Event]) -> None:
        for it in items:
            if isinstance(it, Piece):
                self._expand(self.outer.feed(d, it.data, it.ts_first,
                                             _ts_last(d, it.ts_first, it.ts_avail)), out)
            elif isinstance(it, Gap):
                out.append(Anomaly(ts=it.ts, flow_id=self.flow_id, direction=DIRECTIONS[d],
                                   layer="tcp", code="stream_gap", stream_offset=it.offset,
                                   detail=f"{it.length} bytes never captured"))
                self._expand(self.outer.gap(d, it.length, it.ts), out)
            else:
                out.append(Anomaly(ts=it.ts, flow_id=self.flow_id, direction=DIRECTIONS[d],
                                   layer="tcp", code="overlap_conflict", stream_offset=it.offset,
                                   detail=f"retransmitted copy of {it.length} bytes differs; "
                                   "first copy kept"))

    def deliver_run(self, d: int, run: Run, out: list[Event]) -> None:
        """In-order pieces the batch path took past the reassembler."""
        self._expand(self.outer.feed_many(d, run), out)

    def _expand(self, events: list[Event], out: list[Event]) -> None:
        """Pass bytes an outer layer produced (decrypted TLS plaintext) to the inner
        layer; keep everything else."""
        for e in events:
            carrier = _CARRIER.get(type(e))
            if carrier is None:
                out.append(e)
                continue
            if self.inner is None:
                self.inner = _Layer(self.flow_id, None, inner=True, limits=self.limits,
                                    midstream=self.outer.midstream,
                                    below=self.outer.name or "tcp")
            if carrier == "piece":
                piece = cast(PieceCarrier, e)
                d = 0 if piece.direction == "out" else 1
                out += self.inner.feed(d, piece.data, piece.ts_first, piece.ts_last)
            else:
                run = cast(RunCarrier, e)
                out += self.inner.feed_many(0 if run.direction == "out" else 1, run.run)

    def finish(self, ts: int, out: list[Event]) -> None:
        for d in (0, 1):
            self.deliver(d, self.reasm[d].finish(ts), out)
        self._expand(self.outer.finish(ts), out)
        if self.inner is not None:
            out += self.inner.finish(ts)

    @property
    def app_protocol(self) -> str | None:
        """``flows.app_protocol``: the outer layer's protocol, ``outer/inner`` when
        an inner one was detected; a protocol upgraded to another (HTTP to
        WebSocket, ``ProtocolSpec.upgrade``) by the one it became."""
        outer = self.outer.name
        if outer is None:
            return None
        inner = self.inner.name if self.inner is not None else None
        for (source, column), target in _UPGRADES:
            if self.info.get(column) is not None:
                if outer == source:
                    return target
                if inner == source:
                    inner = target
        return f"{outer}/{inner}" if inner and inner != UNKNOWN else outer


class AppLayer:
    """Application-layer stage of an ingest (see module docstring)."""

    def __init__(self, tracker: FlowTracker, keylog: KeyLog | None,
                 limits: Limits | None = None) -> None:
        self.tracker = tracker
        self.keylog = keylog
        self.limits = limits or Limits()
        self.conns: dict[int, Connection] = {}
        self.done: set[int] = set()
        self.info: dict[int, dict[str, object]] = {}
        self.last_ts = 0
        # capture index of the packet ``last_ts`` is from: worker processes that
        # share a capture agree on the last one any of them took (``ingest``)
        self.last_packet = -1
        self.rtt_rows: list[tuple[int, ...]] = []
        # batch path: (flow_id, rows of rtt_walk)
        self.rtt_parts: list[tuple[int, np.ndarray]] = []
        # TCP timestamps samples (the tracker's ``PacketFlows.ts_*``): tcp_rtt rows
        # of method ``tsecr``, as [flow, direction, sent, echo, end, retransmitted,
        # piggybacked] rows
        self.ts_parts: list[np.ndarray] = []
        self.after_flush: dict[str, FlushHook] = {}
        """Per message table, a hook called with each batch of rows written (the
        ingest driver sets the matcher's ingest-time scan here)."""
        self.fresh: set[int] = set()
        """Flows open in the previous file of a resumed set whose connection state was
        not resumed (``resume``): their next bytes are decoded as a connection opened
        before the capture."""

    @classmethod
    def factory(cls, keylog: list[str], limits: Limits | None = None
                ) -> Callable[[FlowTracker], AppLayer]:
        """Load the key logs once, in the caller (errors surface before reading)."""
        keys = (KEY_MATERIAL.load([Path(k) for k in keylog])
                if keylog and KEY_MATERIAL is not None else None)
        return lambda tracker: cls(tracker, keys, limits)

    def _select(self, dec: DecodedChunk, pf: PacketFlows,
                mine: np.ndarray | None = None) -> np.ndarray:
        ids = pf.flow_id
        tcp = (ids >= 0) & (dec.proto == IPPROTO_TCP)
        if mine is not None:  # a worker process: only the flows of its shard
            tcp &= mine
        data = tcp & (dec.payload_caplen > 0)
        want = data | (tcp & ((dec.tcp_flags & (FIN | RST)) != 0))
        # ACKs of connections with data (open ones, and ones whose first data is in
        # this chunk): RTT samples, and holes the peer acknowledged (capture gaps)
        acks = np.flatnonzero(tcp & ~want & ((dec.tcp_flags & ACK) != 0))
        if acks.size:
            live = np.fromiter(self.conns.keys(), np.int64, len(self.conns))
            data_flows = np.concatenate((live, ids[data]))  # (repeats: no matter to isin)
            if data_flows.size:
                want[acks[np.isin(ids[acks], data_flows)]] = True
        sel = np.flatnonzero(want)
        if self.done and sel.size:
            # connections already finished (closed, or their protocol unknown) take
            # nothing more (``_flow``, ``_packet``): leave their packets out before
            # the sort by flow; on plain TCP that is nearly every packet
            done = np.fromiter(self.done, np.int64, len(self.done))
            sel = sel[~np.isin(ids[sel], done)]
        return sel

    def process(self, chunk: PacketChunk, dec: DecodedChunk, pf: PacketFlows,
                staging: TableSink, add_anomalies: AnomalyFn,
                mine: np.ndarray | None = None) -> None:
        """One chunk's packets; ``mine`` (a mask per packet): the packets of the
        flows this process owns when the capture is sharded (``pipelines.ingest``)."""
        for st, data in chunk.secrets:
            if KEY_MATERIAL is not None and st == KEY_MATERIAL.secrets_type:
                if self.keylog is None:
                    self.keylog = KEY_MATERIAL.empty()
                KEY_MATERIAL.add_block(self.keylog, data,
                                       "the capture's Decryption Secrets Block")
                for c in self.conns.values():  # sessions hold the same KeyLog object
                    c.outer.keylog = self.keylog
        rows = RowBuffers(staging.write, self.after_flush)
        events: list[Event] = []
        self._timestamp_samples(chunk, pf, mine)
        sel = self._select(dec, pf, mine)
        fids = pf.flow_id[sel]
        order = np.argsort(fids, kind="stable") if FAST_PATH and sel.size else None
        # (where each flow's packets begin in that order, but the first flow's)
        starts = np.flatnonzero(np.diff(fids[order])) + 1 if order is not None else None
        if order is not None and starts is not None and (
                len(self.conns) + starts.size + 1 <= self.limits.max_open_connections):
            # No eviction can happen in this chunk: take it connection by connection
            # (each connection's packets stay in capture order).
            by_flow = sel[order]
            cuts = [0, *starts.tolist(), by_flow.size]
            last = -1
            for a, b in pairwise(cuts):
                last = max(last, self._flow(by_flow[a:b], chunk, dec, pf, events))
                if len(events) > DISPATCH_EVENTS:
                    self._dispatch(events, rows, add_anomalies)
                    events = []
            if last >= 0:
                self.last_ts = int(chunk.ts_ns[last])
                self.last_packet = int(chunk.index[last])
        else:
            for i in sel.tolist():
                self._packet(i, chunk, dec, pf, events)
                if len(events) > DISPATCH_EVENTS:
                    self._dispatch(events, rows, add_anomalies)
                    events = []
        self._write(events, rows, staging, add_anomalies)

    def _packet(self, i: int, chunk: PacketChunk, dec: DecodedChunk, pf: PacketFlows,
                events: list[Event]) -> bool:
        """The general path: one packet. False when the packet was not taken."""
        fid = int(pf.flow_id[i])
        if fid in self.done:
            return False
        ts = int(chunk.ts_ns[i])
        d = int(pf.direction[i])
        conn = self.conns.get(fid)
        n = int(dec.payload_caplen[i])
        if conn is None:
            if n == 0:
                return False
            conn = self.conns[fid] = Connection(
                fid, self.keylog, self.limits,
                midstream=fid in self.fresh or not self.tracker.handshake_seen(fid))
            conn.last_ts = ts  # the newest: never the one evicted
            if len(self.conns) > self.limits.max_open_connections:
                self._evict(events)
        if n:
            start = int(dec.payload_offset[i])
            off = int(pf.stream_offset[i])
            data = chunk.data[start : start + n].tobytes()
            conn.sent(d, off, int(dec.payload_len[i]), ts)
            conn.deliver(d, conn.reasm[d].segment(off, data, ts), events)
        ack = int(pf.ack_offset[i])
        if ack >= 0:
            if conn.unacked[1 - d]:
                conn.acked(1 - d, ack, ts, n > 0, self.rtt_rows)
            if conn.reasm[1 - d].held_bytes:
                conn.deliver(1 - d, conn.reasm[1 - d].ack(ack, ts), events)
        conn.last_ts = ts
        self.last_packet = int(chunk.index[i])
        flags = int(dec.tcp_flags[i])
        if flags & FIN:
            conn.fin[d] = True
        if flags & RST or (conn.fin[0] and conn.fin[1]) or conn.dead:
            self._close(fid, ts, events)
        self.last_ts = ts
        return True

    def _flow(self, idx: np.ndarray, chunk: PacketChunk, dec: DecodedChunk, pf: PacketFlows,
              events: list[Event]) -> int:
        """One connection's packets of a chunk; returns the last packet index taken.

        Runs of simple packets (``segments.simple_prefix``) of a connection whose
        protocol is known and that holds no out-of-order data go through
        ``_run``, those of a connection not named yet through ``_quiet`` (up to the
        packet that may name it, ``segments.bounded_prefix``); every other packet
        through ``_packet``.
        """
        fid = int(pf.flow_id[idx[0]])
        if fid in self.done:
            return -1
        d = pf.direction[idx]
        off = pf.stream_offset[idx]
        plen = dec.payload_len[idx]
        cap = dec.payload_caplen[idx]
        flags = dec.tcp_flags[idx]
        pos = dec.payload_offset[idx]
        n = idx.size
        p = 0
        last = -1
        while p < n:
            conn = self.conns.get(fid)
            stop = p + 1
            if conn is not None and conn.outer.session is not None and not conn.waiting:
                e = min(n, p + MAX_SCAN)
                q = simple_prefix(d[:e], off[:e], plen[:e], cap[:e], flags[:e], p,
                                  conn.reasm[0].next, conn.reasm[1].next, chunk.data, pos)
                if q - p >= MIN_RUN and (conn.independent or _worth_batching(d[p:q], cap[p:q])):
                    self._run(conn, idx[p:q], chunk, dec, pf, events)
                    last = int(idx[q - 1])
                    p = q
                    continue
                # per packet, then look again: the connection may become independent
                # (a TLS 1.3 handshake ends, a WebSocket upgrade completes)
                stop = min(q + 1, n, p + RECHECK)
            elif conn is not None and conn.outer.quiet and not conn.waiting:
                # not named yet: packets up to the one that may change what detection
                # says go in bulk; that one (or the one ending the run) per packet
                layer = conn.outer
                limit = layer.limits.detect_bytes
                e = min(n, p + MAX_SCAN)
                fresh = np.empty(e, np.bool_)
                q = bounded_prefix(d[:e], off[:e], plen[:e], cap[:e], flags[:e], p,
                                   conn.reasm[0].next, conn.reasm[1].next, chunk.data, pos,
                                   limit - len(layer.seen[0]) if layer.refused[0] else 0,
                                   limit - len(layer.seen[1]) if layer.refused[1] else 0,
                                   fresh)
                # the packet the run stopped at, when it only brings a refused direction
                # to ``detect_bytes`` (detection gives up there): taken in the run
                end = q + 1 if q < e and _gives_up(conn, q, p, d, off, plen, cap, flags,
                                                   fresh, limit) else q
                if end > q:
                    fresh[q] = True  # (it brings new bytes)
                if end - p >= MIN_RUN and self._quiet(conn, idx[p:end],
                                                      np.flatnonzero(fresh[p:end]), chunk, dec,
                                                      pf, end > q):
                    last = int(idx[end - 1])
                    p = end
                    if end > q:  # named unknown: finished, as ``_packet`` does
                        self._close(fid, int(chunk.ts_ns[last]), events)
                        return last
                stop = min(q + 1, n)
            while p < stop:
                if self._packet(int(idx[p]), chunk, dec, pf, events):
                    last = int(idx[p])
                if fid in self.done:
                    return last
                p += 1
        return last

    def _run(self, conn: Connection, idx: np.ndarray, chunk: PacketChunk, dec: DecodedChunk,
             pf: PacketFlows, events: list[Event]) -> None:
        """A run of simple packets of ``conn``: what ``_packet`` does, in bulk."""
        d = pf.direction[idx]
        off = pf.stream_offset[idx]
        cap = dec.payload_caplen[idx]
        ts = chunk.ts_ns[idx]
        self._rtt_run(conn, d, off, cap, ts, idx, dec, pf)
        data = np.flatnonzero(cap > 0)
        if data.size:
            data = data[_first_copies(d[data], off[data] + cap[data], conn.reasm[0].next,
                                      conn.reasm[1].next)]
        if data.size:
            if conn.independent:  # one Run per direction (request/response traffic)
                data = data[np.argsort(d[data], kind="stable")]
            dirs = d[data]
            cuts = [0, *(np.flatnonzero(np.diff(dirs)) + 1).tolist(), data.size]
            for a, b in pairwise(cuts):
                k = int(dirs[a])
                seg = data[a:b]
                lengths = cap[seg]
                payload = gather(chunk.data, dec.payload_offset[idx[seg]], lengths).tobytes()
                ends = np.cumsum(lengths)
                ts_first = ts[seg]
                ts_avail = conn.reasm[k].deliver_run(payload, ends, ts_first)
                conn.deliver_run(k, Run(payload, ends, ts_first, _ts_last(k, ts_first, ts_avail)),
                                 events)
        conn.last_ts = int(ts[-1])

    def _quiet(self, conn: Connection, idx: np.ndarray, data: np.ndarray, chunk: PacketChunk,
               dec: DecodedChunk, pf: PacketFlows, gives_up: bool = False) -> bool:
        """A run of simple packets of ``conn`` before detection has named its protocol,
        none of which can change what detection says (``segments.bounded_prefix``: the
        run brings new bytes only to directions every protocol's probe refused for good,
        ``detect.refused``, and stops short of ``Limits.detect_bytes``): what
        ``_packet`` does for each, in bulk (RTT samples, reassembly, the bytes kept for
        detection). ``data``: the packets (of ``idx``) that bring new bytes.

        False, with nothing done, when ``ProtocolSpec.probe_late`` (monotone) accepts a
        direction's first bytes with the run's appended: some packet of the run names
        the protocol, so the run goes packet by packet.

        ``gives_up``: the run's last packet brings its direction (refused) to
        ``Limits.detect_bytes`` (``_gives_up``), where detection looks no further and,
        no probe accepting, names the protocol unknown: then nothing is kept for a
        session (``_Layer._try_detect`` drops it), the caller finishes the connection.
        """
        layer = conn.outer
        d = pf.direction[idx]
        cap = dec.payload_caplen[idx]
        limit = layer.limits.detect_bytes  # (quiet: never midstream)
        parts = []
        for k in (0, 1):
            mine = data[d[data] == k]
            if mine.size:
                payload = gather(chunk.data, dec.payload_offset[idx[mine]], cap[mine]).tobytes()
                # (detection reads a direction's first ``detect_bytes``: ``_Layer.feed``)
                if layer.late(k, payload[: limit - len(layer.seen[k])] if gives_up else payload):
                    return False
                parts.append((k, mine, payload))
        ts = chunk.ts_ns[idx]
        self._rtt_run(conn, d, pf.stream_offset[idx], cap, ts, idx, dec, pf)
        conn.last_ts = int(ts[-1])
        if gives_up:  # (the connection is finished next: its reassemblers are not read)
            for k, _, payload in parts:
                layer.seen[k] = (layer.seen[k] + payload)[:limit]
            layer.name = UNKNOWN
            layer.pending.clear()
            return True
        pieces: list[tuple[int, int, bytes, int, int]] = []
        for k, mine, payload in parts:
            ends = np.cumsum(cap[mine])
            ts_first = ts[mine]
            avail = conn.reasm[k].deliver_run(payload, ends, ts_first)
            a = 0
            for i, end, t1, t2 in zip(mine.tolist(), ends.tolist(), ts_first.tolist(),
                                      _ts_last(k, ts_first, avail).tolist(), strict=True):
                pieces.append((i, k, payload[a:end], t1, t2))
                a = end
            layer.seen[k] += payload  # (as ``_Layer.hold`` piece by piece)
        if len(parts) > 1:
            pieces.sort()  # capture order, as ``_packet`` would have kept them
        layer.pending.extend([(k, piece, t1, t2) for _, k, piece, t1, t2 in pieces])
        return True

    def _rtt_run(self, conn: Connection, d: np.ndarray, off: np.ndarray, cap: np.ndarray,
                 ts: np.ndarray, idx: np.ndarray, dec: DecodedChunk, pf: PacketFlows) -> None:
        """RTT samples of a run in bulk (``segments.rtt_walk``: ``Connection.sent`` and
        ``acked`` of each packet): both bulk paths, ``_run`` and ``_quiet``."""
        rows, q0, q1, end0, end1 = rtt_walk(
            d, off, dec.payload_len[idx], cap, pf.ack_offset[idx], ts,
            _queue_array(conn.unacked[0]), _queue_array(conn.unacked[1]),
            conn.sent_end[0], conn.sent_end[1], self.limits.max_unacked)
        conn.unacked = (deque(q0.tolist()), deque(q1.tolist()))
        conn.sent_end = [int(end0), int(end1)]
        if rows.shape[0]:
            self.rtt_parts.append((conn.flow_id, rows))

    def _evict(self, events: list[Event]) -> None:
        """Finish the least recently active connections, down to 90% of the cap.

        Evicting a tenth at a time keeps the sort's cost amortised over the many
        new connections that filled the gap.
        """
        cap = self.limits.max_open_connections
        keep = cap * 9 // 10
        by_age = sorted(self.conns.values(), key=lambda c: c.last_ts)
        for conn in by_age[: len(self.conns) - keep]:
            events.append(Anomaly(
                ts=conn.last_ts, flow_id=conn.flow_id, direction=None, layer="tcp",
                code="connection_evicted", detail=f"more than {cap} open "
                "connections: this idle one was finished early; later data is not parsed"))
            self._close(conn.flow_id, conn.last_ts, events)

    def _timestamp_samples(self, chunk: PacketChunk, pf: PacketFlows,
                           mine: np.ndarray | None) -> None:
        """The chunk's TCP timestamps RTT samples (``analysis._timestamps``), of the
        flows this process owns. ``piggybacked``: the echo came on data answering a
        timed segment that carried data (it may be the peer's reply); an echo on
        data answering a pure ACK is not a reply to it (the peer sent when it had
        something to send: the sample is then the round trip plus that wait)."""
        hit = pf.ts_sent >= 0
        if mine is not None:
            hit &= mine
        idx = np.flatnonzero(hit)
        if not idx.size:
            return
        bits = pf.ts_bits[idx].astype(np.int64)
        both = TS_SOURCE_DATA | TS_ECHO_DATA
        self.ts_parts.append(np.stack([
            pf.flow_id[idx], 1 - pf.direction[idx].astype(np.int64), pf.ts_sent[idx],
            chunk.ts_ns[idx].astype(np.int64), pf.ts_end[idx],
            (bits & TS_RETRANSMITTED) != 0, (bits & both) == both], axis=1))

    def _flush_rtt(self, staging: TableSink) -> None:
        parts = [np.array(self.rtt_rows, dtype=np.int64).reshape(-1, 7)]
        for fid, rows in self.rtt_parts:
            part = np.empty((rows.shape[0], 7), dtype=np.int64)
            part[:, 0] = fid
            part[:, 1:] = rows
            parts.append(part)
        n_ack = sum(p.shape[0] for p in parts)
        parts += self.ts_parts
        self.rtt_rows = []
        self.rtt_parts = []
        self.ts_parts = []
        a = np.concatenate(parts)
        if not a.shape[0]:
            return
        method = np.zeros(a.shape[0], np.int8)
        method[n_ack:] = 1
        fid, d, sent, ack, end, resent, piggy = np.ascontiguousarray(a.T)
        ts = pa.timestamp("ns", tz="UTC")
        staging.write("tcp_rtt", {
            "flow_id": pa.array(fid),
            "direction": _DIRECTIONS.take(pa.array(d)),
            "ts_sent": pa.array(sent).cast(ts), "ts_ack": pa.array(ack).cast(ts),
            "rtt_ns": pa.array(ack - sent), "end_offset": pa.array(end),
            "retransmitted": pa.array(resent.astype(bool)),
            "piggybacked": pa.array(piggy.astype(bool)),
            "method": _RTT_METHODS.take(pa.array(method)),
        })

    def _close(self, fid: int, ts: int, events: list[Event]) -> None:
        conn = self.conns.pop(fid)
        conn.finish(ts, events)
        events.append(conn)
        self.done.add(fid)

    def _dispatch(self, events: list[Event], rows: RowBuffers, add_anomalies: AnomalyFn) -> None:
        """Events -> table rows (``RowBuffers``), ``flows`` columns (each event type's
        ``EventSpec.flow_info``) and anomalies; a closed ``Connection`` -> its
        ``app_protocol``."""
        anomalies: list[Anomaly] = []
        for e in events:
            fill = _FLOW_INFO.get(type(e))
            if fill is not None:
                fill(self.info.setdefault(e.flow_id, {}), e)
            if rows.add(e):
                continue
            if isinstance(e, Anomaly):
                anomalies.append(e)
            elif isinstance(e, Connection):
                info = self.info.setdefault(e.flow_id, {})
                e.info.update(info)
                info["app_protocol"] = e.app_protocol
                if e.outer.name in _CARRIES and e.inner is None:
                    anomalies += _not_decrypted(e, info)
        add_anomalies(anomalies)

    def retire(self, flow_ids: list[int], staging: TableSink,
               add_anomalies: AnomalyFn) -> dict[int, dict[str, object]]:
        """The flow tracker retired these flows: finish any still open, forget them.

        Returns their ``flows`` columns (as ``finish`` does); afterwards ``info`` and
        ``done`` hold only flows the tracker still holds, so they stay bounded too.
        """
        still_open = [f for f in flow_ids if f in self.conns]
        if still_open:  # evicted by the tracker while idle: finished early
            self._close_all([(f, self.conns[f].last_ts) for f in still_open], staging,
                            add_anomalies)
        self.done.difference_update(flow_ids)
        self.fresh.difference_update(flow_ids)
        return {f: self.info.pop(f) for f in flow_ids if f in self.info}

    def finish(self, staging: TableSink, add_anomalies: AnomalyFn) -> dict[int, dict[str, object]]:
        """End of capture: flush every open connection; returns flows columns by flow."""
        self._close_all([(f, self.last_ts) for f in self.conns], staging, add_anomalies)
        return self.info

    def _close_all(self, closing: list[tuple[int, int]], staging: TableSink,
                   add_anomalies: AnomalyFn) -> None:
        """Finish these connections (flow id, time) and write what they leave."""
        events: list[Event] = []
        for fid, ts in closing:
            self._close(fid, ts, events)
        self._write(events, RowBuffers(staging.write, self.after_flush), staging,
                    add_anomalies)

    def _write(self, events: list[Event], rows: RowBuffers, staging: TableSink,
               add_anomalies: AnomalyFn) -> None:
        """The events left, their rows, and the RTT samples (every path ends here)."""
        self._dispatch(events, rows, add_anomalies)
        rows.flush()
        self._flush_rtt(staging)
