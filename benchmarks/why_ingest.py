"""What the derived tables of issue 18 (causes, feed_gaps, alerts) cost an ingest:
this checkout's ``pcapflow ingest`` against another checkout's, side by side.

How this works: each side runs as its own subprocess (``pcapflow ingest CAPTURE
--workers 1`` by default, into a fresh dataset directory), its CPU time (user +
system) and peak RSS taken from ``os.wait4``; the sides alternate, after one
untimed run each (Numba compiles, the page cache warms), and the median of
``--repeat`` runs counts. CPU time, not wall time: the machine may be shared.

The other checkout (``--base``, e.g. ``git worktree add /tmp/base <commit>``)
runs from its source tree: a directory of symbolic links shaped like the
installed package (``pcapflow`` with ``parsers``, ``pipelines`` and ``_samples``
inside) goes first on ``PYTHONPATH``, so the editable install of this checkout is
not what it imports.

    python benchmarks/why_ingest.py /tmp/why/ws.pcap --keylog /tmp/why/ws.keylog \\
        --base /tmp/why3-base --repeat 3 --json results/why_ingest.json

``--alerts N``: also time ``pcapflow alerts --recompute`` on a synthetic dataset of
N orders (``synthetic_orders``) with this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENTRY = "from pcapflow._entry import main; main()"


def shim(checkout: Path, into: Path) -> Path:
    """A directory to put first on PYTHONPATH that imports ``checkout`` as pcapflow."""
    pkg = into / "pcapflow"
    pkg.mkdir(parents=True, exist_ok=True)
    for entry in (checkout / "pcapflow").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for name, src in (("parsers", "parsers"), ("pipelines", "pipelines"),
                      ("_samples", "sample_pcaps")):
        (pkg / name).symlink_to(checkout / src)
    return into


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(cpu s, wall s, peak RSS KiB) of one run of ``cmd``; raises on failure."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{cmd}: failed: {err.read().decode(errors='replace')[-500:]}")
    return ru.ru_utime + ru.ru_stime, wall, int(ru.ru_maxrss)


def ingest_sides(a: argparse.Namespace, work: Path) -> dict[str, dict[str, object]]:
    sides: dict[str, dict[str, str]] = {"head": {}}
    for name, path in ([("base", a.base)] if a.base else []) + [
            tuple(x.split("=", 1)) for x in a.side]:
        sides[name] = {"PYTHONPATH": str(shim(Path(path).resolve(), work / f"shim-{name}"))}
    cache = Path(a.numba_cache or tempfile.gettempdir()) / "why-bench-numba"
    results: dict[str, dict[str, object]] = {}
    for k in range(a.repeat + 1):  # the first round is untimed
        for name, extra in sides.items():
            env = {**os.environ, **extra, "NUMBA_CACHE_DIR": f"{cache}-{name}"}
            out = work / f"{name}-{k}"
            cmd = [sys.executable, "-c", ENTRY, "ingest", a.capture, "--data", str(out),
                   "--workers", str(a.workers)] + [x for kl in a.keylog
                                                    for x in ("--keylog", kl)]
            cpu, wall, rss = run(cmd, env)
            subprocess.run(["rm", "-rf", str(out)], check=True)
            if k == 0:
                continue
            r = results.setdefault(name, {"cpu_s": [], "wall_s": [], "rss_mib": []})
            r["cpu_s"].append(round(cpu, 3))  # type: ignore[union-attr]
            r["wall_s"].append(round(wall, 3))  # type: ignore[union-attr]
            r["rss_mib"].append(round(rss / 1024, 1))  # type: ignore[union-attr]
    for r in results.values():
        for key in ("cpu_s", "wall_s", "rss_mib"):
            r[f"median_{key}"] = statistics.median(r[key])  # type: ignore[arg-type]
    if "base" in results:
        for r in results.values():
            for key in ("cpu_s", "rss_mib"):
                r[f"ratio_{key}_to_base"] = round(
                    r[f"median_{key}"] / results["base"][f"median_{key}"], 3)  # type: ignore[operator]
    return results


def synthetic_orders(data: Path, orders: int, seed: int = 7) -> None:
    """A dataset of ``orders`` matched orders (``latency``, ``flows``, ``tcp_rtt`` rows
    of 50 connections, ~10 ms apart, latency regimes shifting every 100k orders) in the
    Parquet layout an ingest writes, for timing the detectors."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pcapflow.pipelines.tables.schemas import TABLES

    rng = np.random.default_rng(seed)
    cid = "synthetic"
    t = 1_800_000_000_000_000_000 + np.cumsum(rng.integers(1, 20_000_000, orders))
    lat = rng.lognormal(np.log(5e6) + (np.arange(orders) // 100_000 % 3) * 0.3, 0.4, orders)
    flow = rng.integers(0, 50, orders)

    def write(table: str, cols: dict[str, object]) -> None:
        schema = TABLES[table]
        n = len(next(iter(cols.values())))  # type: ignore[arg-type]
        arrays = []
        for f in schema:
            if f.name == "capture_id":
                continue
            v = cols.get(f.name)
            arrays.append(pa.nulls(n, f.type) if v is None else pa.array(v).cast(f.type))
        names = [f.name for f in schema if f.name != "capture_id"]
        out = data / table / f"capture_id={cid}"
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(arrays, names=names), out / "part-0.parquet")

    write("latency", {"venue": np.where(flow % 2 == 0, "binance", "okx"),
                      "endpoint": np.where(flow % 3 == 0, "order.cancel", "order.place"),
                      "flow_id": flow, "kind": np.full(orders, "new"),
                      "leg": np.full(orders, "ack"),
                      "order_ts": t, "ack_ts": t + lat.astype(np.int64),
                      "latency_ns": lat.astype(np.int64), "status": np.full(orders, "accepted")})
    write("flows", {"flow_id": np.arange(50), "transport": np.full(50, "tcp"),
                    "venue": np.where(np.arange(50) % 2 == 0, "binance", "okx"),
                    "first_ts": np.full(50, t[0]), "last_ts": np.full(50, t[-1])})
    # each order's segment (out) and its ack's (in), 150-400 bytes, offsets per
    # connection and direction
    sent = np.concatenate([t, t + lat.astype(np.int64)])
    sflow = np.concatenate([flow, flow])
    out = np.arange(2 * orders) < orders
    order = np.lexsort((sent, out, sflow))
    size = rng.integers(150, 400, 2 * orders)[order]
    stream = np.cumsum(size)
    first = np.ones(2 * orders, np.bool_)
    key = sflow[order] * 2 + out[order]
    first[1:] = key[1:] != key[:-1]
    base = np.maximum.accumulate(np.where(first, stream - size, 0))
    write("tcp_rtt", {"flow_id": sflow[order], "direction": np.where(out[order], "out", "in"),
                      "ts_sent": sent[order], "ts_ack": sent[order] + 100_000,
                      "rtt_ns": np.full(2 * orders, 100_000), "end_offset": stream - base})
    captures = data / "captures" / f"capture_id={cid}"
    captures.mkdir(parents=True, exist_ok=True)


def time_alerts(a: argparse.Namespace, work: Path) -> dict[str, object]:
    data = work / "alerts-data"
    t0 = time.perf_counter()
    synthetic_orders(data, a.alerts)
    made = time.perf_counter() - t0
    env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(a.numba_cache or tempfile.gettempdir())
                                                  / "why-bench-numba-head")}
    cmd = [sys.executable, "-c", ENTRY, "alerts", "--recompute", "--data", str(data)]
    runs = [run(cmd, env) for _ in range(a.repeat)]
    return {"orders": a.alerts, "made_s": round(made, 2),
            "cpu_s": [round(r[0], 3) for r in runs], "wall_s": [round(r[1], 3) for r in runs],
            "median_cpu_s": statistics.median(r[0] for r in runs),
            "median_wall_s": statistics.median(r[1] for r in runs),
            "rss_mib": max(round(r[2] / 1024, 1) for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("capture")
    p.add_argument("--keylog", action="append", default=[])
    p.add_argument("--base", help="another checkout to compare against (its source tree)")
    p.add_argument("--side", action="append", default=[], metavar="NAME=CHECKOUT",
                   help="more checkouts to run side by side (e.g. main=/tmp/main)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workers", default="1")
    p.add_argument("--numba-cache", help="parent of the Numba cache directories")
    p.add_argument("--alerts", type=int, default=0, metavar="N",
                   help="also time `pcapflow alerts --recompute` over N synthetic orders")
    p.add_argument("--json", help="write every number here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="why-bench-") as tmp:
        doc: dict[str, object] = {"capture": a.capture, "workers": a.workers,
                                  "repeat": a.repeat, "ingest": ingest_sides(a, Path(tmp))}
        if a.alerts:
            doc["alerts"] = time_alerts(a, Path(tmp))
    doc["load_1min"] = os.getloadavg()[0]
    text = json.dumps(doc, indent=1)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
