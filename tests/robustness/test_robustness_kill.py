"""A real ``pcapflow ingest`` killed at random moments leaves "before" or "after".

Same scenario as ``test_robustness_dataset.py`` (a dataset holding two
captures; the ingest re-ingests one of them with the application layer). Each
case starts the CLI, waits until it has begun staging, sleeps a random part of
the time a full ingest takes, and sends SIGKILL, SIGTERM or SIGINT. Opening the
dataset afterwards must show exactly the before or the after state, with no
transaction debris. SIGINT must end with exit code 130 and one line on stderr.

``PCAPFLOW_KILL_SEED`` changes the random moments (default fixed, so CI is
reproducible); ``PCAPFLOW_KILL_CASES`` runs more cases per signal.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from robust_util import (
    SAMPLES,
    leftovers,
    run_ingest,
    snapshot,
    start_ingest,
    wait_for_staging,
)

TARGET = "binance_wsapi_tls13"
SEED = int(os.environ.get("PCAPFLOW_KILL_SEED", "6"))
CASES = int(os.environ.get("PCAPFLOW_KILL_CASES", "2"))


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict, float]:
    """(before dataset, before snapshot, after snapshot, seconds from staging to exit)."""
    import pcapflow

    base = tmp_path_factory.mktemp("before") / "data"
    run_ingest("fix44_plain", base)
    pcapflow.ingest([str(SAMPLES / f"{TARGET}.pcap")], data=base, app=False)
    before = snapshot(base)
    after_dir = tmp_path_factory.mktemp("after") / "data"
    shutil.copytree(base, after_dir)
    proc = start_ingest(TARGET, after_dir)
    t0 = wait_for_staging(proc, after_dir)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    window = time.monotonic() - t0
    after = snapshot(after_dir)
    assert before != after
    return base, before, after, window


def _cases() -> list[tuple[str, float]]:
    rng = random.Random(SEED)
    sigs = ["SIGKILL", "SIGTERM", "SIGINT"]
    # fractions of the staging-to-exit window; 1.05 lands after a normal exit
    return [(s, round(rng.uniform(0.0, 1.05), 3)) for s in sigs for _ in range(CASES)]


@pytest.mark.parametrize(("signame", "fraction"), _cases())
def test_killed_ingest_leaves_before_or_after(states: tuple, tmp_path: Path, signame: str,
                                              fraction: float) -> None:
    base, before, after, window = states
    data = tmp_path / "data"
    shutil.copytree(base, data)
    proc = start_ingest(TARGET, data)
    wait_for_staging(proc, data)
    time.sleep(fraction * window)
    if proc.poll() is None:
        proc.send_signal(getattr(signal, signame))
    proc.communicate(timeout=120)
    got = snapshot(data)
    assert got in (before, after), f"{signame} at {fraction:.0%}: a state that is neither"
    assert leftovers(data) == []
    if signame != "SIGINT" and proc.returncode == 0:
        assert got == after  # it finished before the signal
    # SIGINT's exit status and message: test_ctrl_c_prints_one_line




def test_ctrl_c_prints_one_line(states: tuple, tmp_path: Path) -> None:
    base, before, _after, _window = states
    data = tmp_path / "data"
    shutil.copytree(base, data)
    proc = start_ingest(TARGET, data)
    wait_for_staging(proc, data)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert snapshot(data) == before  # rolled back: holds today
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err


def test_ctrl_c_during_startup_prints_one_line(tmp_path: Path) -> None:
    proc = start_ingest(TARGET, tmp_path / "data")
    time.sleep(0.4)  # python is importing numpy/numba/pyarrow
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, proc.returncode  # today: -2 (died in an import)
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if ln.strip()]) == 1
