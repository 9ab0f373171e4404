"""The feed scan's faster tokens (``pipelines.feed_tokens``: strings 8 bytes at a time,
compact price levels in one go) change nothing: the scan gives exactly the rows it
gives a byte at a time, token by token (``fast=False``), on adversarial JSON
(whitespace, key order, duplicate keys, strings holding ``"u":``, escaped quotes,
nested objects with the rules' key names, levels of every shape, cut payloads) and
on the payloads ``test_feed_scan`` holds to DuckDB's reading."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pcapflow.pipelines import feed_scan, feed_tokens, feed_walk

from tests.pipelines.test_feed_scan import _doc, _text

KEYS = ["u", "U", "pu", "e", "E", "s", "t", "a", "b", "T", "data", "stream", "seqId",
        "prevSeqId", "ts", "arg", "channel", "instId", "action", "topic", "type", "params",
        "change_id", "prev_change_id", "timestamp", "instrument_name", "x"]
STRINGS = ["depthUpdate", "trade", "aggTrade", "seqId", "orderbook.50.X", "prev_change_id",
           "snapshot", "-1", "1", "12345", '"u":7', 'a"b', "x\\y", "\u00e9", "\n", "67172.49",
           "0.10383", "", "BTCUSDT"]

_scalar = st.one_of(st.sampled_from(STRINGS), st.text(max_size=12),
                    st.integers(-10**20, 10**20), st.sampled_from([True, False, None, 1.5, -0.0]))
_level = st.lists(st.one_of(st.sampled_from(STRINGS[-4:]), _scalar), min_size=0, max_size=4)
_levels = st.lists(_level, min_size=0, max_size=5)
_json = st.recursive(
    st.one_of(_scalar, _levels),
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(KEYS), kids, max_size=6)),
    max_leaves=30)
_doc_st = st.dictionaries(st.sampled_from(KEYS), _json, min_size=1, max_size=8)


def _spell(doc: object, draw_seps: tuple[str, str], ascii_only: bool, edit: int,
           rng: random.Random) -> str:
    text = json.dumps(doc, separators=draw_seps, ensure_ascii=ascii_only)
    if edit == 1 and len(text) > 2:
        text = text[: rng.randrange(1, len(text))]  # cut
    elif edit == 2 and text.startswith("{"):
        k = text.find(":")
        text = text[:1] + text[1:k + 1] + '"dup",' + text[1:]  # a duplicate first key
    elif edit == 3:
        i = rng.randrange(len(text) + 1)
        text = text[:i] + rng.choice([" ", "\t", ",", "]", '"', "\\", "[", "\x01"]) + text[i:]
    elif edit == 4:
        text = text.replace('","', '", "', 1)  # whitespace inside one level
    return text


def _both(payloads: list[str]) -> None:
    raw = [p.encode() for p in payloads]
    data = np.frombuffer(b"".join(raw) or b"\0", np.uint8)
    offsets = np.zeros(len(raw) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    select = np.ones(len(raw), np.bool_)
    prog = feed_scan.program()
    assert prog is not None
    arrays = prog.arrays()
    fast = feed_walk._scan(data, offsets, select, *arrays, True)
    slow = feed_walk._scan(data, offsets, select, *arrays, False)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(_doc_st, min_size=1, max_size=20),
       wrap=st.booleans(), seps=st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]),
       ascii_only=st.booleans(), edits=st.lists(st.integers(0, 6), min_size=20, max_size=20),
       seed=st.integers(0, 2**32))
def test_fast_tokens_give_the_same_rows(docs: list[dict], wrap: bool, seps: tuple[str, str],
                                        ascii_only: bool, edits: list[int], seed: int) -> None:
    rng = random.Random(seed)
    payloads = []
    for i, d in enumerate(docs):
        doc: object = {"stream": "x@depth", "data": d} if wrap else d
        payloads.append(_spell(doc, seps, ascii_only, edits[i], rng))
    _both(payloads)


@pytest.mark.parametrize("seed", range(3))
def test_fast_tokens_on_the_feed_scans_generated_payloads(seed: int) -> None:
    rng = random.Random(seed)
    docs = [_doc(rng) for _ in range(1500)]
    # with price levels as venues send them, some spelt oddly
    for d in docs:
        ev = d.get("data", d)
        if isinstance(ev, dict) and "b" in ev:  # ("a": a leaf of the rules' paths too)
            for side in ("b", "a"):
                ev[side] = [[f"{rng.randint(1, 99999) / 100}", str(rng.random())[:7]]
                            for _ in range(rng.randrange(6))]
    _both([_text(rng, d) for d in docs])


def test_levels_reads_only_compact_levels() -> None:
    prog = feed_scan.program()
    assert prog is not None
    pats, patlen, patclose, first = prog.arrays()[9:13]
    hits = np.zeros(len(patlen), np.bool_)

    def levels(text: str, depth: int = 2) -> int:
        b = np.frombuffer(text.encode(), np.uint8)
        return feed_tokens.levels(b, 0, len(b), depth, pats, patlen, patclose, first, hits)

    assert levels('[["1.5","2"],["3","4","5"]],') == len('[["1.5","2"],["3","4","5"]]')
    assert levels('[["depthUpdate"]]') == 17 and hits.any()  # its strings' likes recorded
    for other in ('[]', '[[]]', '[["1", "2"]]', '[ ["1"]]', '[["1"],1]', '[[1]]', '[["a\\"b"]]',
                  '[["1"],["2"]', '[["1"]', '[["1"],]', '[["\x01"]]'):
        assert levels(other) == -1, other
    assert levels('[["1"]]', depth=feed_tokens.MAX_DEPTH - 1) == -1  # the walk says unsure


def test_string_end_8_bytes_at_a_time_is_the_byte_loop() -> None:
    rng = random.Random(7)
    alphabet = b'ab0"\\\x01\x1f \x7f\xc3\xa9\xff'
    for _ in range(3000):
        n = rng.randrange(0, 40)
        b = np.frombuffer(bytes(rng.choice(alphabet) for _ in range(n)) or b"\0", np.uint8)
        pos = rng.randrange(0, max(n, 1))
        end = rng.randrange(pos, max(n, 1) + 1) if n else 0
        assert feed_tokens.string_end(b, pos, end) == feed_tokens.string_end_bytes(b, pos, end)
