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

Prefilter. A capture is mostly market data that no matcher uses, and parsing
its JSON was most of the matcher's cost. Before the SQL runs,
``ws_candidates`` keeps only the WebSocket text messages that can be a
request, a reply or a private order-stream event of their flow's dialect, by
substring tests on the payload, before any JSON parsing: the quoted last key
of one of the dialect's id or method paths (``"id"``), or the literal start
of an ``engine_streams`` match value (``executionReport"``); see
``ws_needles`` and ``candidates_sql``. A JSON reader also accepts keys and
values spelt with escapes (``"\\u0069d"``), so a payload with a backslash is
always kept. Each test is a necessary condition of the SQL's own, so the rows
are those of the unfiltered run (``prefilter=False``; the tests compare the
two). The SQL files likewise parse only REST order actions and their
responses, and only FIX order actions and replies.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
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


# --- Prefilter -------------------------------------------------------------------

# A needle is substrings that a payload must all contain; a message passes when
# it holds every part of one of its group's needles. The empty needle () keeps
# every message. DuckDB's ``contains`` looks for a needle's first byte with
# memchr, then tests every position after it: a part that starts with a letter
# rarely found in market data (``id"``) is cheap, one that starts with a quote
# is not, so a key needle tests ``id"`` before the exact ``"id"``.
Needle = tuple[str, ...]

# The last key of a JSON path (``$.a[0].id`` -> ``id``); paths of another shape
# (quoted keys, wildcards) give the empty needle.
_PATH_LEAF = re.compile(r"^\$.*\.([A-Za-z0-9_]+)(?:\[[0-9]+\])*$")
# What a non-string JSON value reads as through json_extract_string starts with
# a digit, "-", "{", "[", or one of these letters (true, false, null, NaN, inf,
# Infinity); a LIKE pattern starting with any other letter or "/" can only
# match a string, which the payload holds between quotes.
_NON_STRING_START = frozenset("tfnNiI")


def key_needle(path: str) -> Needle:
    """What every payload with a value at the JSON ``path`` contains: the quoted
    last key (``$.data.id`` -> ``"id"``, tested after ``id"``)."""
    m = _PATH_LEAF.match(path)
    return (f'{m.group(1)}"', f'"{m.group(1)}"') if m else ()


def value_needle(like: str) -> Needle:
    """What every payload contains whose string at some path matches the LIKE
    pattern ``like``: its literal start, closed by a quote when the pattern has
    no wildcard (``orders"``, ``user.orders.``); none when the pattern could
    match a non-string value."""
    first = like[:1]
    if not (first == "/" or (first.isascii() and first.isalpha())) or first in _NON_STRING_START:
        return ()
    literal = re.split(r"[%_\\]", like, maxsplit=1)[0]
    return (literal + '"' if literal == like else literal,)


# What a candidate message may be: ``keyed`` a request or a reply (an id or a
# method key, websocket.sql), ``event`` a private order-stream event (engine.sql).
USES = ("keyed", "event")


def ws_needles(rules: Mapping[str, pa.Table]) -> dict[tuple[str, str, str], frozenset[Needle]]:
    """Per (use, dialect, direction): the needles one of which every WebSocket
    message the SQL can take for that use holds (or a backslash, see the module
    docstring).

    ``keyed``/``out``: a request id or method key (``ws_req`` keys requests by id,
    or by op, and orders by method). ``keyed``/``in``: a reply id or reply method
    key (only keyed replies are paired or listed as orphans). ``event``/``in``: an
    ``engine_streams`` match value. A dialect with no rule has no entry: none of
    its messages is used.
    """
    def keys(*paths: list[str | None] | None) -> set[Needle]:
        # a NULL path (or list) reads nothing, so it needs no needle
        return {key_needle(p) for ps in paths for p in ps or () if p is not None}

    out: dict[tuple[str, str, str], set[Needle]] = {}
    for d in rules["ws_dialects"].to_pylist():
        out.setdefault(("keyed", d["dialect"], "out"), set()).update(
            keys(d["req_id_paths"], d["method_paths"]))
        out.setdefault(("keyed", d["dialect"], "in"), set()).update(
            keys(d["reply_id_paths"], d["reply_method_paths"]))
    for e in rules["engine_streams"].to_pylist():
        group = out.setdefault(("event", e["dialect"], "in"), set())
        if e["match_like"] is not None:  # LIKE NULL matches nothing
            group.add(value_needle(e["match_like"]))
    return {k: frozenset(v) for k, v in out.items()}


def _holds(needle: Needle) -> str:
    return " AND ".join(f"contains(m.payload, {_sql_str(n)})" for n in needle) or "true"


def candidates_sql(needles: Mapping[tuple[str, str, str], frozenset[Needle]],
                   dialects: Collection[str], prefilter: bool = True) -> str:
    """The statements that make ``ws_candidates``: the text messages websocket.sql
    and engine.sql read, of the flows whose dialect is one of ``dialects``, with
    a flag per use (``keyed``, ``event``) saying which SQL may take them.

    Two passes. The scan keeps the messages holding the first part of any
    needle of those dialects (or a backslash): one cheap test per distinct part,
    which DuckDB pushes into the Parquet reader. The few that pass are then held
    to whole needles (``"id"``, not just ``id"``) of their own flow's dialect and
    direction. Done in one WHERE, the optimizer would derive and push down the
    union of every whole needle instead, testing each row twice.
    """
    cols = "m.flow_id, m.direction, m.ts_first, m.ts_last, m.stream_offset, m.payload"
    if not prefilter:
        return ("CREATE OR REPLACE TEMP TABLE ws_candidates AS SELECT "
                f"{cols}, true AS keyed, true AS event FROM ws_messages m WHERE m.opcode = 'text'")
    groups = {k: v for k, v in sorted(needles.items()) if k[1] in dialects}
    # a backslash may spell any key or value with escapes
    firsts = sorted({"\\", *(n[0] if n else "" for g in groups.values() for n in g)})
    scan = " OR ".join(f"contains(m.payload, {_sql_str(n)})" for n in firsts)
    flags = []
    for use in USES:
        tests = [f"(f.dialect = {_sql_str(dialect)} AND m.direction = {_sql_str(direction)} AND ("
                 + " OR ".join(f"({_holds(n)})" for n in [("\\",), *sorted(group)]) + "))"
                 for (u, dialect, direction), group in groups.items() if u == use]
        flags.append(f"({' OR '.join(tests) or 'false'}) AS {use}")
    return (f"CREATE OR REPLACE TEMP TABLE ws_scan AS SELECT {cols} FROM ws_messages m "
            f"WHERE m.opcode = 'text' AND ({scan if groups else 'false'});\n"
            "CREATE OR REPLACE TEMP TABLE ws_candidates AS SELECT * FROM ("
            f"SELECT m.*, {', '.join(flags)} FROM ws_scan m JOIN flow_rules f USING (flow_id)) "
            f"WHERE {' OR '.join(USES)};\n"
            "DROP TABLE ws_scan;")


# --- Running the SQL -------------------------------------------------------------


@contextmanager
def matched(files: Mapping[str, Sequence[Path]], flows: pa.Table, resolver: Resolver, *,
            prefilter: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection on which every SQL file has run over the Parquet ``files``
    per table (its temp tables open to look at); closed on exit.

    ``prefilter=False`` reads every WebSocket text message (the reference the
    prefilter must agree with).
    """
    con = duckdb.connect()
    try:
        _load_inputs(con, files)
        rules = rule_tables()
        for name, table in rules.items():
            con.register(name, table)
        rules_by_flow = flow_rules(flows, resolver, _comp_ids(con))
        con.register("flow_rules", rules_by_flow)
        dialects = set(rules_by_flow.column("dialect").to_pylist())
        con.execute(candidates_sql(ws_needles(rules), dialects, prefilter))
        for name in SQL_FILES:
            con.execute(sql_text(name))
        yield con
    finally:
        con.close()


def match_tables(files: Mapping[str, Sequence[Path]], flows: pa.Table,
                 resolver: Resolver, *, prefilter: bool = True) -> MatchOutput:
    """Match one capture whose message tables are the Parquet ``files`` per table."""
    if not any(p.exists() for t in MESSAGE_TABLES for p in files.get(t, ())):
        # Nothing to pair (a TCP-only or unparsed capture): venues only, no SQL run.
        return _venues_only(flows, resolver)
    with matched(files, flows, resolver, prefilter=prefilter) as con:
        out: dict[str, pa.Table] = {}
        for table, (temp, schema) in OUTPUTS.items():
            target = _without_capture_id(schema)
            cols = ", ".join(f'"{f.name}"' for f in target)
            out[table] = _cast(con.sql(f"SELECT {cols} FROM {temp}").to_arrow_table(), target)
        venues = con.execute("SELECT flow_id, venue FROM flow_rules WHERE venue IS NOT NULL")
        flow_venue = {int(f): str(v) for f, v in venues.fetchall()}
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
