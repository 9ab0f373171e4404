"""``pcapflow watch`` following real size rotations: ``tcpdump -C 1`` (its first file
``cap.pcap`` has no number, then ``cap.pcap1``, ``cap.pcap2``...) and, when installed,
``dumpcap -b filesize:`` (``ring_00001_<time>.pcapng``...), both writing into one
directory at once while real order traffic (and a filler stream, so megabyte files
turn over every second or so) runs on loopback (``tests/helpers/live_traffic.py``).

Checked: the watcher (``pcapflow.watch.Watcher`` with the CLI's ingest, in this
process) follows the two recordings apart, one capture each; the ``-C`` rotation is
one capture from its first file on (that file keeps the state of its open
connections, ``capset.first_of_size_rotation``); and the tables equal one ingest of
each recording's joined files.

A real wrapping ring, ``tcpdump -C 1 -W 3`` (names ``ring.pcap0``..``ring.pcap2``
reused), is followed while a second ``tcpdump`` records the same traffic into one
file: the watch's tables equal one ingest of that unrotated recording, so nothing
was lost to the wrap (the traffic leaves the watch two rotation periods, ~6 s, per
file; a watch that falls behind says which file it lost: ``test_live_watch.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pcapflow
from pcapflow.watch import Watcher, ingested_files, strip_compression, watch_ingest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows

HELPERS = Path(__file__).resolve().parents[1] / "helpers"
TCPDUMP, DUMPCAP = shutil.which("tcpdump"), shutil.which("dumpcap")
needs_capture = pytest.mark.skipif(TCPDUMP is None or os.geteuid() != 0,
                                   reason="needs tcpdump and root (capture on lo)")
SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _files(d: Path, prefix: str) -> list[str]:
    return sorted(str(p) for p in d.iterdir() if p.name.startswith(prefix)
                  and p.stat().st_size > 32)


@pytest.fixture(scope="module")
def rings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("rings")
    d, ds, ref = base / "rot", base / "ds", base / "ref"
    d.mkdir()
    port, filler = _free_port(), _free_port()
    bpf = f"tcp port {port} or tcp port {filler}"
    writers = [subprocess.Popen(
        [TCPDUMP, "-Z", "root", "-i", "lo", "-U", "-C", "1", "--time-stamp-precision=nano",
         "-w", str(d / "cap.pcap"), bpf], stderr=subprocess.PIPE, text=True)]
    if DUMPCAP is not None:
        writers.append(subprocess.Popen(
            [DUMPCAP, "-q", "-i", "lo", "-b", "filesize:1000", "-w", str(d / "ring.pcapng"),
             "-f", bpf], stderr=subprocess.PIPE, text=True))
    w = Watcher(d, ds, watch_ingest(ds, None, None), poll=0.2, settle=0.5, idle=60)
    try:
        end = time.monotonic() + 10
        while len(list(d.iterdir())) < len(writers) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)  # both writers capturing
        traffic = subprocess.Popen([sys.executable, str(HELPERS / "live_traffic.py"),
                                    str(port), "3", "40", str(filler), "1500000"],
                                   stdout=subprocess.PIPE, text=True)
        end = time.monotonic() + 60
        while traffic.poll() is None and time.monotonic() < end:
            w.step()  # following the rotation while it is written
            time.sleep(0.2)
        traffic.communicate(timeout=30)
        time.sleep(0.5)
    finally:
        for p in writers:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=20)
    during = w.status.files_ingested
    end = time.monotonic() + 120
    while True:
        w.step()
        files = {strip_compression(f) for f in _files(d, "")}
        if files <= set(ingested_files(ds)) or time.monotonic() > end:
            break
        time.sleep(0.2)
    sets = [_files(d, "cap.pcap"), _files(d, "ring_")]
    pcapflow.ingest([s for s in sets if s], data=ref)  # each recording as one capture
    return {"ds": ds, "ref": ref, "sets": sets, "during": during}


@needs_capture
def test_watch_follows_a_size_rotation_from_its_first_file(rings) -> None:  # type: ignore[no-untyped-def]
    ds, sets = rings["ds"], rings["sets"]
    cap = sets[0]
    assert len(cap) >= 3 and cap[0].endswith("/cap.pcap") and cap[1].endswith("cap.pcap1"), cap
    if DUMPCAP is not None:
        assert len(sets[1]) >= 3, sets[1]
    assert rings["during"] >= 1  # files were ingested while the writers wrote
    with pcapflow.open(ds) as db:
        rows = db.fetchall("SELECT path, capture_id, file_index FROM captures ORDER BY path")
    by_set = [{cid for p, cid, _ in rows if p in s} for s in sets if s]
    assert all(len(ids) == 1 for ids in by_set), rows  # a recording is one capture
    assert len(set().union(*by_set)) == len(by_set)  # the recordings apart
    assert sorted(p for p, _, _ in rows) == sorted(f for s in sets for f in s)
    assert [i for p, _, i in rows if p in cap] == list(range(len(cap)))


@needs_capture
def test_size_rotation_tables_equal_one_ingest_of_the_files(rings) -> None:  # type: ignore[no-untyped-def]
    counts = assert_same_rows(rings["ref"], rings["ds"])  # every table, alerts too
    assert counts["orders"] > 50 and counts["latency"] > 50, counts


def test_status_counts_each_files_orders_once(tmp_path: Path) -> None:
    """The status line's window and orders/s are of the file just ingested, not of the
    whole resumed set (whose tables hold every file's rows)."""
    cap = SAMPLES / "binance_rest_tls13.pcap"
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    parts = split(cap, [90, 180], tmp_path, stem="cap-202401011200")
    w = Watcher(d, ds, watch_ingest(ds, [cap.with_suffix(".keylog")], None), poll=0.0,
                settle=0.0, idle=3600)
    per_file = []
    for p in parts:
        shutil.copy(p, d / p.name)
        assert w.step() == 1
        per_file.append(w.status.orders_per_s)
    with pcapflow.open(ds) as db:
        acks = db.scalar("SELECT count(*) FROM latency WHERE leg = 'ack' "
                         "AND latency_ns IS NOT NULL")
        spans = db.fetchall("SELECT epoch_ns(first_ts), epoch_ns(last_ts) FROM captures "
                            "ORDER BY file_index")
        want = [db.scalar(f"SELECT count(*) FROM orders WHERE epoch_ns(ts) BETWEEN {a} "
                          f"AND {b}") / ((b - a) / 1e9) for a, b in spans[1:]]
    assert 0 < acks < 2000  # the window holds them all, each once
    assert sum(len(v.latency_ns) for v in w.status.venues.values()) == acks
    assert per_file[1:] == pytest.approx(want) and max(want) > 0


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("wrap")
    d, ds, ref = base / "rot", base / "ds", base / "ref"
    d.mkdir()
    port, filler = _free_port(), _free_port()
    bpf = f"tcp port {port} or tcp port {filler}"
    full = base / "full.pcap"
    common = [TCPDUMP, "-Z", "root", "-i", "lo", "-U", "--time-stamp-precision=nano"]
    writers = [subprocess.Popen([*common, "-C", "1", "-W", "3", "-w", str(d / "ring.pcap"),
                                 bpf], stderr=subprocess.PIPE, text=True),
               subprocess.Popen([*common, "-w", str(full), bpf], stderr=subprocess.PIPE,
                                text=True)]
    copies = base / "copies"
    copies.mkdir()
    log: list[tuple[str, int, int, int | None]] = []
    ingest_file = watch_ingest(ds, None, None)

    def ingest_one(path: str) -> object:  # what the ring held when the watch took it
        size = os.stat(path).st_size
        shutil.copy(path, copies / f"{len(list(copies.iterdir())):03d}-{Path(path).name}")
        result = ingest_file(path)
        log.append((Path(path).name, size, os.stat(path).st_size,
                    getattr(result, "packets", None)))  # said when a check fails
        return result

    w = Watcher(d, ds, ingest_one, poll=0.2, settle=0.5, idle=60)
    names: set[str] = set()
    try:
        end = time.monotonic() + 10
        while not (full.exists() and any(d.iterdir())) and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)  # both writers capturing
        # a 1 MB ring file every ~3 s, ~6 files over 3 names: wraps; the watch has two
        # rotation periods to take each file before the ring comes back to it
        traffic = subprocess.Popen([sys.executable, str(HELPERS / "live_traffic.py"),
                                    str(port), "18", "30", str(filler), "300000"],
                                   stdout=subprocess.PIPE, text=True)
        end = time.monotonic() + 60
        while traffic.poll() is None and time.monotonic() < end:
            names |= {p.name for p in d.iterdir()}
            w.step()
            time.sleep(0.2)
        traffic.communicate(timeout=30)
        time.sleep(0.5)
    finally:
        for p in writers:
            p.send_signal(signal.SIGINT)
        stats = [p.communicate(timeout=20)[1].strip().splitlines()[-3:] for p in writers]
    end = time.monotonic() + 120
    # the ring's names are all in the dataset already: done is by content (the watch's)
    while (w.step() or not all(f.done for f in w.files.values())) and time.monotonic() < end:
        time.sleep(0.2)
    pcapflow.ingest([sorted(str(p) for p in copies.iterdir())], data=ref)
    pcapflow.ingest([[str(full)]], data=base / "full")
    return {"ds": ds, "ref": ref, "full": base / "full", "names": names, "watcher": w,
            "log": {"ingested (name, size before, after, packets)": log, "tcpdump": stats}}


@needs_capture
def test_watch_follows_a_wrapping_ring_and_loses_nothing(wrapped) -> None:  # type: ignore[no-untyped-def]
    ds, w = wrapped["ds"], wrapped["watcher"]
    assert wrapped["names"] == {f"ring.pcap{i}" for i in range(3)}  # every name in use
    assert w.status.files_lost == 0, f"the watch fell behind the ring: {w.status}"
    with pcapflow.open(ds) as db:
        rows = db.fetchall("SELECT path, capture_id, file_index FROM captures "
                           "ORDER BY file_index")
    assert len({cid for _, cid, _ in rows}) == 1  # one recording, one capture set
    assert len(rows) >= 4, rows  # more files than names: the ring wrapped
    assert [os.path.basename(p) for p, _, _ in rows][:4] == \
        ["ring.pcap0", "ring.pcap1", "ring.pcap2", "ring.pcap0"]
    counts = assert_same_rows(wrapped["ref"], ds)  # every table, alerts too
    assert counts["orders"] > 200 and counts["latency"] > 200, counts
    # nothing lost to the wrap: the same packets, connections and orders as the
    # unrotated recording (each tcpdump stamps a loopback packet on its own receipt, so
    # times differ by ~1 µs between the two: compared is what does not depend on them)
    queries = ("SELECT sum(packets) FROM captures",
               "SELECT count(*), count(DISTINCT correlation_id) FROM orders",
               "SELECT list(client_port ORDER BY client_port), sum(packets_out + packets_in), "
               "sum(payload_bytes_out + payload_bytes_in), sum(retransmissions + gaps) "
               "FROM flows")
    with pcapflow.open(ds) as a, pcapflow.open(wrapped["full"]) as b:
        for q in queries:
            assert a.fetchall(q) == b.fetchall(q), (q, wrapped["log"])
