"""The matcher's prefilter: which WebSocket messages can be order traffic, decided
without JSON (and without DuckDB: the ingest runs the first pass while it writes).

How this works: see ``pipelines.match``'s module docstring ("Prefilter"). A
*needle* is substrings a payload must all contain to be a request, a reply or
an order-stream event of its flow's dialect (``ws_needles``, from the venue
rules); ``match.candidates_sql`` tests them in SQL. The first pass (does a
payload hold the first part of any needle?) runs here at ingest time, compiled,
over each batch of ``ws_messages`` rows as it is written
(``stage_ws_candidates``, a ``RowBuffers`` flush hook the ingest driver sets);
the matcher reads its side files back (``staged_candidates``).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..parsers.jitload import NUMBA, kernel
from .store import write_side_file
from .tables.schemas import TABLES, without_capture_id
from .venue_rules import rule_tables

numba = NUMBA  # (Numba itself once a kernel of this module is made: ``jitload.NUMBA``)

# --- Needles ---------------------------------------------------------------------

# A needle is substrings that a payload must all contain; a message passes when
# it holds every part of one of its group's needles. The empty needle () keeps
# every message. DuckDB's ``contains`` looks for a needle's first byte with
# memchr, then tests every position after it: a part that starts with a letter
# rarely found in market data (``id"``) is cheap, one that starts with a quote
# is not, so a key needle tests ``id"`` before the exact ``"id"``.
Needle = tuple[str, ...]
NeedleKey = tuple[str, str, str]
"""(use, dialect, direction): what a group of needles is for."""

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


@functools.cache
def rules_and_needles() -> tuple[dict[str, pa.Table], dict[NeedleKey, frozenset[Needle]]]:
    """The rule tables (``rule_tables``) and their ``ws_needles``, built once."""
    rules = rule_tables()
    return rules, ws_needles(rules)


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
    for (_use, _dialect, direction), group in rules_and_needles()[1].items():
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


@kernel(cache=True, nogil=True)
def _scan(data, offsets, select, parts, lengths, bits):
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


@kernel(cache=True, nogil=True)
def _flag_blocks(data):
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


@kernel(cache=True, nogil=True)
def _part_in(data, lo, hi, end, bit, parts, lengths, bits):
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
    # named in write order: the matcher reads them back in that order
    write_side_file(stage_dir, CANDIDATES_DIR, keep)


def staged_candidates(stage_dir: Path, ws_files: Sequence[Path],
                      skip: str | None = None) -> pa.Table | None:
    """The ingest-time scan's rows for the staged ``ws_files``, or ``None`` when
    its side files do not cover every staged row (or used other needles);
    ``skip``: side files whose names start with it are not read (a rotation's
    earlier files' scan, when only this command's rows are matched)."""
    side = sorted(p for p in (stage_dir / CANDIDATES_DIR).glob("*.arrow")
                  if skip is None or not p.name.startswith(skip))
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
    schema = without_capture_id(TABLES["ws_messages"])
    empty = pa.schema([schema.field(c) for c in _CANDIDATE_COLUMNS]).empty_table()
    return pa.concat_tables([empty, *tables])

