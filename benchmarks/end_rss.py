"""The end of an ingest (matcher, microburst episodes) replayed alone: RSS and CPU of each.

How this works. ``--save DIR``: ingest the capture (``pcapflow.ingest``, ``--workers 1``)
with the ingest's matcher wrapped so that, at its last call (the one with the capture's
id), the staging directory and the flows it is given are copied to DIR first. Then
(``--run DIR``, a fresh process each time) one part of the end is run over that copy,
with the RSS of this process sampled every 2 ms from ``/proc/self/statm``:

- ``match``: ``match_carry.match`` (the matcher's DuckDB, as the ingest runs it);
- ``bursts``: ``why._bursts_before_venues`` (the microburst episodes of ``FeedPrep``);
- ``both``: the two at once, the bursts in a thread (as the ingest runs them);
- ``end``: ``IngestMatcher.__call__`` with the capture's id (matcher, feed and derive).

One JSON line: RSS before (MB, 1e6 bytes, after the imports and a warm-up of the
kernels on a tiny input), peak, peak less before, CPU seconds of the part (process
time) and a digest of the part's output (equal digests: equal rows).

    python benchmarks/end_rss.py --save /work/bench/end_ws2m /work/bench/ws2m.pcap \\
        --keylog /work/bench/ws2m.keylog
    python benchmarks/end_rss.py --run /work/bench/end_ws2m --part match
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


class Sampler:
    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __enter__(self) -> Sampler:
        self.peak = rss_mb()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_mb())


def save(out: Path, capture: str, keylog: str | None) -> None:
    import pyarrow.parquet as pq

    import pcapflow
    from pcapflow import venues

    orig = venues.IngestMatcher.__call__

    def wrapped(self: Any, stage_dir: Path, flows: Any, capture_id: str | None = None) -> Any:
        if capture_id is not None:
            if out.exists():
                shutil.rmtree(out)
            shutil.copytree(stage_dir, out / "stage")
            pq.write_table(flows, out / "flows.parquet")
            (out / "capture_id").write_text(capture_id)
        return orig(self, stage_dir, flows, capture_id)

    venues.IngestMatcher.__call__ = wrapped  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as data:
        pcapflow.ingest([capture], keylog=[keylog] if keylog else None, data=data)
    print(json.dumps({"saved": str(out)}))


def digest(obj: Any) -> str:
    import pyarrow as pa

    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, pa.Table):
            h.update(repr(o.schema).encode())
            for row in o.to_pylist():
                h.update(repr(row).encode())
        elif isinstance(o, dict):
            for k in sorted(o):
                h.update(repr(k).encode())
                feed(o[k])
        elif isinstance(o, list | tuple):
            for v in o:
                feed(v)
        else:
            h.update(repr(o).encode())

    feed(obj)
    return h.hexdigest()[:16]


def run(src: Path, part: str) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from pcapflow.pipelines import match_carry

    from pcapflow import venues, why

    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "stage"
        shutil.copytree(src / "stage", stage)
        flows = pq.read_table(src / "flows.parquet")
        capture_id = (src / "capture_id").read_text()
        registry = venues.registry()
        rtt_files = why.staged_files(stage)["tcp_rtt"]
        key = why._burst_key()
        # warm the kernels and DuckDB's first connection (not the part's memory)
        from pcapflow.pipelines import burst_bins, match  # noqa: F401

        match._database()
        result: dict[str, Any] = {}
        before = rss_mb()
        c0 = time.process_time()
        with Sampler() as s:
            if part == "match":
                res = match_carry.match(stage, flows, registry, capture_id)
                result["out"] = res.whole.tables
            elif part == "bursts":
                result["out"] = why._bursts_before_venues(stage, capture_id, flows, rtt_files,
                                                          key)
            elif part == "both":
                got: dict[str, Any] = {}
                t = threading.Thread(target=lambda: got.setdefault(
                    "b", why._bursts_before_venues(stage, capture_id, flows, rtt_files, key)))
                t.start()
                res = match_carry.match(stage, flows, registry, capture_id)
                t.join()
                result["out"] = [res.whole.tables, got["b"]]
            elif part == "end":
                m = venues.IngestMatcher(venues.registry())
                out = m(stage, flows, capture_id)
                result["out"] = [out.tables, out.final]
            else:
                raise SystemExit(f"unknown part {part}")
        cpu = time.process_time() - c0
        return {"part": part, "src": str(src), "before_mb": round(before, 1),
                "peak_mb": round(s.peak, 1), "added_mb": round(s.peak - before, 1),
                "cpu_s": round(cpu, 3), "digest": digest(result["out"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("capture", nargs="?")
    ap.add_argument("--keylog")
    ap.add_argument("--save", type=Path)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--part", default="both", choices=("match", "bursts", "both", "end"))
    a = ap.parse_args(argv)
    if a.save is not None:
        if not a.capture:
            ap.error("--save needs a capture")
        save(a.save, a.capture, a.keylog)
    elif a.run is not None:
        print(json.dumps(run(a.run, a.part)))
    else:
        ap.error("--save or --run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
