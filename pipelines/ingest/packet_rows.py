"""Per-packet rows of one chunk: ``tcp_events``, decode ``anomalies`` and (opt-in)
``packets``, built with NumPy masks over the chunk's columns, never a Python loop
over packets; and ``anomalies`` rows from parser ``Anomaly`` events."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ...parsers.capture.chunk import PacketChunk
from ...parsers.decode import NOT_IP, OK, STATUS, STATUS_LAYER, DecodedChunk
from ...parsers.events import DIRECTIONS, Anomaly
from ...parsers.protocols.columns import ts_array
from ...parsers.tcp.analysis import EVENT_KINDS, PacketFlows

Rows = dict[str, Any]
"""Column name -> array, in the table's column order (``store.Staging.write``)."""

_DIRS = np.array(DIRECTIONS, dtype=object)
_DIRS_PA = pa.array(DIRECTIONS, pa.string())  # by direction code 0 / 1
_KINDS_PA = pa.array(list(EVENT_KINDS.values()), pa.string())  # by position in EVENT_KINDS
_STATUS_CODE = np.array([STATUS.get(s) for s in range(max(STATUS) + 1)], dtype=object)
_STATUS_LAYER = np.array([STATUS_LAYER.get(s) for s in range(max(STATUS) + 1)], dtype=object)


def tcp_event_rows(pf: PacketFlows, dec: DecodedChunk, chunk: PacketChunk,
                    mine: np.ndarray | None = None) -> Rows | None:
    """One row per packet and analysis flag it has, in packet order (a packet's kinds
    in ``EVENT_KINDS`` order). Only the few flagged packets are looked at after the
    first mask; ``direction`` and ``kind`` are taken from small string arrays by code."""
    flagged = pf.flags != 0
    at = np.flatnonzero(flagged if mine is None else flagged & mine)
    if not at.size:
        return None
    bits = pf.flags[at]
    parts = []
    codes = []
    for code, bit in enumerate(EVENT_KINDS):
        hit = np.flatnonzero(bits & bit)
        if hit.size:
            parts.append(at[hit])
            codes.append(np.full(hit.size, code, np.int8))
    if not parts:
        return None
    idx = np.concatenate(parts)
    kinds = np.concatenate(codes)
    order = np.argsort(idx, kind="stable")
    idx, kinds = idx[order], kinds[order]
    return {
        "ts": ts_array(chunk.ts_ns[idx]),
        "packet": pa.array(chunk.index[idx]),
        "flow_id": pa.array(pf.flow_id[idx]),
        "direction": _DIRS_PA.take(pa.array(pf.direction[idx])),
        "kind": _KINDS_PA.take(pa.array(kinds)),
        "stream_offset": pa.array(pf.stream_offset[idx]),
        "payload_length": pa.array(dec.payload_len[idx]),
    }


def decode_anomaly_rows(dec: DecodedChunk, chunk: PacketChunk, pf: PacketFlows,
                         mine: np.ndarray | None = None) -> Rows | None:
    bad = (dec.status != OK) & (dec.status != NOT_IP)
    idx = np.flatnonzero(bad if mine is None else bad & mine)
    if idx.size == 0:
        return None
    status = dec.status[idx]
    codes = _STATUS_CODE[status]
    layers = _STATUS_LAYER[status]
    detail = np.array([f"packet {int(p)}" for p in chunk.index[idx]], dtype=object)
    return {
        "ts": ts_array(chunk.ts_ns[idx]),
        "packet": pa.array(chunk.index[idx]),
        "flow_id": pa.array(pf.flow_id[idx]),
        "direction": pa.array([None] * idx.size, type=pa.string()),
        "layer": pa.array(layers, type=pa.string()),
        "code": pa.array(codes, type=pa.string()),
        "detail": pa.array(detail, type=pa.string()),
        "stream_offset": pa.array([None] * idx.size, type=pa.int64()),
    }


def anomaly_rows(items: list[Anomaly]) -> Rows:
    """Rows for ``anomalies`` from parser ``Anomaly`` events."""
    return {
        "ts": ts_array(np.array([a.ts for a in items], dtype=np.int64)),
        "packet": pa.array([None] * len(items), type=pa.int64()),
        "flow_id": pa.array([a.flow_id for a in items], type=pa.int64()),
        "direction": pa.array([a.direction for a in items], type=pa.string()),
        "layer": pa.array([a.layer for a in items], type=pa.string()),
        "code": pa.array([a.code for a in items], type=pa.string()),
        "detail": pa.array([a.detail for a in items], type=pa.string()),
        "stream_offset": pa.array([a.stream_offset for a in items], type=pa.int64()),
    }


def packet_rows(pf: PacketFlows, dec: DecodedChunk, chunk: PacketChunk) -> Rows:
    return {
        "ts": ts_array(chunk.ts_ns),
        "packet": pa.array(chunk.index),
        "flow_id": pa.array(pf.flow_id),
        "direction": pa.array(np.where(pf.flow_id >= 0, _DIRS[pf.direction], None),
                              type=pa.string()),
        "interface": pa.array(chunk.interface.astype(np.int32)),
        "file": pa.array(chunk.file if chunk.file is not None
                         else np.zeros(len(chunk), np.int32), type=pa.int32()),
        "file_packet": pa.array(chunk.file_packet if chunk.file_packet is not None
                                else chunk.index, type=pa.int64()),
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
