"""The feed rules at ingest time: market-data ids read from the payloads while they
are in memory, compiled, as narrow columns (no JSON parse in DuckDB).

How this works. ``pcapflow.feed.rule_sql`` reads a WebSocket message for a
rule when its payload passes the rule's ``like`` and parses as JSON, and then
takes the text at the first of each field's JSON paths that is not null
(``json_extract_string``), casts ids with ``TRY_CAST``. ``scan`` gives the same
answer from the payload bytes, in one compiled pass per message:

- the walk (``feed_walk._walk``) checks the JSON grammar and follows the rules' paths
  (a trie of object keys and array indexes) to the values, recording each
  value's span, kind (string, integer, true/false; null reads as absent) and
  integer value;
- a ``like`` of the form ``%"X"%`` or ``%"X%`` (``_``: one character) holds for
  a well-formed payload without backslashes exactly when one of its string
  tokens is ``X`` (starts with ``X``): in such a payload every quote delimits a
  string, so a quote followed by a letter opens one;
- the rule's fields come from the recorded values as the SQL computes them.

(``feed_tokens``: strings are found 8 bytes at a time and the arrays of price levels,
most of a depth update's bytes, read in one tight loop; ``feed_walk._match``: a payload
spelt as an earlier clean one, its keys and brackets the same bytes, is read by that
one's template (its literal bytes compared 8 at a time, only its values read) rather
than walked, and the rules' fields read from the template's slots it chose once (its
plan), the symbols' and streams' codes remembered by their bytes; ``fast=False`` walks a
byte and a token at a time, with the same outcome.)

Whatever the walk is not sure to read as DuckDB does is not guessed: a
payload with a backslash (escapes), not well-formed by the strict grammar
(DuckDB is more lenient: trailing commas, NaN), nested deeper than ``feed_walk.MAX_DEPTH``,
with a number in exponent form or of over 19 digits, a duplicate key on a
rule's path, or a value at a path that is an object, an array, a real, or an id
that is not a plain integer, is passed on whole (its payload kept) when it
passes a ``like`` by a plain byte search, and ``pcapflow.feed`` runs the rules'
SQL over those payloads only. A test compares both ways on the samples and on
generated payloads (``tests/pipelines/test_feed_scan.py``).

At ingest the scan runs on each ``ws_messages`` batch as it is written (a
``RowBuffers`` flush hook, next to the matcher's prefilter) and writes its rows
to a side directory of the staging (``SIDE_DIR``); ``staged`` reads them back for
``pcapflow.why`` when they cover every staged message, else ``None`` (resumed
captures, a rematch: the SQL reads the payloads then).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .feed_rules import FEED_RULES, FeedRule, Paths
from .feed_walk import _scan
from .store import write_side_file

SIDE_DIR = "_feed_scan"
"""Side directory of a staging directory: the scan's rows, one file per batch."""

_DICT = pa.dictionary(pa.int32(), pa.string())
COLUMNS = pa.schema([
    ("flow_id", pa.int64()), ("ts", pa.int64()), ("stream_offset", pa.int64()),
    ("rule", _DICT), ("stream", _DICT), ("first_id", pa.int64()),
    ("last_id", pa.int64()), ("prev_id", pa.int64()), ("reset", pa.bool_()),
    ("exchange_ns", pa.int64()), ("symbol", _DICT), ("payload", pa.string())])
"""A side file's rows: one per (message, rule) it takes; a row with a null ``rule``
is a message passed on whole (``payload``) for the SQL to read. The names are
dictionary-encoded (a few distinct ones per file: 4 bytes a row each)."""

_META_ROWS, _META_RULES = b"pcapflow.ws_rows", b"pcapflow.feed_rules"

# --- The rules as arrays -----------------------------------------------------------

_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[([0-9]+)\]")
_LIKE = re.compile(r'^%"([^"%\\]+)("?)%$')


def _steps(path: str) -> list[str | int] | None:
    """``$.a[0].b`` -> ["a", 0, "b"]; ``None`` for a path of another shape."""
    if not path.startswith("$"):
        return None
    out: list[str | int] = []
    pos = 1
    for m in _STEP.finditer(path, 1):
        if m.start() != pos:
            return None
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    return out if pos == len(path) and out else None


class _Fields(NamedTuple):
    """One rule's fields: groups of paths (coalesce) and constants, by index."""

    require: list[tuple[int, int]]  # (group, constant): must be equal
    reset: list[tuple[int, int]]  # (group, constant): a snapshot when equal
    stream: list[int]  # groups joined by " "
    scalars: list[int]  # groups of first, last, prev, exchange ts, symbol; the ts unit


class _Program:
    """``FEED_RULES`` as the kernel reads them (see the module docstring)."""

    def __init__(self, rules: Sequence[FeedRule]) -> None:
        self.rules = tuple(rules)
        # trie: node 0 is "$"; children by key (str) or index (int)
        self.keys: list[str | int | None] = [None]
        self.parent: list[int] = [-1]
        self.path_node: dict[str, int] = {}
        self.groups: list[tuple[int, ...]] = []
        self.consts: list[bytes] = []
        matches = [_LIKE.match(r.like) for r in self.rules]
        # a rule is a bit of a pattern mask: 32 at most
        self.ok = len(self.rules) <= 32 and all(m is not None for m in matches)
        if not self.ok:
            return
        self.like = [(m.group(1).encode(), m.group(2) == '"') for m in matches if m is not None]
        self.fields = [self._rule(r) for r in self.rules]

    def _node(self, path: str) -> int:
        if path in self.path_node:
            return self.path_node[path]
        steps = _steps(path)
        if steps is None:
            self.ok = False
            return -1
        node = 0
        for s in steps:
            child = next((i for i, (k, p) in enumerate(zip(self.keys, self.parent, strict=True))
                          if p == node and type(k) is type(s) and k == s), None)
            if child is None:
                self.keys.append(s)
                self.parent.append(node)
                child = len(self.keys) - 1
            node = child
        self.path_node[path] = node
        return node

    def _group(self, paths: Paths) -> int:
        if not paths:
            return -1
        g = tuple(self._node(p) for p in paths)
        if g not in self.groups:
            self.groups.append(g)
        return self.groups.index(g)

    def _const(self, value: str) -> int:
        b = value.encode()
        if b not in self.consts:
            self.consts.append(b)
        return self.consts.index(b)

    def _rule(self, r: FeedRule) -> _Fields:
        return _Fields(
            require=[(self._group(p), self._const(v)) for p, v in r.require],
            reset=[(self._group(p), self._const(v)) for p, v in r.reset],
            stream=[self._group(p) for p in r.stream],
            scalars=[self._group(r.first or r.last), self._group(r.last), self._group(r.prev),
                     self._group(r.exchange_ts), self._group(r.symbol), r.ts_unit_ns])

    @functools.cached_property
    def _arrays(self) -> tuple[np.ndarray, ...]:
        return self.arrays()

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The trie, groups, constants, patterns and rule fields as NumPy arrays."""
        n = len(self.keys)
        keys = [k.encode() if isinstance(k, str) else b"" for k in self.keys]
        node_key = _pad(keys)
        node_keylen = np.array([len(k) for k in keys], np.int64)
        node_idx = np.array([k if isinstance(k, int) else -1 for k in self.keys], np.int64)
        # children as linked lists: first child, next sibling
        node_child = np.full(n, -1, np.int64)
        node_sibling = np.full(n, -1, np.int64)
        for c in range(n - 1, 0, -1):
            node_sibling[c] = node_child[self.parent[c]]
            node_child[self.parent[c]] = c
        requested = np.zeros(n, np.bool_)
        requested[list(self.path_node.values())] = True
        groups = np.full((max(len(self.groups), 1), max(map(len, self.groups), default=1)), -1,
                         np.int64)
        for i, nodes in enumerate(self.groups):
            groups[i, : len(nodes)] = nodes
        consts = _pad(self.consts)
        constlen = np.array([len(c) for c in self.consts] or [0], np.int64)
        pats = _pad([p for p, _ in self.like])
        patlen = np.array([len(p) for p, _ in self.like], np.int64)
        patclose = np.array([c for _, c in self.like], np.bool_)
        # per first two bytes of a string token (its second may be the closing
        # quote): the patterns that may match it, as bits ("_": any byte)
        first = np.zeros((256, 256), np.uint32)
        for r, (pat, _) in enumerate(self.like):
            one = slice(None) if pat[:1] == b"_" else pat[0]
            two = slice(None) if len(pat) < 2 or pat[1:2] == b"_" or pat[:1] == b"_" else pat[1]
            first[one, two] |= 1 << r
        R = len(self.rules)
        width = max([len(f.require) for f in self.fields] + [len(f.reset) for f in self.fields]
                    + [len(f.stream) for f in self.fields] + [1])
        # per rule: [kind][slot] -> (group, const); kinds 0 require, 1 reset, 2 stream
        lists = np.full((R, 3, width, 2), -1, np.int64)
        scalars = np.full((R, 6), -1, np.int64)  # first, last, prev, ets, symbol, unit
        for r, f in enumerate(self.fields):
            for k, pairs in enumerate((f.require, f.reset)):
                for j, (g, c) in enumerate(pairs):
                    lists[r, k, j] = (g, c)
            for j, g in enumerate(f.stream):
                lists[r, 2, j, 0] = g
            scalars[r] = f.scalars
        return (node_key, node_keylen, node_idx, node_child, node_sibling, requested, groups,
                consts, constlen, pats, patlen, patclose, first, lists, scalars)


def _pad(items: list[bytes]) -> np.ndarray:
    out = np.zeros((max(len(items), 1), max(map(len, items), default=1) or 1), np.uint8)
    for i, b in enumerate(items):
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


@functools.cache
def program(rules: tuple[FeedRule, ...] = FEED_RULES) -> _Program | None:
    """The compiled form of ``rules``; ``None`` when a rule has a ``like`` or a path
    the kernel does not read (then the SQL reads every payload)."""
    p = _Program(rules)
    return p if p.ok else None


@functools.cache
def fingerprint(rules: tuple[FeedRule, ...] = FEED_RULES) -> str:
    """What a side file was made with: files of other rules are not read."""
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]


# --- Batches -------------------------------------------------------------------------

def scan(rows: pa.Table, rules: tuple[FeedRule, ...] = FEED_RULES) -> pa.Table | None:
    """``COLUMNS`` rows of a batch of ``ws_messages`` (inbound text messages only):
    what ``pcapflow.feed.rule_sql`` takes from them, and the messages passed on
    whole; ``None`` when the rules cannot be compiled (``program``)."""
    prog = program(rules)
    if prog is None:
        return None
    arrays = prog._arrays  # (made once per program; the kernel only reads them)
    names = np.array([r.name for r in prog.rules], dtype=object)
    select = _equal(rows, "opcode", "text") & _equal(rows, "direction", "in")
    parts = []
    start = 0
    for chunk in rows.column("payload").chunks:
        m = len(chunk)
        sel = select[start: start + m]
        if chunk.null_count:
            sel = sel & chunk.is_valid().to_numpy(zero_copy_only=False)
        if sel.any():
            data, offsets = _buffers(chunk)
            out = _scan(data, offsets, sel, *arrays)
            parts.append(_rows(rows.slice(start, m), chunk, names, out))
        start += m
    # one dictionary per column (an IPC file holds one per field)
    return pa.concat_tables([COLUMNS.empty_table(), *parts]).unify_dictionaries().combine_chunks()


def _equal(rows: pa.Table, column: str, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(rows.column(column), value), False).to_numpy(
        zero_copy_only=False)


def _buffers(chunk: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The bytes and the (rebased) offsets of a string array."""
    large = pa.types.is_large_string(chunk.type)
    if not (large or pa.types.is_string(chunk.type)):
        chunk, large = chunk.cast(pa.large_string()), True
    _, offsets_buf, data_buf = chunk.buffers()
    dtype = np.dtype(np.int64 if large else np.int32)
    offsets = np.frombuffer(offsets_buf, dtype, count=len(chunk) + 1,
                            offset=chunk.offset * dtype.itemsize).astype(np.int64)
    first, last = int(offsets[0]), int(offsets[-1])
    if data_buf is None or last == first:
        return np.zeros(1, np.uint8), offsets - first
    return np.frombuffer(data_buf, np.uint8, count=last - first, offset=first), offsets - first


def _dictionary(codes: np.ndarray, data: np.ndarray, ends: np.ndarray) -> pa.Array:
    """The kernel's codes (-1: null) of the strings of ``data`` ending at ``ends`` (in
    order of first appearance: what ``pc.dictionary_encode`` gives) as ``_DICT``."""
    offsets = np.zeros(len(ends) + 1, np.int64)
    offsets[1:] = ends
    words = pa.Array.from_buffers(pa.large_string(), len(ends),
                                  [None, pa.py_buffer(offsets), pa.py_buffer(data.copy())])
    nulls = codes < 0
    indices = pa.array(codes, pa.int32(), mask=nulls if nulls.any() else None)
    return pa.DictionaryArray.from_arrays(indices, words.cast(pa.string()))


def _ints(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """int64 ``values`` (contiguous), null where not ``valid``."""
    nulls = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(values),
                                 [nulls, pa.py_buffer(np.ascontiguousarray(values))])


def _rows(rows: pa.Table, chunk: pa.Array, names: np.ndarray,
          out: tuple[np.ndarray, ...]) -> pa.Table:
    """``COLUMNS`` rows of the kernel's ``out`` over ``chunk`` (the payloads of ``rows``),
    made as those types (no cast of a table; the messages passed on whole, when there
    are any, after the rows)."""
    (row, rule, ints, valid, reset, stream_code, stream, stream_end, sym_code, symbol, sym_end,
     fallback) = out

    def keys(at: np.ndarray) -> list[pa.ChunkedArray]:
        take = pa.array(at)
        return [rows.column("flow_id").take(take).cast(pa.int64()),
                rows.column("ts_last").take(take).cast(pa.int64()),
                rows.column("stream_offset").take(take).cast(pa.int64())]

    n = len(row)
    taken = pa.Table.from_arrays([
        *keys(row),
        pa.DictionaryArray.from_arrays(pa.array(rule, pa.int32()),
                                       pa.array(names.tolist(), pa.string())),
        _dictionary(stream_code, stream, stream_end),
        *(_ints(ints[f], valid[f]) for f in range(3)),  # first, last, prev
        pa.array(reset, pa.bool_()),
        _ints(ints[3], valid[3]),  # exchange_ns
        _dictionary(sym_code, symbol, sym_end),
        pa.nulls(n, pa.string())], schema=COLUMNS)
    if not fallback.any():
        return taken
    whole = np.flatnonzero(fallback)
    passed = pa.Table.from_arrays([
        *keys(whole),
        *(pa.nulls(len(whole), f.type) for f in COLUMNS
          if f.name not in ("flow_id", "ts", "stream_offset", "payload")),
        chunk.take(pa.array(whole)).cast(pa.string())], schema=COLUMNS)
    return pa.concat_tables([taken, passed])


# --- Side files of an ingest ---------------------------------------------------------

def stage(stage_dir: Path, rows: pa.Table) -> None:
    """After ``rows`` (a batch of ``ws_messages``) were staged in ``stage_dir``: write
    their ``scan`` to its ``SIDE_DIR`` (a file per batch, even an empty one: ``staged``
    counts the rows the files cover)."""
    out = scan(rows)
    if out is None or rows.num_rows == 0:
        return
    out = out.replace_schema_metadata({_META_ROWS: str(rows.num_rows),
                                       _META_RULES: fingerprint()})
    write_side_file(stage_dir, SIDE_DIR, out)


def staged_parts(stage_dir: Path, ws_files: Sequence[Path]) -> list[Path] | None:
    """The side files of the staged ``ws_files``, in the order ``staged`` reads them, or
    ``None`` when they do not cover every staged row (or were made with other rules);
    only their schemas are read (``read_part`` reads one)."""
    paths, covered = sorted((stage_dir / SIDE_DIR).glob("*.arrow")), 0
    for path in paths:
        with pa.OSFile(str(path)) as source:
            meta = pa.ipc.open_file(source).schema.metadata or {}
        if meta.get(_META_RULES, b"").decode() != fingerprint():
            return None
        covered += int(meta[_META_ROWS])
    if covered != sum(pq.read_metadata(f).num_rows for f in ws_files):
        return None
    return paths


def read_part(path: Path) -> pa.Table:
    """One side file's rows (``COLUMNS``)."""
    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all().replace_schema_metadata(None)


def staged(stage_dir: Path, ws_files: Sequence[Path]) -> pa.Table | None:
    """The scan's rows of the staged ``ws_files``, or ``None`` when its side files do
    not cover every staged row (or were made with other rules)."""
    paths = staged_parts(stage_dir, ws_files)
    if paths is None:
        return None
    return pa.concat_tables([COLUMNS.empty_table(), *map(read_part, paths)])
