"""Capture file -> Parquet tables of one capture, committed atomically.

How this works: the capture is read in bounded chunks; each chunk is decoded
(``parsers.decode``), assigned to flows and analysed (``parsers.tcp.analysis``)
with compiled kernels, and its per-packet results become rows of
``tcp_events``, ``anomalies`` and (opt-in) ``packets`` through NumPy masks, never
a Python loop over packets. TCP payload of each connection goes to the
application layer (``pipelines.connections``), which reassembles and parses it.
At the end the per-flow state becomes the ``flows`` table and one ``captures``
row is written; ``store.Staging.commit`` then swaps the capture's partitions in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import __version__
from ..parsers.capture import open_capture
from ..parsers.capture.chunk import PacketChunk
from ..parsers.decode import NOT_IP, OK, STATUS, DecodedChunk, decode_chunk, ip_to_str
from ..parsers.events import Anomaly
from ..parsers.tcp.analysis import END_REASONS, EVENT_KINDS, FlowTracker, PacketFlows
from . import store
from .schemas import FLOWS, TS

Matcher = Callable[[Path, pa.Table], "MatchOutput"]
"""Called with the staging directory (message tables readable as Parquet) and the
flows table; returns the venue of each flow and the orders/acks/latency tables."""


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


def _flow_table(tracker: FlowTracker, app: dict[int, dict[str, object]]) -> pa.Table:
    c = tracker.flow_columns()
    n = tracker.n_flows
    client_ip = [ip_to_str(h, lo) for h, lo in zip(c["a_hi"], c["a_lo"], strict=True)]
    server_ip = [ip_to_str(h, lo) for h, lo in zip(c["b_hi"], c["b_lo"], strict=True)]
    rtt = c["handshake_rtt_ns"]
    cols: dict[str, object] = {
        "flow_id": pa.array(np.arange(n, dtype=np.int64)),
        "transport": pa.array(np.where(c["proto"] == 6, "tcp", "udp").astype(object)),
        "ip_version": pa.array(c["ip_version"].astype(np.int8)),
        "client_ip": pa.array(client_ip, type=pa.string()),
        "client_port": pa.array(c["client_port"].astype(np.int32)),
        "server_ip": pa.array(server_ip, type=pa.string()),
        "server_port": pa.array(c["server_port"].astype(np.int32)),
        "vlan": pa.array(c["vlan"].astype(np.int32), mask=c["vlan"] < 0),
        "first_ts": _ts(c["first_ts"]),
        "last_ts": _ts(c["last_ts"]),
        "duration_ns": pa.array(c["last_ts"] - c["first_ts"]),
        "first_packet": pa.array(c["first_index"]),
        "syn_seen": pa.array(c["syn_seen"]),
        "end_reason": pa.array([END_REASONS[int(e)] for e in c["end"]], type=pa.string()),
        "handshake_rtt_ns": pa.array(rtt, mask=rtt < 0),
    }
    for name in ("packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out",
                 "payload_bytes_in", "retransmissions", "out_of_order", "gaps", "duplicate_acks"):
        cols[name] = pa.array(c[name])
    for name in ("app_protocol", "sni", "alpn", "tls_version", "tls_cipher", "http_host",
                 "ws_path", "venue"):
        cols[name] = pa.array([app.get(i, {}).get(name) for i in range(n)], type=pa.string())
    schema = pa.schema([f for f in FLOWS if f.name != "capture_id"])
    return pa.table(cols, schema=schema)


def ingest_capture(
    path: str,
    data_dir: Path,
    *,
    packets_table: bool = False,
    app_layer: object | None = None,
    matcher: Matcher | None = None,
    chunk_bytes: int = 32 << 20,
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
        if progress is not None:
            progress(reader.bytes_read, reader.packets)
    flow_info: dict[int, dict[str, object]] = {}
    if app is not None:
        flow_info = app.finish(staging, add_anomalies)
    flows = _flow_table(tracker, flow_info)
    if matcher is not None:
        staging.close_writers()  # the matcher reads the staged message tables
        matched = matcher(staging.dir, flows)
        venues = [matched.flow_venue.get(i) for i in range(flows.num_rows)]
        flows = flows.set_column(flows.schema.get_field_index("venue"), "venue",
                                 pa.array(venues, type=pa.string()))
        for table, rows in matched.tables.items():
            staging.write(table, rows)
    staging.write("flows", flows)
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
