"""One Numba kernel as it is, against a copy compiled without reference counting.

How this works: the module holding ``--entry`` is copied (to ``--out``) with the
kernels named by ``--nrt-free`` decorated ``_nrt=False``, and imported beside the
original. A capture is ingested once (warm: imports, cached kernels), then again with
the entry kernel replaced, wherever a module holds it, by a wrapper that copies each
call's arguments and runs the original and the copy on fresh copies of them,
``--rounds`` times, alternating, each timed by ``process_time``; round 0's outputs and
arguments (the kernels write into them) are compared. The first round includes the
copy's compile. Prints each round's sum over the calls and whether every output was
the same.

    python benchmarks/kernel_nrt_ab.py ws1m_c.pcap --keylog ws1m_c.keylog \
        --entry pcapflow.parsers.tcp.analysis._kernel --nrt-free _analyze,_timestamps,_ts_clock
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
import tempfile
import time
from typing import Any

import numpy as np


def _same(x: Any, y: Any) -> bool:
    if isinstance(x, np.ndarray):
        return bool(np.array_equal(x, y, equal_nan=x.dtype.kind == "f"))
    if isinstance(x, tuple | list):
        return len(x) == len(y) and all(_same(p, q) for p, q in zip(x, y, strict=True))
    return bool(x == y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--entry", required=True, help="module.kernel called from Python")
    ap.add_argument("--nrt-free", required=True, help="kernels of that module, comma-separated")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--out", default=tempfile.gettempdir() + "/pcapflow_nrt_variant.py")
    a = ap.parse_args(argv)
    import pcapflow

    modname, entry = a.entry.rsplit(".", 1)
    mod = importlib.import_module(modname)
    with open(str(mod.__file__)) as f:
        src = f.read()
    for name in a.nrt_free.split(","):
        pat = re.compile(r"@kernel\(([^)]*)\)\n(def " + re.escape(name) + r"\()")
        src, k = pat.subn(lambda m: f"@kernel({m.group(1)}, _nrt=False)\n{m.group(2)}", src)
        if k != 1:
            raise SystemExit(f"no @kernel(...) def {name}( in {modname}")
    with open(a.out, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(modname.rsplit(".", 1)[0] + "._nrt_ab", a.out)
    assert spec is not None and spec.loader is not None
    var = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = var
    spec.loader.exec_module(var)
    orig = getattr(mod, entry)
    orig = getattr(orig, "dispatcher", orig)
    other = getattr(var, entry)
    times: dict[str, list[float]] = {}
    same = [True]

    def copies(args: tuple[Any, ...]) -> list[Any]:
        return [x.copy() if isinstance(x, np.ndarray) else x for x in args]

    def wrapper(*args: Any) -> Any:
        base = copies(args)
        first = {}
        for r in range(a.rounds):
            for label, k in (("as is", orig), ("nrt-free", other)):
                mine = copies(tuple(base))
                t = time.process_time()
                out = k(*mine)
                times.setdefault(f"{label} {r}", []).append(time.process_time() - t)
                if r == 0:
                    first[label] = (out, mine)
        if not _same(first["as is"], first["nrt-free"]):
            same[0] = False
        return orig(*args)

    with tempfile.TemporaryDirectory(prefix="pcapflow-nrt-ab-") as d:
        pcapflow.ingest([a.capture], keylog=a.keylog, data=d + "/warm", workers=1)
        holders = [m for m in list(sys.modules.values())
                   if getattr(m, "__name__", "").startswith("pcapflow")
                   and getattr(getattr(m, entry, None), "py_func", 0) is orig.py_func]
        for m in holders:
            setattr(m, entry, wrapper)
        try:
            pcapflow.ingest([a.capture], keylog=a.keylog, data=d + "/timed", workers=1)
        finally:
            for m in holders:
                setattr(m, entry, orig)
    calls = len(times.get("as is 0", []))
    print(f"{a.entry} with {a.nrt_free} _nrt=False: {calls} calls, same outputs: {same[0]}")
    for r in range(a.rounds):
        print(f"  round {r}: as is {sum(times[f'as is {r}']):.4f} s, "
              f"nrt-free {sum(times[f'nrt-free {r}']):.4f} s" + (" (compile)" if r == 0 else ""))
    return 0 if same[0] else 1


if __name__ == "__main__":
    sys.exit(main())
