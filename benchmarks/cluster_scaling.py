"""``pcapflow ingest --cluster local:N``: how ingest of many capture sets scales with
Dask workers.

    python benchmarks/cluster_scaling.py --sets 6 --packets 200000 --workers 1 2 \\
        --json benchmarks/results/cluster_scaling.json

Writes ``--sets`` synthetic trading captures (``make_capture.py``, a different seed
each: different content, so each is its own capture), then for each worker count
starts a ``LocalCluster`` of that many single-threaded worker processes (timed apart:
``startup_s``) and ingests all sets through ``pcapflow.ingest(..., cluster=...)`` into
a fresh dataset (``ingest_s``); a local one-process ingest of the same sets is the
baseline. Best of ``--repeat``. The row counts of every run are checked equal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rows(root: Path) -> dict[str, int]:
    con = duckdb.connect()
    out = {}
    for t in ("flows", "tcp_events", "tcp_rtt"):
        files = sorted(str(p) for p in (root / t).glob("capture_id=*/*.parquet"))
        out[t] = con.execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()[0] \
            if files else 0
    return out


def _warm(src: str, tmp: str) -> None:
    """Ingest a small capture here (a worker: its Numba kernels loaded before timing)."""
    import pcapflow

    pcapflow.ingest([src], data=Path(tmp) / f"warm-{os.getpid()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sets", type=int, default=6)
    ap.add_argument("--packets", type=int, default=200_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    import distributed
    from make_capture import Config, plan, write

    import pcapflow

    tmp = Path(tempfile.mkdtemp(prefix="pcf-cluster-"))
    caps = []
    for k in range(a.sets):
        p = tmp / f"host{k:02d}.pcap"
        write(plan(Config(packets=a.packets, seed=100 + k)), str(p), "pcap", 262_144)
        caps.append(str(p))
    size = sum(os.path.getsize(c) for c in caps)
    # warm the Numba cache (and the page cache) once, untimed
    write(plan(Config(packets=5_000, seed=99)), str(tmp / "warm-src.pcap"), "pcap", 262_144)
    _warm(str(tmp / "warm-src.pcap"), str(tmp))

    def local_run(i: int) -> tuple[float, dict[str, int]]:
        root = tmp / f"local{i}"
        t0 = time.perf_counter()
        pcapflow.ingest(caps, data=root, sets=False, workers=1)
        return time.perf_counter() - t0, _rows(root)

    runs = []
    best, want = min(local_run(i) for i in range(a.repeat))
    runs.append({"mode": "local", "workers": 1, "ingest_s": round(best, 3)})
    print(f"local, one process: {best:.2f} s", flush=True)
    for n in a.workers:
        t0 = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        client.run(_warm, str(tmp / "warm-src.pcap"), str(tmp))  # kernels loaded everywhere
        startup = time.perf_counter() - t0
        times = []
        for i in range(a.repeat):
            root = tmp / f"cluster{n}-{i}"
            t1 = time.perf_counter()
            res = pcapflow.ingest(caps, data=root, sets=False,
                                  cluster=cluster.scheduler_address)
            times.append(time.perf_counter() - t1)
            busy = sum(r.seconds for r in res)
            got = _rows(root)
            assert got == want, (got, want)
        client.close()
        cluster.close()
        runs.append({"mode": "cluster", "workers": n, "startup_s": round(startup, 3),
                     "ingest_s": round(min(times), 3),
                     "sets_busy_s": round(busy, 3),
                     "parallelism": round(busy / times[-1], 2)})
        print(f"cluster local:{n}: {min(times):.2f} s (+ {startup:.1f} s to start)",
              flush=True)
    base = next(r for r in runs if r["mode"] == "cluster" and r["workers"] == min(a.workers))
    for r in runs:
        r["speedup_vs_1_worker"] = round(base["ingest_s"] / r["ingest_s"], 2)
    res = {"sets": a.sets, "packets_per_set": a.packets, "bytes": size,
           "cpus": len(os.sched_getaffinity(0)), "load_avg_at_end": os.getloadavg(),
           "runs": runs}
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
