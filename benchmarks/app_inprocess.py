"""Application-layer throughput in one process: WebSocket messages per second.

``run.py --app`` times whole CLI runs against tshark (start-up included). This
script answers the other question: how fast does an ingest go once the process is
up, as for every capture after the first in ``pcapflow ingest a.pcap b.pcap ...``
or a notebook? It ingests the capture once untimed (imports, Numba's
initialisation and cached kernels), then ``--repeat`` more times, each into a
fresh dataset, and prints wall and CPU seconds and ``ws_messages`` rows per wall
second for every timed run (the whole ``pcapflow.ingest``: reading, TCP,
decryption, WebSocket, tables, matching, Parquet writes, commit).

``--one-core`` pins the process (and so every thread it starts: the Parquet
writer, Arrow's and DuckDB's pools) to one CPU before anything is imported.

    python benchmarks/app_inprocess.py /tmp/ws.pcap --keylog /tmp/ws.keylog --one-core
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one-core", action="store_true", help="pin to one CPU")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    if a.one_core:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    t0 = time.perf_counter()
    import pcapflow

    def ingest() -> tuple[float, float, int]:
        with tempfile.TemporaryDirectory(prefix="pcapflow-app-") as data:
            w, c = time.perf_counter(), time.process_time()
            result = pcapflow.ingest([a.capture], keylog=a.keylog, data=data)[0]
            wall, cpu = time.perf_counter() - w, time.process_time() - c
        return wall, cpu, int(result.rows.get("ws_messages", 0))

    first = ingest()
    first_total = time.perf_counter() - t0
    runs = [ingest() for _ in range(a.repeat)]
    doc = {
        "capture": os.path.abspath(a.capture), "one_core": a.one_core,
        "cpus": sorted(os.sched_getaffinity(0)), "load_1min": os.getloadavg()[0],
        "first_run": {"wall_s": first[0], "cpu_s": first[1],
                      "with_imports_s": first_total},
        "runs": [{"wall_s": w, "cpu_s": c, "ws_messages": n, "messages_per_s": n / w}
                 for w, c, n in runs],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    best = min(runs)
    doc["best"] = {"wall_s": best[0], "messages_per_s": best[2] / best[0]}
    print(f"first ingest {first[0]:.2f} s ({first_total:.2f} s with imports); "
          f"warm: " + ", ".join(f"{w:.2f} s" for w, _c, _n in runs)
          + f"; best {best[0]:.2f} s = {best[2] / best[0] / 1000:.0f}k messages/s"
          + (" on one core" if a.one_core else "") + f" (load {doc['load_1min']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
