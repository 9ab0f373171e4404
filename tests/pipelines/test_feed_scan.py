"""The ingest's compiled scan of market-data payloads (``pipelines.feed_scan``) gives
exactly the rows ``pcapflow.feed``'s SQL gives (DuckDB's JSON reader, the reference):
on the samples' messages and on generated payloads with every case the scan hands
back to the SQL (escapes, reals, nulls, duplicate keys, DuckDB's lenient JSON,
non-ASCII text, ``_`` in a LIKE pattern)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
from pcapflow.pipelines import feed_scan
from pcapflow.pipelines.tables.schemas import TABLES, without_capture_id

from pcapflow import feed
from pcapflow.dataset import Dataset

VENUES = ("binance", "okx", "bybit", "deribit")


def _messages(payloads: list[str], flows: list[int]) -> pa.Table:
    schema = without_capture_id(TABLES["ws_messages"])
    n = len(payloads)
    cols = {"ts_first": pa.array(range(10**18, 10**18 + n)).cast(schema.field("ts_first").type),
            "ts_last": pa.array(range(10**18 + 7, 10**18 + 7 + n)).cast(
                schema.field("ts_last").type),
            "flow_id": pa.array(flows, pa.int64()),
            "direction": pa.array(["in" if i % 13 else "out" for i in range(n)]),
            "stream_offset": pa.array(range(0, 100 * n, 100), pa.int64()),
            "opcode": pa.array(["text" if i % 17 else "binary" for i in range(n)]),
            "payload": pa.array(payloads, pa.string())}
    return pa.table([cols.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def _flows(ids: list[int]) -> pa.Table:
    schema = without_capture_id(TABLES["flows"])
    n = len(ids)
    cols = {"flow_id": pa.array(ids, pa.int64()),
            "venue": pa.array([VENUES[i % len(VENUES)] for i in ids])}
    return pa.table([cols.get(f.name, pa.nulls(n, f.type)) for f in schema], schema=schema)


def both_ways(rows: pa.Table, flows: pa.Table) -> tuple[list[tuple], list[tuple], int]:
    """The feed rules' messages by the SQL and by the scan (sorted), and how many
    messages the scan handed back whole."""
    with Dataset.of_capture({}, "c", {"ws_messages": rows, "flows": flows}) as view:
        ref = view.fetchall(f"SELECT * FROM ({feed.messages_sql(feed.present(view), fix=False)})")
        scanned = feed_scan.scan(rows)
        assert scanned is not None
        name = feed.stage_messages(view, scanned=scanned)
        got = view.fetchall(f"SELECT * FROM {name} WHERE rule <> 'fix_seq'")
    whole = scanned.filter(scanned.column("rule").is_null()).num_rows

    def key(r: tuple) -> tuple:
        return tuple((x is None, str(x)) for x in r)

    return sorted(ref, key=key), sorted(got, key=key), whole


# --- generated payloads ---------------------------------------------------------------

def _value(rng: random.Random) -> object:
    """A value for an id, a time or a name field: mostly what venues send, sometimes
    what the scan must hand back (or read as DuckDB does)."""
    return rng.choice([
        rng.randint(0, 10**12), rng.randint(0, 10**12), str(rng.randint(0, 10**6)),
        -1, "-1", 0, "007", None, True, False, 1.5, 2.0, -0.0, 10**19, 12345678901234567890,
        "", "abc", "snapshot", "update", "1", 1, [1, 2], {"x": 1}, "é", "a\"b", "x\\y",
        " 12", "+5", "1e3"])


def _doc(rng: random.Random) -> dict:
    kind = rng.randrange(6)
    v = _value
    if kind == 0:  # Binance depth, raw or combined, spot or futures
        ev = {"e": rng.choice(["depthUpdate", "depthUpdate", "depthupdate", "trade"]),
              "E": rng.choice([rng.randint(1, 10**12), v(rng)]),
              "s": rng.choice(["BTCUSDT", v(rng)]),
              "U": rng.choice([rng.randint(0, 999), v(rng)]),
              "u": rng.choice([rng.randint(0, 999), v(rng)]),
              "b": [["1.0", "2"]] * rng.randint(0, 3),
              "a": rng.choice([[], [["2.0", "1"]], v(rng)])}
        if rng.random() < 0.3:
            ev["pu"] = v(rng)
        return {"stream": "btcusdt@depth", "data": ev} if rng.random() < 0.5 else ev
    if kind == 1:  # Binance trade / aggTrade
        ev = {"e": rng.choice(["trade", "aggTrade", "executionReport"]), "E": v(rng),
              "s": "ETHUSDT", "t": v(rng), "a": v(rng), "p": "1.5", "m": rng.random() < 0.5}
        return {"stream": "x", "data": ev} if rng.random() < 0.5 else ev
    if kind == 2:  # OKX books
        d = {"seqId": v(rng), "prevSeqId": rng.choice([-1, v(rng), rng.randint(0, 99)]),
             "ts": rng.choice([str(rng.randint(1, 10**12)), v(rng)]), "asks": []}
        return {"arg": {"channel": rng.choice(["books", v(rng)]), "instId": "BTC-USDT"},
                "action": rng.choice(["snapshot", "update", v(rng)]),
                "data": rng.choice([[d], [d, d], d, [], v(rng)])}
    if kind == 3:  # Bybit orderbook
        return {"topic": rng.choice(["orderbook.50.BTCUSDT", "orderbook.1.X", v(rng)]),
                "type": rng.choice(["snapshot", "delta", v(rng)]), "ts": v(rng),
                "data": {"s": "BTCUSDT", "u": rng.choice([1, rng.randint(2, 99), v(rng)]),
                         "seq": v(rng), "b": []}}
    if kind == 4:  # Deribit book
        return {"jsonrpc": "2.0", "method": "subscription", "params": {
            "channel": rng.choice(["book.BTC-PERPETUAL.100ms", v(rng)]), "data": {
                "type": rng.choice(["snapshot", "change", v(rng)]), "change_id": v(rng),
                "prev_change_id": v(rng), "timestamp": v(rng),
                "instrument_name": rng.choice(["BTC-PERPETUAL", v(rng)])}}}
    return {"id": rng.randint(1, 9), "result": {"orderId": v(rng)}, "note": '"seqId"'}


def _text(rng: random.Random, doc: object) -> str:
    """``doc`` as JSON, spelt in one of the ways the scan must tell apart."""
    text = json.dumps(doc, separators=rng.choice([(",", ":"), (", ", ": ")]),
                      ensure_ascii=rng.random() < 0.5)
    r = rng.random()
    if r < 0.03:
        text = text[: rng.randrange(len(text))]  # cut: not JSON
    elif r < 0.05:
        text = text.replace("}", ",}", 1)  # a trailing comma: DuckDB reads it
    elif r < 0.07 and text.startswith("{"):
        k = text.find(":")
        text = text[:1] + text[1:k + 1] + '"dup", ' + text[1:]  # a duplicate key
    elif r < 0.08:
        text = text.replace('"prev_change_id"', '"prevXchange_id"')  # LIKE's "_"
    elif r < 0.09:
        text = text.replace('"seqId"', '"se\\u0071Id"')  # an escaped key
    elif r < 0.10:
        text = "\n " + text + " \t"
    elif r < 0.11:
        text = text.replace("1.5", "NaN")
    elif r < 0.12:
        text = text.replace('"s"', '"s\u00e9"')
    return text


@pytest.mark.parametrize("seed", range(4))
def test_generated_payloads_read_as_duckdb_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    docs = [_doc(rng) for _ in range(1500)]
    payloads = [_text(rng, d) for d in docs]
    # mostly on a flow of the venue the message is of (flow k: VENUES[k % 4])
    venue = {"stream": 0, "e": 0, "arg": 1, "topic": 2, "jsonrpc": 3}
    flows = [venue.get(next(iter(d)), 0) + 4 * rng.randrange(2) if rng.random() < 0.9
             else rng.randrange(8) for d in docs]
    ref, got, whole = both_ways(_messages(payloads, flows), _flows(list(range(8))))
    assert len(ref) > 300  # every rule takes some
    assert {r[3] for r in ref} == {r.name for r in feed.FEED_RULES}
    assert got == ref
    assert 0 < whole < len(payloads) // 2  # the odd ones go to the SQL, the rest do not


def test_plain_market_data_is_read_without_duckdb() -> None:
    """Also: the scan's streams and symbols as dictionaries (the kernel's hash table of
    them grown several times, a symbol missing now and then) are
    ``pc.dictionary_encode``'s of the same strings, in order of first appearance."""
    import pyarrow.compute as pc

    def sym(i: int) -> dict[str, str]:
        return {} if i % 7 == 0 else {"s": f"S{(i * 37) % 150}"}

    payloads = [json.dumps({"stream": "btcusdt@depth", "data": {
        "e": "depthUpdate", "E": 1_700_000_000_000 + i, **sym(i), "U": 3 * i,
        "u": 3 * i + 2, "b": [["1.00", "2"]], "a": []}}, separators=(",", ":"))
        for i in range(400)]
    rows = _messages(payloads, [0] * 400)
    ref, got, whole = both_ways(rows, _flows([0]))
    inbound_text = sum(1 for i in range(400) if i % 13 and i % 17)  # as _messages makes them
    assert whole == 0 and got == ref and len(ref) == inbound_text
    scanned = feed_scan.scan(rows)
    assert scanned is not None
    for name in ("stream", "symbol"):
        col = scanned.column(name).combine_chunks()
        assert col.equals(pc.dictionary_encode(col.cast(pa.string())).cast(col.type))
        assert len(col.dictionary) > 100 and (name == "stream" or col.null_count > 0)


def test_samples_messages_read_as_duckdb_reads_them(samples_dataset: Dataset) -> None:
    schema = without_capture_id(TABLES["ws_messages"])
    fschema = without_capture_id(TABLES["flows"])
    seen = 0
    for (cid,) in samples_dataset.fetchall("SELECT DISTINCT capture_id FROM ws_messages"):
        rows = samples_dataset.sql(f"SELECT {', '.join(schema.names)} FROM ws_messages "
                                   "WHERE capture_id = ?", params=[cid]).to_arrow_table()
        flows = samples_dataset.sql(f"SELECT {', '.join(fschema.names)} FROM flows "
                                    "WHERE capture_id = ?", params=[cid]).to_arrow_table()
        ref, got, whole = both_ways(rows.cast(schema), flows.cast(fschema))
        assert got == ref, cid
        assert whole == 0, cid
        seen += len(ref)
    assert seen > 1000  # the tick sample's depth and trades


def test_side_files_are_read_only_when_they_cover_every_staged_message(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    payloads = [json.dumps({"e": "trade", "E": 1, "s": "X", "t": i}) for i in range(40)]
    batches = [_messages(payloads[:25], [0] * 25), _messages(payloads[25:], [0] * 15)]
    files = []
    for k, rows in enumerate(batches):
        feed_scan.stage(tmp_path, rows)
        files.append(tmp_path / f"part-{k}.parquet")
        pq.write_table(rows, files[-1])
    both = feed_scan.staged(tmp_path, files)
    assert both is not None
    assert both.num_rows == sum(feed_scan.scan(b).num_rows for b in batches) > 0
    extra = tmp_path / "part-resumed.parquet"  # rows no side file covers (a resumed set)
    pq.write_table(batches[0], extra)
    assert feed_scan.staged(tmp_path, [*files, extra]) is None
