"""What issue 18's feed scan and derived tables take of an ingest, in one process.

How this works: the capture is ingested once untimed (imports, Numba's cached
kernels, the page cache), then ``--repeat`` times into fresh datasets, in this
process, with ``--workers 1``. Around each stage of issue 18 (the feed scan run on
every ``ws_messages`` batch at ingest, ``pipelines.feed_scan.stage``; the derive at
the end, ``pcapflow.why.derive_staged``, and the named steps inside it) the main
thread's CPU time (``time.thread_time``) is added up, and the CPU of the derive's thread
beside the matcher (``why.FeedPrep._run``, since session 12: the scan's rows read back,
the feed checks' streams, the microburst episodes) in that thread; the whole ingest's is
the process's CPU time (user + system of every thread: the Parquet writer's too), and
its wall time. Printed: issue 18's CPU (feed scan + derive + prep), its share of the
ingest's CPU, and what it adds to the ingest's CPU without it (issue 18 / (ingest -
issue 18)), per run and their medians.

    python benchmarks/why_share.py /work/bench/ws1m_c.pcap --keylog /work/bench/ws1m_c.keylog \\
        --repeat 3 --json results/why_share.json

``--rss``: also the process's peak RSS (``ru_maxrss``, the first run's included).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable

# (module, attribute, label): wrapped in this order; the labels of the derive's
# inner steps start with "derive." and are part of "derive"
STAGES = [
    ("pcapflow.pipelines.feed_scan", "stage", "feed_scan"),
    # the compiled walk of each batch (the rest of feed_scan: Arrow tables, side files)
    ("pcapflow.pipelines.feed_scan", "_scan", "feed_scan.kernel"),
    ("pcapflow.why", "derive_staged", "derive"),
    # the derive's part in a thread beside the matcher (session 12): the scan's rows read
    # back, the feed checks' streams, the microburst episodes
    ("pcapflow.why", "FeedPrep._run", "feed_prep"),
    ("pcapflow.feed", "prepare", "feed_prep.feed.prepare"),
    # (session 14: the streams walked a side file at a time, instead of ``prepare``)
    ("pcapflow.pipelines.feed_scan", "read_part", "feed_prep.feed_scan.read_part"),
    ("pcapflow.feed", "StreamWalk.add", "feed_prep.feed.StreamWalk.add"),
    ("pcapflow.feed", "StreamWalk.finish", "feed_prep.feed.StreamWalk.finish"),
    ("pcapflow.why", "_bursts_before_venues", "feed_prep.bursts"),
    ("pcapflow.pipelines.feed_scan", "staged", "derive.feed_scan.staged"),
    ("pcapflow.feed", "stage_messages", "derive.feed.stage_messages"),
    ("pcapflow.feed", "message_rows", "derive.feed.message_rows"),
    ("pcapflow.feed", "gaps_table", "derive.feed.gaps_table"),
    ("pcapflow.causes", "compute", "derive.causes"),
    # (session 23: a capture's own causes, the SQL over the orders that may have one)
    ("pcapflow.causes", "of_capture", "derive.causes.of_capture"),
    ("pcapflow.alerts", "latency_shift", "derive.alerts.latency_shift"),
    ("pcapflow.alerts", "p99_high", "derive.alerts.p99_high"),
    ("pcapflow.alerts", "retransmission_storm", "derive.alerts.retransmission_storm"),
    ("pcapflow.alerts", "zero_window", "derive.alerts.zero_window"),
    ("pcapflow.alerts", "microburst", "derive.alerts.microburst"),
    ("pcapflow.alerts", "clock_step", "derive.alerts.clock_step"),
    ("pcapflow.alerts", "feed_gap", "derive.alerts.feed_gap"),
    ("pcapflow.alerts", "stale_feed", "derive.alerts.stale_feed"),
    ("pcapflow.why_carry", "save", "derive.why_carry.save"),
]


def wrap(totals: dict[str, float]) -> None:
    """Replace each stage's function by one that adds its main-thread CPU to ``totals``
    (a stage called inside another of the same label counts once)."""
    depth: dict[str, int] = defaultdict(int)
    for mod_name, attr, label in STAGES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        owner: object = mod
        for part in attr.split(".")[:-1]:  # a method: "Class.name"
            owner = getattr(owner, part, None)
        fn = getattr(owner, attr.split(".")[-1], None) if owner is not None else None
        if fn is None:
            continue

        def timed(*args: object, _fn: Callable = fn, _label: str = label,
                  **kwargs: object) -> object:
            depth[_label] += 1
            t = time.thread_time()
            try:
                return _fn(*args, **kwargs)
            finally:
                depth[_label] -= 1
                if depth[_label] == 0:
                    totals[_label] += time.thread_time() - t
        functools.update_wrapper(timed, fn)
        setattr(owner, attr.split(".")[-1], timed)
        if mod_name == "pcapflow.alerts" and attr in getattr(mod, "DETECTORS", {}):
            mod.DETECTORS[attr] = timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)

    import pcapflow

    totals: dict[str, float] = defaultdict(float)
    wrap(totals)

    def ingest() -> dict[str, float]:
        totals.clear()
        with tempfile.TemporaryDirectory(prefix="pcapflow-share-") as data:
            w, c = time.perf_counter(), time.process_time()
            result = pcapflow.ingest([a.capture], keylog=a.keylog, data=data, workers=1)[0]
            wall, cpu = time.perf_counter() - w, time.process_time() - c
        out = dict(totals)
        out.update(wall_s=wall, cpu_s=cpu, ws_messages=float(result.rows.get("ws_messages", 0)))
        return out

    ingest()
    runs = [ingest() for _ in range(a.repeat)]
    labels = sorted({k for r in runs for k in r if k not in ("wall_s", "cpu_s", "ws_messages")},
                    key=lambda k: (k.split(".")[0] != "feed_scan", k))
    med = {k: statistics.median(r.get(k, 0.0) for r in runs)
           for k in [*labels, "cpu_s", "wall_s"]}
    issue18 = [r.get("feed_scan", 0.0) + r.get("derive", 0.0) + r.get("feed_prep", 0.0)
               for r in runs]
    shares = [x / r["cpu_s"] for x, r in zip(issue18, runs, strict=True)]
    adds = [x / (r["cpu_s"] - x) for x, r in zip(issue18, runs, strict=True)]
    print(f"{'stage':40s} " + " ".join(f"{'run ' + str(i + 1):>8s}" for i in range(len(runs)))
          + f" {'median':>8s}")
    for k in [*labels, "cpu_s", "wall_s"]:
        print(f"{k:40s} " + " ".join(f"{r.get(k, 0.0):8.3f}" for r in runs) + f" {med[k]:8.3f}")
    print(f"{'issue 18 CPU (scan + derive + prep)':40s} "
          + " ".join(f"{x:8.3f}" for x in issue18) + f" {statistics.median(issue18):8.3f}")
    print(f"{'issue 18 / ingest CPU':40s} "
          + " ".join(f"{s:8.1%}" for s in shares) + f" {statistics.median(shares):8.1%}")
    print(f"{'adds to the ingest CPU without it':40s} "
          + " ".join(f"{s:+8.1%}" for s in adds) + f" {statistics.median(adds):+8.1%}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"load {os.getloadavg()[0]:.1f}; peak RSS of this process {rss:.0f} MB "
          f"(every run and the warm-up)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"capture": os.path.abspath(a.capture), "runs": runs, "median": med,
                       "share": shares, "share_median": statistics.median(shares),
                       "issue18_cpu_s": issue18, "adds": adds,
                       "adds_median": statistics.median(adds),
                       "load_1min": os.getloadavg()[0], "peak_rss_mb": rss}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
