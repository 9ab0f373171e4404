"""What the watch process keeps per file, in minutes instead of a 40-minute run:
``pcapflow watch``'s per-file path (``Watcher.step`` with a worker process, then the
metrics refresh) driven in this process over small rotation files, with the probes
``watch_memory.py`` cannot afford per file.

    python benchmarks/watch_heap_probe.py --files 150 --pps 2000 --worker 100 \\
        --trace-from 50 --snapshot-at 60 [--frames 25] [--cli-refresh] [--no-metrics]

Per file (one JSON line, after ``gc.collect()`` and the watch's own trim): Python's
allocated blocks (``sys.getallocatedblocks``), glibc's bytes in use (``mallinfo2``:
``uordblks`` + ``hblkhd``), the gc-tracked objects, and from ``--trace-from`` the bytes
``tracemalloc`` traces. At the end:

- ``reachable``: every object reachable from the gc's objects (a walk through
  ``gc.get_referents``, untracked containers and strings included) that was allocated
  since tracing began under pcapflow's code, grouped by where it was allocated, with a
  chain of referrers: what the watch process *holds* that is new.
- ``traced_grown``: the traced blocks that grew most since ``--snapshot-at``
  (``compare_to``, by traceback): what is *allocated and alive*, reachable or not (a
  block no object reaches is held by C code: an interpreter cache, a C extension's).

A block in ``traced_grown`` that no ``reachable`` group explains is not the watch's
state; the probe is blind to what C code allocates with glibc outside Python's
allocator (DuckDB's, Arrow's: see ``malloc_used``). ``--cli-refresh``: the metrics
refreshed as ``pcapflow watch`` does (``refresh(added=...)``), not whole.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

OURS = ("/pcapflow/", "/pipelines/", "/parsers/")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_used() -> int:
    """glibc's bytes in use (every arena, mmapped chunks included)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


def _where(tb: tracemalloc.Traceback, n: int = 7) -> list[str]:
    return [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in list(tb)[-n:]]


def reachable_new(top: int = 25) -> list[dict[str, Any]]:
    """Objects reachable from the gc's objects, allocated since tracing began under
    pcapflow's code, grouped by allocation traceback (largest groups first)."""
    parent: dict[int, Any] = {}
    queue: collections.deque[Any] = collections.deque()
    for o in gc.get_objects():
        if id(o) not in parent:
            parent[id(o)] = None
            queue.append(o)
    found: list[Any] = []
    while queue:
        o = queue.popleft()
        found.append(o)
        for r in gc.get_referents(o):
            if id(r) not in parent:
                parent[id(r)] = o
                queue.append(r)
    groups: dict[tuple[str, ...], list[Any]] = collections.defaultdict(list)
    for o in found:
        tb = tracemalloc.get_object_traceback(o)
        if tb is not None and any(any(s in f.filename for s in OURS) for f in tb):
            groups[tuple(_where(tb))].append(o)
    out = []
    for key, objs in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:top]:
        chain, p = [], parent.get(id(objs[0]))
        while p is not None and len(chain) < 5:
            chain.append(f"{type(p).__name__}: {repr(p)[:70]}")
            p = parent.get(id(p))
        out.append({"n": len(objs), "where": list(key),
                    "types": collections.Counter(type(o).__name__ for o in objs).most_common(3),
                    "examples": [repr(o)[:80] for o in objs[:3]], "held_by": chain})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=150)
    ap.add_argument("--pps", type=int, default=2000, help="packets per one-second file")
    ap.add_argument("--worker", type=int, default=100)
    ap.add_argument("--trace-from", type=int, default=50)
    ap.add_argument("--snapshot-at", type=int, default=60)
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--cli-refresh", action="store_true")
    ap.add_argument("--no-metrics", action="store_true")
    ap.add_argument("--gen-here", action="store_true",
                    help="write the files in this process (watch_rotation.Generator)")
    a = ap.parse_args(argv)

    import pcapflow  # (before pyarrow, as the CLI)
    from pcapflow.watch import ALLOCATOR

    ALLOCATOR.for_a_long_run()
    saved, sys.argv = sys.argv, ["pcapflow", "watch"]
    import pcapflow.cli  # noqa: F401  (what the CLI's `watch` imports)

    sys.argv = saved
    from watch_rotation import START_NS, Generator

    from pcapflow.metrics import DatasetMetrics
    from pcapflow.watch import Watcher
    from pcapflow.watch_worker import WorkerIngest

    tmp = Path(tempfile.mkdtemp(prefix="pcf-heapprobe-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    metrics = DatasetMetrics(root)
    worker = WorkerIngest(root, None, None, None, files=a.worker)

    def on_file(path: str, result: object) -> None:
        if a.cli_refresh and not a.no_metrics:
            metrics.refresh(added=[getattr(result, "capture_id", "")],
                            removed=list(getattr(result, "replaced", [])))

    w = Watcher(d, root, worker, poll=0.0, settle=0.0, idle=0.0, on_file=on_file)
    end, snap0 = 0, None
    gen = Generator(here=a.gen_here)
    try:
        for k in range(a.files):
            if k == a.trace_from:
                tracemalloc.start(a.frames)
            end = gen.rotate_in(d, k, a.pps, a.pps, 1.0, START_NS, end, 4)
            w.step()
            if not a.cli_refresh and not a.no_metrics:
                metrics.refresh()
            gc.collect()
            ALLOCATOR.release()
            row: dict[str, object] = {"file": k, "blocks": sys.getallocatedblocks(),
                                      "malloc_used": malloc_used(),
                                      "gc_objects": len(gc.get_objects())}
            if tracemalloc.is_tracing():
                row["traced"] = tracemalloc.get_traced_memory()[0]
                if k == a.snapshot_at:
                    snap0 = tracemalloc.take_snapshot()
            print(json.dumps(row), flush=True)
        gc.collect()
        if tracemalloc.is_tracing():
            for g in reachable_new():
                print(json.dumps({"reachable": g}), flush=True)
        if snap0 is not None:
            for s in tracemalloc.take_snapshot().compare_to(snap0, "traceback")[:25]:
                print(json.dumps({"traced_grown": {
                    "kB": round(s.size_diff / 1e3, 2), "blocks": s.count_diff,
                    "where": _where(s.traceback, a.frames)}}), flush=True)
    finally:
        worker.close()
        gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
