"""Cost of the k-th command of a rotation ingested one file per command, against k:
does a later file cost its own size, or the set's so far?

    python benchmarks/rotation_per_command.py --files 40 --rotate-s 1 --pps 50000 \\
        --json benchmarks/results/rotation_per_command.json

The files are ``watch_rotation.py``'s: synthetic trading captures (``make_capture.py``)
of ``pps * rotate_s`` packets, each following the one before in time, named as a
rotation's. Each is ingested by its own ``pcapflow.ingest`` call in this warm process
(as ``pcapflow watch`` does when a file closes: the call resumes the set the earlier
calls built), then the metrics are refreshed (``DatasetMetrics``, as
``--metrics-port`` does). Per call: CPU seconds (this process, all threads), wall
seconds, RSS after, and the shares of the matcher (``match_tables``), the derived
tables (``derive_staged``: causes, feed_gaps, alerts), the commit
(``Staging.commit``), the carry (``resume.carry`` and ``carry_candidates``: what the
command does with the set's earlier parts before reading its file) and the metrics
refresh. ``slope_*``: least-squares seconds per
file already in the set, over the calls after the first ``--skip``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from procstat import rss_mb  # noqa: E402


def slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through (xs, ys)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def _timer(spent: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*a: Any, **k: Any) -> Any:
        c = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            spent[name] = spent.get(name, 0.0) + time.process_time() - c
    return call


def _fresh(a: argparse.Namespace, files: list[Path], root: Path, tmp: Path,
           snapshots: dict[int, Path]) -> list[dict[str, Any]]:
    """CPU seconds of file k ingested alone (resume=False, a new dataset) against the
    same file resumed onto a copy of the set as it stood before it, alternated."""
    import pcapflow

    out = []
    for k, snap in sorted(snapshots.items()):
        alone, resumed = [], []
        for r in range(a.fresh_repeat):
            d = tmp / f"fresh-{k}-{r}"
            c = time.process_time()
            pcapflow.ingest([[str(files[k])]], data=d, resume=False)
            alone.append(time.process_time() - c)
            shutil.rmtree(d)
            d = tmp / f"resumed-{k}-{r}"
            shutil.copytree(snap, d, symlinks=True)
            c = time.process_time()
            res = pcapflow.ingest([[str(files[k])]], data=d)[0]
            resumed.append(time.process_time() - c)
            assert res.resumed_from is not None
            shutil.rmtree(d)
        row = {"k": k, "alone_cpu_s": [round(x, 4) for x in alone],
               "resumed_cpu_s": [round(x, 4) for x in resumed],
               "resumed_over_alone": round(sorted(resumed)[len(resumed) // 2]
                                           / sorted(alone)[len(alone) // 2] - 1, 4)}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--rotate-s", type=float, default=1.0)
    ap.add_argument("--pps", type=int, default=50_000)
    ap.add_argument("--skip", type=int, default=2, help="calls left out of the slope")
    ap.add_argument("--label", default="")
    ap.add_argument("--fresh", default="", metavar="K,K2,...",
                    help="after the rotation, ingest these files again, each alone into a "
                    "new dataset (its own capture, resume=False), alternated with a resumed "
                    "call of the same file into a copy of the set as it stood before it: "
                    "the issue's 'resume costs at most 5%% over a single-file ingest'")
    ap.add_argument("--fresh-repeat", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--profile", default=None, metavar="K,K2,...:PREFIX",
                    help="cProfile these calls, each to PREFIX-<k>.pstats (what grows with "
                    "the set: compare an early call's with a late one's)")
    a = ap.parse_args(argv)
    prof_at, prof_out = set(), ""
    if a.profile:
        ks, _, prof_out = a.profile.partition(":")
        prof_at = {int(k) for k in ks.split(",")}

    from pcapflow.pipelines import store
    from watch_rotation import write_rotation

    import pcapflow
    from pcapflow import venues, why
    from pcapflow.metrics import DatasetMetrics

    spent: dict[str, float] = {}
    for name in ("match_tables", "match_staged"):  # (the matcher's entry, as venues calls it)
        if hasattr(venues, name):
            setattr(venues, name, _timer(spent, "match", getattr(venues, name)))
            break
    carry_stats: dict[str, Any] | None = None
    carry_whole: list[str] = []
    n_whole = 0
    try:  # a rotation's own matcher (pipelines/match_carry.py), when this pcapflow has it
        from pcapflow.pipelines import match_carry

        carry_stats, carry_whole = match_carry.STATS, match_carry.WHOLE

        match_carry.match = _timer(spent, "match", match_carry.match)  # type: ignore
    except (ImportError, AttributeError):
        pass
    why.derive_staged = _timer(spent, "derive", why.derive_staged)  # type: ignore
    store.Staging.commit = _timer(spent, "commit", store.Staging.commit)  # type: ignore
    from pcapflow.pipelines.ingest import resume

    # what a resumed command does with the set's earlier parts before it reads its file
    resume.carry = _timer(spent, "carry", resume.carry)  # type: ignore
    resume.carry_candidates = _timer(spent, "carry", resume.carry_candidates)  # type: ignore
    if hasattr(store.Staging, "mark_durable"):  # (before the append commit: the links' stat)
        store.Staging.mark_durable = _timer(spent, "carry", store.Staging.mark_durable)

    tmp = Path(tempfile.mkdtemp(prefix="pcf-rotcmd-"))
    d, root = tmp / "rot", tmp / "ds"
    d.mkdir()
    files = write_rotation(d, a.files, a.pps, a.rotate_s)  # first: writing is not timed
    for f in files[:2]:  # Numba kernels loaded, the resume path's too
        pcapflow.ingest([[str(f)]], data=tmp / "warm")
    metrics = DatasetMetrics(root)
    rows = []
    want = {int(x) for x in a.fresh.split(",") if x}
    snapshots: dict[int, Path] = {}
    for k, f in enumerate(files):
        if k in want:  # the set as it stood before file k, for _fresh
            snapshots[k] = tmp / f"before-{k}"
            shutil.copytree(root, snapshots[k], symlinks=True)
        spent.clear()
        prof = cProfile.Profile() if k in prof_at else None
        if prof is not None:
            prof.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        r = pcapflow.ingest([[str(f)]], data=root)[0]
        c1 = time.process_time()
        metrics.refresh()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        if prof is not None:
            prof.disable()
            prof.dump_stats(f"{prof_out}-{k}.pstats")
        assert k == 0 or r.resumed_from is not None, (k, r)
        rows.append({"k": k, "cpu_s": round(cpu, 4), "wall_s": round(wall, 4),
                     "ingest_cpu_s": round(c1 - c0, 4),
                     "match_s": round(spent.get("match", 0.0), 4),
                     "derive_s": round(spent.get("derive", 0.0), 4),
                     "commit_s": round(spent.get("commit", 0.0), 4),
                     "carry_s": round(spent.get("carry", 0.0), 4),
                     "metrics_s": round(time.process_time() - c1, 4),
                     "rss_mb": round(rss_mb(), 1)})
        if carry_stats is not None:  # what the rotation's matcher did (match_carry.STATS)
            rows[-1]["matcher"] = {k: (round(v, 4) if isinstance(v, float) else v)
                                   for k, v in carry_stats.items() if k != "cut"}
            rows[-1]["matcher"]["whole"] = list(carry_whole[n_whole:])
            n_whole = len(carry_whole)
            carry_stats.clear()
        print(json.dumps(rows[-1]), flush=True)
    fresh = _fresh(a, files, root, tmp, snapshots) if a.fresh else []
    tail = rows[a.skip:]
    ks = [float(r["k"]) for r in tail]
    res: dict[str, Any] = {"label": a.label, "files": a.files, "rotate_s": a.rotate_s,
                           "pps": a.pps, "load_avg_at_end": os.getloadavg()}
    for col in ("cpu_s", "match_s", "derive_s", "commit_s", "carry_s", "metrics_s", "rss_mb"):
        b0, b1 = slope(ks, [float(r[col]) for r in tail])
        res[f"slope_{col}"] = {"intercept": round(b0, 4), "per_file": round(b1, 5)}
    rest = [float(r["cpu_s"]) - float(r["match_s"]) - float(r["derive_s"])
            - float(r["metrics_s"]) for r in tail]
    b0, b1 = slope(ks, rest)
    res["slope_rest_s"] = {"intercept": round(b0, 4), "per_file": round(b1, 5)}
    res["per_call"] = rows
    res["fresh_vs_resumed"] = fresh
    print(json.dumps({k: v for k, v in res.items() if k != "per_call"}, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
