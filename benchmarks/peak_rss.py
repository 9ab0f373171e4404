"""Peak RSS of ``pcapflow ingest`` on captures of several sizes: is memory flat?

How this works: each capture (``FILE`` or ``FILE:KEYLOG``) is ingested by the
installed ``pcapflow`` script into a fresh dataset, with ``--workers 1`` and
``--workers auto``, for ``--rounds`` rounds (round robin, so a busy moment of a
shared machine hits all alike). Peak RSS is the child's ``ru_maxrss`` from
``wait4``: the largest of the process and its waited-for children (a worker of a
sharded ingest counts on its own, not summed), CPU its user + system time.
One JSON line per run on stdout; ``--json`` writes them all.

A capture whose name holds a run of four or more digits (``cap-20261206.pcap``,
``ws1500000.pcap``) is taken for a file of a rotation: its ingest keeps the state
of the connections left open and the derive's carry (``docs/resume.md``), which
costs memory of its own (on a 1.88M-packet TLS capture 1.24 GB against 0.65 GB
under a plain name). Each run says so (``rotation_named``) and a warning is
printed: name benchmark captures without such runs unless that is the point.

``--sample-ms N`` samples the RSS of the process and its children (summed) every
N ms from ``/proc`` and adds ``timeline``: the RSS (MB) at each tenth of the run's
wall time and when the peak came (``peak_at``, a fraction of the run).

    python benchmarks/peak_rss.py /tmp/bench.pcap /tmp/bench3m.pcap \\
        /tmp/ws.pcap:/tmp/ws.keylog --json results/rss.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pcapflow.parsers.capture.capset import rotation_named


def _tree_rss_mb(pid: int) -> float:
    """RSS of ``pid`` and its descendants, summed (MB), from ``/proc``."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(entry)
        children.setdefault(int(fields[1]), []).append(p)
        rss[p] = int(fields[21]) * PAGE
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo += children.get(p, [])
    return total / 1e6


PAGE = os.sysconf("SC_PAGE_SIZE")


def _sample(
    pid: int, every_s: float, out: list[tuple[float, float]], stop: threading.Event
) -> None:
    t0 = time.perf_counter()
    while not stop.wait(every_s):
        out.append((time.perf_counter() - t0, _tree_rss_mb(pid)))


def _timeline(samples: list[tuple[float, float]]) -> dict[str, object]:
    """RSS at each tenth of the run and when the peak came."""
    if not samples:
        return {}
    end = samples[-1][0] or 1.0
    tenths = [max((r for t, r in samples if t <= end * k / 10), default=0.0) for k in range(1, 11)]
    t_peak = max(samples, key=lambda s: s[1])[0]
    return {
        "timeline": [round(r) for r in tenths],
        "peak_at": round(t_peak / end, 2),
        "sampled_peak_mb": round(max(r for _, r in samples)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("captures", nargs="+", help="FILE or FILE:KEYLOG")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pcapflow", default=str(Path(sys.executable).parent / "pcapflow"))
    ap.add_argument("--json", help="write every run here")
    ap.add_argument(
        "--sample-ms",
        type=float,
        default=0.0,
        help="sample the RSS of the process tree this often (0: off)",
    )
    a = ap.parse_args(argv)
    cases = [tuple(c.split(":", 1)) if ":" in c else (c, "") for c in a.captures]
    for cap, _ in cases:
        if rotation_named(cap):
            print(
                f"warning: {cap} is named as a rotation's file: its ingest keeps state "
                "for the next file (more memory); rename it to measure one capture",
                file=sys.stderr,
            )
    runs = []
    for _ in range(a.rounds):
        for cap, key in cases:
            for workers in ("1", "auto"):
                data = tempfile.mkdtemp(prefix="pcapflow-rss-")
                cmd = [
                    a.pcapflow,
                    "ingest",
                    cap,
                    "--workers",
                    workers,
                    "--data",
                    data,
                    *(["--keylog", key] if key else []),
                ]
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                samples: list[tuple[float, float]] = []
                stop = threading.Event()
                sampler = None
                if a.sample_ms > 0:
                    sampler = threading.Thread(
                        target=_sample, daemon=True, args=(p.pid, a.sample_ms / 1e3, samples, stop)
                    )
                    sampler.start()
                _, status, ru = os.wait4(p.pid, 0)
                stop.set()
                if sampler is not None:
                    sampler.join()
                err = p.stderr.read().decode(errors="replace")[-300:] if p.stderr else ""
                run = {
                    "capture": os.path.basename(cap),
                    "size_mb": os.path.getsize(cap) / 1e6,
                    "workers": workers,
                    "rc": os.waitstatus_to_exitcode(status),
                    "rss_mb": ru.ru_maxrss / 1024,
                    "cpu": ru.ru_utime + ru.ru_stime,
                    "wall": time.perf_counter() - t0,
                    "load": load,
                    "rotation_named": rotation_named(cap),
                    **_timeline(samples),
                }
                if run["rc"]:
                    run["stderr"] = err
                print(json.dumps(run), flush=True)
                runs.append(run)
                shutil.rmtree(data, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1) + "\n")
    return 0 if all(r["rc"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
