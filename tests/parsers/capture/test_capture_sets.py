"""Capture sets: the files of one recording ingested together are one capture.

Every sample capture is split into 2..N files at many packet indices (by hand with
``struct``, and with ``editcap -c`` / ``-i``; plain and gzip'd; ``DEFAULT_WAYS``), the parts are
ingested in one call (in shuffled order) and every table must hold exactly the
rows of the single-file ingest, bookkeeping columns aside (``capture_id``,
``packets.file`` / ``file_packet``, the ``captures`` rows, which are per file).
Two files captured in parallel (one connection each, overlapping in time) are
merged by time into the same rows too.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from pcapflow.parsers.capture.capset import ROTATION_OVERLAP_NS, group, open_set
from pcapflow.parsers.errors import CaptureError

import pcapflow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows, parquet_files

SAMPLES = Path(__file__).resolve().parents[3] / "sample_pcaps"
CAPTURES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".pcap", ".pcapng"))
EDITCAP = shutil.which("editcap")
SLOW = os.environ.get("PCAPFLOW_SLOW_TESTS") == "1"
DEFAULT_WAYS = (2, 3, 5)
"""Ways of ``test_split_by_hand_gives_the_same_rows`` in the default run: in three (plain),
in a dozen (gzip'd) and at every packet inside a message at once (gzip'd); a sample
with no packet inside a message is also cut at its middle (plain). They hold the
others' kinds of cut: in two at the middle and at a random point, and at one packet
inside a message, which ``PCAPFLOW_SLOW_TESTS=1`` adds."""

def _keylog(cap: Path) -> list[Path]:
    key = cap.with_suffix(".keylog")
    return [key] if key.exists() else []


@pytest.fixture(scope="module")
def singles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    """Each sample ingested alone: (dataset, packets)."""
    out = {}
    for cap in CAPTURES:
        root = tmp_path_factory.mktemp(cap.stem)
        r = pcapflow.ingest([cap], keylog=_keylog(cap), data=root, packets=True)[0]
        out[cap.name] = (root, r.packets)
    return out


def _cut_points(n: int, rng: random.Random) -> list[list[int]]:
    """Several ways to cut ``n`` packets: in two (at the middle and at a random
    point), in three, and in many small files (a dozen)."""
    step = max(2, n // 12)
    return [[n // 2], [rng.randrange(1, n)], sorted(rng.sample(range(1, n), 2)),
            list(range(step, n, step))]


def _inside(root: Path) -> dict[str, list[int]]:
    """Per message table: packets that fall strictly inside a message (after the
    packet with its first byte, up to the one with its last), a few each."""
    con = duckdb.connect()
    pk = parquet_files(root, "packets")
    out = {}
    for table in ("tls_records", "http_messages", "ws_messages", "fix_messages"):
        files = parquet_files(root, table)
        if not files:
            continue
        rows = con.execute(
            f"SELECT DISTINCT p.packet FROM read_parquet({files!r}) m "
            f"JOIN read_parquet({pk!r}) p ON p.flow_id = m.flow_id "
            "AND p.ts > m.ts_first AND p.ts <= m.ts_last AND p.payload_length > 0 "
            "ORDER BY 1").fetchall()
        if rows:
            picks = [rows[0][0], rows[len(rows) // 2][0], rows[-1][0]]
            out[table] = sorted(set(picks))
    return out


@pytest.mark.parametrize("cap", CAPTURES, ids=lambda p: p.name)
def test_split_by_hand_gives_the_same_rows(tmp_path: Path, cap: Path,
                                           singles: dict[str, tuple[Path, int]]) -> None:
    one, n = singles[cap.name]
    rng = random.Random(cap.name)
    inside = _inside(one)
    ways = _cut_points(n, rng)
    if inside:  # inside messages: at one point, and at all of them at once
        ways += [[min(inside.values())[0]], sorted({p for ps in inside.values() for p in ps})]
    if cap.stem in ("binance_rest_tls13", "binance_wsapi_tls13", "deribit_jsonrpc_tls13",
                    "lossy_rest_tls13"):
        assert "tls_records" in inside  # records across packets: cut inside them too
    if cap.stem.startswith("fix44"):
        assert "fix_messages" in inside
    for k, cuts in enumerate(ways):
        if not SLOW and k not in DEFAULT_WAYS and (inside or k != 0):
            continue
        work = tmp_path / f"w{k}"
        work.mkdir()
        parts = split(cap, cuts, work, compress=k % 2 == 1)
        rng.shuffle(parts)
        res = pcapflow.ingest(parts, keylog=_keylog(cap), data=work / "data", packets=True)
        assert len(res) == 1 and len(res[0].paths) == len(cuts) + 1, res
        assert res[0].packets == n
        counts = assert_same_rows(one, work / "data")
        assert counts["packets"] == n
        _check_captures_rows(work / "data", res[0], n)


def _check_captures_rows(root: Path, res: pcapflow.api.IngestResult, n: int) -> None:
    ds = pcapflow.open(root)
    rows = ds.sql("SELECT capture_id, file_index, files, path, packets, sha256, link_types "
                  "FROM captures ORDER BY file_index").fetchall()
    assert all(r[6] for r in rows)  # each file's link types
    assert [r[1] for r in rows] == list(range(len(res.paths)))
    assert {r[0] for r in rows} == {res.capture_id}
    assert all(r[2] == len(res.paths) for r in rows)
    assert [r[3] for r in rows] == res.paths
    assert sum(r[4] for r in rows) == n
    per_file = dict(ds.sql("SELECT file, count(*) FROM packets GROUP BY 1").fetchall())
    assert per_file == {r[1]: r[4] for r in rows if r[4]}
    # file_packet runs 0.. within each file
    bad = ds.scalar("SELECT count(*) FROM (SELECT file, min(file_packet) AS lo, "
                    "max(file_packet) AS hi, count(*) AS c FROM packets GROUP BY 1) "
                    "WHERE lo <> 0 OR hi <> c - 1")
    assert bad == 0


@pytest.mark.skipif(EDITCAP is None, reason="editcap (tshark package) not installed")
@pytest.mark.parametrize("cap", [c for c in CAPTURES if c.suffix == ".pcap"],
                         ids=lambda p: p.name)
def test_editcap_splits_give_the_same_rows(tmp_path: Path, cap: Path,
                                           singles: dict[str, tuple[Path, int]]) -> None:
    one, n = singles[cap.name]
    for how, arg in (("-c", str(max(3, n // 7))), ("-i", "1")):
        work = tmp_path / how.strip("-")
        work.mkdir()
        subprocess.run([EDITCAP, how, arg, str(cap), str(work / "split.pcap")], check=True,
                       capture_output=True)
        parts = sorted(work.glob("split*.pcap"))
        if how == "-c":
            assert len(parts) >= 7
        for p in parts[::2]:  # half of them gzip'd, as tcpdump -z gzip leaves them
            subprocess.run(["gzip", "-n", str(p)], check=True)
        res = pcapflow.ingest([work], keylog=_keylog(cap), data=tmp_path / f"d{how}",
                              packets=True)
        assert len(res) == 1 and len(res[0].paths) == len(parts)
        assert assert_same_rows(one, tmp_path / f"d{how}")["packets"] == n


def test_parallel_files_are_merged_by_time(tmp_path: Path,
                                           singles: dict[str, tuple[Path, int]]) -> None:
    """Two interfaces captured at once: one connection in each file, overlapping in time."""
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    one, n = singles[cap.name]
    parts = _by_connection(cap, tmp_path)
    with open_set([str(p) for p in parts]) as s:
        chunks = list(s)
    assert sum(len(c) for c in chunks) == n
    assert {int(i) for c in chunks for i in c.interface} == {0, 1}
    # named eth0/eth1 (not a rotation's names): given as one set
    res = pcapflow.ingest([parts[::-1]], keylog=_keylog(cap), data=tmp_path / "d", packets=True)
    assert len(res) == 1 and len(res[0].paths) == 2
    # interfaces: 0 and 1 here (the files' own), 0 in the single file
    assert assert_same_rows(one, tmp_path / "d", {"packets": ["interface"]})["latency"] > 0


def _by_connection(cap: Path, out: Path) -> list[Path]:
    """``cap``'s two connections in two files (client ports by hand, with struct)."""
    import struct

    raw = cap.read_bytes()
    head, pos = raw[:24], 24
    files: dict[int, bytearray] = {}
    ports = []
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from("<I", raw, pos + 8)[0]
        rec = raw[pos : pos + 16 + caplen]
        pkt = rec[16:]
        # DLT_EN10MB over loopback: Ethernet(14) + IPv4 (IHL) + TCP ports
        ihl = (pkt[14] & 0x0F) * 4
        sport, dport = struct.unpack_from(">HH", pkt, 14 + ihl)
        port = sport if dport in (443, 9443) else dport
        if port not in ports:
            ports.append(port)
        files.setdefault(ports.index(port), bytearray(head)).extend(rec)
        pos += 16 + caplen
    assert len(files) == 2
    paths = []
    for k, data in files.items():
        p = out / f"eth{k}.pcap"
        p.write_bytes(bytes(data))
        paths.append(p)
    return paths


def test_rotation_overlap_within_tolerance_keeps_file_order(tmp_path: Path) -> None:
    """A rotated file may begin slightly before the previous file's last packet
    (tcpdump writes out of time order): it continues that file, not merged into it."""
    cap = SAMPLES / "fix44_plain.pcap"
    with open_set([str(cap)]) as s:
        ref = [(int(c.ts_ns[i]), c.packet(i)) for c in s for i in range(len(c))]
    a, b = split(cap, [60], tmp_path)
    # make the second file's first packet 1 ms earlier than the first file's last one
    import struct

    raw = bytearray(b.read_bytes())
    assert raw[:4] == b"\x4d\x3c\xb2\xa1"  # little-endian, nanosecond pcap
    t = ref[59][0] - 1_000_000
    assert ROTATION_OVERLAP_NS > 1_000_000
    struct.pack_into("<II", raw, 24, t // 10**9, t % 10**9)
    b.write_bytes(bytes(raw))
    with open_set([str(b), str(a)]) as s:
        got = [c.packet(i) for c in s for i in range(len(c))]
    assert got == [p for _, p in ref]


def test_grouping_by_name() -> None:
    names = ["/d/trading-20240101-1200.pcap", "/d/trading-20240101-1215.pcap.gz",
             "/d/cap.pcap", "/d/cap.pcap1", "/d/cap.pcap2", "/e/cap.pcap3",
             "/d/binance_rest_tls13.pcap", "/d/okx_ws_tls12.pcap", "-",
             "/d/tls_AES128-GCM-SHA256.pcap", "/d/tls_AES256-GCM-SHA384.pcap",
             "/d/gso-ipv4.pcap", "/d/gso-ipv6.pcap", "/d/fix.pcap", "/d/fix2.pcap",
             "/d/ring_00001_20240101120000.pcapng", "/d/ring_00002_20240101121500.pcapng"]
    assert [g for g in group(names) if len(g) > 1] == [names[0:2], names[2:5], names[15:17]]
    assert len(group(names)) == 13


def test_grouping_splits_recordings_a_day_apart(tmp_path: Path) -> None:
    """Same name pattern, first packets two days apart: two captures."""
    import struct

    a = split(SAMPLES / "fix44_plain.pcap", [70], tmp_path, stem="run-")
    raw = bytearray((SAMPLES / "fix44_plain.pcap").read_bytes())
    pos = 24
    while pos + 16 <= len(raw):  # every record two days later (seconds field)
        sec, caplen = struct.unpack_from("<I", raw, pos)[0], struct.unpack_from("<I", raw,
                                                                               pos + 8)[0]
        struct.pack_into("<I", raw, pos, sec + 2 * 86_400)
        pos += 16 + caplen
    later = tmp_path / "run-00009.pcap"
    later.write_bytes(bytes(raw))
    assert group([str(p) for p in [*a, later]]) == [[str(p) for p in a], [str(later)]]


def test_the_same_recording_twice_is_an_error(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    shutil.copy(cap, tmp_path / "a1.pcap")
    shutil.copy(cap, tmp_path / "a2.pcap")
    with pytest.raises(CaptureError) as err:
        open_set([str(tmp_path / "a1.pcap"), str(tmp_path / "a2.pcap")])
    assert err.value.code == "duplicate_capture"


def test_reingest_replaces_the_set_and_its_files(tmp_path: Path) -> None:
    """A file ingested alone, then the whole rotation: the set replaces the file's
    capture, atomically, and re-ingesting the set changes nothing."""
    cap = SAMPLES / "fix44_plain.pcap"
    parts = split(cap, [50, 100], tmp_path)
    data = tmp_path / "d"
    first = pcapflow.ingest([parts[0]], data=data)[0]
    whole = pcapflow.ingest(parts, data=data)[0]
    assert whole.replaced == [first.capture_id]
    again = pcapflow.ingest(parts[::-1], data=data)[0]
    assert again.capture_id == whole.capture_id and again.replaced == []
    ds = pcapflow.open(data)
    assert ds.scalar("SELECT count(DISTINCT capture_id) FROM captures") == 1
    assert ds.scalar("SELECT count(*) FROM fix_messages") == 127
    separate = pcapflow.ingest(parts, data=tmp_path / "s", sets=False)
    assert len(separate) == 3


def test_sharded_ingest_of_a_set(tmp_path: Path, singles: dict[str, tuple[Path, int]]) -> None:
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, n = singles[cap.name]
    parts = split(cap, [n // 4, n // 2, 3 * n // 4], tmp_path)
    pcapflow.ingest(parts, keylog=_keylog(cap), data=tmp_path / "d", packets=True, workers=2)
    assert assert_same_rows(one, tmp_path / "d")["packets"] == n
    assert list((tmp_path / "d").glob("*/capture_id=*/part-w1-*.parquet"))  # it was sharded


def test_cli_ingests_a_directory_as_one_capture(tmp_path: Path) -> None:
    cap = SAMPLES / "fix44_plain.pcap"
    rot = tmp_path / "rot"
    rot.mkdir()
    split(cap, [40, 80, 120], rot, stem="fix-")
    (rot / "notes.txt").write_text("not a capture")
    out = subprocess.run([sys.executable, "-m", "pcapflow.cli", "ingest", str(rot),
                          "--data", str(tmp_path / "d")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "fix-00000.pcap +3 files" in out.stdout
    ds = pcapflow.open(tmp_path / "d")
    assert ds.scalar("SELECT count(*) FROM latency") == 58
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = subprocess.run([sys.executable, "-m", "pcapflow.cli", "ingest", str(empty),
                          "--data", str(tmp_path / "d")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no capture files in this directory" in bad.stderr


def test_two_rotations_in_parallel_jobs(tmp_path: Path) -> None:
    """Two recordings' files in one call: two sets, ingested by two processes."""
    a = split(SAMPLES / "fix44_plain.pcap", [50, 100], tmp_path, stem="plain-")
    b = split(SAMPLES / "fix44_sll2.pcap", [20, 40], tmp_path, stem="sll-")
    res = pcapflow.ingest([*a, *b][::-1], data=tmp_path / "d", jobs=2)
    assert sorted(len(r.paths) for r in res) == [3, 3]
    assert {Path(r.paths[0]).name for r in res} == {"plain-00000.pcap", "sll-00000.pcap"}
    ds = pcapflow.open(tmp_path / "d")
    assert ds.fetchall("SELECT count(*) FROM fix_messages")[0][0] == 127 + 46
