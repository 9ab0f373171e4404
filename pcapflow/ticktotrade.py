"""Tick-to-trade: how long after the last market-data message on its instrument
each order left.

How this works. An order's instrument is read from the request that carried it
(``ORDER_SYMBOL``: JSON paths of the WebSocket dialects, the ``symbol`` query or
form parameter and JSON body keys of REST, FIX tag 55 Symbol), joined through
``orders.source_table``/``flow_id``/``stream_offset``. Market data is what the
feed rules of ``pcapflow.feed`` take (``FEED_RULES``: depth, trades, books), each
with its instrument (``FeedRule.symbol``). For each order, the last market-data
message of the same venue and instrument that was whole (``ts_last``) at or
before the order's first byte left (``orders.ts_first``), on any connection and
capture, is found by one ASOF join, and

    reaction_ns = order.ts_first - md.ts_last

What this infers, plainly: that message is the latest the strategy COULD have
reacted to; the wire does not say it did (causality is not on the wire), nor
whether the strategy read it at once. Orders naming no instrument (a cancel by
exchange order id), orders before any market data and orders whose last tick is
older than ``MAX_AGE_S`` get no row. Nothing is
stored at ingest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from . import feed

if TYPE_CHECKING:
    from .dataset import Dataset

ORDER_SYMBOL: dict[str, tuple[str, ...]] = {
    # Binance WS API params.symbol, OKX args[0].instId, Deribit params.instrument_name,
    # Bybit v5 WS args[0].symbol
    "ws_messages": ("$.params.symbol", "$.args[0].instId", "$.params.instrument_name",
                    "$.args[0].symbol"),
    # OKX and Bybit REST JSON bodies (Binance REST: the symbol parameter, below)
    "http_messages": ("$.instId", "$.symbol", "$.instrument_name"),
}
"""Where an order request names its instrument, per message table (tried in order)."""


def _json_first(doc: str, paths: tuple[str, ...]) -> str:
    items = ", ".join(f"json_extract_string({doc}, '{p}')" for p in paths)
    return f"CASE WHEN json_valid({doc}) THEN coalesce({items}) END"


def orders_sql() -> str:
    """Every order with its instrument (``symbol``) and first-byte time (``t``, ns)."""
    rest_param = ("coalesce(nullif(url_decode(regexp_extract(h.path, '[?&]symbol=([^&]*)', 1)), "
                  "''), nullif(url_decode(regexp_extract('&' || coalesce(h.body, ''), "
                  "'&symbol=([^&]*)', 1)), ''))")
    return f"""
        SELECT o.capture_id, o.venue, o.flow_id, o.endpoint, o.kind, o.correlation_id,
               o.client_order_id, o.ts_first, epoch_ns(o.ts_first) AS t,
               coalesce({_json_first("w.payload", ORDER_SYMBOL["ws_messages"])},
                        {rest_param},
                        {_json_first("h.body", ORDER_SYMBOL["http_messages"])},
                        list_filter(x.fields, lambda f: f.tag = 55)[1].value) AS symbol
        FROM orders o
        LEFT JOIN ws_messages w ON o.source_table = 'ws_messages'
             AND w.capture_id = o.capture_id AND w.flow_id = o.flow_id
             AND w.direction = 'out' AND w.stream_offset = o.stream_offset
        LEFT JOIN http_messages h ON o.source_table = 'http_messages'
             AND h.capture_id = o.capture_id AND h.flow_id = o.flow_id
             AND h.direction = 'out' AND h.kind = 'request' AND h.stream_offset = o.stream_offset
        LEFT JOIN fix_messages x ON o.source_table = 'fix_messages'
             AND x.capture_id = o.capture_id AND x.flow_id = o.flow_id
             AND x.direction = 'out' AND x.stream_offset = o.stream_offset"""


MAX_AGE_S = 10.0
"""Market data older than this when the order left is no trigger of it (``max_age_s``)."""


def tick_to_trade_sql(rules: tuple[feed.FeedRule, ...] = feed.FEED_RULES,
                      max_age_s: float | None = MAX_AGE_S) -> str:
    """The SQL of ``tick_to_trade`` (returned so users can read and reuse it)."""
    age = "" if max_age_s is None else f" WHERE o.t - md.md_t <= {int(max_age_s * 1e9)}"
    return f"""
        WITH o AS ({orders_sql()}),
        md AS (SELECT capture_id AS md_capture_id, venue, flow_id AS md_flow_id,
                      rule AS md_rule, stream AS md_stream, ts AS md_t, symbol
               FROM ({feed.messages_sql(rules, fix=False)}) WHERE symbol IS NOT NULL)
        SELECT o.capture_id, o.venue, o.flow_id, o.endpoint, o.kind, o.correlation_id,
               o.client_order_id, o.symbol, o.ts_first AS order_ts_first,
               md.md_capture_id, md.md_flow_id, md.md_rule, md.md_stream,
               make_timestamp_ns(md.md_t) AS md_ts, o.t - md.md_t AS reaction_ns
        FROM o ASOF JOIN md ON md.venue = o.venue AND md.symbol = o.symbol AND o.t >= md.md_t
        {age}
        ORDER BY o.t, o.capture_id, o.flow_id"""


def tick_to_trade(ds: Dataset, rules: tuple[feed.FeedRule, ...] = feed.FEED_RULES,
                  max_age_s: float | None = MAX_AGE_S) -> pd.DataFrame:
    """Per order: the last market-data message on its instrument before it left (no
    older than ``max_age_s``; None: any), and ``reaction_ns`` (see the module
    docstring for what this does and does not infer)."""
    from .analysis import utc
    from .causes import _utc_times

    sql = tick_to_trade_sql(feed.present(ds, rules), max_age_s)
    return utc(_utc_times(ds.sql(sql).to_arrow_table()).to_pandas())
