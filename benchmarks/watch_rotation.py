"""``pcapflow watch`` following a simulated rotation at 50,000 packets/s: does it keep
up on one core, and does its memory stay flat?

    python benchmarks/watch_rotation.py --files 120 --rotate-s 1 --pps 50000 \\
        --json benchmarks/results/watch_rotation.json

Each rotation file is a synthetic trading capture (``make_capture.py``) of
``pps * rotate_s`` packets whose times follow the previous file's, written into the
watched directory as a ring buffer would (the oldest file deleted once there are
``--ring`` of them); the watcher (``pcapflow.watch.Watcher``, in this process, with
the metrics refreshed after each file as ``--metrics-port`` does) ingests it. Writing
the files is not timed. Per file: ingest seconds against the capture seconds it
holds (``keep_up`` = capture s / ingest s: above 1 keeps up; ``keep_up_cpu`` the same
with the process's CPU seconds, all threads: what one free core would give on a shared
machine), and the process's RSS.
An hour of rotation is ``--files 3600 --rotate-s 1`` (or ``--files 360 --rotate-s 10``).
``--cache DIR`` shares the rotation's files with another run (two checkouts compared on
the same files, each written once: start both with the same ``DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402

START_NS = 1_717_421_400_000_000_000
"""The first rotation file's first packet (2024-06-03 13:30 UTC)."""


def rotate_in(d: Path, k: int, n: int, pps: float, rotate_s: float, start: int, end: int,
              ring: int, answered: bool = False) -> Any:
    """Write the rotation's ``k``-th file (``n`` packets of ``make_capture.py``) into ``d``
    as a writer would (a temporary name, then renamed), the oldest deleted past ``ring``
    files; returns its plan. A rotation's file begins after the one before ended
    (``end``: a synthetic capture of n packets runs a little longer than n / pps)."""
    from make_capture import Config, plan, write

    p = plan(Config(packets=n, seed=k, rate_pps=float(pps), answered=answered,
                    start_ns=max(start + int(k * rotate_s * 1e9), end + 1000)))
    tmpf = d / f".rot-{k:06d}.tmp"
    write(p, str(tmpf), "pcap", 262_144)
    os.replace(tmpf, d / f"rot-{k:06d}.pcap")
    _ring(d, ring)
    return p


def rotate_in_end(d: Path, k: int, n: int, pps: float, rotate_s: float, start: int,
                  end: int, ring: int) -> int:
    """``rotate_in``, returning only its last packet's time (what a caller in another
    process needs: ``Generator``)."""
    return int(rotate_in(d, k, n, pps, rotate_s, start, end, ring).cols["t"].max())


class Generator:
    """``rotate_in_end`` in a child process of its own (``spawn``), so that a benchmark
    measuring its own process's memory does not measure the generator's:
    ``make_capture`` alone grows a process's glibc bytes in use ~1.7 kB and Python's
    allocated blocks ~5 a file (2,000-packet files, files 50-250; session 19).
    ``here``: in this process, as before."""

    def __init__(self, here: bool = False) -> None:
        self.pool = None
        if not here:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self.pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def rotate_in(self, d: Path, k: int, n: int, pps: float, rotate_s: float, start: int,
                  end: int, ring: int) -> int:
        """The rotation's ``k``-th file written into ``d``; its last packet's time."""
        if self.pool is None:
            return rotate_in_end(d, k, n, pps, rotate_s, start, end, ring)
        return int(self.pool.submit(rotate_in_end, d, k, n, pps, rotate_s, start, end,
                                    ring).result())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def write_rotation(d: Path, files: int, pps: float, rotate_s: float,
                   answered: bool = False) -> list[Path]:
    """A whole rotation of ``files`` files written into ``d`` at once (a benchmark that
    times the commands, not the writing), in the order a writer closes them
    (``answered``: ``make_capture.py --answered`` traffic)."""
    n, end, out = int(pps * rotate_s), 0, []
    for k in range(files):
        p = rotate_in(d, k, n, pps, rotate_s, START_NS, end, ring=files, answered=answered)
        end = int(p.cols["t"].max())
        out.append(d / f"rot-{k:06d}.pcap")
    return out


def _ring(d: Path, ring: int) -> None:
    old = sorted(d.glob("rot-*.pcap"))
    for f in old[: max(0, len(old) - ring)]:
        f.unlink()


class Cached:
    """What the loop reads of a plan (its packets' times), kept beside a cached file."""

    def __init__(self, t: list[int]) -> None:
        import numpy as np

        self.cols = {"t": np.array(t, dtype=np.int64)}


def rotate_in_cached(cache: Path, d: Path, k: int, n: int, pps: float, rotate_s: float,
                     start: int, end: int, ring: int) -> Any:
    """``rotate_in`` through a cache directory shared by runs of the same rotation (two
    runs compared file by file, one of them writing each file once; the other waits for
    it): the file is hard-linked into ``d``. Returns the first and last packet times
    (as a plan's ``cols["t"]``), and the packet count."""
    cache.mkdir(parents=True, exist_ok=True)
    f, meta = cache / f"rot-{k:06d}.pcap", cache / f"rot-{k:06d}.json"
    try:
        fd = os.open(cache / f"rot-{k:06d}.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        for _ in range(36_000):  # the other run is writing it (an hour at most)
            if meta.exists() and meta.stat().st_size > 0:
                break
            time.sleep(0.1)
    else:
        os.close(fd)
        t = rotate_in(cache, k, n, pps, rotate_s, start, end, 1 << 30).cols["t"]
        part = meta.with_suffix(".part")
        part.write_text(json.dumps({"t": [int(t.min()), int(t.max())], "n": int(t.size)}))
        os.replace(part, meta)  # (whole, or not there: the other run reads it)
    info = json.loads(meta.read_text())
    tmpf = d / f".rot-{k:06d}.tmp"
    os.link(f, tmpf)
    os.replace(tmpf, d / f"rot-{k:06d}.pcap")
    _ring(d, ring)
    c = Cached(info["t"])
    c.n = info["n"]  # type: ignore[attr-defined]
    return c


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=120)
    ap.add_argument("--rotate-s", type=float, default=1.0)
    ap.add_argument("--pps", type=int, default=50_000)
    ap.add_argument("--ring", type=int, default=4)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=None,
                    help="a directory of the rotation's files shared with another run "
                    "(base and branch compared on the same files, written once)")
    ap.add_argument("--jsonl", default=None,
                    help="also append each file's row here as it is measured (a long run "
                    "stopped early keeps its curve)")
    a = ap.parse_args(argv)

    import pcapflow
    from pcapflow.metrics import DatasetMetrics
    from pcapflow.watch import Watcher

    tmp = Path(tempfile.mkdtemp(prefix="pcf-watch-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    n = int(a.pps * a.rotate_s)
    start = START_NS
    metrics = DatasetMetrics(root)

    spent: dict[str, float] = {}
    try:  # (a checkout without compaction: none measured)
        from pcapflow.pipelines import compact
    except ImportError:
        compact = None  # type: ignore[assignment]
    last: list[Any] = []

    def one(path: str) -> object:
        t0, c0 = time.perf_counter(), time.process_time()
        r = pcapflow.ingest([[path]], data=root)[0]
        spent["ingest"], spent["ingest_cpu"] = time.perf_counter() - t0, time.process_time() - c0
        last[:] = [r]
        return r

    w = Watcher(d, root, one, poll=0.0, settle=0.0, idle=0.0)
    rows = []
    log = open(a.jsonl, "a") if a.jsonl else None  # noqa: SIM115 (open for the whole run)
    t_start = time.monotonic()
    end = 0
    for k in range(a.files):
        if a.cache:
            p = rotate_in_cached(Path(a.cache), d, k, n, a.pps, a.rotate_s, start, end, a.ring)
        else:
            p = rotate_in(d, k, n, a.pps, a.rotate_s, start, end, a.ring)
        end = int(p.cols["t"].max())
        packets = int(getattr(p, "n", p.cols["t"].size))
        t_lo, t_hi = int(p.cols["t"].min()), end
        del p  # (the plan's columns are the benchmark's, not the watch's memory)
        t0, c0 = time.perf_counter(), time.process_time()
        k0 = dict(compact.STATS) if compact is not None else {}
        done = w.step()
        t1 = time.perf_counter()
        for r in last:  # (as ``pcapflow watch --metrics-port`` does)
            if hasattr(metrics, "compacted"):
                metrics.compacted(r.capture_id, getattr(r, "compacted", []))
        metrics.refresh()
        merged = {x: compact.STATS.get(x, 0) - k0.get(x, 0) for x in ("cpu_ns", "parts_in",
                                                                    "bytes_in")} \
            if compact is not None else {}
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        cap_s = (t_hi - t_lo) / 1e9
        rows.append({"file": k, "ingested": done, "packets": packets,
                     "capture_s": round(cap_s, 3), "ingest_s": round(dt, 3),
                     "keep_up": round(cap_s / dt, 2), "cpu_s": round(cpu, 3),
                     "keep_up_cpu": round(cap_s / cpu, 2), "rss_mb": round(rss_mb(), 1),
                     # of ingest_s: the ingest call, the watch's own bookkeeping after
                     # it (status), the metrics refresh
                     "ingest_call_s": round(spent.get("ingest", 0.0), 3),
                     "ingest_call_cpu_s": round(spent.get("ingest_cpu", 0.0), 3),
                     "watch_note_s": round(t1 - t0 - spent.get("ingest", 0.0), 3),
                     "metrics_s": round(t0 + dt - t1, 3),
                     # of ingest_call_cpu_s: the set's compaction after the file's commit
                     "compact_cpu_s": round(merged.get("cpu_ns", 0) / 1e9, 3),
                     "compact_parts_in": merged.get("parts_in", 0),
                     "compact_mb_in": round(merged.get("bytes_in", 0) / 1e6, 1),
                     "wall_s": round(time.monotonic() - t_start, 1)})
        if log is not None:
            log.write(json.dumps(rows[-1]) + "\n")
            log.flush()
        if k % 10 == 0 or k == a.files - 1:
            print(json.dumps(rows[-1]), flush=True)
    ingested = sum(r["ingested"] for r in rows)
    assert ingested == a.files, ingested
    half = len(rows) // 2
    res = {
        "files": a.files, "rotate_s": a.rotate_s, "pps": a.pps,
        "cpus": len(os.sched_getaffinity(0)), "load_avg_at_end": os.getloadavg(),
        "median_keep_up": sorted(r["keep_up"] for r in rows)[len(rows) // 2],
        "median_keep_up_cpu": sorted(r["keep_up_cpu"] for r in rows)[len(rows) // 2],
        "packets_per_cpu_s": round(sum(r["packets"] for r in rows)
                                   / sum(r["cpu_s"] for r in rows)),
        "packets_per_s_ingested": round(sum(r["packets"] for r in rows)
                                        / sum(r["ingest_s"] for r in rows)),
        "rss_mb_first_half_max": max(r["rss_mb"] for r in rows[:half]),
        "rss_mb_second_half_max": max(r["rss_mb"] for r in rows[half:]),
        "rss_mb_end": rows[-1]["rss_mb"],
        "per_file": rows,
    }
    print(json.dumps({k: v for k, v in res.items() if k != "per_file"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
