"""Where a warm default ingest's CPU goes, step by step, in one process (issue 20).

How this works: ``pcapflow.ingest([capture], workers=1)`` once to warm up (imports,
Numba's kernels, DuckDB's databases), then ``--repeat`` timed ingests into fresh
datasets. Each named step (below) is timed by the main thread's CPU (``thread_time``),
exclusive of the steps it calls; ``threads`` is the rest of the process's CPU in that
time (the SHA-256 and Parquet writer threads, the derive's feed thread). A step that a
version of the code does not have is left out, so two installs can be compared in
alternating processes (``python`` of each, this script given by path):

    for r in 1 2 3; do for py in /work/venv-main/bin/python .venv/bin/python; do
        $py benchmarks/default_steps.py /tmp/speed-1m.pcap --repeat 3 --json /tmp/$r.json
    done; done
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from pcapflow.parsers.capture import capset
from pcapflow.parsers.tcp import analysis
from pcapflow.pipelines import store
from pcapflow.pipelines.ingest import app_layer, driver, flow_rows

import pcapflow
from pcapflow import venues, why

STEPS: list[tuple[Any, str, str]] = [
    (capset.CaptureSet, "__next__", "read"), (driver, "decode_chunk", "decode"),
    (analysis.FlowTracker, "process", "tcp"), (driver, "tcp_event_rows", "tcp rows"),
    (driver, "decode_anomaly_rows", "tcp rows"),
    (app_layer.AppLayer, "process", "app other"), (app_layer.AppLayer, "_select", "app select"),
    (app_layer.AppLayer, "_timestamp_samples", "app ts"),
    (app_layer.AppLayer, "_packet", "app _packet"), (app_layer.AppLayer, "_quiet", "app _quiet"),
    (app_layer, "_gives_up", "app gives_up"), (app_layer.AppLayer, "_run", "app _run"),
    (app_layer.AppLayer, "_rtt_run", "app rtt run"),
    (app_layer.AppLayer, "_write", "app write"), (app_layer.AppLayer, "_dispatch", "app dispatch"),
    (app_layer.AppLayer, "_flush_rtt", "app rtt flush"),
    (app_layer.AppLayer, "retire", "app end"), (app_layer.AppLayer, "finish", "app end"),
    (flow_rows.FlowRows, "add", "flows"), (flow_rows.FlowRows, "finish", "flows"),
    (venues.IngestMatcher, "__call__", "matcher"), (why, "derive_staged", "derive"),
    (store.Staging, "commit", "commit"), (store.Staging, "close_writers", "writers"),
]

acc: dict[str, float] = {}
stack: list[list[Any]] = []


def _enter(label: str) -> None:
    now = time.thread_time()
    top = stack[-1]
    acc[top[0]] = acc.get(top[0], 0.0) + now - top[1]
    stack.append([label, now])


def _leave() -> None:
    now = time.thread_time()
    label, t = stack.pop()
    acc[label] = acc.get(label, 0.0) + now - t
    stack[-1][1] = now


def _wrap(owner: Any, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def w(*a: Any, **k: Any) -> Any:
        _enter(label)
        try:
            return fn(*a, **k)
        finally:
            _leave()

    setattr(owner, name, w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write every timed ingest's steps here")
    a = ap.parse_args(argv)
    for owner, name, label in STEPS:
        if hasattr(owner, name):
            _wrap(owner, name, label)
    base = tempfile.mkdtemp(prefix="pcapflow-steps-")
    res = []
    try:
        for i in range(a.repeat + 1):
            acc.clear()
            stack[:] = [["other", time.thread_time()]]
            t0, m0 = time.process_time(), time.thread_time()
            pcapflow.ingest([a.capture], data=os.path.join(base, f"d{i}"), workers=1)
            acc["other"] += time.thread_time() - stack[-1][1]
            total, main_cpu = time.process_time() - t0, time.thread_time() - m0
            shutil.rmtree(os.path.join(base, f"d{i}"), ignore_errors=True)
            if i:  # (the first: the warm-up)
                res.append({**acc, "main thread": main_cpu, "threads": total - main_cpu,
                            "process": total})
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{pcapflow.__file__}: {a.repeat} warm ingests, medians of CPU s; load "
          f"{os.getloadavg()[0]:.1f}")
    for k in res[0]:
        print(f"{k:<14}{statistics.median(r.get(k, 0.0) for r in res):8.3f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
