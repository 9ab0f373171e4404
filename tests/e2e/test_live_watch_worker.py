"""``pcapflow watch`` ingests in a worker process replaced every ``--worker-files``
files (``pcapflow.watch_worker``: its memory bounded over days, issue 19).

Checked: the tables of a rotation whose workers are replaced every two files, and
whose worker is killed in the middle of a file, equal one ingest of the joined files
(the killed file ingested again, nothing twice); Ctrl-C while a worker ingests exits
130 with one line, leaves no worker behind, and a restart ingests the rest once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

import pcapflow
from pcapflow import watch
from pcapflow.watch import Watcher, strip_compression
from pcapflow.watch_worker import WorkerIngest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parents[1] / "sample_pcaps"
CAP = SAMPLES / "binance_rest_tls13.pcap"
KEYS = [CAP.with_suffix(".keylog")]


def _paths(root: Path) -> list[str]:
    hive = pads.HivePartitioning(pa.schema([("capture_id", pa.string())]))
    t = pads.dataset(root / "captures", format="parquet", partitioning=hive).to_table(
        columns=["path"])
    return sorted(os.path.basename(strip_compression(p)) for p in t.column("path").to_pylist())


def test_a_killed_worker_leaves_the_dataset_and_its_file_is_ingested_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "src").mkdir()
    parts = split(CAP, [80, 160], tmp_path / "src", stem="cap-202401011200")
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    for p in parts:
        shutil.copy(p, d / p.name)
    ingest = WorkerIngest(ds, KEYS, None, files=2)
    killed: list[int] = []

    def one(path: str) -> object:
        if path.endswith(parts[1].name) and not killed:  # the second file: kill its worker
            pid = ingest.pid
            assert pid is not None  # (the first file's, warm: killed while it ingests)
            killed.append(pid)
            threading.Timer(0.05, os.kill, (pid, signal.SIGKILL)).start()
        return ingest(path)

    try:
        with monkeypatch.context() as m:
            # the matcher's database, closed every RECYCLE_FILES files, is the worker's:
            # the watch process does not import the matcher to close a database it
            # never opened
            m.setattr(watch, "RECYCLE_FILES", 1)
            m.setitem(sys.modules, "pcapflow.pipelines.match", None)  # (no import here)
            w = Watcher(d, ds, one, poll=0.0, settle=0.0, idle=0.0)
            assert w.step() == len(parts)
    finally:
        ingest.close()
    assert ingest.lost == 1 and killed
    assert ingest.started == 3  # files 1-2 (killed in 2), 2 again-3, one for a next file
    assert _paths(ds) == sorted(p.name for p in parts)  # each once
    pcapflow.ingest([[str(p) for p in parts]], keylog=KEYS, data=tmp_path / "ref")
    counts = assert_same_rows(tmp_path / "ref", ds)
    assert counts["latency"] > 0


def test_ctrl_c_while_a_worker_ingests_exits_130_and_leaves_no_worker(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    parts = split(CAP, [120], tmp_path / "src", stem="cap-202401011200")
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    for p in parts:
        shutil.copy(p, d / p.name)
    cmd = [sys.executable, "-m", "pcapflow", "watch", str(d), "--data", str(ds),
           "--keylog", str(KEYS[0]), "--poll", "0.1", "--settle", "0", "--idle", "0"]
    watch = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = 0
    end = time.monotonic() + 60
    while not worker and time.monotonic() < end:  # its worker, once started
        time.sleep(0.05)
        with open(f"/proc/{watch.pid}/task/{watch.pid}/children") as fh:
            worker = int((fh.read().split() or ["0"])[0])
    assert worker, "no worker started"
    time.sleep(0.3)  # (importing, or ingesting the first file)
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=20)
    assert watch.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("interrupted: watch stopped"), err
    assert "Traceback" not in err
    stat = Path(f"/proc/{worker}/stat")
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # (gone, or a zombie)
    # a restart ingests what is left, nothing twice
    again = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 90
    while time.monotonic() < end:
        time.sleep(0.3)
        if (ds / "captures").is_dir() and len(_paths(ds)) >= len(parts):
            break
    again.send_signal(signal.SIGINT)
    again.communicate(timeout=20)
    assert _paths(ds) == sorted(p.name for p in parts)
