"""What one metrics refresh of a rotation's set holds and peaks at as the set grows
(issue 19, session 18): the watch process refreshes ``DatasetMetrics`` after every file.

    python benchmarks/metrics_refresh_peak.py RUN_TMP/ds --files 1500

``RUN_TMP/ds``: a dataset holding one rotation's set (a ``watch_memory.py`` run's
``pcf-watchmem-*/ds``). It is copied as hard links; then, ``--files`` times, each of a
few tables (flows, latency, orders, tcp_rtt) gets one more final part of a later
command (``part-f<k>-0.parquet``, a hard link to the set's newest: its rows counted
again) and the ``captures`` part is written anew, as a resumed command's commit does,
and the metrics are refreshed as ``pcapflow watch`` does (``refresh(added=[capture])``).
Every tenth of the run: Python's heap traced by ``tracemalloc`` after the refresh
(``held_kB``), its peak during the refresh above what it held before (``peak_kB``),
and the refresh's CPU (ms; slowed by the tracing). Flat in the set's size is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--files", type=int, default=1500)
    a = ap.parse_args()
    from pcapflow.metrics import DatasetMetrics

    tmp = Path(tempfile.mkdtemp(prefix="pcf-refresh-"))
    root = tmp / "ds"
    shutil.copytree(a.dataset, root, copy_function=os.link)
    m = DatasetMetrics(root)
    m.refresh()
    (cid,) = m._seen
    newest = {}
    for t in ("flows", "latency", "orders", "tcp_rtt"):
        parts = sorted((root / t / f"capture_id={cid}").glob("part-f*"))
        if parts:
            newest[t] = parts[-1]
    cap = root / "captures" / f"capture_id={cid}" / "part-t0.parquet"
    tracemalloc.start()
    try:
        for i in range(a.files):
            for p in newest.values():
                os.link(p, p.parent / f"part-f{10**6 + i}-0.parquet")
            staged = cap.with_suffix(".staged")
            shutil.copyfile(cap, staged)
            os.replace(staged, cap)
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            c0 = time.process_time()
            m.refresh(added=[cid])
            cpu = time.process_time() - c0
            if i % max(a.files // 10, 1) == 0 or i == a.files - 1:
                held, peak = tracemalloc.get_traced_memory()
                print(json.dumps({"parts_added_per_table": i + 1,
                                  "held_kB": round(held / 1e3, 1),
                                  "peak_kB": round((peak - before) / 1e3, 1),
                                  "cpu_ms": round(cpu * 1e3, 1)}), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
