"""The compiled batch pre-check of ``redact_json_texts`` (``_maybe_secret``).

It must flag exactly the texts the per-text rule flags: not ASCII, or a sensitive
name in the normalised text (``_may_hold_secret``); and, on ASCII text, exactly
what the Arrow RE2 expression it replaced flagged. The kernel reads the array's
buffers in 64-byte blocks, so names are also put at every offset around block
boundaries and text boundaries, in sliced, chunked, large and nullable arrays.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pcapflow.parsers.redact import (
    _PRECHECK,
    _may_hold_secret,
    _maybe_secret,
    redact_json_text,
    redact_json_texts,
)

# The pre-check this kernel replaced (``pc.match_substring_regex`` over every
# name not holding another one, ``[-_]*`` between letters, case-insensitive):
# the oracle for ASCII text.
_MINIMAL = [n for n in _PRECHECK if not any(m != n and m in n for m in _PRECHECK)]
_OLD_RE2 = "|".join("[-_]*".join(re.escape(c) for c in n) for n in sorted(_MINIMAL))


def _want(texts: list[str | None], where: np.ndarray) -> list[bool]:
    return [bool(w) and t is not None and (not t.isascii() or _may_hold_secret(t))
            for t, w in zip(texts, where, strict=True)]


def _old_re2(arr: pa.Array) -> list[bool]:
    hit = pc.match_substring_regex(arr, _OLD_RE2, ignore_case=True)
    return pc.or_(hit, pc.invert(pc.string_is_ascii(arr))).to_pylist()


# --- generated texts ----------------------------------------------------------------
_SEPARATORS = st.sampled_from(["", "", "", "-", "_", "--", "_-_"])
# near misses and bytes the filter treats specially (CR and DEL fold onto "-" and
# "_"; "false" ends in "se"; the Kelvin sign lower-cases to "k")
_FILLERS = st.sampled_from([
    "", " ", "{", "}", '"', ":", ",", "[", "]", "0", "123.45", "false", "se}", "ke", "kez",
    "tok", "toke", "passw", "sig", "si\r", "s\x7fign", "au", "clie", "jw", "ot", "secre",
    "market", "ticker", "side", "sell", "SOLUSDT", "BTC-USDT", "client_order_id", "é",
    "\u212aey", "ü", "€", "\U0001f600", "\x00", "\t\n",
])


@st.composite
def _name(draw: st.DrawFn) -> str:
    """A sensitive name (or a prefix of one), letters in random case, with random
    separators between them."""
    name = draw(st.sampled_from(sorted(_PRECHECK)))
    name = name[: draw(st.integers(1, len(name)))] if draw(st.booleans()) else name
    out = []
    for i, c in enumerate(name):
        if i:
            out.append(draw(_SEPARATORS))
        out.append(c.upper() if draw(st.booleans()) else c)
    return "".join(out)


_TEXT = st.lists(st.one_of(_name(), _FILLERS, st.text(max_size=5),
                           st.text("-_aAkKeEyY", max_size=70)), max_size=12).map("".join)
_TEXTS = st.lists(_TEXT, min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(_TEXTS, st.data())
def test_equals_the_per_text_rule(texts: list[str], data: st.DataObject) -> None:
    where = np.array(data.draw(st.lists(st.booleans(), min_size=len(texts),
                                        max_size=len(texts))), dtype=bool)
    arr = pa.array(texts, type=pa.string())
    assert _maybe_secret(arr, where).tolist() == _want(texts, where)
    ascii_only = [t.isascii() for t in texts]
    got = _maybe_secret(arr, np.ones(len(texts), dtype=bool))
    old = _old_re2(arr)
    assert [g for g, a in zip(got, ascii_only, strict=True) if a] == \
        [o for o, a in zip(old, ascii_only, strict=True) if a]


@settings(max_examples=200, deadline=None)
@given(_TEXTS, st.integers(0, 30), st.integers(0, 30))
def test_sliced_chunked_and_large_arrays(texts: list[str], lo: int, hi: int) -> None:
    lo, hi = min(lo, len(texts)), max(min(hi, len(texts)), min(lo, len(texts)))
    where = np.ones(hi - lo, dtype=bool)
    want = _want(texts[lo:hi], where)
    assert _maybe_secret(pa.array(texts)[lo:hi], where).tolist() == want
    assert _maybe_secret(pa.array(texts, pa.large_string())[lo:hi], where).tolist() == want
    if hasattr(pa, "string_view"):  # pyarrow >= 16
        assert _maybe_secret(pa.array(texts, pa.string_view())[lo:hi], where).tolist() == want
    chunks = [texts[lo:hi], texts[:0], texts]
    chunked = pa.chunked_array([pa.array(c, pa.string()) for c in chunks], type=pa.string())
    where_all = np.ones(len(chunked), dtype=bool)
    assert _maybe_secret(chunked, where_all).tolist() == want + _want(texts, where_all[:len(texts)])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), _TEXT), min_size=1, max_size=20), st.integers(0, 5))
def test_nulls_are_never_flagged_and_stay_null(texts: list[str | None], lo: int) -> None:
    arr = pa.array(texts, type=pa.string())[lo:]
    rest = texts[lo:]
    where = np.ones(len(rest), dtype=bool)
    assert _maybe_secret(arr, where).tolist() == _want(rest, where)
    got = redact_json_texts(arr, where).to_pylist()
    assert got == [None if t is None else redact_json_text(t) for t in rest]


@pytest.mark.parametrize("name", sorted(_PRECHECK))
def test_every_name_at_every_offset_around_a_block(name: str) -> None:
    # one array, so the names sit at every position relative to the kernel's
    # 64-byte blocks of the shared data buffer, and at a text's very end
    spelled = [name, name.upper(), "_".join(name), "-".join(name.title()),
               f"{name[0]}--{name[1:]}"]
    texts = [f"{'x' * pad}{s}{'y' * tail}" for pad in range(0, 140, 7) for s in spelled
             for tail in (0, 1, 65)]
    texts += [f"{'z' * pad}{name[:-1]}" for pad in range(0, 140)]  # all but the last letter
    arr = pa.array(texts)
    got = _maybe_secret(arr, np.ones(len(texts), dtype=bool)).tolist()
    assert got == _want(texts, np.ones(len(texts), dtype=bool))
    if name in _MINIMAL:  # (no shorter name inside)
        assert not any(got[-140:])


def test_a_name_split_between_two_texts_is_no_name() -> None:
    texts = ["abcke", "y", "pass-", "_word", "tok", "en", "x" * 63 + "s", "ign"]
    assert not _maybe_secret(pa.array(texts), np.ones(len(texts), dtype=bool)).any()


def test_empty_and_all_empty_arrays() -> None:
    assert _maybe_secret(pa.array([], pa.string()), np.zeros(0, dtype=bool)).tolist() == []
    assert _maybe_secret(pa.array(["", ""]), np.ones(2, dtype=bool)).tolist() == [False, False]
    assert _maybe_secret(pa.array([None, ""], pa.string()), np.ones(2, dtype=bool)).tolist() \
        == [False, False]
    assert _maybe_secret(pa.chunked_array([], pa.string()), np.zeros(0, dtype=bool)).tolist() \
        == []


def test_non_ascii_anywhere_is_flagged() -> None:
    texts = ["x" * n + "é" + "y" * (130 - n) for n in range(0, 131)] + ["€", "abc\U0001f600"]
    assert _maybe_secret(pa.array(texts), np.ones(len(texts), dtype=bool)).all()
