"""Order/ack matching: runs the SQL in ``pipelines/sql/`` over one capture's tables.

How this works. Each match gets its own connection (``_connect``) to one
in-memory DuckDB database kept for the process, on which ``SETUP_FILES`` ran
once (the macros; ``no_orders`` and ``no_acks``, the empty family outputs; an
empty ``input_<table>`` per input table). The connection gets a view per
message table (``http_messages``, ``ws_messages``, ``fix_messages``,
``tls_records``, ``tcp_rtt``; an absent table is the empty one with its
declared columns), the venue rule tables of ``venue_rules``,
``flow_handshake`` (each flow's handshake RTT, for decompose.sql) and
``flow_rules``: each flow's venue and dialect as the registry (a
``venue_rules.Resolver``) decides from its SNI, HTTP Host, address, port and
FIX comp ids. The SQL files then run in ``SQL_FILES`` order, each building
temp tables from the ones before; the last one leaves ``out_orders``,
``out_acks``, ``out_latency`` and ``out_unmatched``, which are cast to the
declared schemas. A file with a gate (``GATES``) first makes a table of what
it has to pair (``fix_in``: FIX order actions and replies, ``rest_todo``, ...);
when that is empty, the rest of the file is skipped and its outputs are empty
(``no_orders``/``no_acks``), which is what running it would give. Each SQL
text is parsed once per process (``_parsed``). Python only orchestrates:
every pairing decision is in the SQL.

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

The prefilter's first pass (the scan: does a payload hold the first part of a
needle?) reads every payload. During an ingest it runs at ingest time, over
the payloads in memory (``stage_ws_candidates``, called by ``rows.RowBuffers``):
the matcher then reads its output (``staged_candidates``) and DuckDB never sees
a market-data payload. A rematch, over committed partitions, scans in DuckDB
(``candidates_sql``). Either way the same second pass, in SQL, makes
``ws_candidates``.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..parsers.protocols.registry import REGISTRY
from . import store
from .prefilter import (
    USES,
    Needle,
    key_needle,
    rules_and_needles,
    staged_candidates,
    value_needle,
    ws_needles,
)
from .tables.rows import with_venues
from .tables.schemas import (
    ACKS,
    LATENCY,
    ORDERS,
    PROTOCOL_TABLES,
    TABLES,
    UNMATCHED,
    without_capture_id,
)
from .venue_infer import infer
from .venue_rules import ADDRESS_KEY, ADDRESS_VENUES, FlowContent, FlowFacts, Resolver

if TYPE_CHECKING:  # (loaded by ``_database``: a capture with no message rows needs none)
    import duckdb

__all__ = [
    "ADDRESS_KEY", "ADDRESS_VENUES", "GATES", "INPUT_TABLES", "SQL_FILES", "USES",
    "MatchOutput", "Matcher", "Needle", "address_venues", "candidates_sql", "flow_rules",
    "key_needle", "match_staged", "match_tables", "matched", "rematch",
    "rematch_capture", "value_needle", "ws_needles",
]


@dataclass(slots=True)
class MatchOutput:
    """What a matcher hands back to the ingest: the venue of each flow and the
    ``orders``/``acks``/``latency``/``unmatched`` tables."""

    flow_venue: dict[int, str]
    tables: dict[str, pa.Table]
    flow_venue_source: dict[int, str] = field(default_factory=dict)  # venue_infer
    final: dict[str, pa.Table] = field(default_factory=dict)
    """Rows to write as final parts even when the ingest's end-of-file writes are
    provisional (a rotation's derived rows no later file changes: ``why_carry``)."""


class Matcher(Protocol):
    """Called with a directory of message tables readable as Parquet and flows rows;
    returns the venue of each flow and the orders/acks/latency tables. The ingest's
    ``FlowRows`` calls it once, at the end, with the staging directory, the flows that
    have application-layer data and the capture's id (then it may add tables derived
    from the capture's: ``pcapflow.why``). Just before, it asks ``venues`` for the
    venue of each distinct server address of the other flows (``ADDRESS_KEY``: they
    have no messages, so nothing else can name them) and joins the answer on them."""

    def __call__(self, stage_dir: Path, flows: pa.Table,
                 capture_id: str | None = None) -> MatchOutput: ...

    def venues(self, addresses: pa.Table) -> pa.Table:
        """``address_venues``: one row per row of ``addresses``."""
        ...


MESSAGE_TABLES = tuple(PROTOCOL_TABLES)
INPUT_TABLES = (*MESSAGE_TABLES, "tcp_rtt")
SETUP_FILES = ("common",)
"""Run once per database: macros and the empty family outputs (``no_orders``, ``no_acks``)."""
SQL_FILES = (*(s.match.sql for s in REGISTRY if s.match), "combine", "engine", "latency",
             "decompose")
"""Run in this order for every match: each protocol's family (registry order),
then the files that combine them and split each latency (``decompose``)."""
GATES = {s.match.sql: (s.match.gate, s.match.outputs) for s in REGISTRY if s.match}
GATES["engine"] = ("engine_events", ("engine_acks",))
"""Per SQL file: a table it makes first (what it has to pair: the messages or
flows it reads) and the outputs it leaves empty when that table is."""
OUTPUTS = {"orders": ("out_orders", ORDERS), "acks": ("out_acks", ACKS),
           "latency": ("out_latency", LATENCY), "unmatched": ("out_unmatched", UNMATCHED)}

_OUTPUT_NAMES = frozenset(temp for temp, _ in OUTPUTS.values())
"""What ``match_tables`` reads after the SQL (``flow_rules`` is a registered table)."""

_FLOW_RULES = pa.schema([
    ("flow_id", pa.int64()), ("venue", pa.string()), ("venue_source", pa.string()),
    ("dialect", pa.string()), ("protocol_hint", pa.string()), ("app_protocol", pa.string()),
    ("tls_version", pa.string()), ("alpn", pa.string()), ("alpn_offered", pa.string()),
])


def sql_text(name: str) -> str:
    """The text of ``pipelines/sql/<name>.sql`` (shipped as package data)."""
    return (resources.files(__package__) / "sql" / f"{name}.sql").read_text()


@functools.lru_cache(maxsize=256)
def _parsed(sql: str) -> tuple[duckdb.Statement, ...]:
    """The statements of ``sql``, parsed once per process: DuckDB's parser costs
    about as much as planning a statement, and a parsed statement runs as is."""
    return tuple(_database().extract_statements(sql))


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyConnection:
    """``con.execute`` for each statement of ``sql`` (see ``_parsed``)."""
    for statement in _parsed(sql):
        con.execute(statement)
    return con


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _load_inputs(con: duckdb.DuckDBPyConnection, files: Mapping[str, Sequence[Path]]) -> None:
    """A view per input table with its declared columns; missing columns (files
    written by an older pcapflow) read as NULL of their declared type (from the
    empty ``input_<table>`` tables ``_connect`` makes)."""
    for table in INPUT_TABLES:
        schema = without_capture_id(TABLES[table])
        paths = [p for p in files.get(table, ()) if p.exists()]
        listing = ", ".join(_sql_str(str(p)) for p in paths)
        if not paths:
            source = f"input_{table}"
        elif all(set(schema.names) <= set(pq.read_schema(p).names) for p in paths):
            source = f"read_parquet([{listing}])"
        else:
            source = (f"(SELECT * FROM input_{table} UNION ALL BY NAME "
                      f"SELECT * FROM read_parquet([{listing}], union_by_name = true))")
        cols = ", ".join(f'"{f.name}"' for f in schema)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS SELECT {cols} FROM {source}")


def _comp_ids(con: duckdb.DuckDBPyConnection,
              earlier: Mapping[int, tuple[int, str | None, str | None]] | None = None,
              ) -> dict[int, tuple[str | None, str | None]]:
    """SenderCompID / TargetCompID of each FIX flow's first outbound message;
    ``earlier``: (time, sender, target) of the first one in rows not read here (a
    rotation's earlier files: ``match_carry``), which wins when it is earlier."""
    rows = con.execute(
        "SELECT flow_id, min(epoch_ns(ts_last)), arg_min(sender_comp_id, ts_last), "
        "arg_min(target_comp_id, ts_last) "
        "FROM fix_messages WHERE direction = 'out' GROUP BY flow_id").fetchall()
    out = {int(f): (int(ts), s, t) for f, ts, s, t in rows}
    for f, (ts, s, t) in (earlier or {}).items():
        if f not in out or ts < out[f][0]:
            out[f] = (ts, s, t)
    return {f: (s, t) for f, (_ts, s, t) in out.items()}


def _content(con: duckdb.DuckDBPyConnection, http: str = "http_messages",
             ws: str = "ws_messages") -> Callable[[list[int]], dict[int, FlowContent]]:
    """What the given flows sent (``venue_infer``): request paths without their query,
    and the ``method`` / ``op`` of their outbound WebSocket JSON text messages (a
    bounded sample per flow: the first ``CONTENT_SAMPLE`` messages)."""

    def sent(flow_ids: list[int]) -> dict[int, FlowContent]:
        ids = pa.table({"flow_id": pa.array(flow_ids, pa.int64())})
        con.register("unnamed_flows", ids)
        try:
            paths = con.execute(f"""
                SELECT flow_id, list(DISTINCT split_part(path, '?', 1)) FROM (
                  SELECT flow_id, path, row_number() OVER (PARTITION BY flow_id
                                                           ORDER BY stream_offset) AS n
                  FROM {http} SEMI JOIN unnamed_flows USING (flow_id)
                  WHERE direction = 'out' AND kind = 'request' AND path IS NOT NULL)
                WHERE n <= {CONTENT_SAMPLE} GROUP BY flow_id""").fetchall()
            calls = con.execute(f"""
                SELECT flow_id, list(DISTINCT [k, v]) FROM (
                  SELECT flow_id, unnest(['method', 'op']) AS k,
                         unnest([json_extract_string(payload, '$.method'),
                                 json_extract_string(payload, '$.op')]) AS v
                  FROM (SELECT flow_id, payload, row_number() OVER (
                          PARTITION BY flow_id ORDER BY stream_offset) AS n
                        FROM {ws} SEMI JOIN unnamed_flows USING (flow_id)
                        WHERE direction = 'out' AND opcode = 'text'
                          AND NOT coalesce(payload_unknown, false))
                  WHERE n <= {CONTENT_SAMPLE} AND json_valid(payload))
                WHERE v IS NOT NULL GROUP BY flow_id""").fetchall()
        finally:
            con.unregister("unnamed_flows")
        out: dict[int, FlowContent] = {}
        for f, p in paths:
            out[int(f)] = FlowContent(paths=tuple(sorted(p)))
        for f, kv in calls:
            prev = out.get(int(f), FlowContent())
            out[int(f)] = FlowContent(paths=prev.paths,
                                      calls=tuple(sorted((k, v) for k, v in kv)))
        return out

    return sent


CONTENT_SAMPLE = 64
"""Outbound messages per unnamed flow read to find its venue from content."""


def address_venues(addresses: pa.Table, resolver: Resolver) -> pa.Table:
    """The venue (and its source) of each row of ``addresses`` (distinct ``ADDRESS_KEY``
    values of flows without application-layer data), as ``flow_rules`` gives it to a
    flow with that address and nothing else: resolved together, so one named address
    may name another flow to it (``venue_infer``'s ``address`` step)."""
    n = addresses.num_rows
    none = pa.nulls(n, pa.string())
    facts = pa.table({
        "flow_id": pa.array(range(n), pa.int64()),
        "server_ip": addresses.column("server_ip"),
        "server_port": addresses.column("server_port"),
        "sni": none, "http_host": none,
        "app_protocol": addresses.column("app_protocol"),
        "alpn": none, "alpn_offered": none, "tls_version": none,
    })
    rules = flow_rules(facts, resolver, {})
    return pa.table([addresses.column(k) for k in ADDRESS_KEY]
                    + [rules.column("venue"), rules.column("venue_source")],
                    schema=ADDRESS_VENUES)


def flow_rules(flows: pa.Table, resolver: Resolver,
               comp_ids: Mapping[int, tuple[str | None, str | None]],
               content: Callable[[list[int]], dict[int, FlowContent]] | None = None,
               ) -> pa.Table:
    """One row per flow: its venue and dialect (the registry decides; flows with no
    name of their own get what ``venue_infer`` finds)."""
    rows: dict[str, list[object]] = {f.name: [] for f in _FLOW_RULES}
    flow_rows = flows.select(["flow_id", "server_ip", "server_port", "sni", "http_host",
                              "app_protocol", "alpn", "alpn_offered",
                              "tls_version"]).to_pylist()
    facts = []
    for fl in flow_rows:
        sender, target = comp_ids.get(fl["flow_id"], (None, None))
        facts.append(FlowFacts(flow_id=fl["flow_id"], server_ip=fl["server_ip"],
                               server_port=fl["server_port"], sni=fl["sni"],
                               http_host=fl["http_host"], app_protocol=fl["app_protocol"],
                               alpn=fl["alpn"], sender_comp_id=sender,
                               target_comp_id=target))
    found = infer(facts, [resolver.resolve(f) for f in facts], resolver, content)
    for fl, a in zip(flow_rows, found, strict=True):
        for k, v in (("flow_id", fl["flow_id"]), ("venue", a.venue),
                     ("venue_source", a.source if a.venue is not None else None),
                     ("dialect", a.dialect),
                     ("protocol_hint", a.protocol), ("app_protocol", fl["app_protocol"]),
                     ("tls_version", fl["tls_version"]), ("alpn", fl["alpn"]),
                     ("alpn_offered", fl["alpn_offered"])):
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


def _holds(needle: Needle) -> str:
    return " AND ".join(f"contains(m.payload, {_sql_str(n)})" for n in needle) or "true"


def candidates_sql(needles: Mapping[tuple[str, str, str], frozenset[Needle]],
                   dialects: Collection[str], prefilter: bool = True,
                   scanned: bool = False) -> str:
    """The statements that make ``ws_candidates`` (a view): the text messages
    websocket.sql and engine.sql read, of the flows whose dialect is one of
    ``dialects``, with a flag per use (``keyed``, ``event``) saying which SQL may
    take them.

    Two passes. The scan keeps the messages holding the first part of any
    needle of those dialects (or a backslash): one cheap test per distinct part,
    which DuckDB pushes into the Parquet reader. The few that pass are then held
    to whole needles (``"id"``, not just ``id"``) of their own flow's dialect and
    direction. Done in one WHERE, the optimizer would derive and push down the
    union of every whole needle instead, testing each row twice. ``scanned``: the
    first pass ran at ingest time, ``ws_scan`` holds its rows (``stage_ws_candidates``).
    """
    cols = "m.flow_id, m.direction, m.ts_first, m.ts_last, m.stream_offset, m.payload"
    if not prefilter:
        return ("CREATE OR REPLACE TEMP VIEW ws_candidates AS SELECT "
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
    hold = ("CREATE OR REPLACE TEMP VIEW ws_candidates AS SELECT * FROM ("
            f"SELECT m.*, {', '.join(flags)} FROM ws_scan m JOIN flow_rules f USING (flow_id)) "
            f"WHERE {' OR '.join(USES)}")
    if scanned:
        return hold
    return (f"CREATE OR REPLACE TEMP TABLE ws_scan AS SELECT {cols} FROM ws_messages m "
            f"WHERE m.opcode = 'text' AND ({scan if groups else 'false'});\n"
            f"{hold}")


# --- Running the SQL -------------------------------------------------------------


_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DB_LOCK = threading.Lock()
_INHERITED: list[duckdb.DuckDBPyConnection] = []


def _database() -> duckdb.DuckDBPyConnection:
    """The process's in-memory database (its first connection), set up once
    (``SETUP_FILES``, the empty ``input_<table>`` tables)."""
    global _DB
    import duckdb  # (its relation API too: the matcher's connections use ``sql``)

    with _DB_LOCK:
        if _DB is not None and _DB[0] == os.getpid():
            return _DB[1]
        if _DB is not None:  # inherited through a fork that bypassed _close_before_fork:
            _INHERITED.append(_DB[1])  # never closed here, its threads are the parent's
        db = duckdb.connect()
        for name in SETUP_FILES:
            db.execute(sql_text(name))
        for table in INPUT_TABLES:
            db.register("_empty", without_capture_id(TABLES[table]).empty_table())
            db.execute(f"CREATE OR REPLACE TABLE input_{table} AS FROM _empty")
            db.unregister("_empty")
        _DB = (os.getpid(), db)
        return db


def _close_before_fork() -> None:
    """No database crosses a fork (a child could not close one: its threads
    stay in the parent); the parent opens a new one when it next matches."""
    global _DB
    with _DB_LOCK:
        if _DB is not None and _DB[0] == os.getpid():
            _DB[1].close()
            _DB = None


def close_database() -> None:
    """Close this process's database (the next match opens one again, ~0.04 s). A
    process that matches file after file for days (``pcapflow watch``) calls it now
    and then: DuckDB keeps ~0.08 MB of glibc heap per command on a database it reuses
    (the temporary tables and registrations of its connections: measured with
    ``benchmarks/watch_memory.py``), given back only when the database closes."""
    _close_before_fork()


def _new_lock_in_child() -> None:
    global _DB_LOCK
    _DB_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(before=_close_before_fork, after_in_child=_new_lock_in_child)


def _connect(threads: int | None) -> duckdb.DuckDBPyConnection:
    """A connection of its own (temp tables and registered tables belong to it)
    to the process's database (``_database``): opening a database and defining
    the macros cost more than a dozen of the statements. ``threads`` None:
    DuckDB's default."""
    con = _database().cursor()
    con.execute("RESET threads" if threads is None else f"SET threads = {threads}")
    return con


_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)


def statement_text(statement: duckdb.Statement) -> str:
    """A parsed statement's SQL without its leading comments (DuckDB 2 keeps them in
    ``query``, 1.x did not): what the gate check below compares."""
    return _LEADING_COMMENTS.sub("", statement.query)


_MADE = re.compile(r"CREATE OR REPLACE TEMP (TABLE|VIEW) (\w+)", re.I)
_WORD = re.compile(r"[a-z_][a-z0-9_]*")


@functools.lru_cache(maxsize=1)
def _statements() -> tuple[tuple[str, ...], dict[str, str], dict[str, set[str]]]:
    """``SQL_FILES``' statements (texts, ``_run_sql``'s order), the kind (TABLE or
    VIEW) of each temp object they make, and the temp objects each view reads."""
    texts = tuple(statement_text(st) for name in SQL_FILES for st in _parsed(sql_text(name)))
    made = {m.group(2).lower(): m.group(1).upper() for t in texts if (m := _MADE.match(t))}
    view_deps: dict[str, set[str]] = {}
    for t in texts:
        m = _MADE.match(t)
        if m is not None and m.group(1).upper() == "VIEW":
            view_deps[m.group(2).lower()] = (set(_WORD.findall(t.lower())) & set(made)) - {
                m.group(2).lower()}
    return texts, made, view_deps


def _reads(names: Collection[str]) -> set[str]:
    """``names`` and every temp object the views among them read, transitively."""
    view_deps = _statements()[2]
    out: set[str] = set()
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in out:
            out.add(n)
            todo.extend(view_deps.get(n, ()))
    return out


@functools.lru_cache(maxsize=4)
def _drops(keep: frozenset[str]) -> tuple[tuple[str, ...], ...]:
    """Per statement of ``SQL_FILES`` (``_run_sql``'s order): the temp tables that no
    later statement reads, directly or through a view, and ``keep`` does not name
    (what is read after the SQL: ``match_tables``' outputs). Dropped then, their memory
    goes back to DuckDB while the rest runs (the temp tables of a capture's orders and
    candidates held together were the matcher's peak). A name that only looks like a
    read (in a string or comment) keeps its table longer, nothing worse."""
    texts, made, _ = _statements()
    kept = _reads(keep)
    last: dict[str, int] = {}
    for i, t in enumerate(texts):
        for n in _reads(set(_WORD.findall(t.lower())) & set(made)):
            last[n] = i
    plan: list[list[str]] = [[] for _ in texts]
    for n, i in last.items():
        if made[n] == "TABLE" and n not in kept:
            plan[i].append(n)
    return tuple(tuple(sorted(p)) for p in plan)


def _run_sql(con: duckdb.DuckDBPyConnection, keep: frozenset[str] | None = None) -> None:
    """``SQL_FILES`` in order; a gated file whose gate table is empty stops after
    making it, its outputs empty (``GATES``). ``keep``: the temp tables (or views)
    read after it; every other temp table is dropped after its last read (``_drops``).
    None: none dropped (every temp table open to look at)."""
    drops = _drops(keep) if keep is not None else None
    at = 0
    for name in SQL_FILES:
        gate_table, outputs = GATES.get(name, (None, ()))
        statements = _parsed(sql_text(name))
        first = at
        at += len(statements)
        for i, statement in enumerate(statements, first):
            con.execute(statement)
            if (gate_table is not None and statement_text(statement).startswith(
                    f"CREATE OR REPLACE TEMP TABLE {gate_table} AS")
                    and _run(con, f"SELECT count(*) FROM (FROM {gate_table} LIMIT 1)"
                             ).fetchone() == (0,)):
                for out in outputs:
                    empty = "no_acks" if out.endswith("_acks") else "no_orders"
                    _run(con, f"CREATE OR REPLACE TEMP TABLE {out} AS FROM {empty}")
                break
            for table in drops[i] if drops is not None else ():
                con.execute(f"DROP TABLE IF EXISTS {table}")


@contextmanager
def matched(files: Mapping[str, Sequence[Path]], flows: pa.Table, resolver: Resolver, *,
            prefilter: bool = True,
            candidates: pa.Table | None = None,
            extra: Mapping[str, pa.Table] | None = None,
            comp_ids_prev: Mapping[int, tuple[int, str | None, str | None]] | None = None,
            content_extra: Mapping[str, pa.Table] | None = None,
            keep: frozenset[str] | None = None,
            views: Mapping[str, str] | None = None,
            ) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection on which every SQL file has run over the Parquet ``files``
    per table (its temp tables open to look at); closed on exit.

    ``prefilter=False`` reads every WebSocket text message (the reference the
    prefilter must agree with). ``candidates``: the ingest-time scan's rows
    (``staged_candidates``), read instead of scanning ``ws_messages``. A rotation's
    command that reads its own rows (``match_carry``) gives what the set's earlier
    files hold: ``extra`` tables the SQL reads (``learned_prev``), the first FIX comp
    ids (``comp_ids_prev``) and outbound messages (``content_extra``: ``http``,
    ``ws``) of each flow, which name venues (``flow_rules``); ``views``: tables the SQL
    reads as a query over ``extra``'s (name: SELECT), so that those are not copied.
    ``keep``: only these temp tables (and what these views read) are read after the
    SQL, the others are dropped on the way (``_run_sql``); None: all kept.
    """
    scanned = prefilter and candidates is not None
    # Past the scan the SQL reads a few thousand rows, where DuckDB's threads
    # cost more than they give.
    con = _connect(1 if scanned else None)
    try:
        _load_inputs(con, files)
        rules, needles = rules_and_needles()
        for name, table in rules.items():
            con.register(name, table)
        for name, table in (extra or {}).items():
            con.register(name, table)
        for name, query in (views or {}).items():
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {query}")
        http_view, ws_view = "http_messages", "ws_messages"
        if content_extra is not None:
            http_view, ws_view = "content_http", "content_ws"
            for name, view in (("http", "http_messages"), ("ws", "ws_messages")):
                con.register(f"_content_{name}", content_extra[name])
                cols = ", ".join(content_extra[name].column_names)
                con.execute(f"CREATE OR REPLACE TEMP VIEW content_{name} AS SELECT {cols} "
                            f"FROM {view} UNION ALL BY NAME SELECT * FROM _content_{name}")
        rules_by_flow = flow_rules(flows, resolver, _comp_ids(con, comp_ids_prev),
                                   _content(con, http_view, ws_view))
        con.register("flow_rules", rules_by_flow)
        con.register("flow_handshake", flows.select(["flow_id", "first_ts", "handshake_rtt_ns"]))
        if scanned:
            con.register("ws_scan", candidates)
        dialects = set(rules_by_flow.column("dialect").to_pylist())
        _run(con, candidates_sql(needles, dialects, prefilter, scanned))
        _run_sql(con, keep)
        yield con
    finally:
        con.close()


def match_tables(files: Mapping[str, Sequence[Path]], flows: pa.Table,
                 resolver: Resolver, *, prefilter: bool = True,
                 candidates: pa.Table | None = None) -> MatchOutput:
    """Match one capture whose message tables are the Parquet ``files`` per table
    (``candidates``: see ``matched``)."""
    if not any(p.exists() for t in MESSAGE_TABLES for p in files.get(t, ())):
        # Nothing to pair (a TCP-only or unparsed capture): venues only, no SQL run.
        return _venues_only(flows, resolver)
    with matched(files, flows, resolver, prefilter=prefilter, candidates=candidates,
                 keep=_OUTPUT_NAMES) as con:
        out: dict[str, pa.Table] = {}
        temps = [temp for temp, _ in OUTPUTS.values()]
        for i, (table, (temp, schema)) in enumerate(OUTPUTS.items()):
            target = without_capture_id(schema)
            cols = ", ".join(f'"{f.name}"' for f in target)
            out[table] = _cast(con.sql(f"SELECT {cols} FROM {temp}").to_arrow_table(), target)
            # (its rows are Arrow's now: DuckDB's copy goes unless a later output reads it)
            for name in sorted(_reads([temp]) - _reads(temps[i + 1:])):
                if _statements()[1].get(name) == "TABLE":
                    con.execute(f"DROP TABLE IF EXISTS {name}")
        venues = _run(con, "SELECT flow_id, venue, venue_source FROM flow_rules "
                           "WHERE venue IS NOT NULL").fetchall()
    return MatchOutput(flow_venue={int(f): str(v) for f, v, _ in venues}, tables=out,
                       flow_venue_source={int(f): str(s) for f, _, s in venues})


def _venues_only(flows: pa.Table, resolver: Resolver) -> MatchOutput:
    rules = flow_rules(flows, resolver, {})
    ids = rules.column("flow_id").to_pylist()
    venue = dict(zip(ids, rules.column("venue").to_pylist(), strict=True))
    source = dict(zip(ids, rules.column("venue_source").to_pylist(), strict=True))
    empty = {t: pa.Table.from_pylist([], schema=without_capture_id(schema))
             for t, (_temp, schema) in OUTPUTS.items()}
    return MatchOutput(flow_venue={int(f): str(v) for f, v in venue.items() if v is not None},
                       tables=empty,
                       flow_venue_source={int(f): str(source[f]) for f, v in venue.items()
                                          if v is not None})


def match_staged(stage_dir: Path, flows: pa.Table, rules: Resolver) -> MatchOutput:
    """Match the tables an ingest staged under ``stage_dir/<table>/*.parquet``."""
    files = {t: sorted((stage_dir / t).glob("*.parquet")) for t in INPUT_TABLES}
    candidates = (staged_candidates(stage_dir, files["ws_messages"])
                  if any(files[t] for t in MESSAGE_TABLES) else None)
    return match_tables(files, flows, rules, candidates=candidates)


# Tables ``rematch`` rewrites; every other table of the capture is kept as is.
REMATCHED = ("flows", *OUTPUTS)


def _partition_files(root: Path, table: str, capture_id: str) -> list[Path]:
    return sorted(store.partition_dir(root, table, capture_id).glob("*.parquet"))


Derive = Callable[[Mapping[str, Sequence[Path]], str, Mapping[str, pa.Table]],
                  dict[str, pa.Table]]
"""Makes tables from a capture's (Parquet files per table, its id, tables given as Arrow
that replace their files): ``pcapflow.why.derive``."""


def rematch_capture(root: Path, capture_id: str, resolver: Resolver,
                    derive: Derive | None = None) -> MatchOutput:
    """Re-run matching on one committed capture; swaps its results in atomically.

    Only flows (with the new venues), orders, acks, latency and unmatched are
    rewritten (``Staging.commit(tables=...)``), and the tables ``derive`` makes from
    them (``pcapflow.why``: causes, feed gaps and alerts follow the venues); if the
    capture is re-ingested between the read and the commit, the commit refuses
    (``StaleCapture``).
    """
    expect = store.fingerprint(root, capture_id)
    from .match_carry import drop_state

    drop_state(root, capture_id)  # a rotation's next command matches the set whole
    from .ingest import known

    known.drop(root, capture_id)  # (the set's flows rewritten: its next command counts them)
    files = {t: _partition_files(root, t, capture_id) for t in INPUT_TABLES}
    flow_files = _partition_files(root, "flows", capture_id)
    schema = without_capture_id(TABLES["flows"])
    flows = (pa.concat_tables([pq.read_table(f, schema=schema) for f in flow_files])
             if flow_files else pa.Table.from_pylist([], schema=schema))
    result = match_tables(files, flows, resolver)
    staging = store.Staging(root)
    try:
        flows = with_venues(flows, result.flow_venue, result.flow_venue_source)
        staging.write("flows", flows)
        derived: dict[str, pa.Table] = {}
        if derive is not None:
            every = {t: _partition_files(root, t, capture_id) for t in TABLES}
            derived = derive(every, capture_id, {**result.tables, "flows": flows})
        for table, rows in {**result.tables, **derived}.items():
            staging.write(table, rows)
        staging.commit(capture_id, tables=(*REMATCHED, *derived), expect=expect)
    except BaseException:
        staging.abort()
        raise
    return result


def rematch(root: Path, resolver: Resolver, derive: Derive | None = None
            ) -> dict[str, MatchOutput]:
    """``rematch_capture`` for every capture of the dataset at ``root``."""
    with store.locked(root):
        store.recover(root)
    ids = sorted(p.name.split("=", 1)[1] for p in (root / "captures").glob("capture_id=*"))
    return {cid: rematch_capture(root, cid, resolver, derive) for cid in ids}
