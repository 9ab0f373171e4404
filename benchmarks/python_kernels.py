"""What a small ingest's compiled kernels would cost run as plain Python (issue 20: Numba
out of a small ingest's process).

How this works: one in-process ``pcapflow ingest`` of a capture (default: a ~1 MB plain
TCP one, ``make_capture.py --packets 5400``) with every pcapflow Numba dispatcher
wrapped to keep a copy of its arguments; afterwards, each call is run again twice on
fresh copies: compiled (the dispatcher, loaded from Numba's cache) and as the Python
function under ``@njit`` (its ``py_func``, with the kernels it calls and the prefetch
intrinsic made Python too), CPU time (``time.process_time``) around each. Reported per
kernel: calls, the Python and the compiled seconds, and whether both gave equal
outputs (arrays by dtype and value; scalars by value, then also by type: Python
returns NumPy scalars where Numba returns ints). Compare the Python total with what
Numba costs a process (``imports_without_numba.py``, plus ``ingest_phases.py``'s
``kernels``): that is the crossover of running the kernels uncompiled.

    python benchmarks/python_kernels.py [--packets 5400] [--capture FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _equal(x: Any, y: Any, types: bool) -> bool:
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        return (isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and x.dtype == y.dtype
                and x.shape == y.shape and bool(np.array_equal(x, y)))
    if isinstance(x, tuple) or isinstance(y, tuple):
        return (isinstance(x, tuple) and isinstance(y, tuple) and len(x) == len(y)
                and all(_equal(a, b, types) for a, b in zip(x, y, strict=True)))
    return (not types or type(x) is type(y)) and bool(x == y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=5400)
    ap.add_argument("--capture", type=Path, help="this capture instead of a made one")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="pykernels-"))
    try:
        cap = args.capture
        if cap is None:
            cap = tmp / "small.pcap"
            subprocess.run([sys.executable, str(HERE / "make_capture.py"), "--packets",
                            str(args.packets), "--out", str(cap)], check=True,
                           stdout=subprocess.DEVNULL)
        return _run(cap, tmp / "data")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(cap: Path, data: Path) -> int:
    from numba.core.dispatcher import Dispatcher
    from pcapflow.parsers.jitload import Kernel

    import pcapflow
    import pcapflow.cli

    pcapflow.ingest([str(cap)], data=str(data), workers=1)  # warm: kernels cached
    shutil.rmtree(data)
    modules = [m for n, m in list(sys.modules.items()) if n.startswith("pcapflow") and m]
    calls: list[tuple[Any, tuple]] = []
    wrappers: dict[int, Any] = {}  # id(wrapper) -> its dispatcher
    by_dispatcher: dict[int, Any] = {}

    def wrap(d: Any) -> Any:
        def call(*a: Any) -> Any:
            calls.append((d, copy.deepcopy(a)))
            return d(*a)
        wrappers[id(call)] = d
        return call

    for m in modules:
        for k, v in list(vars(m).items()):
            if isinstance(v, Kernel):  # (a kernel made at its first use: its dispatcher)
                v = v.dispatcher
            if isinstance(v, Dispatcher) and v.py_func.__module__.startswith("pcapflow"):
                if id(v) not in by_dispatcher:
                    by_dispatcher[id(v)] = wrap(v)
                setattr(m, k, by_dispatcher[id(v)])
    pcapflow.ingest([str(cap)], data=str(data), workers=1)
    for m in modules:  # (the wrappers out again)
        for k, v in list(vars(m).items()):
            if id(v) in wrappers:
                setattr(m, k, wrappers[id(v)])
    compiled = []
    for d, a in calls:
        b = copy.deepcopy(a)
        t = time.process_time()
        out = d(*b)
        compiled.append((out, b, time.process_time() - t))
    for m in modules:  # every kernel and intrinsic as Python from here on
        for k, v in list(vars(m).items()):
            if isinstance(v, Dispatcher | Kernel):
                setattr(m, k, v.py_func)
            elif k == "prefetch" and callable(v):
                setattr(m, k, lambda *a: None)
    per: dict[str, list[Any]] = {}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # (uint64 hashes wrap, as compiled)
        for (d, a), (ref, ref_args, t_jit) in zip(calls, compiled, strict=True):
            b = copy.deepcopy(a)
            t = time.process_time()
            out = d.py_func(*b)
            t_py = time.process_time() - t
            name = f"{d.py_func.__module__.removeprefix('pcapflow.')}.{d.py_func.__qualname__}"
            row = per.setdefault(name, [0, 0.0, 0.0, True, True])
            row[0] += 1
            row[1] += t_py
            row[2] += t_jit
            same_args = all(_equal(x, y, False) for x, y in zip(b, ref_args, strict=True))
            row[3] = row[3] and same_args and _equal(out, ref, False)
            row[4] = row[4] and _equal(out, ref, True)
    print(f"{cap.name}: {len(calls)} kernel calls; CPU s (process_time), load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'kernel':44s} {'calls':>6s} {'python':>8s} {'compiled':>9s}  equal  same types")
    for name, (n, py, jit, eq, ty) in sorted(per.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:44s} {n:6d} {py:8.4f} {jit:9.4f}  {eq!s:5s}  {ty}")
    print(f"{'total':44s} {len(calls):6d} {sum(r[1] for r in per.values()):8.4f} "
          f"{sum(r[2] for r in per.values()):9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
