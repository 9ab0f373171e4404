"""FIX parsing throughput: ``FixSession.feed`` per piece against ``feed_many`` (batch path).

How this works: ``messages`` generates an order-entry stream (NewOrderSingle,
ExecutionReport, Cancel/Replace, Heartbeat; 12-30 fields each, BodyLength and
CheckSum computed here) and ``pieces`` cuts it the way TCP would (1448-byte
segments, or one message per piece). Both paths parse the same pieces and turn
their events into Arrow tables with ``RowBuffers`` (redaction included); the
tables are compared, so the numbers are for identical output. Reported:
messages per second of parsing alone and of parsing + rows, best of ``--repeat``.

Usage:
    python benchmarks/fix_parse.py [--messages 200000] [--split mss|message]
                                   [--run-pieces 256] [--repeat 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np
import pyarrow as pa
from pcapflow.parsers.events import Run
from pcapflow.parsers.fix import FixSession
from pcapflow.pipelines.tables.rows import RowBuffers

SOH = "\x01"


def encode(fields: Iterable[tuple[int, str]], begin: str = "FIX.4.4") -> bytes:
    """One FIX message: ``8``, ``9`` (computed), the fields, ``10`` (computed)."""
    body = "".join(f"{tag}={value}{SOH}" for tag, value in fields).encode()
    head = f"8={begin}{SOH}9={len(body)}{SOH}".encode()
    total = sum(head) + sum(body)
    return head + body + f"10={total & 0xFF:03d}{SOH}".encode()


def messages(n: int, seed: int = 1) -> list[bytes]:
    """``n`` order-entry messages of one session (both sides' types, one direction)."""
    rnd = random.Random(seed)
    out = []
    t0 = 1_718_096_506_000
    for seq in range(1, n + 1):
        ms = t0 + seq * 3
        stamp = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}"
        head = [(35, ""), (49, "CLIENT1"), (56, "EXCH"), (34, str(seq)), (52, stamp)]
        kind = rnd.random()
        oid = f"ord-{seq:08d}"
        if kind < 0.45:
            head[0] = (35, "D")
            body = [(11, oid), (1, "ACC-7"), (21, "1"), (55, "BTC-USD"),
                    (54, rnd.choice("12")), (60, stamp), (38, str(rnd.randint(1, 500))),
                    (40, "2"), (44, f"{rnd.uniform(60000, 70000):.2f}"), (59, "0")]
        elif kind < 0.9:
            head[0] = (35, "8")
            body = [(37, str(880000 + seq)), (11, oid), (17, f"exec-{seq}"), (150, "0"),
                    (39, "0"), (55, "BTC-USD"), (54, "1"), (38, "5"), (151, "5"), (14, "0"),
                    (6, "0"), (60, stamp), (453, "2"), (448, "P1"), (447, "D"), (452, "1"),
                    (448, "P2"), (447, "D"), (452, "3"), (58, "new order accepted")]
        elif kind < 0.97:
            head[0] = (35, "G")
            body = [(11, oid), (41, f"ord-{seq - 1:08d}"), (37, str(880000 + seq - 1)),
                    (55, "BTC-USD"), (54, "1"), (38, "7"), (40, "2"), (44, "65000.50"),
                    (60, stamp)]
            if rnd.random() < 0.3:
                body.insert(0, (43, "Y"))
        else:
            head[0] = (35, "0")
            body = []
        out.append(encode(head + body))
    return out


def pieces(msgs: list[bytes], split: str, mss: int = 1448) -> list[bytes]:
    """The stream as TCP would carry it: ``mss``-byte segments or one message each."""
    if split == "message":
        return list(msgs)
    stream = b"".join(msgs)
    return [stream[i : i + mss] for i in range(0, len(stream), mss)]


def runs(parts: list[bytes], per_run: int, t0: int = 10**18) -> list[Run]:
    """Pieces grouped into ``Run``s of ``per_run`` (piece ``i`` at time ``t0 + 1000 i``)."""
    out = []
    for a in range(0, len(parts), per_run):
        chunk = parts[a : a + per_run]
        ends = np.cumsum([len(p) for p in chunk], dtype=np.int64)
        ts = t0 + 1000 * np.arange(a, a + len(chunk), dtype=np.int64)
        out.append(Run(b"".join(chunk), ends, ts, ts + 500))
    return out


def parse_feed(parts: list[bytes]) -> list[object]:
    s = FixSession(1)
    events: list[object] = []
    for i, p in enumerate(parts):
        ts = 10**18 + 1000 * i
        events += s.feed("out", p, ts, ts + 500)
    return events + s.finish(2 * 10**18)


def parse_many(batches: list[Run]) -> list[object]:
    s = FixSession(1)
    events: list[object] = []
    for r in batches:
        events += s.feed_many("out", r)
    return events + s.finish(2 * 10**18)


def to_tables(events: list[object]) -> dict[str, pa.Table]:
    parts: dict[str, list[pa.Table]] = {}
    rows = RowBuffers(lambda t, tbl: parts.setdefault(t, []).append(tbl))
    for e in events:
        rows.add(e)
    rows.flush()
    return {t: pa.concat_tables(v) for t, v in parts.items()}


def best(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Fastest of ``repeat`` calls (seconds) and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--split", choices=("mss", "message"), default="mss")
    ap.add_argument("--run-pieces", type=int, default=256, help="pieces per Run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)

    msgs = messages(a.messages, a.seed)
    parts = pieces(msgs, a.split)
    batches = runs(parts, a.run_pieces)
    n = len(msgs)
    parse_many(runs(parts[:64], 64))  # compile / load the Numba cache outside the timing

    t_feed, ev_feed = best(lambda: parse_feed(parts), a.repeat)
    t_feed_rows, _ = best(lambda: to_tables(parse_feed(parts)), a.repeat)
    t_many, ev_many = best(lambda: parse_many(batches), a.repeat)
    t_many_rows, _ = best(lambda: to_tables(parse_many(batches)), a.repeat)

    slow, fast = to_tables(ev_feed), to_tables(ev_many)  # type: ignore[arg-type]
    assert slow.keys() == fast.keys(), (slow.keys(), fast.keys())
    for name, t in slow.items():
        assert t.num_rows == fast[name].num_rows, name
        assert t.equals(fast[name].sort_by("stream_offset")), f"{name} differs"
    assert slow["fix_messages"].num_rows == n

    result = {
        "messages": n, "bytes": sum(map(len, msgs)), "pieces": len(parts), "split": a.split,
        "run_pieces": a.run_pieces,
        "feed_msg_per_s": n / t_feed, "feed_rows_msg_per_s": n / t_feed_rows,
        "feed_many_msg_per_s": n / t_many, "feed_many_rows_msg_per_s": n / t_many_rows,
        "us_per_msg": {"feed": 1e6 * t_feed / n, "feed+rows": 1e6 * t_feed_rows / n,
                       "feed_many": 1e6 * t_many / n, "feed_many+rows": 1e6 * t_many_rows / n},
    }
    print(f"{n:,} messages, {result['bytes']:,} bytes, {len(parts):,} pieces ({a.split}), "
          f"runs of {a.run_pieces} pieces; best of {a.repeat}")
    for label, key in (("feed", "feed"), ("feed + rows", "feed+rows"),
                       ("feed_many", "feed_many"), ("feed_many + rows", "feed_many+rows")):
        us = result["us_per_msg"][key]
        print(f"  {label:<18} {1e6 / us:>12,.0f} msg/s  {us:7.2f} us/msg")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
