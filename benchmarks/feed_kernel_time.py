"""Run time of the feed scan's kernel alone (``pipelines.feed_walk._scan``) over a dump of a
capture's inbound text payloads (``data.npy``, ``offs.npy``: ``feed_walk_floor.payloads``),
in batches of 65,536 as the ingest calls it; the main thread's CPU per run, the outputs hashed.
The installed tree's kernel (run it with each tree's Python to compare them).

    python benchmarks/feed_kernel_time.py DUMP_DIR RUNS
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy as np
from pcapflow.pipelines import feed_walk
from pcapflow.pipelines.feed_scan import program

dump, reps = sys.argv[1], int(sys.argv[2])
d = np.load(f"{dump}/data.npy")
o = np.load(f"{dump}/offs.npy")
arrays = program()._arrays
sel = np.ones(len(o) - 1, np.bool_)
B = 65536


def run() -> list:
    outs = []
    for s in range(0, len(o) - 1, B):
        e = min(s + B, len(o) - 1)
        outs.append(feed_walk._scan(d[o[s] : o[e]], o[s : e + 1] - o[s], sel[s:e], *arrays))
    return outs


h = hashlib.sha256()
for out in run():
    for a in out:
        h.update(np.ascontiguousarray(a).tobytes())
ts = []
for _ in range(reps):
    t = time.thread_time()
    run()
    ts.append(time.thread_time() - t)
print(
    json.dumps(
        {
            "hash": h.hexdigest()[:16],
            "min": round(min(ts), 4),
            "median": round(sorted(ts)[len(ts) // 2], 4),
            "all": [round(x, 4) for x in ts],
        }
    )
)
