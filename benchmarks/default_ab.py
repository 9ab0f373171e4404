"""The default ``pcapflow ingest`` of one capture, two installs alternated (issue 20).

How this works: each round runs every (install, ``--workers``) pair once, in an order
that is swapped every round, each a fresh process writing a fresh dataset; a run's CPU
is the child's user + system time from ``wait4`` (its forked workers included: a
process's usage counts the children it waited for). Medians per pair are printed, with
packets per CPU second, the load average before each run, and, given the peers' CPU
seconds (``--tshark-cpu``, ``--dpkt-cpu``: say, from one ``run.py --tshark --dpkt`` run
on the same capture; they take minutes), the ratios to them.

    python benchmarks/default_ab.py /tmp/speed-1m.pcap --other /work/venv-main/bin/pcapflow \\
        --rounds 7 --workers 1 auto --json results/default_ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(cmd: list[str]) -> dict[str, float]:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd}: failed: {err.strip()[-800:]}")
    return {"cpu": ru.ru_utime + ru.ru_stime, "user": ru.ru_utime, "sys": ru.ru_stime,
            "wall": wall, "load": load, "rss_mb": ru.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--this", default=str(Path(sys.executable).parent / "pcapflow"),
                    help="this install's pcapflow (default: next to this interpreter)")
    ap.add_argument("--other", help="another install's pcapflow, alternated with this one")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", nargs="+", default=["1"])
    ap.add_argument("--packets", type=int, default=1_000_000,
                    help="the capture's packets (for packets per CPU second)")
    ap.add_argument("--tshark-cpu", type=float)
    ap.add_argument("--dpkt-cpu", type=float)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    tools = {"this": a.this, **({"other": a.other} if a.other else {})}
    pairs = [(t, w) for w in a.workers for t in tools]
    work = Path(tempfile.mkdtemp(prefix="pcapflow-ab-"))
    runs: dict[str, list[dict[str, float]]] = {f"{t} w{w}": [] for t, w in pairs}
    try:
        n = 0
        for t in tools.values():  # each install's Numba cache warm, untimed
            n += 1
            run_once([t, "ingest", a.capture, "--workers", "1", "--data", str(work / f"d{n}")])
            shutil.rmtree(work / f"d{n}", ignore_errors=True)
        for r in range(a.rounds):
            for t, w in (pairs if r % 2 == 0 else pairs[::-1]):
                n += 1
                out = work / f"d{n}"
                runs[f"{t} w{w}"].append(run_once(
                    [tools[t], "ingest", a.capture, "--workers", w, "--data", str(out)]))
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads = [x["load"] for rs in runs.values() for x in rs]
    print(f"{a.rounds} rounds, medians; load {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} CPUs")
    for name, rs in runs.items():
        cpu = statistics.median(x["cpu"] for x in rs)
        line = (f"{name:<12} cpu {cpu:6.3f} s (user {statistics.median(x['user'] for x in rs):.3f}"
                f", sys {statistics.median(x['sys'] for x in rs):.3f}; "
                f"{min(x['cpu'] for x in rs):.3f}-{max(x['cpu'] for x in rs):.3f})  "
                f"{a.packets / cpu / 1e3:,.0f}k pkt per CPU s  wall "
                f"{statistics.median(x['wall'] for x in rs):.2f} s  rss "
                f"{max(x['rss_mb'] for x in rs):.0f} MiB")
        if a.tshark_cpu:
            line += f"  {a.tshark_cpu / cpu:.1f}x tshark"
        if a.dpkt_cpu:
            line += f"  {a.dpkt_cpu / cpu:.1f}x dpkt"
        print(line)
    if a.json:
        Path(a.json).write_text(json.dumps({"capture": a.capture, "tools": tools,
                                            "rounds": a.rounds, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
