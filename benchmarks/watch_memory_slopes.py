"""Slopes of a ``watch_memory.py`` run (one JSON line per file), per file in the set.

    python benchmarks/watch_memory_slopes.py RUN.jsonl [FROM [WFROM]]   # FROM: first file (200)

The watch process's RSS and the CPU per file over files FROM on (least squares with
its 95% interval; Theil-Sen); with ``--worker``: a worker's RSS against the files
already in the set and its own age (its files 30-97, the first worker left out: it
compiled), a fresh worker's RSS at its 10th file and its mean over its files 5-15,
per worker, and their slopes against the file the worker started at (``WFROM``: only
the workers started at that file or later, e.g. 399: past the first 300 s of a set,
which its bounded windows fill).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def ols(x: object, y: object) -> tuple[float, float]:
    """Slope and its 95% half-interval."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    design = np.column_stack([xa, np.ones_like(xa)])
    b = np.linalg.lstsq(design, ya, rcond=None)[0]
    s2 = ((ya - design @ b) ** 2).sum() / max(len(xa) - 2, 1)
    return float(b[0]), float(1.96 * np.sqrt(s2 / ((xa - xa.mean()) ** 2).sum()))


def theil(x: np.ndarray, y: np.ndarray) -> float:
    i, j = np.triu_indices(len(x), 1)
    d = x[j] - x[i]
    m = d != 0
    return float(np.median((y[j] - y[i])[m] / d[m]))


def main() -> int:
    with open(sys.argv[1]) as fh:
        rows = [json.loads(ln) for ln in fh if ln.startswith('{"file"')]
    lo = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    print(sys.argv[1], "files", len(rows))
    k = np.array([r["file"] for r in rows], float)
    ws = np.array([r.get("workers_started", 0) for r in rows])
    cpu = np.array([r["cpu_s"] for r in rows])
    rw = np.array([r.get("rss_watch_mb", r["rss_mb"]) for r in rows])
    rk = np.array([r.get("rss_worker_mb", 0.0) for r in rows])
    m = k >= lo
    for name, y, unit in (("watch RSS", rw, "MB"), ("CPU", cpu, "s")):
        b, ci = ols(k[m], y[m])
        print(f"{name}, files {lo}-: {b:+.5f} ±{ci:.5f} {unit}/file "
              f"(Theil-Sen {theil(k[m][::3], y[m][::3]):+.5f})")
    for a, z in ((60, 99), (len(rows) - 100, len(rows) - 1)):
        s = (k >= a) & (k <= z)
        print(f"  CPU median, files {a}-{z}: {np.median(cpu[s]):.2f} s")
    if not rk.any():
        return 0
    first: dict[int, float] = {}
    for kk, w in zip(k, ws, strict=True):
        first.setdefault(int(w), kk)
    age = np.array([kk - first[int(w)] for kk, w in zip(k, ws, strict=True)])
    sel = (age >= 30) & (age <= 97) & (ws != ws[0])
    design = np.column_stack([k[sel], age[sel], np.ones(sel.sum())])
    y = rk[sel]
    b = np.linalg.lstsq(design, y, rcond=None)[0]
    cov = ((y - design @ b) ** 2).sum() / (len(y) - 3) * np.linalg.inv(design.T @ design)
    print(f"worker RSS per file in the set (its files 30-97): {b[0]:+.4f} "
          f"±{1.96 * np.sqrt(cov[0, 0]):.4f} MB; per file of its age {b[1]:+.4f} "
          f"±{1.96 * np.sqrt(cov[1, 1]):.4f}")
    wfrom = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    later = [w for w in sorted(first) if w != ws[0] and first[w] >= wfrom]
    for label, pick in (("at its 10th file", lambda w: (ws == w) & (age == 10)),
                        ("mean over its files 5-15", lambda w: (ws == w) & (age >= 5)
                         & (age <= 15))):
        pts = [(first[w], float(rk[pick(w)].mean())) for w in later
               if ((ws == w) & (age >= 15)).any()]
        if len(pts) > 2:
            b1, ci1 = ols([a for a, _ in pts], [v for _, v in pts])
            print(f"  a fresh worker's RSS {label} (started at file, MB): "
                  f"{[(int(a), round(v, 1)) for a, v in pts]}: {b1:+.4f} ±{ci1:.4f} MB/file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
