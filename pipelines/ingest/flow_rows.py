"""The ``flows`` table: rows of retired flows, their venues, written in batches.

How this works. The ``flows`` table is written as flows are retired, not at the end, so memory
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

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ...parsers.decode import IPPROTO_TCP, ip_to_str
from ...parsers.protocols.columns import ts_array
from ...parsers.tcp.analysis import END_REASONS
from .. import store
from ..tables.rows import with_venues
from ..tables.schemas import FLOWS, without_capture_id

if TYPE_CHECKING:
    from ..match import Matcher

# Rows of flows without application-layer data resolved and written at once.
FLOW_BATCH_ROWS = 1 << 16
APP_COLUMNS = ("app_protocol", "sni", "alpn", "alpn_offered", "tls_version", "tls_cipher",
               "tls_keylog", "http_host", "ws_path", "venue", "venue_source")
"""``flows`` columns the application layer (``AppLayer.retire``) and the matcher fill."""

FLOW_SCHEMA = without_capture_id(FLOWS)
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
        "transport": pa.array(np.where(c["proto"] == IPPROTO_TCP, "tcp", "udp").astype(object)),
        "ip_version": pa.array(c["ip_version"].astype(np.int8)),
        "client_ip": _ip_strings(c["a_hi"], c["a_lo"]),
        "client_port": pa.array(c["client_port"].astype(np.int32)),
        "server_ip": _ip_strings(c["b_hi"], c["b_lo"]),
        "server_port": pa.array(c["server_port"].astype(np.int32)),
        "vlan": pa.array(c["vlan"].astype(np.int32), mask=c["vlan"] < 0),
        "first_ts": ts_array(c["first_ts"]),
        "last_ts": ts_array(c["last_ts"]),
        "duration_ns": pa.array(c["last_ts"] - c["first_ts"]),
        "first_packet": pa.array(c["first_index"]),
        "syn_seen": pa.array(c["syn_seen"]),
        "end_reason": pa.array(_END_TEXT[c["end"]], type=pa.string()),
        "handshake_rtt_ns": pa.array(rtt, mask=rtt < 0),
    }
    for name in ("packets_out", "packets_in", "bytes_out", "bytes_in", "payload_bytes_out",
                 "payload_bytes_in", "retransmissions", "out_of_order", "gaps", "duplicate_acks"):
        cols[name] = pa.array(c[name])
    for name in APP_COLUMNS:
        if app:
            values = [app.get(i, {}).get(name) for i in fids.tolist()]
            cols[name] = pa.array(values, type=pa.string())
        else:
            cols[name] = pa.nulls(fids.size, type=pa.string())
    return pa.table(cols, schema=FLOW_SCHEMA)


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
            rows = with_venues(rows, matched.flow_venue, matched.flow_venue_source)
            for table, out in matched.tables.items():
                self.staging.write(table, out)
        self.staging.write("flows", rows)

    def finish(self, *, final: bool = True, more: Sequence[Path] = (),
               capture_id: str | None = None) -> Path | None:
        """End of capture: the matcher's run over the message tables, last rows.

        A worker process of a sharded ingest (``final=False``) leaves its flows with
        application-layer data in their side file and returns its path (None: no
        such flows); the parent passes those files as ``more``, matched with its own.
        ``capture_id`` goes to the matcher (which may derive tables: ``Matcher``).
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
        matched = self.matcher(self.staging.dir, rows, capture_id)
        self.staging.write(
            "flows", with_venues(rows, matched.flow_venue, matched.flow_venue_source))
        for table, out in matched.tables.items():
            self.staging.write(table, out)
        return None
