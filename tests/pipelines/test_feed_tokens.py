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


# (50 examples: generating them is the test's cost, ~0.4 s each; the seeded tests below add
# 4,500 generated payloads of the feed scan's own shapes)
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
        got = feed_tokens.levels(b, 0, len(b), depth, pats, patlen, patclose, first, hits)
        # a template's (``plain_levels``): the same, or -1 where a like may begin
        plain = feed_tokens.plain_levels(b, 0, len(b), depth, first)
        assert plain == got or (plain == -1 and "depthUpdate" in text), text
        return got

    assert levels('[["1.5","2"],["3","4","5"]],') == len('[["1.5","2"],["3","4","5"]]')
    assert levels('[["depthUpdate"]]') == 17 and hits.any()  # its strings' likes recorded
    for other in ('[]', '[[]]', '[["1", "2"]]', '[ ["1"]]', '[["1"],1]', '[[1]]', '[["a\\"b"]]',
                  '[["1"],["2"]', '[["1"]', '[["1"],]', '[["\x01"]]'):
        assert levels(other) == -1, other
    assert levels('[["1"]]', depth=feed_tokens.MAX_DEPTH - 1) == -1  # the walk says unsure
    assert levels('[["0.5","depthUpdate"],["2","x"]]') == 33


def test_string_end_8_bytes_at_a_time_is_the_byte_loop() -> None:
    rng = random.Random(7)
    alphabet = b'ab0"\\\x01\x1f \x7f\xc3\xa9\xff'
    for _ in range(3000):
        n = rng.randrange(0, 40)
        b = np.frombuffer(bytes(rng.choice(alphabet) for _ in range(n)) or b"\0", np.uint8)
        pos = rng.randrange(0, max(n, 1))
        end = rng.randrange(pos, max(n, 1) + 1) if n else 0
        assert feed_tokens.string_end(b, pos, end) == feed_tokens.string_end_bytes(b, pos, end)


def test_integers_8_digits_at_a_time_as_a_byte_at_a_time() -> None:
    """``_int_value`` (the rules' ids) and ``_number_end`` 8 bytes at a time: 0-20 digits,
    each byte in turn replaced by a neighbour of the digits or a high byte, at the start
    of the buffer (no word before it: the byte loop) and after it."""
    rng = random.Random(11)
    texts = ["".join(rng.choice("0123456789") for _ in range(n)) for n in range(21)
             for _ in range(6)]
    texts += [t[:k] + c + t[k + 1:] for t in texts[::3] for k in range(len(t))
              for c in ":/-.e\x80"]
    texts += ["-", "-0", "-12", "0012", "9" * 18, "-" + "9" * 18, "1" * 19]
    for text in texts:
        for pre in ("", "[", "[0,1,2,3,4,"):
            b = np.frombuffer((pre + text + "]").encode("latin-1"), np.uint8)
            a, e = len(pre), len(pre) + len(text)
            assert feed_walk._int_value(b, a, e, True) == feed_walk._int_value(b, a, e, False)
            assert (feed_walk._number_end(b, a, len(b), True)
                    == feed_walk._number_end(b, a, len(b), False))
    b = np.frombuffer(b"x1234567890123456789", np.uint8)
    assert feed_walk._int_value(b, 1, 19, True) == (True, 123456789012345678)
    assert feed_walk._int_value(b, 1, 20, True) == (False, 0)  # 19 digits: the SQL's


# --- templates (``feed_walk._match``): a payload spelt as an earlier one ---------------

_BASES = [
    '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1796641883162,'
    '"s":"BTCUSDT","U":44000022021,"u":44000022021,"pu":44000022020,'
    '"b":[["67267.85","0.14016"],["67267.75","0.70569"]],"a":[["67267.85","0.98973"]]}}',
    '{"stream":"bnbusdt@trade","data":{"e":"trade","E":1796641898535,"s":"BNBUSDT",'
    '"t":1010217,"p":"66749.44","q":"0.66979","T":1796641898535,"m":true}}',
    '{"e":"aggTrade","E":1,"s":"X","a":[["1","2"]],"p":null,"m":false}',
    '{"arg": {"channel": "books", "instId": "BTC-USDT"}, "action": "snapshot", "data": '
    '[{"seqId": 5, "prevSeqId": -1, "ts": "1700000000000", "asks": [["1", "2"]]}]}',
    '{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1700000000000,'
    '"data":{"s":"BTCUSDT","u":7,"seq":9,"b":[],"a":[["1","2"]]}}',
    '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC-PERPETUAL.100ms",'
    '"data":{"type":"change","change_id":11,"prev_change_id":10,"timestamp":1700000000000,'
    '"instrument_name":"BTC-PERPETUAL","bids":[["new",1.5,2]]}}}',
]
_BYTES = ['"', "\\", ",", ":", "]", "}", "[", "{", " ", "0", "9", "-", ".", "e", "t", "n",
          "a", "\x01", "1e3", '"x"', "null", "true", "1.5", "-0", "[]", "{}", '["1"]',
          '"depthUpdate"', '"trade"', '"seqId"', "12345678901234567890"]


def _variants(base: str, rng: random.Random, n: int) -> list[str]:
    """``base`` with one edit: a byte or token replaced, inserted or removed, a value
    swapped, a key repeated."""
    out = []
    for _ in range(n):
        i = rng.randrange(len(base))
        j = min(len(base), i + rng.randrange(1, 12))
        pick = rng.randrange(5)
        tok = rng.choice(_BYTES)
        if pick == 0:
            text = base[:i] + tok + base[i + 1:]
        elif pick == 1:
            text = base[:i] + tok + base[i:]
        elif pick == 2:
            text = base[:i] + base[j:]
        elif pick == 3:
            text = base[:i] + tok + base[j:]
        else:
            text = base.replace('"u":', '"u":1,"u":', 1).replace('"ts":', '"ts":2, "ts":', 1)
        out.append(text)
    return out


def test_templates_give_the_walks_rows_on_edited_payloads() -> None:
    """Each payload after the one it was edited from, so the scan tries the template
    of the original on it first."""
    rng = random.Random(11)
    payloads = []
    for base in _BASES:
        for v in _variants(base, rng, 400):
            payloads += [base, v]
    _both(payloads)


def test_template_plans_and_remembered_codes_give_the_walks_rows() -> None:
    """Payloads of a few spellings each (so templates, their plans and the codes they
    remember read most of them), their values varied: ids as integers, strings, reals,
    19 digits, null, true; the event and the symbol among more than
    ``feed_walk.CACHED`` (some over 16 bytes, one empty); a field's first path null and
    its second present."""
    rng = random.Random(3)
    ids: list[object] = [7, 8, 9, -3, 0, "12", "-0", "x", 1.5, 10**18, 10**19 - 1, None,
                         True, "0012"]
    syms: list[object] = ["BTCUSDT", "ETHUSDT", "S", "", "A-VERY-LONG-SYMBOL-NAME-X",
                          "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", None]
    events: list[object] = ["depthUpdate", "trade", "aggTrade", "depthUpdatE", None, True]

    def one(values: list[object]) -> object:  # mostly the usual, now and then another
        return values[0] if rng.random() < 0.5 else rng.choice(values)

    payloads = []
    for _ in range(3000):
        sym, i = rng.choice(syms[:7]) if rng.random() < 0.8 else one(syms), one(ids)
        doc: object
        match rng.randrange(5):
            case 0:
                doc = {"stream": "x@depth", "data": {
                    "e": one(events), "E": one(ids), "s": sym, "U": i, "u": i, "pu": one(ids),
                    "b": [["1.5", "2"]], "a": [["3", "4"]] if rng.random() < 0.9 else one(ids)}}
            case 1:
                doc = {"e": rng.choice(["trade", "aggTrade"]), "E": one(ids), "s": sym, "t": i,
                       "a": i, "T": one(ids)}
            case 2:
                doc = {"arg": {"channel": "books", "instId": sym},
                       "action": rng.choice(["snapshot", "update"]),
                       "data": [{"seqId": i, "prevSeqId": rng.choice([-1, 6, i]),
                                 "ts": str(rng.randrange(10**12, 10**13))}]}
            case 3:
                doc = {"topic": f"orderbook.50.{sym}", "type": rng.choice(["snapshot", "delta"]),
                       "ts": one(ids), "data": {"s": sym, "u": rng.choice([1, i])}}
            case _:
                doc = {"data": {"e": rng.choice([None, "depthUpdate"]), "s": sym, "u": i},
                       "e": one(events), "s": one(syms), "u": one(ids), "U": i, "E": 5}
        payloads.append(json.dumps(doc, separators=(",", ":")))
    _both(payloads)


def test_rows_symbols_and_streams_past_the_room_first_made() -> None:
    """``_scan`` makes room for a row per message and a few names; ``_loop`` stops
    when a message might not fit and goes on once ``_scan`` has grown it: every
    message here gives 3 rows (3 rules), and 150 symbols (half of 300 bytes, half
    short: remembered by their bytes) name 450 streams."""
    names = [f"S{k}" if k % 2 else f"L{k:03d}" + "x" * 296 for k in range(150)]
    payloads = []
    for i in range(2000):
        s = names[(i * 7) % 150]
        payloads.append(json.dumps({
            "e": "trade", "E": 1000 + i, "t": i, "topic": f"orderbook.50.{s}",
            "data": {"s": s, "u": 2 * i}, "ts": 5,
            "params": {"channel": f"book.{s}", "data": {
                "change_id": 3 * i, "prev_change_id": 3 * i - 1, "instrument_name": s}}},
            separators=(",", ":")))
    raw = [p.encode() for p in payloads]
    data = np.frombuffer(b"".join(raw), np.uint8)
    offsets = np.zeros(len(raw) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offsets[1:])
    prog = feed_scan.program()
    assert prog is not None
    (row, rule, ints, valid, _reset, stream_code, stream, stream_end, sym_code, symbol,
     sym_end, fallback) = feed_walk._scan(data, offsets, np.ones(len(raw), np.bool_),
                                          *prog.arrays(), True)

    def words(buf: np.ndarray, ends: np.ndarray, codes: np.ndarray) -> list[str]:
        starts = np.concatenate([[0], ends[:-1]])
        return [bytes(buf[starts[c]:ends[c]]).decode() for c in codes]

    rules = [r.name for r in prog.rules]
    assert not fallback.any()
    assert row.tolist() == [i for i in range(2000) for _ in range(3)]
    assert [rules[r] for r in rule[:3]] == ["binance_trade", "bybit_orderbook", "deribit_book"]
    sym = [names[(i * 7) % 150] for i in range(2000)]
    assert words(symbol, sym_end, sym_code) == [s for s in sym for _ in range(3)]
    assert words(stream, stream_end, stream_code) == [
        n for s in sym for n in (f"trade {s}", f"orderbook.50.{s}", f"book.{s}")]
    assert len(sym_end) == 150 and len(stream_end) == 450  # each once, in order of appearance
    assert ints[1].tolist() == [v for i in range(2000) for v in (i, 2 * i, 3 * i)]
    assert valid[1].all() and valid[2].tolist() == [False, False, True] * 2000


def test_a_template_matches_only_what_the_walk_reads_the_same() -> None:
    prog = feed_scan.program()
    assert prog is not None
    (node_key, node_keylen, node_idx, node_child, node_sibling, requested, _g, _c, _cl,
     pats, patlen, patclose, first, _l, _s) = prog.arrays()
    R, N, K = len(patlen), len(node_idx), feed_walk.TPL_COUNT

    def state() -> list[np.ndarray]:  # (the values by node, then by slot: ``_match``'s)
        S = N + feed_walk.TPL_SLOTS + 1
        return [np.zeros(R, np.bool_), np.zeros(S, np.int64), np.zeros(S, np.int64),
                np.zeros(S, np.int64)]

    ev, evn = np.zeros((feed_walk.TPL_SLOTS + 1, 5), np.int64), np.zeros(1, np.int64)
    D = feed_tokens.MAX_DEPTH
    stack = (np.zeros(N + feed_walk.TPL_SLOTS + 1, np.bool_), np.zeros(D, np.int64),
             np.zeros(D, np.bool_), np.zeros(D, np.int64))

    def walk(b: np.ndarray, st: list[np.ndarray], learn: bool, khits: np.ndarray) -> int:
        return feed_walk._walk(b, 0, len(b), node_key, node_keylen, node_idx, node_child,
                               node_sibling, requested, pats, patlen, patclose, first, *st,
                               *stack, True, learn, ev, evn, khits)

    rng = random.Random(5)
    matched = refused = 0
    for base in _BASES:
        lit = np.zeros(K * feed_walk._LROW, np.uint8)
        tpl = np.zeros((K, feed_walk.TPL_SLOTS + 2, 4), np.int64)
        tpl_hits, tpl_n = np.zeros((K, R), np.bool_), np.full((K, 2), -1, np.int64)
        common, khits = np.zeros((K, K), np.int64), np.zeros(R, np.bool_)
        b = np.frombuffer(base.encode(), np.uint8)
        assert walk(b, state(), True, khits) == feed_walk._CLEAN
        assert feed_walk._keep(b, 0, len(b), ev, evn, khits, lit, tpl, tpl_hits, tpl_n,
                               common, 0)
        for text in [base, *_variants(base, rng, 300)]:
            v = np.frombuffer(text.encode() or b"\0", np.uint8)[: len(text.encode())]
            ref, got = state(), state()
            clean = walk(v, ref, False, khits) == feed_walk._CLEAN
            ok, _j, _p = feed_walk._match(v, 0, len(v), 0, 0, 0, lit, tpl, pats, patlen,
                                          patclose, first, *got, N)
            if ok:
                got[0] |= tpl_hits[0]
                assert clean, text
                feed_walk._spread(0, tpl, tpl_n, *got[1:], N)  # (by slot -> by node)
                present = ref[1][:N] != feed_walk._ABSENT
                np.testing.assert_array_equal(got[1][:N], ref[1][:N])
                np.testing.assert_array_equal(got[0], ref[0])
                for k in (2, 3):
                    np.testing.assert_array_equal(got[k][:N][present], ref[k][:N][present])
                matched += 1
            refused += clean and not ok
    assert matched > 300 and refused > 100  # both ways, often
