"""The secret pre-check of ``redact_json_texts``: Arrow RE2 (before) against the
compiled kernel (``_maybe_secret``, now), on the WebSocket text payloads of a capture.

How this works: the payloads come from a pcapflow dataset (``--data``), or from a
capture ingested into a temporary one first (``--capture``, ``--keylog``). They
are taken in the row groups the writer made (the batches the pipeline passes).
Both pre-checks run on every batch; their results must be identical. Reported:
the best of ``--repeat`` runs over all batches, and the throughput.

Usage:
    python benchmarks/redact_precheck.py --capture /tmp/ws.pcap --keylog /tmp/ws.keylog
    python benchmarks/redact_precheck.py --data pcapflow_data [--repeat 7] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from pcapflow.parsers.redact import _PRECHECK_MINIMAL, _maybe_secret

import pcapflow

# The pre-check as it was: every name with ``[-_]*`` between its letters, RE2,
# case-insensitive, or'd with "not ASCII".
_OLD_RE2 = "|".join("[-_]*".join(re.escape(c) for c in n) for n in sorted(_PRECHECK_MINIMAL))


def old(texts: pa.Array, where: np.ndarray) -> np.ndarray:
    hit = pc.match_substring_regex(texts, _OLD_RE2, ignore_case=True)
    maybe = pc.or_(hit, pc.invert(pc.string_is_ascii(texts)))
    return where & maybe.to_numpy(zero_copy_only=False)


def new(texts: pa.Array, where: np.ndarray) -> np.ndarray:
    return _maybe_secret(texts, where)


def batches(data: Path) -> list[pa.Array]:
    """The text payloads of ``ws_messages``, one array per row group."""
    ds = pads.dataset(data / "ws_messages", format="parquet", partitioning="hive")
    out = []
    for frag in ds.get_fragments():
        for rg in frag.split_by_row_group():
            t = rg.to_table(columns=["payload"], filter=pc.field("opcode") == "text")
            if t.num_rows:
                out.append(t["payload"].combine_chunks())
    return out


def best_of(fn: Callable[[pa.Array, np.ndarray], np.ndarray], arrays: list[pa.Array],
            repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for a in arrays:
            fn(a, np.ones(len(a), dtype=bool))
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="a pcapflow dataset holding ws_messages")
    src.add_argument("--capture", type=Path, help="a capture to ingest first")
    ap.add_argument("--keylog", type=Path, action="append", default=[])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp)
            pcapflow.ingest([args.capture], keylog=args.keylog, data=data)
        arrays = batches(data)
    if not arrays:
        print("no WebSocket text payloads", file=sys.stderr)
        return 1
    n = sum(len(a) for a in arrays)
    size = sum(int(pc.sum(pc.binary_length(a)).as_py() or 0) for a in arrays)
    for a in arrays:  # the same answer (and Numba's compile, outside the timing)
        where = np.ones(len(a), dtype=bool)
        if not np.array_equal(old(a, where), new(a, where)):
            print("the pre-checks disagree", file=sys.stderr)
            return 1
    flagged = sum(int(new(a, np.ones(len(a), dtype=bool)).sum()) for a in arrays)
    times = {"arrow_re2": best_of(old, arrays, args.repeat),
             "numba": best_of(new, arrays, args.repeat)}
    print(f"{n:,} text payloads in {len(arrays)} batches, {size / 1e6:.1f} MB, "
          f"{flagged:,} flagged (maybe secret)")
    for name, t in times.items():
        print(f"  {name:10s} {t * 1e3:8.1f} ms  {size / t / 1e9:6.2f} GB/s")
    print(f"  speed-up   {times['arrow_re2'] / times['numba']:8.1f}x")
    if args.json:
        args.json.write_text(json.dumps({"payloads": n, "bytes": size, "batches": len(arrays),
                                         "flagged": flagged, "seconds": times}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
