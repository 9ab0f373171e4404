"""Where a long ``pcapflow watch`` process's memory goes: ``watch_rotation.py``'s loop
with probes after each file, and switches to bisect.

    python benchmarks/watch_memory.py --files 16 --rotate-s 10 --pps 50000 \\
        [--no-metrics] [--no-app] [--no-resume] [--trace-from 3 [--snapshot-at 5]]
        [--trim] [--maps-from 3] [--recycle-db N] [--worker N] [--limit NAME=VALUE]

Per file (one JSON line): CPU seconds of the step, RSS before and after a
``gc.collect()`` (and what it found), RSS and its anonymous part
(``/proc/self/status``), the threads, the anonymous RSS by kind (glibc's brk heap, its
thread arenas: the mappings at 64 MiB boundaries, and the rest: pymalloc's and
jemalloc's mappings, mmapped blocks, stacks), glibc's bytes in use and free
(``mallinfo2``), DuckDB's own jemalloc (``duckdb_je_mallctl``: allocated, resident),
Python's pymalloc arenas, Arrow's pool (bytes allocated now, peak), the matcher's DuckDB
database's ``duckdb_memory()``, the rows of the matcher's window the derived tables were
given (``match_carry.Window``), the kB of each part of the set's resume state, and
with ``--trace-from K`` the Python heap that ``tracemalloc`` traces from file K on
(NumPy's arrays included; ``--snapshot-at J``: at the end, the allocations that grew
most since file J). ``--trim`` calls
``malloc_trim(0)`` and Arrow's ``release_unused`` after each file (RSS before and
after, and its time). ``--maps-from K``: at the end, the anonymous mappings that grew
most since file K. ``--no-metrics``: no metrics refresh; ``--no-app``: TCP layer only
(no matcher, no derived tables); ``--no-resume``: each file a capture of its own.
``--worker N``: each file ingested in a worker process replaced every N files, as
``pcapflow watch`` does (``pcapflow.watch_worker``): the CPU is the watch's and the
workers' (their own CPU clock, start-up included), ``rss_mb`` the watch's RSS plus its
worker's (``rss_watch_mb``, ``rss_worker_mb``; ``pss_mb``: their proportional set
sizes summed, the libraries they share counted once), and the breakdowns are the
watch process's. glibc's arenas are set as ``pcapflow watch`` sets them
(``pcapflow.watch.Allocator``), before anything starts a thread; ``MALLOC_ARENA_MAX``
set by the caller wins.
"""

from __future__ import annotations

import argparse
import cProfile
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


def _status(field: str) -> int:
    """A number of ``/proc/self/status`` (``RssAnon`` in kB, ``Threads``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _anon_mb() -> float:
    return _status("RssAnon") / 1024


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _pss_mb(pid: object) -> float:
    """A process's proportional set size (``/proc/PID/smaps_rollup``), MB."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _malloc_mb() -> dict[str, float]:
    """glibc's heap (``mallinfo2``, every arena): bytes in use (``uordblks`` + mmapped
    chunks ``hblkhd``) and free but kept (``fordblks``), in MB. In use growing is memory
    still referenced (a leak, or state); free growing is fragmentation (given back by
    ``malloc_trim``)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    m = libc.mallinfo2()
    return {"malloc_used_mb": round((m.uordblks + m.hblkhd) / 1e6, 1),
            "malloc_free_mb": round(m.fordblks / 1e6, 1),
            "malloc_arenas_mb": round(m.arena / 1e6, 1)}


def _duckdb_je_mb() -> dict[str, float]:
    """DuckDB's own jemalloc (its wheel links one, symbols ``duckdb_je_*``): bytes its
    callers hold (``allocated``) and what it keeps resident, in MB; {} when absent."""
    import _duckdb  # the engine module, loaded by ``import duckdb``

    try:
        lib = ctypes.CDLL(_duckdb.__file__)
        ctl = lib.duckdb_je_mallctl
    except (OSError, AttributeError):
        return {}
    ctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                    ctypes.c_void_p, ctypes.c_size_t]
    epoch = ctypes.c_uint64(1)
    sz = ctypes.c_size_t(8)
    ctl(b"epoch", ctypes.byref(epoch), ctypes.byref(sz), ctypes.byref(epoch), 8)
    out = {}
    for name in ("allocated", "active", "resident", "retained"):
        v, sz = ctypes.c_size_t(0), ctypes.c_size_t(8)
        if ctl(f"stats.{name}".encode(), ctypes.byref(v), ctypes.byref(sz), None, 0) == 0:
            out[f"je_{name}_mb"] = round(v.value / 1e6, 1)
    return out


def _pymalloc_mb() -> dict[str, float]:
    """Python's small-object allocator (arenas of its own, mmapped: not in
    ``mallinfo2``): arenas held now, MB, from ``sys._debugmallocstats``."""
    import os
    import re
    import tempfile

    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    out = {}
    m = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    if m:
        out["pymalloc_arenas_mb"] = round(int(m.group(1).replace(",", "")) * 1048576 / 1e6, 1)
    m = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    if m:
        out["pymalloc_used_mb"] = round(int(m.group(1).replace(",", "")) / 1e6, 1)
    return out


def _maps() -> dict[str, tuple[str, int]]:
    """Anonymous mappings of this process: start address -> (name, RSS in kB)."""
    out: dict[str, tuple[str, int]] = {}
    cur = None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                name = head[5] if len(head) > 5 else "[anon]"
                cur = head[0] if (name.startswith("[") and name != "[vvar]"
                                  and name != "[vdso]") else None
                if cur is not None:
                    out[cur] = (name, 0)
            elif cur is not None and head[0] == "Rss:":
                out[cur] = (out[cur][0], int(head[1]))
    return out


def _anon_kinds_mb(maps: dict[str, tuple[str, int]]) -> dict[str, float]:
    """Anonymous RSS by kind: glibc's main heap (``[heap]``, brk), its thread arenas
    (mappings at a 64 MiB boundary: ``HEAP_MAX_SIZE``), and the rest (mmapped chunks,
    pymalloc's and jemalloc's mappings, thread stacks), in MB."""
    kinds = {"rss_brk_heap_mb": 0, "rss_thread_arenas_mb": 0, "rss_other_anon_mb": 0}
    for addr, (name, kb) in maps.items():
        if name == "[heap]":
            kinds["rss_brk_heap_mb"] += kb
        elif int(addr.split("-")[0], 16) % (64 << 20) == 0:
            kinds["rss_thread_arenas_mb"] += kb
        elif name == "[anon]":
            kinds["rss_other_anon_mb"] += kb
    return {k: round(v / 1024, 1) for k, v in kinds.items()}


def _maps_grown(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]],
                top: int = 8) -> list[tuple[str, str, float, float]]:
    """The anonymous mappings whose RSS grew most (address, name, MB then, MB now)."""
    rows = [(a, after[a][0], before.get(a, ("", 0))[1] / 1024, after[a][1] / 1024)
            for a in after]
    rows.sort(key=lambda r: r[3] - r[2], reverse=True)
    return [(a, n, round(b, 1), round(c, 1)) for a, n, b, c in rows[:top]]


def _state_kb(root: Path) -> dict[str, int]:
    """kB on disk of each part of the sets' resume state (``DATA/_state``): what a
    command reads of the set besides its own file."""
    out: dict[str, int] = {}
    for part in root.glob("_state/capture_id=*/*"):
        files = [part] if part.is_file() else [f for f in part.rglob("*") if f.is_file()]
        out[part.name] = out.get(part.name, 0) + sum(f.stat().st_size for f in files) // 1024
    return out


def _profile_top(prof: cProfile.Profile, top: int = 40) -> list[list[object]]:
    """The functions of a profile with the most cumulative CPU: [where, calls, own s,
    cumulative s]."""
    import pstats

    st = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = [[f"{f[0].rsplit('/', 2)[-1]}:{f[1]}:{f[2]}", v[1], round(v[2], 4), round(v[3], 4)]
            for f, v in st.items()]
    rows.sort(key=lambda r: r[3], reverse=True)  # type: ignore[arg-type, return-value]
    return rows[:top]


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
    ap.add_argument("--snapshot-at", type=int, default=-1,
                    help="with --trace-from: at the end, the Python allocations that grew "
                    "most since file K (tracemalloc snapshots compared)")
    ap.add_argument("--recycle-db", type=int, default=None,
                    help="close the matcher's DuckDB database every N files (the watch's "
                    "RECYCLE_FILES by default; 0: never, as before session 12)")
    ap.add_argument("--profile-at", type=str, default="",
                    help="files (K,K2,...) whose step and refresh run under cProfile: the "
                    "functions' own and cumulative CPU, one JSON line each (to compare a "
                    "command early in the set against one late)")
    ap.add_argument("--maps-from", type=int, default=-1,
                    help="at the end, the anonymous mappings that grew most since file K")
    ap.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                    help="a resource cap for each file's ingest, as `pcapflow watch --limit` "
                    "(with --worker), e.g. resume_order_ids=2000")
    ap.add_argument("--gen-here", action="store_true",
                    help="write the rotation's files in this process, as before session 19 "
                    "(the generator's own growth then counted as the watch's); by default "
                    "a child process writes them (watch_rotation.Generator)")
    ap.add_argument("--worker", type=int, default=0,
                    help="ingest in a worker process replaced every N files, as `pcapflow "
                    "watch` (pcapflow.watch_worker); 0: in this process")
    a = ap.parse_args(argv)
    profile_at = {int(x) for x in a.profile_at.split(",") if x}

    # pcapflow before pyarrow, as the CLI: it chooses Arrow's allocator (pcapflow/__init__.py);
    # and glibc's arenas set for a long run before any thread starts, as `pcapflow watch`
    import pcapflow  # isort: skip
    from pcapflow.watch import ALLOCATOR  # isort: skip

    ALLOCATOR.for_a_long_run()
    if a.recycle_db is not None:
        import pcapflow.watch as watch_module

        watch_module.RECYCLE_FILES = a.recycle_db or 1 << 62
    import pyarrow as pa
    from watch_rotation import START_NS, Generator

    from pcapflow.metrics import DatasetMetrics
    from pcapflow.watch import Watcher

    tmp = Path(tempfile.mkdtemp(prefix="pcf-watchmem-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    metrics = DatasetMetrics(root)
    worker = None
    if not a.worker:  # (the probes of the matcher's database and window: this process's)
        from pcapflow.pipelines import match, match_carry
    if a.limit and not a.worker:
        ap.error("--limit is given to the worker: use it with --worker")
    if a.worker:
        saved, sys.argv = sys.argv, ["pcapflow", "watch"]
        import pcapflow.cli  # (the watch process imports what the CLI's `watch` does)

        sys.argv = saved
        from pcapflow.watch_worker import WorkerIngest

        if a.no_app or a.no_resume:
            ap.error("--worker ingests as `pcapflow watch` does: not with --no-app/--no-resume")
        limits = {k: int(v) for k, _, v in (x.partition("=") for x in a.limit)} or None
        worker = WorkerIngest(root, None, None, limits, files=a.worker)
    w = Watcher(d, root, worker or (lambda p: pcapflow.ingest([[p]], data=root,
                                                              app=not a.no_app,
                                                              resume=not a.no_resume)[0]),
                poll=0.0, settle=0.0, idle=0.0)
    n = int(a.pps * a.rotate_s)
    start, end = START_NS, 0
    gen = Generator(here=a.gen_here)
    for k in range(a.files):
        if k == a.trace_from:
            tracemalloc.start(10)
        end = gen.rotate_in(d, k, n, a.pps, a.rotate_s, start, end, a.ring)
        prof = cProfile.Profile(time.process_time) if k in profile_at else None
        c0 = time.process_time() + (worker.cpu_s if worker is not None else 0.0)
        if prof is not None:
            prof.enable()
        w.step()
        if not a.no_metrics:
            metrics.refresh()
        if prof is not None:
            prof.disable()
        cpu = time.process_time() + (worker.cpu_s if worker is not None else 0.0) - c0
        if prof is not None:
            prof.dump_stats(tmp / f"profile_{k}.pstats")
            print(json.dumps({"profile_file": k, "pstats": str(tmp / f"profile_{k}.pstats"),
                              "top": _profile_top(prof)}), flush=True)
        before_gc = rss_mb()
        unreachable = gc.collect()
        row: dict[str, object] = {"file": k, "cpu_s": round(cpu, 3),
                                  "rss_before_gc_mb": round(before_gc, 1),
                                  "gc_unreachable": unreachable,
                                  "rss_mb": round(rss_mb(), 1),
                                  "anon_mb": round(_anon_mb(), 1),
                                  "arrow_mb": round(pa.total_allocated_bytes() / 1e6, 1),
                                  "arrow_peak_mb": round(pa.default_memory_pool().max_memory()
                                                         / 1e6, 1)}
        db = match._DB[1] if worker is None and match._DB is not None else None
        if db is not None:
            row["duckdb_mb"] = round(sum(r[0] for r in db.execute(
                "SELECT memory_usage_bytes FROM duckdb_memory()").fetchall()) / 1e6, 1)
        if tracemalloc.is_tracing():
            row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 1e6, 2)
            if k == a.snapshot_at:
                snap0 = tracemalloc.take_snapshot()
        if worker is not None:
            wk = worker.rss_kb() / 1024
            row["rss_watch_mb"] = row["rss_mb"]
            row["rss_worker_mb"] = round(wk, 1)
            row["rss_mb"] = round(rss_mb() + wk, 1)
            row["pss_mb"] = round(_pss_mb("self") + (_pss_mb(worker.pid) if worker.pid else 0), 1)
            row["workers_started"] = worker.started
        if worker is None:
            row["window_rows"] = match_carry.STATS.get("window_rows")  # (None: before windows)
            row["ids_rows"] = match_carry.STATS.get("ids_rows")  # (the bounded ids: IdBound)
        row["state_kb"] = _state_kb(root)
        row["threads"] = _status("Threads")
        row.update(_anon_kinds_mb(_maps()))
        row.update(_malloc_mb())
        row.update(_duckdb_je_mb())
        row.update(_pymalloc_mb())
        if k == a.maps_from:
            maps0 = _maps()
        if a.trim:
            t0 = time.perf_counter()
            pa.default_memory_pool().release_unused()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            row["trim_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
            row["rss_trimmed_mb"] = round(rss_mb(), 1)
        print(json.dumps(row), flush=True)
    if tracemalloc.is_tracing() and 0 <= a.snapshot_at < a.files - 1:
        diff = tracemalloc.take_snapshot().compare_to(snap0, "traceback")
        print(json.dumps({"traced_grown_since": a.snapshot_at, "top": [
            {"kB": round(d.size_diff / 1e3, 1), "count": d.count_diff,
             "where": [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in d.traceback][-6:]}
            for d in diff[:12]]}))
    if 0 <= a.maps_from < a.files:
        print(json.dumps({"maps_grown_since": a.maps_from, "maps": _maps_grown(maps0, _maps())}))
    if worker is not None:
        worker.close()
    gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
