"""Fixtures shared by test modules, and how the suite is shared between processes.

``samples_dataset``: every sample capture (``sample_pcaps/``) ingested once per test
session with its key logs and the demo's venue map (the FIX samples' comp ids), the
way ``pcapflow demo`` does; read-only for the tests that take it.
``tshark_cache``: a directory shared by the run's processes, where tshark's output for
a capture is kept (``helpers/tshark_util.py``).

With pytest-xdist (``-n 2 --dist loadfile``, pyproject's addopts): each test module is
one unit of work, run whole by one worker, so a module's fixtures are built once, and
the modules sharing a costly session-wide object are one unit (``SHARED``); the
costliest units start first (``FIRST``), so no long one is left for the end while the
other worker idles. A session fixture is per worker: built at most once in each.
Workers run with the interpreter's ``-b``/``-bb`` (execnet starts them without it).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.paths import SAMPLES

import pcapflow
from pcapflow import api

SAMPLE_CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
VENUE_MAP = """
[[venue]]
name = "mockfix"
sender_comp_id = "PCFTRADER1"
target_comp_id = "MOCKEX"
ports = [9878]
"""


@pytest.fixture(scope="session")
def samples_dataset(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pcapflow.Dataset]:
    root = tmp_path_factory.mktemp("samples_dataset")
    venues = root / "venues.toml"
    venues.write_text(VENUE_MAP)
    api.ingest([str(c) for c in SAMPLE_CAPTURES], keylog=sorted(SAMPLES.glob("*.keylog")),
               data=root / "data", venues=venues)
    ds = pcapflow.open(root / "data")
    yield ds
    ds.close()


@pytest.fixture(scope="session")
def tshark_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for tshark's results shared by all processes of this test run
    (``helpers.tshark_util.corpus_fields``): under xdist, beside the workers' own
    base directories."""
    base = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        base = base.parent
    cache = base / "tshark-cache"
    cache.mkdir(exist_ok=True)
    return cache


# --- pytest-xdist ------------------------------------------------------------------------
SHARED = {
    # the public corpus ingested once per process (golden.regen.public_dataset)
    "public/test_golden_public.py": "public_dataset",
    "public/test_public_ingest.py": "public_dataset",
    "public/test_tls_pipeline.py": "public_dataset",
}
FIRST = (
    "pipelines/test_fast_path.py", "public_dataset", "parsers/capture/test_clock_steps.py",
    "pipelines/test_interrupts.py", "e2e/test_nothing_dropped.py",
    "parsers/capture/test_capture_sets.py", "fuzz/test_fuzz.py", "e2e/test_demo.py",
    "e2e/test_notebooks.py", "parsers/tcp/test_bounded_flows.py", "parsers/fix/test_fix_batch.py",
)
"""Units of work that take a minute or more, costliest first (a scheduling hint only)."""


def _unit(nodeid: str) -> str:
    module = nodeid.split("::")[0].removeprefix("tests/")
    return SHARED.get(module, module)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list) -> None:
    flags = ["-b"] * sys.flags.bytes_warning
    for spec in specs:
        if flags and spec.popen and not spec.python:
            spec.python = shlex.join([sys.executable, *flags])
    _warm_numba_cache()


# the samples' ingest, default path then the per-packet one: every kernel they use
_WARM = r"""
import json, sys, tempfile
import pcapflow
a = json.loads(sys.argv[1])
with tempfile.TemporaryDirectory(prefix="pcf-warm-") as d:
    pcapflow.ingest(a["caps"], keylog=a["keys"], data=d + "/d")
"""


def _warm_numba_cache() -> None:
    """With an empty Numba cache (a fresh environment, as CI's), compile the kernels
    once before the workers start: else the first units' processes (two ingests of the
    batch-path test, two of the public corpus's) each compiled the same kernels at
    once, ~100 s of the suite's wall time on two cores."""
    import json
    import subprocess

    root = os.environ.get("NUMBA_CACHE_DIR")
    places = ([Path(root)] if root else
              [Path(__file__).resolve().parents[1] / d for d in ("parsers", "pipelines")])
    if any(next(p.rglob("*.nbi"), None) for p in places if p.is_dir()):
        return
    args = json.dumps({"caps": [str(c) for c in SAMPLE_CAPTURES],
                       "keys": [str(k) for k in sorted(SAMPLES.glob("*.keylog"))]})
    for extra in ({}, {"PCAPFLOW_SLOW_PATH": "1"}):
        subprocess.run([sys.executable, "-c", _WARM, args], env={**os.environ, **extra},
                       capture_output=True, timeout=1800, check=False)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile`` with our units: a module, or the modules of one ``SHARED`` group
    (xdist's own ``loadgroup`` renames node ids, which pytest 9.2 no longer allows)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

    return UnitScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker (the workers collect; the scheduler keeps their order), the
    costliest units first."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        rank = {name: k for k, name in enumerate(FIRST)}
        items.sort(key=lambda item: rank.get(_unit(item.nodeid), len(FIRST)))  # stable
