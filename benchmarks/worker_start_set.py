"""What a fresh ``pcapflow watch`` worker holds per file already in the set: a set
built quickly (small one-second files), and at checkpoints a fresh process that
ingests the next files as a worker does, with its memory read after each.

    python benchmarks/worker_start_set.py DIR --files 1500 --at 100,500,1500 \\
        [--pps 2000] [--probe-files 10] [--trace]

``DIR`` holds the rotation's files (``rot/``) and the dataset (``ds/``); a run
continues a set already there. Up to each checkpoint the files are ingested in this
process (``watch.watch_ingest``, as a worker: not measured); at a checkpoint a fresh
process (``probe``) ingests the next ``--probe-files`` files as
``watch_worker._serve`` does (its allocator set for a long run, ``SET_LISTS`` off,
``file_note``, the trim after each file) and prints one JSON line per file: RSS,
its high-water mark, glibc's bytes in use and its arenas, DuckDB's jemalloc, Arrow's
pool peak, pymalloc's arenas and (``--trace``: ``tracemalloc`` from its 2nd file on)
Python's peak in each command and what it holds at the end by line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _write(d: Path, k: int, n: int, pps: int, end: int) -> int:
    from watch_rotation import START_NS, rotate_in_end

    f = d / f"rot-{k:06d}.pcap"
    ends = d / "ends.json"
    known = json.loads(ends.read_text()) if ends.exists() else {}
    if f.exists() and str(k) in known:
        return int(known[str(k)])
    e = rotate_in_end(d, k, n, pps, 1.0, START_NS, end, 1 << 30)
    known[str(k)] = e
    ends.write_text(json.dumps(known))
    return e


def probe(a: argparse.Namespace) -> int:
    """One fresh worker-like process: ingest the given files, print memory after each."""
    import tracemalloc

    import pcapflow  # noqa: F401  # isort: skip  (before pyarrow: Arrow's allocator)
    from pcapflow import watch  # isort: skip
    from pcapflow.pipelines.ingest import driver
    from pcapflow.pipelines.match import close_database

    watch.ALLOCATOR.for_a_long_run()
    driver.SET_LISTS = False
    import pyarrow as pa
    from watch_memory import _duckdb_je_mb, _malloc_mb, _pymalloc_mb

    data = Path(a.data)
    ingest = watch.watch_ingest(data, None, None, None)
    for i, path in enumerate(a.paths):
        if a.trace and i == 1:
            tracemalloc.start(12)
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        t0 = time.process_time()
        started = time.time_ns()
        result = ingest(path)
        watch.file_note(data, result, path, started)
        del result
        if (i + 1) % watch.RECYCLE_FILES == 0:
            close_database()
        watch.ALLOCATOR.release()
        row: dict[str, object] = {
            "i": i, "file": path.rsplit("-", 1)[-1].split(".")[0],
            "cpu_s": round(time.process_time() - t0, 3),
            "rss_mb": round(_status_kb("VmRSS") / 1024, 2),
            "hwm_mb": round(_status_kb("VmHWM") / 1024, 2),
            "anon_mb": round(_status_kb("RssAnon") / 1024, 2),
            "file_mb": round(_status_kb("RssFile") / 1024, 2),
            "arrow_mb": round(pa.total_allocated_bytes() / 1e6, 2),
            "arrow_peak_mb": round(pa.default_memory_pool().max_memory() / 1e6, 2)}
        row.update(_malloc_mb())
        row.update(_duckdb_je_mb())
        row.update(_pymalloc_mb())
        if tracemalloc.is_tracing():
            cur, peak = tracemalloc.get_traced_memory()
            row["traced_mb"] = round(cur / 1e6, 3)
            row["traced_peak_mb"] = round(peak / 1e6, 3)
        print(json.dumps(row), flush=True)
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        top = snap.statistics("lineno")[:25]
        print(json.dumps({"held_by_line": [
            [f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno}",
             round(s.size / 1e3, 1), s.count] for s in top]}), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--files", type=int, default=1500)
    ap.add_argument("--at", default="100,500,1500")
    ap.add_argument("--pps", type=int, default=2000)
    ap.add_argument("--probe-files", type=int, default=10)
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--python", default=sys.executable,
                    help="the interpreter of the probes (another checkout's venv)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the set as it was at each checkpoint (DIR/ds_atN, hard links) "
                    "to probe it again with another checkout")
    ap.add_argument("--probe-only", action="store_true",
                    help="probe the set as it is (files already written), build nothing")
    a = ap.parse_args(argv)
    base = Path(a.dir)
    rot, ds = base / "rot", base / "ds"
    rot.mkdir(parents=True, exist_ok=True)
    done_f = base / "done.txt"
    done = int(done_f.read_text()) if done_f.exists() else 0
    at = sorted(int(x) for x in a.at.split(","))
    import pcapflow  # noqa: F401
    from pcapflow import watch  # isort: skip

    watch.ALLOCATOR.for_a_long_run()
    from pcapflow.pipelines.ingest import driver

    driver.SET_LISTS = False
    ingest = watch.watch_ingest(ds, None, None, None)
    end = 0
    ends = rot / "ends.json"
    if ends.exists() and done:
        end = int(json.loads(ends.read_text())[str(done - 1)])
    for stop in at:
        if not a.probe_only:
            while done < min(stop, a.files):
                end = _write(rot, done, a.pps, a.pps, end)
                ingest(str(rot / f"rot-{done:06d}.pcap"))
                done += 1
                done_f.write_text(str(done))
                if done % 100 == 0:
                    print(json.dumps({"built": done, "t": time.strftime("%H:%M:%S")}),
                          file=sys.stderr, flush=True)
        if a.keep and not (base / f"ds_at{done}").exists():  # (hard links: the same inodes)
            subprocess.run(["cp", "-al", str(ds), str(base / f"ds_at{done}")], check=True)
        paths = []
        e = end
        for k in range(done, done + a.probe_files):
            e = _write(rot, k, a.pps, a.pps, e)
            paths.append(str(rot / f"rot-{k:06d}.pcap"))
        cmd = [a.python, str(Path(__file__).resolve()), "probe", "--data", str(ds), *paths]
        if a.trace:
            cmd.insert(3, "--trace")
        print(json.dumps({"probe_at": done, "python": a.python, "trace": a.trace}), flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        sys.stdout.write(out.stdout)
        if out.returncode:
            sys.stderr.write(out.stderr[-3000:])
            return 1
        sys.stdout.flush()
        if not a.probe_only:  # the probe's files are in the set now
            done += a.probe_files
            end = e
            done_f.write_text(str(done))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        pa_ = argparse.ArgumentParser()
        pa_.add_argument("probe")
        pa_.add_argument("--data", required=True)
        pa_.add_argument("--trace", action="store_true")
        pa_.add_argument("paths", nargs="+")
        sys.exit(probe(pa_.parse_args()))
    sys.exit(main())
