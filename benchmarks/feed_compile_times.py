"""Compile CPU of the feed scan's kernels on an empty Numba cache (issue 20: the first run).

How this works: ``--save ARGS.pkl`` ingests a small TLS capture with market data once and
pickles the arguments of the first call of ``pipelines.feed_walk._scan`` (its arrays: the
payloads and the rules' program). Then each run (one process, ``NUMBA_CACHE_DIR`` set to a
fresh temporary directory before Numba is imported) calls ``_scan`` on them once: every
kernel it calls is compiled; the process CPU time of that call is printed, and each
compiled function's CPU (inclusive: with what it compiles in turn) and signature count,
from a wrapper of ``numba.core.dispatcher.Dispatcher.compile``. The rows' hash is printed
so the trees compared give the same outputs.

    python benchmarks/feed_compile_times.py --save /tmp/args.pkl \\
        sample_pcaps/binance_tick_tls13.pcap sample_pcaps/binance_tick_tls13.keylog
    python benchmarks/feed_compile_times.py /tmp/args.pkl --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from typing import Any


def save(path: str, capture: str, keylog: str) -> None:
    from pcapflow.pipelines import feed_scan, feed_walk

    import pcapflow

    got: list[Any] = []
    real = feed_walk._scan

    def spy(*args: Any) -> Any:
        if not got:
            got.append(args)
        return real(*args)

    feed_scan._scan = spy  # (the name feed_scan calls)
    with tempfile.TemporaryDirectory() as td:
        pcapflow.ingest([capture], keylog=[keylog], data=td + "/d", workers=1)
    with open(path, "wb") as f:
        pickle.dump(got[0], f)
    print(f"saved the arguments of _scan ({len(got[0])}) to {path}")


def run(path: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NUMBA_CACHE_DIR"] = cache
        import numba.core.dispatcher as d
        import numpy as np

        incl: dict[str, float] = {}
        count: dict[str, int] = {}
        orig = d.Dispatcher.compile

        def compile(self: Any, sig: Any) -> Any:
            name = f"{self.py_func.__module__}.{self.py_func.__qualname__}"
            t0 = time.process_time()
            try:
                return orig(self, sig)
            finally:
                incl[name] = incl.get(name, 0.0) + time.process_time() - t0
                count[name] = count.get(name, 0) + 1

        d.Dispatcher.compile = compile
        from pcapflow.pipelines import feed_walk

        with open(path, "rb") as f:
            args = pickle.load(f)
        t0 = time.process_time()
        out = feed_walk._scan(*args)
        first = time.process_time() - t0
        t0 = time.process_time()
        feed_walk._scan(*args)
        second = time.process_time() - t0
        h = hashlib.sha256()
        for a in out:
            h.update(np.ascontiguousarray(a).tobytes())
        return {
            "first_call_cpu": first,
            "second_call_cpu": second,
            "rows_hash": h.hexdigest()[:16],
            "compile_incl": incl,
            "count": count,
        }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("args")
    p.add_argument("capture", nargs="?")
    p.add_argument("keylog", nargs="?")
    p.add_argument("--save", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    if a.save:
        save(a.args, a.capture, a.keylog)
        return
    r = run(a.args)
    with open("/proc/loadavg") as f:
        r["load"] = f.read().split()[:3]
    r["python"] = sys.executable
    print(
        f"first call {r['first_call_cpu']:.2f} s CPU (second {r['second_call_cpu']:.4f}), "
        f"rows {r['rows_hash']}, load {' '.join(r['load'])}"
    )
    for k, v in sorted(r["compile_incl"].items(), key=lambda kv: -kv[1]):
        print(f"{v:7.2f} s  x{r['count'][k]}  {k}")
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
