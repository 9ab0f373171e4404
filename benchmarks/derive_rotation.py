"""Per-command cost of a rotation ingested one file per command, and of its derive step
(``causes``, ``feed_gaps``, ``alerts``: ``pcapflow.why``): does the k-th file cost
O(that file) or O(the set so far)?

    python benchmarks/derive_rotation.py --files 40 --json benchmarks/results/derive_rotation.json
    python benchmarks/derive_rotation.py --files 40 --src /tmp/base   # another checkout

Each file is a one-second synthetic trading capture (``make_capture.py``) of ``--pps``
packets whose times follow the previous file's (as ``watch_rotation.py`` writes
them); every file is ingested by its own ``pcapflow.ingest`` call into one dataset,
in this process, so each continues the set (``pipelines.ingest.resume``). Per call:
its CPU seconds, those of the derive step inside it (``why.derive_staged``), RSS.
The slopes are least-squares fits of those against the files already in the set.
``--src DIR`` runs the pcapflow of another source tree (``git archive <commit> | tar
-x -C DIR``) through this interpreter's editable install, to compare before/after
in one environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402


def _use_source(src: Path) -> None:
    """Point the editable install's finder at another source tree (before any import)."""
    import importlib

    for name in list(sys.modules):
        if name.startswith("__editable___pcapflow"):
            finder = sys.modules[name]
            break
    else:
        finder = None
        for mod in os.listdir(next(p for p in sys.path if p.endswith("site-packages"))):
            if mod.startswith("__editable___pcapflow") and mod.endswith("_finder.py"):
                finder = importlib.import_module(mod[:-3])
    assert finder is not None, "no editable pcapflow install"
    finder.MAPPING.update({"pcapflow": str(src / "pcapflow"),
                           "pcapflow.parsers": str(src / "parsers"),
                           "pcapflow.pipelines": str(src / "pipelines")})


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--pps", type=int, default=50_000)
    ap.add_argument("--rotate-s", type=float, default=1.0)
    ap.add_argument("--dir", default=None, help="where the files are (made if missing)")
    ap.add_argument("--src", default=None, help="another pcapflow source tree to run")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.src:
        _use_source(Path(a.src).resolve())

    from make_capture import Config, plan, write

    import pcapflow
    from pcapflow import why

    tmp = Path(tempfile.mkdtemp(prefix="pcf-derive-"))
    d = Path(a.dir) if a.dir else tmp / "rot"
    d.mkdir(parents=True, exist_ok=True)
    n = int(a.pps * a.rotate_s)
    start, end = 1_717_421_400_000_000_000, 0
    paths = []
    for k in range(a.files):
        path = d / f"rot-{k:06d}.pcap"
        if not path.exists():
            p = plan(Config(packets=n, seed=k, rate_pps=float(a.pps),
                            start_ns=max(start + int(k * a.rotate_s * 1e9), end + 1000)))
            end = int(p.cols["t"].max())
            write(p, str(path), "pcap", 262_144)
        paths.append(path)

    spent = {"derive_cpu": 0.0}
    inner = why.derive_staged

    def timed(*args: object, **kw: object) -> object:
        c0 = time.process_time()
        try:
            return inner(*args, **kw)  # type: ignore[arg-type]
        finally:
            spent["derive_cpu"] += time.process_time() - c0

    why.derive_staged = timed  # type: ignore[assignment]
    root = tmp / "ds"
    rows = []
    for k, path in enumerate(paths):
        spent["derive_cpu"] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        r = pcapflow.ingest([[str(path)]], data=root)[0]
        rows.append({"file": k, "packets": r.packets, "resumed_from": bool(r.resumed_from),
                     "wall_s": round(time.perf_counter() - t0, 3),
                     "cpu_s": round(time.process_time() - c0, 3),
                     "derive_cpu_s": round(spent["derive_cpu"], 3),
                     "rss_mb": round(rss_mb(), 1)})
        print(json.dumps(rows[-1]), flush=True)
    assert all(r["resumed_from"] for r in rows[1:]), "the files did not form one set"
    fit = rows[2:]  # the first files pay one-off costs (imports, kernels loading)
    xs = [float(r["file"]) for r in fit]
    res = {
        "files": a.files, "pps": a.pps, "rotate_s": a.rotate_s, "src": a.src,
        "cpus": len(os.sched_getaffinity(0)), "load_avg_at_end": os.getloadavg(),
        "slope_cpu_s_per_file_in_set": round(slope(xs, [r["cpu_s"] for r in fit]), 5),
        "slope_derive_cpu_s_per_file_in_set": round(
            slope(xs, [r["derive_cpu_s"] for r in fit]), 5),
        "slope_rss_mb_per_file_in_set": round(slope(xs, [r["rss_mb"] for r in fit]), 3),
        "median_cpu_s": sorted(r["cpu_s"] for r in fit)[len(fit) // 2],
        "median_derive_cpu_s": sorted(r["derive_cpu_s"] for r in fit)[len(fit) // 2],
        "per_file": rows,
    }
    print(json.dumps({k: v for k, v in res.items() if k != "per_file"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
