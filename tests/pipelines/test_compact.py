"""Compaction of a set's final parts (``pipelines.compact``): the same rows, fewer parts,
a resumed command after it equal to one ingest, and a kill inside its commit rolled
forward by the next reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pcapflow.pipelines import compact, store
from pcapflow.pipelines.ingest import resume

import pcapflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers.dataset_compare import assert_same_rows
from test_resume import _rotation


def _finals(data: Path, table: str) -> list[str]:
    part = next((data / table).glob("capture_id=*"))
    return sorted(p.name for p in part.glob("*.parquet") if not p.name.startswith("part-t"))


@pytest.fixture(scope="module")
def rotation(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    """Five one-second files where connections end in every file (flows held ended
    at each file's end: the ``FlowsIndex``'s ``at``), and their one ingest."""
    base = tmp_path_factory.mktemp("compact")
    files = _rotation(base / "rot", 5, 2000)
    pcapflow.ingest([files], data=base / "one")
    return files, base / "one"


def test_a_resumed_set_compacted_as_it_goes_equals_one_ingest(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        rotation: tuple[list[Path], Path]) -> None:
    """Tiers of 2 parts: each resumed command merges the set's earlier parts (not its
    own); the flows index stays usable (no command reads every ``flows`` part), and a
    full compaction between commands leaves the rows and the next command as they
    were: every table equals one ingest of the files."""
    files, one = rotation
    monkeypatch.setattr(compact, "TIER_PARTS", 2)
    monkeypatch.setattr(compact, "TIER_BASE_BYTES", 1 << 30)  # (every part of tier 0)
    data = tmp_path / "d"
    resume.STATS.clear()
    compact.STATS.clear()
    merged = []
    for k, f in enumerate(files):
        r = pcapflow.ingest([f], data=data)[0]
        merged.append(sum(len(c.removed) for c in r.compacted))
        newest = f"part-f{k}-"
        assert not any(newest in n for c in r.compacted for n, _ in c.removed)
        if k == 2:  # ``pcapflow compact`` between two commands: the rows are the same
            before = tmp_path / "before"
            subprocess.run(["cp", "-al", str(data), str(before)], check=True)
            run = subprocess.run([sys.executable, "-m", "pcapflow", "compact", "--data",
                                  str(data)], capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            assert_same_rows(before, data, captures=True)
            assert len(_finals(data, "tcp_events")) == 1
    assert merged[:2] == [0, 0] and merged[2] and merged[4], merged
    assert resume.STATS.get("old_flows_whole", 0) == 0, resume.STATS
    assert compact.STATS["merges"] >= 4
    for t in ("tcp_events", "flows", "tcp_rtt"):
        assert len(_finals(data, t)) <= 3, (t, _finals(data, t))
    assert_same_rows(one, data)
    assert not list((data / store.STAGING).glob("*")) and not list(
        (data / store.JOURNAL).glob("*"))


_KILL = """
import os, sys
from pathlib import Path
from pcapflow.pipelines import compact, store
real, seen = store.os.replace, []
def replace(src, dst):
    if seen or str(dst).endswith(".json") and store.JOURNAL in str(dst):
        seen.append(dst)
        if len(seen) == int(sys.argv[2]) + 1:
            os._exit(9)  # killed between two moves: no clean-up runs
    real(src, dst)
store.os.replace = replace
compact.compact(Path(sys.argv[1]), full=True)
"""


def test_a_kill_inside_the_compaction_commit_is_rolled_forward(
        tmp_path: Path, rotation: tuple[list[Path], Path]) -> None:
    """Killed before its commit point (while the journal is renamed) the set is as
    before; killed after it (between two moves), the next reader rolls it forward:
    merged, the same rows; and the next resumed commands equal one ingest."""
    files, one = rotation
    data = tmp_path / "d"
    for f in files[:3]:
        pcapflow.ingest([f], data=data)
    before = tmp_path / "before"
    subprocess.run(["cp", "-al", str(data), str(before)], check=True)
    n = len(_finals(data, "tcp_events"))
    busy = data / store.STAGING / f"{os.getppid()}-busy"  # (another live process staging)
    busy.mkdir(parents=True)
    assert compact.compact(data, full=True) == [] and len(_finals(data, "tcp_events")) == n
    busy.rmdir()
    for at in (0, 3):
        run = subprocess.run([sys.executable, "-c", _KILL, str(data), str(at)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 9, run.stderr
        with pcapflow.open(data) as ds:  # a reader finishes (or drops) the compaction first
            assert ds.scalar("SELECT count(*) FROM captures") == 3
        assert not list((data / store.JOURNAL).glob("*")) and not list(
            (data / store.STAGING).glob("*")) and not list((data / store.TRASH).glob("*"))
        assert len(_finals(data, "tcp_events")) == (n if at == 0 else 1)
        assert_same_rows(before, data, captures=True)
    for f in files[3:]:
        pcapflow.ingest([f], data=data)
    assert_same_rows(one, data)


def test_tiers_merge_a_full_tier_and_leave_the_rest() -> None:
    parts = [compact.Part(f"part-f{k}-0.parquet", 1000, k, 0) for k in range(1, 8)]
    parts.insert(0, compact.Part("part-0.parquet", 300 << 20, 100, 0))  # past the cap
    groups = compact.plan(parts)
    assert not groups  # 7 small parts: a tier of 8 not reached
    parts.append(compact.Part("part-f8-0.parquet", 1000, 8, 0))
    (g,) = compact.plan(parts)
    assert [p.name for p in g] == [f"part-f{k}-0.parquet" for k in range(1, 9)]
    assert not compact.plan(parts, newest=8)  # the newest command's part waits
    held = frozenset({"part-f3-0.parquet"})
    big = [compact.Part(f"part-f{k}-0.parquet", 1 << 20, k, 0) for k in range(1, 10)]
    (g,) = compact.plan(big, low_only=held)  # (tier 1: a part ``at`` names stays)
    assert "part-f3-0.parquet" not in {p.name for p in g} and len(g) == 8
    # a resumed command's own compaction leaves parts past tier 0 (256 KB) as they are
    assert compact.tier(compact.TIER_BASE_BYTES * compact.TIER_PARTS) == 1
    assert not compact.plan(big, max_tier=compact.AUTO_MAX_TIER)
    assert compact.plan(parts, max_tier=compact.AUTO_MAX_TIER) == compact.plan(parts)
    assert len(compact.plan(big, full=True, max_tier=compact.AUTO_MAX_TIER)) == 1
    assert compact.command_of("part-f12-c3-ab12.parquet") == (3, 12)
    assert compact.command_of("part-0.parquet") == (0, 0)


def test_a_staging_directory_is_made_under_the_lock(tmp_path: Path) -> None:
    """An ingest's staging directory appears only between commits: a compaction that
    found nobody staging (checked under the lock) finishes its moves before an ingest
    can begin and read the set."""
    import threading

    made: list[store.Staging] = []
    with store.locked(tmp_path):  # a compaction's commit, in the middle of its moves
        t = threading.Thread(target=lambda: made.append(store.Staging(tmp_path)))
        t.start()
        t.join(0.3)
        assert t.is_alive() and not (tmp_path / store.STAGING).exists()
    t.join(10)
    assert not t.is_alive() and made[0].dir.is_dir()
    made[0].abort()
