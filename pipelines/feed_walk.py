"""The compiled walk of ``pipelines.feed_scan``: one JSON payload's values at the feed
rules' paths, and the rules' rows from them.

How this works: ``feed_scan``'s module docstring (what is read here, what is
handed back whole). The arrays the kernels take are ``feed_scan._Program.arrays``.
"""

from __future__ import annotations

import numpy as np

from ..parsers.jitload import kernel
from .feed_tokens import (
    MAX_DEPTH,
    SWAR,
    levels,
    like_at,
    load_u64,
    plain_levels,
    string_end,
    string_end_bytes,
    token_like,
    trailing_zeros,
)

# (no ``jitload.install()`` here: a kernel's dispatcher installs it when it is made)

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


@kernel(cache=True, nogil=True, _nrt=False)
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


_ZEROS = np.uint64(0x3030303030303030)  # "0" in each byte
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_PLUS = np.uint64(0x7676767676767676)  # a byte's low 7 bits + this: over 0x7F from 10 on
_HIGH = np.uint64(0x8080808080808080)
_POW10 = np.array([10 ** k for k in range(9)], np.int64)


@kernel(cache=True, nogil=True, inline="always")
def _not_digits(w):
    """The high bit of each byte of ``w`` that is not an ASCII digit: ``t = byte ^ "0"``
    is a digit's value (0-9); ``(t & 0x7F) + 0x76`` reaches 0x80 exactly when ``t & 0x7F``
    is 10 or more, ``| t`` adds the bytes of 0x80 and over (no carry between bytes)."""
    t = w ^ _ZEROS
    return (((t & _LOW7) + _PLUS) | t) & _HIGH


@kernel(cache=True, nogil=True, inline="always")
def _eight_digits(w):
    """The value of 8 ASCII digits, the first in the lowest byte (a little-endian load):
    pairs, then fours, then all 8, each a multiply (simdjson's
    ``parse_eight_digits_unrolled``)."""
    w = ((w & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
    w = ((w & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
    return np.int64(((w & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001))
                    >> np.uint64(32))


@kernel(cache=True, nogil=True, inline="always")
def _digits_end(data, p, end, fast):
    """The first byte at or after ``p`` (before ``end``) that is not a digit, or ``end``;
    8 bytes at a time when ``fast``."""
    if SWAR and fast:
        while p + 8 <= end:
            m = _not_digits(load_u64(data, p))
            if m != 0:
                return p + (trailing_zeros(m) >> 3)
            p += 8
    while p < end and 48 <= data[p] <= 57:
        p += 1
    return p


@kernel(cache=True, nogil=True, inline="always")
def _number_end(data, pos, end, fast):
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
        p = _digits_end(data, p + 1, end, fast)
    digits = p - digits_start
    integer = True
    if p < end and data[p] == 46:  # "."
        p += 1
        if p >= end or data[p] < 48 or data[p] > 57:
            return -1, False, 0
        p = _digits_end(data, p + 1, end, fast)
        integer = False
    if p < end and (data[p] == 101 or data[p] == 69):  # exponent: not read here
        return -1, False, 0
    if digits > 19:
        return -1, False, 0
    return p, integer, digits


@kernel(cache=True, nogil=True, inline="always")
def _int_value(data, a, b, fast):
    """``data[a:b]`` as an integer when it is ``-?[0-9]{1,18}`` (a string may have
    leading zeros: TRY_CAST reads them); (ok, value). ``fast``: 8 digits at a time
    (``_eight_digits``), the last < 8 from the word ending at ``b``, its bytes before
    them cleared (leading zeros)."""
    neg = a < b and data[a] == 45
    p = a + 1 if neg else a
    if p >= b or b - p > MAX_INT_DIGITS:
        return False, 0
    v = 0
    if SWAR and fast and b >= 8:
        while b - p >= 8:
            w = load_u64(data, p)
            if _not_digits(w) != 0:
                return False, 0
            v = v * 100_000_000 + _eight_digits(w)
            p += 8
        k = b - p
        if k > 0:
            shift = np.uint64(8 * (8 - k))
            w = load_u64(data, b - 8)
            if (_not_digits(w) >> shift) != 0:  # (the digits are its top k bytes)
                return False, 0
            v = v * _POW10[k] + _eight_digits((w >> shift) << shift)
        return True, -v if neg else v
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


# --- Templates: the walk's outcome for a payload spelt as an earlier one -----------
#
# A payload the walk read clean is kept as a template: its bytes cut at its values
# (strings, numbers, true/false/null, compact price levels, and the containers it
# records: ``_T_*``) into literal segments (the structure: brackets, keys, commas,
# whitespace) and slots. A later payload with the same literal segments whose slots
# hold values of the same kinds is tokenised by the walk exactly as the template was
# (the grammar is read left to right, so the same bytes in the same state give the
# same tokens): the same keys at the same trie nodes (no duplicate key on a path, as
# in the template), the same depths, the same ``like`` hits of its keys; only the
# slots' values differ, and ``_match`` reads them as the walk does (the same token
# functions, the same records). Anything else in a slot, or a literal that differs,
# and the next template sharing the segments read so far is tried from there; when
# none matches, the payload is walked. A template holds at most ``TPL_SLOTS`` values
# and ``TPL_BYTES`` literal bytes; ``TPL_COUNT`` are kept per call of ``_scan``.
#
# What a rule reads of a matched payload is fixed by its template too: which nodes
# hold a value is which slots the template has (but for a null: ``_plan``), so each
# rule's fields are looked up in the trie's groups once, when the template is kept,
# as the slots they are read from (its plan), and ``_match`` records the values by
# slot. The stream and symbol a row names are strings of a few distinct values: per
# template and rule, the last ``CACHED`` are remembered with their codes by their
# bytes (two words and a length, ``_key``), so most rows copy and hash none.

TPL_COUNT, TPL_SLOTS, TPL_BYTES = 8, 40, 384
_T_STRING, _T_NUMBER, _T_WORD, _T_LEVELS, _T_MARK, _T_END = 1, 2, 3, 4, 5, 6
_LROW = TPL_BYTES + 8  # a template's literal bytes, 8 of padding (whole-word loads)
_TAIL = np.array([(1 << (8 * k)) - 1 for k in range(8)], np.uint64)  # low k bytes


@kernel(cache=True, nogil=True, inline="always")
def _event(ev, evn, kind, a, b, node, requested, depth):
    """The walk's ``learn``: a value (or a recorded container) for a template."""
    k = evn[0]
    if k < ev.shape[0]:
        ev[k, 0] = kind
        ev[k, 1] = a
        ev[k, 2] = b
        ev[k, 3] = node if node >= 0 and requested[node] else -1
        ev[k, 4] = depth
    evn[0] = k + 1


@kernel(cache=True, nogil=True, inline="always")
def _same_bytes(data, pos, end, lit, p0, n):
    """``data[pos:pos+n] == lit[p0:p0+n]`` (``lit`` padded: words past ``n`` read)."""
    if pos + n > end:
        return False
    k = 0
    while k + 8 <= n:
        if load_u64(data, pos + k) != load_u64(lit, p0 + k):
            return False
        k += 8
    r = n - k
    if r == 0:
        return True
    if pos + k + 8 <= data.shape[0]:
        return ((load_u64(data, pos + k) ^ load_u64(lit, p0 + k)) & _TAIL[r]) == 0
    for q in range(k, n):  # noqa: SIM110 (a Numba kernel: a plain loop)
        if data[pos + q] != lit[p0 + q]:
            return False
    return True


@kernel(cache=True, nogil=True, _nrt=False)
def _keep(data, start, end, ev, evn, khits, tpl_lit, tpl, tpl_hits, tpl_n, common, t):
    """The walk's ``learn`` of ``data[start:end]`` (clean) as template ``t``; False when
    it does not fit."""
    m = evn[0]
    if m > TPL_SLOTS:
        return False
    size = end - start
    for j in range(m):
        size -= (0 if ev[j, 0] == _T_MARK else ev[j, 2] - ev[j, 1])
    if size > TPL_BYTES:
        return False
    base = t * _LROW
    lp = 0
    prev = start
    for j in range(m + 1):
        a = ev[j, 1] if j < m else end
        tpl[t, j, 0] = lp
        for q in range(prev, a):
            tpl_lit[base + lp] = data[q]
            lp += 1
        if j == m:
            tpl[t, j, 1] = _T_END
            break
        kind = ev[j, 0]
        tpl[t, j, 1] = kind
        tpl[t, j, 2] = ev[j, 3]
        tpl[t, j, 3] = ev[j, 4]
        prev = ev[j, 1] if kind == _T_MARK else ev[j, 2]
    tpl[t, m + 1, 0] = lp
    tpl_n[t, 0] = m
    tpl_n[t, 1] = 0
    for r in range(khits.shape[0]):
        tpl_hits[t, r] = khits[r]
    # the slots each other template shares with it, from the start
    for u in range(common.shape[0]):
        if u == t or tpl_n[u, 0] < 0:
            continue
        k = 0
        while k <= min(m, tpl_n[u, 0]):
            n0 = tpl[t, k + 1, 0] - tpl[t, k, 0]
            if (n0 != tpl[u, k + 1, 0] - tpl[u, k, 0] or tpl[t, k, 1] != tpl[u, k, 1]
                    or tpl[t, k, 2] != tpl[u, k, 2] or tpl[t, k, 3] != tpl[u, k, 3]
                    or tpl[t, k, 1] == _T_END):
                break
            same = True
            for q in range(n0):
                if tpl_lit[base + tpl[t, k, 0] + q] != tpl_lit[u * _LROW + tpl[u, k, 0] + q]:
                    same = False
                    break
            if not same:
                break
            k += 1
        common[t, u] = common[u, t] = k
    common[t, t] = m + 2
    return True


@kernel(cache=True, nogil=True, inline="always")
def _match(data, start, end, t, j, pos, tpl_lit, tpl, pats, patlen, patclose, first, hits,
           sk, sa, sb, o):
    """Read ``data[start:end]`` by template ``t`` from its segment ``j`` at ``pos``
    (the segments before matched): (True, ...) when every one does, each slot's value
    recorded as the walk would record it at the slot's node, but by slot (``sk``,
    ``sa``, ``sb`` at ``o`` + the slot: its kind, start, end; ``_spread`` puts them at
    the nodes); else (False, the segment that did not match, where it starts)."""
    base = t * _LROW
    while True:
        p0 = tpl[t, j, 0]
        n = tpl[t, j + 1, 0] - p0
        if not _same_bytes(data, pos, end, tpl_lit, base + p0, n):
            return False, j, pos
        q = pos + n
        kind = tpl[t, j, 1]
        if kind == _T_STRING:
            e = string_end(data, q, end)
            if e < 0:
                return False, j, pos
            if e > q and first[data[q], data[q + 1]]:
                token_like(data, q, e, pats, patlen, patclose, first, hits)
            sk[o + j], sa[o + j], sb[o + j] = _STRING, q, e
            q = e
        elif kind == _T_NUMBER:
            if q >= end or not (data[q] == 45 or 48 <= data[q] <= 57):
                return False, j, pos
            e, integer, digits = _number_end(data, q, end, True)
            if e < 0:
                return False, j, pos
            odd = (not integer or digits == 19
                   or (digits == 1 and data[q] == 45 and data[q + 1] == 48))
            sk[o + j], sa[o + j], sb[o + j] = _OTHER if odd else _INT, q, e
            q = e
        elif kind == _T_WORD:
            if q >= end:
                return False, j, pos
            c = data[q]
            if c != 116 and c != 102 and c != 110:
                return False, j, pos
            word = 4 if c != 102 else 5
            if q + word > end:
                return False, j, pos
            lit = (116, 114, 117, 101, 0) if c == 116 else (
                (102, 97, 108, 115, 101) if c == 102 else (110, 117, 108, 108, 0))
            for k in range(word):
                if data[q + k] != lit[k]:
                    return False, j, pos
            sk[o + j], sa[o + j], sb[o + j] = (_ABSENT if c == 110 else _LITERAL,
                                                  q, q + word)
            q += word
        elif kind == _T_LEVELS:
            if q >= end or data[q] != 91:
                return False, j, pos
            e = plain_levels(data, q, end, tpl[t, j, 3], first)
            if e < 0:
                return False, j, pos
            sk[o + j], sa[o + j], sb[o + j] = _OTHER, q, q
            q = e
        elif kind == _T_MARK:
            sk[o + j], sa[o + j], sb[o + j] = _OTHER, q, q
        else:  # _T_END
            return q == end, j, pos
        pos = q
        j += 1


@kernel(cache=True, nogil=True, _nrt=False)
def _spread(t, tpl, tpl_n, kinds, starts, ends, o):
    """The values ``_match`` read by template ``t``'s slots (at ``o`` + the slot) put
    at their trie nodes, as the walk records them (a null: absent)."""
    for k in range(o):
        kinds[k] = _ABSENT
    for j in range(tpl_n[t, 0]):
        node = tpl[t, j, 2]
        if node >= 0 and kinds[o + j] != _ABSENT:
            kinds[node], starts[node], ends[node] = kinds[o + j], starts[o + j], ends[o + j]


@kernel(cache=True, nogil=True, inline="always")
def _slot_of(groups, g, node_slot):
    """The first node of group ``g`` a template has a slot for (coalesce): its slot,
    or -1."""
    if g < 0:
        return -1
    for k in range(groups.shape[1]):
        n = groups[g, k]
        if n < 0:
            break
        if node_slot[n] >= 0:
            return node_slot[n]
    return -1


@kernel(cache=True, nogil=True, _nrt=False)
def _plan(t, tpl, tpl_n, groups, lists, scalars, node_slot, plan_ok, fsel, lsel, o):
    """Template ``t``'s rule fields as its slots, made once when it is kept: the slot
    each rule's first, last, prev, exchange time and symbol (``fsel[t]``) and each
    require, reset and stream part (``lsel[t]``) is read from (-1: absent). The walk
    takes a field from the first node of its group holding a value; a template's
    slots are the nodes that hold one, but a ``null`` holds none, so a template with a
    true/false/null at a rule's node has no plan (``plan_ok``: its payloads' values
    are put at their nodes and read as a walked payload's). Slot ``j`` is ``o + j``
    (where ``_match`` records it)."""
    for k in range(node_slot.shape[0]):
        node_slot[k] = -1
    ok = True
    for j in range(tpl_n[t, 0]):
        node = tpl[t, j, 2]
        if node >= 0:
            node_slot[node] = o + j
            ok &= tpl[t, j, 1] != _T_WORD
    plan_ok[t] = ok
    for r in range(scalars.shape[0]):
        for f in range(5):
            fsel[t, r, f] = _slot_of(groups, scalars[r, f], node_slot)
        for k in range(3):
            for j in range(lists.shape[2]):
                lsel[t, r, k, j] = _slot_of(groups, lists[r, k, j, 0], node_slot)


@kernel(cache=True, nogil=True, _nrt=False)
def _walk(data, start, end, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, pats, patlen, patclose, first, hits, kinds, starts, ends, visited, stack_node,
          stack_obj, stack_count, fast, learn, ev, evn, khits):
    """Walk one payload (see the module docstring): ``_CLEAN`` with the ``like``
    ``hits`` and the values of the trie's nodes, or ``_UNSURE``. ``fast``: strings 8
    bytes at a time and compact price levels in one go (``feed_tokens``; the same
    outcome as without). ``learn``: also list its values in ``ev`` (``evn[0]`` of
    them: what ``_keep`` makes a template of) and give the keys' ``like`` hits in
    ``khits`` rather than ``hits``."""
    evn[0] = 0
    if learn:
        for r in range(khits.shape[0]):
            khits[r] = False
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
            if learn:
                _event(ev, evn, _T_LEVELS, pos, skipped, node, requested, depth)
            pos = skipped
        elif c == 123 or c == 91:  # "{" "["
            if node >= 0 and requested[node]:
                _record(node, _OTHER, pos, pos, data, kinds, starts, ends)
                if learn:
                    _event(ev, evn, _T_MARK, pos, pos, node, requested, depth)
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
                    token_like(data, pos + 1, e, pats, patlen, patclose, first,
                               khits if learn else hits)
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
            if learn:
                _event(ev, evn, _T_STRING, pos + 1, e, node, requested, depth)
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
            if learn:
                _event(ev, evn, _T_WORD, pos, pos + word, node, requested, depth)
            pos += word
        else:
            e, integer, digits = _number_end(data, pos, end, fast)
            if e < 0:
                return _UNSURE
            if node >= 0 and requested[node]:
                odd = (not integer or digits == 19
                       or (digits == 1 and data[pos] == 45 and data[pos + 1] == 48))
                _record(node, _OTHER if odd else _INT, pos, e, data, kinds, starts, ends)
            if learn:
                _event(ev, evn, _T_NUMBER, pos, e, node, requested, depth)
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
                    token_like(data, pos + 1, e, pats, patlen, patclose, first,
                               khits if learn else hits)
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
def _as_int(data, n, kinds, starts, ends, fast):
    """(state, value): state 0 null, 1 an integer, 2 not sure what TRY_CAST gives."""
    if n < 0:
        return 0, 0
    if kinds[n] == _LITERAL or kinds[n] == _OTHER:
        return 2, 0
    ok, v = _int_value(data, starts[n], ends[n], fast)
    return (1, v) if ok else (2, 0)


@kernel(cache=True, nogil=True)
def _grow(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    for k in range(a.shape[0]):  # (a loop: ``_scan``'s note on copies)
        out[k] = a[k]
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


@kernel(cache=True, nogil=True, inline="always")
def _add(b, ends, n, table, slot):
    """``buf[ends[n - 1]:b]`` kept as string ``n`` (``_find`` gave ``-1 - slot``; ``ends``
    and ``table`` have room: ``_scan``): the count of strings. Codes go in order of first
    appearance, as ``pyarrow.compute.dictionary_encode`` numbers them."""
    ends[n] = b
    table[slot] = n
    return n + 1


@kernel(cache=True, nogil=True)
def _rehash(buf, ends, n, size):
    """A table (``_find``) of ``size`` slots for the ``n`` strings of ``buf``."""
    table = np.full(size, -1, np.int64)
    mask = size - 1
    for c in range(n):
        slot = _hash(buf, ends[c - 1] if c > 0 else 0, ends[c]) & mask
        while table[slot] >= 0:
            slot = (slot + 1) & mask
        table[slot] = c
    return table


CACHED = 4
"""Per template and rule: the symbols and the streams whose codes are remembered by
their bytes (``_key``), the last ones seen."""


@kernel(cache=True, nogil=True, inline="always")
def _key(data, a, b, kw, o):
    """``kw[o:o+3]``: ``data[a:b]`` as two words and its length, the key of a value of
    at most 16 bytes (False: longer, or too near the end of ``data`` to load)."""
    n = b - a
    if n > 16 or a + 16 > data.shape[0]:
        return False
    w0, w1 = load_u64(data, a), load_u64(data, a + 8)
    if n < 8:
        w0, w1 = w0 & _TAIL[n], np.uint64(0)
    elif n < 16:
        w1 &= _TAIL[n - 8]
    kw[o], kw[o + 1], kw[o + 2] = w0, w1, np.uint64(n)
    return True


@kernel(cache=True, nogil=True, inline="always")
def _cached(ckey, ccode, t, r, w, kw, nw):
    """The code remembered for the key ``kw[:nw]`` (``_key``) of template ``t``'s
    rule ``r``'s symbol (``w`` 0) or stream (1), or -1."""
    for e in range(CACHED):
        c = ccode[t, r, w, e]
        if c < 0:
            continue
        same = True
        for q in range(nw):
            if ckey[t, r, w, e, q] != kw[q]:
                same = False
                break
        if same:
            return c
    return -1


@kernel(cache=True, nogil=True, inline="always")
def _remember(ckey, ccode, cnext, t, r, w, kw, nw, code):
    e = cnext[t, r, w]
    cnext[t, r, w] = (e + 1) % CACHED
    for q in range(nw):
        ckey[t, r, w, e, q] = kw[q]
    ccode[t, r, w, e] = code


# The loop over the payloads (``_loop``) and every kernel it calls are compiled without
# Numba's reference counting (``_nrt=False``): a kernel that is not inlined increfs and
# decrefs each array it is passed at every call (two calls into Numba's runtime, an
# atomic operation each: ~30 per ``_match``), and an inlined helper's array arguments
# are counted as they are bound; over ws1m_c that was about half of this kernel's time.
# ``_match`` is inlined in it: a call passes each array as its ~7 machine words, most
# on the stack (~70 per ``_match``, a quarter of what was left; ``levels``, called
# twice a depth update, costs more inlined than called: it is ``plain_levels`` there,
# of 5 arguments).
# Such a kernel cannot make an array, so ``_scan`` makes them all and grows them (its
# copies are loops: a slice assignment's shape check compiles Numba's formatting of its
# error message, ~4 s of CPU on an empty cache for the five array types grown here):
# before each payload ``_loop`` checks there is room for the most a payload can add (a
# row, a symbol, a stream per rule), and when there is not it returns, ``_scan`` grows
# what it asked for and calls it again at that payload.

# ``_loop``'s state between its calls (``at``): where it is, the counts it keeps, and
# what it needs room for when it stops
(_I, _OUT, _NTPL, _LAST_T, _MISSES, _SYM_USED, _NSYM, _NSTREAM, _NEED_ROWS, _NEED_SYM,
 _NEED_NSYM, _NEED_STREAM, _NEED_NSTREAM, _ST) = range(14)


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
    R, N, W = patlen.shape[0], node_idx.shape[0], lists.shape[2]
    hits = np.zeros(R, np.bool_)
    # the values read: a walked payload's by trie node (the first N), a matched one's
    # by its template's slot (``_match``: N + the slot)
    kinds = np.zeros(N + TPL_SLOTS + 1, np.int64)
    starts = np.zeros(N + TPL_SLOTS + 1, np.int64)
    ends = np.zeros(N + TPL_SLOTS + 1, np.int64)
    visited = np.zeros(N + TPL_SLOTS + 1, np.bool_)  # (``_walk`` clears as many as kinds)
    stack_node = np.zeros(MAX_DEPTH, np.int64)
    stack_obj = np.zeros(MAX_DEPTH, np.bool_)
    stack_count = np.zeros(MAX_DEPTH, np.int64)
    # a row per message, mostly (and room for one message's rows): no regrowth
    # (untouched pages cost no RSS)
    cap = max(16, n) + R
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
    symbol = np.empty(1024, np.uint8)
    sym_end = np.empty(64, np.int64)
    sym_tab = np.full(64, -1, np.int64)
    sym_code = np.empty(cap, np.int32)
    fallback = np.zeros(n, np.bool_)
    got = np.zeros((R, 4), np.int64)
    state = np.zeros((R, 4), np.int64)
    # per rule: the largest exchange time whose ns the SQL's DECIMAL -> BIGINT holds
    ets_max = np.empty(R, np.int64)
    for r in range(R):
        ets_max[r] = 9_000_000_000_000_000_000 // scalars[r, 5]
    stream_last = np.full(R, -1, np.int64)  # per rule: the code of its last row's
    sym_last = np.full(R, -1, np.int64)
    # the templates (``_match``): literal bytes; per template and segment its literal's
    # start, its slot's kind, node (-1: not recorded), depth; per template its slots
    # and matches; ``common``: the segments two templates share from the start
    tpl_lit = np.zeros(TPL_COUNT * _LROW, np.uint8)
    tpl = np.zeros((TPL_COUNT, TPL_SLOTS + 2, 4), np.int64)
    tpl_hits = np.zeros((TPL_COUNT, R), np.bool_)
    tpl_n = np.full((TPL_COUNT, 2), -1, np.int64)
    common = np.zeros((TPL_COUNT, TPL_COUNT), np.int64)
    ev = np.zeros((TPL_SLOTS + 1, 5), np.int64)
    evn = np.zeros(1, np.int64)
    khits = np.zeros(R, np.bool_)
    # per template its plan (``_plan``: where each rule's fields are read, the slot's
    # value) and the codes of its symbols and streams by their bytes (``_cached``); the
    # plan at TPL_COUNT: a walked payload's (or one without a plan), the nodes'
    node_slot = np.empty(N, np.int64)
    plan_ok = np.zeros(TPL_COUNT, np.bool_)
    fsel = np.full((TPL_COUNT + 1, R, 5), -1, np.int64)
    lsel = np.full((TPL_COUNT + 1, R, 3, W), -1, np.int64)
    ckey = np.zeros((TPL_COUNT, R, 2, CACHED, 3 * W), np.uint64)
    ccode = np.full((TPL_COUNT, R, 2, CACHED), -1, np.int64)
    cnext = np.zeros((TPL_COUNT, R, 2), np.int64)
    kw = np.zeros(3 * W, np.uint64)
    at = np.zeros(_ST, np.int64)
    while not _loop(data, offsets, select, node_key, node_keylen, node_idx, node_child,
                    node_sibling, requested, groups, consts, constlen, pats, patlen, patclose,
                    first, lists, scalars, fast, hits, kinds, starts, ends, visited, stack_node,
                    stack_obj, stack_count, row, rule, ints, valid, reset, stream, stream_end,
                    stream_tab, stream_code, symbol, sym_end, sym_tab, sym_code, fallback, got,
                    state, ets_max, stream_last, sym_last, tpl_lit, tpl, tpl_hits, tpl_n, common,
                    ev, evn, khits, node_slot, plan_ok, fsel, lsel, ckey, ccode, cnext, kw, at):
        # room for what the payload at at[_I] may add
        out = at[_OUT]
        if at[_NEED_ROWS] > row.shape[0]:
            row, rule, reset = (_grow(row, at[_NEED_ROWS]), _grow(rule, at[_NEED_ROWS]),
                                _grow(reset, at[_NEED_ROWS]))
            stream_code = _grow(stream_code, at[_NEED_ROWS])
            sym_code = _grow(sym_code, at[_NEED_ROWS])
            big = np.empty((4, row.shape[0]), np.int64)
            bigv = np.empty((4, row.shape[0]), np.bool_)
            for f in range(4):
                for k in range(out):
                    big[f, k] = ints[f, k]
                    bigv[f, k] = valid[f, k]
            ints, valid = big, bigv
        symbol = _grow(symbol, at[_NEED_SYM])
        stream = _grow(stream, at[_NEED_STREAM])
        sym_end = _grow(sym_end, at[_NEED_NSYM])
        stream_end = _grow(stream_end, at[_NEED_NSTREAM])
        if 2 * at[_NEED_NSYM] > sym_tab.shape[0]:
            sym_tab = _rehash(symbol, sym_end, at[_NSYM], 2 * sym_tab.shape[0])
        if 2 * at[_NEED_NSTREAM] > stream_tab.shape[0]:
            stream_tab = _rehash(stream, stream_end, at[_NSTREAM], 2 * stream_tab.shape[0])
    out, n_stream, n_sym = at[_OUT], at[_NSTREAM], at[_NSYM]
    used = stream_end[n_stream - 1] if n_stream > 0 else 0
    return (row[:out], rule[:out], ints[:, :out], valid[:, :out], reset[:out],
            stream_code[:out], stream[:used], stream_end[:n_stream], sym_code[:out],
            symbol[:at[_SYM_USED]], sym_end[:n_sym], fallback)


@kernel(cache=True, nogil=True, _nrt=False)
def _loop(data, offsets, select, node_key, node_keylen, node_idx, node_child, node_sibling,
          requested, groups, consts, constlen, pats, patlen, patclose, first, lists, scalars,
          fast, hits, kinds, starts, ends, visited, stack_node, stack_obj, stack_count, row, rule,
          ints, valid, reset, stream, stream_end, stream_tab, stream_code, symbol, sym_end,
          sym_tab, sym_code, fallback, got, state, ets_max, stream_last, sym_last, tpl_lit, tpl,
          tpl_hits, tpl_n, common, ev, evn, khits, node_slot, plan_ok, fsel, lsel, ckey, ccode,
          cnext, kw, at):
    """``_scan``'s payloads from ``at[_I]`` on, in the arrays ``_scan`` made: True when
    done; False when the next one might not fit (what it needs is in ``at``)."""
    n = select.shape[0]
    R, N, W = patlen.shape[0], node_idx.shape[0], lists.shape[2]
    out, n_tpl, last_t, misses = at[_OUT], at[_NTPL], at[_LAST_T], at[_MISSES]
    sym_used, n_sym, n_stream = at[_SYM_USED], at[_NSYM], at[_NSTREAM]
    use_tpl = fast and SWAR
    i = at[_I]
    while i < n:
        if not select[i]:
            i += 1
            continue
        a, b = offsets[i], offsets[i + 1]
        # room for the most it may add: a row, a symbol and a stream (its parts and the
        # spaces between them) per rule, each no longer than the payload
        used = stream_end[n_stream - 1] if n_stream > 0 else 0
        need_stream = used + R * W * (b - a + 1)
        if (out + R > row.shape[0] or sym_used + R * (b - a) > symbol.shape[0]
                or 2 * (n_sym + R) > sym_tab.shape[0] or n_sym + R > sym_end.shape[0]
                or need_stream > stream.shape[0] or 2 * (n_stream + R) > stream_tab.shape[0]
                or n_stream + R > stream_end.shape[0]):
            at[_I], at[_OUT], at[_NTPL], at[_LAST_T], at[_MISSES] = i, out, n_tpl, last_t, misses
            at[_SYM_USED], at[_NSYM], at[_NSTREAM] = sym_used, n_sym, n_stream
            at[_NEED_ROWS], at[_NEED_SYM] = out + R, sym_used + R * (b - a)
            at[_NEED_NSYM] = n_sym + R
            at[_NEED_STREAM], at[_NEED_NSTREAM] = need_stream, n_stream + R
            return False
        msg = i
        i += 1  # (``continue`` below: the next payload)
        matched = False
        t = -1
        if n_tpl > 0:
            for r in range(R):
                hits[r] = False
            t, j, p, tried = last_t, 0, a, 0
            while True:
                matched, j, p = _match(data, a, b, t, j, p, tpl_lit, tpl, pats, patlen,
                                       patclose, first, hits, kinds, starts, ends, N)
                if matched:
                    break
                tried |= 1 << t
                nxt = -1
                for u in range(n_tpl):
                    if not (tried >> u) & 1 and common[t, u] == j:
                        nxt = u
                        break
                if nxt < 0:
                    break
                t = nxt
            if matched:
                for r in range(R):
                    hits[r] |= tpl_hits[t, r]
                tpl_n[t, 1] += 1
                last_t = t
        if not matched:
            t = -1
            learn = use_tpl and (n_tpl < TPL_COUNT or (misses & 15) == 0)
            misses += 1
            if _walk(data, a, b, node_key, node_keylen, node_idx, node_child, node_sibling,
                     requested, pats, patlen, patclose, first, hits, kinds, starts, ends,
                     visited, stack_node, stack_obj, stack_count, fast, learn, ev, evn,
                     khits) != _CLEAN:
                fallback[msg] = _raw_like(data, a, b, pats, patlen, patclose, hits)
                continue
            if learn:
                for r in range(R):
                    hits[r] |= khits[r]
                u = n_tpl
                if u == TPL_COUNT:  # full: the least matched one goes
                    u = 0
                    for x in range(TPL_COUNT):
                        if tpl_n[x, 1] < tpl_n[u, 1]:
                            u = x
                if _keep(data, a, b, ev, evn, khits, tpl_lit, tpl, tpl_hits, tpl_n, common, u):
                    n_tpl = max(n_tpl, u + 1)
                    last_t = u
                    for x in range(n_tpl):
                        tpl_n[x, 1] >>= 1
                    _plan(u, tpl, tpl_n, groups, lists, scalars, node_slot, plan_ok, fsel,
                          lsel, N)
                    for r in range(R):
                        for w in range(2):
                            for e in range(CACHED):
                                ccode[u, r, w, e] = -1
        # where the fields are read: a matched template's plan (its slots), or the
        # nodes (walked; or matched by a template without a plan: put at its nodes)
        pl = t
        if t < 0 or not plan_ok[t]:
            if t >= 0:
                _spread(t, tpl, tpl_n, kinds, starts, ends, N)
            pl, t = TPL_COUNT, -1  # (t: no codes remembered)
            for r in range(R):
                if hits[r]:
                    for f in range(5):
                        fsel[pl, r, f] = _chosen(groups, scalars[r, f], kinds)
                    for k in range(3):
                        for j in range(W):
                            lsel[pl, r, k, j] = _chosen(groups, lists[r, k, j, 0], kinds)
        # every field of every rule passed, read first: one unsure read passes the
        # message on whole (the SQL then reads it for every rule)
        unsure = False
        for r in range(R):
            if not hits[r]:
                continue
            for f in range(4):
                st, v = _as_int(data, fsel[pl, r, f], kinds, starts, ends, fast)
                if f == 3 and st == 1 and abs(v) > ets_max[r]:
                    st = 2  # the SQL's DECIMAL -> BIGINT would overflow
                state[r, f] = st
                got[r, f] = v
                unsure |= st == 2
            for k in range(3):
                for j in range(W):
                    nd = lsel[pl, r, k, j]
                    unsure |= nd >= 0 and kinds[nd] == _OTHER
            s = fsel[pl, r, 4]
            unsure |= s >= 0 and kinds[s] == _OTHER
        if unsure:
            fallback[msg] = True
            continue
        for r in range(R):
            if not hits[r]:
                continue
            keep = True
            for j in range(W):
                g, c = lists[r, 0, j, 0], lists[r, 0, j, 1]
                if g >= 0 and not _equals(data, lsel[pl, r, 0, j], c, starts, ends, consts,
                                          constlen):
                    keep = False
            if not keep:
                continue
            row[out], rule[out] = msg, r
            for f in range(4):
                valid[f, out] = state[r, f] == 1
                ints[f, out] = got[r, f] * (scalars[r, 5] if f == 3 else 1)
            z = False
            for j in range(W):
                g, c = lists[r, 1, j, 0], lists[r, 1, j, 1]
                if g >= 0 and _equals(data, lsel[pl, r, 1, j], c, starts, ends, consts,
                                      constlen):
                    z = True
            reset[out] = z
            s = fsel[pl, r, 4]
            sym_code[out] = -1
            if s >= 0:
                known = t >= 0 and _key(data, starts[s], ends[s], kw, 0)
                code = _cached(ckey, ccode, t, r, 0, kw, 3) if known else -1
                if code < 0:
                    a0 = sym_used
                    for k in range(starts[s], ends[s]):
                        symbol[a0] = data[k]
                        a0 += 1
                    code = _find(symbol, sym_used, a0, sym_end, sym_tab, sym_last[r])
                    if code < 0:
                        n_sym = _add(a0, sym_end, n_sym, sym_tab, -1 - code)
                        code = n_sym - 1
                        sym_used = a0
                    if known:
                        _remember(ckey, ccode, cnext, t, r, 0, kw, 3, code)
                sym_code[out] = sym_last[r] = code
            known = t >= 0
            for j in range(W):
                nd = lsel[pl, r, 2, j]
                if lists[r, 2, j, 0] < 0 or nd < 0:
                    kw[3 * j], kw[3 * j + 1], kw[3 * j + 2] = 0, 0, 0
                elif known:
                    known = _key(data, starts[nd], ends[nd], kw, 3 * j)
            code = _cached(ckey, ccode, t, r, 1, kw, 3 * W) if known else -1
            if code < 0:
                lead = True
                used = stream_end[n_stream - 1] if n_stream > 0 else 0
                a0 = used
                for j in range(W):
                    if lists[r, 2, j, 0] < 0:
                        continue
                    nd = lsel[pl, r, 2, j]
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
                    n_stream = _add(used, stream_end, n_stream, stream_tab, -1 - code)
                    code = n_stream - 1
                if known:
                    _remember(ckey, ccode, cnext, t, r, 1, kw, 3 * W, code)
            stream_code[out] = stream_last[r] = code
            out += 1
    at[_I], at[_OUT], at[_NTPL], at[_LAST_T], at[_MISSES] = n, out, n_tpl, last_t, misses
    at[_SYM_USED], at[_NSYM], at[_NSTREAM] = sym_used, n_sym, n_stream
    return True
