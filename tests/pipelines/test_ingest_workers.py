"""One capture ingested by several processes (``workers``): the same tables.

Every table of a sharded ingest must hold exactly the rows of the one-process
ingest (row order within files may differ). Compared with DuckDB: per table,
the multiset difference both ways is empty. Only ``captures.ingested_at`` is left
out (the wall-clock time of each ingest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from pcapflow.parsers.errors import PcapflowError
from pcapflow.pipelines import ingest
from pcapflow.pipelines.ingest import app_layer as connections
from pcapflow.pipelines.tables.schemas import TABLES

import pcapflow
from pcapflow import api

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))

from robust_util import child_env, cli

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))
BIG = Path("/tmp/wsbig/ws_tls13.pcap")
IGNORED = {"captures": "ingested_at"}


def _keylog(cap: Path) -> list[Path]:
    key = cap.with_suffix(".keylog")
    return [key] if key.exists() else []


def _files(root: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (root / table).glob("capture_id=*/*.parquet"))


def assert_same_tables(a: Path, b: Path) -> dict[str, int]:
    """Every table of datasets ``a`` and ``b`` has the same rows; returns the counts."""
    counts = {}
    con = duckdb.connect()
    for table in TABLES:
        fa, fb = _files(a, table), _files(b, table)
        assert bool(fa) == bool(fb), table
        if not fa:
            continue
        skip = IGNORED.get(table)
        cols = f"* EXCLUDE ({skip})" if skip else "*"
        qa = f"SELECT {cols} FROM read_parquet({fa!r}, hive_partitioning = true)"
        qb = f"SELECT {cols} FROM read_parquet({fb!r}, hive_partitioning = true)"
        na = con.execute(f"SELECT count(*) FROM ({qa})").fetchone()[0]
        nb = con.execute(f"SELECT count(*) FROM ({qb})").fetchone()[0]
        assert na == nb, (table, na, nb)
        for x, y in ((qa, qb), (qb, qa)):
            diff = con.execute(f"SELECT * FROM ({x} EXCEPT ALL {y}) LIMIT 3").fetchall()
            assert not diff, (table, diff)
        counts[table] = na
    return counts


def _worker_parts(root: Path) -> list[Path]:
    return [p for p in root.glob("*/capture_id=*/part-w*.parquet")]


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_two_workers_give_the_same_tables(tmp_path: Path, cap: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    r1 = pcapflow.ingest([cap], keylog=_keylog(cap), data=one, packets=True)[0]
    r2 = pcapflow.ingest([cap], keylog=_keylog(cap), data=two, packets=True, workers=2)[0]
    counts = assert_same_tables(one, two)
    assert counts["packets"] == r1.packets
    assert r2.rows == r1.rows and r2.anomaly_codes == r1.anomaly_codes
    assert (r2.packets, r2.flows, r2.capture_id) == (r1.packets, r1.flows, r1.capture_id)
    assert _worker_parts(two), "the second process wrote nothing"
    assert not _worker_parts(one)
    assert not any((two / ".staging").iterdir())


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("name", ["binance_wsapi_tls13.pcap", "lossy_rest_tls13.pcap"])
def test_more_workers_than_connections(tmp_path: Path, name: str, workers: int) -> None:
    """Three processes, two connections: one process owns none; small chunks make
    many batches, retirements and side files."""
    cap = SAMPLES / name
    one, many = tmp_path / "one", tmp_path / "many"
    ingest.ingest_capture(str(cap), one, app_layer=api._app_factory(_keylog(cap)),
                          matcher=api._matcher(None), chunk_bytes=1 << 14)
    ingest.ingest_capture(str(cap), many, app_layer=api._app_factory(_keylog(cap)),
                          matcher=api._matcher(None), chunk_bytes=1 << 14, workers=workers)
    assert_same_tables(one, many)


@pytest.mark.parametrize("rule", ["balanced", "modulo"])
def test_both_shard_rules(tmp_path: Path, rule: str) -> None:
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, two = tmp_path / "one", tmp_path / "two"
    ingest.ingest_capture(str(cap), one, app_layer=api._app_factory(_keylog(cap)),
                          matcher=api._matcher(None))
    ingest.ingest_capture(str(cap), two, app_layer=api._app_factory(_keylog(cap)),
                          matcher=api._matcher(None), workers=2, shard_rule=rule)
    assert_same_tables(one, two)


@pytest.mark.skipif(not BIG.exists(), reason="the big capture is a local benchmark file")
@pytest.mark.slow
def test_big_capture(tmp_path: Path) -> None:
    keys = [BIG.with_suffix(".keylog")]
    pcapflow.ingest([BIG], keylog=keys, data=tmp_path / "one")
    pcapflow.ingest([BIG], keylog=keys, data=tmp_path / "two", workers=2)
    counts = assert_same_tables(tmp_path / "one", tmp_path / "two")
    assert counts["ws_messages"] == 408_370


def test_too_many_open_connections_falls_back_to_one_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``max_open_connections`` a single process evicts by global recency, which
    no shard sees: the ingest runs in one process instead (same rows, no worker parts)."""
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    limits = {"max_open_connections": 1}
    pcapflow.ingest([cap], keylog=_keylog(cap), data=tmp_path / "one", limits=limits)
    pcapflow.ingest([cap], keylog=_keylog(cap), data=tmp_path / "two", limits=limits,
                    workers=2)
    assert_same_tables(tmp_path / "one", tmp_path / "two")
    assert not _worker_parts(tmp_path / "two")
    ds = pcapflow.open(tmp_path / "two")
    assert ds.scalar("SELECT count(*) FROM anomalies WHERE code = 'connection_evicted'") >= 1


def _snapshot(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_ino)
                  for p in root.rglob("*.parquet"))


@pytest.mark.parametrize("where", ["child", "parent"])
def test_a_failing_process_leaves_the_dataset_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    data = tmp_path / "data"
    pcapflow.ingest([cap], keylog=_keylog(cap), data=data)
    before = _snapshot(data)
    parent = os.getpid()
    process = connections.AppLayer.process

    def broken(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if (os.getpid() != parent) == (where == "child"):
            raise RuntimeError("boom\nsecond line")
        return process(self, *args, **kwargs)

    monkeypatch.setattr(connections.AppLayer, "process", broken)
    # children of this process before the ingest (a suite leaves some: multiprocessing's
    # resource tracker, a Dask test's): the ingest must add none that outlive it
    me = Path(f"/proc/{parent}/task/{parent}/children")
    children = set(me.read_text().split())
    expected = PcapflowError if where == "child" else RuntimeError
    with pytest.raises(expected) as err:
        pcapflow.ingest([cap], keylog=_keylog(cap), data=data, workers=2)
    if where == "child":
        msg = str(err.value)
        assert "\n" not in msg and str(cap) in msg and "boom second line" in msg
        assert err.value.code == "worker_failed"
    assert os.getpid() == parent
    assert set(me.read_text().split()) <= children  # every worker was waited for
    assert _snapshot(data) == before
    assert not any((data / ".staging").iterdir())
    monkeypatch.undo()
    pcapflow.ingest([cap], keylog=_keylog(cap), data=data, workers=2)  # and it still works


def test_a_worker_killed_by_a_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = SAMPLES / "okx_ws_tls12.pcap"
    parent = os.getpid()
    process = connections.AppLayer.process

    def die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return process(self, *args, **kwargs)

    monkeypatch.setattr(connections.AppLayer, "process", die)
    with pytest.raises(PcapflowError, match="signal 9"):
        pcapflow.ingest([cap], keylog=_keylog(cap), data=tmp_path, workers=2)
    assert not any((tmp_path / ".staging").iterdir())


def test_shard_rules() -> None:
    """Every process computes the same owners; balanced spreads payload bytes; the
    bound on open connections counts flows with payload until they end."""
    class Dec:
        def __init__(self, n: int) -> None:
            self.proto = np.full(n, 6)
            self.payload_caplen = np.zeros(n, np.int64)
            self.tcp_flags = np.zeros(n, np.int64)

    class Pf:
        pass

    fids = np.array([0, 2, 4, 6, 0, 2, 4, 6, -1, 8])
    dec, pf = Dec(fids.size), Pf()
    dec.payload_caplen[:8] = 100
    pf.flow_id = fids
    pf.direction = np.zeros(fids.size, np.int64)
    for rule in ("balanced", "modulo"):
        shards = [ingest.Shard(k, 2, rule) for k in range(2)]
        masks = [s.packets(dec, pf) for s in shards]  # type: ignore[arg-type]
        assert not (masks[0] & masks[1]).any() and (masks[0] | masks[1]).all()
        assert masks[0][8]  # no flow: shard 0
        assert shards[0].owner == shards[1].owner
        owned = [sum(s.owner[f] == k for f in s.owner) for k, s in enumerate(shards)]
        assert owned == ([2, 2] if rule == "balanced" else [4, 0])
        assert shards[0].open == shards[0].peak == 4  # flow 8 has no payload yet
        mine = shards[1].retire(np.array([0, 2, 8]))
        assert shards[1].open == 2 and mine.tolist() == [
            shards[0].owner.get(f, f % 2) == 1 for f in (0, 2, 8)]

    # FIN both ways or RST after the first payload ends a flow; a FIN before it does not
    s = ingest.Shard(0, 2)
    fids = np.array([1, 1, 1, 3, 3, 5, 5, 5])
    dec, pf = Dec(fids.size), Pf()
    pf.flow_id = fids
    pf.direction = np.array([0, 0, 1, 0, 0, 1, 0, 0])
    dec.payload_caplen[[0, 4, 6]] = 10
    dec.tcp_flags[[1, 2, 3, 5, 7]] = [1, 1, 4, 1, 1]  # FIN FIN RST FIN FIN
    s.packets(dec, pf)  # type: ignore[arg-type]
    assert s.peak == 3 and s.ended == {1} and s.open == 2
    s.retire(np.array([1, 3]))
    assert s.open == 1 and set(s.owner) == {5}


def test_auto_workers(tmp_path: Path) -> None:
    small = SAMPLES / "okx_ws_tls12.pcap"
    assert api.auto_workers(small) == 1
    big = tmp_path / "big.pcap"
    with open(big, "wb") as fh:
        fh.truncate(api.AUTO_MIN_BYTES)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    for load in (0.0, 0.4):
        assert api.auto_workers(big, load=load) == min(cpus, api.AUTO_MAX_WORKERS)
    # the CPUs the load average keeps busy are not counted (rounded, as make -l weighs it)
    for load in (cpus - 0.4, float(cpus), 10.0 * cpus):
        assert api.auto_workers(big, load=load) == 1
    if cpus >= 2:
        assert api.auto_workers(big, load=cpus - 1.6) == min(2, api.AUTO_MAX_WORKERS)
    assert api.auto_workers(big, app=False) == 1
    assert api.auto_workers(big, jobs=2) == 1
    assert api.auto_workers("-") == 1
    with pytest.raises(ValueError):
        pcapflow.ingest([small], data=tmp_path / "d", workers=0)


def test_cli_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    key = str(_keylog(cap)[0])
    # the command of the environment running the tests
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env = child_env()
    for workers, data in (("2", "two"), ("auto", "auto")):
        p = subprocess.run(cli("ingest", str(cap), "--keylog", key, "--data",
                               str(tmp_path / data), "--workers", workers),
                           capture_output=True, text=True, timeout=300, env=env)
        assert p.returncode == 0, p.stderr
    assert _worker_parts(tmp_path / "two")
    assert not _worker_parts(tmp_path / "auto")  # a small file: one process
    assert_same_tables(tmp_path / "two", tmp_path / "auto")
    p = subprocess.run(cli("ingest", str(cap), "--data", str(tmp_path / "x"), "-w", "0"),
                       capture_output=True, text=True, timeout=300, env=env)
    assert p.returncode == 2 and "--workers" in p.stderr


def test_a_compressed_capture(tmp_path: Path) -> None:
    """Every worker decompresses the file itself."""
    import gzip

    cap = SAMPLES / "deribit_jsonrpc_tls13.pcap"
    gz = tmp_path / "deribit.pcap.gz"
    gz.write_bytes(gzip.compress(cap.read_bytes()))
    pcapflow.ingest([gz], keylog=_keylog(cap), data=tmp_path / "one")
    pcapflow.ingest([gz], keylog=_keylog(cap), data=tmp_path / "two", workers=2)
    assert_same_tables(tmp_path / "one", tmp_path / "two")
    assert _worker_parts(tmp_path / "two")


def test_jobs_and_workers(tmp_path: Path) -> None:
    """Captures in parallel processes, each sharded: the same rows."""
    caps = [SAMPLES / "okx_ws_tls12.pcap", SAMPLES / "binance_wsapi_tls13.pcap"]
    keys = [k for c in caps for k in _keylog(c)]
    pcapflow.ingest(caps, keylog=keys, data=tmp_path / "one")
    pcapflow.ingest(caps, keylog=keys, data=tmp_path / "many", jobs=2, workers=2)
    assert_same_tables(tmp_path / "one", tmp_path / "many")
    assert _worker_parts(tmp_path / "many")


_FORK_THREADS = """
import json, os, sys, threading
from rich.console import Console
import pcapflow.cli as cli
cli.console = Console(force_terminal=True, width=100)  # the progress bar is drawn
seen = []
real_fork = os.fork
def fork():
    seen.append(sorted(t.name for t in threading.enumerate()))
    return real_fork()
os.fork = fork
out, sys.argv = sys.argv[1], ["pcapflow", "ingest", *sys.argv[2:]]
code = 0
try:
    cli.main()
except SystemExit as e:
    code = e.code or 0
with open(out, "w") as fh:
    json.dump({"code": code, "threads_at_fork": seen}, fh)
"""


def test_no_thread_runs_when_the_cli_forks_its_workers(tmp_path: Path) -> None:
    """In a terminal the CLI draws a progress bar; it must not be redrawn by a
    thread of its own, which would be alive when the workers are forked."""
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    out = tmp_path / "out.json"
    p = subprocess.run([sys.executable, "-c", _FORK_THREADS, str(out), str(cap), "--keylog",
                        str(_keylog(cap)[0]), "--data", str(tmp_path / "d"), "-w", "2"],
                       capture_output=True, text=True, timeout=300, env=child_env())
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    assert got == {"code": 0, "threads_at_fork": [["MainThread"]]}, got
