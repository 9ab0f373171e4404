"""Feed integrity (pcapflow/feed.py): planted gaps are found, exactly, and nothing else.

A generated dataset stands for captures whose server skipped planted updates:
for every dialect of ``FEED_RULES`` (and FIX MsgSeqNum), a stream's messages are
numbered as the venue numbers them, some are not sent (the plant), snapshots
restart streams, a reconnect starts a new connection, two streams interleave
on one connection, and rows are stored out of stream order. The expected gaps
are derived from what was skipped, not from the code under test. The committed
samples carry a Binance trade stream and FIX sessions without loss: no gap there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pcapflow.parsers.fix.rows import FIX_MESSAGES
from pcapflow.parsers.websocket.rows import WS_MESSAGES
from pcapflow.pipelines import store
from pcapflow.pipelines.tables.schemas import CAPTURES, FLOWS

from pcapflow import feed
from pcapflow.dataset import Dataset

T0 = 1_790_000_000_000_000_000
CID = "feedfeedfeedfeed"


def _table(rows: list[dict[str, object]], schema: pa.Schema) -> pa.Table:
    cols = {}
    for f in schema:
        v = [r.get(f.name) for r in rows]
        cols[f.name] = (pa.array(v, pa.int64()).cast(f.type) if pa.types.is_timestamp(f.type)
                        else pa.array(v, f.type))
    return pa.table(cols, schema=schema)


class Capture:
    """Rows of one generated capture and the gaps planted in it."""

    def __init__(self) -> None:
        self.ws: list[dict[str, object]] = []
        self.fix: list[dict[str, object]] = []
        self.flows: dict[int, str] = {}
        self.expected: list[tuple[object, ...]] = []
        self.offset: dict[int, int] = {}
        self.t = T0

    def send(self, flow: int, payload: dict[str, object]) -> int:
        """One inbound text message on ``flow``; returns its wire time."""
        self.t += 1_000_000
        off = self.offset.get(flow, 0)
        text = json.dumps(payload, separators=(",", ":"))
        self.offset[flow] = off + len(text)
        self.ws.append({"flow_id": flow, "direction": "in", "ts_first": self.t,
                        "ts_last": self.t, "stream_offset": off, "opcode": "text",
                        "payload": text, "fin": True})
        return self.t

    def plant(self, flow: int, rule: str, stream: str, check: str, expected: int,
              got: int) -> None:
        self.expected.append((flow, rule, stream, check, expected, got, "gap" if got > expected
                              else "backwards", self.t))


def _generate(rng: np.random.Generator) -> Capture:
    cap = Capture()
    cap.flows = {0: "binance", 1: "binance", 2: "okx", 3: "bybit", 4: "deribit",
                 5: "binance", 6: "mockfix"}
    # Binance spot depth (U/u) and trades on one connection, interleaved
    u, trade = 1000, 500
    skip_depth = {7, 8, 19, 40}  # events the server did not send
    skip_trade = {11, 12, 13, 30}
    last_sent_u = None
    last_trade = None
    for i in range(60):
        first, u = u + 1, u + int(rng.integers(1, 30))
        if i not in skip_depth:
            cap.send(0, {"stream": "btcusdt@depth", "data": {
                "e": "depthUpdate", "E": 1_790_000_000_000 + i, "s": "BTCUSDT", "U": first,
                "u": u, "b": [], "a": []}})
            if last_sent_u is not None and first != last_sent_u + 1:
                cap.plant(0, "binance_depth", "depthUpdate BTCUSDT", "next",
                          last_sent_u + 1, first)
            last_sent_u = u
        trade += 1
        if i not in skip_trade:
            cap.send(0, {"stream": "btcusdt@trade", "data": {
                "e": "trade", "E": 1_790_000_000_000 + i, "s": "BTCUSDT", "t": trade}})
            if last_trade is not None and trade != last_trade + 1:
                cap.plant(0, "binance_trade", "trade BTCUSDT", "next", last_trade + 1, trade)
            last_trade = trade
    # Binance futures depth (pu = previous u), raw stream (no wrapper), one repeat
    u, prev, prev_u, prev_pu = 9000, None, 0, 0
    for i in range(40):
        pu, u = u, u + int(rng.integers(1, 9))
        if i in {5, 6, 25}:
            continue
        if i == 30:  # the server sends event 29 again: pu goes back
            cap.send(1, {"e": "depthUpdate", "E": 1, "s": "ETHUSDT", "U": 0, "u": prev_u,
                         "pu": prev_pu})
            cap.plant(1, "binance_depth", "depthUpdate ETHUSDT", "prev", prev_u, prev_pu)
            prev = prev_u
        cap.send(1, {"e": "depthUpdate", "E": 1, "s": "ETHUSDT", "U": pu + 1, "u": u, "pu": pu})
        if prev is not None and pu != prev:
            cap.plant(1, "binance_depth", "depthUpdate ETHUSDT", "prev", prev, pu)
        prev, prev_u, prev_pu = u, u, pu
    # OKX books: two instruments; a snapshot (prevSeqId -1) restarts one
    for inst, skips in (("BTC-USDT", {4, 17}), ("ETH-USDT", {9})):
        seq, prev = 100, None
        for i in range(30):
            pseq, seq = seq, seq + int(rng.integers(1, 5))
            if i in skips:
                continue
            snap = i in (0, 20)
            cap.send(2, {"arg": {"channel": "books", "instId": inst},
                         "action": "snapshot" if snap else "update",
                         "data": [{"seqId": seq, "prevSeqId": -1 if snap else pseq,
                                   "ts": str(1_790_000_000_000 + i)}]})
            if not snap and prev is not None and pseq != prev:
                cap.plant(2, "okx_books", f"books {inst}", "prev", prev, pseq)
            prev = seq
    # Bybit orderbook deltas: u consecutive; snapshot and u = 1 restart
    u, prev = 0, None
    for i in range(30):
        u = 1 if i == 15 else u + 1
        if i in {3, 22}:
            continue
        snap = i == 0
        cap.send(3, {"topic": "orderbook.50.BTCUSDT", "type": "snapshot" if snap else "delta",
                     "ts": 1_790_000_000_000 + i, "data": {"s": "BTCUSDT", "u": u, "seq": 7 * u}})
        if not snap and u != 1 and prev is not None and u != prev + 1:
            cap.plant(3, "bybit_orderbook", "orderbook.50.BTCUSDT", "next", prev + 1, u)
        prev = u
    # Deribit book: prev_change_id; the first notification is a snapshot
    cid, prev = 5000, None
    for i in range(25):
        pcid, cid = cid, cid + int(rng.integers(1, 4))
        if i in {12}:
            continue
        data = {"type": "snapshot" if i == 0 else "change", "timestamp": 1_790_000_000_000 + i,
                "change_id": cid, "instrument_name": "BTC-PERPETUAL"}
        if i:
            data["prev_change_id"] = pcid
        cap.send(4, {"jsonrpc": "2.0", "method": "subscription",
                     "params": {"channel": "book.BTC-PERPETUAL.100ms", "data": data}})
        if i and prev is not None and pcid != prev:
            cap.plant(4, "deribit_book", "book.BTC-PERPETUAL.100ms", "prev", prev, pcid)
        prev = cid
    # a reconnect: a new connection's trade stream starts anywhere, no gap
    for t in (900, 901, 902):
        cap.send(5, {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT",
                                                         "t": t}})
    # FIX: counterparty MsgSeqNum 1..30 with 10-11 never sent, a SequenceReset-GapFill
    # over 20-24, a PossDup resend of 5, a Logon with ResetSeqNumFlag restarting at 1
    off, seq = 0, 0
    def fix(seq: int, msg_type: str, fields: list[tuple[int, str]], poss_dup: bool = False) -> None:
        nonlocal off
        cap.t += 1_000_000
        cap.fix.append({"flow_id": 6, "direction": "in", "ts_first": cap.t, "ts_last": cap.t,
                        "stream_offset": off, "msg_type": msg_type, "seq_num": seq,
                        "sender_comp_id": "MOCKEX", "target_comp_id": "PCFTRADER1",
                        "poss_dup": poss_dup,
                        "fields": [{"tag": t, "value": v} for t, v in fields]})
        off += 100
    seq = 1
    while seq <= 30:
        if seq in (10, 11):
            seq += 1
            continue
        if seq == 20:
            fix(20, "4", [(123, "Y"), (36, "25")])
            seq = 25
            continue
        fix(seq, "8" if seq > 1 else "A", [])
        if seq == 12:
            cap.plant(6, "fix_seq", "MOCKEX>PCFTRADER1", "next", 10, 12)
        if seq == 6:
            fix(5, "8", [(43, "Y")], poss_dup=True)
        seq += 1
    fix(1, "A", [(141, "Y")])
    fix(2, "0", [])
    return cap


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Capture]:
    root = tmp_path_factory.mktemp("feed")
    cap = _generate(np.random.default_rng(18))
    st = store.Staging(root)
    ws = sorted(cap.ws, key=lambda r: (r["flow_id"], -r["stream_offset"]))  # not in order
    st.write("ws_messages", _table(ws, WS_MESSAGES))
    st.write("fix_messages", _table(cap.fix, FIX_MESSAGES))
    st.write("flows", _table([{"flow_id": f, "venue": v, "transport": "tcp"}
                              for f, v in cap.flows.items()], FLOWS))
    st.write("captures", _table([{"capture_id": CID, "path": "gen.pcap", "first_ts": T0,
                                  "last_ts": cap.t}], CAPTURES))
    st.commit(CID)
    return root, cap


def test_exactly_the_planted_gaps_are_found(generated: tuple[Path, Capture]) -> None:
    root, cap = generated
    with Dataset(root) as ds:
        gaps = feed.feed_gaps(ds)
    got = sorted((int(r.flow_id), r.rule, r.stream, r.check, int(r.expected), int(r.got), r.kind,
                  r.ts.value) for r in gaps.itertuples())
    want = sorted(cap.expected)
    assert len(want) == 15
    assert got == want
    nxt = gaps[gaps.check == "next"]
    assert (nxt.missing == nxt.got - nxt.expected).all()
    assert gaps[gaps.check == "prev"].missing.isna().all()
    assert (gaps.ts > gaps.prev_ts).all() and (gaps.capture_id == CID).all()


def test_feed_delay_is_wire_minus_exchange_time(generated: tuple[Path, Capture]) -> None:
    root, cap = generated
    with Dataset(root) as ds:
        delay = feed.feed_delay(ds).set_index(["flow_id", "stream"])
    ws = pd.DataFrame(cap.ws)
    okx = ws[ws.flow_id == 2].payload.map(json.loads)
    btc = [(t, int(p["data"][0]["ts"]) * 10**6) for t, p in
           zip(ws[ws.flow_id == 2].ts_last, okx, strict=True) if p["arg"]["instId"] == "BTC-USDT"]
    d = np.array([t - e for t, e in btc], dtype=np.int64)
    row = delay.loc[(2, "books BTC-USDT")]
    assert row.messages == len(d)
    assert row.min_us == d.min() / 1e3 and row.max_us == d.max() / 1e3
    assert row.p50_us == pytest.approx(np.quantile(d, 0.5) / 1e3, abs=1e-3)


def test_samples_feeds_have_no_gaps(tmp_path: Path) -> None:
    from pcapflow import api, samples

    s = samples.sample("binance_wsapi_tls13")
    api.ingest([str(s.capture)], keylog=[s.keylog], data=tmp_path / "d")
    with Dataset(tmp_path / "d") as ds:
        assert feed.feed_gaps(ds).empty
        delay = feed.feed_delay(ds)
        trades = ds.scalar(
            "SELECT count(*) FROM ws_messages WHERE payload LIKE '%\"e\":\"trade\"%'")
    assert list(delay.rule) == ["binance_trade"] and int(delay.messages.iloc[0]) == trades > 100
