"""The feed rules at ingest time: market-data ids read from the payloads while they
are in memory, compiled, as narrow columns (no JSON parse in DuckDB).

How this works. ``pcapflow.feed.rule_sql`` reads a WebSocket message for a
rule when its payload passes the rule's ``like`` and parses as JSON, and then
takes the text at the first of each field's JSON paths that is not null
(``json_extract_string``), casts ids with ``TRY_CAST``. ``scan`` gives the same
answer from the payload bytes, in one compiled pass per message:

- the walk (``_walk``) checks the JSON grammar and follows the rules' paths
  (a trie of object keys and array indexes) to the values, recording each
  value's span, kind (string, integer, true/false; null reads as absent) and
  integer value;
- a ``like`` of the form ``%"X"%`` or ``%"X%`` (``_``: one character) holds for
  a well-formed payload without backslashes exactly when one of its string
  tokens is ``X`` (starts with ``X``): in such a payload every quote delimits a
  string, so a quote followed by a letter opens one;
- the rule's fields come from the recorded values as the SQL computes them.

Whatever the walk is not sure to read as DuckDB does is not guessed: a
payload with a backslash (escapes), not well-formed by the strict grammar
(DuckDB is more lenient: trailing commas, NaN), nested deeper than ``MAX_DEPTH``,
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
import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .feed_rules import FEED_RULES, FeedRule, Paths

SIDE_DIR = "_feed_scan"
"""Side directory of a staging directory: the scan's rows, one file per batch."""
MAX_DEPTH = 32
"""Nesting the walk follows; a deeper payload is passed on whole."""
MAX_INT_DIGITS = 18
"""Digits of an id read as an integer here (any such fits int64)."""

COLUMNS = pa.schema([
    ("flow_id", pa.int64()), ("ts", pa.int64()), ("stream_offset", pa.int64()),
    ("rule", pa.string()), ("stream", pa.string()), ("first_id", pa.int64()),
    ("last_id", pa.int64()), ("prev_id", pa.int64()), ("reset", pa.bool_()),
    ("exchange_ns", pa.int64()), ("symbol", pa.string()), ("payload", pa.string())])
"""A side file's rows: one per (message, rule) it takes; a row with a null ``rule``
is a message passed on whole (``payload``) for the SQL to read."""

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
        self.ok = True
        self.ok = len(self.rules) <= 32  # a rule is a bit of a pattern mask
        for r in self.rules:
            m = _LIKE.match(r.like)
            self.ok &= m is not None
        if not self.ok:
            return
        self.like = [(_LIKE.match(r.like).group(1).encode(),  # type: ignore[union-attr]
                      _LIKE.match(r.like).group(2) == '"') for r in self.rules]  # type: ignore[union-attr]
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

    def _rule(self, r: FeedRule) -> dict[str, object]:
        return {
            "require": [(self._group(p), self._const(v)) for p, v in r.require],
            "reset": [(self._group(p), self._const(v)) for p, v in r.reset],
            "stream": [self._group(p) for p in r.stream],
            "first": self._group(r.first or r.last), "last": self._group(r.last),
            "prev": self._group(r.prev), "ets": self._group(r.exchange_ts),
            "symbol": self._group(r.symbol), "unit": r.ts_unit_ns}

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
        for i, g in enumerate(self.groups):
            groups[i, : len(g)] = g
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
        width = max([len(f["require"]) for f in self.fields]  # type: ignore[arg-type]
                    + [len(f["reset"]) for f in self.fields]  # type: ignore[arg-type]
                    + [len(f["stream"]) for f in self.fields] + [1])  # type: ignore[arg-type]
        # per rule: [kind][slot] -> (group, const); kinds 0 require, 1 reset, 2 stream
        lists = np.full((R, 3, width, 2), -1, np.int64)
        scalars = np.full((R, 6), -1, np.int64)  # first, last, prev, ets, symbol, unit
        for r, f in enumerate(self.fields):
            for k, name in enumerate(("require", "reset")):
                for j, (g, c) in enumerate(f[name]):  # type: ignore[arg-type]
                    lists[r, k, j] = (g, c)
            for j, g in enumerate(f["stream"]):  # type: ignore[arg-type]
                lists[r, 2, j, 0] = g
            scalars[r] = [f["first"], f["last"], f["prev"], f["ets"], f["symbol"], f["unit"]]
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


# --- The kernel ----------------------------------------------------------------------

_QUOTE, _BSLASH = np.uint8(34), np.uint8(92)
# value kinds recorded per trie node (_OTHER: an object, an array, a real, -0, an
# integer of 19 digits: its text is DuckDB's writing of it, not read here)
_ABSENT, _STRING, _INT, _LITERAL, _OTHER = 0, 1, 2, 3, 4
# walk outcomes
_CLEAN, _UNSURE = 0, 1


@numba.njit(cache=True, nogil=True, inline="always")
def _ws(data, pos, end):
    while pos < end:
        c = data[pos]
        if c != 32 and c != 9 and c != 10 and c != 13:
            break
        pos += 1
    return pos


@numba.njit(cache=True, nogil=True, inline="always")
def _codepoint_len(c):
    if c < 0x80:
        return 1
    if c >= 0xF0:
        return 4
    if c >= 0xE0:
        return 3
    return 2


@numba.njit(cache=True, nogil=True, inline="always")
def _like_at(data, pos, end, pats, patlen, r):
    """Does pattern ``r`` match at ``pos`` (``_``: one UTF-8 character)? Returns the
    end of the match, or -1."""
    for k in range(patlen[r]):
        if pos >= end:
            return -1
        p = pats[r, k]
        if p == 95:  # "_"
            pos += _codepoint_len(data[pos])
        elif data[pos] != p:
            return -1
        else:
            pos += 1
    return pos if pos <= end else -1


@numba.njit(cache=True, nogil=True)
def _raw_like(data, start, end, pats, patlen, patclose, hits):
    """The ``like`` of each rule by a byte search (the pattern with its quotes)."""
    any_hit = False
    for r in range(patlen.shape[0]):
        hits[r] = False
        for pos in range(start, end):
            if data[pos] != _QUOTE:
                continue
            m = _like_at(data, pos + 1, end, pats, patlen, r)
            if m >= 0 and (not patclose[r] or (m < end and data[m] == _QUOTE)):
                hits[r] = True
                any_hit = True
                break
    return any_hit


@numba.njit(cache=True, nogil=True, inline="always")
def _token_like(data, a, b, pats, patlen, patclose, first, hits):
    """The ``like``s a string token ``data[a:b]`` (its content) satisfies."""
    if b <= a:
        return
    maybe = first[data[a], data[a + 1]]  # data[b] is the closing quote
    if maybe == 0:
        return
    n = b - a
    for r in range(patlen.shape[0]):
        if hits[r] or not (maybe >> r) & 1 or n < patlen[r]:
            continue  # ("_" takes one byte at least: a shorter token never matches)
        m = _like_at(data, a, b, pats, patlen, r)
        if m >= 0 and (not patclose[r] or m == b):
            hits[r] = True


@numba.njit(cache=True, nogil=True, inline="always")
def _child(data, a, b, node, node_key, node_keylen, node_idx, node_child, node_sibling,
           index):
    """The trie child of ``node`` for the key ``data[a:b]`` (``index`` < 0) or the
    array index ``index``; -1 when none."""
    c = node_child[node]
    while c >= 0:
        if index >= 0:
            if node_idx[c] == index:
                return c
        elif node_idx[c] < 0 and node_keylen[c] == b - a:
            same = True
            for k in range(b - a):
                if node_key[c, k] != data[a + k]:
                    same = False
                    break
            if same:
                return c
        c = node_sibling[c]
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _string_end(data, pos, end):
    """The closing quote of a string whose content starts at ``pos``; -1 when the
    string has a backslash or a control character, or no end."""
    while pos < end:
        c = data[pos]
        if c == _QUOTE:
            return pos
        if c == _BSLASH or c < 32:
            return -1
        pos += 1
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _number_end(data, pos, end):
    """(end, is a plain integer, digits) of a number at ``pos`` by the strict JSON
    grammar without an exponent; end -1 when not one of those."""
    p = pos
    if p < end and data[p] == 45:  # "-"
        p += 1
    if p >= end or data[p] < 48 or data[p] > 57:
        return -1, False, 0
    digits_start = p
    if data[p] == 48:
        p += 1
    else:
        while p < end and 48 <= data[p] <= 57:
            p += 1
    digits = p - digits_start
    integer = True
    if p < end and data[p] == 46:  # "."
        p += 1
        if p >= end or data[p] < 48 or data[p] > 57:
            return -1, False, 0
        while p < end and 48 <= data[p] <= 57:
            p += 1
        integer = False
    if p < end and (data[p] == 101 or data[p] == 69):  # exponent: not read here
        return -1, False, 0
    if digits > 19:
        return -1, False, 0
    return p, integer, digits


@numba.njit(cache=True, nogil=True, inline="always")
def _int_value(data, a, b):
    """``data[a:b]`` as an integer when it is ``-?[0-9]{1,18}`` (a string may have
    leading zeros: TRY_CAST reads them); (ok, value)."""
    neg = a < b and data[a] == 45
    p = a + 1 if neg else a
    if p >= b or b - p > MAX_INT_DIGITS:
        return False, 0
    v = 0
    for k in range(p, b):
        c = data[k]
        if c < 48 or c > 57:
            return False, 0
        v = v * 10 + (c - 48)
    return True, -v if neg else v


@numba.njit(cache=True, nogil=True, inline="always")
def _record(node, kind, a, b, data, kinds, starts, ends):
    kinds[node] = kind
    starts[node] = a
    ends[node] = b


@numba.njit(cache=True, nogil=True)
def _walk(data, start, end, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, pats, patlen, patclose, first, hits, kinds, starts, ends, visited, stack_node,
          stack_obj, stack_count):
    """Walk one payload (see the module docstring): ``_CLEAN`` with the ``like``
    ``hits`` and the values of the trie's nodes, or ``_UNSURE``."""
    for k in range(kinds.shape[0]):
        kinds[k] = _ABSENT
        visited[k] = False
    for r in range(hits.shape[0]):
        hits[r] = False
    depth = 0
    node = 0  # trie node of the value about to be read (-1: off the paths)
    pos = _ws(data, start, end)
    while True:
        # -- a value
        if pos >= end:
            return _UNSURE
        if node >= 0:
            if visited[node]:
                return _UNSURE  # a duplicate key on a path
            visited[node] = True
        c = data[pos]
        if c == 123 or c == 91:  # "{" "["
            if node >= 0 and requested[node]:
                _record(node, _OTHER, pos, pos, data, kinds, starts, ends)
            if depth == MAX_DEPTH:
                return _UNSURE
            stack_node[depth] = node
            stack_obj[depth] = c == 123
            stack_count[depth] = 0
            depth += 1
            pos = _ws(data, pos + 1, end)
            if pos < end and data[pos] == c + 2:  # "}" "]": empty
                depth -= 1
                pos += 1
            elif c == 123:
                # the first key
                if pos >= end or data[pos] != _QUOTE:
                    return _UNSURE
                e = _string_end(data, pos + 1, end)
                if e < 0:
                    return _UNSURE
                if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                    _token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
                parent = stack_node[depth - 1]
                node = -1 if parent < 0 else _child(data, pos + 1, e, parent, node_key,
                                                     node_keylen, node_idx, node_child,
                                                     node_sibling, -1)
                pos = _ws(data, e + 1, end)
                if pos >= end or data[pos] != 58:  # ":"
                    return _UNSURE
                pos = _ws(data, pos + 1, end)
                continue
            else:
                parent = stack_node[depth - 1]
                node = -1 if parent < 0 else _child(data, 0, 0, parent, node_key, node_keylen,
                                                     node_idx, node_child, node_sibling, 0)
                continue
        elif c == _QUOTE:
            e = _string_end(data, pos + 1, end)
            if e < 0:
                return _UNSURE
            if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                _token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
            if node >= 0 and requested[node]:
                _record(node, _STRING, pos + 1, e, data, kinds, starts, ends)
            pos = e + 1
        elif c == 116 or c == 102 or c == 110:  # true false null
            word = 4 if c != 102 else 5
            if pos + word > end:
                return _UNSURE
            ok = True
            lit = (116, 114, 117, 101, 0) if c == 116 else (
                (102, 97, 108, 115, 101) if c == 102 else (110, 117, 108, 108, 0))
            for k in range(word):
                if data[pos + k] != lit[k]:
                    ok = False
            if not ok:
                return _UNSURE
            if node >= 0 and requested[node] and c != 110:
                _record(node, _LITERAL, pos, pos + word, data, kinds, starts, ends)
            pos += word
        else:
            e, integer, digits = _number_end(data, pos, end)
            if e < 0:
                return _UNSURE
            if node >= 0 and requested[node]:
                odd = (not integer or digits == 19
                       or (digits == 1 and data[pos] == 45 and data[pos + 1] == 48))
                _record(node, _OTHER if odd else _INT, pos, e, data, kinds, starts, ends)
            pos = e
        # -- after a value: the next one in its container, or the container's end
        while True:
            pos = _ws(data, pos, end)
            if depth == 0:
                return _CLEAN if pos == end else _UNSURE
            if pos >= end:
                return _UNSURE
            c = data[pos]
            obj = stack_obj[depth - 1]
            if c == (125 if obj else 93):  # "}" "]"
                depth -= 1
                pos += 1
                continue
            if c != 44:  # ","
                return _UNSURE
            pos = _ws(data, pos + 1, end)
            parent = stack_node[depth - 1]
            stack_count[depth - 1] += 1
            if obj:
                if pos >= end or data[pos] != _QUOTE:
                    return _UNSURE
                e = _string_end(data, pos + 1, end)
                if e < 0:
                    return _UNSURE
                if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                    _token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
                node = -1 if parent < 0 else _child(data, pos + 1, e, parent, node_key,
                                                     node_keylen, node_idx, node_child,
                                                     node_sibling, -1)
                pos = _ws(data, e + 1, end)
                if pos >= end or data[pos] != 58:
                    return _UNSURE
                pos = _ws(data, pos + 1, end)
            else:
                node = -1 if parent < 0 else _child(data, 0, 0, parent, node_key, node_keylen,
                                                     node_idx, node_child, node_sibling,
                                                     stack_count[depth - 1])
            break


@numba.njit(cache=True, nogil=True, inline="always")
def _chosen(groups, g, kinds):
    """The first node of group ``g`` holding a value (coalesce), or -1."""
    if g < 0:
        return -1
    for k in range(groups.shape[1]):
        n = groups[g, k]
        if n < 0:
            break
        if kinds[n] != _ABSENT:
            return n
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _equals(data, n, c, starts, ends, consts, constlen):
    if n < 0 or ends[n] - starts[n] != constlen[c]:
        return False
    for k in range(constlen[c]):  # noqa: SIM110 (a Numba kernel: a plain loop)
        if data[starts[n] + k] != consts[c, k]:
            return False
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _as_int(data, n, kinds, starts, ends):
    """(state, value): state 0 null, 1 an integer, 2 not sure what TRY_CAST gives."""
    if n < 0:
        return 0, 0
    if kinds[n] == _LITERAL or kinds[n] == _OTHER:
        return 2, 0
    ok, v = _int_value(data, starts[n], ends[n])
    return (1, v) if ok else (2, 0)


@numba.njit(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


@numba.njit(cache=True, nogil=True)
def _scan(data, offsets, select, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, groups, consts, constlen, pats, patlen, patclose, first, lists, scalars):
    """Per selected text ``data[offsets[i]:offsets[i+1]]``: the rows of the rules it
    passes, or whole (``fallback``). Returns (row index, rule, ids, valid flags,
    reset, exchange ns, stream bytes and ends, symbol spans, fallback mask)."""
    n = select.shape[0]
    R, N = patlen.shape[0], node_idx.shape[0]
    hits = np.zeros(R, np.bool_)
    kinds = np.zeros(N, np.int64)
    starts = np.zeros(N, np.int64)
    ends = np.zeros(N, np.int64)
    visited = np.zeros(N, np.bool_)
    stack_node = np.zeros(MAX_DEPTH, np.int64)
    stack_obj = np.zeros(MAX_DEPTH, np.bool_)
    stack_count = np.zeros(MAX_DEPTH, np.int64)
    cap = 16
    row = np.empty(cap, np.int64)
    rule = np.empty(cap, np.int64)
    ints = np.empty((cap, 4), np.int64)  # first, last, prev, exchange ns
    valid = np.empty((cap, 4), np.bool_)
    reset = np.empty(cap, np.bool_)
    sym = np.empty((cap, 2), np.int64)  # start, end in data (-1: null)
    stream = np.empty(1024, np.uint8)
    stream_end = np.empty(cap, np.int64)
    fallback = np.zeros(n, np.bool_)
    out, used = 0, 0
    got = np.zeros((R, 4), np.int64)
    state = np.zeros((R, 4), np.int64)
    for i in range(n):
        if not select[i]:
            continue
        a, b = offsets[i], offsets[i + 1]
        if _walk(data, a, b, node_key, node_keylen, node_idx, node_child, node_sibling,
                 requested, pats, patlen, patclose, first, hits, kinds, starts, ends, visited,
                 stack_node, stack_obj, stack_count) != _CLEAN:
            fallback[i] = _raw_like(data, a, b, pats, patlen, patclose, hits)
            continue
        # every field of every rule passed, read first: one unsure read passes the
        # message on whole (the SQL then reads it for every rule)
        unsure = False
        for r in range(R):
            if not hits[r]:
                continue
            for f in range(4):
                nd = _chosen(groups, scalars[r, f], kinds)
                st, v = _as_int(data, nd, kinds, starts, ends)
                if f == 3 and st == 1 and abs(v) > 9_000_000_000_000_000_000 // scalars[r, 5]:
                    st = 2  # the SQL's DECIMAL -> BIGINT would overflow
                state[r, f] = st
                got[r, f] = v
                unsure |= st == 2
            for k in range(3):
                for j in range(lists.shape[2]):
                    g = lists[r, k, j, 0]
                    if g >= 0:
                        nd = _chosen(groups, g, kinds)
                        unsure |= nd >= 0 and kinds[nd] == _OTHER
            s = _chosen(groups, scalars[r, 4], kinds)
            unsure |= s >= 0 and kinds[s] == _OTHER
        if unsure:
            fallback[i] = True
            continue
        for r in range(R):
            if not hits[r]:
                continue
            keep = True
            for j in range(lists.shape[2]):
                g, c = lists[r, 0, j, 0], lists[r, 0, j, 1]
                if g >= 0 and not _equals(data, _chosen(groups, g, kinds), c, starts, ends,
                                          consts, constlen):
                    keep = False
            if not keep:
                continue
            if out == row.shape[0]:
                row, rule, reset, stream_end = (_grow(row, out + 1), _grow(rule, out + 1),
                                                _grow(reset, out + 1),
                                                _grow(stream_end, out + 1))
                big = np.empty((row.shape[0], 4), np.int64)
                big[:out] = ints[:out]
                ints = big
                bigv = np.empty((row.shape[0], 4), np.bool_)
                bigv[:out] = valid[:out]
                valid = bigv
                bigs = np.empty((row.shape[0], 2), np.int64)
                bigs[:out] = sym[:out]
                sym = bigs
            row[out], rule[out] = i, r
            for f in range(4):
                valid[out, f] = state[r, f] == 1
                ints[out, f] = got[r, f] * (scalars[r, 5] if f == 3 else 1)
            z = False
            for j in range(lists.shape[2]):
                g, c = lists[r, 1, j, 0], lists[r, 1, j, 1]
                if g >= 0 and _equals(data, _chosen(groups, g, kinds), c, starts, ends, consts,
                                      constlen):
                    z = True
            reset[out] = z
            s = _chosen(groups, scalars[r, 4], kinds)
            sym[out, 0], sym[out, 1] = (starts[s], ends[s]) if s >= 0 else (-1, -1)
            lead = True
            for j in range(lists.shape[2]):
                g = lists[r, 2, j, 0]
                if g < 0:
                    continue
                nd = _chosen(groups, g, kinds)
                size = (0 if lead else 1) + (ends[nd] - starts[nd] if nd >= 0 else 0)
                stream = _grow(stream, used + size)
                if not lead:
                    stream[used] = 32  # " "
                    used += 1
                if nd >= 0:
                    stream[used: used + ends[nd] - starts[nd]] = data[starts[nd]: ends[nd]]
                    used += ends[nd] - starts[nd]
                lead = False
            stream_end[out] = used
            out += 1
    return (row[:out], rule[:out], ints[:out], valid[:out], reset[:out], stream[:used],
            stream_end[:out], sym[:out], fallback)


# --- Batches -------------------------------------------------------------------------

def scan(rows: pa.Table, rules: tuple[FeedRule, ...] = FEED_RULES) -> pa.Table | None:
    """``COLUMNS`` rows of a batch of ``ws_messages`` (inbound text messages only):
    what ``pcapflow.feed.rule_sql`` takes from them, and the messages passed on
    whole; ``None`` when the rules cannot be compiled (``program``)."""
    prog = program(rules)
    if prog is None:
        return None
    arrays = prog.arrays()
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
            parts.append(_rows(rows.slice(start, m), chunk, data, names, out))
        start += m
    return pa.concat_tables([COLUMNS.empty_table(), *parts])


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


def _strings(data: np.ndarray, spans: np.ndarray) -> pa.Array:
    """Strings at ``spans`` (start, end; -1: null) of ``data``."""
    valid = spans[:, 0] >= 0
    lengths = np.where(valid, spans[:, 1] - spans[:, 0], 0)
    offsets = np.zeros(len(spans) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    idx = np.repeat(spans[:, 0] - offsets[:-1], lengths) + np.arange(offsets[-1])
    out = pa.Array.from_buffers(pa.large_string(), len(spans),
                                [None, pa.py_buffer(offsets), pa.py_buffer(data[idx])])
    return pc.if_else(pa.array(valid), out, pa.scalar(None, pa.large_string())).cast(pa.string())


def _rows(rows: pa.Table, chunk: pa.Array, data: np.ndarray, names: np.ndarray,
          out: tuple[np.ndarray, ...]) -> pa.Table:
    row, rule, ints, valid, reset, stream, stream_end, sym, fallback = out
    take = pa.array(row)
    ts = rows.column("ts_last").cast(pa.int64())
    stream_off = np.zeros(len(row) + 1, np.int64)
    stream_off[1:] = stream_end
    taken = pa.table({
        "flow_id": rows.column("flow_id").take(take), "ts": ts.take(take),
        "stream_offset": rows.column("stream_offset").take(take),
        "rule": pa.array(names[rule] if len(rule) else [], pa.string()),
        "stream": pa.Array.from_buffers(pa.large_string(), len(row), [
            None, pa.py_buffer(stream_off), pa.py_buffer(stream.copy())]).cast(pa.string()),
        **{name: pa.array(ints[:, f], pa.int64(), mask=~valid[:, f])
           for f, name in enumerate(("first_id", "last_id", "prev_id", "exchange_ns"))},
        "reset": pa.array(reset), "symbol": _strings(data, sym),
        "payload": pa.nulls(len(row), pa.string())})
    whole = pa.array(np.flatnonzero(fallback))
    passed = pa.table({
        "flow_id": rows.column("flow_id").take(whole), "ts": ts.take(whole),
        "stream_offset": rows.column("stream_offset").take(whole),
        **{f.name: pa.nulls(len(whole), f.type) for f in COLUMNS
           if f.name not in ("flow_id", "ts", "stream_offset", "payload")},
        "payload": chunk.take(whole)})
    return pa.concat_tables([taken.select(COLUMNS.names).cast(COLUMNS),
                             passed.select(COLUMNS.names).cast(COLUMNS)])


# --- Side files of an ingest ---------------------------------------------------------

_sequence = itertools.count()


def stage(stage_dir: Path, rows: pa.Table) -> None:
    """After ``rows`` (a batch of ``ws_messages``) were staged in ``stage_dir``: write
    their ``scan`` to its ``SIDE_DIR`` (a file per batch, even an empty one: ``staged``
    counts the rows the files cover)."""
    out = scan(rows)
    if out is None or rows.num_rows == 0:
        return
    out = out.replace_schema_metadata({_META_ROWS: str(rows.num_rows),
                                       _META_RULES: fingerprint()})
    side = stage_dir / SIDE_DIR
    side.mkdir(exist_ok=True)
    path = side / f"{os.getpid()}-{next(_sequence):012d}.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, out.schema) as writer:
        writer.write_table(out)


def staged(stage_dir: Path, ws_files: Sequence[Path]) -> pa.Table | None:
    """The scan's rows of the staged ``ws_files``, or ``None`` when its side files do
    not cover every staged row (or were made with other rules)."""
    tables, covered = [], 0
    for path in sorted((stage_dir / SIDE_DIR).glob("*.arrow")):
        with pa.OSFile(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        meta = table.schema.metadata or {}
        if meta.get(_META_RULES, b"").decode() != fingerprint():
            return None
        covered += int(meta[_META_ROWS])
        tables.append(table.replace_schema_metadata(None))
    if covered != sum(pq.read_metadata(f).num_rows for f in ws_files):
        return None
    return pa.concat_tables([COLUMNS.empty_table(), *tables])
