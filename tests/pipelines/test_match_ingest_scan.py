"""The matcher's scan at ingest time (``pipelines.match.stage_ws_candidates``).

During an ingest the first pass of the WebSocket prefilter runs compiled over
the payloads as ``rows.RowBuffers`` flushes them, and the matcher reads its side
files instead of scanning ``ws_messages`` in DuckDB. Every output must be the
one of the scan in DuckDB (a rematch) and of the unfiltered run
(``prefilter=False``): on generated captures, on the sample captures, and
after a rematch of the committed dataset.
"""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.match_util import Wire, schema_of
from helpers.paths import SAMPLES
from pcapflow.pipelines import match, prefilter

import pcapflow
from pcapflow.venues import VenueRegistry


def _sorted_rows(t: pa.Table) -> list[tuple[tuple[str, str], ...]]:
    return sorted(tuple((k, repr(v)) for k, v in r.items()) for r in t.to_pylist())


def _same(a: match.MatchOutput, b: match.MatchOutput) -> None:
    assert a.flow_venue == b.flow_venue
    assert a.tables.keys() == b.tables.keys()
    for name, table in b.tables.items():
        assert a.tables[name].schema == table.schema, name
        assert _sorted_rows(a.tables[name]) == _sorted_rows(table), name


# --- The compiled test -------------------------------------------------------------


def test_compiled_heads_are_the_needles_heads() -> None:
    """``_SCAN_HEADS`` (compiled into the kernel) are exactly the heads of the
    shipped rules' needle parts: none missing (the scan would be off), none
    stale."""
    parts = prefilter.scan_parts()
    assert parts is not None
    heads = {p.encode()[:3].decode("latin-1") for ps in parts.values() for p in ps}
    assert heads == set(prefilter._SCAN_HEADS)


def _reference(rows: pa.Table) -> list[bool]:
    parts = prefilter.scan_parts()
    assert parts is not None
    return [op == "text" and p is not None and ("\\" in p or any(n in p for n in parts[d]))
            for op, d, p in zip(rows.column("opcode").to_pylist(),
                                rows.column("direction").to_pylist(),
                                rows.column("payload").to_pylist(), strict=True)]


def _payload(rnd: random.Random) -> str | None:
    parts = prefilter.scan_parts()
    assert parts is not None
    words = [*parts["in"], *parts["out"], "\\", "id", 'Id"', 'i"', 'd"', "ORDE", "orde", "use",
             "é", "日本", '"', "{", "}", ":", ",", "ex", "/spot", "req", "ty", "op"]
    if rnd.random() < 0.05:
        return None
    out = []
    for _ in range(rnd.randrange(0, 12)):
        out.append("x" * rnd.choice([0, 1, 2, 5, 30, 61, 62, 63, 64, 65, 127]))
        if rnd.random() < 0.4:
            out.append(rnd.choice(words))
    return "".join(out)


@pytest.mark.parametrize("seed", range(6))
def test_scan_mask_is_the_substring_test(seed: int) -> None:
    """Parts at every offset of the 64-byte blocks, at a text's very end, cut by
    its end, near misses; null and empty texts, binary messages, several chunks
    and sliced arrays."""
    rnd = random.Random(seed)
    n = 3000
    rows = pa.table({
        "opcode": [rnd.choice(["text", "text", "text", "binary"]) for _ in range(n)],
        "direction": [rnd.choice(["in", "out"]) for _ in range(n)],
        "payload": pa.array([_payload(rnd) for _ in range(n)], pa.string()),
    })
    assert prefilter.scan_mask(rows).tolist() == _reference(rows)
    chunked = pa.Table.from_batches(rows.slice(7).to_batches(max_chunksize=777))
    assert prefilter.scan_mask(chunked).tolist() == _reference(chunked)
    large = rows.set_column(2, "payload", rows.column("payload").cast(pa.large_string()))
    assert prefilter.scan_mask(large).tolist() == _reference(rows)


# --- Generated captures --------------------------------------------------------------


def _stage_as_ingest(w: Wire, stage: Path, batches: int) -> dict[str, list[Path]]:
    """Write ``w``'s tables and, as an ingest does batch by batch, the side files."""
    w.write(stage)
    files = {t: sorted((stage / t).glob("*.parquet")) for t in match.INPUT_TABLES}
    if files["ws_messages"]:
        ws = pq.read_table(files["ws_messages"][0], schema=schema_of("ws_messages"))
        size = -(-ws.num_rows // batches)
        for start in range(0, ws.num_rows, size):
            prefilter.stage_ws_candidates(stage, ws.slice(start, size))
    return files


def _three_ways(w: Wire, stage: Path, batches: int = 3) -> match.MatchOutput:
    """Match ``w`` from the ingest-time scan, the scan in DuckDB and unfiltered;
    the same rows every way."""
    files = _stage_as_ingest(w, stage, batches)
    flows, registry = w.flows_table(), VenueRegistry()
    assert match.staged_candidates(stage, files["ws_messages"]) is not None
    staged = match.match_staged(stage, flows, registry)
    scanned = match.match_tables(files, flows, registry)
    unfiltered = match.match_tables(files, flows, registry, prefilter=False)
    _same(staged, unfiltered)
    _same(scanned, unfiltered)
    return staged


def _generated(seed: int) -> Wire:
    """Order traffic of several venues among market data, in random order:
    reused and unanswered ids, orphan and error replies, engine events on other
    connections, keys and values spelt with escapes."""
    rnd = random.Random(seed)
    w = Wire()
    api = w.flow(sni="ws-api.binance.com", app_protocol="tls/websocket")
    stream = w.flow(sni="stream.binance.com", app_protocol="tls/websocket")
    okx = w.flow(sni="ws.okx.com", app_protocol="tls/websocket")
    bybit = w.flow(sni="stream.bybit.com", app_protocol="tls/websocket")
    deribit = w.flow(sni="www.deribit.com", app_protocol="tls/websocket")
    t = 0.0
    for i in range(60):
        t += rnd.random() * 10
        rid = rnd.choice([i, i, f"r{i}", f"r{i % 7}"])  # some ids reused
        coid = f"c-{i}"
        kind = rnd.randrange(4)
        if kind == 0:
            w.ws(api, t, "out", {"id": rid, "method": "order.place",
                                 "params": {"symbol": "BTCUSDT", "newClientOrderId": coid}})
            reply = rnd.random()
            if reply < 0.6:
                w.ws(api, t + 1, "in", {"id": rid, "status": 200, "result": {"orderId": i}})
            elif reply < 0.8:
                w.ws(api, t + 1, "in", {"id": rid, "status": 400, "error": {"code": -2010}})
            elif reply < 0.9:  # spelt with escapes
                w.ws(api, t + 1, "in", json.dumps({"id": rid, "status": 200}).replace(
                    '"id"', '"\\u0069d"'))
            if rnd.random() < 0.7:
                w.ws(stream, t + 2, "in", {"e": "executionReport", "c": coid, "C": "",
                                           "x": "NEW", "i": i})
        elif kind == 1:
            w.ws(okx, t, "out", {"id": str(rid), "op": "order", "args": [{"clOrdId": coid}]})
            if rnd.random() < 0.8:
                w.ws(okx, t + 1, "in", {"id": str(rid), "op": "order", "code": "0",
                                        "data": [{"clOrdId": coid, "ordId": f"K{i}",
                                                  "sCode": "0"}]})
            w.ws(okx, t + 2, "in", {"arg": {"channel": "orders"},
                                    "data": [{"clOrdId": coid, "ordId": f"K{i}",
                                              "state": "live"}]})
        elif kind == 2:
            w.ws(bybit, t, "out", {"reqId": str(rid), "op": "order.create",
                                   "args": [{"symbol": "BTCUSDT", "orderLinkId": coid}]})
            w.ws(bybit, t + 1, "in", {"reqId": str(rid), "retCode": 0, "op": "order.create",
                                      "data": {"orderId": f"B{i}", "orderLinkId": coid}})
        else:
            w.ws(deribit, t, "out", {"jsonrpc": "2.0", "id": i, "method": "private/buy",
                                     "params": {"label": coid}})
            w.ws(deribit, t + 1, "in", {"jsonrpc": "2.0", "id": i, "result": {
                "order": {"order_id": f"D{i}", "label": coid, "order_state": "open"}}})
        if rnd.random() < 0.1:  # a reply no request waits for
            w.ws(api, t + 3, "in", {"id": f"orphan-{i}", "status": 200})
        for _ in range(rnd.randrange(6)):  # market data, some of it close to a needle
            f = rnd.choice([stream, okx, bybit, deribit])
            w.ws(f, t + 0.5, "in", rnd.choice([
                {"stream": "btcusdt@depth", "data": {"e": "depthUpdate", "U": i, "u": i + 1,
                                                     "b": [["1", "2"]], "a": []}},
                {"arg": {"channel": "books", "instId": "BTC-USDT"}, "data": [{"seqId": i}]},
                {"topic": "orderbook.50.BTCUSDT", "type": "delta", "data": {"u": i}},
                {"jsonrpc": "2.0", "method": "subscription",
                 "params": {"channel": "book.BTC-PERPETUAL.100ms",
                            "data": {"change_id": i}}},
            ]))
    return w


@pytest.mark.parametrize("seed", range(4))
def test_generated_captures_every_way(tmp_path: Path, seed: int) -> None:
    out = _three_ways(_generated(seed), tmp_path, batches=1 + seed)
    assert out.tables["latency"].num_rows > 0


def test_partial_or_stale_side_files_are_not_used(tmp_path: Path) -> None:
    w = _generated(9)
    files = _stage_as_ingest(w, tmp_path, batches=3)
    side = sorted((tmp_path / prefilter.CANDIDATES_DIR).glob("*.arrow"))
    assert len(side) == 3
    assert match.staged_candidates(tmp_path, files["ws_messages"]) is not None
    # written with other needles (the rules changed since): not used
    with pa.OSFile(str(side[0])) as source:
        table = pa.ipc.open_file(source).read_all()
    meta = {**table.schema.metadata, prefilter._META_PARTS: json.dumps({"in": ["x"]}).encode()}
    table = table.replace_schema_metadata(meta)
    with pa.OSFile(str(side[0]), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    assert match.staged_candidates(tmp_path, files["ws_messages"]) is None
    # a batch not covered: not used
    side[0].unlink()
    assert match.staged_candidates(tmp_path, files["ws_messages"]) is None
    # either way the rows are those of the scan in DuckDB
    _same(match.match_staged(tmp_path, w.flows_table(), VenueRegistry()),
          match.match_tables(files, w.flows_table(), VenueRegistry(), prefilter=False))


def test_no_websocket_messages(tmp_path: Path) -> None:
    """Only REST and FIX: no side file, an empty candidate table, same rows."""
    w = Wire()
    rest = w.flow(sni="api.binance.com", app_protocol="tls/http")
    w.http(rest, 10, method="POST", path="/api/v3/order",
           body="symbol=BTCUSDT&newClientOrderId=r-1",
           content_type="application/x-www-form-urlencoded")
    w.http(rest, 14, status=200, body={"orderId": 5, "clientOrderId": "r-1"})
    out = _three_ways(w, tmp_path)
    cand = match.staged_candidates(tmp_path, [])
    assert cand is not None and cand.num_rows == 0
    assert out.tables["latency"].num_rows == 1


def test_concurrent_matches_share_nothing(tmp_path: Path) -> None:
    """One DuckDB database serves the process; matches in threads each have
    their own connection, tables and views."""
    cases = [(_generated(s), tmp_path / str(s)) for s in range(3)]
    expected = []
    for w, stage in cases:
        _stage_as_ingest(w, stage, batches=2)
        expected.append(match.match_staged(stage, w.flows_table(), VenueRegistry()))
    got: dict[int, list[match.MatchOutput]] = {i: [] for i in range(len(cases))}

    def run(i: int) -> None:
        w, stage = cases[i]
        for _ in range(3):
            got[i].append(match.match_staged(stage, w.flows_table(), VenueRegistry()))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, outs in got.items():
        assert len(outs) == 3
        for out in outs:
            _same(out, expected[i])


# --- Sample captures, ingested ---------------------------------------------------------


WS_CAPTURES = [SAMPLES / "binance_wsapi_tls13.pcap", SAMPLES / "okx_ws_tls12.pcap",
               SAMPLES / "deribit_jsonrpc_tls13.pcap"]


def test_sample_captures_ingest_rematch_and_unfiltered_agree(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[int] = []
    # the ingest's matcher (venues.IngestMatcher) takes it from prefilter at each call
    staged_candidates = prefilter.staged_candidates

    def spy(stage_dir: Path, ws_files: list[Path], skip: str | None = None) -> pa.Table | None:
        cand = staged_candidates(stage_dir, ws_files, skip)
        used.append(-1 if cand is None else cand.num_rows)
        return cand

    monkeypatch.setattr(prefilter, "staged_candidates", spy)
    data = tmp_path / "data"
    keylogs = sorted(SAMPLES.glob("*.keylog"))
    pcapflow.ingest([str(c) for c in WS_CAPTURES], keylog=keylogs, data=data)
    # every ingest's matcher read the side files (no DuckDB scan)
    assert len(used) == len(WS_CAPTURES) and all(n > 0 for n in used)

    registry = VenueRegistry()
    ids = sorted(p.name.split("=", 1)[1] for p in (data / "captures").glob("capture_id=*"))
    assert len(ids) == len(WS_CAPTURES)

    def committed(cid: str) -> tuple[match.MatchOutput, dict, pa.Table]:
        files = {t: match._partition_files(data, t, cid) for t in match.INPUT_TABLES}
        tables = {}
        for table, (_temp, schema) in match.OUTPUTS.items():
            schema = match.without_capture_id(schema)
            parts = match._partition_files(data, table, cid)
            tables[table] = (pa.concat_tables([pq.read_table(f, schema=schema) for f in parts])
                             if parts else schema.empty_table())
        flows = pa.concat_tables([
            pq.read_table(f, schema=match.without_capture_id(match.TABLES["flows"]))
            for f in match._partition_files(data, "flows", cid)])
        venues = {int(f): v for f, v in zip(flows.column("flow_id").to_pylist(),
                                            flows.column("venue").to_pylist(), strict=True)
                  if v is not None}
        return match.MatchOutput(flow_venue=venues, tables=tables), files, flows

    for cid in ids:
        ingested, files, flows = committed(cid)
        assert ingested.tables["latency"].num_rows > 0
        unfiltered = match.match_tables(files, flows, registry, prefilter=False)
        _same(ingested, unfiltered)
        _same(match.rematch_capture(data, cid, registry), unfiltered)
        rematched, _files, _flows = committed(cid)
        _same(rematched, unfiltered)


def test_every_gate_table_is_made_by_its_file() -> None:
    """A gate whose table a file no longer makes would silently never skip."""
    for name, (table, outputs) in match.GATES.items():
        queries = [match.statement_text(s) for s in match._parsed(match.sql_text(name))]
        assert any(q.startswith(f"CREATE OR REPLACE TEMP TABLE {table} AS") for q in queries)
        for out in outputs:
            assert any(q.startswith(f"CREATE OR REPLACE TEMP TABLE {out} AS") for q in queries)


def _match_in_child(stage: str) -> list[tuple]:
    w = _generated(5)
    out = match.match_staged(Path(stage), w.flows_table(), VenueRegistry())
    return _sorted_rows(out.tables["latency"])


def test_fork_after_matching(tmp_path: Path) -> None:
    """The process's database does not cross a fork: a forked child matches
    with its own, and so does the parent afterwards."""
    import multiprocessing

    w = _generated(5)
    _stage_as_ingest(w, tmp_path, batches=2)
    before = match.match_staged(tmp_path, w.flows_table(), VenueRegistry())
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply(_match_in_child, (str(tmp_path),))
    after = match.match_staged(tmp_path, w.flows_table(), VenueRegistry())
    assert child == _sorted_rows(before.tables["latency"])
    _same(after, before)
