"""What Numba costs the imports of a small ``pcapflow ingest``: its libraries with and without it.

How this works (issue 20, the question of kernels compiled ahead of time): one
``pcapflow ingest`` of a ~1 MB plain TCP capture (``make_capture.py --packets 5400``)
runs under ``python -X importtime`` and reports, as it exits, every module it had
loaded. Of those, pcapflow's own are left out (they import Numba at their top), and
two lists are kept, in load order: **with** (every other module) and **without**
(less ``numba``, ``llvmlite`` and every module first loaded under them, except the
standard-library ones pcapflow's own code imports too: ``json``, ``hashlib``...).
Fresh interpreters then import each list, alternating, ``--repeat`` times; the
difference of the medians of their CPU time (user + system) is what an ingest
whose kernels came from an extension module, with Numba never imported, would
save on imports (the kernels' first calls, ``ingest_phases.py``'s ``kernels``,
come on top). The children run without ``PYTHONDONTWRITEBYTECODE``.

    python benchmarks/imports_without_numba.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

RECORD = r"""
import json, os, sys
out = sys.argv[1]
_exit = os._exit
def done(code=0):
    with open(out, "w") as fh:
        json.dump(list(sys.modules), fh)
    _exit(0)
os._exit = done
sys.argv = ["pcapflow", *json.loads(sys.argv[2])]
from pcapflow._entry import main
main()
"""

IMPORT = r"""
import importlib, json, resource, sys
for name in json.loads(sys.argv[1]):
    if name not in sys.modules:
        try:
            importlib.import_module(name)
        except Exception:
            pass
r = resource.getrusage(resource.RUSAGE_SELF)
print(r.ru_utime + r.ru_stime)
"""

SHARED = ("json", "hashlib", "tempfile", "logging", "base64", "csv", "random", "bisect",
          "html", "hmac", "socket", "importlib.resources", "array", "string", "_blake2", "_sha512")
"""Standard-library modules Numba loads first that pcapflow's own code imports too."""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def lists(work: Path, cap: Path) -> tuple[list[str], list[str]]:
    """(with, without) Numba: the modules of one ingest, pcapflow's own left out."""
    out = work / "modules.json"
    args = ["ingest", str(cap), "--data", str(work / "data")]
    subprocess.run([sys.executable, "-c", RECORD, str(out), json.dumps(args)], check=True,
                   env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work)
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", RECORD, str(work / "m2.json"),
                        json.dumps(["ingest", str(cap), "--data", str(work / "data2")])],
                       env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       check=True, cwd=work)
    tree = [(len(m.group(1)), m.group(2)) for m in
            re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)$", p.stderr, re.M)]
    under = set()  # first loaded beneath numba/llvmlite (importtime: children first)
    for i, (indent, name) in enumerate(tree):
        for later_indent, later in tree[i + 1:]:
            if later_indent < indent:
                indent = later_indent
                if later.partition(".")[0] in ("numba", "llvmlite"):
                    under.add(name)
                    break
    # (the second ingest's list: the first may compile kernels, when the cache is cold,
    # and then loads Numba's compiler, which a warm ingest does not)
    mods = [m for m in json.loads((work / "m2.json").read_text())
            if m.partition(".")[0] not in ("pcapflow", "__main__") and "editable" not in m]
    without = [m for m in mods if m.partition(".")[0] not in ("numba", "llvmlite")
               and (m not in under or any(m == s or m.startswith(s + ".") or m == "_" + s
                                          for s in SHARED))]
    return mods, without


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--capture", help="the capture to ingest (default: made, ~1 MB)")
    ap.add_argument("--json", help="write the lists and every run here")
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="pcapflow-nonumba-"))
    cap = Path(a.capture).resolve() if a.capture else work / "tcp_1mb.pcap"
    if not a.capture:
        subprocess.run([sys.executable, str(HERE / "make_capture.py"), "--packets", "5400",
                        "--out", str(cap)], check=True, stdout=subprocess.DEVNULL)
    with_numba, without = lists(work, cap)
    runs: dict[str, list[float]] = {"with": [], "without": []}
    loads = []
    for _ in range(a.repeat):
        loads.append(os.getloadavg()[0])
        for key, mods in (("with", with_numba), ("without", without)):
            p = subprocess.run([sys.executable, "-c", IMPORT, json.dumps(mods)], env=_env(),
                               capture_output=True, text=True, check=True)
            runs[key].append(float(p.stdout.split()[-1]))
    w, wo = statistics.median(runs["with"]), statistics.median(runs["without"])
    print(f"{a.repeat} runs each, medians of CPU s; load average {min(loads):.1f}-"
          f"{max(loads):.1f} on {os.cpu_count()} CPUs")
    print(f"with Numba    {len(with_numba):4d} modules  {w:.3f}")
    print(f"without Numba {len(without):4d} modules  {wo:.3f}")
    print(f"Numba's share {len(with_numba) - len(without):4d} modules  {w - wo:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"loads": loads, "runs": runs, "with": with_numba,
                                            "without": without}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
