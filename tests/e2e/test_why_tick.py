"""The why tables on a REAL sample with planted trouble: ``binance_tick_tls13``.

The mock exchange (``sample_pcaps/venue_binance_ws.py``, ``TickStream``) plants
gaps in its Binance depth and trade numbering and one microburst, and lists each
gap in ``binance_tick_tls13.feed.jsonl`` as it sends it; the client orders on
signals and logs the market-data event that made it send each order
(``truth.jsonl`` ``extra.trigger``). The capture was recorded with tcpdump on
loopback. Here the stored tables (written at ingest) must find exactly those
gaps, the logged trigger of every order with its wire-time difference to the
nanosecond, and the burst; a capture with its clock set back mid-file (the same
packets, the second half's times shifted back by editcap) must give a clock-step
alert at the right packet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pcapflow
from pcapflow import api
from pcapflow.cli import app

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
NAME = "binance_tick_tls13"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> pcapflow.Dataset:
    root = tmp_path_factory.mktemp("tick") / "data"
    api.ingest([str(SAMPLES / f"{NAME}.pcap")], keylog=[SAMPLES / f"{NAME}.keylog"], data=root)
    d = pcapflow.open(root)
    yield d
    d.close()


def test_feed_gaps_are_exactly_the_planted_ones(ds: pcapflow.Dataset) -> None:
    planted = sorted((g["rule"], g["stream"], g["expected"], g["got"], g["missing"])
                     for g in _lines(SAMPLES / f"{NAME}.feed.jsonl") if g["kind"] == "gap")
    gaps = ds.feed_gaps()
    got = sorted((r.rule, r.stream, int(r.expected), int(r.got), int(r.missing))
                 for r in gaps.itertuples())
    assert len(planted) >= 4 and {p[0] for p in planted} == {"binance_depth", "binance_trade"}
    assert got == planted
    assert set(gaps.kind) == {"gap"} and (gaps.ts > gaps.prev_ts).all()
    # the same rows through DuckDB and `pcapflow query`
    assert ds.scalar("SELECT sum(missing) FROM feed_gaps") == sum(p[4] for p in planted)
    res = CliRunner().invoke(app, ["query", "SELECT rule, got FROM feed_gaps ORDER BY got",
                                   "--data", str(ds.path), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert sorted(r["got"] for r in json.loads(res.stdout)) == sorted(p[3] for p in planted)
    # and as alerts, whose evidence SQL selects them
    alerts = ds.alerts("feed_gap")
    assert alerts.evidence_rows.sum() == len(planted)
    for r in alerts.itertuples():
        assert len(ds.fetchall(r.evidence_sql)) == r.evidence_rows


def _depth_events(ds: pcapflow.Dataset) -> dict[tuple[str, int, int], tuple[int, int]]:
    """(symbol, U, u) -> (ts_first, ts_last) of every depth event on the wire."""
    out = {}
    for first, last, payload in ds.fetchall(
            "SELECT epoch_ns(ts_first), epoch_ns(ts_last), payload FROM ws_messages "
            "WHERE direction = 'in' AND opcode = 'text' AND payload LIKE '%depthUpdate%'"):
        d = json.loads(payload)["data"]
        out[(d["s"], d["U"], d["u"])] = (first, last)
    return out


def test_tick_to_trade_finds_each_logged_trigger_to_the_nanosecond(
        ds: pcapflow.Dataset) -> None:
    truth = _lines(SAMPLES / f"{NAME}.truth.jsonl")
    events = _depth_events(ds)
    orders = {cid: t for cid, t in ds.fetchall(
        "SELECT client_order_id, epoch_ns(ts_first) FROM orders")}
    ttt = ds.tick_to_trade()
    by_order = {r.client_order_id: r for r in ttt.itertuples()}
    assert len(truth) == 16 and len(ttt) == len(truth)
    for rec in truth:
        trig = rec["extra"]["trigger"]
        _, md_last = events[(trig["symbol"], trig["U"], trig["u"])]
        row = by_order[rec["client_order_id"]]
        want = orders[rec["client_order_id"]] - md_last
        assert row.symbol == trig["symbol"] and row.md_rule == "binance_depth"
        assert row.md_ts.value == md_last, rec["client_order_id"]
        assert row.reaction_ns == want
        # the client's own read-to-send time is within the wire's (it read the event
        # after its last byte arrived and sent before the order's first byte left)
        assert 0 < trig["reaction_mono_ns"] <= want < 30_000_000


def _big_pushes(ds: pcapflow.Dataset) -> list[tuple[int, int, int]]:
    """(flow_id, ts_first, ts_last) of the WS API's big account pushes (api.jsonl)."""
    return [(f, t0, t1) for f, t0, t1 in ds.fetchall(
        "SELECT flow_id, epoch_ns(ts_first), epoch_ns(ts_last) FROM ws_messages "
        "WHERE direction = 'in' AND payload LIKE '%outboundAccountPosition%'")]


def test_microbursts_are_the_planted_burst_and_the_big_pushes(ds: pcapflow.Dataset) -> None:
    """The feed's burst (the 40-level depth events the mock sent back to back) and, on
    the order connection, the ~40 KB pushes: every microburst lies in one of them, and
    each of them has one."""
    burst = [(flow, first, last) for flow, first, last, payload in ds.fetchall(
        "SELECT flow_id, epoch_ns(ts_first), epoch_ns(ts_last), payload FROM ws_messages "
        "WHERE direction = 'in' AND payload LIKE '%depthUpdate%'")
        if len(json.loads(payload)["data"]["b"]) == 40]
    assert len(burst) == 150
    pushes = _big_pushes(ds)
    assert len(pushes) == len([x for x in _lines(SAMPLES / f"{NAME}.api.jsonl")
                               if x["kind"] == "big_push"]) == 4
    spans = [(burst[0][0], min(b[1] for b in burst), max(b[2] for b in burst)), *pushes]
    found = ds.alerts("microburst")
    hit = set()
    for r in found.itertuples():
        # a hot window holds the span's bytes: it starts at most one window before
        # the span's first byte and ends at most one window after its last
        inside = [k for k, (f, t0, t1) in enumerate(spans) if f == r.flow_id
                  and t0 - 1_000_000 <= r.start_ts.value and r.end_ts.value <= t1 + 1_000_000]
        assert inside, r
        hit.update(inside)
        assert r.stream == "in" and r.value >= r.threshold >= 4096
        assert len(ds.fetchall(r.evidence_sql)) == r.evidence_rows > 0
    assert hit == set(range(len(spans)))


def test_replies_behind_a_big_push_are_head_of_line(ds: pcapflow.Dataset) -> None:
    planted = {x["before_reply_to"] for x in _lines(SAMPLES / f"{NAME}.api.jsonl")}
    got = ds.df("SELECT l.client_order_id, c.cost_ns, c.detail FROM causes c JOIN latency l "
                "USING (capture_id, flow_id, leg, correlation_id, order_ts) "
                "WHERE c.cause = 'head_of_line'")
    assert set(got.client_order_id) == planted
    pushes = {t1: t1 - t0 for _, t0, t1 in _big_pushes(ds)}
    orders = dict(ds.fetchall("SELECT client_order_id, epoch_ns(order_ts) FROM latency"))
    stall = dict(ds.fetchall("SELECT l.client_order_id, epoch_ns(c.stall_ts) FROM causes c "
                             "JOIN latency l USING (capture_id, flow_id, leg, correlation_id, "
                             "order_ts) WHERE c.cause = 'head_of_line'"))
    for r in got.itertuples():
        t1 = stall[r.client_order_id]
        assert t1 in pushes  # the stall is the push being whole
        assert 0 < r.cost_ns <= min(pushes[t1], t1 - orders[r.client_order_id])


def test_stored_alerts_equal_a_recompute(ds: pcapflow.Dataset) -> None:
    """The ingest's alerts are the detectors' over the capture (one capture here)."""
    stored = ds.alerts()
    again = ds.alerts(recompute=True)
    cols = ["kind", "flow_id", "start_ts", "end_ts", "value", "evidence_rows"]
    assert len(stored) >= 4
    assert stored[cols].reset_index(drop=True).equals(again[cols].reset_index(drop=True))


def test_rematch_derives_the_tables_again(tmp_path: Path) -> None:
    root = tmp_path / "d"
    api.ingest([str(SAMPLES / f"{NAME}.pcap")], keylog=[SAMPLES / f"{NAME}.keylog"], data=root)
    with pcapflow.open(root) as d:
        before = {t: d.scalar(f"SELECT count(*) FROM {t}") for t in ("feed_gaps", "alerts")}
    res = CliRunner().invoke(app, ["match", "--data", str(root)])
    assert res.exit_code == 0, res.output
    with pcapflow.open(root) as d:
        after = {t: d.scalar(f"SELECT count(*) FROM {t}") for t in ("feed_gaps", "alerts")}
    assert before == after and before["feed_gaps"] >= 4


@pytest.mark.skipif(shutil.which("editcap") is None or shutil.which("mergecap") is None,
                    reason="editcap/mergecap (Wireshark) not installed")
def test_a_clock_set_back_mid_capture_is_an_alert(tmp_path: Path) -> None:
    src = SAMPLES / f"{NAME}.pcap"
    a, b, b2, out = (tmp_path / n for n in ("a.pcap", "b.pcap", "b2.pcap", "stepped.pcap"))
    subprocess.run(["editcap", "-r", str(src), str(a), "1-400"], check=True)
    subprocess.run(["editcap", "-r", str(src), str(b), "401-1000000"], check=True)
    subprocess.run(["editcap", "-t", "-0.25", str(b), str(b2)], check=True)
    subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", str(out), str(a), str(b2)],
                   check=True)
    root = tmp_path / "d"
    api.ingest([str(out)], keylog=[SAMPLES / f"{NAME}.keylog"], data=root)
    with pcapflow.open(root) as d:
        steps = d.df("SELECT * FROM anomalies WHERE code = 'clock_step_back'")
        alerts = d.alerts("clock_step")
        first_b = d.scalar("SELECT epoch_ns(ts) FROM packets WHERE packet = 400") \
            if d.scalar("SELECT count(*) FROM packets") else None
    assert len(steps) == 1 and "packet 400 " in steps.detail.iloc[0]
    assert len(alerts) == 1 and 240 <= alerts.value.iloc[0] <= 250
    assert first_b is None or alerts.start_ts.iloc[0].value == first_b
