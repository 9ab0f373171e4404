"""Fixed costs of a ``pcapflow`` command: start-up, small queries, small ingests.

How this works: every command runs as its own subprocess, ``--repeat`` times,
alternating with its peers so a busy moment of a shared machine hits all of
them alike. Wall time comes from ``time.perf_counter`` around the child, CPU
time (user + system) and peak RSS from ``os.wait4``; the medians are reported.
Peers in the same run: ``python -c pass`` (the interpreter's own start),
``tshark -v`` and ``tshark -r tiny.pcap`` (Wireshark's start-up and a read of
the same small capture). The inputs are made first: a ~1 MB plain TCP capture
(``make_capture.py``), and a dataset from the bundled TLS 1.3 WebSocket order
sample with its key log (orders, acks, latency rows) for ``query`` and
``report``. ``--cold`` also times the first ingest with an empty Numba cache
(what the first run after ``pip install`` pays: every kernel compiled).
``--imports`` adds ``python -c "import X"`` for the heavy libraries; ``--compare
PCAPFLOW`` runs another install's console script (say, the code before a change)
in the same rounds, as ``other: ...``.

Targets (issue 20): ``query`` and ``report`` on a small dataset <= 0.25 s; an
ingest of a 1 MB capture <= 0.5 s; warm install (Numba's cache filled).
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

HERE = Path(__file__).resolve().parent
TARGETS = {"query": 0.25, "report": 0.25, "ingest_1mb": 0.5}
IMPORTS = ("typer", "rich.console", "duckdb", "numpy", "pyarrow", "pandas", "numba",
           "matplotlib.pyplot")


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``cmd`` once: wall, CPU (user + sys) and peak RSS of the child."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    if p.stderr:
        p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)}: exit {code}: {err.strip()[-500:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024}


def pcapflow_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "pcapflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "pcapflow"]


def sample(name: str) -> str:
    from pcapflow.samples import sample_dir

    return str(sample_dir() / name)


def main(argv: list[str] | None = None) -> int:
    # The children run as an installed pcapflow does, with its bytecode cached: under
    # PYTHONDONTWRITEBYTECODE an editable checkout's ~150 modules are compiled from
    # source in every run (~0.2-0.3 s of CPU that no `pip install`ed copy pays).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs per command (median)")
    ap.add_argument("--cold", action="store_true",
                    help="also the first ingest with an empty Numba cache")
    ap.add_argument("--imports", action="store_true", help="also `python -c 'import X'`")
    ap.add_argument("--compare", metavar="PCAPFLOW",
                    help="another install's pcapflow script (e.g. the previous release), "
                    "run in the same rounds as 'other: ...'")
    ap.add_argument("--json", help="write every run here")
    a = ap.parse_args(argv)
    pf = pcapflow_cmd()
    work = Path(tempfile.mkdtemp(prefix="pcapflow-startup-"))
    try:
        cap = work / "tcp_1mb.pcap"
        subprocess.run([sys.executable, str(HERE / "make_capture.py"), "--packets", "5400",
                        "--out", str(cap)], check=True, stdout=subprocess.DEVNULL)
        ds = work / "ds"
        ws, keys = sample("binance_wsapi_tls13.pcap"), sample("binance_wsapi_tls13.keylog")
        measure([*pf, "ingest", ws, "--keylog", keys, "--data", str(ds)])
        measure([*pf, "ingest", str(cap), "--data", str(work / "warm")])  # fill Numba's cache
        n = [0]

        def fresh() -> str:
            n[0] += 1
            return str(work / f"d{n[0]}")

        cmds: dict[str, object] = {
            "python -c pass": lambda: [sys.executable, "-c", "pass"],
            "pcapflow --version": lambda: [*pf, "--version"],
            "query": lambda: [*pf, "query", "SELECT count(*) AS n FROM latency",
                              "--data", str(ds)],
            "report": lambda: [*pf, "report", "--data", str(ds)],
            "ingest_1mb": lambda: [*pf, "ingest", str(cap), "--data", fresh()],
        }
        if a.compare:  # another install's console script, same inputs, same rounds
            other = [a.compare]
            cmds["other: pcapflow --version"] = lambda: [*other, "--version"]
            cmds["other: query"] = lambda: [*other, "query", "SELECT count(*) AS n FROM latency",
                                            "--data", str(ds)]
            cmds["other: report"] = lambda: [*other, "report", "--data", str(ds)]
            cmds["other: ingest_1mb"] = lambda: [*other, "ingest", str(cap), "--data", fresh()]
            measure([*other, "ingest", str(cap), "--data", fresh()])  # its Numba cache
        if shutil.which("tshark"):
            cmds["tshark -v"] = lambda: ["tshark", "-v"]
            cmds["tshark -r 1mb"] = lambda: ["tshark", "-n", "-r", str(cap)]
        if a.imports:
            for m in IMPORTS:
                cmds[f"import {m}"] = (lambda m=m: [sys.executable, "-c", f"import {m}"])
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in cmds}
        loads = []
        for _ in range(a.repeat):  # round robin: load swings hit every command alike
            loads.append(os.getloadavg()[0])
            for k, make in cmds.items():
                runs[k].append(measure(make()))  # type: ignore[operator]
        if a.cold:
            env = dict(os.environ, NUMBA_CACHE_DIR=str(work / "numba-cold"))
            runs["ingest_1mb_cold_numba"] = [measure([*pf, "ingest", str(cap), "--data",
                                                      fresh()], env=env)]
        print(f"{a.repeat} runs each, medians; load average {min(loads):.1f}-{max(loads):.1f} "
              f"on {os.cpu_count()} CPUs (shared machine: compare within this run)")
        print(f"{'command':<28}{'wall s':>9}{'cpu s':>9}{'min wall':>10}{'RSS MB':>8}  target")
        summary = {}
        for k, rs in runs.items():
            wall = statistics.median(r["wall"] for r in rs)
            cpu = statistics.median(r["cpu"] for r in rs)
            low = min(r["wall"] for r in rs)
            rss = max(r["rss_mb"] for r in rs)
            goal = TARGETS.get(k)
            verdict = "" if goal is None else (
                f"<= {goal} s: wall {'met' if wall <= goal else 'NOT met'}, "
                f"cpu {'met' if cpu <= goal else 'NOT met'}")
            print(f"{k:<28}{wall:>9.3f}{cpu:>9.3f}{low:>10.3f}{rss:>8.0f}  {verdict}")
            summary[k] = {"wall_median": wall, "cpu_median": cpu, "wall_min": low,
                          "rss_mb": rss, "runs": rs}
        if a.json:
            Path(a.json).write_text(json.dumps({"repeat": a.repeat, "loads": loads,
                                                "cpus": os.cpu_count(),
                                                "commands": summary}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
