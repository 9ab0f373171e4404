"""``pcapflow watch`` against a real ``tcpdump -G 1`` rotation (plain and ``-z gzip``)
of real order traffic on loopback (``tests/helpers/live_traffic.py``), stopped with Ctrl-C in
the middle and started again.

Checked: every file tcpdump wrote is in the dataset exactly once, with the packets a
single ingest of the whole rotation reads from it (nothing twice, nothing lost, across
the restart); the interrupted watch exits 130 with one line; and, once resume across
commands exists (issue 15.2), the tables equal one ingest of the joined files.
Also the completion rules on their own (``pcapflow.watch.Watcher``): a file still open
for writing, a file being compressed, a ring buffer reusing a name.
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

import pyarrow as pa
import pyarrow.dataset as pads
import pytest

import pcapflow
from pcapflow.watch import Watcher, status_lines, strip_compression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parents[1] / "sample_pcaps"
TCPDUMP = shutil.which("tcpdump")
needs_tcpdump = pytest.mark.skipif(
    TCPDUMP is None or os.geteuid() != 0, reason="needs tcpdump and root (capture on lo)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _captures(root: Path) -> pa.Table:
    part = root / "captures"
    if not part.is_dir() or not any(part.glob("capture_id=*/*.parquet")):
        return pa.table({"path": pa.array([], pa.string()), "packets": pa.array([], pa.int64()),
                         "capture_id": pa.array([], pa.string())})
    hive = pads.HivePartitioning(pa.schema([("capture_id", pa.string())]))
    return pads.dataset(part, format="parquet", partitioning=hive).to_table(
        columns=["capture_id", "path", "packets"])


def _capture_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and p.stat().st_size >= 24)


def _watch(d: Path, ds: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pcapflow", "watch", str(d), "--data", str(ds),
         "--poll", "0.2", "--settle", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stop(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


@pytest.fixture(scope="module", params=["plain", "gzip"])
def rotation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A tcpdump -G 1 rotation followed by a watch that is interrupted and restarted."""
    base = tmp_path_factory.mktemp(f"rot-{request.param}")
    d, ds = base / "rot", base / "ds"
    d.mkdir()
    port = _free_port()
    first = _watch(d, ds)
    cmd = [TCPDUMP, "-Z", "root", "-i", "lo", "-U", "-G", "1", "--time-stamp-precision=nano",
           "-w", str(d / "live-%Y%m%d%H%M%S.pcap")]
    if request.param == "gzip":
        cmd += ["-z", "gzip"]
    dump = subprocess.Popen([*cmd, f"tcp port {port}"], stderr=subprocess.PIPE, text=True)
    restarts: list[tuple[int, str, str]] = []
    try:
        _wait(lambda: any(d.iterdir()), 10, "tcpdump's first file")
        script = HERE.parent / "helpers" / "live_traffic.py"
        traffic = subprocess.Popen([sys.executable, str(script), str(port),
                                    "6", "40"], stdout=subprocess.PIPE, text=True)
        _wait(lambda: _captures(ds).num_rows >= 1, 90, "the first file ingested")
        restarts.append(_stop(first))  # Ctrl-C in the middle of the rotation
        second = _watch(d, ds)
        sent = traffic.communicate(timeout=60)[0]
        time.sleep(1.2)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=20)
    time.sleep(1.0)  # the last file's compressor
    try:
        def all_in() -> bool:
            files = {strip_compression(str(p)) for p in _capture_files(d)}
            got = {strip_compression(p) for p in _captures(ds).column("path").to_pylist()}
            return bool(files) and files <= got
        _wait(all_in, 120, "every file ingested")
        time.sleep(1.0)  # a duplicate ingest, if any, would land now
    finally:
        restarts.append(_stop(second))
    ref = base / "ref"
    files = [str(p) for p in _capture_files(d)]
    pcapflow.ingest([files], data=ref)  # the whole rotation as one capture
    return {"dir": d, "ds": ds, "ref": ref, "restarts": restarts, "sent": sent,
            "kind": request.param, "files": files}


@needs_tcpdump
def test_watch_ingests_each_file_once_across_a_restart(rotation) -> None:
    files = rotation["files"]
    assert len(files) >= 4, files  # tcpdump rotated several times
    if rotation["kind"] == "gzip":
        assert all(f.endswith(".gz") for f in files[:-1]), files
    got = _captures(rotation["ds"])
    paths = [strip_compression(p) for p in got.column("path").to_pylist()]
    # nothing twice
    assert len(paths) == len(set(paths)), sorted(paths)
    # nothing lost: every file, with every packet of it
    assert set(paths) == {strip_compression(f) for f in files}
    ref = _captures(rotation["ref"])
    want = {strip_compression(p): n for p, n in zip(ref.column("path").to_pylist(),
                                                    ref.column("packets").to_pylist(),
                                                    strict=True)}
    have = {strip_compression(p): n for p, n in zip(got.column("path").to_pylist(),
                                                    got.column("packets").to_pylist(),
                                                    strict=True)}
    assert have == want
    assert sum(have.values()) > 1000
    # no staging or journal left behind
    assert not any((rotation["ds"] / ".staging").glob("*"))
    assert not any((rotation["ds"] / ".journal").glob("*"))
    # each stop: exit 130 and one line
    for rc, _out, err in rotation["restarts"]:
        lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
        assert rc == 130, err
        assert len(lines) == 1 and "watch stopped" in lines[0], err
    # the first run ingested files before it was stopped (it followed the rotation)
    assert "1 file(s)" in rotation["restarts"][0][2] or "file(s) it ingested" in \
        rotation["restarts"][0][2]


@needs_tcpdump
def test_watch_tables_equal_one_ingest_of_the_rotation(rotation) -> None:
    from helpers.dataset_compare import assert_same_rows

    counts = assert_same_rows(rotation["ref"], rotation["ds"], skip={"flows": [],
                                                                    "latency": []})
    assert counts["latency"] > 100


# -- the completion rules, without tcpdump ---------------------------------------------


def _parts(tmp: Path, cuts: list[int]) -> list[Path]:
    (tmp / "src").mkdir(exist_ok=True)
    return split(SAMPLES / "binance_rest_tls13.pcap", cuts, tmp / "src",
                 stem="cap-202401011200")


def _watcher(d: Path, ds: Path, ingested: list[str]) -> Watcher:
    def one(path: str) -> object:
        ingested.append(os.path.basename(path))
        return pcapflow.ingest([[path]], data=ds)[0]

    return Watcher(d, ds, one, poll=0.0, settle=0.0, idle=3600)


def test_watch_waits_for_writer_and_compressor(tmp_path: Path) -> None:
    """A file open for writing, or with its .gz beside it, waits; a gzip'd file is one
    file with its plain name; a restarted watcher ingests nothing twice."""
    import gzip

    src = _parts(tmp_path, [70, 140, 210])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    seen: list[str] = []
    w = _watcher(d, ds, seen)
    shutil.copy(src[0], d / src[0].name)
    shutil.copy(src[1], d / src[1].name)
    writer = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], "
                               "'ab'); print('open', flush=True); time.sleep(60)",
                               str(d / src[1].name)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
    try:
        w.step()
        w.step()
    finally:
        writer.kill()
        writer.wait()
    assert seen == [src[0].name]  # the second is still open for writing (another process)
    # -z gzip: the plain file and its .gz side by side while compressing
    (d / (src[1].name + ".gz")).write_bytes(gzip.compress(src[1].read_bytes()))
    w.step()
    assert seen == [src[0].name]
    (d / src[1].name).unlink()
    w.step()
    assert seen == [src[0].name, src[1].name + ".gz"]
    # a new watcher (a restart) ingests the rest, never what is in the dataset
    shutil.copy(src[2], d / src[2].name)
    seen2: list[str] = []
    _watcher(d, ds, seen2).step()
    assert seen2 == [src[2].name]
    assert w.status.files_lost == 0  # compressed under another name: not lost
    got = _captures(ds).column("path").to_pylist()
    assert sorted(os.path.basename(strip_compression(p)) for p in got) == \
        sorted(p.name for p in src[:3])


def _hold_open(path: Path) -> subprocess.Popen[str]:
    """Another process holding ``path`` open for writing, as tcpdump does."""
    p = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], "
                          "'ab'); print('open', flush=True); time.sleep(60)", str(path)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "open"
    return p


def _first_ts(path: Path) -> int:
    from pcapflow.parsers.capture.capset import peek

    return peek(str(path)).first_ts


def test_watch_says_when_a_ring_overwrites_a_file_it_did_not_ingest(tmp_path: Path) -> None:
    """tcpdump -W wraps while a file is still being written (the watch fell behind):
    the same inode is truncated and refilled with later packets. The earlier packets
    are gone: the watch counts the file lost and says which, instead of nothing."""
    src = _parts(tmp_path, [100])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    seen: list[str] = []
    lost: list[tuple[str, int]] = []
    w = _watcher(d, ds, seen)
    w.on_lost = lambda path, ts: lost.append((os.path.basename(path), ts))
    ring = d / "ring.pcap0"
    shutil.copy(src[0], ring)
    holder = _hold_open(ring)
    try:
        w.step()
        assert seen == [] and w.status.files_lost == 0  # still being written
        ino = ring.stat().st_ino
        with open(ring, "r+b") as fh:  # the ring wrapped onto it: truncated, refilled
            fh.truncate(0)
            fh.write(src[1].read_bytes())
        assert ring.stat().st_ino == ino
        w.step()
    finally:
        holder.kill()
        holder.wait()
    assert lost == [("ring.pcap0", _first_ts(src[0]))]
    assert w.status.files_lost == 1 and "LOST 1" in " ".join(status_lines(w.status))
    w.step()  # closed now: the later packets are ingested, once
    w.step()
    assert seen == ["ring.pcap0"] and w.status.files_lost == 1


def test_watch_says_when_a_ring_overwrites_a_file_while_it_is_read(tmp_path: Path) -> None:
    """The ring came back to a file while the watch was reading it: what was read may
    lack packets, so the file counts as lost; the new packets are the next file."""
    src = _parts(tmp_path, [100])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    ring = d / "ring.pcap0"
    shutil.copy(src[0], ring)
    seen: list[str] = []

    def one(path: str) -> object:
        result = pcapflow.ingest([[path]], data=ds)[0]
        if not seen:  # the ring wraps onto it during the first ingest
            with open(path, "r+b") as fh:
                fh.truncate(0)
                fh.write(src[1].read_bytes())
        seen.append(os.path.basename(path))
        return result

    w = Watcher(d, ds, one, poll=0.0, settle=0.0, idle=3600)
    w.step()
    assert seen == ["ring.pcap0"] and w.status.files_lost == 1
    w.step()
    assert seen == ["ring.pcap0", "ring.pcap0"] and w.status.files_lost == 1
    assert _captures(ds).num_rows == 2


def test_watch_says_when_a_ring_deletes_a_file_it_did_not_ingest(tmp_path: Path) -> None:
    """dumpcap -b files:N deletes its oldest file: one the watch had not ingested yet is
    lost and counted; one it had ingested, or one gzip renamed, is not."""
    src = _parts(tmp_path, [70, 140])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    seen: list[str] = []
    w = _watcher(d, ds, seen)
    a, b = d / "ring_00001_20240101120000.pcap", d / "ring_00002_20240101120001.pcap"
    shutil.copy(src[0], a)
    w.step()
    assert seen == [a.name]
    shutil.copy(src[1], b)
    holder = _hold_open(b)
    try:
        w.step()
        a.unlink()  # ingested: deleting it loses nothing
        w.step()
        assert w.status.files_lost == 0
        b.unlink()  # never ingested
        w.step()
    finally:
        holder.kill()
        holder.wait()
    assert w.status.files_lost == 1 and w.status.last_lost == b.name
    assert seen == [a.name]


def test_watch_ring_buffer_reuses_a_name(tmp_path: Path) -> None:
    """tcpdump -C -W: a name comes back with later packets: it is a new file."""
    src = _parts(tmp_path, [100])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    seen: list[str] = []
    w = _watcher(d, ds, seen)
    ring = d / "ring.pcap0"
    shutil.copy(src[0], ring)
    w.step()
    w.step()
    assert seen == ["ring.pcap0"]
    ring.unlink()
    shutil.copy(src[1], ring)  # the ring wrapped: same name, the later packets
    w.step()
    assert seen == ["ring.pcap0", "ring.pcap0"]
    assert _captures(ds).num_rows == 2


@pytest.mark.parametrize(("setting", "first", "backend"), [
    (None, "pcapflow, pyarrow", "system"), (None, "pyarrow, pcapflow", None),
    ("mimalloc", "pcapflow, pyarrow", "mimalloc")])
def test_arrow_allocates_with_the_system_allocator_unless_told(setting: str | None, first: str,
                                                                backend: str | None) -> None:
    """Arrow's own allocator kept freed pages: a watch grew 10-20 MB per rotation file
    with it, flat with the system's (benchmarks/README.md, "Watch memory"). pcapflow
    chooses the system's before pyarrow is imported (the CLI imports pcapflow first; a
    process that imported pyarrow before keeps Arrow's); a user's setting is kept."""
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if backend is None:  # Arrow's own choice (jemalloc or mimalloc, by pyarrow's version)
        backend = subprocess.run(
            [sys.executable, "-c", "import pyarrow; "
             "print(pyarrow.default_memory_pool().backend_name)"],
            env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert backend != "system"
    if setting:
        env["ARROW_DEFAULT_MEMORY_POOL"] = setting
    out = subprocess.run(
        [sys.executable, "-c", f"import {first}; "
         "print(pyarrow.default_memory_pool().backend_name)"],
        env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [backend]


def test_watch_closes_the_matchers_database_every_few_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The matcher's DuckDB database, reused by every command of the process, keeps a
    little memory per command (~0.08 MB per rotation file: issue 19); the watch closes
    it every ``RECYCLE_FILES`` files, and the next file matches as before."""
    from helpers.dataset_compare import assert_same_rows
    from pcapflow.pipelines import compact, match

    from pcapflow import watch

    closed: list[int] = []
    real = match.close_database
    monkeypatch.setattr(watch, "RECYCLE_FILES", 2)
    # (and it compacts the set as it goes: tiers of two parts here)
    monkeypatch.setattr(compact, "TIER_PARTS", 2)
    monkeypatch.setattr(compact, "TIER_BASE_BYTES", 1 << 30)
    compact.STATS.clear()
    monkeypatch.setattr(match, "close_database", lambda: (closed.append(1), real())[1])
    parts = _parts(tmp_path, [60, 120, 180, 240])
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    for p in parts:
        shutil.copy(p, d / p.name)
    w = Watcher(d, ds, lambda path: pcapflow.ingest([[path]], data=ds)[0],
                poll=0.0, settle=0.0, idle=0.0)
    assert w.step() == 5
    assert len(closed) == 2  # (after files 2 and 4; the fifth opened a new one)
    assert compact.STATS["merges"] >= 2
    finals = [p for p in (ds / "tcp_events").glob("*/*.parquet")
              if not p.name.startswith("part-t")]
    assert len(finals) <= 3, finals  # (5 files)
    pcapflow.ingest([[str(p) for p in parts]], data=tmp_path / "ref")
    assert_same_rows(tmp_path / "ref", ds)


def test_watch_status_reads_the_parts_the_file_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The status counts the orders and latencies of the file just ingested from the
    parts its command wrote: not the set's earlier parts, whose number grows with the
    set (issue 19)."""
    from pcapflow.pipelines import match_carry

    from pcapflow import watch, why_carry

    # final parts within the sample's seconds (``test_resume_match``'s settings)
    monkeypatch.setattr(match_carry, "SETTLE_NS", 100_000_000)
    monkeypatch.setattr(why_carry, "SETTLE_NS", 0)
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    keys = [cap.with_suffix(".keylog")]
    (tmp_path / "src").mkdir()
    parts = split(cap, [400, 800, 1200], tmp_path / "src", stem="cap-202401011200")
    d, ds = tmp_path / "rot", tmp_path / "ds"
    d.mkdir()
    read: list[str] = []
    real = watch._partition_files
    monkeypatch.setattr(watch, "_partition_files", lambda root, table, cid, written=None: [
        *(out := real(root, table, cid, written)),
        *([] if table == "captures" else read.extend(out) or [])])
    w = Watcher(d, ds, lambda path: pcapflow.ingest([[path]], keylog=keys, data=ds)[0],
                poll=0.0, settle=0.0, idle=0.0)
    seen_kept = False
    for k, p in enumerate(parts):
        shutil.copy(p, d / p.name)
        before = {str(f) for t in ("latency", "orders") for f in (ds / t).rglob("*.parquet")}
        for f in before:  # (written by earlier commands, a minute ago)
            os.utime(f, ns=(time.time_ns() - 60 * 10**9,) * 2)
        mtime = {f: os.stat(f).st_mtime_ns for f in before}
        read.clear()
        w.idle = 0.0 if k == len(parts) - 1 else 3600
        assert w.step() == 1
        kept = {f for f in before if os.path.exists(f) and os.stat(f).st_mtime_ns == mtime[f]}
        assert read and not set(read) & kept, "the status read the set's earlier parts"
        seen_kept = seen_kept or bool(kept)
    assert seen_kept  # (there were earlier parts to leave alone)
    assert sum(len(v.latency_ns) for v in w.status.venues.values()) > 0
