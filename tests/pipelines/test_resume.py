"""Resuming a rotation across commands: one file per ingest gives the rows of one ingest.

Every sample capture is split (``capture_split``: by hand, pcapng blocks kept) into 2..4
files at packets inside TLS records, WebSocket frames, HTTP bodies and FIX messages
(and, for a few samples by default, every sample with ``PCAPFLOW_SLOW_TESTS=1``, in
thirds, gzip'd), and the files are ingested ONE PER CALL (and once through the CLI, one
command per file): every table must hold exactly the rows of the single-file ingest, bookkeeping
aside: ``capture_id`` (the set keeps its first file's id; a single file's is its
own), ``packets.file``/``file_packet`` (the file a packet came from) and the
``captures`` rows (one per file; checked against a one-command ingest of the same
files instead). Then what the kept state must never hold (key material, API keys,
plaintext of a decrypted connection), what a missing key log does, a crash at the
commit, an unknown state version, the bound, and a file ingested twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest
from pcapflow.parsers.capture import open_capture
from pcapflow.parsers.errors import PcapflowError
from pcapflow.parsers.limits import Limits
from pcapflow.parsers.websocket.deflate import MessageInflater, MidstreamInflater
from pcapflow.pipelines import bundle, store
from pcapflow.pipelines.ingest import resume

import pcapflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows as same_rows
from helpers.dataset_compare import parquet_files

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))


def _keylogs(cap: Path, work: Path) -> list[Path]:
    """The sample's key log; a pcapng's secrets are in its Decryption Secrets Block, which
    only its first file holds: written out, as a user resuming it would pass them."""
    key = cap.with_suffix(".keylog")
    if key.exists():
        return [key]
    if cap.suffix != ".pcapng":
        return []
    with open_capture(cap) as reader:
        for _ in reader:
            pass
        text = b"".join(data for _, data in reader.secrets)
    out = work / f"{cap.stem}.dsb.keylog"
    out.write_bytes(text)
    return [out]


def assert_same_rows(a: Path, b: Path, *, captures: bool = False) -> dict[str, int]:
    """The tables of datasets ``a`` and ``b`` hold the same rows (as multisets),
    bookkeeping columns aside; ``captures`` compared only when asked."""
    # alerts included: each command derives them over the whole set's rows
    # (test_alerts_of_one_file_per_call_are_one_ingests checks samples that have some)
    return same_rows(a, b, captures=captures)


@pytest.fixture(scope="module")
def singles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """Each sample ingested alone, whole: (dataset, packets)."""
    out = {}
    for cap in CAPTURES:
        root = tmp_path_factory.mktemp(cap.stem)
        r = pcapflow.ingest([cap], keylog=_keylogs(cap, root), data=root / "data",
                            packets=True)[0]
        out[cap.name] = (root / "data", r.packets)
    return out


def _inside(root: Path) -> list[int]:
    """Packets strictly inside a message (after the one with its first byte, up to the
    one with its last): one each from the TLS records, HTTP, WebSocket and FIX
    messages that span packets, from the middle of the capture."""
    con = duckdb.connect()
    pk = parquet_files(root, "packets")
    picks = []
    for k, table in enumerate(("tls_records", "http_messages", "ws_messages", "fix_messages")):
        files = parquet_files(root, table)
        if not files:
            continue
        rows = con.execute(
            f"SELECT DISTINCT p.packet FROM read_parquet({files!r}) m "
            f"JOIN read_parquet({pk!r}) p ON p.flow_id = m.flow_id "
            "AND p.ts > m.ts_first AND p.ts <= m.ts_last AND p.payload_length > 0 "
            "ORDER BY 1").fetchall()
        if rows:  # from the middle, each table a little further on
            picks.append(rows[len(rows) * (k + 2) // 6][0])
    return sorted(set(picks))


def _ways(cap: Path, root: Path, n: int) -> list[list[int]]:
    """Two ways to cut: at the packets inside messages (2..4 files), and in three at
    the thirds."""
    inside = _inside(root)[:3] or [n // 2]
    return [inside, [n // 3, 2 * n // 3]]


def _one_per_call(parts: list[Path], keys: list[Path], data: Path) -> list:
    results = []
    for p in parts:
        results += pcapflow.ingest([p], keylog=keys, data=data, packets=True)
    return results


SLOW = os.environ.get("PCAPFLOW_SLOW_TESTS") == "1"
THIRDS_BY_DEFAULT = {"binance_rest_dsb.pcapng", "okx_ws_tls12.pcap", "binance_wsapi_tls13.pcap",
                     "fix44_sll2.pcap"}
"""Way 1 (thirds, gzip'd) in the default run: the two samples whose way 0 has no packet
inside a message (a second cut of theirs), the WebSocket inflate window and the SLL2
link type. Every sample is split and resumed by way 0; ``PCAPFLOW_SLOW_TESTS=1`` runs
way 1 on every sample too."""


def _way_cases() -> list:
    return [pytest.param(cap, way, id=f"{cap.name}-{way}", marks=[] if way == 0 or SLOW
                         or cap.name in THIRDS_BY_DEFAULT else pytest.mark.skip(
                             reason="PCAPFLOW_SLOW_TESTS=1: every sample cut in thirds too"))
            for cap in CAPTURES for way in (0, 1)]


@pytest.mark.parametrize(("cap", "way"), _way_cases())
def test_one_file_per_call_gives_the_rows_of_one_ingest(
        tmp_path: Path, cap: Path, way: int, singles: dict[str, tuple[Path, int]]) -> None:
    one, n = singles[cap.name]
    cuts = _ways(cap, one, n)[way]
    if way == 0 and cap.stem in ("binance_rest_tls13", "binance_wsapi_tls13",
                                 "deribit_jsonrpc_tls13", "lossy_rest_tls13", "fix44_plain"):
        assert _inside(one), cap  # messages across packets: cut inside them
    parts = split(cap, cuts, tmp_path, compress=way == 1)
    keys = _keylogs(cap, tmp_path)
    results = _one_per_call(parts, keys, tmp_path / "data")
    assert len({r.capture_id for r in results}) == 1
    assert [r.resumed_from for r in results[1:]] == [str(p) for p in parts[:-1]]
    assert results[-1].paths == [str(p) for p in parts]
    counts = assert_same_rows(one, tmp_path / "data")
    assert counts["packets"] == n
    if any(r.resumed for r in results):
        assert (tmp_path / "data" / store.STATE).is_dir()
    ds = pcapflow.open(tmp_path / "data")
    rows = ds.fetchall("SELECT file_index, files, packets FROM captures ORDER BY 1")
    assert [r[0] for r in rows] == list(range(len(parts)))
    assert {r[1] for r in rows} == {len(parts)} and sum(r[2] for r in rows) == n
    per_file = dict(ds.fetchall("SELECT file, count(*) FROM packets GROUP BY 1"))
    assert per_file == {r[0]: r[2] for r in rows if r[2]}


def test_cli_one_command_per_file_equals_one_command(
        tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    one, _n = singles[cap.name]
    parts = split(cap, _inside(one)[:1], tmp_path)
    keys = _keylogs(cap, tmp_path)
    pcapflow.ingest(parts, keylog=keys, data=tmp_path / "whole", packets=True)
    cmd = [sys.executable, "-m", "pcapflow", "ingest", "--packets",
           *[a for k in keys for a in ("--keylog", str(k))], "--data", str(tmp_path / "res")]
    for k, p in enumerate(parts):
        proc = subprocess.run([*cmd, str(p)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        if k:
            assert f"connections from {parts[k - 1].name}" in proc.stderr, proc.stderr  # a note
            assert "replaced its earlier ingest" not in proc.stdout + proc.stderr
    assert_same_rows(one, tmp_path / "res")
    assert_same_rows(tmp_path / "whole", tmp_path / "res", captures=True)


def test_two_files_in_one_call_continue_a_set(
        tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    """A watcher that fell behind ingests the files closed meanwhile in one call."""
    cap = SAMPLES / "fix44_plain.pcap"
    one, n = singles[cap.name]
    parts = split(cap, [40, 80, 110], tmp_path)
    pcapflow.ingest([parts[0]], data=tmp_path / "d", packets=True)
    r = pcapflow.ingest(parts[1:3], data=tmp_path / "d", packets=True)[0]
    assert r.resumed == 1 and r.resumed_from == str(parts[0])
    pcapflow.ingest([parts[3]], data=tmp_path / "d", packets=True)
    assert assert_same_rows(one, tmp_path / "d")["packets"] == n


def test_a_size_rotation_resumes_from_its_first_file(
        tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    """``tcpdump -C`` names its first file as given (``cap.pcap``, no number) and the
    next ones ``cap.pcap1``, ``cap.pcap2``: the first keeps the state of its open
    connections once its successor is beside it (as when the writer has moved on), so
    the rotation resumes from its first file; a ``cap.pcap`` alone keeps none."""
    import gzip

    cap = SAMPLES / "fix44_plain.pcap"
    one, n = singles[cap.name]
    a, b, c = split(cap, [40, 80], tmp_path)
    d, lone = tmp_path / "rot", tmp_path / "lone"
    d.mkdir()
    lone.mkdir()
    (lone / "cap.pcap").write_bytes(a.read_bytes())
    assert not resume.rotation_named(str(lone / "cap.pcap"))
    pcapflow.ingest([lone / "cap.pcap"], data=tmp_path / "lone-d")
    assert not (tmp_path / "lone-d" / store.STATE).exists()
    # the writer closed cap.pcap (-z gzip'd it) and began cap.pcap1
    (d / "cap.pcap.gz").write_bytes(gzip.compress(a.read_bytes()))
    (d / "cap.pcap1").write_bytes(b.read_bytes())
    assert resume.rotation_named(str(d / "cap.pcap.gz"))
    results = pcapflow.ingest([d / "cap.pcap.gz"], data=tmp_path / "d", packets=True)
    (d / "cap.pcap2").write_bytes(c.read_bytes())
    for name in ("cap.pcap1", "cap.pcap2"):
        results += pcapflow.ingest([d / name], data=tmp_path / "d", packets=True)
    assert len({r.capture_id for r in results}) == 1
    assert [r.resumed_from for r in results[1:]] == [str(d / "cap.pcap.gz"),
                                                     str(d / "cap.pcap1")]
    assert results[1].resumed >= 1
    assert assert_same_rows(one, tmp_path / "d")["packets"] == n


def test_new_set_opts_out(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [60], tmp_path)
    pcapflow.ingest([parts[0]], data=tmp_path / "d")
    r = pcapflow.ingest([parts[1]], data=tmp_path / "d", resume=False)[0]
    assert r.resumed_from is None and r.resumed == 0
    ids = pcapflow.open(tmp_path / "d").fetchall("SELECT DISTINCT capture_id FROM captures")
    assert len(ids) == 2


# --- what the state holds -------------------------------------------------------------
def _keylog_secrets(text: bytes) -> set[bytes]:
    """Every client random's secrets, raw and as hex (both cases)."""
    out: set[bytes] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and not line.startswith(b"#"):
            raw = bytes.fromhex(parts[2].decode())
            out |= {raw, parts[2].lower(), parts[2].upper()}
    return out


def _api_secrets() -> set[bytes]:
    spec = json.loads((SAMPLES / "secrets.json").read_text())
    texts = list(spec["fixed"].values()) + [v for vs in spec["derived"].values() for v in vs]
    return {t.encode() for t in texts}


def _spanning_plaintext(root: Path, ts: int) -> list[bytes]:
    """Known plaintext a state at ``ts`` may buffer: the first bytes of the HTTP and
    WebSocket messages in flight then, and of the last WebSocket message before it (the
    inflate window holds it)."""
    con = duckdb.connect()
    out = []
    for table, col in (("http_messages", "coalesce(body, path)"), ("ws_messages", "payload")):
        files = parquet_files(root, table)
        if not files:
            continue
        rows = con.execute(
            f"SELECT CAST({col} AS BLOB) FROM read_parquet({files!r}) "
            f"WHERE (epoch_ns(ts_first) < {ts} AND epoch_ns(ts_last) >= {ts}) OR "
            f"epoch_ns(ts_last) = (SELECT max(epoch_ns(ts_last)) FROM read_parquet({files!r}) "
            f"WHERE epoch_ns(ts_last) < {ts})").fetchall()
        out += [bytes(r[0])[:24] for r in rows if r[0] and len(r[0]) >= 24
                and b"REDACTED" not in bytes(r[0])[:24] and b"\x00" not in bytes(r[0])[:24]]
    return out


TLS_SAMPLES = [c for c in CAPTURES if "tls" in c.stem or c.suffix == ".pcapng"
               or c.stem.endswith("_h2")]


@pytest.mark.parametrize("cap", TLS_SAMPLES, ids=lambda p: p.name)
def test_state_holds_no_key_material_nor_plaintext(
        tmp_path: Path, cap: Path, singles: dict[str, tuple[Path, int]]) -> None:
    one, n = singles[cap.name]
    keys = _keylogs(cap, tmp_path)
    secrets = set().union(*(_keylog_secrets(k.read_bytes()) for k in keys)) | _api_secrets()
    assert secrets
    con = duckdb.connect()
    checked = 0
    for cut in _inside(one)[:2] or [n // 3, n // 2]:
        work = tmp_path / f"c{cut}"
        work.mkdir()
        first = split(cap, [cut], work)[0]
        pcapflow.ingest([first], keylog=keys, data=work / "d")
        state = next((work / "d" / store.STATE).glob("*/state.bin")).read_bytes()
        found = [s[:12] for s in secrets if s in state]
        assert not found, found
        ts = con.execute(f"SELECT max(epoch_ns(ts)) FROM read_parquet("
                         f"{parquet_files(one, 'packets')!r}) WHERE packet < {cut}").fetchone()[0]
        known = _spanning_plaintext(one, ts + 1)
        checked += len(known)
        assert not [k for k in known if k in state], known
        _header, body = resume._read(next((work / "d" / store.STATE).glob("*/state.bin")),
                                    body=True)
        core = resume._loads(resume.unpack_body(body), None, Limits())
        for fid, random, _label, blob in core["conns"]:
            conn = None if random is not None else resume._loads(
                blob, None, Limits())
            if conn is not None:  # stored as it is: no decrypted TLS under it
                assert conn.outer.name != "tls" or conn.inner is None, fid
    if "ws" in cap.stem or "deribit" in cap.stem or "rest" in cap.stem:
        assert checked  # known plaintext was looked for

def test_resume_without_the_key_log_says_which_is_needed(
        tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    _one, n = singles[cap.name]
    parts = split(cap, [n // 2], tmp_path)
    pcapflow.ingest([parts[0]], keylog=[cap.with_suffix(".keylog")], data=tmp_path / "d")
    r = pcapflow.ingest([parts[1]], data=tmp_path / "d")[0]
    assert r.resumed_from == str(parts[0])
    ds = pcapflow.open(tmp_path / "d")
    rows = ds.fetchall("SELECT flow_id, detail FROM anomalies WHERE code = 'resume_missing_keys'")
    open_flows = ds.fetchall("SELECT DISTINCT flow_id FROM ws_messages")
    assert rows and {f for f, _ in rows} >= {f for (f,) in open_flows}
    randoms = {line.split()[1].decode() for line in
               cap.with_suffix(".keylog").read_bytes().splitlines() if line.strip()}
    assert all(any(rnd in d for rnd in randoms) and "--keylog" in d for _, d in rows)


# --- atomic, versioned, bounded ---------------------------------------------------------
def _tree(root: Path) -> dict[str, str]:
    """The tables' and the state's files (not the store's own: lock, journal, staging)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).parts[0].startswith(".")}


def test_a_crash_at_the_commit_leaves_tables_and_state_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        singles: dict[str, tuple[Path, int]]) -> None:
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, n = singles[cap.name]
    parts = split(cap, [n // 3, 2 * n // 3], tmp_path)
    keys = [cap.with_suffix(".keylog")]
    data = tmp_path / "d"
    pcapflow.ingest([parts[0]], keylog=keys, data=data, packets=True)
    before = _tree(data)
    real = store.os.replace

    def crash(src: object, dst: object) -> None:
        if str(dst).endswith(".json"):  # the journal: the commit point
            raise OSError("simulated crash at the commit point")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        pcapflow.ingest([parts[1]], keylog=keys, data=data, packets=True)
    monkeypatch.undo()
    assert _tree(data) == before
    for p in parts[1:]:
        pcapflow.ingest([p], keylog=keys, data=data, packets=True)
    assert_same_rows(one, data)


def _names(root: Path) -> list[str]:
    return sorted(_tree(root))


def _journal_moves(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None
                   ) -> list[tuple[str, str]]:
    """Record the renames from the commit point on (the journal's, then its moves);
    ``fail_at``: the k-th of them raises once, as an error or interrupt there would."""
    real = store.os.replace
    moves: list[tuple[str, str]] = []

    def replace(src: object, dst: object) -> None:
        if moves or (str(dst).endswith(".json") and store.JOURNAL in str(dst)):
            moves.append((str(src), str(dst)))
            if len(moves) - 1 == fail_at:
                raise KeyboardInterrupt  # (past the commit point: rolled forward)
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(store.os, "replace", replace)
    return moves


def test_a_resumed_commit_appends_only_its_own_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        singles: dict[str, tuple[Path, int]]) -> None:
    """The set's earlier final parts are neither linked, copied nor moved by the next
    file's command (same inode, same mtime); its journal names only the new parts, the
    replaced provisional ones and the regenerated tables; the rows are one ingest's."""
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, n = singles[cap.name]
    parts = split(cap, [n // 4, n // 2, 3 * n // 4], tmp_path)
    keys = [cap.with_suffix(".keylog")]
    data = tmp_path / "d"
    pcapflow.ingest(parts[:1], keylog=keys, data=data, packets=True)
    for k, p in enumerate(parts[1:], start=1):
        kept = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for t in store.TABLES
                if t not in resume.REGENERATED
                for f in store.partition_dir(data, t, "x").parent.glob("*/*.parquet")
                if not f.name.startswith("part-t")}
        moves = _journal_moves(monkeypatch)
        pcapflow.ingest([p], keylog=keys, data=data, packets=True)
        monkeypatch.undo()
        assert kept and all(f.exists() and (f.stat().st_ino, f.stat().st_mtime_ns) == v
                            for f, v in kept.items())
        moved = {Path(dst) for _, dst in moves}
        assert not moved & set(kept)
        assert any(f"part-f{k}-" in str(m) for m in moved)  # this file's own final parts
        assert not list((data / store.STAGING).glob("*")), "staging left behind"
    assert_same_rows(one, data)


def _first_file_twice(tmp_path: Path, singles: dict[str, tuple[Path, int]]
                      ) -> tuple[Path, list[Path], list[Path], Path, Path]:
    """A TLS sample cut in three; its first file ingested into two datasets (``data``,
    ``clean``): (one ingest of the sample, the files, its key log, data, clean)."""
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, n = singles[cap.name]
    parts = split(cap, [n // 3, 2 * n // 3], tmp_path)
    keys = [cap.with_suffix(".keylog")]
    data, clean = tmp_path / "d", tmp_path / "clean"
    for root in (data, clean):
        pcapflow.ingest([parts[0]], keylog=keys, data=root, packets=True)
    return one, parts, keys, data, clean


@pytest.mark.parametrize("step", [1, 2, 5, -1])
def test_an_append_commit_interrupted_after_its_commit_point_is_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        singles: dict[str, tuple[Path, int]], step: int) -> None:
    """An error or interrupt between the moves of an append commit (after the journal
    is in place): the command rolls its journal forward before it raises, so the
    dataset is the whole commit's (same files as a clean command, same rows); and the
    rotation goes on to one ingest's rows."""
    one, parts, keys, data, clean = _first_file_twice(tmp_path, singles)
    moves = _journal_moves(monkeypatch)
    pcapflow.ingest([parts[1]], keylog=keys, data=clean, packets=True)
    monkeypatch.undo()
    fail = step if step >= 0 else len(moves) - 1
    assert 0 < fail < len(moves)
    _journal_moves(monkeypatch, fail_at=fail)
    with pytest.raises(KeyboardInterrupt):
        pcapflow.ingest([parts[1]], keylog=keys, data=data, packets=True)
    monkeypatch.undo()
    assert _names(data) == _names(clean)
    assert not list((data / store.JOURNAL).glob("*")) and not list(
        (data / store.STAGING).glob("*"))
    assert_same_rows(clean, data, captures=True)
    pcapflow.ingest([parts[2]], keylog=keys, data=data, packets=True)
    assert_same_rows(one, data)


_KILL = """
import os, sys
from pathlib import Path
import pcapflow
from pcapflow.pipelines import store
real, seen = store.os.replace, []
def replace(src, dst):
    if seen or str(dst).endswith(".json") and store.JOURNAL in str(dst):
        seen.append(dst)
        if len(seen) == int(sys.argv[4]) + 1:
            os._exit(9)  # killed between two moves: no clean-up runs
    real(src, dst)
store.os.replace = replace
pcapflow.ingest([sys.argv[1]], keylog=[sys.argv[2]], data=Path(sys.argv[3]), packets=True)
"""


def test_a_process_killed_inside_an_append_commit_is_rolled_forward_by_the_next_reader(
        tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    one, parts, keys, data, clean = _first_file_twice(tmp_path, singles)
    pcapflow.ingest([parts[1]], keylog=keys, data=clean, packets=True)
    run = subprocess.run([sys.executable, "-c", _KILL, str(parts[1]), str(keys[0]),
                          str(data), "3"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 9, run.stderr
    assert list((data / store.JOURNAL).glob("*.json")), "killed before its commit point"
    with pcapflow.open(data) as ds:  # a reader finishes the commit first
        assert ds.scalar("SELECT count(*) FROM captures") == 2
    assert _names(data) == _names(clean)
    assert_same_rows(clean, data, captures=True)
    pcapflow.ingest([parts[2]], keylog=keys, data=data, packets=True)
    assert_same_rows(one, data)


def test_an_unknown_state_version_is_a_one_line_error(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [70], tmp_path)
    pcapflow.ingest([parts[0]], data=tmp_path / "d")
    path = next((tmp_path / "d" / store.STATE).glob("*/state.bin"))
    header, body = resume._read(path, body=True)
    header["version"] = 999
    head = json.dumps(header).encode()
    path.write_bytes(resume.MAGIC + resume._HEADER.pack(len(head)) + head + body)
    with pytest.raises(resume.StateError, match="--new-set"):
        pcapflow.ingest([parts[1]], data=tmp_path / "d")
    proc = subprocess.run([sys.executable, "-m", "pcapflow", "ingest", str(parts[1]),
                           "--data", str(tmp_path / "d")], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "format 999" in lines[0] and "--new-set" in lines[0], lines
    r = pcapflow.ingest([parts[1]], data=tmp_path / "d", resume=False)[0]
    assert r.resumed_from is None


def _as_format(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewrite the ``state.bin`` at ``path`` (a set of one file) as format ``version``
    wrote it: 3 and before, the header listing every file of the set, no ``KEYS``; 2,
    the flow tracker with every slot and its hash table; 1, that body zlib-compressed;
    a sealed connection's record sealed with that format in its additional data."""
    from pcapflow.parsers.tls.seal import seal, seal_key, unseal

    header, body = resume._read(path, body=True)
    assert header["version"] == resume.STATE_VERSION == 4
    assert header.pop("n_files") == 1 and (path.parent / resume.KEYS).is_file()
    header["files"] = header.pop("last_files")
    (path.parent / resume.KEYS).unlink()
    core = pickle.loads(resume.unpack_body(body))
    conns = []
    for fid, random, label, blob in core["conns"]:
        if random is not None:  # (the sample's key log has the secret)
            secret = resume.KeyLog.from_files([KEYLOG]).get(random, label)
            key = seal_key(secret, random)
            blob = seal(key, unseal(key, blob, resume._aad(header["capture_id"], fid)),
                        resume._aad(header["capture_id"], fid, version))
        conns.append((fid, random, label, blob))
    core["conns"] = conns
    from pcapflow.parsers.tcp.analysis import FlowTracker

    with monkeypatch.context() as m:  # (format 2 pickled the tracker's __dict__ as it is)
        if version < 3:
            m.setattr(FlowTracker, "__getstate__", lambda self: dict(self.__dict__))
        raw = pickle.dumps(core, protocol=pickle.HIGHEST_PROTOCOL)
    header["version"] = version
    head = json.dumps(header).encode()
    if version == 1:
        out = zlib.compress(raw, 1)
    else:
        out = resume._ZSTD_LEN.pack(len(raw)) + resume._zstd().compress(raw, asbytes=True)
    path.write_bytes(resume.MAGIC + resume._HEADER.pack(len(head)) + head + out)


KEYLOG = SAMPLES / "binance_wsapi_tls13.keylog"


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("name", ["fix44_plain.pcap", "binance_wsapi_tls13.pcap"])
def test_a_state_of_an_earlier_format_is_still_read(
        tmp_path: Path, singles: dict[str, tuple[Path, int]], version: int, name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Format 4 keeps the count of the set's files and the last few in the header, every
    file's key in ``KEYS``; format 3 listed every file in the header (the next command
    writes ``KEYS`` from it). Format 3 keeps the flow tracker's slots up to its
    high-water mark, without its hash table; format 2 kept every slot and the table (a
    state written by it resumes as before: ``FlowTracker.__setstate__``), and format 1
    compressed the same body with zlib. A decrypted connection's record sealed by an
    earlier format (its version in the additional data) is opened."""
    cap = SAMPLES / name
    keys = [cap.with_suffix(".keylog")] if cap.with_suffix(".keylog").exists() else []
    one, n = singles[cap.name]
    parts = split(cap, [n // 2], tmp_path)
    pcapflow.ingest([parts[0]], keylog=keys, data=tmp_path / "d", packets=True)
    path = next((tmp_path / "d" / store.STATE).glob("*/state.bin"))
    _as_format(path, version, monkeypatch)
    r = pcapflow.ingest([parts[1]], keylog=keys, data=tmp_path / "d", packets=True)[0]
    assert r.resumed_from == str(parts[0]) and r.resumed
    assert "resume_missing_keys" not in r.anomaly_codes
    assert_same_rows(one, tmp_path / "d")
    header = resume.read_header(path)  # (the format the next command wrote: the keys apart)
    assert header["version"] == resume.STATE_VERSION and header["n_files"] == 2
    assert len(np.load(path.parent / resume.KEYS)) == 2 and "files" not in header


def test_the_tracker_keeps_its_slots_up_to_the_high_water_mark() -> None:
    """``FlowTracker.__getstate__`` leaves out the slots never used and the hash table;
    ``__setstate__`` gives back the same capacity, arrays and lookups."""
    from pcapflow.parsers.tcp.analysis import C_HIGH_WATER, FlowTracker

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from make_capture import Config, plan
    from pcapflow.parsers.capture import open_capture as _open
    from pcapflow.parsers.decode import decode_chunk

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"pcf-tracker-{os.getpid()}.pcap"
    from make_capture import write

    write(plan(Config(packets=3000, seed=1, rate_pps=3000.0)), str(tmp), "pcap", 262_144)
    tracker = FlowTracker(capacity=16)
    with _open(tmp) as reader:
        for chunk in reader:
            tracker.process(decode_chunk(chunk), chunk.ts_ns, chunk.wirelen, chunk.index)
    tmp.unlink()
    hw = int(tracker.counters[C_HIGH_WATER])
    assert 0 < hw < tracker.capacity
    state = tracker.__getstate__()
    assert "table" not in state and len(state["fstate"]) == hw  # type: ignore[arg-type]
    back = pickle.loads(pickle.dumps(tracker))
    for name in ("fstate", "dstate", "fcnt", "fkey_hash", "free", "table", "counters"):
        assert np.array_equal(getattr(back, name), getattr(tracker, name)), name
    assert back.capacity == tracker.capacity and back.n_held == tracker.n_held


def test_the_state_is_bounded(tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    _one, n = singles[cap.name]
    parts = split(cap, [n // 2], tmp_path)
    pcapflow.ingest([parts[0]], data=tmp_path / "d", limits={"resume_max_bytes": 1})
    path = next((tmp_path / "d" / store.STATE).glob("*/state.bin"))
    ds = pcapflow.open(tmp_path / "d")
    dropped = ds.fetchall("SELECT flow_id, detail FROM anomalies WHERE code = 'resume_dropped'")
    assert dropped and all("resume_max_bytes=1" in d for _, d in dropped)
    assert path.stat().st_size < 16 << 10  # the tracker and bookkeeping only
    before = ds.scalar("SELECT count(*) FROM fix_messages")
    r = pcapflow.ingest([parts[1]], data=tmp_path / "d")[0]
    assert r.resumed == 0 and r.resumed_from == str(parts[0])
    # the dropped connection goes on as one opened before the capture: FIX resyncs on
    # its next message, in the same flow
    ds = pcapflow.open(tmp_path / "d")
    after = ds.fetchall("SELECT DISTINCT flow_id FROM fix_messages")
    assert ds.scalar("SELECT count(*) FROM fix_messages") > before
    assert {f for (f,) in after} == {f for f, _ in dropped}
    assert ds.scalar("SELECT count(*) FROM flows") == 1


def test_a_file_ingested_twice_is_refused_in_one_line(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [70], tmp_path)
    for p in parts:
        pcapflow.ingest([p], data=tmp_path / "d")
    before = _tree(tmp_path / "d")
    with pytest.raises(resume.AlreadyIngested, match="already ingested") as err:
        pcapflow.ingest([parts[0]], data=tmp_path / "d")
    assert "\n" not in str(err.value) and isinstance(err.value, PcapflowError)
    assert _tree(tmp_path / "d") == before


def test_what_a_command_reads_of_the_set_is_o_file(tmp_path: Path) -> None:
    """The state's header keeps a count and the last ``LAST_FILES`` files, not a list of
    the set's (a command parsed ~1.2 kB of Python objects per file of the set): its size
    is the same after 8 commands as after 5; every file's key is in ``KEYS``, so a file
    of the set no longer in the header is still refused, and the ``captures`` rows,
    extended in Arrow by each command, are the set's (in order, the set's totals)."""
    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [16 * k for k in range(1, 8)], tmp_path)  # (8 files)
    sizes = []
    for k, p in enumerate(parts):
        r = pcapflow.ingest([p], data=tmp_path / "d", app=False)[0]
        assert r.resumed_from == (str(parts[k - 1]) if k else None)
        path = next((tmp_path / "d" / store.STATE).glob("*/state.bin"))
        header = resume.read_header(path)
        assert "files" not in header and header["n_files"] == k + 1
        assert [f["path"] for f in header["last_files"]] == [
            str(x) for x in parts[max(0, k + 1 - resume.LAST_FILES):k + 1]]
        assert len(np.load(path.parent / resume.KEYS)) == k + 1
        sizes.append(len(json.dumps({**header, "last_key": 0, "packets": 0,
                                     "anomalies": 0, "n_files": 0, "timed_since": 0})))
    assert r.paths == [str(p) for p in parts]  # (the set's files, from its captures rows)
    assert sizes[4] == sizes[7], sizes  # (the header's size: the same paths' lengths)
    ds = pcapflow.open(tmp_path / "d")
    rows = ds.fetchall("SELECT file_index, files, path, packets FROM captures "
                       "ORDER BY file_index")
    assert [(i, n, p) for i, n, p, _ in rows] == [(i, 8, str(p)) for i, p in enumerate(parts)]
    assert sum(n for *_, n in rows) == 142
    whole = pcapflow.ingest([cap], data=tmp_path / "one", app=False)[0]
    assert ds.scalar("SELECT any_value(flows) FROM captures") == whole.flows
    before = _tree(tmp_path / "d")
    with pytest.raises(resume.AlreadyIngested, match=r"\(8 files\)"):
        pcapflow.ingest([parts[1]], data=tmp_path / "d", app=False)  # (not in the header)
    assert _tree(tmp_path / "d") == before


def _hollow_final_parts(root: Path) -> dict[Path, bytes]:
    """Empty every final part of the dataset's tables in place (the provisional
    ``part-t*`` and the resume state aside); their bytes, to put back."""
    out = {f: b"" for f in sorted(root.glob("*/capture_id=*/part-*.parquet"))
           if not f.parts[-3].startswith((".", "_"))
           and not f.name.startswith(f"part-{resume.TAIL_PREFIX}")}
    assert {f.parts[-3] for f in out} >= {"tcp_rtt", "fix_messages", "causes"}, out
    for f in out:
        out[f] = f.read_bytes()
        os.truncate(f, 0)
    return out


def test_the_carried_state_is_one_chunk_a_table(tmp_path: Path) -> None:
    """A state table made of the previous command's and a command's own rows gained a
    chunk per command, which every later command read and walked: O(set) (the FIX
    flows' comp ids were 502 rows in 499 chunks after 800 one-second files of
    ``benchmarks/watch_memory.py``, the remembered ids 592 rows in 252). Every Arrow
    table of the state is written as one chunk (record batches of at most 64k rows).

    And a command reads no byte of the set's earlier final parts (what a fresh watch
    worker would otherwise hold per file of the set: their footers and rows, DuckDB's
    reads of them): the last command runs with every final part of the earlier files
    emptied in place (same inodes: the flows index still holds), and the tables, put
    back, are one ingest's."""
    import pyarrow as pa

    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [16 * k for k in range(1, 8)], tmp_path)  # (8 files)
    for k, p in enumerate(parts):
        hollow = _hollow_final_parts(tmp_path / "d") if k == len(parts) - 1 else {}
        try:
            pcapflow.ingest([p], data=tmp_path / "d")
        finally:
            for f, data in hollow.items():
                with open(f, "r+b") as fh:  # (in place: the inodes the flows index names)
                    fh.write(data)
    pcapflow.ingest([cap], data=tmp_path / "one")
    assert_same_rows(tmp_path / "d", tmp_path / "one")
    state = next((tmp_path / "d" / store.STATE).glob("*/state.bin")).parent
    tables = []
    for f in sorted(state.rglob("*.arrow")):
        with pa.memory_map(str(f)) as src:
            tables.append((f.name, pa.ipc.open_file(src).read_all()))
    for f in sorted(state.rglob(f"*{bundle.SUFFIX}")):  # (tables kept in one file)
        tables += [(f"{f.name}:{n}", t) for n, t in bundle.read(f).items()]
    assert any(n.endswith(":comp_ids") for n, _ in tables)
    assert any(n.endswith(":tcp_rtt") for n, _ in tables)  # (the derive's)
    for name, t in tables:
        assert len(t.to_batches()) <= max(1, -(-t.num_rows // 65536)), (name, t.num_rows)


def test_only_the_captures_rows_are_regenerated() -> None:
    """``flows`` and the matcher's tables are appended to like the others."""
    from pcapflow.pipelines.match import OUTPUTS

    # the matcher's own are carried as final parts (pipelines.match_carry)
    assert set(resume.REGENERATED) == {"captures"}
    assert not set(resume.REGENERATED) & set(OUTPUTS)


@pytest.mark.parametrize("compact", [None, 1])
def test_flows_rows_of_earlier_files_are_not_written_again(
        tmp_path: Path, singles: dict[str, tuple[Path, int]],
        monkeypatch: pytest.MonkeyPatch, compact: int | None) -> None:
    """A flow that ended before its file's end has a final ``flows`` row: later
    commands leave its part as it is (same inode and mtime), write only their own flows
    and those still open, and the table is one ingest's. ``compact``: past that many
    final parts, all but the largest are merged into one (``resume.COMPACT_PARTS``)."""
    if compact is not None:
        monkeypatch.setattr(resume, "COMPACT_PARTS", compact)
    cap = SAMPLES / "binance_rest_tls13.pcap"
    _one, n = singles[cap.name]
    cut = split(cap, [n // 4, n // 2, 3 * n // 4], tmp_path)
    # the second file's last packet 70 s late (past the tracker's GRACE_NS), the files
    # after it as late: the connections that ended before it are retired in that file
    (tmp_path / "s").mkdir()
    late = 70 * 10**9
    parts = [_shifted(cut[0], tmp_path / "s" / cut[0].name, 0),  # (one directory)
             _shifted(cut[1], tmp_path / "s" / cut[1].name, 0, late),
             *(_shifted(p, tmp_path / "s" / p.name, late + 10**6) for p in cut[2:])]
    keys = [cap.with_suffix(".keylog")]
    one = tmp_path / "one"
    pcapflow.ingest([parts], keylog=keys, data=one, packets=True)
    data = tmp_path / "d"
    kept: dict[Path, tuple[int, int]] = {}
    for p in parts:
        assert compact is not None or all(
            f.exists() and (f.stat().st_ino, f.stat().st_mtime_ns) == v
            for f, v in kept.items())
        pcapflow.ingest([p], keylog=keys, data=data, packets=True)
        part = next((data / "flows").glob("capture_id=*"))
        kept = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in part.glob("*.parquet")
                if not f.name.startswith("part-t")}
        assert compact is None or len(kept) <= compact + 1
        ds = pcapflow.open(data)
        assert ds.scalar("SELECT count(DISTINCT capture_id) FROM captures") == 1
        assert ds.scalar("SELECT count(*) FROM flows") == ds.scalar(
            "SELECT count(DISTINCT flow_id) FROM flows")
    assert kept  # some flows ended before the last file
    assert_same_rows(one, data)


# --- the inflate window ----------------------------------------------------------------
def _deflate_messages(n: int) -> tuple[list[bytes], list[bytes]]:
    """``n`` JSON messages compressed with context takeover (RFC 7692: one raw deflate
    stream, each message ending on a sync flush without its 4-byte tail)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    plain, wire = [], []
    for k in range(n):
        msg = json.dumps({"id": k, "method": "order.place", "price": f"{k * 1.25:.2f}",
                          "pad": "x" * (k % 97)}).encode() * (1 + k % 5)
        data = comp.compress(msg) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        plain.append(msg)
        wire.append(data[:-4])
    return plain, wire


@pytest.mark.parametrize("kind", ["python", "native", "midstream"])
def test_an_inflate_window_carried_across_a_pickle_inflates_identically(kind: str) -> None:
    from pcapflow.parsers import native

    if kind == "native" and not native.AVAILABLE:
        pytest.skip("no native zlib")
    plain, wire = _deflate_messages(400)
    make = {"python": MessageInflater, "native": native.NativeInflater,
            "midstream": MidstreamInflater}[kind]
    for cut in (1, 37, 200, 399):
        inf = make()
        for w in wire[:cut]:
            inf.inflate(w, 1 << 20)
        inf = pickle.loads(pickle.dumps(inf))
        got = [inf.inflate(w, 1 << 20) for w in wire[cut:]]
        assert [g[0] for g in got] == plain[cut:] and {g[1] for g in got} == {"ok"}


# --- TLS 1.3 KeyUpdate: keys derived again at the right generation ------------------
def test_keyupdate_generations_are_derived_again_from_the_key_log(tmp_path: Path) -> None:
    """A public capture with KeyUpdates in both directions (the key log has generation 0
    only): cut after them, the next file's keys are generation 1+ derived again."""
    from helpers.paths import PUBLIC

    cap = PUBLIC / "tls" / "ssldump" / "tls1.3_keyupdates_aes256.pcap"
    key = PUBLIC / "tls" / "ssldump" / "sslkeylog.txt"
    if not cap.exists():
        pytest.skip("public captures not present")
    one = pcapflow.ingest([cap], keylog=[key], data=tmp_path / "one", packets=True)[0]
    ds = pcapflow.open(tmp_path / "one")
    decrypted = ds.scalar("SELECT count(*) FROM tls_records WHERE decrypted")
    n = one.packets
    generations = set()
    for cut in (n // 2, 2 * n // 3, n - 3):
        work = tmp_path / f"c{cut}"
        work.mkdir()
        parts = split(cap, [cut], work)
        pcapflow.ingest([parts[0]], keylog=[key], data=work / "d", packets=True)
        generations |= _kept_generations(work / "d", parts[1], key)
        r = pcapflow.ingest([parts[1]], keylog=[key], data=work / "d", packets=True)[0]
        assert r.resumed >= 1
        assert_same_rows(tmp_path / "one", work / "d")
        got = pcapflow.open(work / "d").scalar(
            "SELECT count(*) FROM tls_records WHERE decrypted")
        assert got == decrypted > 0
    assert max(generations) >= 1  # a cut after a KeyUpdate: generation 1+ re-derived


def _kept_generations(data: Path, nxt: Path, key: Path) -> set[int]:
    """KeyUpdate generations of the keys the state refers to (unsealed with the key log)."""
    from pcapflow.parsers.tls.keylog import KeyLog
    from pcapflow.parsers.tls.seal import seal_key, unseal

    log = KeyLog.from_files([key])
    prev = resume.find(data, [str(nxt)])
    assert prev is not None
    prev.load(log, Limits())
    out = set()
    for fid, random, label, blob in prev.core["conns"]:
        assert random is not None  # decrypted TLS: sealed
        plain = unseal(seal_key(log.get(random, label), random), blob,
                       resume._aad(prev.capture_id, fid))
        session = resume._loads(plain, log, Limits()).outer.session
        for ref in session._keyrefs.values():
            if isinstance(ref["dec"], tuple):
                out.add(ref["dec"][1])
    return out


def _shifted(src: Path, dst: Path, shift_ns: int, last_extra_ns: int = 0) -> Path:
    """``src`` with every packet ``shift_ns`` later (and its last ``last_extra_ns`` more)."""
    import dpkt

    with src.open("rb") as fh:
        packets = list(dpkt.pcap.Reader(fh))
    with dst.open("wb") as fh:
        w = dpkt.pcap.Writer(fh, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
        for i, (ts, buf) in enumerate(packets):
            extra = last_extra_ns if i == len(packets) - 1 else 0
            w.writepkt(buf, float(ts) + (shift_ns + extra) / 1e9)
    return dst


@pytest.mark.parametrize("jobs", [1, 2])
def test_sets_planned_apart_in_one_command_never_resume_each_other(tmp_path: Path,
                                                                    jobs: int) -> None:
    """The planner splits a name group where first packets are over a day apart; resume
    looks at a set's LAST packet. A file spanning 1.5 days and the next file 1.6 days
    after its first packet: planned as two recordings, so neither resumes the other,
    in one process or two (``--jobs 2`` once let them, depending on which ran first)."""
    day = 86_400 * 1_000_000_000
    a = _shifted(SAMPLES / "fix44_plain.pcap", tmp_path / "rec_0001.pcap", 0, day * 3 // 2)
    b = _shifted(SAMPLES / "fix44_plain.pcap", tmp_path / "rec_0002.pcap", day * 8 // 5)
    assert len(pcapflow.api.capture_sets([str(a), str(b)])) == 2
    pcapflow.ingest([a, b], data=tmp_path / "d", jobs=jobs)
    with pcapflow.open(tmp_path / "d") as ds:
        sets = ds.fetchall("SELECT path, capture_id FROM captures ORDER BY path")
    assert len({cid for _, cid in sets}) == 2, sets


@pytest.mark.parametrize("name", ["binance_tick_tls13.pcap", "lossy_rest_tls13.pcap"])
def test_alerts_of_one_file_per_call_are_one_ingests(
        tmp_path: Path, name: str, singles: dict[str, tuple[Path, int]]) -> None:
    """The alerts too (microbursts, feed gaps, retransmission storms: each command
    derives them over the whole set's rows), on samples that have some."""
    cap = SAMPLES / name
    one, n = singles[cap.name]
    assert pcapflow.open(one).scalar("SELECT count(*) FROM alerts") > 0
    parts = split(cap, [n // 3, 2 * n // 3], tmp_path)
    _one_per_call(parts, _keylogs(cap, tmp_path), tmp_path / "data")
    counts = same_rows(one, tmp_path / "data")
    assert counts["alerts"] > 0  # compared


def _rotation(d: Path, files: int, packets: int) -> list[Path]:
    """A rotation of ``benchmarks/make_capture.py`` trading traffic (short REST
    sessions come and go: flows end in every file), one-second files, named as
    ``watch_rotation.py`` names them."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from make_capture import Config, plan, write

    d.mkdir()
    out, end = [], 0
    for k in range(files):
        p = plan(Config(packets=packets, seed=k, rate_pps=float(packets),
                        start_ns=max(1_717_421_400_000_000_000 + k * 10**9, end + 1000)))
        end = int(p.cols["t"].max())
        out.append(d / f"rot-{k:06d}.pcap")
        write(p, str(out[-1]), "pcap", 262_144)
    return out


@pytest.mark.parametrize("compact", [100, 2])
def test_a_rotation_keeps_its_final_flows_parts(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                compact: int) -> None:
    """Six files where connections end in every file: each command leaves the set's
    final ``flows`` parts as they are, reading none of them but those it writes again
    (``resume.FlowsIndex``: O(its file), whatever the set's size), skips the rows of the
    ended flows that got no packet, and every table equals one ingest of the six files.
    Without the index (a set an older pcapflow left, here the index removed before
    each command) every part is read, and past ``COMPACT_PARTS`` all but the largest
    are merged."""
    monkeypatch.setattr(resume, "COMPACT_PARTS", compact)
    files = _rotation(tmp_path / "rot", 6, 4000)
    one = tmp_path / "one"
    pcapflow.ingest([files], data=one)
    data = tmp_path / "d"
    kept: dict[Path, tuple[int, int]] = {}
    finals = []
    resume.STATS.clear()
    for k, f in enumerate(files):
        if compact == 100:
            assert all((p.stat().st_ino, p.stat().st_mtime_ns) == v for p, v in kept.items())
        else:
            for d in (data / store.STATE).glob(f"*/{resume.FLOWS_DIR}"):
                import shutil

                shutil.rmtree(d)
        pcapflow.ingest([f], data=data)
        if compact == 100 and k:  # the provisional part and those of a late packet's flows
            assert resume.STATS["old_flows_parts_read"] <= 3, resume.STATS
        part = next((data / "flows").glob("capture_id=*"))
        kept = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in part.glob("*.parquet")
                if not p.name.startswith("part-t")}
        finals.append(len(kept))
        stable = np.load(next((data / store.STATE).glob("*")) / resume.STABLE)
        assert len(stable)  # ended flows still held: their rows are final
    if compact == 100:
        assert finals == sorted(set(finals)), finals  # one or more final parts per file
    else:  # the largest kept, the others merged into one, and the command's own (its
        # flows without application-layer data, and with)
        assert max(finals) <= compact + 2, finals
    # (compact 100: the index served every command; no derive read the set's flows)
    assert resume.STATS.get("old_flows_whole", 0) == (0 if compact == 100 else 5), resume.STATS
    assert resume.STATS.get("set_flows", 0) == 0, resume.STATS
    assert_same_rows(one, data)


def _records(path: Path) -> tuple[bytes, int, list[tuple[int, bytes]]]:
    """A little-endian pcap's global header, its time unit per second (µs or ns) and its
    records (time in that unit, the record's bytes after the time: lengths, data)."""
    raw = path.read_bytes()
    head, pos, out = raw[:24], 24, []
    unit = 10**9 if head[:4] == bytes.fromhex("4d3cb2a1") else 10**6
    assert unit == 10**9 or head[:4] == bytes.fromhex("d4c3b2a1"), head[:4]
    while pos < len(raw):
        sec, frac, incl = np.frombuffer(raw, "<u4", 3, pos)
        out.append((int(sec) * unit + int(frac), raw[pos + 8 : pos + 16 + int(incl)]))
        pos += 16 + int(incl)
    return head, unit, out


def _write_records(path: Path, head: bytes, unit: int, records: list[tuple[int, bytes]]) -> None:
    path.write_bytes(head + b"".join(np.array(divmod(t, unit), "<u4").tobytes() + rest
                                     for t, rest in records))


def _late_copies(files: list[Path], keys: list[Path], work: Path) -> int:
    """Copies of the last packets of flows that ended (FIN both ways) in ``files[0]``,
    the two latest of each kind (``app_protocol``), put just after the first packet of
    ``files[1]``; returns how many."""
    probe = work / "probe"
    pcapflow.ingest([files[0]], keylog=keys, data=probe, packets=True, resume=False)
    ds = pcapflow.open(probe)
    picks = ds.fetchall("""
        WITH last AS (SELECT flow_id, max(file_packet) AS at FROM packets GROUP BY 1)
        SELECT f.app_protocol, last.at FROM flows f JOIN last USING (flow_id)
        WHERE f.end_reason = 'fin' AND f.transport = 'tcp'
        QUALIFY row_number() OVER (PARTITION BY coalesce(f.app_protocol, '-')
                                   ORDER BY f.last_ts DESC) <= 2""")
    ds.close()
    _head, _unit, first = _records(files[0])
    head, unit, second = _records(files[1])
    t0 = second[0][0]
    late = [(t0 + k + 1, first[at][1]) for k, (_app, at) in enumerate(picks)]
    _write_records(files[1], head, unit, [second[0], *late, *second[1:]])
    return len(late)


@pytest.mark.parametrize("source", ["rotation", "binance_rest_h2_curl.pcap"])
def test_late_packets_on_ended_flows_after_the_cut_are_one_ingests(
        tmp_path: Path, singles: dict[str, tuple[Path, int]], source: str) -> None:
    """Flows that ended (FIN both ways) in the first file get a packet again in the
    second, within the tracker's grace: a copy of their last packet (a retransmission,
    a duplicate ACK). One ingest keeps such a flow (``GRACE_NS``) and gives the packet
    its flow id and analysis; so must the rotation ingested one file per command, where
    the flow was held at the first file's end (its ``flows`` row final and, without
    application-layer data, not among the flows the carries keep rows for:
    ``resume.carried_flows``). Flows with application-layer data (HTTP/2 over TLS) and
    without (an unknown protocol; no payload at all) alike: every table equals one
    ingest's."""
    if source == "rotation":
        files, keys = _rotation(tmp_path / "rot", 3, 4000), []
    else:
        cap = SAMPLES / source
        keys = [cap.with_suffix(".keylog")]
        one, _n = singles[cap.name]
        ds = pcapflow.open(one)
        ended = ds.scalar("""SELECT min(p.packet) FROM packets p JOIN flows f USING (flow_id)
                             WHERE f.end_reason = 'fin' AND p.ts = f.last_ts""")
        ds.close()
        files = split(cap, [int(ended) + 1], tmp_path)
    n = _late_copies(files, keys, tmp_path)
    assert n >= 1
    one = tmp_path / "one"
    pcapflow.ingest([files], keylog=keys, data=one, packets=True)
    ds = pcapflow.open(one)
    kinds = ds.fetchall(f"""
        SELECT DISTINCT f.app_protocol FROM packets p JOIN flows f USING (flow_id)
        WHERE p.file = 1 AND p.file_packet BETWEEN 1 AND {n}
          AND p.flow_id IN (SELECT flow_id FROM packets WHERE file = 0)""")
    ds.close()
    # one ingest: the late packets are of the earlier flows, of each kind
    want = {("unknown",), (None,)} if source == "rotation" else {("tls/http2",)}
    assert want <= set(kinds), kinds
    data = tmp_path / "d"
    for p in files:
        pcapflow.ingest([p], keylog=keys, data=data, packets=True)
        state = next((data / store.STATE).glob("*"))
        ended = np.load(state / resume.STABLE)[:, 0]
        if source == "rotation":  # ended flows held: the closed ones (an unknown
            # protocol) left out of HELD, those without payload kept
            assert len(ended) and 0 < np.isin(ended, np.load(state / resume.HELD)).mean() < 1
    assert_same_rows(one, data)


def test_the_state_core_refuses_a_key_log_or_limits() -> None:
    """The core of the state (tracker, bookkeeping) is pickled without ``persistent_id``
    (``resume._CorePickler``): a key log or the command's limits in it is an error, never
    written (the connections' records refer to them: ``resume._Pickler``)."""
    with pytest.raises(pickle.PicklingError, match="KeyLog"):
        resume._dumps_core({"info": {1: {"x": resume.KeyLog.from_text(b"")}}})
    with pytest.raises(pickle.PicklingError, match="Limits"):
        resume._dumps_core([Limits()])
    assert pickle.loads(resume._dumps_core({"done": {1, 2}})) == {"done": {1, 2}}
