"""``pcapflow match``: re-matching a dataset with a new venue map, atomically per capture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pcapflow
from pcapflow import api

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
TABLES = ("captures", "flows", "fix_messages", "tcp_rtt", "orders", "acks", "latency",
          "unmatched", "tcp_events", "anomalies")


def _counts(data: Path) -> dict[str, int]:
    with pcapflow.open(data) as ds:
        return {t: ds.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"COLUMNS": "1000"}  # rich wraps error lines at the terminal width
    return subprocess.run([sys.executable, "-m", "pcapflow.cli", *args], capture_output=True,
                          text=True, timeout=120, check=False, env=env)


def test_match_command_rewrites_venues_and_keeps_the_rest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    api.ingest([str(SAMPLES / "fix44_sll2.pcap"), str(SAMPLES / "binance_rest_dsb.pcapng")],
               data=data)
    before = _counts(data)
    with pcapflow.open(data) as ds:
        assert ds.sql("SELECT venue FROM flows WHERE app_protocol = 'fix'").fetchall() == [
            (None,)]
        fix_lat = ds.df("SELECT * FROM latency WHERE protocol = 'fix' ORDER BY order_ts")
    venues = tmp_path / "venues.toml"
    venues.write_text('[[venue]]\nname = "mockfix"\nsender_comp_id = "PCFTRADER1"\n')
    res = _cli("match", "--data", str(data), "--venues", str(venues))
    assert res.returncode == 0, res.stderr
    assert "mockfix" in res.stdout
    assert _counts(data) == before
    with pcapflow.open(data) as ds:
        assert ds.sql("SELECT venue FROM flows WHERE app_protocol = 'fix'").fetchall() == [
            ("mockfix",)]
        after = ds.df("SELECT * FROM latency WHERE protocol = 'fix' ORDER BY order_ts")
        assert set(ds.sql("SELECT DISTINCT venue FROM latency").fetchall()) == {
            ("mockfix",), ("binance",)}
    assert (after.venue == "mockfix").all() and len(after) == len(fix_lat) == 18
    assert list(after.latency_ns) == list(fix_lat.latency_ns)
    assert not list(data.glob(".staging/*"))  # nothing left behind


def test_match_command_bad_inputs(tmp_path: Path) -> None:
    res = _cli("match", "--data", str(tmp_path / "nothing"))
    assert res.returncode == 1 and "no dataset" in res.stderr
    data = tmp_path / "data"
    api.ingest([str(SAMPLES / "fix44_sll2.pcap")], data=data)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[venue]]\nname = 'x'\nports = ['nine']\n")
    res = _cli("match", "--data", str(data), "--venues", str(bad))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.toml" in lines[0] and "ports" in lines[0]
