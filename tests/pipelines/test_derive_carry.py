"""A rotation ingested one file per command derives ``causes``, ``feed_gaps`` and
``alerts`` from its own file and what the previous command carried
(``pcapflow.why_carry``): the rows equal one ingest's, with cuts that fall inside
the samples (no settle margin, short baselines and gaps), so rows are final,
provisional, carried and anchored across files; and each later command reads only
its own parts and the carried rows."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows, parquet_files

import pcapflow
from pcapflow import alerts, changepoint, why, why_carry

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
SHORT = alerts.Settings(p99_us=5_000.0, min_orders=3, bucket_s=1, episode_gap_s=0.05,
                        stale_after_s=0.1, burst_baseline_s=0.05, cusum_reference=8,
                        cusum_h=3.0, storm_per_s=2)
"""Thresholds that make every kind of alert on the samples, with short windows."""


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(why, "SETTINGS", SHORT)
    monkeypatch.setattr(why_carry, "SETTLE_NS", 0)
    monkeypatch.setattr(why_carry, "MARGIN_NS", 1_000_000)
    why_carry.WHOLE.clear()


def _keys(cap: Path) -> list[Path]:
    key = cap.with_suffix(".keylog")
    return [key] if key.exists() else []


def _derived(root: Path) -> dict[str, int]:
    con = duckdb.connect()
    return {t: con.execute(f"SELECT count(*) FROM read_parquet({parquet_files(root, t)!r})")
            .fetchone()[0] if parquet_files(root, t) else 0  # type: ignore[index]
            for t in ("causes", "feed_gaps", "alerts")}


@pytest.mark.parametrize(("name", "files"), [("binance_tick_tls13.pcap", 7),
                                             ("binance_rest_h2.pcap", 4),
                                             ("fix44_plain.pcap", 3)])
def test_carried_derive_equals_one_ingest(tmp_path: Path, short: None, name: str,
                                          files: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cap = SAMPLES / name
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=_keys(cap), data=one)[0]
    parts = split(cap, [r.packets * k // files for k in range(1, files)], tmp_path)
    # what the latency detectors read: each later command gives them the view's
    # ``latency`` rows and each selects those from its own start (``RecentLatency``)
    read_from: list[tuple[bool, str]] = []
    real = alerts._latency_from

    @contextmanager
    def spy(ds: Any, latency: Any, start: int | None) -> Iterator[str]:
        with real(ds, latency, start) as src:
            read_from.append((latency is not None and start is not None, src))
            yield src

    monkeypatch.setattr(alerts, "_latency_from", spy)
    recent = 0
    for i, p in enumerate(parts):
        read_from.clear()
        pcapflow.ingest([p], keylog=_keys(cap), data=tmp_path / "data")
        if i:  # both detectors given the rows and a start, on every resumed command
            assert len(read_from) == 2 and all(g for g, _ in read_from), (i, read_from)
            recent += sum(src == "_alerts_recent_latency" for _, src in read_from)
    assert recent > 0  # (not only the view: the rows from a start are most of a sample's)
    assert why_carry.WHOLE == []  # every later command derived from what it carried
    assert_same_rows(one, tmp_path / "data")
    got = _derived(tmp_path / "data")
    assert got["alerts"] > 0 and got == _derived(one)
    ds = pcapflow.open(tmp_path / "data")
    # final rows were kept by later commands as they were (parts other than part-t*)
    finals = [f for f in parquet_files(tmp_path / "data", "alerts")
              if not os.path.basename(f).startswith("part-t")]
    assert finals
    # and the stored alerts are what the detectors find over the whole dataset
    stored = ds.df("SELECT * EXCLUDE (capture_id) FROM alerts ORDER BY ALL")
    again = alerts.find(ds, SHORT).to_pandas().drop(columns=["capture_id"])
    assert len(again) == len(stored)


def test_p99_buckets_before_the_answered_cut_are_carried(
        tmp_path: Path, short: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An order never answered holds the order cut ``P`` back (``PENDING_NS``), not the
    answered cut ``Q``: ``p99_high``'s rows of the buckets from ``P``'s to the previous
    command's ``Q``'s are carried (``why_carry.p99_of``), only the later buckets read,
    and the alerts are one ingest's. (The sample's first reply renamed: its order is
    never answered.)"""
    import dataclasses

    monkeypatch.setattr(why, "SETTINGS", dataclasses.replace(SHORT, p99_us=1.0, bucket_s=0.25))
    monkeypatch.setattr(why_carry, "PENDING_NS", 300 * 10**9)
    raw = (SAMPLES / "fix44_plain.pcap").read_bytes()
    order = raw.find(b"11=N00001508\x01")
    reply = raw.find(b"11=N00001508\x01", order + 1)
    assert 0 < order < reply
    cap = tmp_path / "fix44_unanswered.pcap"
    cap.write_bytes(raw[:reply] + b"11=Z00001508\x01" + raw[reply + 13:])
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], data=one)[0]
    given: list[tuple[int, int, int]] = []  # (start, carried from, carried rows)
    real = alerts.p99_high

    def spy(ds: Any, s: Any, since: Any = None, latency: Any = None,
            carried: Any = None) -> list[dict[str, object]]:
        if carried is not None:
            given.append((int(since), int(carried[0]), len(carried[1])))
        return real(ds, s, since, latency, carried)

    monkeypatch.setattr(alerts, "p99_high", spy)
    for p in split(cap, [r.packets * k // 5 for k in range(1, 5)], tmp_path):
        pcapflow.ingest([p], data=tmp_path / "data")
    assert why_carry.WHOLE == []
    assert given and all(f > s for s, f, _ in given)  # (fewer buckets read)
    assert any(n for _, _, n in given)  # (rows carried: every bucket alerts)
    assert_same_rows(one, tmp_path / "data")
    got = _derived(tmp_path / "data")
    assert got["alerts"] > 0 and got == _derived(one)


def test_a_reply_past_the_carried_rows_derives_the_set_whole(
        tmp_path: Path, short: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A premise broken (here: nothing carried for pending orders) falls back to the
    whole set, and the rows are still one ingest's."""
    monkeypatch.setattr(why_carry, "PENDING_NS", 0)
    cap = SAMPLES / "binance_rest_h2.pcap"
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=_keys(cap), data=one)[0]
    parts = split(cap, [r.packets // 3, 2 * r.packets // 3], tmp_path)
    for p in parts:
        pcapflow.ingest([p], keylog=_keys(cap), data=tmp_path / "data")
    assert_same_rows(one, tmp_path / "data")



def _rank_cusum(x: np.ndarray, k: float, h: float, reference: int) -> list[tuple[int, ...]]:
    """The rank CUSUM over a whole series, written from the module docstring (plain
    Python, each segment's reference sorted at once): the oracle for the compiled,
    piece-by-piece kernel. Rows (alarm, change, direction, segment start)."""
    out, start, n = [], 0, len(x)
    while start + reference < n:
        ref = np.sort(x[start:start + reference])
        sp = sn = 0.0
        zero_p = zero_n = start + reference
        alarm = None
        for i in range(start + reference, n):
            u = (np.searchsorted(ref, x[i], "left") + np.searchsorted(ref, x[i], "right")) / (
                2.0 * reference)
            z = (u - 0.5) * np.sqrt(12.0)
            sp, sn = max(0.0, sp + z - k), max(0.0, sn - z - k)
            zero_p = i + 1 if sp == 0.0 else zero_p
            zero_n = i + 1 if sn == 0.0 else zero_n
            if sp > h or sn > h:
                alarm = (i, zero_p if sp > h else zero_n, 1 if sp > h else -1, start)
                break
        if alarm is None:
            break
        out.append(alarm)
        start = alarm[0] + 1
    return out


def test_the_cusum_in_pieces_alarms_as_in_one_pass() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(300, 5000))
        x = rng.lognormal(np.log(3e6), 0.6, n)
        for _ in range(int(rng.integers(0, 4))):
            x[int(rng.integers(0, n)):] *= rng.choice([0.4, 2.5])
        whole = _rank_cusum(x, changepoint.K, changepoint.H, changepoint.REFERENCE)
        assert [tuple(a) for a in changepoint.detect(x)] == whole
        st, ref = changepoint.new_state()
        got, hist, base, pos = [], np.empty(0), 0, 0
        while pos < n:
            new = x[pos:pos + int(rng.integers(0, 700))]
            xx = np.concatenate([hist, new])
            found, _ = changepoint.rank_cusum_step(xx, len(hist), base, changepoint.K,
                                                   changepoint.H, changepoint.REFERENCE,
                                                   st, ref)
            got += [tuple(a) for a in found]
            pos += len(new)
            keep = min(max(changepoint.history_start(st) - base, 0), len(xx))
            hist, base = xx[keep:], base + keep
        assert got == whole


def test_the_kept_rows_are_read_from_the_row_groups_that_hold_them(tmp_path: Path) -> None:
    """What a command keeps of an unanchored table (``tcp_events``: its last seconds) is
    read only from the row groups whose statistics reach the oldest time kept: the same
    rows as reading every group and filtering, from fewer groups."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    cap = SAMPLES / "lossy_rest_tls13.pcap"
    pcapflow.ingest([cap], keylog=_keys(cap), data=tmp_path / "d")
    whole = pa.concat_tables([pq.read_table(f)
                            for f in parquet_files(tmp_path / "d", "tcp_events")])
    whole = whole.sort_by("ts")  # (a partition's files hold no capture_id)
    part = tmp_path / "part.parquet"
    pq.write_table(whole, part, row_group_size=max(1, whole.num_rows // 8))
    ts = whole.column("ts").cast("int64").to_numpy()
    since = int(ts[len(ts) * 3 // 4])
    groups = why_carry._groups_since(pq.ParquetFile(part), "ts", since)
    assert groups is not None and 0 < len(groups) < pq.ParquetFile(part).num_row_groups
    got = why_carry._read([part], "tcp_events", since=("ts", since))
    everything = why_carry._read([part], "tcp_events")
    assert got.num_rows < everything.num_rows
    newer = pc.greater_equal(pc.cast(everything.column("ts"), "int64"), since)
    assert got.filter(pc.greater_equal(pc.cast(got.column("ts"), "int64"), since)).equals(
        everything.filter(newer))


def test_latency_shift_from_the_answered_cut_alarms_as_one_pass() -> None:
    """``latency_shift`` over a rotation's commands, each from the previous command's
    state at its order cut ``P`` or, when ``P`` has not moved and the acks before the
    previous answered cut ``Q`` are as many as then, from its state at ``Q``
    (``why_carry.cusum_of``; the states round-tripped through the tables ``save``
    writes): every command's alarms from ``P`` on are one pass's over what it sees.
    Orders without a reply for a while hold ``P`` back; some are answered late (a new
    ack before ``Q``: read from ``P`` again). Given the rows from their start on
    (``alerts.RecentLatency``), ``latency_shift`` and ``p99_high`` find the same."""
    from types import SimpleNamespace

    import pyarrow as pa

    rng = np.random.default_rng(11)
    s = alerts.Settings(cusum_reference=8, cusum_h=3.0)
    sec = 10**9
    n = 6000
    o = np.sort(rng.integers(0, 600 * sec, n))
    lat = rng.lognormal(np.log(3e6), 0.5, n)
    for _ in range(6):
        lat[int(rng.integers(0, n)):] *= rng.choice([0.4, 2.5])
    a = o + lat.astype(np.int64)
    late = rng.random(n) < 0.002  # answered 30-200 s later
    a[late] = o[late] + rng.integers(30 * sec, 200 * sec, int(late.sum()))
    table = pa.table({"venue": pa.array(rng.choice(["x", "y"], n)),
                      "endpoint": pa.array(rng.choice(["e1", "e2"], n)),
                      "order_ts": pa.array(o).cast(pa.timestamp("ns")),
                      "latency_ns": pa.array(a - o), "leg": pa.array(["ack"] * n),
                      "ack_ts": pa.array(a).cast(pa.timestamp("ns")),
                      "flow_id": pa.array(rng.integers(1, 4, n)),
                      "correlation_id": pa.array([f"c{i}" for i in range(n)])})

    def view(rows: pa.Table) -> Any:
        con = duckdb.connect()
        con.register("latency", rows)
        return SimpleNamespace(con=con, sql=con.sql, fetchall=lambda q, p=None: con.execute(
            q, p or []).fetchall())

    def shifts(rows: pa.Table, carry: alerts.CusumCarry | None,
               given: pa.Table | None = None) -> list[tuple]:
        got = alerts.latency_shift(view(rows), s, carry, given)
        return sorted((r["venue"], r["endpoint"], r["start_ts"], r["end_ts"], r["value"],
                       r["evidence_rows"]) for r in got)

    def twin(c: alerts.CusumCarry) -> alerts.CusumCarry:  # (latency_shift updates its carry)
        def states(d: dict[Any, Any] | None) -> dict[Any, Any] | None:
            return None if d is None else {k: alerts._copy(v) for k, v in d.items()}
        return alerts.CusumCarry(
            states(c.series) or {}, c.since, c.until, c.at, states(c.later),
            None if c.later_alarms is None else {k: list(v) for k, v in c.later_alarms.items()},
            c.resume)

    prev: dict[str, object] | None = None
    resumed = checked = checked99 = 0
    for end in range(20, 620, 20):
        t_end = end * sec
        seen = table.filter(pa.array(a < t_end))
        cut = t_end - 2 * sec
        ack = a[a < t_end]
        qcut = min([cut, *o[a < t_end][ack >= cut].tolist()])
        waiting = o[(a >= t_end) & (o < t_end) & (o >= t_end - 300 * sec)]
        pcut = min([qcut, *waiting.tolist()])
        carry = alerts.CusumCarry(series={} if prev is None else dict(prev["series"]),
                                  since=None if prev is None else prev["pcut"],
                                  until=pcut, at=qcut)
        if prev is not None and prev["pcut"] == pcut and qcut >= prev["qcut"] and \
                why_carry._acks_between(seen, pcut, prev["qcut"]) == prev["n_q"]:
            carry.later, carry.later_alarms = dict(prev["later"]), prev["later_alarms"]
            carry.resume = prev["qcut"]
            resumed += 1
        start = carry.resume if carry.resume is not None else carry.since
        recent = None if start is None else alerts.RecentLatency.of(seen, start)
        given = shifts(seen, twin(carry), seen) if recent is not None else None
        got = shifts(seen, carry)
        assert given is None or given == got, end
        if prev is not None:  # (p99_high from the previous order cut's bucket on)
            w = int(s.bucket_s * 1e9)
            r99 = alerts.RecentLatency.of(seen, int(prev["pcut"]) // w * w)
            s99 = alerts.Settings(p99_us=6_000.0)
            high = alerts.p99_high(view(seen), s99, prev["pcut"])
            assert r99 is None or alerts.p99_high(view(seen), s99, prev["pcut"], seen) == high
            checked += recent is not None
            checked99 += r99 is not None and len(high) > 0
        since = -1 if prev is None else prev["pcut"]
        assert [r for r in got if r[3] >= since] == [r for r in shifts(seen, None)
                                                     if r[3] >= since], end
        assert carry.later is not None and carry.later_alarms is not None
        prev = {"series": why_carry._cusum_load(why_carry._cusum_table(carry.series)),
                "later": why_carry._cusum_load(why_carry._cusum_table(carry.later)),
                "later_alarms": why_carry._alarms_load(
                    why_carry._alarms_table(carry.later_alarms)),
                "pcut": pcut, "qcut": qcut, "n_q": why_carry._acks_between(seen, pcut, qcut)}
    assert 5 < resumed < 29
    assert checked > 20 and checked99 > 10, (checked, checked99)


def test_causes_read_the_carried_delayed_ack_samples_as_their_own(tmp_path: Path) -> None:
    """``causes.compute``'s ``more_rtt`` (the delayed-ACK candidates a rotation's
    command carries apart: ``why_carry.DACK``): with those samples taken out of
    ``tcp_rtt`` and given there, the causes are the same rows."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pcapflow import causes
    from pcapflow.dataset import Dataset

    cap = SAMPLES / "fix44_plain.pcap"
    pcapflow.ingest([cap], data=tmp_path / "d")
    root = tmp_path / "d"
    cid = next((root / "latency").glob("capture_id=*")).name.split("=", 1)[1]
    files = {t: [Path(f) for f in parquet_files(root, t)]
             for t in ("latency", "acks", "tcp_rtt", "tcp_events", "ws_messages",
                       "http_messages", "fix_messages", "tls_records")}
    rtt = pa.concat_tables([pq.read_table(f) for f in files["tcp_rtt"]])
    dack = causes.delayed_ack_candidates(rtt)
    assert 0 < pc.sum(dack).as_py() < rtt.num_rows
    with Dataset.of_capture(files, cid) as ds:
        want = causes.compute(ds)
    assert "delayed_ack" in want.column("cause").to_pylist()
    with Dataset.of_capture(files, cid, {"tcp_rtt": rtt.filter(pc.invert(dack))}) as ds:
        assert "delayed_ack" not in causes.compute(ds).column("cause").to_pylist()
        got = causes.compute(ds, more_rtt=rtt.filter(dack), capture_id=cid)
    assert got.equals(want)


@pytest.mark.parametrize("name", ["fix44_plain.pcap", "binance_tick_tls13.pcap"])
def test_causes_of_the_replies_since_read_from_the_rows_since(tmp_path: Path,
                                                              name: str) -> None:
    """``causes.compute(since=...)`` given ``since_rows``' latency and acks rows (a
    rotation's later command: the replies of its last seconds, not the minutes of
    matcher rows its view holds) finds the same rows as from the whole tables, at
    every cut from before the first reply to after the last."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

    from pcapflow import causes
    from pcapflow.dataset import Dataset

    cap = SAMPLES / name
    pcapflow.ingest([cap], keylog=_keys(cap), data=tmp_path / "d")
    root = tmp_path / "d"
    cid = next((root / "latency").glob("capture_id=*")).name.split("=", 1)[1]
    files = {t: [Path(f) for f in parquet_files(root, t)]
             for t in ("latency", "acks", "tcp_rtt", "tcp_events", "ws_messages",
                       "http_messages", "fix_messages", "tls_records")}
    rows = {t: pa.concat_tables([pq.ParquetFile(f).read() for f in files[t]]).select(
        without_capture_id(TABLES[t]).names).cast(without_capture_id(TABLES[t]))
        for t in ("latency", "acks")}
    acks = rows["acks"].column("ts").cast(pa.int64()).to_numpy()
    assert len(acks) > 3
    with Dataset.of_capture(files, cid) as ds:
        assert causes.compute(ds).num_rows
        acks = np.sort(acks)
        for q in (0.0, 0.3, 0.6, 0.9, 1.0):
            since = int(acks[int(q * (len(acks) - 1))])
            given = causes.since_rows(rows["latency"], rows["acks"], since)
            assert given["acks"].num_rows < rows["acks"].num_rows or q == 0.0
            want = causes.compute(ds, since=int(since))
            got = causes.compute(ds, since=int(since), capture_id=cid, given=given)
            assert got.equals(want)


def test_an_open_alert_holds_back_only_the_inputs_its_kind_reads() -> None:
    """``why_carry.edge``: a provisional alert's start holds back the carried inputs of
    its own kind (``READ_BY``) only; a kind not named there holds every input back; the
    causes' messages, read by no alert, from the cut (the equality of the rows with one
    ingest's: ``test_carried_derive_equals_one_ingest``, whose short thresholds leave
    retransmission storms and stale feeds open at some cuts)."""
    cut = 100
    opens = {"retransmission_storm": 40, "feed_gap": 70}
    assert why_carry.edge("tcp_events", cut, opens) == 40
    assert why_carry.edge("feed", cut, opens) == 70
    assert why_carry.edge("tcp_rtt", cut, opens) == cut
    assert why_carry.edge("fix_messages", cut, opens) == cut
    assert why_carry.edge("tcp_rtt", cut, {**opens, "a_new_kind": 10}) == 10
    assert why_carry.edge("feed", 30, opens) == 30
    assert set(why_carry.READ_BY) <= {*why_carry.CARRY, "feed"}
    assert {k for ks in why_carry.READ_BY.values() for k in ks} == {
        k for k in alerts.DETECTORS if k not in (*why_carry.LATENCY_KINDS, "clock_step")}
