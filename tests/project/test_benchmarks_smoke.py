"""Smoke tests of ``benchmarks/``: the capture generator and the runner.

No timing is asserted here. The generator must write real TCP (what it intended
is what tshark's and pcapflow's TCP analysis find; retransmissions repeat the
original bytes; dpkt reads every record), and the runner must produce its JSON
with a row for every tool on a small capture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import dpkt
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))

import make_capture as mc  # noqa: E402

N = 20_000


@pytest.fixture(scope="module")
def small_plan() -> mc.Plan:
    return mc.plan(mc.Config(packets=N, seed=5))


@pytest.fixture(scope="module", params=["pcap", "pcapng"])
def small_capture(request: pytest.FixtureRequest, small_plan: mc.Plan,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / f"small.{request.param}"
    mc.write(small_plan, str(path), request.param)
    return path


def _dpkt_records(path: Path) -> list[tuple[float, bytes]]:
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        r = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        return [(ts, bytes(buf)) for ts, buf in r]


def test_plan_shape(small_plan: mc.Plan) -> None:
    c = small_plan.cols
    assert c["t"].size == N  # the requested packet count, exactly
    assert np.all(np.diff(c["t"]) >= 0)  # capture order is time order
    want = small_plan.intended
    assert want["retransmission"] == round(N * 0.005)
    assert 0 < want["out_of_order"] <= round(N * 0.002)
    assert want["duplicate_ack"] > 0
    assert 150 <= want["streams"] <= 600
    # ~200 connections open at once in the middle of the capture
    first = np.full(c["conn"].max() + 1, np.iinfo(np.int64).max)
    last = np.zeros(c["conn"].max() + 1, np.int64)
    np.minimum.at(first, c["conn"], c["t"])
    np.maximum.at(last, c["conn"], c["t"])
    mid = c["t"][N // 2]
    assert 150 <= int(((first <= mid) & (last >= mid)).sum()) <= 250
    data = c["len"][c["len"] > 0]
    assert np.median(data) < 400 and data.max() == mc.MSS


def test_records_decode_and_retransmissions_repeat_bytes(small_capture: Path) -> None:
    recs = _dpkt_records(small_capture)
    assert len(recs) == N
    seen: dict[tuple, bytes] = {}
    streams: defaultdict[tuple, int] = defaultdict(int)
    repeats = 0
    for _, buf in recs:
        ip = dpkt.ethernet.Ethernet(buf).data
        tcp = ip.data
        assert isinstance(tcp, dpkt.tcp.TCP)
        assert ip.len == len(buf) - 14
        key = (ip.src, tcp.sport, ip.dst, tcp.dport)
        streams[key] += 1
        if tcp.data:
            k = (*key, tcp.seq)
            if k in seen:
                repeats += 1
                assert seen[k] == tcp.data, "a retransmission must carry the same bytes"
            seen[k] = tcp.data
    assert repeats == round(N * 0.005)
    assert len(streams) % 2 == 0  # every connection seen both ways


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_tshark_agrees_with_intent(small_plan: mc.Plan, small_capture: Path) -> None:
    got = mc.tshark_counts(str(small_capture))
    for key in ("streams", "retransmission", "out_of_order", "lost_segment", "duplicate_ack"):
        assert got[key] == small_plan.intended[key], key
    assert got["spurious_retransmission"] == 0


def test_runner_json_has_every_tool(small_plan: mc.Plan, tmp_path: Path) -> None:
    small_capture = tmp_path / "small.pcap"
    mc.write(small_plan, str(small_capture))
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), str(small_capture), "--repeat", "1",
         "--no-cold", "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    doc = json.loads(out.read_text())
    assert doc["packets"] == N
    assert doc["bytes"] == small_capture.stat().st_size
    tools = doc["tools"]
    expected = {"cat", "pcapflow", "pcapflow_api", "dpkt"}
    if shutil.which("tshark"):
        expected.add("tshark")
    assert expected <= set(tools)
    for name in expected:
        t = tools[name]
        assert t["ok"], (name, t["note"])
        assert t["best_s"] > 0 and t["peak_rss_mb"] > 0 and t["pkts_per_s"] > 0, name
        assert len(t["runs"]) == 1
    for peer in expected - {"pcapflow", "pcapflow_api"}:
        assert doc["ratios"][f"pcapflow_vs_{peer}"] > 0
    assert tools["dpkt"]["extra"]["packets"] == N
    assert tools["dpkt"]["extra"]["flows"] == small_plan.intended["streams"]
    assert tools["pcapflow_api"]["extra"]["flows"] == small_plan.intended["streams"]
    # pcapflow's TCP analysis finds what the generator put there
    ev = tools["pcapflow"]["extra"]["tcp_events"]
    want = small_plan.intended
    assert ev.get("retransmission", 0) + ev.get("fast_retransmission", 0) == want["retransmission"]
    assert ev.get("out_of_order", 0) == want["out_of_order"]
    assert ev.get("duplicate_ack", 0) == want["duplicate_ack"]
    assert set(doc["targets"]) == {"tcp_only_pkts_per_s>=1.5M", "vs_tshark>=20x",
                                   "vs_dpkt>=10x", "app_vs_tshark_app>=10x",
                                   "peak_rss<1GiB_on_2GB"}
    assert doc["targets"]["app_vs_tshark_app>=10x"] == "not measured"  # no --app here
    assert "cat" in proc.stdout and "pcapflow" in proc.stdout


def test_runner_app_mode_runs_both_worker_settings(tmp_path: Path) -> None:
    """``--app``: the CLI with its default workers and with ``--workers 1``, and
    tshark decrypting WebSocket when it is installed, each on the same capture."""
    samples = BENCH.parent / "sample_pcaps"
    cap, key = samples / "binance_wsapi_tls13.pcap", samples / "binance_wsapi_tls13.keylog"
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), str(cap), "--app", "--keylog", str(key),
         "--dpkt", "--repeat", "1", "--no-cold", "--json", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    doc = json.loads(out.read_text())
    for name in ("pcapflow_app", "pcapflow_app_1w"):
        t = doc["tools"][name]
        assert t["ok"] and t["best_s"] > 0, (name, t["note"])
    assert doc["tools"]["pcapflow_app_1w"]["cmd"][-4:-2] == ["--workers", "1"]
    if shutil.which("tshark"):
        assert doc["tools"]["tshark_app"]["ok"]
        assert doc["ratios"]["pcapflow_vs_tshark_app"] > 0
        assert doc["targets"]["app_vs_tshark_app>=10x"] != "not measured"


def test_http2_vs_http1_benchmark_runs(tmp_path: Path) -> None:
    """Both encodings of the same orders parse to the same message count (the script
    asserts it) and the JSON has both per-message costs."""
    out = tmp_path / "h2.json"
    subprocess.run([sys.executable, str(BENCH / "http2_vs_http1.py"), "--orders", "300",
                    "--repeat", "1", "--json", str(out)], check=True, timeout=300,
                   capture_output=True)
    res = json.loads(out.read_text())
    assert res["http1"]["us_per_message"] > 0 and res["http2"]["us_per_message"] > 0
    assert res["http2"]["bytes"] < res["http1"]["bytes"]


def test_workers_scaling_times_both_settings_and_projects(tmp_path: Path) -> None:
    """``workers_scaling.py``: the CLI with ``--workers 1`` and ``2``, each process's
    parts (a worker forked: two shards timed) and a projection for more cores."""
    samples = BENCH.parent / "sample_pcaps"
    cap, key = samples / "binance_tick_tls13.pcap", samples / "binance_tick_tls13.keylog"
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "workers_scaling.py"), "--capture", str(cap),
         "--keylog", str(key), "--repeat", "1", "--cores", "1,2,8", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    doc = json.loads(out.read_text())
    assert set(doc["cli"]) == {"this_w1", "this_w2"}
    assert all(v["median_cpu_s"] > 0 for v in doc["cli"].values())
    assert [s["shard"] for s in doc["phases"]["this_w2"]["raw"]["shards"]] == [0, 1]
    assert doc["phases"]["this_w1"]["tail_thread_cpu"] > 0
    m = doc["model"]
    assert 0 < m["serial_fraction"] < 1 and set(m["projection"]) == {"1", "2", "8"}
    assert doc["flow_payload_bytes"] and sum(doc["flow_payload_bytes"]) > 0
