"""What a compiled walk of every market-data payload can cost at least (issue 18's rule).

How this works: the capture is ingested once (``--workers 1``, into a temporary dataset,
or ``--data`` an existing one), its inbound text ``ws_messages`` payloads are laid end to
end as the feed scan sees them, and each kernel below runs over all of them ``--rounds``
times in this process; the minimum of the main thread's CPU time (``time.thread_time``)
is printed per kernel:

- ``scan``: the feed scan's kernel (``pipelines.feed_walk._scan``: the walk, the rules'
  fields, the rows), as an ingest runs it;
- ``walk``: its walk alone (``feed_walk._walk``: grammar, paths, ``like`` hits);
- ``walk_head``: the same walk over the payloads with their arrays of price levels cut
  to ``[]`` (what it costs to reach the fields the rules read: (c) in issue 18's notes);
- ``validator``: a minimal strict JSON validator (the grammar only: no paths, no
  ``like``, nothing recorded; strings 8 bytes at a time as the walk reads them): what
  any scalar walk that must reject what DuckDB cannot parse costs at least here;
- ``stage1``: a structural index of every 64 bytes (simdjson's stage 1 as loops:
  quotes, backslashes, control bytes, brackets, colons and commas as bit masks, the
  bytes inside strings by a prefix xor) and ``stage1_emit``: its positions listed;
- ``bytes``: one compare per byte (a loop LLVM does not vectorise);
- ``duckdb_valid`` and ``duckdb_extract``: DuckDB's JSON functions (yyjson inside DuckDB,
  already a dependency) over the same payloads as one Arrow column, on one thread:
  ``json_valid`` of every payload, and ``json_extract_string`` of five Binance paths
  from one parse per payload (``duckdb_column``: DuckDB's own cost of reading the column,
  ``length``). Timed by the process's CPU time (DuckDB's thread pool is set to one).

    python benchmarks/feed_walk_floor.py /work/bench/ws1m_c.pcap \\
        --keylog /work/bench/ws1m_c.keylog --json results/feed_walk_floor_s13.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np


def payloads(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The inbound text ``ws_messages`` payloads of a dataset, end to end, and offsets."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from pcapflow.pipelines.feed_scan import _buffers

    datas, offs, base = [], [np.zeros(1, np.int64)], 0
    for f in sorted((data_dir / "ws_messages").rglob("*.parquet")):
        t = pq.read_table(f, columns=["opcode", "direction", "payload"])
        keep = pc.and_(pc.equal(t.column("opcode"), "text"), pc.equal(t.column("direction"), "in"))
        t = t.filter(pc.fill_null(pc.and_(keep, pc.is_valid(t.column("payload"))), False))
        for chunk in t.column("payload").chunks:
            d, o = _buffers(chunk)
            datas.append(d.copy())
            offs.append(o[1:] + base)
            base += int(o[-1])
    return np.concatenate([*datas, np.zeros(8, np.uint8)]), np.concatenate(offs)


def cut_levels(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The payloads with every array of arrays of strings written ``[]``."""
    rx = re.compile(rb'\[\["[^\]]*"\](,\["[^\]]*"\])*\]')
    raw = data.tobytes()
    out = [rx.sub(b"[]", raw[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]
    offs = np.zeros(len(out) + 1, np.int64)
    np.cumsum([len(x) for x in out], out=offs[1:])
    return np.frombuffer(b"".join(out) or b"\0", np.uint8).copy(), offs


def kernels() -> dict[str, Callable[..., int]]:
    from pcapflow.pipelines import feed_walk
    from pcapflow.pipelines.feed_scan import program
    from pcapflow.pipelines.feed_tokens import MAX_DEPTH, string_end

    prog = program()
    assert prog is not None
    (node_key, node_keylen, node_idx, node_child, node_sibling, requested, _groups, _consts,
     _constlen, pats, patlen, patclose, first, _lists, _scalars) = arrays = prog.arrays()
    walk = feed_walk._walk

    @numba.njit(nogil=True)
    def walk_all(data, offsets):
        n = node_idx.shape[0]
        hits = np.zeros(patlen.shape[0], np.bool_)
        kinds = np.zeros(n, np.int64)
        starts = np.zeros(n, np.int64)
        ends = np.zeros(n, np.int64)
        visited = np.zeros(n, np.bool_)
        stack_node = np.zeros(MAX_DEPTH, np.int64)
        stack_obj = np.zeros(MAX_DEPTH, np.bool_)
        stack_count = np.zeros(MAX_DEPTH, np.int64)
        ev, evn = np.zeros((1, 5), np.int64), np.zeros(1, np.int64)  # (no templates learnt)
        unsure = 0
        for i in range(offsets.shape[0] - 1):
            unsure += walk(data, offsets[i], offsets[i + 1], node_key, node_keylen, node_idx,
                           node_child, node_sibling, requested, pats, patlen, patclose, first,
                           hits, kinds, starts, ends, visited, stack_node, stack_obj, stack_count,
                           True, False, ev, evn, hits)
        return unsure

    @numba.njit(nogil=True, inline="always")
    def ws(data, pos, end):
        while pos < end:
            c = data[pos]
            if c != 32 and c != 9 and c != 10 and c != 13:
                break
            pos += 1
        return pos

    @numba.njit(nogil=True, inline="always")
    def digits(data, pos, end):
        while pos < end and 48 <= data[pos] <= 57:
            pos += 1
        return pos

    @numba.njit(nogil=True, inline="always")
    def number(data, pos, end):
        p = pos + 1 if data[pos] == 45 else pos
        if p >= end or data[p] < 48 or data[p] > 57:
            return -1
        p = p + 1 if data[p] == 48 else digits(data, p, end)
        if p < end and data[p] == 46:
            q = digits(data, p + 1, end)
            if q == p + 1:
                return -1
            p = q
        if p < end and (data[p] == 101 or data[p] == 69):
            p += 1
            if p < end and (data[p] == 43 or data[p] == 45):
                p += 1
            q = digits(data, p, end)
            if q == p:
                return -1
            p = q
        return p

    @numba.njit(nogil=True, inline="always")
    def key(data, pos, end):
        """A key and its colon at ``pos``: the position after the colon, or -1."""
        if pos >= end or data[pos] != 34:
            return -1
        e = string_end(data, pos + 1, end)
        if e < 0:
            return -1
        pos = ws(data, e + 1, end)
        if pos >= end or data[pos] != 58:
            return -1
        return ws(data, pos + 1, end)

    @numba.njit(nogil=True)
    def valid(data, start, end, stack):
        """0 when ``data[start:end]`` is one JSON value by the strict grammar, else 1."""
        depth = 0
        pos = ws(data, start, end)
        while True:
            if pos >= end:
                return 1
            c = data[pos]
            if c == 123 or c == 91:
                if depth == stack.shape[0]:
                    return 1
                stack[depth] = c
                depth += 1
                pos = ws(data, pos + 1, end)
                if pos < end and data[pos] == c + 2:
                    depth -= 1
                    pos += 1
                elif c == 123:
                    pos = key(data, pos, end)
                    if pos < 0:
                        return 1
                    continue
                else:
                    continue
            elif c == 34:
                e = string_end(data, pos + 1, end)
                if e < 0:
                    return 1
                pos = e + 1
            elif c == 116 or c == 110 or c == 102:
                w = 5 if c == 102 else 4
                if pos + w > end:
                    return 1
                for k in range(1, w):
                    x = data[pos + k]
                    if c == 116 and x != (114, 117, 101)[k - 1]:
                        return 1
                    if c == 110 and x != (117, 108, 108)[k - 1]:
                        return 1
                    if c == 102 and x != (97, 108, 115, 101)[k - 1]:
                        return 1
                pos += w
            else:
                pos = number(data, pos, end)
                if pos < 0:
                    return 1
            while True:
                pos = ws(data, pos, end)
                if depth == 0:
                    return 0 if pos == end else 1
                if pos >= end:
                    return 1
                c = data[pos]
                o = stack[depth - 1]
                if c == o + 2:
                    depth -= 1
                    pos += 1
                    continue
                if c != 44:
                    return 1
                pos = ws(data, pos + 1, end)
                if o == 123:
                    pos = key(data, pos, end)
                    if pos < 0:
                        return 1
                break

    @numba.njit(nogil=True)
    def validate_all(data, offsets):
        stack = np.zeros(MAX_DEPTH, np.uint8)
        bad = 0
        for i in range(offsets.shape[0] - 1):
            bad += valid(data, offsets[i], offsets[i + 1], stack)
        return bad

    @numba.njit(nogil=True)
    def stage1(data, out):
        carry = np.uint64(0)
        escapes = 0
        for b in range(data.shape[0] // 64):
            q = bs = st = ctl = np.uint64(0)
            for j in range(64):
                c = data[b * 64 + j]
                bit = np.uint64(1) << np.uint64(j)
                q |= bit if c == 34 else np.uint64(0)
                bs |= bit if c == 92 else np.uint64(0)
                st |= bit if (c == 123 or c == 125 or c == 91 or c == 93 or c == 58
                              or c == 44) else np.uint64(0)
                ctl |= bit if c < 32 else np.uint64(0)
            x = q
            for s in (1, 2, 4, 8, 16, 32):
                x ^= x << np.uint64(s)
            x ^= carry
            carry = np.uint64(0) - (x >> np.uint64(63))
            out[b] = (st & ~x) | (q & x)
            escapes += (bs | ctl) != 0
        return escapes

    @numba.njit(nogil=True)
    def emit(masks, pos):
        k = 0
        for b in range(masks.shape[0]):
            m = masks[b]
            while m != 0:
                pos[k] = b * 64 + numba.cpython.unsafe.numbers.trailing_zeros(m)
                k += 1
                m &= m - np.uint64(1)
        return k

    @numba.njit(nogil=True)
    def byte_loop(data, offsets):
        n = 0
        for i in range(offsets.shape[0] - 1):
            for p in range(offsets[i], offsets[i + 1]):
                if data[p] == 34:
                    n += 1
        return n

    def scan(data: np.ndarray, offsets: np.ndarray) -> int:
        sel = np.ones(len(offsets) - 1, np.bool_)
        return int(feed_walk._scan(data, offsets, sel, *arrays, True)[10].sum())

    return {"scan": scan, "walk": walk_all, "validator": validate_all, "stage1": stage1,
            "stage1_emit": emit, "bytes": byte_loop}


def _duckdb_runs(data: np.ndarray, offsets: np.ndarray) -> dict[str, Callable[[], object]]:
    """DuckDB's JSON functions over the payloads (one Arrow column, no copy), one thread."""
    import duckdb
    import pyarrow as pa

    n = len(offsets) - 1
    column = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets.astype(np.int64)), pa.py_buffer(data[:int(offsets[-1])]))
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("payloads", pa.table({"p": column}))

    def one(sql: str) -> Callable[[], object]:
        return lambda: con.execute(sql).fetchall()[0][0]

    return {
        "duckdb_column": one("SELECT count(*) FROM payloads WHERE length(p) > 0"),
        "duckdb_valid": one("SELECT count(*) FROM payloads WHERE json_valid(p)"),
        "duckdb_extract": one("SELECT count(json_extract_string(p, ['$.e', '$.s', '$.U', "
                              "'$.u', '$.E'])) FROM payloads"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--data", type=Path, help="a dataset of the capture already ingested")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)

    import pcapflow

    with tempfile.TemporaryDirectory(prefix="pcapflow-floor-") as tmp:
        data_dir = a.data
        if data_dir is None:
            data_dir = Path(tmp)
            pcapflow.ingest([a.capture], keylog=a.keylog, data=str(data_dir), workers=1)
        data, offsets = payloads(data_dir)
    head, head_offsets = cut_levels(data, offsets)
    k = kernels()
    masks = np.zeros(len(data) // 64, np.uint64)
    positions = np.zeros(len(data) // 2 + 1, np.int64)
    runs: dict[str, Callable[[], object]] = {
        "scan": lambda: k["scan"](data, offsets),
        "walk": lambda: k["walk"](data, offsets),
        "walk_head": lambda: k["walk"](head, head_offsets),
        "validator": lambda: k["validator"](data, offsets),
        "stage1": lambda: k["stage1"](data, masks),
        "stage1_emit": lambda: k["stage1_emit"](masks, positions),
        "bytes": lambda: k["bytes"](data, offsets),
    }
    runs.update(_duckdb_runs(data, offsets))
    small = offsets[:101]
    k["walk"](data, small)
    k["validator"](data, small)
    k["stage1"](data[:640], masks[:10])
    k["stage1_emit"](masks[:10], positions)
    k["bytes"](data, small)
    k["scan"](data, small)
    out: dict[str, object] = {
        "capture": os.path.abspath(a.capture), "messages": len(offsets) - 1,
        "payload_bytes": int(offsets[-1]), "head_bytes": int(head_offsets[-1])}
    times: dict[str, list[float]] = {name: [] for name in runs}
    answers: dict[str, object] = {}
    for _ in range(a.rounds):
        for name, fn in runs.items():
            clock = time.process_time if name.startswith("duckdb") else time.thread_time
            t = clock()
            answers[name] = fn()
            times[name].append(clock() - t)
    print(f"{len(offsets) - 1} payloads, {offsets[-1] / 1e6:.1f} MB "
          f"({head_offsets[-1] / 1e6:.1f} MB with the price levels cut); "
          f"CPU s, min of {a.rounds}")
    for name, ts in times.items():
        print(f"{name:15s} {min(ts):7.3f}   (answer {answers[name]})")
    print(f"load {os.getloadavg()[0]:.1f}")
    out.update(min_s={n: min(t) for n, t in times.items()}, runs_s=times,
               answers={n: int(v) for n, v in answers.items()},  # type: ignore[call-overload]
               structurals=answers["stage1_emit"], load_1min=os.getloadavg()[0])
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
