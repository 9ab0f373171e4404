"""Forward steps of the capture clock (parsers/capture/clock.py ``ForwardWatch``).

A real capture (binance_tick_tls13: Linux hosts, TCP timestamps on every segment)
is cut in two at a packet and its second part's times shifted forward by editcap,
as a clock set forward mid-capture would stamp them: the step must be found at
that packet, its size within a few ms of the shift (the TSval clock ticks in ms),
whatever the cut and the size, and nowhere else. A shift back is a step back, not
forward; the unmodified samples have none; and the public corpus (Linux, BSD,
Windows and embedded stacks, many without timestamps) has none either.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers.paths import PUBLIC
from pcapflow.parsers.capture.capset import open_set
from pcapflow.parsers.decode import decode_chunk
from pcapflow.parsers.tcp.analysis import FlowTracker

import pcapflow
from pcapflow import api

SAMPLES = Path(__file__).resolve().parents[3] / "sample_pcaps"
TICK = SAMPLES / "binance_tick_tls13.pcap"
CAPTURES = sorted([*SAMPLES.glob("*.pcap"), *SAMPLES.glob("*.pcapng")])
SUFFIXES = {".pcap", ".pcapng", ".cap", ".gz", ".zst"}
needs_editcap = pytest.mark.skipif(
    shutil.which("editcap") is None or shutil.which("mergecap") is None,
    reason="editcap/mergecap (Wireshark) not installed")


def clock_anomalies(path: Path) -> list[tuple[str, str]]:
    """(code, detail) of the clock anomalies of one capture: the reader's steps back
    and the flow tracker's steps forward."""
    tracker, out = FlowTracker(), []
    with open_set([str(path)], hash=False) as reader:
        for chunk in reader:
            out += [(a.code, a.detail) for a in chunk.anomalies if a.layer == "clock"]
            if len(chunk):
                tracker.process(decode_chunk(chunk), chunk.ts_ns, chunk.wirelen, chunk.index)
                out += [(a.code, a.detail) for a in tracker.take_clock_steps()]
    return out


def shifted(src: Path, cut: int, shift_s: float, tmp: Path) -> Path:
    """``src`` with the times of its packets after the first ``cut`` moved by
    ``shift_s`` seconds (packet order kept)."""
    a, b, b2, out = (tmp / n for n in ("a.pcap", "b.pcap", "b2.pcap", "stepped.pcap"))
    subprocess.run(["editcap", "-r", str(src), str(a), f"1-{cut}"], check=True)
    subprocess.run(["editcap", "-r", str(src), str(b), f"{cut + 1}-100000000"], check=True)
    subprocess.run(["editcap", "-t", str(shift_s), str(b), str(b2)], check=True)
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(out), str(a), str(b2)],
                   check=True)
    return out


def _forward_ms(detail: str) -> float:
    return float(re.search(r"set forward by ~([0-9,.]+) ms", detail)[1].replace(",", ""))


@needs_editcap
@pytest.mark.parametrize(("cut", "shift_s"), [(200, 0.02), (400, 0.25), (700, 30.0)])
def test_a_clock_set_forward_is_found_at_its_packet(tmp_path: Path, cut: int,
                                                    shift_s: float) -> None:
    got = clock_anomalies(shifted(TICK, cut, shift_s, tmp_path))
    assert [c for c, _ in got] == ["clock_step_forward"], got
    detail = got[0][1]
    assert detail.startswith(f"packet {cut} ")  # capture indexes count from 0
    assert abs(_forward_ms(detail) - shift_s * 1000) <= 3.0, detail


@needs_editcap
def test_a_clock_set_back_is_no_forward_step(tmp_path: Path) -> None:
    got = clock_anomalies(shifted(TICK, 400, -0.25, tmp_path))
    assert [c for c, _ in got] == ["clock_step_back"], got


def test_the_samples_have_no_forward_step() -> None:
    for cap in CAPTURES:
        assert clock_anomalies(cap) == [], cap.name


@pytest.mark.skipif(PUBLIC is None or not PUBLIC.is_dir(), reason="no public captures")
def test_the_public_captures_have_no_forward_step() -> None:
    assert PUBLIC is not None
    caps = sorted(p for p in PUBLIC.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    seen = 0
    for cap in caps:
        try:
            got = clock_anomalies(cap)
        except pcapflow.PcapflowError:
            continue  # an unreadable capture: the reader's own tests cover it
        seen += 1
        assert not [d for c, d in got if c == "clock_step_forward"], cap
    assert seen > 200


@needs_editcap
def test_the_forward_step_is_a_clock_step_alert(tmp_path: Path) -> None:
    out = shifted(TICK, 400, 0.25, tmp_path)
    root = tmp_path / "d"
    api.ingest([str(out)], keylog=[SAMPLES / "binance_tick_tls13.keylog"], data=root)
    with pcapflow.open(root) as d:
        steps = d.df("SELECT * FROM anomalies WHERE code = 'clock_step_forward'")
        alerts = d.alerts("clock_step")
        stored = d.df("SELECT * FROM alerts WHERE kind = 'clock_step'")
        evidence = d.df(alerts.evidence_sql.iloc[0])
    assert len(steps) == 1 and steps.detail.iloc[0].startswith("packet 400 ")
    assert len(alerts) == 1 and len(stored) == 1
    assert alerts.unit.iloc[0] == "ms forward" and 247 <= alerts.value.iloc[0] <= 253
    assert alerts.start_ts.iloc[0] == steps.ts.iloc[0]
    assert len(evidence) == 1 and evidence.code.iloc[0] == "clock_step_forward"
