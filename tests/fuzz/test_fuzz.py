"""The bounded CI fuzz pass: every target in its own child process (see FUZZING.md).

Each test starts ``fuzzrun.py TARGET`` with the target's CI example count, a
fixed hypothesis seed (``PCAPFLOW_FUZZ_SEED`` overrides it; the long run uses a
random one), a memory limit and a per-input alarm, and fails with the child's
report when the child fails, crashes (a signal), or outlives its time budget
(a hang the alarm could not interrupt). The input that did it is kept in the
test's temporary directory and named in the failure message; copy it into
``tests/regressions/TARGET/`` once fixed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fuzzlib import PER_INPUT_SECONDS, long_factor
from targets import TARGETS

HERE = Path(__file__).resolve().parent
CI_SEED = 20240606
CHILD_BUDGET_S = 150.0
"""Wall-clock bound of one target's child in CI (the examples take a fraction of it)."""


def run_child(target: str, workdir: Path, *args: str, budget: float) -> dict:
    """Run one fuzz child; return its JSON summary or fail the test with its report."""
    cmd = [sys.executable, "-bb", str(HERE / "fuzzrun.py"), target, "--workdir", str(workdir),
           *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
    except subprocess.TimeoutExpired as err:
        current = workdir / "current.bin"
        pytest.fail(f"{target}: hang: child still running after {budget:.0f} s; the input "
                    f"it was on is {current}\n{(err.stderr or b'')[-3000:]!r}")
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        pytest.fail(f"{target}: child killed by {name}; input: {workdir / 'current.bin'}\n"
                    f"{proc.stderr[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{target}: {proc.stderr[-6000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target(target: str, tmp_path: Path) -> None:
    seed = os.environ.get("PCAPFLOW_FUZZ_SEED", str(CI_SEED))
    budget = float(os.environ.get("PCAPFLOW_FUZZ_BUDGET", CHILD_BUDGET_S * long_factor()))
    summary = run_child(target, tmp_path, "--seed", seed, budget=budget)
    # every seed ran, and most of the examples (hypothesis skips duplicates)
    examples = TARGETS[target].examples * long_factor()
    assert summary["inputs"] >= len(TARGETS[target].seeds()) + examples // 2, summary
    # the alarm can be swallowed (an exception raised in a gc callback is ignored)
    assert summary["slowest_input_s"] <= 1.5 * PER_INPUT_SECONDS, summary
