"""The batch (fast) path against the general per-packet path: ingest with one or
the other and compare every table, row for row (tests/pipelines/test_fast_path*.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pcapflow.pipelines.ingest import app_layer as connections

import pcapflow

# Columns that legitimately differ between two ingests of the same capture.
VOLATILE = {"ingested_at"}


def read_tables(root: Path) -> dict[str, pa.Table]:
    """Every table of the dataset at ``root``, volatile columns dropped, rows sorted."""
    out = {}
    # tables only: not ``_state`` (a rotation's resume state, derive windows included)
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        files = sorted(d.rglob("*.parquet"))
        if not files:
            continue
        t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        t = t.drop_columns([c for c in t.column_names if c in VOLATILE])
        sortable = [c for c in t.column_names
                    if not pa.types.is_nested(t.schema.field(c).type)]
        out[d.name] = t.sort_by([(c, "ascending") for c in sortable])
    return out


def ingest_counting_runs(caps: list[Path], keys: list[Path], data: Path, fast: bool,
                         monkeypatch: pytest.MonkeyPatch) -> int:
    """Ingest with the batch path on (``fast``) or off, batching every run however
    short; returns how many batch runs there were."""
    runs = 0
    original = connections.AppLayer._run

    def counting(self: connections.AppLayer, *args: object) -> None:
        nonlocal runs
        runs += 1
        original(self, *args)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(connections, "FAST_PATH", fast)
        # batch every run of simple packets, however short (the thresholds only
        # choose the cheaper path; both must give the same tables)
        m.setattr(connections, "MIN_RUN", 1)
        m.setattr(connections, "MIN_STRETCH", 0)
        m.setattr(connections.AppLayer, "_run", counting)
        pcapflow.ingest(caps, keylog=keys, data=data)
    return runs


_CHILD = r"""
import json, sys
from pcapflow.pipelines.ingest import app_layer as connections
import pcapflow
a = json.loads(sys.argv[1])
runs = 0
original = connections.AppLayer._run
def counting(self, *args):
    global runs
    runs += 1
    original(self, *args)
connections.FAST_PATH = a["fast"]
connections.MIN_RUN = 1
connections.MIN_STRETCH = 0
connections.AppLayer._run = counting
if not a["matcher"]:
    import pcapflow.api
    pcapflow.api._matcher = lambda *args, **kwargs: None
pcapflow.ingest(a["caps"], keylog=a["keys"], data=a["data"])
print(runs)
"""
"""``ingest_counting_runs`` in a process of its own (arguments as JSON in ``argv[1]``)."""


def ingest_both_paths(caps: list[Path], keys: list[Path], root: Path,
                      matcher: bool = True) -> tuple[int, int]:
    """(general-path runs, batch-path runs): ``ingest_counting_runs`` of ``caps`` into
    ``root/slow`` with the batch path off and into ``root/fast`` with it on, at the same
    time, each in a child process (each patches only itself; a two-core CI machine runs
    both at once, where one test process keeps one core busy). ``matcher=False``: no
    matcher and no derived tables (the layers' tables and ``flows`` only), for a corpus
    of many small captures where they cost most of each ingest and the batch path, which
    changes only what the layers write, cannot change them."""
    procs = []
    for name, fast in (("slow", False), ("fast", True)):
        args = json.dumps({"caps": list(map(str, caps)), "keys": list(map(str, keys)),
                           "data": str(root / name), "fast": fast,
                           "matcher": matcher})
        procs.append(subprocess.Popen([sys.executable, "-c", _CHILD, args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=3600)
        assert proc.returncode == 0, err[-3000:]
        runs.append(int(out.split()[-1]))
    return runs[0], runs[1]


def assert_same_tables(want: dict[str, pa.Table], got: dict[str, pa.Table]) -> None:
    """Same tables, same rows, same columns, same values (as ``read_tables`` gives them)."""
    assert want.keys() == got.keys()
    for name in want:
        a, b = want[name], got[name]
        assert a.num_rows == b.num_rows, name
        assert a.schema.names == b.schema.names, name
        for col in a.column_names:
            assert a[col].equals(b[col]), f"{name}.{col} differs"
