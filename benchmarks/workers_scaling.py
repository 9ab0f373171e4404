"""How one capture's ingest scales with ``--workers``: wall and CPU of the CLI, where
each process's time goes, and what that predicts for more cores (issue 20).

How this works. Two measurements, both on one capture (default: the TLS 1.3
WebSocket benchmark capture and its key log):

- ``cli``: ``pcapflow ingest CAPTURE --keylog K --workers N`` as a user runs it, for
  each N of ``--workers`` (and each install: this one, and ``--compare OTHER``'s),
  alternated round by round, ``--repeat`` rounds, each into a fresh dataset. Per run:
  wall time (``time.perf_counter`` around the child), CPU (user + system of the CLI
  and of the workers it forked and reaped: ``getrusage(RUSAGE_CHILDREN)`` before and
  after), peak RSS of the CLI process (``wait4``), and the 1-minute load when it
  started. Medians per (install, N).
- ``phases``: one in-process ingest per N (after an untimed one) in a subprocess of
  the install's interpreter, with timers wrapped around the driver's stages
  (``PROBE``): per process (shard) its ``_run``'s thread and process CPU and the
  duplicated part (decode, flow tracker, shard lookup: what every worker repeats),
  the application layer's; in the parent, the wall clock of its steps after the
  shards (waiting for them, ``FlowRows.finish``: the matcher and the derive, then the
  commit) and their thread CPU.

From those, ``model`` projects the wall time on more cores (Amdahl, with the
capture's connection sizes): a serial part (the CLI's start-up, the warm-up
before the fork, the parent's tail after the shards, the commit), a part every
worker repeats, and the application layer's work spread over the shards as the
sharding rule spreads connections (the greedy "fewest payload bytes" of
``pipelines.ingest.shards.Shard``, over the capture's flows' payload bytes): a
connection is never split, so the biggest one bounds the parallel part.

Run it where the machine is quiet if you can; under load, read the CPU columns and
the load column before the wall ones (``benchmarks/README.md``, "session 12").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CAPTURE = "/work/bench/ws1m_c.pcap"
KEYLOG = "/work/bench/ws1m_c.keylog"

PROBE = r"""
import json, os, sys, time, tempfile, shutil
import pcapflow
from pcapflow.pipelines import store
from pcapflow.pipelines.ingest import driver, shards, flow_rows, app_layer
from pcapflow.parsers.tcp import analysis

capture, keylog, workers, out_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
T0 = [0.0]
acc = {}
steps = []

def timed(owner, name, label, step=False):
    f = getattr(owner, name)
    def call(*a, **k):
        c, s = time.thread_time(), time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[label] = acc.get(label, 0.0) + time.thread_time() - c
            if step:
                steps.append((label, s - T0[0], time.perf_counter() - s, time.thread_time() - c))
    setattr(owner, name, call)

for owner, name, label in ((driver, "decode_chunk", "decode"),
                           (analysis.FlowTracker, "process", "tracker"),
                           (shards.Shard, "packets", "shard_lookup"),
                           (driver, "tcp_event_rows", "tcp_rows"),
                           (app_layer.AppLayer, "process", "app_layer")):
    timed(owner, name, label)
for owner, name, label in ((driver, "_warm_up", "warm_up"),
                           (shards.ParentLink, "agree_last", "wait_agree"),
                           (shards.ParentLink, "collect", "wait_collect"),
                           (flow_rows.FlowRows, "finish", "tail_finish"),
                           (store.Staging, "commit", "commit")):
    timed(owner, name, label, step=True)

run = driver._run
def probe_run(*a, **k):
    acc.clear()
    c, p, s = time.thread_time(), time.process_time(), time.perf_counter()
    shard = k.get("shard")
    try:
        return run(*a, **k)
    finally:
        rec = {"shard": shard.index if shard is not None else 0,
               "start": s - T0[0], "wall": time.perf_counter() - s,
               "thread_cpu": time.thread_time() - c, "process_cpu": time.process_time() - p,
               **acc}
        with open(os.path.join(out_dir, f"shard-{os.getpid()}.json"), "w") as f:
            json.dump(rec, f)
driver._run = probe_run

for timed_run in (False, True):
    for p in os.listdir(out_dir):
        os.unlink(os.path.join(out_dir, p))
    steps.clear()
    d = tempfile.mkdtemp()
    T0[0] = time.perf_counter()
    r = pcapflow.ingest(capture, keylog=keylog, data=d, workers=workers)[0]
    wall = time.perf_counter() - T0[0]
    shutil.rmtree(d)
shard_recs = []
for p in sorted(os.listdir(out_dir)):
    with open(os.path.join(out_dir, p)) as f:
        shard_recs.append(json.load(f))
print(json.dumps({"workers": workers, "wall": wall, "seconds": r.seconds,
                  "shards": sorted(shard_recs, key=lambda x: x["shard"]),
                  "steps": steps, "load": os.getloadavg()[0]}))
"""

FLOWS_SNIPPET = r"""
import json, sys, tempfile, shutil, pcapflow
d = tempfile.mkdtemp()
pcapflow.ingest(sys.argv[1], keylog=sys.argv[2], data=d, workers=1)
rows = pcapflow.open(d).sql(
    "SELECT payload_bytes_out + payload_bytes_in FROM flows ORDER BY first_ts").fetchall()
shutil.rmtree(d)
print(json.dumps([int(b) for (b,) in rows if b]))
"""


def _python_of(install: str | None) -> str:
    return sys.executable if install is None else str(Path(install) / "bin" / "python")


def _pcapflow_of(install: str | None) -> str:
    return str(Path(_python_of(install)).parent / "pcapflow")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # (an editable checkout's start-up: HELPERS)
    return env


def cli_run(exe: str, capture: str, keylog: str, workers: int, tmp: Path) -> dict[str, Any]:
    """One CLI ingest into a fresh dataset: wall, CPU (with its workers), peak RSS, load."""
    data = Path(tempfile.mkdtemp(dir=tmp))
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [
            exe,
            "ingest",
            capture,
            "--keylog",
            keylog,
            "--data",
            str(data),
            "--workers",
            str(workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    shutil.rmtree(data, ignore_errors=True)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{exe} --workers {workers} failed: {err[-2000:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": ru.ru_maxrss / 1024, "load": load}


def phases(
    install: str | None, capture: str, keylog: str, workers: int, tmp: Path
) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=tmp))
    res = subprocess.run(
        [_python_of(install), "-c", PROBE, capture, keylog, str(workers), str(out)],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    shutil.rmtree(out, ignore_errors=True)
    if res.returncode != 0:
        raise SystemExit(f"phases --workers {workers} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarize_phases(ph: dict[str, Any]) -> dict[str, float]:
    """Per ingest: the duplicated part (max over processes), the application layer's CPU
    summed over processes, and the parent's serial steps."""
    shards = ph["shards"]
    dup = max(
        s.get("decode", 0) + s.get("tracker", 0) + s.get("shard_lookup", 0) + s.get("tcp_rows", 0)
        for s in shards
    )
    steps: dict[str, list[float]] = {}
    for label, _start, wall, cpu in ph["steps"]:
        steps.setdefault(label, [0.0, 0.0])
        steps[label][0] += wall
        steps[label][1] += cpu
    parent = next(s for s in shards if s["shard"] == 0)
    tail = steps.get("tail_finish", [0.0, 0.0])
    return {
        "parent_thread_cpu": parent["thread_cpu"],
        "commit_thread_cpu": steps.get("commit", [0.0, 0.0])[1],
        "warm_up_thread_cpu": steps.get("warm_up", [0.0, 0.0])[1],
        "wall": ph["wall"],
        "duplicated_thread_cpu": dup,
        "app_layer_thread_cpu_sum": sum(s.get("app_layer", 0) for s in shards),
        "process_cpu_sum": sum(s["process_cpu"] for s in shards),
        "parent_run_wall": parent["wall"],
        "warm_up_wall": steps.get("warm_up", [0.0, 0.0])[0],
        "wait_wall": steps.get("wait_agree", [0, 0])[0] + steps.get("wait_collect", [0, 0])[0],
        "tail_wall": tail[0],
        "tail_thread_cpu": tail[1],
        "commit_wall": steps.get("commit", [0.0, 0.0])[0],
        "children_wall_max": max([s["wall"] for s in shards if s["shard"] != 0] or [0.0]),
    }


def shares(sizes: list[int], n: int) -> float:
    """The largest shard's fraction of the payload bytes when flows (in order of their
    first payload) go to the shard with the fewest bytes so far, ties to the last."""
    load = [0] * n
    for b in sizes:
        k = min(range(n), key=lambda i: (load[i], -i))
        load[k] += b
    total = sum(sizes) or 1
    return max(load) / total


def model(
    cli1_cpu: float,
    ph1: dict[str, float],
    phn: dict[str, float],
    sizes: list[int],
    cores: list[int],
) -> dict[str, Any]:
    """Amdahl with the measured parts (module docstring), from CPU times (a shared
    machine's wall clock says little): seconds of wall on otherwise idle cores."""
    startup = cli1_cpu - ph1["process_cpu_sum"]  # the CLI's imports, start-up and exit
    serial = ph1["tail_thread_cpu"] + ph1["commit_thread_cpu"]  # after the shards
    main1 = ph1["parent_thread_cpu"] - ph1["tail_thread_cpu"]  # one process's own thread
    cpu1 = ph1["process_cpu_sum"] - ph1["tail_thread_cpu"]  # ... and its writer thread
    dup = phn["duplicated_thread_cpu"]
    warm = phn["warm_up_thread_cpu"]

    def wall(workers: int, n_cores: int) -> float:
        if workers == 1:
            return startup + serial + max(main1, cpu1 / n_cores)
        path = dup + (main1 - dup) * shares(sizes, workers)
        return startup + warm + serial + max(path, (cpu1 + (workers - 1) * dup) / n_cores)

    rows = {}
    for n in cores:
        one, many = wall(1, n), wall(n, n)
        rows[n] = {
            "workers_1_s": one,
            "workers_n_s": many,
            "speedup": one / many,
            "vs_one_core": wall(1, 1) / many,
            "largest_shard_share": shares(sizes, n),
        }
    f = (startup + serial) / wall(1, 1)
    return {
        "startup_cpu_s": startup,
        "serial_tail_cpu_s": serial,
        "main_thread_cpu_s": main1,
        "parallel_cpu_s": cpu1,
        "duplicated_per_worker_s": dup,
        "warm_up_s": warm,
        "serial_fraction": f,
        "projection": rows,
        "amdahl_bound": {n: 1 / (f + (1 - f) / n) for n in cores},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", default=CAPTURE)
    ap.add_argument("--keylog", default=KEYLOG)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--repeat", type=int, default=5, help="CLI rounds (alternated)")
    ap.add_argument("--compare", default=None, help="another install (a venv) to alternate with")
    ap.add_argument("--no-phases", action="store_true")
    ap.add_argument("--cores", default="1,2,4,8,16", help="core counts to project to")
    ap.add_argument("--json", default=None, help="write every number here")
    a = ap.parse_args()
    counts = [int(x) for x in a.workers.split(",")]
    installs: list[tuple[str, str | None]] = [("this", None)]
    if a.compare:
        installs.append(("other", a.compare))
    tmp = Path(tempfile.mkdtemp(prefix="workers_scaling-"))
    report: dict[str, Any] = {"capture": a.capture, "cpus": os.cpu_count(), "cli": {}}
    try:
        subprocess.run(["cat", a.capture], stdout=subprocess.DEVNULL, check=True)
        for _name, inst in installs:  # untimed: page cache, Numba cache
            cli_run(_pcapflow_of(inst), a.capture, a.keylog, 1, tmp)
        runs: dict[str, list[dict[str, Any]]] = {}
        for r in range(a.repeat):
            for name, inst in installs:
                for n in counts:
                    key = f"{name}_w{n}"
                    one = cli_run(_pcapflow_of(inst), a.capture, a.keylog, n, tmp)
                    runs.setdefault(key, []).append(one)
                    print(
                        f"round {r} {key}: wall {one['wall_s']:.2f} s, cpu {one['cpu_s']:.2f} s,"
                        f" rss {one['peak_rss_mb']:.0f} MB, load {one['load']:.1f}",
                        flush=True,
                    )
        for key, rs in runs.items():
            report["cli"][key] = {
                "runs": rs,
                **{
                    f"median_{m}": statistics.median(x[m] for x in rs)
                    for m in ("wall_s", "cpu_s", "peak_rss_mb", "load")
                },
            }
        if not a.no_phases:
            report["phases"] = {}
            for name, inst in installs:
                for n in counts:
                    ph = phases(inst, a.capture, a.keylog, n, tmp)
                    report["phases"][f"{name}_w{n}"] = {"raw": ph, **summarize_phases(ph)}
            sizes = json.loads(
                subprocess.run(
                    [sys.executable, "-c", FLOWS_SNIPPET, a.capture, a.keylog],
                    capture_output=True,
                    text=True,
                    env=_env(),
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            report["flow_payload_bytes"] = sizes
            cores = [int(x) for x in a.cores.split(",")]
            many = max(counts)
            report["model"] = model(
                report["cli"]["this_w1"]["median_cpu_s"],
                report["phases"]["this_w1"],
                report["phases"][f"this_w{many}"],
                sizes,
                cores,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{'run':<12} {'wall s':>8} {'cpu s':>8} {'rss MB':>8} {'load':>6}  (medians)")
    for key, v in report["cli"].items():
        print(
            f"{key:<12} {v['median_wall_s']:8.2f} {v['median_cpu_s']:8.2f} "
            f"{v['median_peak_rss_mb']:8.0f} {v['median_load']:6.1f}"
        )
    for name, _ in installs:
        if f"{name}_w1" in report["cli"]:
            for n in counts[1:]:
                w1 = report["cli"][f"{name}_w1"]["median_wall_s"]
                wn = report["cli"][f"{name}_w{n}"]["median_wall_s"]
                print(f"{name}: --workers {n} / --workers 1 wall: {w1 / wn:.2f}x")
    if "phases" in report:
        print()
        for key, v in report["phases"].items():
            print(key, {k: round(x, 3) for k, x in v.items() if k != "raw"})
        m = report["model"]
        print()
        print("model:", {k: round(v, 3) for k, v in m.items() if isinstance(v, float)})
        for n, row in m["projection"].items():
            print(
                f"  {n:>2} cores: --workers 1 {row['workers_1_s']:.2f} s, --workers {n} "
                f"{row['workers_n_s']:.2f} s: {row['speedup']:.2f}x ({row['vs_one_core']:.2f}x "
                f"one core; largest shard {row['largest_shard_share']:.0%} of the payload; "
                f"Amdahl without that bound {m['amdahl_bound'][n]:.2f}x)"
            )
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
