"""Test helper: build small message tables (as an ingest stages them) and match them.

``Wire`` records messages on connections with explicit nanosecond times and
stream offsets, writes them as ``<stage>/<table>/part-0.parquet`` with the
declared schemas (no capture_id, as in staging), and runs
``pipelines.match.match_staged`` with the venue registry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pcapflow.pipelines.match import MatchOutput, match_staged
from pcapflow.pipelines.tables.schemas import TABLES

from pcapflow.venues import VenueRegistry

T0 = 1_800_000_000_000_000_000


def schema_of(table: str) -> pa.Schema:
    return pa.schema([f for f in TABLES[table] if f.name != "capture_id"])


@dataclass
class Flow:
    flow_id: int
    sni: str | None = None
    http_host: str | None = None
    app_protocol: str = "tls/http"
    server_ip: str = "10.0.0.1"
    server_port: int = 443
    tls_version: str | None = "1.3"
    alpn: str | None = None
    offsets: dict[str, int] = field(default_factory=lambda: {"out": 0, "in": 0})

    def advance(self, direction: str, n: int) -> int:
        off = self.offsets[direction]
        self.offsets[direction] += n
        return off


class Wire:
    """Messages of one capture, in the shapes of the staged message tables."""

    def __init__(self) -> None:
        self.flows: list[Flow] = []
        self.rows: dict[str, list[dict]] = {t: [] for t in (
            "http_messages", "ws_messages", "fix_messages", "tls_records", "tcp_rtt")}
        self.requests: dict[int, int] = {}

    def flow(self, **kw: object) -> Flow:
        f = Flow(flow_id=len(self.flows), **kw)  # type: ignore[arg-type]
        self.flows.append(f)
        return f

    def _base(self, f: Flow, direction: str, t_us: float, size: int) -> dict:
        ts = T0 + int(t_us * 1000)
        return {"ts_first": ts - 1000, "ts_last": ts, "flow_id": f.flow_id,
                "direction": direction, "stream_offset": f.advance(direction, size)}

    def http(self, f: Flow, t_us: float, *, method: str | None = None, path: str = "/",
             status: int | None = None, body: object = None, content_type: str | None = None,
             index: int | None = None) -> None:
        """A request (``method`` given) or a response (``status`` given)."""
        text = body if isinstance(body, str) or body is None else json.dumps(body)
        direction = "out" if method else "in"
        if method:
            index = self.requests.get(f.flow_id, 0) if index is None else index
            self.requests[f.flow_id] = index + 1
        elif index is None:
            index = sum(1 for r in self.rows["http_messages"]
                        if r["flow_id"] == f.flow_id and r["kind"] == "response")
        row = self._base(f, direction, t_us, 100 + len(text or ""))
        row |= {"kind": "request" if method else "response", "request_index": index,
                "method": method, "path": path if method else None, "status": status,
                "content_type": content_type or ("application/json" if text else None),
                "body": text, "version": "HTTP/1.1"}
        self.rows["http_messages"].append(row)

    def ws(self, f: Flow, t_us: float, direction: str, payload: object) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        row = self._base(f, direction, t_us, len(text) + 6)
        row |= {"opcode": "text", "fin": True, "frames": 1, "compressed": False,
                "masked": direction == "out", "payload": text, "message_length": len(text)}
        self.rows["ws_messages"].append(row)

    def fix(self, f: Flow, t_us: float, direction: str, msg: str) -> None:
        """``msg`` is tag=value pairs separated by ``|``."""
        pairs = [p.split("=", 1) for p in msg.strip("|").split("|")]
        tags = {int(k): v for k, v in pairs}
        row = self._base(f, direction, t_us, len(msg))
        row |= {"begin_string": "FIX.4.4", "msg_type": tags.get(35),
                "seq_num": int(tags.get(34, 0)), "sender_comp_id": tags.get(49),
                "target_comp_id": tags.get(56), "cl_ord_id": tags.get(11),
                "orig_cl_ord_id": tags.get(41), "order_id": tags.get(37),
                "exec_type": tags.get(150), "ord_status": tags.get(39),
                "poss_dup": tags.get(43) == "Y",
                "fields": [{"tag": int(k), "value": v} for k, v in pairs]}
        self.rows["fix_messages"].append(row)

    def tls(self, f: Flow, t_us: float, direction: str, length: int,
            content_type: int = 23, decrypted: bool = False) -> None:
        row = self._base(f, direction, t_us, length)
        row |= {"content_type": content_type, "length": length, "decrypted": decrypted}
        self.rows["tls_records"].append(row)

    def rtt(self, f: Flow, t_us: float, rtt_ns: int) -> None:
        ts = T0 + int(t_us * 1000)
        self.rows["tcp_rtt"].append({"flow_id": f.flow_id, "direction": "out", "ts_sent": ts,
                                     "ts_ack": ts + rtt_ns, "rtt_ns": rtt_ns})

    def flows_table(self) -> pa.Table:
        rows = [{"flow_id": f.flow_id, "transport": "tcp", "server_ip": f.server_ip,
                 "server_port": f.server_port, "client_ip": "10.9.9.9",
                 "client_port": 40000 + f.flow_id, "sni": f.sni, "http_host": f.http_host,
                 "app_protocol": f.app_protocol, "tls_version": f.tls_version,
                 "alpn": f.alpn} for f in self.flows]
        return pa.Table.from_pylist(rows, schema=schema_of("flows"))

    def write(self, stage: Path) -> None:
        for table, rows in self.rows.items():
            if rows:
                (stage / table).mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pylist(rows, schema=schema_of(table)),
                               stage / table / "part-0.parquet")

    def match(self, stage: Path, registry: VenueRegistry | None = None) -> MatchOutput:
        self.write(stage)
        return match_staged(stage, self.flows_table(), registry or VenueRegistry())


def rows(out: MatchOutput, table: str, **where: object) -> list[dict]:
    """Rows of an output table (optionally filtered by column values), by time."""
    t = out.tables[table]
    for i, f in enumerate(t.schema):  # timestamps as int64 ns (no datetime rounding)
        if pa.types.is_timestamp(f.type):
            t = t.set_column(i, f.name, t.column(i).cast(pa.int64()))
    items = t.to_pylist()
    items = [r for r in items if all(r.get(k) == v for k, v in where.items())]
    key = "order_ts" if table == "latency" else "ts"
    return sorted(items, key=lambda r: (r[key], r["flow_id"], r.get("leg") or ""))
