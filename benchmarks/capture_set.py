"""Capture-set ingest against single-file ingest of the same packets.

    python benchmarks/capture_set.py /tmp/ws.pcap --keylog /tmp/ws.keylog --parts 4 8 \\
        --repeat 3 --json benchmarks/results/capture_set.json

Splits the capture with ``editcap -c`` (as a rotation would leave it, same file type) into each
number of parts given, then times ``pcapflow ingest`` on the single file and on
the parts (one command, one capture set), alternating runs so that both see the
same machine state; best of ``--repeat`` each, with ``--workers 1`` (one process:
the reader's own cost) and the default ``--workers auto``. Each run writes a
fresh dataset; the Numba cache is warmed by one untimed run first. The set's
tables are checked to hold as many rows as the single file's.

``--resume`` (with ``--inprocess``) also times the parts ingested ONE PER CALL, as a
rotation is when each file is ingested as it closes (``pcapflow watch``): each call
resumes the connections the previous file left open (``pipelines.ingest.resume``);
the CPU seconds of all the calls are summed, and the tables checked equal in size;
and, for the cost of a call itself whatever its file (the matcher's start, one file
per table, the commit), an ingest of a file without packets: the overhead "beyond the
commands" is that of resuming (``(resumed - parts * empty) / (single - empty)``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _ingest(files: list[str], keylog: list[str], data: Path, workers: str
            ) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``pcapflow ingest``."""
    shutil.rmtree(data, ignore_errors=True)
    cmd = [sys.executable, "-m", "pcapflow.cli", "ingest", *files, "--data", str(data),
           "--workers", workers]
    for k in keylog:
        cmd += ["--keylog", k]
    c0, t0 = _cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, _cpu() - c0


def _rows(data: Path) -> dict[str, int]:
    con = duckdb.connect()
    out = {}
    for table in ("flows", "tls_records", "ws_messages", "http_messages", "latency"):
        files = sorted(str(p) for p in (data / table).glob("capture_id=*/*.parquet"))
        if files:
            out[table] = con.execute(f"SELECT count(*) FROM read_parquet({files!r})").fetchone()[0]
    return out


def _inprocess(capture: str, parts: list[str], keylog: list[str], data: Path,
               repeat: int, resume: bool = False) -> dict[str, object]:
    """Best CPU seconds of ``ingest_capture`` on the file and on its parts (one process);
    ``resume``: and on the parts one per call, resuming."""
    from pcapflow.pipelines.ingest import ingest_capture

    from pcapflow import api

    app, matcher = api._app_factory(keylog), api._matcher(None)

    def once(paths: list[str], resume: bool = False) -> float:
        shutil.rmtree(data, ignore_errors=True)
        c0 = time.process_time()
        ingest_capture(paths, data, app_layer=app, matcher=matcher,  # type: ignore[arg-type]
                       resume=resume)
        return time.process_time() - c0

    def per_call(resume: bool = True) -> tuple[float, list[float]]:
        shutil.rmtree(data, ignore_errors=True)
        calls = []
        for p in parts:
            c0 = time.process_time()
            ingest_capture([p], data, app_layer=app, matcher=matcher,  # type: ignore[arg-type]
                           resume=resume)
            calls.append(time.process_time() - c0)
        return sum(calls), calls

    def fixed() -> float:
        """CPU seconds of ingesting a file without packets: what a command costs
        whatever its file (the matcher's start, the tables' files, the commit)."""
        empty = data.parent / "empty_00000.pcap"
        with open(capture, "rb") as fh:
            empty.write_bytes(fh.read(24))  # a pcap file header (pcap captures only)
        shutil.rmtree(data, ignore_errors=True)
        c0 = time.process_time()
        ingest_capture([str(empty)], data, app_layer=app, matcher=matcher)  # type: ignore
        return time.process_time() - c0

    once([capture])  # warm: Numba kernels loaded, page cache
    one, many, resumed, calls, separate, keeping = [], [], [], [], [], []
    for _ in range(repeat):
        one.append(once([capture]))
        single_rows = _rows(data)
        many.append(once(parts))
        if resume:
            total, each = per_call()
            assert _rows(data) == single_rows, (_rows(data), single_rows)
            resumed.append(total)
            calls.append(each)
            separate.append(fixed())
            keeping.append(once(parts, resume=True))
    out: dict[str, object] = {
        "single_cpu_s": min(one), "set_cpu_s": min(many), "single_all": one,
        "set_all": many, "cpu_overhead_pct": 100 * (min(many) / min(one) - 1)}
    if resume:
        best = resumed.index(min(resumed))
        out.update(resume_cpu_s=min(resumed), resume_all=resumed, resume_calls=calls[best],
                   resume_overhead_pct=100 * (min(resumed) / min(one) - 1),
                   set_keeping_state_cpu_s=min(keeping),
                   keeping_overhead_pct=100 * (min(keeping) / min(one) - 1),
                   command_cpu_s=min(separate),
                   resume_beyond_commands_pct=100 * (
                       (min(resumed) - len(parts) * min(separate))
                       / (min(one) - min(separate)) - 1))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("capture")
    ap.add_argument("--keylog", action="append", default=[])
    ap.add_argument("--parts", type=int, nargs="+", default=[4])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", nargs="+", default=["1", "auto"])
    ap.add_argument("--inprocess", action="store_true",
                    help="also time ingest_capture in this process (CPU time)")
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI runs")
    ap.add_argument("--resume", action="store_true",
                    help="with --inprocess: also the parts one per call, resuming")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    editcap = shutil.which("editcap")
    if editcap is None:
        print("editcap not found (Debian package: wireshark-common / tshark)", file=sys.stderr)
        return 2
    packets = int(subprocess.run(["capinfos", "-Mc", a.capture], check=True, text=True,
                                 capture_output=True).stdout.split()[-1])
    ftype = subprocess.run(["capinfos", "-Mt", a.capture], check=True, text=True,
                           capture_output=True).stdout.split()[-1]
    work = Path(tempfile.mkdtemp(prefix="pcapflow-capset-"))
    result: dict[str, object] = {"capture": a.capture, "packets": packets,
                                 "size": os.path.getsize(a.capture), "runs": []}
    try:
        data = work / "data"
        _ingest([a.capture], a.keylog, data, "1")  # warm the Numba cache and the page cache
        single_rows = _rows(data)
        for n in a.parts:
            parts_dir = work / f"parts{n}"
            parts_dir.mkdir()
            # the parts keep the file type (editcap writes pcapng unless told)
            subprocess.run([editcap, "-F", ftype, "-c", str(-(-packets // n)), a.capture,
                            str(parts_dir / "rot.pcap")], check=True, capture_output=True)
            parts = sorted(str(p) for p in parts_dir.iterdir())
            _ingest(parts, a.keylog, data, "1")
            assert _rows(data) == single_rows, (_rows(data), single_rows)
            if a.inprocess:
                row = {"parts": len(parts), "workers": "in-process",
                       **_inprocess(a.capture, parts, a.keylog, data, a.repeat, a.resume)}
                result["runs"].append(row)  # type: ignore[union-attr]
                print(f"{len(parts)} parts, in one process: single {row['single_cpu_s']:.2f} s "
                      f"CPU, set {row['set_cpu_s']:.2f} s CPU: overhead "
                      f"{row['cpu_overhead_pct']:+.1f}%")
                if a.resume:
                    print(f"  the set in one call, keeping its state for the next file: "
                          f"{row['set_keeping_state_cpu_s']:.2f} s CPU: overhead "
                          f"{row['keeping_overhead_pct']:+.1f}%")
                    calls = ", ".join(f"{c:.2f}" for c in row["resume_calls"])  # type: ignore
                    print(f"  one part per call, resuming: {row['resume_cpu_s']:.2f} s CPU "
                          f"({calls}): overhead {row['resume_overhead_pct']:+.1f}%; a command "
                          f"on a file without packets costs {row['command_cpu_s']:.2f} s CPU; "
                          f"beyond that per call: {row['resume_beyond_commands_pct']:+.1f}%")
            for w in [] if a.no_cli else a.workers:
                one, many = [], []
                for _ in range(a.repeat):
                    one.append(_ingest([a.capture], a.keylog, data, w))
                    many.append(_ingest(parts, a.keylog, data, w))
                wall1, wall2 = min(t for t, _ in one), min(t for t, _ in many)
                cpu1, cpu2 = min(c for _, c in one), min(c for _, c in many)
                row = {"parts": len(parts), "workers": w, "single_s": wall1, "set_s": wall2,
                       "single_cpu_s": cpu1, "set_cpu_s": cpu2, "single_all": one,
                       "set_all": many, "overhead_pct": 100 * (wall2 / wall1 - 1),
                       "cpu_overhead_pct": 100 * (cpu2 / cpu1 - 1)}
                result["runs"].append(row)  # type: ignore[union-attr]
                print(f"{len(parts)} parts, --workers {w}: single {wall1:.2f} s "
                      f"({cpu1:.2f} s CPU), set {wall2:.2f} s ({cpu2:.2f} s CPU): overhead "
                      f"{row['overhead_pct']:+.1f}% wall, {row['cpu_overhead_pct']:+.1f}% CPU")
            shutil.rmtree(parts_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
