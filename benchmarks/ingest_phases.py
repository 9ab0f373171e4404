"""Where the CPU of a small ``pcapflow ingest`` goes, phase by phase (issue 20, start-up).

How this works: each run is a fresh interpreter that runs the console script's own
entry (``pcapflow._entry.main``) on a ~1 MB plain TCP capture (``make_capture.py
--packets 5400``, as ``startup.py``), with every CPU second attributed to exactly one
phase: the innermost of those running at the time. Phases are marked by wrapping
functions (``time.process_time``, every thread of the process: the Parquet writer's
and the SHA-256 thread's CPU lands in the phase running meanwhile):

- ``interpreter``: the CPU the process had used when this script's first line ran
  (Python's own start, ``site``);
- ``import <group>``: the body of every module imported, by top-level package (a
  module's own time, not the modules it imports: ``importlib._bootstrap._load_unlocked``);
- ``kernels``: Numba dispatchers' first calls (cache index read, unpickling, linking
  the cached object code, Numba's runtime), and since session 19 the making of a
  kernel's dispatcher at its first use (``jitload.Kernel``);
- ``packets``: the read/decode/TCP/application-layer loop (``driver._run``, less what
  is below);
- ``matcher``, ``derive`` (``why.derive_staged``: causes, feed tables, alerts),
  ``commit`` (``Staging.commit``), ``summary`` (``cli._print_summary``);
- ``cli``: everything else (argument parsing, planning, the API around the phases).

A phase that a version of the code does not have (a function renamed) is left out.
``--python`` runs other interpreters (say, an install of the code before a change) in
the same rounds, alternating; medians of each phase are reported, with the load. The
children run without ``PYTHONDONTWRITEBYTECODE``, as ``startup.py``'s.

    python benchmarks/ingest_phases.py --repeat 7 --python /work/venv-main/bin/python
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
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = r"""
import resource, sys, time
_r = resource.getrusage(resource.RUSAGE_SELF)
BEFORE = _r.ru_utime + _r.ru_stime
import importlib, importlib._bootstrap as _b, json, os

acc = {}
stack = [["cli", time.process_time()]]


def _enter(label):
    now = time.process_time()
    top = stack[-1]
    acc[top[0]] = acc.get(top[0], 0.0) + now - top[1]
    stack.append([label, now])


def _leave():
    now = time.process_time()
    label, t = stack.pop()
    acc[label] = acc.get(label, 0.0) + now - t
    stack[-1][1] = now


GROUPS = {"llvmlite": "numba", "_duckdb": "duckdb", "click": "typer", "rich": "typer",
          "shellingham": "typer"}


def _group(name):
    top = name.partition(".")[0]
    if top in GROUPS:
        return GROUPS[top]
    if top in ("pcapflow", "numpy", "numba", "pyarrow", "duckdb", "typer", "cryptography"):
        return top
    return "stdlib+other" if top in sys.stdlib_module_names or top.startswith("_") else "other"


WRAPS = {  # module -> (function path, phase), wrapped as soon as the module is loaded
    "numba.core.dispatcher": [("_DispatcherBase._compile_for_args", "kernels")],
    # (a kernel's dispatcher made at its first use: session 19)
    "pcapflow.parsers.jitload": [("Kernel._make", "kernels")],
    # (the kernels compiled at install: their extension's import and check, session 22)
    "pcapflow.parsers.aot": [("_load", "kernels")],
    "pcapflow.pipelines.ingest.driver": [("_run", "packets")],
    "pcapflow.venues": [("IngestMatcher.__call__", "matcher")],
    "pcapflow.why": [("derive_staged", "derive")],
    "pcapflow.pipelines.store": [("Staging.commit", "commit")],
    "pcapflow.cli": [("_print_summary", "summary")],
}
FINE = {  # ``--fine``: the packets phase and the end of an ingest split further
    "pcapflow.parsers.capture.capset": [("CaptureSet.__next__", "read")],
    "pcapflow.parsers.decode": [("decode_chunk", "decode")],
    "pcapflow.parsers.tcp.analysis": [("FlowTracker.process", "tcp"),
                                      ("FlowTracker.finish", "tcp end")],
    "pcapflow.pipelines.ingest.packet_rows": [("tcp_event_rows", "tcp rows"),
                                              ("decode_anomaly_rows", "tcp rows")],
    "pcapflow.pipelines.ingest.app_layer": [("AppLayer.process", "app"),
                                            ("AppLayer.retire", "app end"),
                                            ("AppLayer.finish", "app end")],
    "pcapflow.pipelines.ingest.flow_rows": [("FlowRows.add", "flows"),
                                            ("FlowRows.finish", "flows")],
    "pcapflow.pipelines.ingest.driver": [("_keep_state", "resume state"),
                                         ("_capture_rows", "captures")],
    "pcapflow.pipelines.store": [("Staging.close_writers", "writers")],
    "pcapflow.api": [("_app_factory", "set-up"), ("_matcher", "set-up")],
}
if json.loads(sys.argv[3]):
    for _m, _w in FINE.items():
        WRAPS.setdefault(_m, []).extend(_w)


def wrap(owner, path, label):
    *outer, name = path.split(".")
    try:
        for part in outer:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
    except AttributeError:
        return

    def w(*a, **k):
        _enter(label)
        try:
            return fn(*a, **k)
        finally:
            _leave()

    setattr(owner, name, w)


_load = _b._load_unlocked


def _load_unlocked(spec):
    aot = spec.name == "pcapflow.parsers._kernels_aot"  # (counted with the kernels)
    _enter("kernels" if aot else "import " + _group(spec.name))
    try:
        module = _load(spec)
    finally:
        _leave()
    for path, label in WRAPS.pop(spec.name, ()):
        wrap(module, path, label)
    return module


_b._load_unlocked = _load_unlocked
FD = int(sys.argv[2])
sys.argv = ["pcapflow", *json.loads(sys.argv[1])]
_exit = os._exit


def done(code=0):
    _enter("cli")
    sys.stdout.flush()
    r = resource.getrusage(resource.RUSAGE_SELF)
    out = {"interpreter": BEFORE, **acc, "total": r.ru_utime + r.ru_stime, "code": code}
    os.write(FD, json.dumps(out).encode())
    _exit(0)


os._exit = done
from pcapflow._entry import main

main()
"""


def run_once(python: str, args: list[str], fine: bool = False) -> dict[str, float]:
    r, w = os.pipe()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    p = subprocess.Popen(
        [python, "-c", CHILD, json.dumps(args), str(w), json.dumps(fine)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        pass_fds=(w,),
        # (not the caller's directory: with ``-c``, a pcapflow checkout there would be
        # the one imported, whichever interpreter runs)
        cwd=tempfile.gettempdir(),
    )
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    err = p.stderr.read().decode(errors="replace") if p.stderr else ""
    p.wait()
    if not data:
        raise SystemExit(f"{python}: no result: {err.strip()[-800:]}")
    got = json.loads(data)
    if got.pop("code") not in (0, None):
        raise SystemExit(f"{python}: exit {got}: {err.strip()[-800:]}")
    return got


ORDER = (
    "interpreter",
    "import numpy",
    "import numba",
    "import pyarrow",
    "import duckdb",
    "import typer",
    "import cryptography",
    "import pcapflow",
    "import stdlib+other",
    "import other",
    "kernels",
    "set-up",
    "packets",
    "read",
    "decode",
    "tcp",
    "tcp rows",
    "app",
    "app end",
    "tcp end",
    "flows",
    "resume state",
    "captures",
    "writers",
    "matcher",
    "derive",
    "commit",
    "summary",
    "cli",
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument(
        "--python",
        action="append",
        default=[],
        help="another interpreter (its pcapflow) run in the same rounds",
    )
    ap.add_argument("--capture", help="the capture to ingest (default: made, ~1 MB)")
    ap.add_argument("--json", help="write every run here")
    ap.add_argument("--fine", action="store_true",
                    help="split the packets phase and the end further (FINE: read, decode, "
                         "tcp, app, flows, resume state, ...)")
    ap.add_argument("--ingest-args", default="",
                    help="more arguments for the ingest, e.g. '--workers 1'")
    a = ap.parse_args(argv)
    pythons = [sys.executable, *a.python]
    work = Path(tempfile.mkdtemp(prefix="pcapflow-phases-"))
    cap = Path(a.capture).resolve() if a.capture else work / "tcp_1mb.pcap"
    if not a.capture:
        subprocess.run(
            [sys.executable, str(HERE / "make_capture.py"), "--packets", "5400", "--out", str(cap)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    n = 0

    def args() -> list[str]:
        nonlocal n
        n += 1
        return ["ingest", str(cap), *a.ingest_args.split(), "--data", str(work / f"d{n}")]

    for py in pythons:  # each one's Numba cache warm
        run_once(py, args())
    runs: dict[str, list[dict[str, float]]] = {py: [] for py in pythons}
    loads = []
    for _ in range(a.repeat):
        loads.append(os.getloadavg()[0])
        for py in pythons:
            runs[py].append(run_once(py, args(), a.fine))
            shutil.rmtree(work / f"d{n}", ignore_errors=True)
    print(
        f"{a.repeat} runs each, medians of CPU s; load average "
        f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
    )
    keys = [k for k in ORDER if any(k in r for rs in runs.values() for r in rs)]
    keys += sorted({k for rs in runs.values() for r in rs for k in r} - {*keys, "total"})
    names = [f"[{i}]" for i in range(len(pythons))]
    for i, py in enumerate(pythons):
        print(f"  {names[i]} {py}")
    print(f"{'phase':<24}" + "".join(f"{x:>10}" for x in names))
    for k in [*keys, "total"]:
        cells = [statistics.median(r.get(k, 0.0) for r in runs[py]) for py in pythons]
        print(f"{k:<24}" + "".join(f"{c:>10.3f}" for c in cells))
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"repeat": a.repeat, "loads": loads, "pythons": pythons, "runs": runs}, indent=1
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
