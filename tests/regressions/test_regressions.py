"""Replay every input that once broke pcapflow (``tests/regressions/TARGET/*.bin``).

Each sub-directory is named after a fuzz target (``tests/fuzz/targets.py``) and
holds the inputs, as the fuzzer saved them, that crashed, hung or broke an
invariant of that target. They are replayed in a child process
(``fuzzrun.py --replay``: memory limit, per-input alarm), so a crash in compiled
code fails one test instead of the session. Inputs of bugs still open are in
``OPEN``: they run with ``PCAPFLOW_FUZZ_STRICT=1`` (every known-bug check on)
and are expected to fail, strictly, until the owner fixes the bug; then move
the entry out of ``OPEN`` and flip the check in ``targets.py``. FUZZING.md lists
what each input found.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FUZZRUN = HERE.parent / "fuzz" / "fuzzrun.py"

OPEN: dict[str, str] = {}


def _inputs() -> list[Path]:
    return sorted(p for p in HERE.glob("*/*.bin"))


def _replay(paths: list[Path], tmp_path: Path, strict: bool) -> subprocess.CompletedProcess:
    target = paths[0].parent.name
    env = {**os.environ, "PCAPFLOW_FUZZ_STRICT": "1" if strict else ""}
    return subprocess.run(
        [sys.executable, "-bb", str(FUZZRUN), target, "--workdir", str(tmp_path),
         "--replay", *map(str, paths)],
        capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("target", sorted({p.parent.name for p in _inputs()}))
def test_fixed_inputs_pass(target: str, tmp_path: Path) -> None:
    paths = [p for p in _inputs() if p.parent.name == target
             and f"{target}/{p.name}" not in OPEN]
    if not paths:
        pytest.skip(f"every {target} regression is still open")
    proc = _replay(paths, tmp_path, strict=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=reason))
    for name, reason in sorted(OPEN.items())] or [pytest.param("", marks=pytest.mark.skip(
        reason="no open regression"))])
def test_open_inputs(name: str, tmp_path: Path) -> None:
    proc = _replay([HERE / name], tmp_path, strict=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_every_input_belongs_to_a_target() -> None:
    sys.path.insert(0, str(FUZZRUN.parent))
    from targets import TARGETS

    assert {p.parent.name for p in _inputs()} <= set(TARGETS)
    assert all((HERE / name).exists() for name in OPEN)
