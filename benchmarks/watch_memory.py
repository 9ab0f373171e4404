"""Where a long ``pcapflow watch`` process's memory goes: ``watch_rotation.py``'s loop
with probes after each file, and switches to bisect.

    python benchmarks/watch_memory.py --files 16 --rotate-s 10 --pps 50000 \\
        [--no-metrics] [--no-app] [--no-resume] [--trace-from 3] [--trim]

Per file (one JSON line): CPU seconds of the step, RSS and its anonymous part
(``/proc/self/status``), Arrow's pool (bytes allocated now, peak), the matcher's DuckDB
database's ``duckdb_memory()``, and with ``--trace-from K`` the Python heap that
``tracemalloc`` traces from file K on (NumPy's arrays included). ``--trim`` calls
``malloc_trim(0)`` and Arrow's ``release_unused`` after each file (RSS before and
after). ``--no-metrics``: no metrics refresh; ``--no-app``: TCP layer only (no
matcher, no derived tables); ``--no-resume``: each file a capture of its own.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402


def _anon_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--rotate-s", type=float, default=10.0)
    ap.add_argument("--pps", type=int, default=50_000)
    ap.add_argument("--ring", type=int, default=4)
    ap.add_argument("--no-metrics", action="store_true")
    ap.add_argument("--no-app", action="store_true")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--trace-from", type=int, default=-1)
    ap.add_argument("--trim", action="store_true")
    a = ap.parse_args(argv)

    # pcapflow before pyarrow, as the CLI: it chooses Arrow's allocator (pcapflow/__init__.py)
    import pcapflow  # isort: skip
    import pyarrow as pa
    from pcapflow.pipelines import match
    from watch_rotation import START_NS, rotate_in

    from pcapflow.metrics import DatasetMetrics
    from pcapflow.watch import Watcher

    tmp = Path(tempfile.mkdtemp(prefix="pcf-watchmem-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    metrics = DatasetMetrics(root)
    w = Watcher(d, root, lambda p: pcapflow.ingest([[p]], data=root, app=not a.no_app,
                                                   resume=not a.no_resume)[0],
                poll=0.0, settle=0.0, idle=0.0)
    n = int(a.pps * a.rotate_s)
    start, end = START_NS, 0
    for k in range(a.files):
        if k == a.trace_from:
            tracemalloc.start(10)
        end = int(rotate_in(d, k, n, a.pps, a.rotate_s, start, end, a.ring).cols["t"].max())
        c0 = time.process_time()
        w.step()
        if not a.no_metrics:
            metrics.refresh()
        cpu = time.process_time() - c0
        gc.collect()
        row: dict[str, object] = {"file": k, "cpu_s": round(cpu, 3), "rss_mb": round(rss_mb(), 1),
                                  "anon_mb": round(_anon_mb(), 1),
                                  "arrow_mb": round(pa.total_allocated_bytes() / 1e6, 1),
                                  "arrow_peak_mb": round(pa.default_memory_pool().max_memory()
                                                         / 1e6, 1)}
        db = match._DB[1] if match._DB is not None else None
        if db is not None:
            row["duckdb_mb"] = round(sum(r[0] for r in db.execute(
                "SELECT memory_usage_bytes FROM duckdb_memory()").fetchall()) / 1e6, 1)
        if tracemalloc.is_tracing():
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 2)
        if a.trim:
            pa.default_memory_pool().release_unused()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            row["rss_trimmed_mb"] = round(rss_mb(), 1)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
