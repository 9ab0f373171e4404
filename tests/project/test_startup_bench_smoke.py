"""Smoke test of ``benchmarks/startup.py``: it makes its inputs, runs every command
(and ``--compare`` with a second script) and writes medians for each; no timing is
asserted, only that every row is there and every command succeeded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_startup_runs_every_command(tmp_path: Path) -> None:
    out = tmp_path / "startup.json"
    pf = Path(sys.executable).parent / "pcapflow"
    cmd = [sys.executable, str(BENCH / "startup.py"), "--repeat", "1", "--json", str(out)]
    if pf.exists():
        cmd += ["--compare", str(pf)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    rows = doc["commands"]
    for name in ("python -c pass", "pcapflow --version", "query", "report", "ingest_1mb"):
        assert rows[name]["wall_median"] > 0 and rows[name]["cpu_median"] > 0
        assert len(rows[name]["runs"]) == 1
    if pf.exists():
        assert "other: query" in rows
    for target in ("query", "report", "ingest_1mb"):
        assert f"{target} " in run.stdout and "target" in run.stdout


def test_ingest_phases_accounts_for_the_whole_process(tmp_path: Path) -> None:
    """``benchmarks/ingest_phases.py``: every phase of a 1 MB ingest is there, and the
    phases add up to the process's own CPU time (each second counted once)."""
    out = tmp_path / "phases.json"
    run = subprocess.run([sys.executable, str(BENCH / "ingest_phases.py"), "--repeat", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    (got,) = json.loads(out.read_text())["runs"][sys.executable]
    # (no "import numba": a plain-TCP ingest runs the kernels compiled at install; no
    # "derive" nor "import duckdb": it has nothing to match or derive, ``why.nothing_to_derive``)
    for phase in ("interpreter", "import numpy", "import pcapflow", "kernels",
                  "packets", "matcher", "summary", "cli"):
        assert got[phase] > 0, phase
    assert "derive" not in got and "import duckdb" not in got
    parts = sum(v for k, v in got.items() if k != "total")
    assert 0.95 * got["total"] <= parts <= 1.01 * got["total"]
    assert "total" in run.stdout and "kernels" in run.stdout
