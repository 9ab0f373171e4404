"""A rotation's later command gives the derived tables the matcher's rows of a
window of time, not the set's (``pipelines.match_carry.Window``): it reads none of
the set's earlier matcher parts and no process keeps them, so its work and memory
do not grow with the set; the rows left out are counted for ``why_carry.check``.
The tables equal one ingest's, with the window short enough that rows are left out,
and when the derive would read an older row it reads them from the set's parts."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers.capture_split import split
from helpers.dataset_compare import assert_same_rows
from pcapflow.pipelines import match_carry, store
from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

import pcapflow
from pcapflow import alerts, why, why_carry

SAMPLES = Path(__file__).resolve().parents[2] / "sample_pcaps"
SHORT = alerts.Settings(p99_us=5_000.0, min_orders=3, bucket_s=1, episode_gap_s=0.05,
                        stale_after_s=0.1, burst_baseline_s=0.05, cusum_reference=8,
                        cusum_h=3.0, storm_per_s=2)
MATCHER = ("orders", "acks", "latency", "unmatched")


@pytest.fixture
def short(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of a second or two (the sample lasts 7 s): rows are left out."""
    monkeypatch.setattr(why, "SETTINGS", SHORT)
    monkeypatch.setattr(why_carry, "SETTLE_NS", 0)
    monkeypatch.setattr(why_carry, "MARGIN_NS", 1_000_000)
    monkeypatch.setattr(why_carry, "PENDING_NS", 1_000_000_000)
    monkeypatch.setattr(match_carry, "WINDOW_MARGIN_NS", 0)
    why_carry.WHOLE.clear()
    match_carry.WHOLE.clear()


def _files(tmp_path: Path, name: str, n: int) -> tuple[Path, list[Path], list[Path]]:
    cap = SAMPLES / name
    keys = [cap.with_suffix(".keylog")]
    one = tmp_path / "one"
    r = pcapflow.ingest([cap], keylog=keys, data=one)[0]
    return one, split(cap, [r.packets * k // n for k in range(1, n)], tmp_path), keys


def _state(root: Path) -> Path:
    [cid] = [p.name.removeprefix("capture_id=") for p in (root / "captures").iterdir()]
    return store.partition_dir(root, store.STATE, cid) / match_carry.DIR


def test_later_commands_read_no_earlier_matcher_part(tmp_path: Path, short: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    one, parts, keys = _files(tmp_path, "binance_tick_tls13.pcap", 7)
    data = tmp_path / "data"
    read: list[Path] = []
    real_file, real_table = pq.ParquetFile, pq.read_table

    def spy_file(source: object, *a: object, **k: object) -> object:
        read.append(Path(str(source)))
        return real_file(source, *a, **k)

    def spy_table(source: object, *a: object, **k: object) -> object:
        read.append(Path(str(source)))
        return real_table(source, *a, **k)

    monkeypatch.setattr(pq, "ParquetFile", spy_file)
    monkeypatch.setattr(pq, "read_table", spy_table)
    omitted = []
    inodes: dict[str, int] = {}  # the window's part files: name -> inode
    for p in parts:
        before = {t: sorted((data / t).rglob("*.parquet")) if (data / t).is_dir() else []
                  for t in MATCHER}
        read.clear()
        pcapflow.ingest([p], keylog=keys, data=data)
        now = {f.name: f.stat().st_ino for f in _state(data).glob("wpart-*")}
        # a command writes its own part only: the earlier parts it keeps stay as they were
        assert all(inodes[n] == i for n, i in now.items() if n in inodes)
        assert len(set(now) - set(inodes)) <= 1  # (a part: one file of its tables)
        inodes = now
        earlier = {f.resolve() for fs in before.values() for f in fs}
        assert not earlier & {f.resolve() for f in read if f.exists()}, \
            "a command read the set's earlier matcher parts"
        omitted.append(json.loads((_state(data) / "window.json").read_text())["omitted"])
    assert match_carry.WHOLE == [] and why_carry.WHOLE == []
    # rows were left out of the window (counted, not kept), and it holds fewer rows
    # than the set: the state does not grow with it
    assert sum(omitted[-1].values()) > 0
    win = match_carry.Window.load(_state(data))
    assert win is not None
    kept = sum(win.rows[t].num_rows for t in MATCHER)
    final = sum(pq.ParquetFile(f).metadata.num_rows for t in MATCHER
                for f in (data / t).rglob("*.parquet") if not f.name.startswith("part-t"))
    assert kept + sum(omitted[-1].values()) == final and kept < final
    assert len(inodes) < len(parts)  # (parts out of the window are gone)
    assert not hasattr(match_carry, "_OLD_ROWS")  # (no per-process copy of the set's rows)
    assert_same_rows(one, data)


def test_a_derive_reading_older_rows_reads_them_from_the_parts(
        tmp_path: Path, short: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window that begins after what the derive reads (here: one made too short)
    fails ``why_carry.check``; the command derives the set whole, reading the rows
    left out from the set's parts, and the tables are still one ingest's."""
    monkeypatch.setattr(match_carry, "_window_start", lambda g, cut, last, pend=None: cut + 10**10)
    one, parts, keys = _files(tmp_path, "binance_tick_tls13.pcap", 7)
    data = tmp_path / "data"
    for p in parts:
        pcapflow.ingest([p], keylog=keys, data=data)
    assert "matcher rows the derive reads are older than the carried window" in why_carry.WHOLE
    assert_same_rows(one, data)


def _rows(t: str, ts: list[int | None], flow: int) -> pa.Table:
    """``t``'s rows with these times (``window_key``'s columns), the rest null."""
    schema = without_capture_id(TABLES[t])
    cols = {"flow_id": [flow] * len(ts), "leg": ["ack"] * len(ts),
            "latency_ns": [5] * len(ts), "what": ["order"] * len(ts)}
    for c in ("ts", "order_ts", "ack_ts"):
        cols[c] = ts
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * len(ts)), f.type)
                     for f in schema})


@pytest.mark.parametrize("max_parts", [16, 1])
def test_window_parts_are_the_whole_window(tmp_path: Path, max_parts: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``Window`` kept as a part per command (no ingest: its rows made up): after every
    command the window read back holds, in order, the final rows of all commands from
    ``since`` on, and counts the others, as one table of them all would; a command
    writes its own part only, a part goes once all its rows are out, and is written
    again (smaller) once most are; past ``WINDOW_MAX_PARTS`` parts they are written
    again as one (a window held open gained a part per command)."""
    monkeypatch.setattr(match_carry, "WINDOW_MAX_PARTS", max_parts)
    rng = np.random.default_rng(7)
    win, state = match_carry.Window.empty(), tmp_path / "s0"
    every: list[dict[str, pa.Table]] = []
    since, written = -10**18, set()
    state.mkdir()
    for k in range(12):
        final = {t: _rows(t, [None if rng.random() < 0.02 else int(x)
                              for x in np.sort(rng.integers(k * 100, k * 100 + 150, 40))], k)
                 for t in MATCHER}
        every.append(final)
        since = max(since, k * 100 - int(rng.integers(0, 300)))
        nxt = tmp_path / f"s{k + 1}"
        nxt.mkdir()
        kept = win.advance(final, since).save(nxt)
        for n in kept:  # (the commit leaves the kept files in the set's state)
            assert (state / n).is_file()
            (nxt / n).hardlink_to(state / n)
        written |= {f.name for f in nxt.iterdir() if f.name.startswith("wpart-")} - set(kept)
        state = nxt
        loaded = match_carry.Window.load(state)
        assert loaded is not None
        for t in MATCHER:
            whole = pa.concat_tables([f[t] for f in every])
            keep = match_carry.window_key(t, whole) >= since
            assert loaded.rows[t].equals(whole.filter(pa.array(keep)))
            assert loaded.omitted[t] == int((~keep).sum())
        assert len(loaded.parts) <= max_parts
        win = loaded
    names = {f.name for f in state.iterdir() if f.name.startswith("wpart-")}
    assert len(names) < 12  # (parts out of the window are gone; a part is one file)
    if max_parts == 1:  # (each command wrote the window again as one part)
        assert len(written) == 12
    else:
        assert len(written) > 12  # (and some were written again, smaller)


def test_id_parts_are_the_one_table(tmp_path: Path) -> None:
    """``IdParts`` (the matcher state's ``ids`` and ``fix_prev``, a part per command; no
    ingest: rows made up): after every command the parts read back are, in order, the one
    table the state kept before (the earlier rows less those made again, then the
    command's; ``IdBound.keep`` over them, its row cap too), the rows forgotten are the
    same, a command writes its own part and the merges only, and the parts stay few.
    Each part's zone (``IdParts.zones``) bounds its ids, and ``_named`` looking names up
    by the zones finds the rows it finds without them (ids growing with time, now and
    then an old one or none)."""
    rng = np.random.default_rng(11)
    ids, one, state = match_carry.IdParts("ids", [], []), None, tmp_path / "s0"
    state.mkdir()
    written = 0
    for k in range(40):
        n = int(rng.integers(0, 60))
        m = int(rng.integers(0, 5))  # (orders made again: the last of the earlier ones)
        again = [] if one is None else one.column("cid").to_pylist()[one.num_rows - m:]
        cids = [*again, *(f"c{k}-{i}" for i in range(n))]
        ts = [None if rng.random() < 0.03 else k * 100 + int(x)
              for x in rng.integers(-150, 100, len(cids))]
        def made_up(p: str, k: int = k, m: int = len(cids)) -> pa.Array:
            # (ids growing with the commands; now and then an older one, or none)
            return pa.array([None if rng.random() < 0.1 else
                             f"{p}{k - int(rng.integers(0, 30)) if rng.random() < 0.05 else k:03d}"
                             f"-{int(rng.integers(0, 99)):02d}" for _ in range(m)], pa.string())

        rows = pa.table({"cid": pa.array(cids, pa.string()),
                         "order_ts": pa.array(ts, pa.int64()),
                         "client_order_id": made_up("o"), "orig_client_order_id": made_up("o"),
                         "exchange_order_id": made_up("x"),
                         "target_order_id": pa.nulls(len(cids), pa.string())})
        since = k * 100 - 2_000 + int(rng.integers(-50, 50))
        bound = match_carry.IdBound(2_000, 1_000 if k % 10 else 500)  # (the cap: now and then)
        drop = pa.array(again, pa.string())
        ids, gone = ids.add(rows, drop, bound, since, "order_ts")
        # (the one table: as ``_bound_ids`` kept it before parts)
        if one is not None:
            one = one.filter(pc.invert(pc.is_in(one.column("cid"), value_set=drop)))
        one = rows if one is None else pa.concat_tables([one, rows])
        keep = bound.keep(match_carry.ns_or_inf(one.column("order_ts")), since)
        assert gone.equals(one.filter(pa.array(~keep)))
        one = one.filter(pa.array(keep))
        nxt = tmp_path / f"s{k + 1}"
        nxt.mkdir()
        desc, kept = ids.save(nxt)
        for name in kept:  # (the commit leaves the kept files in the set's state)
            (nxt / name).hardlink_to(state / name)
        written += len(desc["parts"]) - len(kept)
        state = nxt
        ids = match_carry.IdParts.load(state, "ids", desc)
        assert ids.rows.equals(one), k
        assert len(ids.parts) <= 12
        assert len(ids.zones) == len(ids.parts) and all(z is not None for z in ids.zones)
        for p, z in zip(ids.parts, ids.zones, strict=True):
            for c in match_carry.ZONE_COLUMNS:
                v = [x for x in p.column(c).to_pylist() if x is not None]
                assert z[c] is None if not v else z[c][0] <= min(v) and max(v) <= z[c][1]
        names = pa.table({c: pa.array([f"{p}{int(x):03d}-{int(y):02d}" for x, y in zip(
            rng.integers(max(k - 3, 0), k + 2, 20), rng.integers(0, 99, 20), strict=True)])
            for c, p in (("client_order_id", "o"), ("exchange_order_id", "x"))})
        ev = pa.table({"subject": names.column(0).slice(0, 3),
                       "order_id": names.column(1).slice(0, 3)})
        for e in (None, ev):
            want = match_carry._named(ids.rows, names, e)
            assert match_carry._named(ids.rows, names, e, ids).equals(want), k
    assert written < 40 * 3  # (parts are written again only as they merge or lose rows)


def test_not_in_is_sqls_not_in_per_part() -> None:
    """``match_carry._not_in`` (a part filtered only when it holds a row to drop) keeps
    what SQL's ``NOT IN`` keeps, nulls on either side, over tables of several parts."""
    import duckdb

    rng = np.random.default_rng(5)
    con = duckdb.connect()
    for _ in range(300):
        parts = []
        for _ in range(int(rng.integers(0, 5))):
            n = int(rng.integers(0, 30))
            v = [None if rng.random() < 0.1 else f"c{int(x)}" for x in rng.integers(0, 60, n)]
            parts.append(pa.table({"cid": pa.array(v, pa.string()),
                                   "i": pa.array(np.arange(n), pa.int64())}))
        rows = pa.concat_tables(parts) if parts else pa.table(
            {"cid": pa.array([], pa.string()), "i": pa.array([], pa.int64())})
        m = int(rng.integers(0, 12))
        values = pa.array([None if rng.random() < 0.03 else f"c{int(x)}"
                           for x in rng.integers(0, 60, m)], pa.string())
        con.register("r", rows)
        con.register("v", pa.table({"cid": values}))
        want = con.sql("SELECT * FROM r WHERE cid NOT IN (SELECT cid FROM v) ORDER BY ALL"
                       ).to_arrow_table()
        got = match_carry._not_in(rows, "cid", values)
        assert got.schema == rows.schema
        assert got.sort_by([("cid", "ascending"), ("i", "ascending")]).equals(want) or (
            got.num_rows == want.num_rows == 0)


def test_named_holds_every_id_row_the_checks_can_meet() -> None:
    """``match_carry._named`` (the remembered ids ``_check_ids``'s joins can meet, each
    id column against the names of its kind only) keeps every row of ``ids`` that one
    of those joins, on its id alone, meets: over 200 random tables with nulls and ids
    shared between the columns."""
    rng = np.random.default_rng(15)
    words = [f"x{i}" for i in range(40)]

    def col(n: int) -> pa.Array:
        return pa.array([None if rng.random() < 0.3 else words[int(rng.integers(40))]
                         for _ in range(n)], pa.string())

    for _ in range(200):
        m = int(rng.integers(0, 30))
        ids = pa.table({"cid": pa.array([f"c{i}" for i in range(m)]),
                        **{c: col(m) for c in ("client_order_id", "orig_client_order_id",
                                               "target_order_id", "exchange_order_id")}})
        k = int(rng.integers(0, 6))
        n = pa.table({"client_order_id": col(k), "exchange_order_id": col(k)})
        j = int(rng.integers(0, 4))
        engine = pa.table({"subject": col(j), "order_id": col(j)}) if j else None
        con = duckdb.connect()
        con.register("ids", ids)
        con.register("n", n)
        con.register("ev", engine if engine is not None else pa.table(
            {"subject": pa.array([], pa.string()), "order_id": pa.array([], pa.string())}))
        want = {r[0] for r in con.execute("""
            SELECT o.cid FROM ids o WHERE
              o.client_order_id IN (SELECT client_order_id FROM n)
              OR o.exchange_order_id IN (SELECT exchange_order_id FROM n)
              OR o.target_order_id IN (SELECT exchange_order_id FROM n)
              OR o.orig_client_order_id IN (SELECT client_order_id FROM n)
              OR o.client_order_id IN (SELECT subject FROM ev)
              OR o.orig_client_order_id IN (SELECT subject FROM ev)
              OR coalesce(o.target_order_id, o.exchange_order_id)
                 IN (SELECT order_id FROM ev)""").fetchall()}
        got = set(match_carry._named(ids, n, engine).column("cid").to_pylist())
        assert want <= got
        # and no row none of its ids is named by
        names = set(n.column("client_order_id").to_pylist()) | set(
            n.column("exchange_order_id").to_pylist())
        if engine is not None:
            names |= set(engine.column("subject").to_pylist()) | set(
                engine.column("order_id").to_pylist())
        names.discard(None)
        for r in match_carry._named(ids, n, engine).to_pylist():
            assert names & {r[c] for c in ("client_order_id", "orig_client_order_id",
                                           "target_order_id", "exchange_order_id")}


def test_learned_prev_is_read_only_for_a_cancel_or_amend() -> None:
    """``combine.sql``'s ``accepted_ids``: the set's remembered ids (``learned_prev``, a
    view over ``_ids_prev``: ~200k rows at 8 files of ``make_capture.py --answered``) are
    hardly read by a command with no cancel or amend (both lists they are looked up by
    are empty: the scan ends early); with one, every batch is read and the rows it names
    are there, as before."""
    from pcapflow.pipelines import match

    [stmt] = [s for s in match._parsed(match.sql_text("combine"))
              if match.statement_text(s).startswith(
                  "CREATE OR REPLACE TEMP TABLE accepted_ids AS")]
    n = 3000
    prev = pa.table({"venue": ["v"] * n, "kind": ["new"] * n, "status": ["accepted"] * n,
                     "client_order_id": [f"c{i}" for i in range(n)],
                     "exchange_order_id": [str(i) for i in range(n)]})
    batches = prev.to_batches(max_chunksize=10)
    for kinds, target, want in ((["new", "new"], [None, None], {("n", "9")}),
                                (["new", "cancel"], [None, "2"], {("n", "9"), ("c2", "2")}),
                                (["new", "amend"], [None, None], {("n", "9")})):
        read: list[int] = []

        def reader(read: list[int] = read) -> object:
            for b in batches:
                read.append(1)
                yield b

        con = match._connect(1)
        con.register("_ids_prev", pa.RecordBatchReader.from_batches(prev.schema, reader()))
        con.execute(f"CREATE OR REPLACE TEMP VIEW learned_prev AS {match_carry.LEARNED_PREV}")
        con.register("all_orders", pa.table({
            "order_key": ["k1", "k2"], "venue": ["v", "v"], "kind": kinds,
            "client_order_id": ["n", None], "orig_client_order_id": [None, None],
            "target_order_id": pa.array(target, pa.string())}))
        con.register("all_acks", pa.table({"order_key": ["k1"], "status": ["accepted"],
                                           "exchange_order_id": ["9"]}))
        con.execute(stmt)
        assert {(r[1], r[2]) for r in con.execute("FROM accepted_ids").fetchall()} == want
        if kinds[1] == "new":
            assert len(read) < len(batches) // 2, len(read)
        else:
            assert len(read) == len(batches)
        con.close()
