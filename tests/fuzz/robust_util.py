"""Helpers for the dataset robustness tests: snapshots and real ``pcapflow`` processes.

A *snapshot* is every table of a dataset read the way users read it
(``pcapflow.open``, which first finishes or rolls back interrupted commits),
each row as a tuple, rows sorted. Two snapshots are equal when the datasets
hold the same rows, whatever files they are split into. ``captures.ingested_at``
is left out: it is the one column that differs between two ingests of the
same capture.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_pcaps"
VOLATILE = {"captures": ["ingested_at"]}

Snapshot = dict[str, list[tuple]]


def snapshot(data: Path) -> Snapshot:
    """Every table's rows, sorted (after ``pcapflow.open`` ran its recovery)."""
    import pcapflow

    out: Snapshot = {}
    with pcapflow.open(data) as ds:
        for table in ds.tables:
            drop = VOLATILE.get(table, [])
            cols = ds.sql(f"SELECT * FROM {table} LIMIT 0").columns
            keep = ", ".join(f'"{c}"' for c in cols if c not in drop)
            rows = ds.sql(f"SELECT {keep} FROM {table}").fetchall()
            out[table] = sorted(rows, key=repr)
    return out


def leftovers(data: Path) -> list[str]:
    """Transaction debris a reader would still see: journals, trash, dead staging."""
    found = []
    for sub in (".journal", ".trash", ".staging"):
        d = data / sub
        if d.is_dir():
            found += [f"{sub}/{p.name}" for p in d.iterdir()]
    return found


def cli(*args: str, env: dict[str, str] | None = None) -> list[str]:
    """The ``pcapflow`` command as a subprocess argv (the installed entry point)."""
    exe = shutil.which("pcapflow")
    base = [exe] if exe else [sys.executable, "-m", "pcapflow"]
    return [*base, *args]


def sample_args(name: str) -> list[str]:
    """``CAPTURE [--keylog K]`` for a sample capture."""
    cap = next(SAMPLES.glob(f"{name}.pcap*"))
    key = SAMPLES / f"{name}.keylog"
    return [str(cap), *(["--keylog", str(key)] if key.exists() else [])]


def run_ingest(name: str, data: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(cli("ingest", *sample_args(name), "--data", str(data)),
                          capture_output=True, text=True, timeout=timeout, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def child_env() -> dict[str, str]:
    """No colours or terminal tricks in children's output."""
    return {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}


def start_ingest(name: str, data: Path) -> subprocess.Popen:
    return subprocess.Popen(cli("ingest", *sample_args(name), "--data", str(data)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())


def wait_for_staging(proc: subprocess.Popen, data: Path, timeout: float = 60) -> float:
    """Wait until ``proc`` has started writing its staging directory; returns when."""
    staging = data / ".staging"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if staging.is_dir() and any(p.name.startswith(f"{proc.pid}-") for p in staging.iterdir()):
            return time.monotonic()
        if proc.poll() is not None:
            return time.monotonic()
        time.sleep(0.005)
    raise TimeoutError("the ingest never started writing")


def kill(proc: subprocess.Popen, sig: signal.Signals, timeout: float = 60) -> tuple[int, str]:
    """Send ``sig`` (if still running) and wait; (return code, stderr)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err
