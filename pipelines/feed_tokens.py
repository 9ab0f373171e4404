"""The string tokens of ``pipelines.feed_walk``: where a string ends, which ``like``
patterns it satisfies, and a run of price levels read in one go.

How this works. The walk checks every byte of a payload against the strict JSON
grammar (a payload DuckDB cannot parse yields no row), so its time is its tokens:
~45 of them in a depth update of ~270 bytes, most of them the strings of the price
levels (``"b":[["67172.49","0.10383"],...]``) that no rule reads. Two things make
those cheaper, with the same outcome token for token:

- ``string_end`` looks at 8 bytes at a time (one unaligned little-endian load,
  ``load_u64``): a byte is a quote, a backslash or a control character when the
  classic "has a zero byte" test flags it. That test can flag a byte above a true
  hit (a borrow) but never below one, so the lowest flagged byte is the first that
  ends the scan; the last < 8 bytes of a payload are read one at a time.
- ``levels`` reads an array no rule reads inside (off the rules' paths, or at a
  leaf of them: Binance's asks, ``"a"``, are the aggTrade rule's id) that is an array
  of arrays of plain strings written without whitespace (``[["1","2"],["3","4"]]``)
  in one tight loop: the shape every venue's book levels have. On anything else
  (whitespace, another value, an escape, an empty array, nesting at ``MAX_DEPTH``) it
  gives up (-1) and the walk reads the array token by token from its start, as it
  reads every other value; a ``like`` hit recorded before giving up is recorded again
  then (hits only ever turn on), so nothing differs.

On a big-endian machine ``string_end`` is the byte loop (``SWAR``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ..parsers.jitload import LazyIntrinsic, intrinsic, kernel

MAX_DEPTH = 32
"""Nesting the walk follows; a deeper payload is passed on whole."""

SWAR = sys.byteorder == "little"
"""``string_end`` reads 8 bytes at a time (little-endian loads only)."""


def _load_u64(typingctx: Any, buf: Any, i: Any) -> Any:
    """``load_u64(buf, i)``: bytes ``buf[i:i+8]`` of a C-contiguous uint8 array as one
    unsigned little-endian integer (no bounds check: the caller's)."""
    from llvmlite import ir
    from numba.core import types

    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"
            and buf.dtype == types.uint8 and isinstance(i, types.Integer)):
        return None
    sig = types.uint64(buf, i)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], signature.args[1], types.intp)
        ptr = builder.gep(ary.data, [idx])
        return builder.load(builder.bitcast(ptr, ir.IntType(64).as_pointer()), align=1)

    return sig, codegen


def _load_u64_python(buf: np.ndarray, i: int) -> np.uint64:
    return np.uint64(int.from_bytes(bytes(buf[i : i + 8]), "little"))


# (both made when Numba first compiles a kernel using them: importing this module, which
# every ingest does through the feed scan, imports no Numba; ``jitload.LazyIntrinsic``)
load_u64 = cast(Callable[[np.ndarray, int], int], intrinsic(_load_u64, _load_u64_python))


def _numba_trailing_zeros() -> Any:
    from numba.cpython.unsafe.numbers import trailing_zeros as numba_trailing_zeros

    return numba_trailing_zeros


def _trailing_zeros_python(m: Any) -> int:
    m = int(m)
    return (m & -m).bit_length() - 1


trailing_zeros = cast(
    Callable[[Any], int],
    LazyIntrinsic(_numba_trailing_zeros, _trailing_zeros_python, "trailing_zeros"),
)

_ONES = np.uint64(0x0101010101010101)
_HIGH = np.uint64(0x8080808080808080)
_QUOTES = np.uint64(0x2222222222222222)  # '"'
_BSLASHES = np.uint64(0x5C5C5C5C5C5C5C5C)  # "\\"
_SPACES = np.uint64(0x2020202020202020)  # bytes below it are control characters


@kernel(cache=True, nogil=True, inline="always")
def string_end_bytes(data, pos, end):
    """``string_end`` a byte at a time (the reference the tests hold it to)."""
    while pos < end:
        c = data[pos]
        if c == 34:
            return pos
        if c == 92 or c < 32:
            return -1
        pos += 1
    return -1


@kernel(cache=True, nogil=True, inline="always")
def string_end(data, pos, end):
    """The closing quote of a string whose content starts at ``pos``; -1 when the
    string has a backslash or a control character, or no end."""
    if SWAR:
        while pos + 8 <= end:
            w = load_u64(data, pos)
            q = w ^ _QUOTES
            b = w ^ _BSLASHES
            m = (((q - _ONES) & ~q) | ((b - _ONES) & ~b) | ((w - _SPACES) & ~w)) & _HIGH
            if m != 0:
                p = pos + (trailing_zeros(m) >> 3)
                return p if data[p] == 34 else -1
            pos += 8
    return string_end_bytes(data, pos, end)  # the last bytes (or all, without SWAR)


@kernel(cache=True, nogil=True, inline="always")
def _codepoint_len(c):
    if c < 0x80:
        return 1
    if c >= 0xF0:
        return 4
    if c >= 0xE0:
        return 3
    return 2


@kernel(cache=True, nogil=True, inline="always")
def like_at(data, pos, end, pats, patlen, r):
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


@kernel(cache=True, nogil=True, inline="always")
def token_like(data, a, b, pats, patlen, patclose, first, hits):
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
        m = like_at(data, a, b, pats, patlen, r)
        if m >= 0 and (not patclose[r] or m == b):
            hits[r] = True


@kernel(cache=True, nogil=True, _nrt=False)
def levels(data, pos, end, depth, pats, patlen, patclose, first, hits):
    """The position after a compact array of arrays of plain strings starting at
    ``data[pos]`` (a ``[`` at walk depth ``depth``), its strings' ``like`` hits
    recorded; -1 when the array is not of that form (see the module docstring)."""
    if depth + 1 >= MAX_DEPTH:
        return -1
    p = pos + 1
    if p >= end or data[p] != 91:  # "["
        return -1
    while True:
        p += 1  # past an inner "["
        if p >= end or data[p] != 34:  # '"'
            return -1
        while True:
            e = string_end(data, p + 1, end)
            if e < 0:
                return -1
            if e > p + 1 and first[data[p + 1], data[p + 2]]:
                token_like(data, p + 1, e, pats, patlen, patclose, first, hits)
            p = e + 1
            if p + 1 >= end:
                return -1
            c = data[p]
            if c == 44 and data[p + 1] == 34:  # ',"': the next string
                p += 1
                continue
            if c != 93:  # "]"
                return -1
            break
        p += 1  # past the inner "]"
        if p >= end:
            return -1
        c = data[p]
        if c == 93:
            return p + 1
        if c != 44 or p + 1 >= end or data[p + 1] != 91:  # ",["
            return -1
        p += 1


@kernel(cache=True, nogil=True, _nrt=False)
def plain_levels(data, pos, end, depth, first):
    """``levels`` for a template's slot (``feed_walk._match``), that also gives -1 when a
    string's first two bytes may begin a ``like`` (``first``): it records no hit, so it
    takes 5 arguments rather than 9 (each array is ~7 machine words of a call, most on
    the stack: it is called twice a depth update). A payload it refuses is walked, and
    the walk's ``levels`` records the hits."""
    if depth + 1 >= MAX_DEPTH:
        return -1
    p = pos + 1
    if p >= end or data[p] != 91:  # "["
        return -1
    while True:
        p += 1  # past an inner "["
        if p >= end or data[p] != 34:  # '"'
            return -1
        while True:
            e = string_end(data, p + 1, end)
            if e < 0 or (e > p + 1 and first[data[p + 1], data[p + 2]]):
                return -1
            p = e + 1
            if p + 1 >= end:
                return -1
            c = data[p]
            if c == 44 and data[p + 1] == 34:  # ',"': the next string
                p += 1
                continue
            if c != 93:  # "]"
                return -1
            break
        p += 1  # past the inner "]"
        if p >= end:
            return -1
        c = data[p]
        if c == 93:
            return p + 1
        if c != 44 or p + 1 >= end or data[p + 1] != 91:  # ",["
            return -1
        p += 1
