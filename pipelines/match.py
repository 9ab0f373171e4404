"""Order/ack matching: runs the SQL in ``pipelines/sql/`` over one capture's tables.

How this works. One in-memory DuckDB connection gets a view per message table
(``http_messages``, ``ws_messages``, ``fix_messages``, ``tls_records``,
``tcp_rtt``; an absent table is an empty one with its declared columns), the
venue rule tables of ``venue_rules`` and ``flow_rules``: each flow's venue and
dialect as the registry (a ``venue_rules.Resolver``) decides from its SNI,
HTTP Host, address, port and FIX comp ids. The SQL files then run in
``SQL_FILES`` order, each building temp tables from the ones before; the
last one leaves ``out_orders``, ``out_acks``, ``out_latency`` and
``out_unmatched``, which are cast to the declared schemas. Python only
orchestrates: every pairing decision is in the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import store
from .ingest import MatchOutput
from .schemas import ACKS, LATENCY, ORDERS, TABLES, UNMATCHED
from .venue_rules import FlowFacts, Resolver, rule_tables

MESSAGE_TABLES = ("http_messages", "ws_messages", "fix_messages", "tls_records")
INPUT_TABLES = ("http_messages", "ws_messages", "fix_messages", "tls_records", "tcp_rtt")
SQL_FILES = ("common", "rest", "websocket", "fix", "encrypted", "combine", "engine",
             "latency")
OUTPUTS = {"orders": ("out_orders", ORDERS), "acks": ("out_acks", ACKS),
           "latency": ("out_latency", LATENCY), "unmatched": ("out_unmatched", UNMATCHED)}

_FLOW_RULES = pa.schema([
    ("flow_id", pa.int64()), ("venue", pa.string()), ("dialect", pa.string()),
    ("protocol_hint", pa.string()), ("app_protocol", pa.string()),
    ("tls_version", pa.string()), ("alpn", pa.string()),
])


def sql_text(name: str) -> str:
    """The text of ``pipelines/sql/<name>.sql`` (shipped as package data)."""
    return (resources.files(__package__) / "sql" / f"{name}.sql").read_text()


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _without_capture_id(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name != "capture_id"])


def _load_inputs(con: duckdb.DuckDBPyConnection, files: Mapping[str, Sequence[Path]]) -> None:
    """A view per input table with its declared columns; missing columns (files
    written by an older pcapflow) read as NULL of their declared type."""
    for table in INPUT_TABLES:
        schema = _without_capture_id(TABLES[table])
        con.register(f"_empty_{table}", pa.Table.from_pylist([], schema=schema))
        paths = [p for p in files.get(table, ()) if p.exists()]
        source = f"SELECT * FROM _empty_{table}"
        if paths:
            listing = ", ".join(_sql_str(str(p)) for p in paths)
            source += (f" UNION ALL BY NAME SELECT * FROM read_parquet([{listing}], "
                       "union_by_name = true)")
        cols = ", ".join(f'"{f.name}"' for f in schema)
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {cols} FROM ({source})")


def _comp_ids(con: duckdb.DuckDBPyConnection) -> dict[int, tuple[str | None, str | None]]:
    """SenderCompID / TargetCompID of each FIX flow's first outbound message."""
    rows = con.execute(
        "SELECT flow_id, arg_min(sender_comp_id, ts_last), arg_min(target_comp_id, ts_last) "
        "FROM fix_messages WHERE direction = 'out' GROUP BY flow_id").fetchall()
    return {int(f): (s, t) for f, s, t in rows}


def flow_rules(flows: pa.Table, resolver: Resolver,
               comp_ids: Mapping[int, tuple[str | None, str | None]]) -> pa.Table:
    """One row per flow: its venue and dialect (the registry decides)."""
    rows: dict[str, list[object]] = {f.name: [] for f in _FLOW_RULES}
    for fl in flows.select(["flow_id", "server_ip", "server_port", "sni", "http_host",
                            "app_protocol", "alpn", "tls_version"]).to_pylist():
        sender, target = comp_ids.get(fl["flow_id"], (None, None))
        facts = FlowFacts(flow_id=fl["flow_id"], server_ip=fl["server_ip"],
                          server_port=fl["server_port"], sni=fl["sni"],
                          http_host=fl["http_host"], app_protocol=fl["app_protocol"],
                          alpn=fl["alpn"], sender_comp_id=sender, target_comp_id=target)
        a = resolver.resolve(facts)
        for k, v in (("flow_id", fl["flow_id"]), ("venue", a.venue), ("dialect", a.dialect),
                     ("protocol_hint", a.protocol), ("app_protocol", fl["app_protocol"]),
                     ("tls_version", fl["tls_version"]), ("alpn", fl["alpn"])):
            rows[k].append(v)
    return pa.table(rows, schema=_FLOW_RULES)


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns in schema order and type; int64 nanoseconds become timestamps."""
    cols = []
    for f in schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type) and not pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64()).cast(f.type)
        cols.append(col.cast(f.type))
    return pa.table(cols, schema=schema)


def match_tables(files: Mapping[str, Sequence[Path]], flows: pa.Table,
                 resolver: Resolver) -> MatchOutput:
    """Match one capture whose message tables are the Parquet ``files`` per table."""
    if not any(p.exists() for t in MESSAGE_TABLES for p in files.get(t, ())):
        # Nothing to pair (a TCP-only or unparsed capture): venues only, no SQL run.
        return _venues_only(flows, resolver)
    con = duckdb.connect()
    try:
        _load_inputs(con, files)
        for name, table in rule_tables().items():
            con.register(name, table)
        con.register("flow_rules", flow_rules(flows, resolver, _comp_ids(con)))
        for name in SQL_FILES:
            con.execute(sql_text(name))
        out: dict[str, pa.Table] = {}
        for table, (temp, schema) in OUTPUTS.items():
            target = _without_capture_id(schema)
            cols = ", ".join(f'"{f.name}"' for f in target)
            out[table] = _cast(con.sql(f"SELECT {cols} FROM {temp}").to_arrow_table(), target)
        venues = con.execute("SELECT flow_id, venue FROM flow_rules WHERE venue IS NOT NULL")
        flow_venue = {int(f): str(v) for f, v in venues.fetchall()}
    finally:
        con.close()
    return MatchOutput(flow_venue=flow_venue, tables=out)


def _venues_only(flows: pa.Table, resolver: Resolver) -> MatchOutput:
    rules = flow_rules(flows, resolver, {})
    venue = dict(zip(rules.column("flow_id").to_pylist(), rules.column("venue").to_pylist(),
                     strict=True))
    empty = {t: pa.Table.from_pylist([], schema=_without_capture_id(schema))
             for t, (_temp, schema) in OUTPUTS.items()}
    return MatchOutput(flow_venue={int(f): str(v) for f, v in venue.items() if v is not None},
                       tables=empty)


def match_staged(stage_dir: Path, flows: pa.Table, rules: Resolver) -> MatchOutput:
    """Match the tables an ingest staged under ``stage_dir/<table>/*.parquet``."""
    files = {t: sorted((stage_dir / t).glob("*.parquet")) for t in INPUT_TABLES}
    return match_tables(files, flows, rules)


# Tables ``rematch`` rewrites; every other table of the capture is kept as is.
REMATCHED = ("flows", *OUTPUTS)


def _partition_files(root: Path, table: str, capture_id: str) -> list[Path]:
    return sorted(store.partition_dir(root, table, capture_id).glob("*.parquet"))


def rematch_capture(root: Path, capture_id: str, resolver: Resolver) -> MatchOutput:
    """Re-run matching on one committed capture; swaps its results in atomically.

    Only flows (with the new venues), orders, acks, latency and unmatched are
    rewritten (``Staging.commit(tables=...)``); if the capture is re-ingested
    between the read and the commit, the commit refuses (``StaleCapture``).
    """
    expect = store.fingerprint(root, capture_id)
    files = {t: _partition_files(root, t, capture_id) for t in INPUT_TABLES}
    flow_files = _partition_files(root, "flows", capture_id)
    schema = _without_capture_id(TABLES["flows"])
    flows = (pa.concat_tables([pq.read_table(f, schema=schema) for f in flow_files])
             if flow_files else pa.Table.from_pylist([], schema=schema))
    result = match_tables(files, flows, resolver)
    staging = store.Staging(root)
    try:
        venues = [result.flow_venue.get(i) for i in flows.column("flow_id").to_pylist()]
        flows = flows.set_column(flows.schema.get_field_index("venue"), "venue",
                                 pa.array(venues, type=pa.string()))
        staging.write("flows", flows)
        for table, rows in result.tables.items():
            staging.write(table, rows)
        staging.commit(capture_id, tables=REMATCHED, expect=expect)
    except BaseException:
        staging.abort()
        raise
    return result


def rematch(root: Path, resolver: Resolver) -> dict[str, MatchOutput]:
    """``rematch_capture`` for every capture of the dataset at ``root``."""
    with store.locked(root):
        store.recover(root)
    ids = sorted(p.name.split("=", 1)[1] for p in (root / "captures").glob("capture_id=*"))
    return {cid: rematch_capture(root, cid, resolver) for cid in ids}
