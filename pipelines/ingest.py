"""Capture file -> Parquet tables of one capture, committed atomically.

How this works: the capture is read in bounded chunks; each chunk is decoded
(``parsers.decode``), assigned to flows and analysed (``parsers.tcp.analysis``)
with compiled kernels, and its per-packet results become rows of
``tcp_events``, ``anomalies`` and (opt-in) ``packets`` through NumPy masks, never
a Python loop over packets. TCP payload of each connection goes to the
application layer (``pipelines.connections``), which reassembles and parses it.
One ``captures`` row is written at the end; ``store.Staging.commit`` then swaps
the capture's partitions in.

The ``flows`` table is written as flows are retired, not at the end, so memory
follows the flows held, not the capture's total: after each chunk the tracker
hands over the flows it retired (ended a while ago, or evicted; see
``parsers.tcp.analysis``), the application layer hands over their columns (SNI,
ALPN, ...: ``AppLayer.retire``), and ``FlowRows`` writes their rows in batches.
With a matcher, a flow's ``venue`` is the matcher's answer, and the matcher needs
the flows whose messages it pairs all at once, at the end. So ``FlowRows``
splits: flows with application-layer data (a detected protocol, an SNI, a Host)
wait in a side file of the staging directory and go to the matcher with the
message tables at the end; the others (the many, in a capture of scans or of
millions of tiny connections) have no messages, so their venue depends on the
flow alone (its address and port): the matcher is asked for it batch by batch,
with an empty directory as the message tables, and their rows are final at once.

Sharding (``workers > 1``): one capture's ingest on several cores. The parent parses
the capture's first 256 KB and throws the result away (``_warm_up``: Numba's set-up
and kernel loads, then inherited), makes the staging directory, then forks a child
per further worker before any thread exists; every process opens, reads and decodes
the whole capture and runs the whole ``FlowTracker`` (so flow ids, retirement and
eviction are the same everywhere), but owns only the flows of its shard (``Shard``):
only it runs the application layer on them and writes their rows of ``tcp_events``,
``flows``, ``tcp_rtt``, the message tables and their anomalies; rows tied to no flow
(capture and decode anomalies, ``packets`` of non-flow packets) are shard 0's, the
parent's. A TCP flow is given, when its first payload packet is seen, to the shard
with the fewest payload bytes so far (every process sees the same packets in the
same order, so all agree without talking); a flow without payload by its ``flow_id``
modulo ``workers``. Each process writes its own part files into the shared staging
directory (``Staging.part_prefix``). Processes talk over pipes twice: at the end of
the capture they agree on the last packet any of them gave the application layer (it
closes the connections still open at that time), and each child sends what it wrote
(rows per table, anomaly codes) and the side file of its flows with application-
layer data. The parent then runs the matcher once over everything staged, writes the
``captures`` row and commits; a child's failure aborts the whole ingest
(``PcapflowError``), nothing is ever committed partially. The one thing a shard
cannot see is the other shards' open connections: when more flows with payload that
have not ended are held than the application layer's ``max_open_connections``, a
single process might evict connections (by their global recency), so the sharded
ingest gives up and the capture is ingested in one process instead (``Shard.peak``).
The tables are the same rows either way, in another order within files
(``tests/test_ingest_workers.py``); the matcher's SQL numbers messages in stream
order, not file order, so its output does not depend on it either.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import stat
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from ..parsers.capture import open_capture
from ..parsers.capture.chunk import PacketChunk
from ..parsers.capture.reader import DEFAULT_CHUNK_BYTES
from ..parsers.decode import (
    FIN,
    IPPROTO_TCP,
    NOT_IP,
    OK,
    RST,
    STATUS,
    DecodedChunk,
    decode_chunk,
    ip_to_str,
)
from ..parsers.errors import PcapflowError
from ..parsers.events import Anomaly
from ..parsers.tcp.analysis import END_REASONS, EVENT_KINDS, FlowTracker, PacketFlows
from . import interrupts, store
from .schemas import FLOWS, TS

Matcher = Callable[[Path, pa.Table], "MatchOutput"]
"""Called with a directory of message tables readable as Parquet and flows rows;
returns the venue of each flow and the orders/acks/latency tables. ``FlowRows``
calls it once with the staging directory and the flows that have application-layer
data, and for the other flows batch by batch with an empty directory."""

# Rows of flows without application-layer data resolved and written at once.
FLOW_BATCH_ROWS = 1 << 16


@dataclass(slots=True)
class MatchOutput:
    """What a matcher hands back to the ingest (see ``pipelines.match``)."""

    flow_venue: dict[int, str]
    tables: dict[str, pa.Table]

ProgressFn = Callable[[int, int], None]
"""Called after each chunk with (capture bytes read so far, packets so far)."""

_DIRS = np.array(["out", "in"], dtype=object)


@dataclass(slots=True)
class IngestResult:
    """What one capture's ingest produced (also printed by the CLI)."""

    path: str
    capture_id: str
    sha256: str
    format: str
    packets: int
    bytes: int
    flows: int
    seconds: float
    rows: dict[str, int] = field(default_factory=dict)
    anomaly_codes: dict[str, int] = field(default_factory=dict)
    capture_problems: list[str] = field(default_factory=list)
    """Capture-file problems (truncated record, corrupt block...), one line each."""

    @property
    def packets_per_second(self) -> float:
        return self.packets / self.seconds if self.seconds > 0 else 0.0


def _ts(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), type=pa.int64()).cast(TS)


def _tcp_event_rows(pf: PacketFlows, dec: DecodedChunk, chunk: PacketChunk,
                    mine: np.ndarray | None = None) -> dict | None:
    parts: list[tuple[np.ndarray, str]] = []
    for bit, kind in EVENT_KINDS.items():
        hit = (pf.flags & bit) != 0
        idx = np.flatnonzero(hit if mine is None else hit & mine)
        if idx.size:
            parts.append((idx, kind))
    if not parts:
        return None
    idx = np.concatenate([p[0] for p in parts])
    kinds = np.concatenate([np.full(p[0].size, p[1], dtype=object) for p in parts])
    order = np.argsort(idx, kind="stable")
    idx, kinds = idx[order], kinds[order]
    return {
        "ts": _ts(chunk.ts_ns[idx]),
        "packet": pa.array(chunk.index[idx]),
        "flow_id": pa.array(pf.flow_id[idx]),
        "direction": pa.array(_DIRS[pf.direction[idx]], type=pa.string()),
        "kind": pa.array(kinds, type=pa.string()),
        "seq": pa.array(pf.stream_offset[idx]),
        "length": pa.array(dec.payload_len[idx]),
    }


def _decode_anomaly_rows(dec: DecodedChunk, chunk: PacketChunk, pf: PacketFlows,
                         mine: np.ndarray | None = None) -> dict | None:
    bad = (dec.status != OK) & (dec.status != NOT_IP)
    idx = np.flatnonzero(bad if mine is None else bad & mine)
    if idx.size == 0:
        return None
    codes = np.array([STATUS[int(s)] for s in dec.status[idx]], dtype=object)
    layers = np.where(np.isin(dec.status[idx], [2, 3]), "link", "ip")
    layers = np.where(np.isin(dec.status[idx], [7, 8]), "tcp", layers)
    detail = np.array([f"packet {int(p)}" for p in chunk.index[idx]], dtype=object)
    return {
        "ts": _ts(chunk.ts_ns[idx]),
        "packet": pa.array(chunk.index[idx]),
        "flow_id": pa.array(pf.flow_id[idx]),
        "direction": pa.array([None] * idx.size, type=pa.string()),
        "layer": pa.array(layers.astype(object), type=pa.string()),
        "code": pa.array(codes, type=pa.string()),
        "detail": pa.array(detail, type=pa.string()),
        "stream_offset": pa.array([None] * idx.size, type=pa.int64()),
    }


def anomaly_rows(items: list[Anomaly]) -> dict:
    """Rows for ``anomalies`` from parser ``Anomaly`` events."""
    return {
        "ts": _ts(np.array([a.ts for a in items], dtype=np.int64)),
        "packet": pa.array([None] * len(items), type=pa.int64()),
        "flow_id": pa.array([a.flow_id for a in items], type=pa.int64()),
        "direction": pa.array([a.direction for a in items], type=pa.string()),
        "layer": pa.array([a.layer for a in items], type=pa.string()),
        "code": pa.array([a.code for a in items], type=pa.string()),
        "detail": pa.array([a.detail for a in items], type=pa.string()),
        "stream_offset": pa.array([a.stream_offset for a in items], type=pa.int64()),
    }


def _packet_rows(pf: PacketFlows, dec: DecodedChunk, chunk: PacketChunk) -> dict:
    return {
        "ts": _ts(chunk.ts_ns),
        "packet": pa.array(chunk.index),
        "flow_id": pa.array(pf.flow_id),
        "direction": pa.array(np.where(pf.flow_id >= 0, _DIRS[pf.direction], None),
                              type=pa.string()),
        "interface": pa.array(chunk.interface.astype(np.int32)),
        "wirelen": pa.array(chunk.wirelen),
        "caplen": pa.array(chunk.caplen),
        "proto": pa.array(dec.proto.astype(np.int16)),
        "flags": pa.array(dec.tcp_flags),
        "seq": pa.array(dec.seq),
        "ack": pa.array(dec.ack),
        "stream_offset": pa.array(pf.stream_offset),
        "window": pa.array(dec.window),
        "payload_length": pa.array(dec.payload_len),
        "analysis": pa.array(pf.flags),
    }


FLOW_SCHEMA = pa.schema([f for f in FLOWS if f.name != "capture_id"])
_END_TEXT = np.array([END_REASONS[k] for k in range(len(END_REASONS))], dtype=object)


def _ip_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Text form of address column pairs, one ``ip_to_str`` per distinct address."""
    if hi.size == 0:
        return pa.array([], type=pa.string())
    pairs = np.stack([hi, lo], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    text = pa.array([ip_to_str(h, lo_) for h, lo_ in uniq], type=pa.string())
    return text.take(pa.array(inverse.reshape(-1).astype(np.int64)))


def _flow_rows(c: dict[str, np.ndarray], app: dict[int, dict[str, object]]) -> pa.Table:
    """``flows`` rows (venue NULL) for the tracker's columns of retired flows."""
    fids = c["flow_id"]
    rtt = c["handshake_rtt_ns"]
    cols: dict[str, object] = {
        "flow_id": pa.array(fids.astype(np.int64)),
        "transport": pa.array(np.where(c["proto"] == 6, "tcp", "udp").astype(object)),
        "ip_version": pa.array(c["ip_version"].astype(np.int8)),
        "client_ip": _ip_strings(c["a_hi"], c["a_lo"]),
        "client_port": pa.array(c["client_port"].astype(np.int32)),
        "server_ip": _ip_strings(c["b_hi"], c["b_lo"]),
        "server_port": pa.array(c["server_port"].astype(np.int32)),
        "vlan": pa.array(c["vlan"].astype(np.int32), mask=c["vlan"] < 0),
        "first_ts": _ts(c["first_ts"]),
        "last_ts": _ts(c["last_ts"]),
        "duration_ns": pa.array(c["last_ts"] - c["first_ts"]),
        "first_packet": pa.array(c["first_index"]),
        "syn_seen": pa.array(c["syn_seen"]),
        "end_reason": pa.array(_END_TEXT[c["end"]], type=pa.string()),
        "handshake_rtt_ns": pa.array(rtt, mask=rtt < 0),
    }
    for name in ("packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out",
                 "payload_bytes_in", "retransmissions", "out_of_order", "gaps", "duplicate_acks"):
        cols[name] = pa.array(c[name])
    for name in ("app_protocol", "sni", "alpn", "alpn_offered", "tls_version", "tls_cipher",
                 "http_host", "ws_path", "venue"):
        if app:
            values = [app.get(i, {}).get(name) for i in fids.tolist()]
            cols[name] = pa.array(values, type=pa.string())
        else:
            cols[name] = pa.nulls(fids.size, type=pa.string())
    return pa.table(cols, schema=FLOW_SCHEMA)


def _with_venues(rows: pa.Table, venue: dict[int, str]) -> pa.Table:
    values = [venue.get(f) for f in rows.column("flow_id").to_pylist()]
    return rows.set_column(rows.schema.get_field_index("venue"), "venue",
                           pa.array(values, type=pa.string()))


def _has_app_data(info: dict[str, object]) -> bool:
    """Whether a flow may have message rows (the matcher needs it with them)."""
    return any(v is not None for k, v in info.items() if k != "app_protocol") or (
        info.get("app_protocol") not in (None, "unknown"))


class FlowRows:
    """Writes the ``flows`` rows of retired flows (see the module docstring)."""

    def __init__(self, staging: store.Staging, matcher: Matcher | None) -> None:
        self.staging = staging
        self.matcher = matcher
        self.batch: list[pa.Table] = []
        self.batch_rows = 0
        self._pending: pq.ParquetWriter | None = None
        worker = staging.part_prefix.rstrip("-")  # one side file per process
        self._pending_path = staging.dir / (
            f"_flows_with_app_data-{worker}.parquet" if worker else "_flows_with_app_data.parquet")
        self._no_messages = staging.dir / "_no_messages"

    def add(self, cols: dict[str, np.ndarray], app: dict[int, dict[str, object]]) -> None:
        rows = _flow_rows(cols, app)
        if self.matcher is None:
            self.staging.write("flows", rows)
            return
        later = {f for f, info in app.items() if _has_app_data(info)}
        if later:
            mask = pa.array(np.isin(cols["flow_id"], np.fromiter(later, np.int64, len(later))))
            if self._pending is None:
                self._pending = pq.ParquetWriter(self._pending_path, FLOW_SCHEMA)
            self._pending.write_table(rows.filter(mask))
            rows = rows.filter(pc.invert(mask))
        self.batch.append(rows)
        self.batch_rows += rows.num_rows
        if self.batch_rows >= FLOW_BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Venues of the flows without application-layer data, and their rows."""
        if not self.batch:
            return
        rows = pa.concat_tables(self.batch)
        self.batch, self.batch_rows = [], 0
        if rows.num_rows and self.matcher is not None:
            self._no_messages.mkdir(exist_ok=True)
            matched = self.matcher(self._no_messages, rows)
            rows = _with_venues(rows, matched.flow_venue)
            for table, out in matched.tables.items():
                self.staging.write(table, out)
        self.staging.write("flows", rows)

    def finish(self, *, final: bool = True, more: Sequence[Path] = ()) -> Path | None:
        """End of capture: the matcher's run over the message tables, last rows.

        A worker process of a sharded ingest (``final=False``) leaves its flows with
        application-layer data in their side file and returns its path (None: no
        such flows); the parent passes those files as ``more``, matched with its own.
        """
        self.flush()
        if self.matcher is None:
            return None
        parts = list(more)
        if self._pending is not None:
            self._pending.close()
            self._pending = None
            if not final:
                return self._pending_path
            parts.insert(0, self._pending_path)
        if not final:
            return None
        rows = pa.concat_tables([FLOW_SCHEMA.empty_table(), *(
            pq.read_table(p, schema=FLOW_SCHEMA) for p in parts)])
        for p in parts:
            p.unlink()
        self.staging.close_writers()  # the matcher reads the staged message tables
        matched = self.matcher(self.staging.dir, rows)
        self.staging.write("flows", _with_venues(rows, matched.flow_venue))
        for table, out in matched.tables.items():
            self.staging.write(table, out)


class Shard:
    """Which flows one process of a sharded ingest owns (module docstring).

    Every process keeps the same table, from the same packets: the owner of each
    TCP flow whose payload was seen and that is not retired yet (``rule``
    ``"balanced"``: the shard with the fewest payload bytes when the flow's first
    payload packet comes, ties to the last shard, as the parent has the matcher to
    run at the end; ``"modulo"``: ``flow_id % count``). Any other flow (no payload
    yet, UDP) is ``flow_id % count``'s; packets of no flow are shard 0's.

    It also bounds the application layer's open connections over all shards
    (``peak``), which no shard sees: a connection opens with its flow's first
    payload and is closed at the latest by a RST, or a FIN in both directions,
    from then on (``AppLayer._packet``), or when the tracker retires the flow.
    """

    def __init__(self, index: int, count: int, rule: str = "balanced") -> None:
        if rule not in ("balanced", "modulo"):
            raise ValueError(f"unknown shard rule {rule!r}")
        self.index = index
        self.count = count
        self.rule = rule
        self.owner: dict[int, int] = {}
        # ``owner`` as sorted arrays for ``_lookup``, rebuilt when it changed
        self._keys = np.zeros(0, np.int64)
        self._vals = np.zeros(0, np.int64)
        self._dirty = False
        self.load = np.zeros(count, np.int64)
        self.fins: dict[int, int] = {}  # FIN direction bits since the first payload
        self.ended: set[int] = set()  # RST, or FIN both ways, since the first payload
        self.open = 0
        """Flows of ``owner`` not ended: at least the open connections, all shards."""
        self.peak = 0
        """``open`` before the last chunk plus its new flows: at least the most
        connections open at once during that chunk."""

    def packets(self, dec: DecodedChunk, pf: PacketFlows) -> np.ndarray:
        """Take a chunk's flows in; per packet: does this process own it?"""
        fid = pf.flow_id
        tcp = (fid >= 0) & (dec.proto == IPPROTO_TCP)
        data = tcp & (dec.payload_caplen > 0)
        first_at: dict[int, int] = {}
        at = np.flatnonzero(data)
        known, owners = self._lookup(fid[at])
        if at.size and known.all():  # no new flow: the order of the sums does not matter
            self.load += np.bincount(owners, weights=dec.payload_caplen[at],
                                     minlength=self.count).astype(np.int64)
        elif at.size:
            flows, first, inverse = np.unique(fid[at], return_index=True, return_inverse=True)
            nbytes = np.bincount(inverse.reshape(-1), weights=dec.payload_caplen[at],
                                 minlength=flows.size).astype(np.int64).tolist()
            owner, load = self.owner, self.load
            for k in np.argsort(first, kind="stable").tolist():  # in order of appearance
                f = int(flows[k])
                s = owner.get(f)
                if s is None:
                    s = owner[f] = f % self.count if self.rule == "modulo" else (
                        self.count - 1 - int(np.argmin(load[::-1])))
                    self._dirty = True
                    first_at[f] = int(at[first[k]])
                load[s] += nbytes[k]
        self.peak = self.open + len(first_at)
        self.open += len(first_at)
        ends = np.flatnonzero(tcp & ((dec.tcp_flags & (FIN | RST)) != 0))
        for i, f, d, flags in zip(ends.tolist(), fid[ends].tolist(),
                                  pf.direction[ends].tolist(), dec.tcp_flags[ends].tolist(),
                                  strict=True):
            if f not in self.owner or f in self.ended or i < first_at.get(f, -1):
                continue
            bits = self.fins[f] = self.fins.get(f, 0) | (1 << d if flags & FIN else 0)
            if flags & RST or bits == 3:
                self.ended.add(f)
                self.open -= 1
        return self._mine(fid)

    def _mine(self, fid: np.ndarray) -> np.ndarray:
        """Per flow id: is it this process's? (A lookup in the sorted ``owner``
        arrays: a chunk has many packets and few flows, and a sort per chunk
        cost more than the rest of the sharding.)"""
        return self._lookup(fid)[1] == self.index

    def _lookup(self, fid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per flow id: is it in ``owner``, and its shard (``owner``'s, else the
        default: ``flow_id % count``, shard 0 for no flow)."""
        if self._dirty:
            self._keys = np.fromiter(self.owner.keys(), np.int64, len(self.owner))
            self._vals = np.fromiter(self.owner.values(), np.int64, len(self.owner))
            order = np.argsort(self._keys)
            self._keys, self._vals = self._keys[order], self._vals[order]
            self._dirty = False
        owners = np.where(fid >= 0, fid % self.count, 0)
        hit = np.zeros(fid.shape, np.bool_)
        if self._keys.size:
            pos = np.minimum(np.searchsorted(self._keys, fid), self._keys.size - 1)
            hit = self._keys[pos] == fid
            owners[hit] = self._vals[pos[hit]]
        return hit, owners

    def retire(self, flow_ids: np.ndarray) -> np.ndarray:
        """The tracker retired these flows: which are this process's (then forgotten)."""
        mine = self._mine(flow_ids)
        for f in flow_ids.tolist():
            if self.owner.pop(f, None) is not None:
                self._dirty = True
                self.fins.pop(f, None)
                if f in self.ended:
                    self.ended.discard(f)
                else:
                    self.open -= 1
        return mine


class _Unshardable(Exception):
    """The capture needs one process's view (see the module docstring)."""


def _message(obj: dict[str, object]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if isinstance(err, PcapflowError) else f"{type(err).__name__}: {text}"


class _ChildLink:
    """A worker process's side of its pipes to the parent."""

    def __init__(self, up: BinaryIO, down: BinaryIO) -> None:
        self.up, self.down = up, down

    def send(self, obj: dict[str, object]) -> None:
        self.up.write(_message(obj))
        self.up.flush()

    def agree_last(self, packet: int, ts: int) -> int:
        """Send the last packet this process's application layer took; get the
        time of the last one any process took."""
        self.send({"last": [packet, ts]})
        line = self.down.readline()
        if not line:
            raise PcapflowError("the parent process went away")
        return int(json.loads(line)["last_ts"])


@dataclass(slots=True)
class _Worker:
    pid: int
    index: int
    up: BinaryIO
    down: BinaryIO
    status: int | None = None


class _ParentLink:
    """The parent's side of the pipes to its workers."""

    def __init__(self, path: str, count: int) -> None:
        self.path = path
        self.count = count
        self.workers: list[_Worker] = []

    def _fail(self, w: _Worker, what: str) -> PcapflowError:
        return PcapflowError(f"{self.path}: worker process {w.index} of {self.count} failed: "
                             f"{what}", code="worker_failed")

    def _receive(self, w: _Worker, key: str) -> object:
        while not select.select([w.up], [], [], 0.1)[0]:
            interrupts.check()  # a safe point while the worker works
        line = w.up.readline()
        if not line:
            self.reap(w)
            status = w.status or 0
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.waitstatus_to_exitcode(status)}")
            raise self._fail(w, f"it ended without a result ({how})")
        msg = json.loads(line)
        if "fallback" in msg:
            raise _Unshardable(msg["fallback"])
        if "error" in msg:
            raise self._fail(w, str(msg["error"]))
        return msg[key]

    def agree_last(self, packet: int, ts: int) -> int:
        best = (packet, ts)
        for w in self.workers:
            p, t = self._receive(w, "last")  # type: ignore[misc]
            best = max(best, (int(p), int(t)))
        for w in self.workers:
            with contextlib.suppress(BrokenPipeError):  # gone: ``collect`` says how
                w.down.write(_message({"last_ts": best[1]}))
                w.down.flush()
        return best[1]

    def collect(self) -> list[dict[str, object]]:
        """Each worker's result, once it has closed its files (it then exits: ``close``
        waits for that after the commit)."""
        return [self._receive(w, "done") for w in self.workers]  # type: ignore[misc]

    def reap(self, w: _Worker, kill: bool = False) -> None:
        if w.status is not None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(w.pid, signal.SIGKILL)
        _pid, w.status = os.waitpid(w.pid, 0)
        interrupts.untrack(w.pid)

    def close(self, kill: bool) -> None:
        for w in self.workers:
            self.reap(w, kill=kill)
            for f in (w.up, w.down):
                with contextlib.suppress(OSError):
                    f.close()


def can_shard(path: str) -> bool:
    """Can this capture be ingested by several processes (a regular file)?"""
    if path == "-" or not hasattr(os, "fork"):
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def ingest_capture(
    path: str,
    data_dir: Path,
    *,
    packets_table: bool = False,
    app_layer: object | None = None,
    matcher: Matcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: ProgressFn | None = None,
    workers: int = 1,
    shard_rule: str = "balanced",
) -> IngestResult:
    """Ingest one capture into ``data_dir``; replaces that capture's partitions.

    ``app_layer`` is a factory ``(flow_tracker) -> AppLayer`` (see
    ``pipelines.connections``); ``None`` stops at the TCP layer. ``workers > 1``
    shards the capture's connections across that many processes (module
    docstring) when the application layer is on and ``path`` is a regular file;
    the tables are the same.
    """
    t0 = time.perf_counter()
    args = (path, packets_table, app_layer, matcher, progress)
    if workers > 1 and app_layer is not None and can_shard(path):
        try:
            return _ingest_sharded(args, data_dir, chunk_bytes, workers, shard_rule, t0)
        except _Unshardable:
            pass  # too many open connections to shard: one process, from the start
    staging = store.Staging(data_dir)
    try:
        with open_capture(path, chunk_bytes=chunk_bytes) as reader:
            result = _run(reader, staging, *args)
        result.seconds = time.perf_counter() - t0
        interrupts.check()
        staging.commit(result.capture_id)
        result.seconds = time.perf_counter() - t0
        return result
    except BaseException:
        staging.abort()
        raise


WARM_UP_BYTES = 1 << 18
"""Capture bytes the parent of a sharded ingest parses before it forks (``_warm_up``)."""


class _Discard:
    """A staging stand-in that keeps nothing (``_warm_up``)."""

    dir = None

    def write(self, table: str, batch: object) -> None:
        pass


def _warm_up(path: str, app_factory: Callable[[FlowTracker], object]) -> None:
    """Parse the start of the capture, keeping nothing, before forking: Numba sets
    itself up and loads each compiled kernel from its cache once per process, on
    first use (about half a second in all); done here, the workers inherit them
    instead of each paying it again. No thread is started, no file written; a
    failure here is left for the ingest itself to meet and report."""
    tracker = FlowTracker()
    app = app_factory(tracker)
    try:
        with open_capture(path, chunk_bytes=WARM_UP_BYTES, hash=False) as reader:
            for chunk in reader:
                if len(chunk):
                    dec = decode_chunk(chunk)
                    pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
                    app.process(chunk, dec, pf, _Discard(),  # type: ignore[attr-defined]
                                lambda items: None)
                break
    except Exception:  # only an optimisation
        pass


def _ingest_sharded(args: tuple, data_dir: Path, chunk_bytes: int, workers: int,
                    rule: str, t0: float) -> IngestResult:
    path = args[0]
    _warm_up(path, args[2])
    staging = store.Staging(data_dir)
    link = _ParentLink(str(path), workers)
    ok = False
    try:
        for k in range(1, workers):
            link.workers.append(_fork(k, workers, rule, args, staging, chunk_bytes, link))
        with open_capture(path, chunk_bytes=chunk_bytes) as reader:
            result = _run(reader, staging, *args, shard=Shard(0, workers, rule), link=link)
        result.seconds = time.perf_counter() - t0
        interrupts.check()
        staging.commit(result.capture_id)
        result.seconds = time.perf_counter() - t0
        ok = True
        return result
    except BaseException:
        link.close(kill=True)  # first: no worker writes into what abort removes
        staging.abort()
        raise
    finally:
        if ok:
            link.close(kill=False)


def _fork(k: int, count: int, rule: str, args: tuple, staging: store.Staging,
          chunk_bytes: int, link: _ParentLink) -> _Worker:
    """Start worker ``k``; in the child, ingest its shard and exit (never return)."""
    up_r, up_w = os.pipe()
    down_r, down_w = os.pipe()
    with warnings.catch_warnings():  # Python 3.12+ warns on fork with threads alive
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers
            os.close(up_r)
            os.close(down_w)
            for w in link.workers:  # the other workers' pipes: theirs and the parent's
                os.close(w.up.fileno())
                os.close(w.down.fileno())
            up = os.fdopen(up_w, "wb")
            child = _ChildLink(up, os.fdopen(down_r, "rb"))
            try:
                staging.part_prefix = f"w{k}-"
                # the parent hashes the file: the workers only read it
                with open_capture(args[0], chunk_bytes=chunk_bytes, hash=False) as reader:
                    _run(reader, staging, *args[:4], None, shard=Shard(k, count, rule),
                         link=child)
                code = 0
            except _Unshardable as err:
                child.send({"fallback": str(err)})
            except BaseException as err:
                child.send({"error": _one_line(err)})
        except BaseException:
            pass
        finally:
            os._exit(code)
    interrupts.track(pid)
    os.close(up_w)
    os.close(down_r)
    return _Worker(pid, k, os.fdopen(up_r, "rb"), os.fdopen(down_w, "wb"))


def _run(reader, staging, path, packets_table, app_factory, matcher, progress,
         shard: Shard | None = None,
         link: _ParentLink | _ChildLink | None = None) -> IngestResult | None:
    tracker = FlowTracker()
    app = app_factory(tracker) if app_factory is not None else None
    first_ts, last_ts = None, None
    anomaly_codes: dict[str, int] = {}
    first_shard = shard is None or shard.index == 0
    max_open = getattr(getattr(app, "limits", None), "max_open_connections", None)
    parent = os.getppid() if isinstance(link, _ChildLink) else None

    def add_anomalies(items: list[Anomaly]) -> None:
        if items:
            staging.write("anomalies", anomaly_rows(items))
            for a in items:
                anomaly_codes[a.code] = anomaly_codes.get(a.code, 0) + 1

    flows = FlowRows(staging, matcher)

    def write_retired(cols: dict[str, np.ndarray] | None) -> None:
        if cols is None:
            return
        if shard is not None:
            keep = shard.retire(cols["flow_id"])
            if not keep.all():
                if not keep.any():
                    return
                cols = {k: v[keep] for k, v in cols.items()}
        evicted = np.flatnonzero(cols["evicted"])
        add_anomalies([Anomaly(
            ts=int(cols["last_ts"][k]), flow_id=int(cols["flow_id"][k]), direction=None,
            layer="tcp", code="flow_evicted",
            detail=f"more than {tracker.max_flows} flows held: this idle one was retired "
            "early; a later packet of it starts a new flow") for k in evicted.tolist()])
        fids = cols["flow_id"].tolist()
        info = app.retire(fids, staging, add_anomalies) if app is not None else {}
        flows.add(cols, info)

    capture_problems: list[str] = []
    for chunk in reader:
        if first_shard:
            add_anomalies(chunk.anomalies)
            capture_problems += [f"{a.code}: {a.detail}" for a in chunk.anomalies
                                 if a.layer == "capture"]
        if len(chunk) == 0:
            continue
        dec = decode_chunk(chunk)
        pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
        mine = None
        if shard is not None:
            mine = shard.packets(dec, pf)
            if max_open is not None and shard.peak > max_open:
                raise _Unshardable(f"more than {max_open} connections with payload held")
            if parent is not None and os.getppid() != parent:
                raise PcapflowError("the parent process went away")
        lo, hi = int(chunk.ts_ns.min()), int(chunk.ts_ns.max())
        first_ts = lo if first_ts is None else min(first_ts, lo)
        last_ts = hi if last_ts is None else max(last_ts, hi)
        rows = _tcp_event_rows(pf, dec, chunk, mine)
        if rows:
            staging.write("tcp_events", rows)
        rows = _decode_anomaly_rows(dec, chunk, pf, mine)
        if rows:
            staging.write("anomalies", rows)
            for code in rows["code"].to_pylist():
                anomaly_codes[code] = anomaly_codes.get(code, 0) + 1
        if packets_table:
            rows = _packet_rows(pf, dec, chunk)
            if mine is not None:
                keep = pa.array(mine)
                rows = {k: v.filter(keep) for k, v in rows.items()}
            staging.write("packets", rows)
        if app is not None:
            app.process(chunk, dec, pf, staging, add_anomalies, mine)
        # after the application layer has seen this chunk's packets of them
        write_retired(tracker.take_retired())
        if progress is not None:
            progress(reader.bytes_read, reader.packets)
        interrupts.check()  # between chunks: no kernel is running (see pipelines.interrupts)
    if app is not None:
        if link is not None:  # the connections still open close at the same time everywhere
            app.last_ts = link.agree_last(app.last_packet, app.last_ts)
        app.finish(staging, add_anomalies)
    write_retired(tracker.finish())
    if isinstance(link, _ChildLink):
        pending = flows.finish(final=False)
        staging.close_writers()
        link.send({"done": {"rows": staging.rows, "anomaly_codes": anomaly_codes,
                            "pending": str(pending) if pending is not None else None}})
        return None
    more: list[Path] = []
    child_rows: dict[str, int] = {}
    if link is not None:
        for part in link.collect():
            if part["pending"] is not None:
                more.append(Path(part["pending"]))  # type: ignore[arg-type]
            for name, n in part["anomaly_codes"].items():  # type: ignore[attr-defined]
                anomaly_codes[name] = anomaly_codes.get(name, 0) + n
            for name, n in part["rows"].items():  # type: ignore[attr-defined]
                child_rows[name] = child_rows.get(name, 0) + n
    interrupts.check()
    flows.finish(more=more)
    sha = reader.sha256
    capture_id = reader.content_sha256[:16]  # one id for the capture plain or compressed
    now = time.time_ns()
    staging.write("captures", {
        "path": pa.array([str(path)]),
        "sha256": pa.array([sha]),
        "format": pa.array([reader.format]),
        "compression": pa.array([reader.compression], type=pa.string()),
        "link_types": pa.array([list(reader.link_types)], type=pa.list_(pa.int32())),
        "packets": pa.array([reader.packets], type=pa.int64()),
        "bytes": pa.array([reader.bytes_read], type=pa.int64()),
        "first_ts": _ts(np.array([first_ts if first_ts is not None else 0])),
        "last_ts": _ts(np.array([last_ts if last_ts is not None else 0])),
        "flows": pa.array([tracker.n_flows], type=pa.int64()),
        "anomalies": pa.array([sum(anomaly_codes.values())], type=pa.int64()),
        "ingested_at": _ts(np.array([now])),
        "pcapflow_version": pa.array([__version__]),
    })
    return IngestResult(
        path=str(path), capture_id=capture_id, sha256=sha, format=reader.format,
        packets=reader.packets, bytes=reader.bytes_read, flows=tracker.n_flows, seconds=0.0,
        rows={**staging.rows, **{t: staging.rows.get(t, 0) + n for t, n in child_rows.items()}},
        anomaly_codes=anomaly_codes,
        capture_problems=capture_problems,
    )
