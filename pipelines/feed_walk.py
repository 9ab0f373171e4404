"""The compiled walk of ``pipelines.feed_scan``: one JSON payload's values at the feed
rules' paths, and the rules' rows from them.

How this works: ``feed_scan``'s module docstring (what is read here, what is
handed back whole). The arrays the kernels take are ``feed_scan._Program.arrays``.
"""

from __future__ import annotations

import numpy as np

from ..parsers.jitload import install as _lighter_kernel_loads
from ..parsers.jitload import kernel
from .feed_tokens import MAX_DEPTH, levels, like_at, string_end, string_end_bytes, token_like

_lighter_kernel_loads()  # cached kernels load without Numba's compiler set-up

MAX_INT_DIGITS = 18
"""Digits of an id read as an integer here (any such fits int64)."""

# --- The kernel ----------------------------------------------------------------------

_QUOTE, _BSLASH = np.uint8(34), np.uint8(92)
# value kinds recorded per trie node (_OTHER: an object, an array, a real, -0, an
# integer of 19 digits: its text is DuckDB's writing of it, not read here)
_ABSENT, _STRING, _INT, _LITERAL, _OTHER = 0, 1, 2, 3, 4
# walk outcomes
_CLEAN, _UNSURE = 0, 1


@kernel(cache=True, nogil=True, inline="always")
def _ws(data, pos, end):
    while pos < end:
        c = data[pos]
        if c != 32 and c != 9 and c != 10 and c != 13:
            break
        pos += 1
    return pos


@kernel(cache=True, nogil=True)
def _raw_like(data, start, end, pats, patlen, patclose, hits):
    """The ``like`` of each rule by a byte search (the pattern with its quotes)."""
    any_hit = False
    for r in range(patlen.shape[0]):
        hits[r] = False
        for pos in range(start, end):
            if data[pos] != _QUOTE:
                continue
            m = like_at(data, pos + 1, end, pats, patlen, r)
            if m >= 0 and (not patclose[r] or (m < end and data[m] == _QUOTE)):
                hits[r] = True
                any_hit = True
                break
    return any_hit


@kernel(cache=True, nogil=True, inline="always")
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


@kernel(cache=True, nogil=True, inline="always")
def _string_end(data, pos, end, fast):
    """``feed_tokens.string_end``; a byte at a time unless ``fast``."""
    return string_end(data, pos, end) if fast else string_end_bytes(data, pos, end)


@kernel(cache=True, nogil=True, inline="always")
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


@kernel(cache=True, nogil=True, inline="always")
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


@kernel(cache=True, nogil=True, inline="always")
def _record(node, kind, a, b, data, kinds, starts, ends):
    kinds[node] = kind
    starts[node] = a
    ends[node] = b


@kernel(cache=True, nogil=True)
def _walk(data, start, end, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, pats, patlen, patclose, first, hits, kinds, starts, ends, visited, stack_node,
          stack_obj, stack_count, fast):
    """Walk one payload (see the module docstring): ``_CLEAN`` with the ``like``
    ``hits`` and the values of the trie's nodes, or ``_UNSURE``. ``fast``: strings 8
    bytes at a time and compact price levels in one go (``feed_tokens``; the same
    outcome as without)."""
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
        skipped = -1
        if fast and c == 91 and (node < 0 or node_child[node] < 0):
            # an array no rule reads inside (off the paths, or at a leaf: a rule that
            # reads it takes it as an object's or array's text, ``_OTHER``): price levels?
            skipped = levels(data, pos, end, depth, pats, patlen, patclose, first, hits)
        if skipped >= 0:
            if node >= 0 and requested[node]:
                _record(node, _OTHER, pos, pos, data, kinds, starts, ends)
            pos = skipped
        elif c == 123 or c == 91:  # "{" "["
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
                e = _string_end(data, pos + 1, end, fast)
                if e < 0:
                    return _UNSURE
                if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                    token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
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
            e = _string_end(data, pos + 1, end, fast)
            if e < 0:
                return _UNSURE
            if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
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
                e = _string_end(data, pos + 1, end, fast)
                if e < 0:
                    return _UNSURE
                if e > pos + 1 and first[data[pos + 1], data[pos + 2]]:
                    token_like(data, pos + 1, e, pats, patlen, patclose, first, hits)
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


@kernel(cache=True, nogil=True, inline="always")
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


@kernel(cache=True, nogil=True, inline="always")
def _equals(data, n, c, starts, ends, consts, constlen):
    if n < 0 or ends[n] - starts[n] != constlen[c]:
        return False
    for k in range(constlen[c]):  # noqa: SIM110 (a Numba kernel: a plain loop)
        if data[starts[n] + k] != consts[c, k]:
            return False
    return True


@kernel(cache=True, nogil=True, inline="always")
def _as_int(data, n, kinds, starts, ends):
    """(state, value): state 0 null, 1 an integer, 2 not sure what TRY_CAST gives."""
    if n < 0:
        return 0, 0
    if kinds[n] == _LITERAL or kinds[n] == _OTHER:
        return 2, 0
    ok, v = _int_value(data, starts[n], ends[n])
    return (1, v) if ok else (2, 0)


@kernel(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    out[: a.shape[0]] = a
    return out


@kernel(cache=True, nogil=True, inline="always")
def _hash(buf, a, b):
    """FNV-1a of ``buf[a:b]`` (int64, wrapping)."""
    h = np.int64(-3750763034362895579)
    for k in range(a, b):
        h = (h ^ np.int64(buf[k])) * np.int64(1099511628211)
    return h


@kernel(cache=True, nogil=True, inline="always")
def _same(buf, s, e, a, b):
    """``buf[s:e] == buf[a:b]``."""
    if e - s != b - a:
        return False
    for k in range(b - a):  # noqa: SIM110 (a Numba kernel: a plain loop)
        if buf[s + k] != buf[a + k]:
            return False
    return True


@kernel(cache=True, nogil=True, inline="always")
def _find(buf, a, b, ends, table, last):
    """The code of the string ``buf[a:b]`` among those before it in ``buf`` (string
    ``k`` ends at ``ends[k]``, the next starts there; ``a`` is where the next would),
    ``last`` (a code, -1: none) tried first, then ``table`` (open addressing of the
    codes by ``_hash``; -1: free; its size a power of two over twice their count);
    not there: ``-1 - `` the free slot it goes in (``_add``)."""
    if last >= 0 and _same(buf, ends[last - 1] if last > 0 else 0, ends[last], a, b):
        return last
    mask = table.shape[0] - 1
    slot = _hash(buf, a, b) & mask
    while True:
        c = table[slot]
        if c < 0:
            return -1 - slot
        if _same(buf, ends[c - 1] if c > 0 else 0, ends[c], a, b):
            return c
        slot = (slot + 1) & mask


@kernel(cache=True, nogil=True)
def _add(buf, b, ends, n, table, slot):
    """``buf[ends[n - 1]:b]`` kept as string ``n`` (``_find`` gave ``-1 - slot``): (the
    count of strings, ends, table). Codes go in order of first appearance, as
    ``pyarrow.compute.dictionary_encode`` numbers them."""
    ends = _grow(ends, n + 1)
    ends[n] = b
    table[slot] = n
    n += 1
    if 2 * n > table.shape[0]:
        table = np.full(2 * table.shape[0], -1, np.int64)
        mask = table.shape[0] - 1
        for c in range(n):
            slot = _hash(buf, ends[c - 1] if c > 0 else 0, ends[c]) & mask
            while table[slot] >= 0:
                slot = (slot + 1) & mask
            table[slot] = c
    return n, ends, table


@kernel(cache=True, nogil=True)
def _scan(data, offsets, select, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, groups, consts, constlen, pats, patlen, patclose, first, lists, scalars,
          fast=True):
    """Per selected text ``data[offsets[i]:offsets[i+1]]``: the rows of the rules it
    passes, or whole (``fallback``); ``fast``: see ``_walk``. Returns (row index, rule,
    ids and their valid flags (first, last, prev, exchange ns; a row each), reset, each
    row's stream as a code of the distinct streams (their bytes and ends: a
    dictionary, in order of first appearance), each row's symbol likewise (-1: null),
    the symbols' bytes and ends, fallback mask)."""
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
    cap = max(16, n)  # a row per message, mostly: no regrowth (untouched pages cost no RSS)
    row = np.empty(cap, np.int64)
    rule = np.empty(cap, np.int64)
    ints = np.empty((4, cap), np.int64)  # first, last, prev, exchange ns
    valid = np.empty((4, cap), np.bool_)
    reset = np.empty(cap, np.bool_)
    # the distinct streams and symbols (``_find``, ``_add``): bytes, ends, hash table
    stream = np.empty(1024, np.uint8)
    stream_end = np.empty(64, np.int64)
    stream_tab = np.full(64, -1, np.int64)
    stream_code = np.empty(cap, np.int32)
    fallback = np.zeros(n, np.bool_)
    out = 0
    got = np.zeros((R, 4), np.int64)
    state = np.zeros((R, 4), np.int64)
    # per rule: the largest exchange time whose ns the SQL's DECIMAL -> BIGINT holds
    ets_max = np.empty(R, np.int64)
    for r in range(R):
        ets_max[r] = 9_000_000_000_000_000_000 // scalars[r, 5]
    symbol = np.empty(1024, np.uint8)
    sym_end = np.empty(64, np.int64)
    sym_tab = np.full(64, -1, np.int64)
    sym_code = np.empty(cap, np.int32)
    sym_used, n_sym, n_stream = 0, 0, 0
    stream_last = np.full(R, -1, np.int64)  # per rule: the code of its last row's
    sym_last = np.full(R, -1, np.int64)
    for i in range(n):
        if not select[i]:
            continue
        a, b = offsets[i], offsets[i + 1]
        if _walk(data, a, b, node_key, node_keylen, node_idx, node_child, node_sibling,
                 requested, pats, patlen, patclose, first, hits, kinds, starts, ends, visited,
                 stack_node, stack_obj, stack_count, fast) != _CLEAN:
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
                if f == 3 and st == 1 and abs(v) > ets_max[r]:
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
                row, rule, reset = (_grow(row, out + 1), _grow(rule, out + 1),
                                    _grow(reset, out + 1))
                stream_code, sym_code = _grow(stream_code, out + 1), _grow(sym_code, out + 1)
                big = np.empty((4, row.shape[0]), np.int64)
                big[:, :out] = ints[:, :out]
                ints = big
                bigv = np.empty((4, row.shape[0]), np.bool_)
                bigv[:, :out] = valid[:, :out]
                valid = bigv
            row[out], rule[out] = i, r
            for f in range(4):
                valid[f, out] = state[r, f] == 1
                ints[f, out] = got[r, f] * (scalars[r, 5] if f == 3 else 1)
            z = False
            for j in range(lists.shape[2]):
                g, c = lists[r, 1, j, 0], lists[r, 1, j, 1]
                if g >= 0 and _equals(data, _chosen(groups, g, kinds), c, starts, ends, consts,
                                      constlen):
                    z = True
            reset[out] = z
            s = _chosen(groups, scalars[r, 4], kinds)
            sym_code[out] = -1
            if s >= 0:
                if sym_used + ends[s] - starts[s] > symbol.shape[0]:
                    symbol = _grow(symbol, sym_used + ends[s] - starts[s])
                a0 = sym_used
                for k in range(starts[s], ends[s]):
                    symbol[a0] = data[k]
                    a0 += 1
                code = _find(symbol, sym_used, a0, sym_end, sym_tab, sym_last[r])
                if code < 0:
                    n_sym, sym_end, sym_tab = _add(symbol, a0, sym_end, n_sym, sym_tab,
                                                   -1 - code)
                    code = n_sym - 1
                    sym_used = a0
                sym_code[out] = sym_last[r] = code
            lead = True
            used = stream_end[n_stream - 1] if n_stream > 0 else 0
            a0 = used
            for j in range(lists.shape[2]):
                g = lists[r, 2, j, 0]
                if g < 0:
                    continue
                nd = _chosen(groups, g, kinds)
                size = (0 if lead else 1) + (ends[nd] - starts[nd] if nd >= 0 else 0)
                if used + size > stream.shape[0]:
                    stream = _grow(stream, used + size)
                if not lead:
                    stream[used] = 32  # " "
                    used += 1
                if nd >= 0:
                    for k in range(starts[nd], ends[nd]):  # (a byte loop: no slice views)
                        stream[used] = data[k]
                        used += 1
                lead = False
            code = _find(stream, a0, used, stream_end, stream_tab, stream_last[r])
            if code < 0:
                n_stream, stream_end, stream_tab = _add(stream, used, stream_end, n_stream,
                                                        stream_tab, -1 - code)
                code = n_stream - 1
            stream_code[out] = stream_last[r] = code
            out += 1
    used = stream_end[n_stream - 1] if n_stream > 0 else 0
    return (row[:out], rule[:out], ints[:, :out], valid[:, :out], reset[:out],
            stream_code[:out], stream[:used], stream_end[:n_stream], sym_code[:out],
            symbol[:sym_used], sym_end[:n_sym], fallback)
