"""Cost of the k-th command of a rotation ingested one file per command, against k.

    python benchmarks/resume_per_file.py /tmp/ws.pcap --keylog /tmp/ws.keylog --parts 16 32 \\
        --json benchmarks/results/resume_per_file.json

Splits the capture with ``editcap -c`` into each number of parts given (as a rotation
would leave it), then, in one warm process, ingests the parts ONE PER CALL
(``ingest_capture(..., resume=True)``, as ``pcapflow watch`` does when each file
closes) and prints each call's CPU seconds, with the matcher's share
(``match_tables``: the SQL families) and the derived tables' (``derive_staged``:
``causes``, ``feed_gaps``, ``alerts``). A call whose cost grows with k re-reads the
set so far; a flat one costs its own file (``pipelines/match_carry.py``,
``pcapflow/feed_carry.py``). Also the single-file ingest of the whole capture, for
the total's overhead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(capture: str, keylog: list[str], parts: int, work: Path) -> dict[str, object]:
    from pcapflow.pipelines.ingest import ingest_capture

    from pcapflow import api, venues, why

    packets = int(subprocess.run(["capinfos", "-Mc", capture], check=True, text=True,
                                 capture_output=True).stdout.split()[-1])
    ftype = subprocess.run(["capinfos", "-Mt", capture], check=True, text=True,
                           capture_output=True).stdout.split()[-1]
    pdir = work / f"parts{parts}"
    pdir.mkdir()
    subprocess.run(["editcap", "-F", ftype, "-c", str(-(-packets // parts)), capture,
                    str(pdir / "rot.pcap")], check=True, capture_output=True)
    files = sorted(str(p) for p in pdir.iterdir())
    spent = {"match": 0.0, "derive": 0.0}
    match, derive = venues.match_tables, why.derive_staged

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def call(*a, **k):  # type: ignore[no-untyped-def]
            t = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                spent[name] += time.process_time() - t
        return call

    venues.match_tables = timed("match", match)  # type: ignore[assignment]
    why.derive_staged = timed("derive", derive)  # type: ignore[assignment]
    try:  # a rotation's matcher (pipelines/match_carry.py), when this pcapflow has it
        from pcapflow.pipelines import match_carry
    except ImportError:
        match_carry = None  # type: ignore[assignment]
    carry_match = match_carry.match if match_carry is not None else None
    if match_carry is not None:
        match_carry.match = timed("match", carry_match)  # type: ignore[assignment]
    app, matcher = api._app_factory(keylog), api._matcher(None)
    data = work / "data"
    try:
        ingest_capture([files[0]], work / "warm", app_layer=app,  # type: ignore[arg-type]
                       matcher=matcher, resume=False)
        t = time.process_time()
        ingest_capture([capture], work / "single", app_layer=app,  # type: ignore[arg-type]
                       matcher=matcher)
        single = time.process_time() - t
        calls = []
        for k, f in enumerate(files):
            spent.update(match=0.0, derive=0.0)
            t = time.process_time()
            ingest_capture([f], data, app_layer=app, matcher=matcher,  # type: ignore[arg-type]
                           resume=True)
            cpu = time.process_time() - t
            calls.append({"k": k, "cpu_s": cpu, **{f"{n}_s": v for n, v in spent.items()}})
            print(f"{parts} parts: call {k:3d}: {cpu:.3f} s CPU (match {spent['match']:.3f}, "
                  f"derived tables {spent['derive']:.3f})", flush=True)
    finally:
        venues.match_tables, why.derive_staged = match, derive  # type: ignore[assignment]
        if match_carry is not None:
            match_carry.match = carry_match  # type: ignore[assignment]
    total = sum(float(c["cpu_s"]) for c in calls)  # type: ignore[arg-type]
    print(f"{parts} parts: single file {single:.2f} s CPU; one per call {total:.2f} s CPU "
          f"({100 * (total / single - 1):+.0f}%)", flush=True)
    return {"parts": parts, "single_cpu_s": single, "total_cpu_s": total, "calls": calls}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--parts", type=int, nargs="+", default=[16])
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if shutil.which("editcap") is None:
        print("editcap not found (Debian package: wireshark-common / tshark)", file=sys.stderr)
        return 2
    out = []
    for n in a.parts:
        work = Path(tempfile.mkdtemp(prefix="pcapflow-perfile-"))
        try:
            out.append(run(a.capture, a.keylog, n, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"capture": a.capture, "runs": out}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
