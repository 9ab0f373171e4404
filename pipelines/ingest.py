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
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .. import __version__
from ..parsers.capture import open_capture
from ..parsers.capture.reader import DEFAULT_CHUNK_BYTES
from ..parsers.capture.chunk import PacketChunk
from ..parsers.decode import NOT_IP, OK, STATUS, DecodedChunk, decode_chunk, ip_to_str
from ..parsers.events import Anomaly
from ..parsers.tcp.analysis import END_REASONS, EVENT_KINDS, FlowTracker, PacketFlows
from . import store
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


def _tcp_event_rows(pf: PacketFlows, dec: DecodedChunk, chunk: PacketChunk) -> dict | None:
    parts: list[tuple[np.ndarray, str]] = []
    for bit, kind in EVENT_KINDS.items():
        idx = np.flatnonzero(pf.flags & bit)
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


def _decode_anomaly_rows(dec: DecodedChunk, chunk: PacketChunk, pf: PacketFlows) -> dict | None:
    idx = np.flatnonzero((dec.status != OK) & (dec.status != NOT_IP))
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
    for name in ("app_protocol", "sni", "alpn", "tls_version", "tls_cipher", "http_host",
                 "ws_path", "venue"):
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
        self._pending_path = staging.dir / "_flows_with_app_data.parquet"
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

    def finish(self) -> None:
        """End of capture: the matcher's run over the message tables, last rows."""
        self.flush()
        if self.matcher is None:
            return
        if self._pending is not None:
            self._pending.close()
            self._pending = None
            rows = pq.read_table(self._pending_path, schema=FLOW_SCHEMA)
            self._pending_path.unlink()
        else:
            rows = FLOW_SCHEMA.empty_table()
        self.staging.close_writers()  # the matcher reads the staged message tables
        matched = self.matcher(self.staging.dir, rows)
        self.staging.write("flows", _with_venues(rows, matched.flow_venue))
        for table, out in matched.tables.items():
            self.staging.write(table, out)


def ingest_capture(
    path: str,
    data_dir: Path,
    *,
    packets_table: bool = False,
    app_layer: object | None = None,
    matcher: Matcher | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: ProgressFn | None = None,
) -> IngestResult:
    """Ingest one capture into ``data_dir``; replaces that capture's partitions.

    ``app_layer`` is a factory ``(flow_tracker) -> AppLayer`` (see
    ``pipelines.connections``); ``None`` stops at the TCP layer.
    """
    t0 = time.perf_counter()
    staging = store.Staging(data_dir)
    try:
        with open_capture(path, chunk_bytes=chunk_bytes) as reader:
            result = _run(reader, staging, path, packets_table, app_layer, matcher, progress)
        result.seconds = time.perf_counter() - t0
        staging.commit(result.capture_id)
        result.seconds = time.perf_counter() - t0
        return result
    except BaseException:
        staging.abort()
        raise


def _run(reader, staging, path, packets_table, app_factory, matcher, progress) -> IngestResult:
    tracker = FlowTracker()
    app = app_factory(tracker) if app_factory is not None else None
    first_ts, last_ts = None, None
    anomaly_codes: dict[str, int] = {}

    def add_anomalies(items: list[Anomaly]) -> None:
        if items:
            staging.write("anomalies", anomaly_rows(items))
            for a in items:
                anomaly_codes[a.code] = anomaly_codes.get(a.code, 0) + 1

    flows = FlowRows(staging, matcher)

    def write_retired(cols: dict[str, np.ndarray] | None) -> None:
        if cols is None:
            return
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
        add_anomalies(chunk.anomalies)
        capture_problems += [f"{a.code}: {a.detail}" for a in chunk.anomalies
                             if a.layer == "capture"]
        if len(chunk) == 0:
            continue
        dec = decode_chunk(chunk)
        pf = tracker.process(dec, chunk.ts_ns, chunk.wirelen, chunk.index)
        lo, hi = int(chunk.ts_ns.min()), int(chunk.ts_ns.max())
        first_ts = lo if first_ts is None else min(first_ts, lo)
        last_ts = hi if last_ts is None else max(last_ts, hi)
        rows = _tcp_event_rows(pf, dec, chunk)
        if rows:
            staging.write("tcp_events", rows)
        rows = _decode_anomaly_rows(dec, chunk, pf)
        if rows:
            staging.write("anomalies", rows)
            for code in rows["code"].to_pylist():
                anomaly_codes[code] = anomaly_codes.get(code, 0) + 1
        if packets_table:
            staging.write("packets", _packet_rows(pf, dec, chunk))
        if app is not None:
            app.process(chunk, dec, pf, staging, add_anomalies)
        # after the application layer has seen this chunk's packets of them
        write_retired(tracker.take_retired())
        if progress is not None:
            progress(reader.bytes_read, reader.packets)
    if app is not None:
        app.finish(staging, add_anomalies)
    write_retired(tracker.finish())
    flows.finish()
    sha = reader.sha256
    capture_id = sha[:16]
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
        rows=dict(staging.rows), anomaly_codes=anomaly_codes,
        capture_problems=capture_problems,
    )
