"""Measure pcapflow against its peers on one capture, side by side, in one run.

How this works: every tool runs as its own subprocess on the same file, after
one untimed ``cat`` has put the file in the page cache. Wall time comes from
``time.perf_counter`` around the child, peak RSS from ``os.wait4`` (the child's
own ``ru_maxrss``, so each tool's memory is its own). Each tool runs ``--repeat``
times and the best (lowest) wall time counts; peak RSS is the highest seen.

Tools: ``cat`` (reading the file: the floor), ``pcapflow ingest --tcp-only``
(cold: empty Numba cache, so compilation is included; warm: best of N after an
untimed warm-up run; each run into a fresh dataset directory), the pcapflow
Python API in a subprocess (its own reported seconds exclude interpreter start
and imports), ``tshark -T fields`` printing the equivalent TCP fields, and a
dpkt loop (``dpkt_loop.py``). With ``--default``: ``pcapflow ingest`` as a user
runs it (no ``--tcp-only``: application-layer detection, tables, the matcher),
``--workers auto`` and ``--workers 1``, with its own ratios to tshark and dpkt
(and with ``--compare OTHER``, another install's ``--workers 1`` run, as
``other_default_1w``). Each tool also gets the median CPU time of its runs.
With ``--app --keylog K``: ``pcapflow ingest
--keylog K`` (``--workers auto``: its connections sharded over the CPUs, and
again as ``pcapflow_app_1w`` with ``--workers 1``) and ``tshark -o
tls.keylog_file:K -Y websocket``; with ``--compare OTHER`` too, the other install's
``--workers 1`` ingest (``other_app_1w``). The app rows also get WebSocket messages per
second of median CPU time and their median-CPU ratios to ``tshark_app``
(``app_messages``, ``app_ratios``). ``--app-only`` skips the TCP-layer tools and peers
(``cat`` stays: it warms the page cache).

Ratios are speedups, peer wall time / pcapflow wall time (warm CLI), so >1 means
pcapflow is faster. Output: a table on stdout and, with ``--json``, every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TSHARK_TCP_FIELDS = (
    "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport", "tcp.seq_raw",
    "tcp.ack_raw", "tcp.len", "tcp.stream", "tcp.analysis.retransmission",
    "tcp.analysis.out_of_order", "tcp.analysis.duplicate_ack",
)
TSHARK_WS_FIELDS = ("frame.time_epoch", "tcp.stream", "websocket.opcode",
                    "websocket.payload.text", "websocket.payload.unknown")
# Targets from DESIGN.md / the benchmark brief.
TARGET_PPS = 1.5e6
TARGET_VS_TSHARK = 20.0
TARGET_VS_DPKT = 10.0
TARGET_APP_VS_TSHARK = 10.0  # issue 3: ingest --keylog against tshark -Y websocket
TARGET_RSS_BYTES = 1 << 30
RSS_TARGET_MIN_FILE = 1.5e9  # the RSS bound is judged on a ~2 GB capture only
STDERR_KEEP = 2000  # characters of a failed tool's stderr kept in the report


@dataclass(slots=True)
class Run:
    """One timed subprocess."""

    wall_s: float
    max_rss_kb: int
    returncode: int
    cpu_s: float = 0.0  # user + system time of the child: wall >> cpu means it waited
    load_before: float = 0.0  # 1-minute load average when it started (shared machine?)
    stdout: str = ""
    stderr: str = ""


@dataclass(slots=True)
class ToolResult:
    """Every run of one tool and the numbers derived from the best one."""

    name: str
    cmd: list[str]
    runs: list[Run] = field(default_factory=list)
    best_s: float = 0.0
    pkts_per_s: float = 0.0
    mb_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    median_cpu_s: float = 0.0  # user + system time, median over the runs
    ok: bool = True
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def measure(cmd: list[str], env: dict[str, str] | None = None, keep_stdout: bool = False) -> Run:
    """Run ``cmd`` once; wall time and the child's own peak RSS (``wait4``)."""
    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=out if keep_stdout else subprocess.DEVNULL, stderr=err,
                             env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, int(ru.ru_maxrss), p.returncode,
                   cpu_s=ru.ru_utime + ru.ru_stime, load_before=load,
                   stdout=out.read().decode(errors="replace") if keep_stdout else "",
                   stderr=err.read().decode(errors="replace")[-STDERR_KEEP:])


def pcapflow_cmd() -> list[str]:
    """The installed ``pcapflow`` script next to this interpreter (not a pyenv shim)."""
    exe = Path(sys.executable).parent / "pcapflow"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("pcapflow")
    return [found] if found else [sys.executable, "-c", "from pcapflow.cli import main; main()"]


_API_SNIPPET = (
    "import json, sys, pcapflow\n"
    "r = pcapflow.ingest([sys.argv[1]], data=sys.argv[2], app=False)[0]\n"
    "print(json.dumps({'seconds': r.seconds, 'packets': r.packets, 'flows': r.flows,"
    " 'rows': r.rows}))\n"
)


class Bench:
    """One benchmark session over one capture."""

    def __init__(self, capture: str, repeat: int, workdir: str) -> None:
        self.capture = capture
        self.size = os.path.getsize(capture)
        self.repeat = repeat
        self.workdir = workdir
        self.packets = 0
        self.messages = 0  # WebSocket messages (``--app``)
        self.results: dict[str, ToolResult] = {}
        self._n = 0

    def fresh_dir(self, tag: str) -> str:
        self._n += 1
        d = os.path.join(self.workdir, f"{tag}{self._n}")
        shutil.rmtree(d, ignore_errors=True)
        return d

    def run_tool(self, name: str, make_cmd, repeat: int | None = None,
                 env: dict[str, str] | None = None, keep_stdout: bool = False,
                 cleanup: bool = True) -> ToolResult:
        """Best of ``repeat`` runs; ``make_cmd()`` builds a fresh command each time."""
        res = ToolResult(name=name, cmd=make_cmd())
        for _ in range(repeat or self.repeat):
            cmd = make_cmd()
            res.cmd = cmd
            r = measure(cmd, env=env, keep_stdout=keep_stdout)
            res.runs.append(r)
            if cleanup:
                for arg in cmd:
                    if arg.startswith(self.workdir):
                        shutil.rmtree(arg, ignore_errors=True)
            if r.returncode != 0:
                res.ok = False
                res.note = f"exit {r.returncode}: {r.stderr.strip().splitlines()[-1:]}"
                break
        good = [r for r in res.runs if r.returncode == 0] or res.runs
        res.best_s = min(r.wall_s for r in good)
        res.peak_rss_mb = max(r.max_rss_kb for r in res.runs) / 1024
        res.median_cpu_s = statistics.median(r.cpu_s for r in good)
        self.results[name] = res
        return res

    def finish(self) -> None:
        for r in self.results.values():
            if r.ok and r.best_s > 0:
                r.pkts_per_s = self.packets / r.best_s
                r.mb_per_s = self.size / 1e6 / r.best_s


def _count_packets(data_dir: str) -> tuple[int, dict[str, int]]:
    """Packets in the ``captures`` table and tcp_events per kind, from the Parquet files."""
    import pyarrow.dataset as pads

    cap = pads.dataset(os.path.join(data_dir, "captures"), partitioning="hive").to_table()
    kinds: dict[str, int] = {}
    ev = Path(data_dir, "tcp_events")
    if ev.exists():
        t = pads.dataset(str(ev), partitioning="hive").to_table(columns=["kind"])
        for k in t.column("kind").to_pylist():
            kinds[k] = kinds.get(k, 0) + 1
    return int(cap.column("packets")[0].as_py()), kinds


def _count_rows(data_dir: str, table: str) -> int:
    """Rows of ``table`` in a dataset, from the Parquet footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows
               for f in Path(data_dir, table).glob("*/*.parquet"))


def run_all(a: argparse.Namespace) -> dict:
    cap = os.path.abspath(a.capture)
    peers = {"tshark": a.tshark, "dpkt": a.dpkt}
    if not any(peers.values()):
        peers = dict.fromkeys(peers, True)  # no peer named: run them all
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pcapflow-bench-", dir=a.workdir) as wd:
        b = Bench(cap, a.repeat, wd)
        pf = pcapflow_cmd()
        measure(["cat", cap])  # warm the page cache, untimed
        b.run_tool("cat", lambda: ["cat", cap])

        def ingest_cmd(*extra: str):
            return lambda: [*pf, "ingest", cap, *extra, "--data", b.fresh_dir("data")]

        if not a.no_cold and not a.app_only:
            env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(wd, "numba-cold"))
            b.run_tool("pcapflow_cold", ingest_cmd("--tcp-only"), repeat=1, env=env)
        measure(ingest_cmd("--tcp-only")())  # warm Numba's cache, untimed
        keep = b.fresh_dir("keep")
        if not a.app_only:
            b.run_tool("pcapflow", ingest_cmd("--tcp-only"))
        first = measure([*pf, "ingest", cap, "--tcp-only", "--data", keep])
        b.packets, kinds = _count_packets(keep) if first.returncode == 0 else (0, {})
        if not a.app_only:
            b.results["pcapflow"].extra["tcp_events"] = kinds
        if a.default:  # what a user runs: no --tcp-only (app-layer detection, matcher)
            b.run_tool("pcapflow_default", ingest_cmd())
            b.run_tool("pcapflow_default_1w", ingest_cmd("--workers", "1"))
            if a.compare:  # another install (say, the code before a change), same run
                other = [a.compare]
                measure([*other, "ingest", cap, "--data", b.fresh_dir("data")])  # warm
                b.run_tool("other_default_1w", lambda: [*other, "ingest", cap, "--workers",
                                                        "1", "--data", b.fresh_dir("data")])
        if a.app_only:
            peers = dict.fromkeys(peers, False)
        api = None if a.app_only else b.run_tool(
            "pcapflow_api", lambda: [sys.executable, "-c", _API_SNIPPET, cap, b.fresh_dir("api")],
            keep_stdout=True)
        if api is not None and api.ok:
            info = [json.loads(r.stdout) for r in api.runs]
            api.extra["in_process_s"] = min(i["seconds"] for i in info)
            api.extra["flows"] = info[0]["flows"]
        if peers["tshark"] and shutil.which("tshark"):
            cmd = ["tshark", "-n", "-r", cap, "-T", "fields"]
            for f in TSHARK_TCP_FIELDS:
                cmd += ["-e", f]
            b.run_tool("tshark", lambda: cmd)
        if peers["dpkt"]:
            d = b.run_tool("dpkt", lambda: [sys.executable, str(HERE / "dpkt_loop.py"), cap],
                           keep_stdout=True)
            if d.ok:
                d.extra.update(json.loads(d.runs[0].stdout))
        if a.app:
            keys = ["--keylog", a.keylog] if a.keylog else []
            # first, unmeasured: counts the messages and compiles (or loads) the
            # application layer's kernels, so no measured run pays Numba's compile
            kept = b.fresh_dir("keep_app")
            if measure([*pf, "ingest", cap, *keys, "--data", kept]).returncode == 0:
                b.messages = _count_rows(kept, "ws_messages")
            b.run_tool("pcapflow_app", ingest_cmd(*keys))  # --workers auto
            b.run_tool("pcapflow_app_1w", ingest_cmd(*keys, "--workers", "1"))
            if a.compare:  # another install (the code before a change), same run
                other = [a.compare]
                measure([*other, "ingest", cap, *keys, "--data", b.fresh_dir("data")])  # warm
                b.run_tool("other_app_1w", lambda: [*other, "ingest", cap, *keys, "--workers",
                                                    "1", "--data", b.fresh_dir("data")])
            if shutil.which("tshark"):
                cmd = ["tshark", "-n", "-r", cap, "-Y", "websocket", "-T", "fields"]
                if a.keylog:
                    cmd += ["-o", f"tls.keylog_file:{a.keylog}"]
                for f in TSHARK_WS_FIELDS:
                    cmd += ["-e", f]
                b.run_tool("tshark_app", lambda: cmd)
        b.finish()
    return report(b)


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return out.splitlines()[0] if out else "unknown"


def report(b: Bench) -> dict:
    """The JSON document: machine, capture, per-tool numbers, ratios and targets."""
    res = b.results
    pf = res.get("pcapflow")
    ratios: dict[str, float] = {}
    if pf and pf.ok:
        for name, peer in (("tshark", "tshark"), ("dpkt", "dpkt"), ("cat", "cat"),
                           ("tshark_app", "tshark_app")):
            base = res["pcapflow_app"] if name == "tshark_app" and "pcapflow_app" in res else pf
            if peer in res and res[peer].ok and base.ok:
                ratios[f"pcapflow_vs_{name}"] = res[peer].best_s / base.best_s
                # CPU-time ratio: steadier than wall time when others share the machine
                ratios[f"pcapflow_vs_{name}_cpu"] = _best_cpu(res[peer]) / _best_cpu(base)
        for dflt in ("pcapflow_default", "pcapflow_default_1w",
                     "other_default_1w"):  # --default (--compare)
            for peer in ("tshark", "dpkt"):
                if dflt in res and res[dflt].ok and peer in res and res[peer].ok:
                    ratios[f"{dflt}_vs_{peer}"] = res[peer].best_s / res[dflt].best_s
                    ratios[f"{dflt}_vs_{peer}_cpu"] = _best_cpu(res[peer]) / _best_cpu(
                        res[dflt])
                    ratios[f"{dflt}_vs_{peer}_cpu_median"] = (
                        res[peer].median_cpu_s / max(res[dflt].median_cpu_s, 1e-9))
    # --app: WebSocket messages per second of median CPU time, and median-CPU ratios to
    # tshark -Y websocket (the figures; the best-wall ratios above stay as they were)
    app_messages: dict[str, float] = {}
    app_ratios: dict[str, float] = {}
    for name in ("pcapflow_app", "pcapflow_app_1w", "other_app_1w", "tshark_app"):
        t = res.get(name)
        if t is not None and t.ok and b.messages:
            app_messages[name] = b.messages / max(t.median_cpu_s, 1e-9)
            tsh = res.get("tshark_app")
            if name != "tshark_app" and tsh is not None and tsh.ok:
                app_ratios[f"{name}_vs_tshark_app_cpu_median"] = (
                    tsh.median_cpu_s / max(t.median_cpu_s, 1e-9))
                app_ratios[f"{name}_vs_tshark_app_wall_best"] = tsh.best_s / max(t.best_s,
                                                                                 1e-9)
    rss = max((r.peak_rss_mb for k, r in res.items() if k.startswith("pcapflow")), default=0)
    targets = {
        "tcp_only_pkts_per_s>=1.5M": _target(pf.pkts_per_s if pf else None, TARGET_PPS),
        "vs_tshark>=20x": _target(ratios.get("pcapflow_vs_tshark"), TARGET_VS_TSHARK),
        "vs_dpkt>=10x": _target(ratios.get("pcapflow_vs_dpkt"), TARGET_VS_DPKT),
        "app_vs_tshark_app>=10x": _target(ratios.get("pcapflow_vs_tshark_app", app_ratios.get(
            "pcapflow_app_vs_tshark_app_wall_best")), TARGET_APP_VS_TSHARK),
        "peak_rss<1GiB_on_2GB": (
            _target(TARGET_RSS_BYTES / (rss * 1024 * 1024) if rss else None, 1.0)
            if b.size >= RSS_TARGET_MIN_FILE else "not judged (capture < 1.5 GB)"),
    }
    return {
        "capture": b.capture, "bytes": b.size, "packets": b.packets, "repeat": b.repeat,
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "tshark": _tool_version(["tshark", "--version"]),
            "dpkt": _module_version("dpkt"), "pcapflow": _module_version("pcapflow"),
        },
        "messages": b.messages,
        "tools": {k: asdict(v) for k, v in res.items()},
        "ratios": ratios,
        "app_messages_per_cpu_s": app_messages,
        "app_ratios": app_ratios,
        "targets": targets,
    }


def _best_cpu(t: ToolResult) -> float:
    return max(min(t.runs, key=lambda r: r.wall_s).cpu_s, 1e-9)


def _module_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return "unknown"


def _target(value: float | None, goal: float) -> str:
    if value is None:
        return "not measured"
    return f"{'met' if value >= goal else 'NOT met'} ({value:,.2f} vs {goal:,.2f})"


def print_table(doc: dict) -> None:
    print(f"capture {doc['capture']}: {doc['packets']:,} packets, {doc['bytes'] / 1e6:,.1f} MB, "
          f"best of {doc['repeat']}, {doc['machine']['cpus']} CPUs")
    pf = doc["tools"].get("pcapflow", {})
    head = (f"{'tool':<20}{'best s':>9}{'cpu s':>8}{'med cpu':>9}{'pkt/s':>13}{'MB/s':>9}"
            f"{'peak RSS MB':>13}{'pcapflow x':>12}{'load':>6}")
    print(head)
    print("-" * len(head))
    for name, t in doc["tools"].items():
        if not t["ok"]:
            print(f"{name:<20} FAILED {t['note']}")
            continue
        base = (doc["tools"].get("pcapflow_app", pf)
                if name in ("tshark_app", "pcapflow_app_1w", "other_app_1w") else pf)
        x = t["best_s"] / base["best_s"] if base.get("best_s") else 0
        best = min(t["runs"], key=lambda r: r["wall_s"])
        print(f"{name:<20}{t['best_s']:>9.3f}{best['cpu_s']:>8.2f}{t['median_cpu_s']:>9.2f}"
              f"{t['pkts_per_s']:>13,.0f}"
              f"{t['mb_per_s']:>9.1f}{t['peak_rss_mb']:>13.0f}{x:>11.2f}x"
              f"{best['load_before']:>6.1f}")
    api = doc["tools"].get("pcapflow_api", {}).get("extra", {}).get("in_process_s")
    if api and doc["packets"]:
        print(f"pcapflow API in-process (no interpreter start/imports): {api:.3f} s, "
              f"{doc['packets'] / api:,.0f} pkt/s, {doc['bytes'] / 1e6 / api:,.1f} MB/s")
    for k, v in doc["ratios"].items():
        if k.startswith(("pcapflow_default", "other_default")) and not k.endswith(
                ("_cpu", "_cpu_median")):
            print(f"{k}: {v:.2f}x by wall, {doc['ratios'][k + '_cpu']:.2f}x by CPU time, "
                  f"{doc['ratios'][k + '_cpu_median']:.2f}x by median CPU time")
    cpu = {k[12:-4]: v for k, v in doc["ratios"].items()
           if k.endswith("_cpu") and not k.startswith(("pcapflow_default", "other_default"))}
    if cpu:
        print("pcapflow speedup by CPU time: " + ", ".join(f"vs {k} {v:.2f}x"
                                                          for k, v in cpu.items()))
    for k, v in doc.get("app_messages_per_cpu_s", {}).items():
        r = doc["app_ratios"].get(f"{k}_vs_tshark_app_cpu_median")
        print(f"{k}: {v:,.0f} WebSocket messages per CPU second (median)"
              + (f", {r:.2f}x tshark -Y websocket by median CPU, "
                 f"{doc['app_ratios'][k + '_vs_tshark_app_wall_best']:.2f}x by best wall"
                 if r else ""))
    for k, v in doc["targets"].items():
        print(f"target {k}: {v}")


def main(argv: list[str] | None = None) -> int:
    # The children run as an installed pcapflow does, with its bytecode cached: under
    # PYTHONDONTWRITEBYTECODE an editable checkout's ~150 modules are compiled from
    # source in every run (~0.2-0.3 s of CPU that no `pip install`ed copy pays).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--tshark", action="store_true", help="run the tshark peer")
    ap.add_argument("--dpkt", action="store_true", help="run the dpkt peer")
    ap.add_argument("--app", action="store_true",
                    help="also the application-layer ingest (use --keylog for TLS)")
    ap.add_argument("--keylog", help="NSS key log for --app")
    ap.add_argument("--default", action="store_true",
                    help="also the default ingest (no --tcp-only), with --workers auto and 1")
    ap.add_argument("--compare", metavar="PCAPFLOW",
                    help="with --default or --app: another install's pcapflow script (e.g. "
                    "the code before a change), its ingest with --workers 1 in the same run")
    ap.add_argument("--app-only", action="store_true",
                    help="with --app: skip the TCP-layer tools and peers")
    ap.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    ap.add_argument("--no-cold", action="store_true",
                    help="skip the run with an empty Numba cache")
    ap.add_argument("--workdir", default=None, help="where datasets go (default: $TMPDIR)")
    ap.add_argument("--json", help="write every number here")
    a = ap.parse_args(argv)
    doc = run_all(a)
    print_table(doc)
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if all(t["ok"] for t in doc["tools"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
