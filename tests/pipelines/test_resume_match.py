"""A rotation ingested one file per command matches its own file and what the previous
command carried (``pipelines.match_carry``): the ``orders``, ``acks``, ``latency`` and
``unmatched`` rows equal one ingest's, with cuts inside the samples (no settle margin),
so groups are final, provisional and carried across files; and a broken premise
matches the set whole."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows, parquet_files
from pcapflow.parsers.capture.capset import open_set
from pcapflow.pipelines import match_carry

import pcapflow
from pcapflow import why_carry

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
MATCHED = ("orders", "acks", "latency", "unmatched")


@pytest.fixture
def cut_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short settle margin (100 ms: the samples' delayed ACKs arrive within it), so
    groups are final within the samples' few seconds."""
    monkeypatch.setattr(match_carry, "SETTLE_NS", 100_000_000)
    monkeypatch.setattr(why_carry, "SETTLE_NS", 0)
    match_carry.WHOLE.clear()


def _pending(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """``resume_pending_s`` below the ``--limit`` resolution (whole seconds)."""
    monkeypatch.setattr(match_carry, "pending_s", lambda header: seconds)


def _keys(cap: Path) -> list[Path]:
    key = cap.with_suffix(".keylog")
    return [key] if key.exists() else []


SLOW = os.environ.get("PCAPFLOW_SLOW_TESTS") == "1"


def _files(n: int, quick: int | None = None) -> int:
    """``n`` files with ``PCAPFLOW_SLOW_TESTS=1``; by default ``quick``, else about half."""
    return n if SLOW else quick or max(3, (n + 1) // 2)


def _inside_the_slowest_order(one: Path, cap: Path) -> list[int]:
    """Two cuts between the slowest order and its ack: the packets just after the
    order left and just before the ack came, so the ack is two files after the order
    and at the second cut the order has waited most of its latency."""
    with open_set([str(cap)], hash=False) as reader:
        ts = np.concatenate([c.ts_ns for c in reader])
    ((sent, acked),) = pcapflow.open(one).fetchall(
        "SELECT epoch_ns(order_ts), epoch_ns(ack_ts) FROM latency "
        "ORDER BY latency_ns DESC LIMIT 1")
    inside = np.flatnonzero((ts >= sent) & (ts < acked))
    assert len(inside) >= 2, "no two packets between the slowest order and its ack"
    return [int(inside[0]) + 1, int(inside[-1]) + 1]


def _one_per_call(cap: Path, files: int, tmp_path: Path,
                  slowest: bool = False) -> tuple[Path, Path, list[Path]]:
    """One ingest of ``cap``, and ``cap`` cut evenly into ``files`` files ingested one
    per call (``slowest``: cut twice more inside its slowest order)."""
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=_keys(cap), data=one)[0]
    cuts = {r.packets * k // files for k in range(1, files)}
    if slowest:
        cuts.update(_inside_the_slowest_order(one, cap))
    parts = split(cap, sorted(cuts), tmp_path)
    for p in parts:
        pcapflow.ingest([p], keylog=_keys(cap), data=tmp_path / "data")
    return one, tmp_path / "data", parts


def _finals(root: Path) -> int:
    return sum(1 for t in MATCHED for f in parquet_files(root, t)
               if not os.path.basename(f).startswith("part-t"))


@pytest.mark.parametrize(("name", "files", "finals", "settle_ms"), [
    ("binance_wsapi_tls13.pcap", 9, True, 100),
    ("binance_rest_tls13.pcap", 17, False, 100),  # no engine stream: pending 300 s
    ("deribit_jsonrpc_tls13.pcap", 11, True, 100),
    # TCP timestamps echoed late on its market-data connection: the default margin
    ("binance_tick_tls13.pcap", 23, False, 2000),
    ("binance_rest_h2.pcap", 13, True, 100),
    # FIX order entry: its messages and the final orders' ClOrdIDs carried (fix_prev)
    ("fix44_plain.pcap", 9, False, 100),  # few pure ACKs: every order waits for RTT samples
    ("fix44_sll2.pcap", 7, False, 100)])
def test_many_cuts_match_incrementally_as_one_ingest(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch, name: str,
        files: int, finals: bool, settle_ms: int) -> None:
    _pending(monkeypatch, 300)
    monkeypatch.setattr(match_carry, "SETTLE_NS", settle_ms * 1_000_000)
    one, data, _ = _one_per_call(SAMPLES / name, _files(files), tmp_path)
    assert match_carry.WHOLE == []  # every later command matched its own rows
    assert_same_rows(one, data)
    if finals:  # groups settled: final parts kept by later commands
        assert _finals(data)


@pytest.mark.parametrize("name", ["binance_wsapi_tls13.pcap", "fix44_plain.pcap"])
def test_groups_waiting_only_for_rtt_samples_are_carried_as_rows(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A group answered before the cut whose connection has fewer than ``RTT_AFTER``
    samples after its order is final but for ``decompose.sql`` (``match_carry._Pending``):
    its messages are not carried, so no later command matches it again; its rows are,
    and each later command gives them their network estimate until the samples follow
    (the WebSocket sample's settle; the FIX sample's, with few pure ACKs, wait to the
    end). The tables are one ingest's."""
    _pending(monkeypatch, 300)
    seen: list[tuple[int, int]] = []
    given = match_carry._pending

    def spy(prev: Any, run: Any, cut: int, limit_ns: int) -> Any:
        p = given(prev, run, cut, limit_ns)
        waiting = prev.t[match_carry.PEND_GROUPS].column("cid").combine_chunks()
        assert not pc.any(pc.is_in(run.groups.column("cid"), value_set=waiting)).as_py()
        if p is not None:
            seen.append((p.final["latency"].num_rows, p.prov["latency"].num_rows))
        return p

    monkeypatch.setattr(match_carry, "_pending", spy)
    one, data, _ = _one_per_call(SAMPLES / name, 9, tmp_path)
    assert match_carry.WHOLE == []
    assert_same_rows(one, data)
    assert any(p for _, p in seen)  # carried on
    if name.startswith("binance"):
        assert any(f for f, _ in seen)  # and final once their samples came


def test_an_order_acked_files_later(tmp_path: Path, cut_now: None,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Orders still waiting at the end of a file are carried, and their replies found
    two and more files later (the REST sample's slow replies: Nagle's 40 ms; two cuts
    inside the slowest one)."""
    _pending(monkeypatch, 300)
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, data, parts = _one_per_call(cap, _files(24, quick=6), tmp_path, slowest=True)
    assert match_carry.WHOLE == []
    assert_same_rows(one, data)
    ds = pcapflow.open(data)
    bounds = [int(ds.fetchall(
        f"SELECT epoch_ns(last_ts) FROM captures WHERE file_index = {k}")[0][0])
              for k in range(len(parts))]
    late = ds.fetchall("SELECT epoch_ns(order_ts), epoch_ns(ack_ts) FROM latency")
    spans = [sum(1 for b in bounds if o <= b < a) for o, a in late]
    assert max(spans) >= 2  # an ack two files or more after its order


def test_an_order_pending_past_the_limit_then_answered_matches_whole(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """An order is final as unmatched ``resume_pending_s`` after it; its reply in a
    later file breaks that premise: that command matches the set whole, and the rows
    are one ingest's."""
    _pending(monkeypatch, 0.001)
    cap = SAMPLES / "binance_rest_tls13.pcap"
    one, data, _ = _one_per_call(cap, _files(24, quick=6), tmp_path, slowest=True)
    assert any("final order" in w for w in match_carry.WHOLE), match_carry.WHOLE
    assert_same_rows(one, data)


def test_an_order_pending_past_the_limit_without_reply_is_final_as_unmatched(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last file ends with orders never answered: with a short limit their rows
    are final (``part-d*``) in the file after, and equal one ingest's."""
    _pending(monkeypatch, 0.001)
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    one, data, _ = _one_per_call(cap, 5, tmp_path)
    assert_same_rows(one, data)
    assert _finals(data)


def test_pcapflow_match_between_commands_matches_the_set_whole(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from pcapflow.pipelines.match import rematch

    from pcapflow.venues import registry
    from pcapflow.why import rederive

    _pending(monkeypatch, 300)
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=_keys(cap), data=one)[0]
    parts = split(cap, [r.packets // 3, 2 * r.packets // 3], tmp_path)
    data = tmp_path / "data"
    for p in parts[:2]:
        pcapflow.ingest([p], keylog=_keys(cap), data=data)
    assert match_carry.WHOLE == []
    rematch(data, registry(None, data), rederive(data))
    pcapflow.ingest([parts[2]], keylog=_keys(cap), data=data)
    assert match_carry.WHOLE == ["no matcher state kept by the previous command"]
    assert_same_rows(one, data)


def _synthetic_rotation(tmp_path: Path, files: int, seconds: float, pps: int) -> list[Path]:
    """A trading host's rotation (``benchmarks/make_capture.py``: FIX order entry, market
    data, short REST sessions to the same servers), one file per ``seconds``."""
    import sys

    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        from make_capture import Config, plan, write
    finally:
        sys.path.remove(str(bench))
    d = tmp_path / "rot"
    d.mkdir()
    start, end, out = 1_717_421_400_000_000_000, 0, []
    for k in range(files):
        p = plan(Config(packets=int(pps * seconds), seed=k, rate_pps=float(pps),
                        start_ns=max(start + int(k * seconds * 1e9), end + 1000)))
        end = int(p.cols["t"].max())
        out.append(d / f"rot-{k:06d}.pcap")
        write(p, str(out[-1]), "pcap", 262_144)
    return out


def test_a_synthetic_rotation_matches_its_own_files_and_names_only_its_flows(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file per command of a rotation whose orders are FIX and whose short REST
    sessions come and go: every command matches its own rows (none whole), names the
    venues of only the flows active since the previous cut (the others keep theirs),
    orders settle once they waited ``resume_pending_s`` (no reply: the generator's
    replies are not FIX), and every table equals one ingest of all the files."""
    _pending(monkeypatch, 1.5)
    files = _synthetic_rotation(tmp_path, 8, 1.0, 3000)
    one = tmp_path / "one"
    pcapflow.ingest([[str(f) for f in files]], data=one)
    named, flows = [], 0
    for f in files:
        pcapflow.ingest([[str(f)]], data=tmp_path / "data")
        named.append(match_carry.STATS.get("flows_named"))
    assert match_carry.WHOLE == []
    assert_same_rows(one, tmp_path / "data")
    ds = pcapflow.open(tmp_path / "data")
    flows = int(ds.fetchall("SELECT count(*) FROM flows")[0][0])
    assert 0 < named[-1] < flows  # later commands name their own flows, not the set's
    assert _finals(tmp_path / "data")  # orders final past the limit (as unmatched)


def test_order_ids_past_the_limit_are_forgotten_with_an_anomaly(
        tmp_path: Path, cut_now: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``resume_order_ids`` bounds the ids of the set's final orders the matcher state
    keeps (``match_carry.IdBound``): past it the oldest are forgotten, every later row
    that may name one of them (here cancels and amends naming one id of their order)
    gets an ``order_ids_forgotten`` anomaly naming the limit, counted in ``captures``,
    and every other row of the matcher's tables is one ingest's (below the limit all
    are: the tests above, at the default)."""
    import duckdb

    _pending(monkeypatch, 300)
    cap = SAMPLES / "binance_wsapi_tls13.pcap"
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=_keys(cap), data=one)[0]
    data = tmp_path / "data"
    for p in split(cap, [r.packets // 3, 2 * r.packets // 3], tmp_path):
        pcapflow.ingest([p], keylog=_keys(cap), data=data, limits={"resume_order_ids": 2})
    assert match_carry.WHOLE == []
    assert match_carry.STATS["ids_rows"] <= 2 and match_carry.STATS["forgot"]["orders"] > 0
    ds = pcapflow.open(data)
    flagged = ds.fetchall(f"SELECT epoch_ns(ts), flow_id, detail FROM anomalies "
                          f"WHERE code = '{match_carry.FORGOTTEN}'")
    assert flagged and all("resume_order_ids=2" in d and "--limit resume_order_ids" in d
                           for _, _, d in flagged)
    assert ds.fetchall("SELECT DISTINCT anomalies FROM captures") == [
        (ds.fetchall("SELECT count(*) FROM anomalies")[0][0],)]
    # the rows that differ from one ingest's are flagged ones
    con = duckdb.connect()
    q = ("SELECT epoch_ns(ts) AS t, flow_id, * EXCLUDE (capture_id, ts) FROM "
         "read_parquet({!r}, hive_partitioning = true)")
    fa, fb = parquet_files(one, "orders"), parquet_files(data, "orders")
    diff = con.execute(f"SELECT t, flow_id FROM ({q.format(fb)} EXCEPT ALL {q.format(fa)})"
                       ).fetchall()
    assert set(diff) <= {(t, f) for t, f, _ in flagged}
    assert_same_rows(one, data, leave_out=("orders", "acks", "latency", "anomalies"))


def test_the_cut_follows_what_a_later_file_can_add() -> None:
    """``_cut``: ``SETTLE_MIN_NS`` before the last packet when no outbound segment is
    timed, the oldest timed one's send time within ``SETTLE_NS``, ``SETTLE_NS`` when it
    is older or not known (a state that did not keep it). ``_legs_cut``: the answered
    groups a later leg may still reach (an order of a venue with an engine stream
    without its engine leg, a cancel or amend) keep the cut at their last row; the
    others (a new order without such a venue, rejected, unanswered) do not hold it."""
    from pcapflow.pipelines import prefilter
    from pcapflow.pipelines.ingest.resume import StagedParts
    from pcapflow.pipelines.match import MatchOutput

    inf, last = match_carry.INF, 10**15
    cut = match_carry._cut
    assert cut(StagedParts(), last) == last - match_carry.SETTLE_NS  # (not known)
    assert cut(StagedParts(), last, inf) == last - match_carry.SETTLE_MIN_NS
    assert cut(StagedParts(), last, last - 700_000_000) == last - 700_000_000
    assert cut(StagedParts(), last, last - 10**10) == last - match_carry.SETTLE_NS
    assert match_carry.timed_since({}) == -inf
    assert match_carry.timed_since({"timed_since": None}) == inf
    assert match_carry.timed_since({"timed_since": 5}) == 5

    engine = prefilter.rules_and_needles()[0]["engine_streams"].column("dialect")[0].as_py()
    groups = pa.table({
        "kind": ["new", "new", "cancel", "new", "new", "new"],
        "venue": ["a", "b", "a", "b", "b", None],
        "decoded": [True, True, True, True, True, True],
        "has_ack": [True, True, True, True, False, True],
        "has_engine": [False, False, False, False, False, True],
        "status": ["accepted", "accepted", "accepted", "rejected", None, "accepted"],
        "orphan": [False, False, False, False, False, False],
        "last_ts": pa.array([100, 200, 300, 50, 40, 10], pa.int64())})

    def legs(rules: list[tuple[int, str | None, str | None]], rows: list[int]) -> int:
        run = match_carry._Run(MatchOutput({}, {}), pa.table({
            "flow_id": pa.array([r[0] for r in rules], pa.int64()),
            "venue": pa.array([r[1] for r in rules], pa.string()),
            "venue_source": pa.array([None] * len(rules), pa.string()),
            "dialect": pa.array([r[2] for r in rules], pa.string())}))
        run.groups = groups.take(rows)
        return match_carry._legs_cut(run)

    assert legs([(1, "a", None)], [0, 1, 3, 4, 5]) == inf  # no engine stream
    assert legs([(1, "a", None)], [0, 1, 2]) == 300  # a cancel answered
    assert legs([(1, "b", engine)], [0, 1, 3, 4, 5]) == 200  # b's engine stream
    assert legs([(1, "a", engine)], [0, 1, 3, 4, 5]) == 100
    assert legs([(1, None, engine)], [0, 1, 5]) == inf  # (5 has its engine leg)
    assert legs([(1, None, engine)], [3, 4]) == inf  # rejected, unanswered


def test_the_carried_fix_messages_keep_what_the_sql_reads() -> None:
    """``_fix_fields_read`` keeps of a carried FIX message the fields ``fix.sql`` reads:
    the tags its ``fix_tag`` calls name (``FIX_TAGS_READ``), of replies only, first
    occurrence first; and no ``text``, which no SQL reads."""
    import re

    from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

    sql = "".join(p.read_text() for p in sorted(
        (Path(match_carry.__file__).parent / "sql").glob("*.sql")))
    tags = {int(t) for t in re.findall(r"fix_tag\([^,()]+,\s*(\d+)\)", sql)}
    assert tags == set(match_carry.FIX_TAGS_READ)
    fix = (Path(match_carry.__file__).parent / "sql" / "fix.sql").read_text()
    assert not re.search(r"\btext\b", re.sub(r"--[^\n]*", "", fix))  # (its one reader)
    schema = without_capture_id(TABLES["fix_messages"])
    rows = schema.empty_table().to_pylist()
    rows = [{**{n: None for n in schema.names}, "direction": d, "text": "x",
             "fields": f} for d, f in [
        ("in", [{"tag": 35, "value": "3"}, {"tag": 45, "value": "7"},
                {"tag": 58, "value": "no"}, {"tag": 45, "value": "8"},
                {"tag": 373, "value": "1"}]),
        ("out", [{"tag": 11, "value": "a"}, {"tag": 45, "value": "9"}]),
        ("in", None), ("in", []), (None, [{"tag": 45, "value": "1"}])]]
    got = match_carry._fix_fields_read(pa.Table.from_pylist(rows, schema))
    assert got.schema == schema
    assert got.column("fields").to_pylist() == [
        [{"tag": 45, "value": "7"}, {"tag": 45, "value": "8"}, {"tag": 373, "value": "1"}],
        None, None, [], None]
    assert got.column("text").null_count == 5
    assert got.drop_columns(["fields", "text"]) == pa.Table.from_pylist(
        rows, schema).drop_columns(["fields", "text"])


def test_check_inputs_finds_what_reading_every_sample_finds(tmp_path: Path) -> None:
    """``match_carry._check_inputs``' RTT premises (a sample before the previous cut; a
    sample on a connection and method whose final order lacked them, ``rtt_incomplete``),
    read as dictionaries and of ``rtt_incomplete``'s connections only when the
    statistics show none before the cut, say what reading every sample of the file
    says: over 150 random files (flags, methods and directions null or not, times on
    either side of the cut, none of some methods)."""
    from types import SimpleNamespace

    from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

    schema = without_capture_id(TABLES["tcp_rtt"])
    cols = ["flow_id", "direction", "piggybacked", "retransmitted", "ts_sent", "method"]

    def want(prev: Any, files: list[Path]) -> str | None:  # (every sample, as before)
        before, inc = int(prev.meta["cut"]), prev.t["rtt_incomplete"]
        rtt = match_carry._clean_rtt(match_carry._read(files, "tcp_rtt", cols))
        if match_carry.min_ns(rtt, "ts_sent") < before:
            return "RTT samples before the previous cut"
        if rtt.num_rows and inc.num_rows:
            key = {(f, m or "ack") for f, m in zip(rtt.column("flow_id").to_pylist(),
                                                   rtt.column("method").to_pylist(),
                                                   strict=True)}
            had = set(zip(inc.column("flow_id").to_pylist(),
                          inc.column("method").to_pylist(), strict=True))
            if key & had:
                return "an RTT sample after a final order that lacked them"
        return None

    rng = np.random.default_rng(21)
    said = set()
    for i in range(150):
        n = int(rng.integers(0, 40))
        pick = lambda vals, k=n: [vals[int(j)] for j in rng.integers(0, len(vals), k)]  # noqa: E731
        before = 1_000_000
        rows = pa.table({
            "flow_id": pa.array(rng.integers(0, 8, n), pa.int64()),
            "direction": pa.array(pick(["out", "out", "in", None]), pa.string()),
            "piggybacked": pa.array(pick([False, False, True, None]), pa.bool_()),
            "retransmitted": pa.array(pick([False, False, True, None]), pa.bool_()),
            "ts_sent": pa.array(before + rng.integers(-5 if i % 3 == 0 else 0, 100, n),
                                pa.int64()).cast(schema.field("ts_sent").type),
            "method": pa.array(pick(["ack", "tsecr", None]), pa.string())})
        f = tmp_path / f"r{i}.parquet"
        pq.write_table(rows, f)
        m = int(rng.integers(0, 6))
        inc = pa.table({"flow_id": pa.array(rng.integers(0, 8, m), pa.int64()),
                        "method": pa.array(pick(["ack", "tsecr"], m), pa.string())})
        prev = SimpleNamespace(meta={"cut": before}, t={"rtt_incomplete": inc})
        files = [f] if n or i % 2 else []
        parts = SimpleNamespace(fresh=lambda t, fs=files: fs if t == "tcp_rtt" else [])
        got = match_carry._check_inputs(prev, parts)  # type: ignore[arg-type]
        assert got == want(prev, files), i
        said.add(got)
    assert len(said) == 3  # (each answer given)
