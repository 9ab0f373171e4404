"""Market-data feed rules: how each venue numbers its streams, declared as data.

``pcapflow.feed`` explains the two checks (``next``, ``prev``) and reads these
rules in SQL over a dataset; ``pipelines.feed_scan`` reads the same rules, compiled,
over the WebSocket payloads while an ingest has them in memory. Adding a venue's
stream is one ``FeedRule`` in ``FEED_RULES``.
"""

from __future__ import annotations

from dataclasses import dataclass

Paths = tuple[str, ...]
"""JSON paths tried in order (the first one present wins): combined streams wrap
the event in ``{"stream": ..., "data": {...}}``, raw streams do not."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedRule:
    """How one venue's market-data stream is numbered (see the module docstring)."""

    name: str
    venue: str
    like: str  # a payload must contain this (SQL LIKE) to be read as JSON at all
    require: tuple[tuple[Paths, str], ...] = ()  # (paths, value): what the message must be
    stream: tuple[Paths, ...]  # parts of the stream name, joined by " "
    last: Paths  # the message's (last) id
    first: Paths = ()  # ``next`` check: first id (empty: the same as ``last``)
    prev: Paths = ()  # ``prev`` check: the previous message's id as this one names it
    reset: tuple[tuple[Paths, str], ...] = ()  # (paths, value): a snapshot, start afresh
    exchange_ts: Paths = ()  # the exchange's time stamp, in ``ts_unit`` since the epoch
    symbol: Paths = ()  # the instrument (pcapflow.ticktotrade)
    ts_unit_ns: int = 1_000_000  # milliseconds


FEED_RULES: tuple[FeedRule, ...] = (
    # Binance "How to manage a local order book": each event's U must be the
    # previous event's u + 1 (spot); futures events carry pu = previous u.
    FeedRule(name="binance_depth", venue="binance", like='%"depthUpdate"%',
             require=((("$.data.e", "$.e"), "depthUpdate"),),
             stream=(("$.data.e", "$.e"), ("$.data.s", "$.s")),
             first=("$.data.U", "$.U"), last=("$.data.u", "$.u"), prev=("$.data.pu", "$.pu"),
             exchange_ts=("$.data.E", "$.E"), symbol=("$.data.s", "$.s")),
    # trade ids are consecutive per symbol
    FeedRule(name="binance_trade", venue="binance", like='%"trade"%',
             require=((("$.data.e", "$.e"), "trade"),),
             stream=(("$.data.e", "$.e"), ("$.data.s", "$.s")), last=("$.data.t", "$.t"),
             exchange_ts=("$.data.E", "$.E"), symbol=("$.data.s", "$.s")),
    FeedRule(name="binance_aggtrade", venue="binance", like='%"aggTrade"%',
             require=((("$.data.e", "$.e"), "aggTrade"),),
             stream=(("$.data.e", "$.e"), ("$.data.s", "$.s")), last=("$.data.a", "$.a"),
             exchange_ts=("$.data.E", "$.E"), symbol=("$.data.s", "$.s")),
    # OKX books: prevSeqId = the previous push's seqId; -1 on the snapshot
    FeedRule(name="okx_books", venue="okx", like='%"seqId"%',
             stream=(("$.arg.channel",), ("$.arg.instId",)), last=("$.data[0].seqId",),
             prev=("$.data[0].prevSeqId",), reset=((("$.data[0].prevSeqId",), "-1"),
                                                    (("$.action",), "snapshot")),
             exchange_ts=("$.data[0].ts",), symbol=("$.arg.instId",)),
    # Bybit orderbook: u is consecutive across deltas; a snapshot (or u = 1,
    # after a service restart) starts afresh
    FeedRule(name="bybit_orderbook", venue="bybit", like='%"orderbook.%',
             stream=(("$.topic",),), last=("$.data.u",),
             reset=((("$.type",), "snapshot"), (("$.data.u",), "1")), exchange_ts=("$.ts",),
             symbol=("$.data.s",)),
    # Deribit book.*: prev_change_id = the previous notification's change_id
    FeedRule(name="deribit_book", venue="deribit", like='%"prev_change_id"%',
             stream=(("$.params.channel",),), last=("$.params.data.change_id",),
             prev=("$.params.data.prev_change_id",),
             reset=((("$.params.data.type",), "snapshot"),),
             exchange_ts=("$.params.data.timestamp",),
             symbol=("$.params.data.instrument_name",)),
)
"""Market-data dialects: adding a venue's stream is one entry here."""

