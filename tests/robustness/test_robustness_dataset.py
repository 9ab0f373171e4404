"""Dataset writes are atomic and idempotent (issue 6, scope 4), tested on real processes.

The scenario every test shares: the dataset already holds ``fix44_plain`` (full)
and ``binance_rest_dsb`` ingested ``--tcp-only``; the ingest under test
re-ingests ``binance_rest_dsb`` with the application layer, so its commit both
*replaces* partitions (flows, captures) and *adds* tables (tls_records,
http_messages, ...). "before" and "after" are snapshots of the two states
(``robust_util.snapshot``: every table's rows, sorted).

Here the crash points are exact: a child process runs the ingest with one step
of ``pipelines.store`` replaced by a wrapper that ends the process with
``os._exit`` (as SIGKILL would) at that step. ``test_robustness_kill.py`` kills
the real CLI at random moments instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from robust_util import (
    SAMPLES,
    child_env,
    cli,
    leftovers,
    run_ingest,
    snapshot,
)

TARGET = "binance_rest_dsb"
CAPTURE = SAMPLES / f"{TARGET}.pcapng"


def _api_ingest(data: Path, app: bool) -> None:
    import pcapflow

    pcapflow.ingest([str(CAPTURE)], data=data, app=app)


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """(a dataset in the "before" state, before snapshot, after snapshot)."""
    base = tmp_path_factory.mktemp("before") / "data"
    run_ingest("fix44_plain", base)
    _api_ingest(base, app=False)
    before = snapshot(base)
    after_dir = tmp_path_factory.mktemp("after") / "data"
    shutil.copytree(base, after_dir)
    _api_ingest(after_dir, app=True)
    after = snapshot(after_dir)
    assert before != after and after["tls_records"] and not before["tls_records"]
    assert len(after["captures"]) == len(before["captures"]) == 2
    return base, before, after


def _copy(base: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(base, data)
    return data


CRASH = textwrap.dedent("""
    import os, sys
    from pcapflow.pipelines import store
    point, k = sys.argv[3], int(sys.argv[4])
    if point == "apply":  # the journal is on disk; perform k table swaps, then die
        real_apply = store._apply
        def crash(swaps):
            real_apply(swaps[:k])
            os._exit(137)
        store._apply = crash
    elif point == "journal":  # the journal written, not yet renamed into place
        real_replace = os.replace
        def replace(src, dst, *a, **kw):
            if str(src).endswith(".tmp") and ".journal" in str(src):
                os._exit(137)
            return real_replace(src, dst, *a, **kw)
        os.replace = replace
    elif point == "fsync":  # staging written, commit not begun
        store.Staging._fsync_all = lambda self: os._exit(137)
    elif point == "write":  # die after k staged writes, in the middle of reading
        real_write, n = store.Staging.write, [0]
        def write(self, *a, **kw):
            n[0] += 1
            if n[0] > k:
                os._exit(137)
            return real_write(self, *a, **kw)
        store.Staging.write = write
    import pcapflow
    pcapflow.ingest([sys.argv[1]], data=sys.argv[2])
    print("not crashed")
""")


@pytest.mark.parametrize(("point", "k", "expect"), [
    ("write", 0, "before"), ("write", 3, "before"), ("fsync", 0, "before"),
    # killed between writing the journal and renaming it into place (the commit point):
    # before, and the half-written journal removed (a real SIGKILL left one: CI, session 8)
    ("journal", 0, "before"),
    # k swaps (one per table) done, then death: the replay must finish the rest and not
    # touch the finished ones (k >= 2 lost tables before the store fix of 98e18ee)
    ("apply", 0, "after"), ("apply", 1, "after"), ("apply", 2, "after"), ("apply", 7, "after"),
    ("apply", 99, "after"),
], ids=lambda v: str(v))
def test_crash_at_each_commit_step(states: tuple, tmp_path: Path, point: str, k: int,
                                   expect: str) -> None:
    base, before, after = states
    data = _copy(base, tmp_path)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(CAPTURE), str(data), point, str(k)],
                          capture_output=True, text=True, timeout=120, env=child_env())
    assert proc.returncode == 137, (proc.stdout, proc.stderr[-2000:])
    got = snapshot(data)  # opening the dataset finishes or drops the dead transaction
    assert got == (before if expect == "before" else after)
    assert leftovers(data) == []


def test_reingest_is_idempotent(states: tuple, tmp_path: Path) -> None:
    base, _before, after = states
    data = _copy(base, tmp_path)
    _api_ingest(data, app=True)
    files_once = sorted(p.relative_to(data) for p in data.rglob("*.parquet"))
    _api_ingest(data, app=True)
    files_twice = sorted(p.relative_to(data) for p in data.rglob("*.parquet"))
    assert snapshot(data) == after
    assert files_once == files_twice  # replaced, not appended
    assert leftovers(data) == []


def test_two_concurrent_ingests_both_land(states: tuple, tmp_path: Path) -> None:
    """Two CLI ingests into one dataset at once: both succeed, nothing is lost."""
    base, _before, after = states
    data = _copy(base, tmp_path)
    key = SAMPLES / "deribit_jsonrpc_tls13.keylog"
    cmds = [cli("ingest", str(CAPTURE), "--data", str(data)),
            cli("ingest", str(SAMPLES / "deribit_jsonrpc_tls13.pcap"), "--keylog", str(key),
                "--data", str(data))]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for c in cmds]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    got = snapshot(data)
    # the dsb ingest equals "after"; the deribit one added its own capture
    assert len(got["captures"]) == 3
    solo = tmp_path / "solo"
    run_ingest("deribit_jsonrpc_tls13", solo)
    for part in (after, snapshot(solo)):
        for table, rows in part.items():
            assert {repr(r) for r in rows} <= {repr(r) for r in got[table]}, table
    assert leftovers(data) == []


def test_same_capture_ingested_twice_at_once(states: tuple, tmp_path: Path) -> None:
    base, _before, after = states
    data = _copy(base, tmp_path)
    cmd = cli("ingest", str(CAPTURE), "--data", str(data))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err[-2000:]
    assert snapshot(data) == after
    assert leftovers(data) == []
