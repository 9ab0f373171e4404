"""The feed scan's strict walk (``feed_walk._walk``) against DuckDB's ``json_valid`` and the
SQL's ``TRY(json_extract_string(..))`` (session 16, issue 18): which payloads each accepts.

Payloads: 20,000 of ``test_feed_scan``'s generator (cut, trailing commas, NaN, escapes,
duplicate keys, odd values), 20,000 of ``test_feed_tokens``' edits (cut, a duplicate key,
an inserted space, tab, comma, bracket, quote, backslash or control byte), 300 with invalid
UTF-8 inside a key, and six lenient spellings. Prints the counts, every payload the walk
accepts and ``json_valid`` refuses, and the walk's refusals of what ``json_valid`` accepts
by kind. Run from the checkout's root (it imports the tests' generators):

    python benchmarks/json_valid_verdicts.py > benchmarks/results/json_valid_verdicts_s16.txt
"""
import collections
import random
import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcapflow.pipelines import feed_scan, feed_walk
from pcapflow.pipelines.feed_tokens import MAX_DEPTH

from tests.pipelines.test_feed_scan import _doc, _text
from tests.pipelines.test_feed_tokens import _spell

LENIENT = [b'{"e":"trade","E":1,"s":"X","t":5,"x":NaN}', b'{"e":"trade","E":1,"s":"X","t":5,}',
           b'{"e":"trade","E":1,"s":"X","t":5,"x":[1,2,]}', b'{"e":"trade","E":1e3,"s":"X","t":5}',
           b'{"e":"trade","E":-Infinity,"s":"X","t":5}',
           b'{"e":"trade","E":1,"s":"X","t":5,"x":inf}']
BAD_UTF8 = [b"\xff", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf"]


def payloads(rng: random.Random) -> list[bytes]:
    raw = []
    for _ in range(20000):
        d = _doc(rng)
        raw.append(_text(rng, d).encode())
        raw.append(_spell(d, rng.choice([(",", ":"), (", ", ": ")]), rng.random() < .5,
                          rng.randrange(5), rng).encode())
    for _ in range(300):  # invalid UTF-8 after the first quote
        t = _text(rng, _doc(rng)).encode()
        i = t.find(b'"')
        if i >= 0:
            raw.append(t[:i + 1] + rng.choice(BAD_UTF8) + t[i + 1:])
    return raw + LENIENT


def walk_clean(raw: list[bytes]) -> np.ndarray:
    offs = np.zeros(len(raw) + 1, np.int64)
    np.cumsum([len(r) for r in raw], out=offs[1:])
    data = np.frombuffer(b"".join(raw) + bytes(8), np.uint8)
    prog = feed_scan.program()
    assert prog is not None
    a = prog.arrays()
    trie, likes = a[:6], a[9:13]
    n = len(a[2])
    work = (np.zeros(len(a[10]), np.bool_), np.zeros(n, np.int64), np.zeros(n, np.int64),
            np.zeros(n, np.int64), np.zeros(n, np.bool_), np.zeros(MAX_DEPTH, np.int64),
            np.zeros(MAX_DEPTH, np.bool_), np.zeros(MAX_DEPTH, np.int64))
    return np.array([feed_walk._walk(data, offs[i], offs[i + 1], *trie, *likes, *work, True) == 0
                     for i in range(len(raw))])


def kind(r: bytes) -> str:
    if b"\\" in r:
        return "backslash"
    if any(x in r for x in (b"NaN", b"Infinity", b"inf")):
        return "NaN/Inf"
    if any(x in r for x in (b",}", b",]", b", }", b", ]")):
        return "trailing comma"
    if b"e3" in r or b"e+" in r:
        return "exponent"
    if b'"dup"' in r:
        return "duplicate key"
    return "other (not sure to read as DuckDB: a real, a 20-digit id, ... on a path)"


def main() -> int:
    raw = payloads(random.Random(16))
    con = duckdb.connect()
    con.execute("SET threads = 1")
    # the bytes as they are (no UTF-8 check: the invalid ones reach DuckDB)
    con.register("p", pa.table({"p": pa.array(raw, pa.binary()).view(pa.string())}))
    got = con.execute("SELECT coalesce(json_valid(p), false), "
                      "TRY(json_extract_string(p, ['$.e'])) IS NOT NULL FROM p").fetchall()
    valid = np.array([g[0] for g in got])
    tried = np.array([g[1] for g in got])
    walk = walk_clean(raw)
    print(f"{len(raw)} payloads: json_valid {valid.sum()}, TRY(json_extract_string) not null "
          f"{tried.sum()}, the strict walk clean {walk.sum()}")
    print("json_valid != (TRY(json_extract_string) IS NOT NULL):", int((valid != tried).sum()))
    odd = np.flatnonzero(walk & ~valid)
    bad = sum(1 for i in odd if any(b in raw[i] for b in BAD_UTF8))
    print(f"the walk clean, json_valid false: {len(odd)} ({bad} with invalid UTF-8)")
    for i in odd[:5]:
        print("  ", raw[i][:90])
    kinds = collections.Counter(kind(raw[i]) for i in np.flatnonzero(~walk & valid))
    print("the walk unsure, json_valid true, by kind:", dict(kinds))
    print("json_valid false:", int((~valid).sum()), "of which the walk unsure:",
          int((~valid & ~walk).sum()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
