"""``ingest --cluster``: capture sets on a ``dask.distributed.LocalCluster`` of worker
processes give the tables of a local ingest, table by table; a worker killed (SIGKILL)
in the middle of a set leaves the dataset whole and the set is ingested again on
another worker; no staging directory is left behind. A rotation continues across
cluster and local commands (the worker stages the resume state with the set's parts)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

import pcapflow
from pcapflow.cluster import STAGED_MARK

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows

distributed = pytest.importorskip("distributed")

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


def _keylogs() -> list[Path]:
    return sorted(SAMPLES.glob("*.keylog"))


def _plan(tmp: Path) -> list[list[str] | str]:
    """Four captures, one of them a set of three files (a rotation)."""
    parts = split(SAMPLES / "binance_rest_tls13.pcap", [90, 180], tmp, stem="rot-2024010112")
    return [[str(p) for p in parts], str(SAMPLES / "okx_ws_tls12.pcap"),
            str(SAMPLES / "lossy_rest_tls13.pcap"), str(SAMPLES / "fix44_plain.pcap")]


def _same_captures(a: Path, b: Path) -> None:
    con = duckdb.connect()
    q = ("SELECT * EXCLUDE (ingested_at) FROM read_parquet('{}/captures/*/*.parquet', "
         "hive_partitioning = true)")
    for x, y in ((a, b), (b, a)):
        diff = con.execute(f"{q.format(x)} EXCEPT ALL {q.format(y)}").fetchall()
        assert not diff, diff


@pytest.fixture(scope="module")
def cluster():
    c = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                 dashboard_address=None)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    tmp = tmp_path_factory.mktemp("local")
    plan = _plan(tmp)
    pcapflow.ingest(plan, keylog=_keylogs(), data=tmp / "ds")
    return tmp / "ds", plan


def test_cluster_equals_local_ingest(cluster, local, tmp_path: Path) -> None:
    ref, plan = local
    ds = tmp_path / "ds"
    results = pcapflow.ingest(plan, keylog=_keylogs(), data=ds,
                              cluster=cluster.scheduler_address)
    assert len(results) == 4
    counts = assert_same_rows(ref, ds)
    _same_captures(ref, ds)
    assert counts["latency"] > 200 and counts["fix_messages"] > 100
    assert not any((ds / ".staging").iterdir())


def test_the_command_line_ingests_on_a_cluster(cluster, local, tmp_path: Path) -> None:
    """``pcapflow ingest --cluster``, the command a user types: the CLI's ingest keeps
    pandas, SciPy and PyYAML from loading (they cost start-up, an ingest never uses
    them), but dask.distributed needs PyYAML for its configuration: with --cluster
    nothing is kept out (the command used to fail with "needs dask.distributed")."""
    import subprocess

    ref, plan = local
    ds = tmp_path / "ds"
    files = [f for p in plan for f in ([p] if isinstance(p, str) else p)]
    argv = [sys.executable, "-m", "pcapflow", "ingest", *files, "--data", str(ds),
            "--cluster", cluster.scheduler_address]
    for k in _keylogs():
        argv += ["--keylog", str(k)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_COLOR": "1", "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    counts = assert_same_rows(ref, ds)
    assert counts["latency"] > 200


def test_cluster_worker_killed_mid_set(cluster, local, tmp_path: Path) -> None:
    ref, plan = local
    ds = tmp_path / "ds"
    client = distributed.Client(cluster)
    pids = set(client.run(os.getpid).values())
    client.close()
    killed: list[tuple[int, bool]] = []  # (pid, its staging was complete when killed)
    stop = threading.Event()

    def killer() -> None:
        end = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < end and not killed:
            sdir = ds / ".staging"
            for st in sdir.iterdir() if sdir.is_dir() else []:
                pid = next((p for p in pids if f"-w{p}-" in st.name), None)
                if pid is not None:
                    complete = (st / STAGED_MARK).exists()
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, complete))
                    # the dataset is whole meanwhile: no partition of a set half-written
                    return
            time.sleep(0.005)

    t = threading.Thread(target=killer)
    t.start()
    try:
        results = pcapflow.ingest(plan, keylog=_keylogs(), data=ds,
                                  cluster=cluster.scheduler_address)
    finally:
        stop.set()
        t.join()
    assert killed, "no worker was caught staging"
    assert killed[0][1] is False, "the worker had finished its set when it was killed"
    assert len(results) == 4
    assert_same_rows(ref, ds)
    _same_captures(ref, ds)
    assert not any((ds / ".staging").iterdir())
    assert not any((ds / ".journal").glob("*"))


def test_a_rotation_continues_across_cluster_and_local_commands(cluster, tmp_path: Path
                                                                ) -> None:
    """Files 1-2 of a rotation ingested on the cluster, file 3 by a local command, file 4
    on the cluster again: each continues the set the one before left (its resume state
    staged by the worker, committed by the client), and the tables equal one ingest of
    the four files."""
    from pcapflow.pipelines import store

    parts = split(SAMPLES / "binance_rest_tls13.pcap", [60, 120, 180], tmp_path,
                  stem="rot-2024010112")
    keys = _keylogs()
    ref, ds = tmp_path / "ref", tmp_path / "ds"
    pcapflow.ingest([parts], keylog=keys, data=ref)
    first = pcapflow.ingest([parts[:2]], keylog=keys, data=ds,
                            cluster=cluster.scheduler_address)[0]
    assert (ds / store.STATE / f"capture_id={first.capture_id}").is_dir()
    mid = pcapflow.ingest([parts[2]], keylog=keys, data=ds)[0]
    last = pcapflow.ingest([parts[3]], keylog=keys, data=ds,
                           cluster=cluster.scheduler_address)[0]
    assert mid.resumed_from == str(parts[1]) and last.resumed_from == str(parts[2])
    assert mid.resumed + last.resumed >= 2
    assert first.capture_id == mid.capture_id == last.capture_id
    assert last.paths == [str(p) for p in parts]
    counts = assert_same_rows(ref, ds, captures=True)  # every table, alerts too
    assert counts["latency"] > 50


def test_a_staged_continuation_is_not_committed_over_a_newer_state(tmp_path: Path) -> None:
    """Two workers staged the same next file of a set (a retry racing its first attempt,
    or two commands): the first commit wins; the second expects the set as it read it,
    finds it changed, and leaves it as it is (one line), never rewinding its state."""
    from pcapflow.pipelines import store
    from pcapflow.pipelines.ingest import stage_capture

    from pcapflow import api

    parts = split(SAMPLES / "fix44_plain.pcap", [60], tmp_path, stem="rot-2024010112")
    ds = tmp_path / "ds"
    pcapflow.ingest([parts[0]], data=ds)
    staged = [stage_capture([str(parts[1])], ds, owner=store.cluster_owner(), resume=True,
                            app_layer=api._app_factory([]), matcher=api._matcher(None, ds))
              for _ in range(2)]  # as the cluster's task does
    (r, d, expect), (r2, d2, expect2) = staged
    assert expect is not None and expect == expect2 and r.resumed_from == str(parts[0])
    store.Staging.adopt(ds, d).commit(r.capture_id, supersede=r.sha256s, expect=expect)
    with pytest.raises(store.StaleCapture) as err:
        store.Staging.adopt(ds, d2).commit(r2.capture_id, supersede=r2.sha256s,
                                           expect=expect2)
    assert "\n" not in str(err.value)
    ref = tmp_path / "ref"
    pcapflow.ingest([parts], data=ref)
    assert_same_rows(ref, ds, captures=True)


def test_cluster_refuses_local_process_options(tmp_path: Path) -> None:
    from pcapflow.parsers.errors import PcapflowError

    cap = SAMPLES / "fix44_plain.pcap"
    for opts, word in (({"workers": 2}, "--workers"), ({"jobs": 2}, "--jobs")):
        with pytest.raises(PcapflowError, match=word) as err:
            pcapflow.ingest([cap], data=tmp_path / "ds", cluster="local:1", **opts)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_recover_keeps_staging_of_a_live_or_remote_client(tmp_path: Path) -> None:
    """A cluster client's staging (written by its workers) survives another process's
    ``recover`` while the client lives or is on another host; a dead local client's
    is removed, as a dead local ingest's is."""
    from pcapflow.pipelines import store

    root = tmp_path / "ds"
    sdir = root / store.STAGING
    dead = 2**22 + 12345  # above the default pid_max: no such process
    names = {
        f"{store.cluster_owner()}-w1-aaaa": True,          # this process: alive
        f"c{dead}@{store.host_tag()}-w1-bbbb": False,       # a dead client here
        f"c{dead}@elsewhere_host-w1-cccc": True,            # another host: cannot tell
        f"{dead}-dddd": False,                              # a dead local ingest
    }
    for n in names:
        (sdir / n).mkdir(parents=True)
    with store.locked(root):
        store.recover(root)
    assert {p.name for p in sdir.iterdir()} == {n for n, keep in names.items() if keep}
