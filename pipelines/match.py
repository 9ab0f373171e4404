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
import itertools
import json
import os
import re
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import duckdb
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import store
from .ingest import MatchOutput
from .schemas import ACKS, LATENCY, ORDERS, TABLES, UNMATCHED
from .venue_rules import FlowFacts, Resolver, rule_tables

MESSAGE_TABLES = ("http_messages", "ws_messages", "fix_messages", "tls_records")
INPUT_TABLES = ("http_messages", "ws_messages", "fix_messages", "tls_records", "tcp_rtt")
SETUP_FILES = ("common",)
"""Run once per database: macros and the empty family outputs (``no_orders``, ``no_acks``)."""
SQL_FILES = ("rest", "websocket", "fix", "encrypted", "combine", "engine", "latency", "decompose")
"""Run in this order for every match."""
GATES = {"rest": ("rest_todo", ("rest_orders", "rest_acks")),
         "websocket": ("ws_in", ("ws_orders", "ws_acks")),
         "fix": ("fix_in", ("fix_orders", "fix_acks")),
         "encrypted": ("enc_flows", ("enc_orders", "enc_acks")),
         "engine": ("engine_events", ("engine_acks",))}
"""Per SQL file: a table it makes first (what it has to pair: the messages or
flows it reads) and the outputs it leaves empty when that table is."""
OUTPUTS = {"orders": ("out_orders", ORDERS), "acks": ("out_acks", ACKS),
           "latency": ("out_latency", LATENCY), "unmatched": ("out_unmatched", UNMATCHED)}

_FLOW_RULES = pa.schema([
    ("flow_id", pa.int64()), ("venue", pa.string()), ("dialect", pa.string()),
    ("protocol_hint", pa.string()), ("app_protocol", pa.string()),
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


@functools.cache
def _rules() -> tuple[dict[str, pa.Table], dict[tuple[str, str, str], frozenset[Needle]]]:
    """The rule tables (``rule_tables``) and their ``ws_needles``, built once."""
    rules = rule_tables()
    return rules, ws_needles(rules)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _without_capture_id(schema: pa.Schema) -> pa.Schema:
    return pa.schema([f for f in schema if f.name != "capture_id"])


def _load_inputs(con: duckdb.DuckDBPyConnection, files: Mapping[str, Sequence[Path]]) -> None:
    """A view per input table with its declared columns; missing columns (files
    written by an older pcapflow) read as NULL of their declared type (from the
    empty ``input_<table>`` tables ``_connect`` makes)."""
    for table in INPUT_TABLES:
        schema = _without_capture_id(TABLES[table])
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
                            "app_protocol", "alpn", "alpn_offered",
                            "tls_version"]).to_pylist():
        sender, target = comp_ids.get(fl["flow_id"], (None, None))
        facts = FlowFacts(flow_id=fl["flow_id"], server_ip=fl["server_ip"],
                          server_port=fl["server_port"], sni=fl["sni"],
                          http_host=fl["http_host"], app_protocol=fl["app_protocol"],
                          alpn=fl["alpn"], sender_comp_id=sender, target_comp_id=target)
        a = resolver.resolve(facts)
        for k, v in (("flow_id", fl["flow_id"]), ("venue", a.venue), ("dialect", a.dialect),
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


# --- The scan at ingest time -----------------------------------------------------
#
# The scan's first pass, done in DuckDB, reads every payload back from Parquet
# (most of the matcher's time on a market-data capture). During an ingest the
# payloads are in memory once, as Arrow arrays, when ``rows.RowBuffers`` flushes
# them: ``stage_ws_candidates`` runs the first pass there, compiled, and writes
# the text messages that pass next to the staged tables
# (``<stage>/_ws_candidates/*.arrow``); ``match_staged`` hands them to the SQL
# in place of the scan (``ws_scan``), which then holds them to whole needles
# as before. Which dialect a flow speaks is not known yet at that point, so the
# test is a superset of the matcher's: the first part of every dialect's
# needles of the message's direction, or a backslash. A rematch (committed
# partitions, no side files) and any staging the side files do not cover row
# for row run the scan in DuckDB instead.

CANDIDATES_DIR = "_ws_candidates"
"""Side directory of a staging directory: the ingest-time scan's output."""

_CANDIDATE_COLUMNS = ("flow_id", "direction", "ts_first", "ts_last", "stream_offset", "payload")
_META_ROWS, _META_PARTS = b"pcapflow.ws_rows", b"pcapflow.scan_parts"
_DIRECTION_BITS = {"out": 1, "in": 2}
_BACKSLASH = np.uint8(ord("\\"))

_SCAN_HEADS = ("/sp", "ORD", "cha", "eve", "exe", 'id"', "met", 'op"', "ord", "req", "top", "typ",
               "use")
"""The first three bytes of every dialect's needle parts (``scan_parts``), compiled
into ``_flag_blocks``. A needle whose head is missing here turns the ingest-time
scan off (the matcher then scans in DuckDB); a test keeps the two equal."""
_HEADS = tuple(tuple(np.uint8(b) for b in h.encode()) for h in _SCAN_HEADS)
_BLOCK = 64


@functools.cache
def scan_parts() -> dict[str, tuple[str, ...]] | None:
    """Per direction: the first parts of the needles of every dialect (a message
    holding none of them, nor a backslash, is no candidate of any dialect);
    ``None`` when the compiled scan cannot test them (a needle that keeps every
    message, a part shorter than three bytes or with a head not in ``_SCAN_HEADS``)."""
    parts: dict[str, set[str]] = {d: set() for d in _DIRECTION_BITS}
    for (_use, _dialect, direction), group in _rules()[1].items():
        for needle in group:
            if not needle:
                return None
            parts[direction].add(needle[0])
    # a part holding another one adds nothing
    minimal = {d: tuple(sorted(p for p in ps if not any(q != p and q in p for q in ps)))
               for d, ps in parts.items()}
    if any(len(p.encode()) < 3 or p.encode()[:3].decode("latin-1") not in _SCAN_HEADS
           for ps in minimal.values() for p in ps):
        return None
    return minimal


def scan_heads() -> set[str]:
    """The three-byte heads the compiled scan needs for the shipped rules."""
    parts = scan_parts()
    return {p.encode()[:3].decode("latin-1") for ps in (parts or {}).values() for p in ps}


@functools.cache
def _part_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``scan_parts`` as the kernel reads them: bytes (padded), lengths, directions."""
    parts = scan_parts() or {}
    every = sorted({p for ps in parts.values() for p in ps})
    encoded = [p.encode() for p in every]
    table = np.zeros((len(every), max(map(len, encoded), default=1)), np.uint8)
    for i, b in enumerate(encoded):
        table[i, : len(b)] = np.frombuffer(b, np.uint8)
    lengths = np.array([len(b) for b in encoded], np.int64)
    bits = np.array([sum(bit for d, bit in _DIRECTION_BITS.items() if p in parts[d])
                     for p in every], np.uint8)
    return table, lengths, bits


def scan_mask(rows: pa.Table) -> np.ndarray:
    """Per ``ws_messages`` row: a text message holding a needle part of its
    direction (``scan_parts``) or a backslash."""
    def equal(column: str, value: str) -> np.ndarray:
        return pc.fill_null(pc.equal(rows.column(column), value), False).to_numpy(
            zero_copy_only=False)

    n = rows.num_rows
    text = equal("opcode", "text")
    select = np.zeros(n, np.uint8)
    for d, bit in _DIRECTION_BITS.items():
        select[text & equal("direction", d)] = bit
    out = np.zeros(n, np.bool_)
    start = 0
    parts, lengths, bits = _part_arrays()
    for chunk in rows.column("payload").chunks:
        m = len(chunk)
        sel = select[start : start + m]
        if chunk.null_count:
            sel = np.where(chunk.is_valid().to_numpy(zero_copy_only=False), sel, 0)
        large = pa.types.is_large_string(chunk.type)
        if not (large or pa.types.is_string(chunk.type)):
            chunk, large = chunk.cast(pa.large_string()), True
        _, offsets_buf, data_buf = chunk.buffers()
        dtype = np.dtype(np.int64 if large else np.int32)
        offsets = np.frombuffer(offsets_buf, dtype, count=m + 1,
                                offset=chunk.offset * dtype.itemsize).astype(np.int64)
        first, last = int(offsets[0]), int(offsets[-1])
        if data_buf is not None and last > first and sel.any():
            data = np.frombuffer(data_buf, np.uint8, count=last - first, offset=first)
            out[start : start + m] = _scan(data, offsets - first, sel, parts, lengths, bits)
        start += m
    return out


@numba.njit(cache=True, nogil=True)
def _scan(data, offsets, select, parts, lengths, bits):  # type: ignore[no-untyped-def]
    """``scan_mask`` of the texts ``data[offsets[i]:offsets[i + 1]]``: ``select[i]``
    is the direction bit of text i (0: not a text message). Only the 64-byte
    blocks ``_flag_blocks`` flags are looked at, exactly."""
    flags = _flag_blocks(data)
    out = np.zeros(select.shape[0], np.bool_)
    for i in range(select.shape[0]):
        start, end = offsets[i], offsets[i + 1]
        if select[i] == 0 or start == end:
            continue
        for block in range(start // _BLOCK, (end - 1) // _BLOCK + 1):
            if flags[block] and _part_in(data, max(start, block * _BLOCK),
                                         min(end, (block + 1) * _BLOCK), end, select[i],
                                         parts, lengths, bits):
                out[i] = True
                break
    return out


@numba.njit(cache=True, nogil=True)
def _flag_blocks(data):  # type: ignore[no-untyped-def]
    """Per 64-byte block of ``data``: does a backslash or a head of ``_SCAN_HEADS``
    begin there? (One loop LLVM vectorises, the heads unrolled.)"""
    n = data.shape[0]
    flags = np.ones((n + _BLOCK - 1) // _BLOCK, np.bool_)  # the tail: looked at exactly
    whole = max(n - 2, 0) // _BLOCK  # the blocks whose bytes all have two successors
    for block in range(whole):
        w = data[block * _BLOCK : (block + 1) * _BLOCK + 2]
        hit = False
        for j in range(_BLOCK):
            a, b, c = w[j], w[j + 1], w[j + 2]
            h = a == _BACKSLASH
            for head in numba.literal_unroll(_HEADS):
                h |= (a == head[0]) & (b == head[1]) & (c == head[2])
            hit |= h
        flags[block] = hit
    return flags


@numba.njit(cache=True, nogil=True)
def _part_in(data, lo, hi, end, bit, parts, lengths, bits):  # type: ignore[no-untyped-def]
    """Does a backslash, or a part of direction ``bit``, begin in ``data[lo:hi]``
    (in a text ending at ``end``)?"""
    for j in range(lo, hi):
        if data[j] == _BACKSLASH:
            return True
        for k in range(parts.shape[0]):
            if bits[k] & bit == 0 or j + lengths[k] > end:
                continue
            m = 0
            while m < lengths[k] and data[j + m] == parts[k, m]:
                m += 1
            if m == lengths[k]:
                return True
    return False


_sequence = itertools.count()


def stage_ws_candidates(stage_dir: Path, rows: pa.Table) -> None:
    """After ``rows`` (a batch of ``ws_messages``) were staged in ``stage_dir``:
    write the rows passing ``scan_mask`` to its ``CANDIDATES_DIR`` (one file per
    batch, even an empty one: the matcher counts the rows the files cover)."""
    parts = scan_parts()
    if parts is None or rows.num_rows == 0:
        return
    keep = rows.select(list(_CANDIDATE_COLUMNS)).filter(pa.array(scan_mask(rows)))
    keep = keep.replace_schema_metadata({_META_ROWS: str(rows.num_rows),
                                         _META_PARTS: json.dumps(parts)})
    side = stage_dir / CANDIDATES_DIR
    side.mkdir(exist_ok=True)
    # named in write order: the matcher reads them back in that order
    path = side / f"{os.getpid()}-{next(_sequence):012d}.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, keep.schema) as writer:
        writer.write_table(keep)


def staged_candidates(stage_dir: Path, ws_files: Sequence[Path]) -> pa.Table | None:
    """The ingest-time scan's rows for the staged ``ws_files``, or ``None`` when
    its side files do not cover every staged row (or used other needles)."""
    side = sorted((stage_dir / CANDIDATES_DIR).glob("*.arrow"))
    want = json.dumps(scan_parts())
    tables, covered = [], 0
    for path in side:
        with pa.OSFile(str(path)) as source:  # read, not mapped: the rows outlive the file
            table = pa.ipc.open_file(source).read_all()
        meta = table.schema.metadata or {}
        if meta.get(_META_PARTS, b"").decode() != want:
            return None
        covered += int(meta[_META_ROWS])
        tables.append(table.replace_schema_metadata(None))
    if covered != sum(pq.read_metadata(f).num_rows for f in ws_files):
        return None
    schema = _without_capture_id(TABLES["ws_messages"])
    empty = pa.schema([schema.field(c) for c in _CANDIDATE_COLUMNS]).empty_table()
    return pa.concat_tables([empty, *tables])


# --- Running the SQL -------------------------------------------------------------


_DB: tuple[int, duckdb.DuckDBPyConnection] | None = None
_DB_LOCK = threading.Lock()
_INHERITED: list[duckdb.DuckDBPyConnection] = []


def _database() -> duckdb.DuckDBPyConnection:
    """The process's in-memory database (its first connection), set up once
    (``SETUP_FILES``, the empty ``input_<table>`` tables)."""
    global _DB
    with _DB_LOCK:
        if _DB is not None and _DB[0] == os.getpid():
            return _DB[1]
        if _DB is not None:  # inherited through a fork that bypassed _close_before_fork:
            _INHERITED.append(_DB[1])  # never closed here, its threads are the parent's
        db = duckdb.connect()
        for name in SETUP_FILES:
            db.execute(sql_text(name))
        for table in INPUT_TABLES:
            db.register("_empty", _without_capture_id(TABLES[table]).empty_table())
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


def _run_sql(con: duckdb.DuckDBPyConnection) -> None:
    """``SQL_FILES`` in order; a gated file whose gate table is empty stops after
    making it, its outputs empty (``GATES``)."""
    for name in SQL_FILES:
        gate_table, outputs = GATES.get(name, (None, ()))
        for statement in _parsed(sql_text(name)):
            con.execute(statement)
            if gate_table is None or not statement.query.lstrip().startswith(
                    f"CREATE OR REPLACE TEMP TABLE {gate_table} AS"):
                continue
            if _run(con, f"SELECT count(*) FROM (FROM {gate_table} LIMIT 1)").fetchone() == (0,):
                for out in outputs:
                    empty = "no_acks" if out.endswith("_acks") else "no_orders"
                    _run(con, f"CREATE OR REPLACE TEMP TABLE {out} AS FROM {empty}")
                break


@contextmanager
def matched(files: Mapping[str, Sequence[Path]], flows: pa.Table, resolver: Resolver, *,
            prefilter: bool = True,
            candidates: pa.Table | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection on which every SQL file has run over the Parquet ``files``
    per table (its temp tables open to look at); closed on exit.

    ``prefilter=False`` reads every WebSocket text message (the reference the
    prefilter must agree with). ``candidates``: the ingest-time scan's rows
    (``staged_candidates``), read instead of scanning ``ws_messages``.
    """
    scanned = prefilter and candidates is not None
    # Past the scan the SQL reads a few thousand rows, where DuckDB's threads
    # cost more than they give.
    con = _connect(1 if scanned else None)
    try:
        _load_inputs(con, files)
        rules, needles = _rules()
        for name, table in rules.items():
            con.register(name, table)
        rules_by_flow = flow_rules(flows, resolver, _comp_ids(con))
        con.register("flow_rules", rules_by_flow)
        con.register("flow_handshake", flows.select(["flow_id", "first_ts", "handshake_rtt_ns"]))
        if scanned:
            con.register("ws_scan", candidates)
        dialects = set(rules_by_flow.column("dialect").to_pylist())
        _run(con, candidates_sql(needles, dialects, prefilter, scanned))
        _run_sql(con)
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
    with matched(files, flows, resolver, prefilter=prefilter, candidates=candidates) as con:
        out: dict[str, pa.Table] = {}
        for table, (temp, schema) in OUTPUTS.items():
            target = _without_capture_id(schema)
            cols = ", ".join(f'"{f.name}"' for f in target)
            out[table] = _cast(con.sql(f"SELECT {cols} FROM {temp}").to_arrow_table(), target)
        venues = _run(con, "SELECT flow_id, venue FROM flow_rules WHERE venue IS NOT NULL")
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
    candidates = (staged_candidates(stage_dir, files["ws_messages"])
                  if any(files[t] for t in MESSAGE_TABLES) else None)
    return match_tables(files, flows, rules, candidates=candidates)


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
