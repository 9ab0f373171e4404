"""The end of a plain TCP ingest without DuckDB (issue 20, start-up).

``why.nothing_to_derive`` lets the ingest skip the matcher's SQL and the derive when a
capture has no message rows and the derive's own checks say its TCP detectors find
nothing. Each capture here is ingested twice: with the check as it is, and with it
forced off (the matcher and the derive run as before); every table must be the same,
and the check must have said yes only where the derive finds no row (a clock step, a
zero-window event, thresholds a storm or a burst reaches, FIX messages: no)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.path_compare import assert_same_tables, read_tables
from helpers.paths import SAMPLES

import pcapflow
from pcapflow import alerts, why

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plain_tcp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make_capture.py``'s trading host, 2,500 packets: plain TCP only."""
    out = tmp_path_factory.mktemp("plain") / "plain.pcap"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "make_capture.py"),
            "--packets",
            "2500",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def _records(path: Path) -> tuple[bytes, list[bytearray]]:
    """A little-endian pcap's header and records (header + data each)."""
    raw = path.read_bytes()
    assert raw[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    out, at = [], 24
    while at < len(raw):
        n = struct.unpack_from("<I", raw, at + 8)[0]
        out.append(bytearray(raw[at : at + 16 + n]))
        at += 16 + n
    return raw[:24], out


def _stepped_back(src: Path, dst: Path) -> Path:
    """``src`` with the clock set back 5 s halfway through (a ``clock_step_back``)."""
    head, recs = _records(src)
    for r in recs[len(recs) // 2 :]:
        struct.pack_into("<I", r, 0, struct.unpack_from("<I", r, 0)[0] - 5)
    dst.write_bytes(head + b"".join(recs))
    return dst


def _zero_window(src: Path, dst: Path) -> Path:
    """``src`` with the TCP window of every 50th TCP packet carrying no payload set to 0
    (Ethernet/IPv4 only; the IPv4 checksum does not cover it, TCP's is 0)."""
    head, recs = _records(src)
    k = 0
    for r in recs:
        frame = r[16:]
        if len(frame) < 54 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        tcp = 14 + ihl
        total = struct.unpack_from(">H", frame, 16)[0]
        if total - ihl - ((frame[tcp + 12] >> 4) * 4) != 0:
            continue
        k += 1
        if k % 50 == 0:
            struct.pack_into(">H", r, 16 + tcp + 14, 0)
    dst.write_bytes(head + b"".join(recs))
    return dst


def _both(
    capture: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[bool], dict, dict]:
    """The capture ingested with the check and without: what the check said, and the
    two datasets' tables."""
    said: list[bool] = []
    check = why.nothing_to_derive

    def spy(*args: object) -> bool:
        said.append(check(*args))  # type: ignore[arg-type]
        return said[-1]

    with monkeypatch.context() as m:
        m.setattr(why, "nothing_to_derive", spy)
        pcapflow.ingest(capture, data=root / "with", workers=1)
    with monkeypatch.context() as m:
        m.setattr(why, "nothing_to_derive", lambda *a: False)
        pcapflow.ingest(capture, data=root / "without", workers=1)
    return said, read_tables(root / "with"), read_tables(root / "without")


def test_a_plain_capture_ends_without_the_derive(
    plain_tcp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said, got, want = _both(plain_tcp, tmp_path, monkeypatch)
    assert said == [True]
    assert_same_tables(want, got)
    assert set(want) == {"captures", "flows", "tcp_events", "tcp_rtt"}


@pytest.mark.parametrize(
    "settings", [{"storm_per_s": 1}, {"burst_min_bytes": 1, "burst_factor": 0.5}]
)
def test_thresholds_a_detector_reaches(
    plain_tcp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: dict[str, float]
) -> None:
    """``why.SETTINGS`` low enough for a storm or a burst: the derive runs (and finds one)."""
    monkeypatch.setattr(why, "SETTINGS", alerts.Settings(**settings))  # type: ignore[arg-type]
    said, got, want = _both(plain_tcp, tmp_path, monkeypatch)
    assert said == [False]
    assert_same_tables(want, got)
    kind = "retransmission_storm" if "storm_per_s" in settings else "microburst"
    assert kind in want["alerts"].column("kind").to_pylist()


def test_a_clock_step(plain_tcp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = _stepped_back(plain_tcp, tmp_path / "stepped.pcap")
    said, got, want = _both(cap, tmp_path, monkeypatch)
    assert said == [False]
    assert_same_tables(want, got)
    assert "clock_step" in want["alerts"].column("kind").to_pylist()


def test_a_zero_window(plain_tcp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = _zero_window(plain_tcp, tmp_path / "zero.pcap")
    said, got, want = _both(cap, tmp_path, monkeypatch)
    assert "zero_window" in want["tcp_events"].column("kind").to_pylist()
    assert said == [False]
    assert_same_tables(want, got)


def test_messages_go_to_the_matcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    said, got, want = _both(SAMPLES / "fix44_plain.pcap", tmp_path, monkeypatch)
    assert said == [False]
    assert_same_tables(want, got)
    assert want["latency"].num_rows


def test_the_checks_read_staged_parts_only(plain_tcp: Path, tmp_path: Path) -> None:
    """A rotation's state or carried parts: never the shortcut (``FeedPrep.whole``)."""
    from pcapflow.pipelines.ingest.resume import CARRIED, STATE_FILE
    from pcapflow.pipelines.match import MESSAGE_TABLES
    from pcapflow.pipelines.store import STATE

    pcapflow.ingest(plain_tcp, data=tmp_path / "d", workers=1)
    stage = tmp_path / "stage"
    for table in ("tcp_events", "tcp_rtt"):
        (stage / table).mkdir(parents=True)
        for p in (tmp_path / "d" / table).rglob("*.parquet"):
            shutil.copy(p, stage / table / p.name)  # (a partition's part: no capture_id)
    assert why.nothing_to_derive(stage, MESSAGE_TABLES)
    (stage / CARRIED).write_text("{}")
    assert not why.nothing_to_derive(stage, MESSAGE_TABLES)
    (stage / CARRIED).unlink()
    (stage / STATE).mkdir()
    (stage / STATE / STATE_FILE).write_bytes(b"")
    assert not why.nothing_to_derive(stage, MESSAGE_TABLES)


_CLI = """
import json, sys
sys.argv = ["pcapflow", "ingest", sys.argv[1], "--data", sys.argv[2]]
from pcapflow.cli import main
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
sys.stdout.flush()
print(json.dumps(sorted(m for m in ("duckdb", "_duckdb", "pcapflow.pipelines.match_carry")
                        if m in sys.modules)))
"""


def test_the_cli_opens_no_duckdb_for_a_plain_capture(plain_tcp: Path, tmp_path: Path) -> None:
    """``pcapflow ingest`` of plain TCP: neither the end (``nothing_to_derive``) nor the
    summary (``coverage.plain_coverage``) imports DuckDB, and the summary says what the
    SQL says."""
    out = subprocess.run(
        [sys.executable, "-c", _CLI, str(plain_tcp), str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    from pcapflow.coverage import coverage

    with pcapflow.open(tmp_path / "d") as ds:
        line = coverage(ds).line()
    assert line.startswith("coverage: orders from 0 of ") and line in out.stdout + out.stderr
