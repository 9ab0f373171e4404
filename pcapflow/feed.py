"""Market-data feed integrity: sequence gaps and feed delay, per venue dialect.

How this works. Each venue numbers the updates of a market-data stream, and
says how a client checks that none was lost; ``FEED_RULES`` declares that per
dialect, as data (which messages, where the stream name, the sequence numbers
and the exchange's own time stamp are, and which message starts afresh):

- ``next``: a message carries the first and last update id it covers (Binance
  depth ``U``/``u``; a trade or FIX MsgSeqNum is the case first = last); the
  next message of the stream must start at ``last + 1``.
- ``prev``: a message names the id of the one before it (Binance futures
  ``pu``, OKX ``prevSeqId``, Deribit ``prev_change_id``); it must equal the
  previous message's last id (``u``, ``seqId``, ``change_id``).

A stream is one subscription on one connection (``capture_id``, ``flow_id``,
rule and the stream name from the message): a reconnect starts a new stream,
and a snapshot (``reset``) starts one afresh. Messages are taken in stream
order (``stream_offset``), as the client read them. A message whose number is
not the expected one is a ``feed_gaps`` row: ``got > expected`` is a ``gap``
(updates lost between the two: for ``next``, ``got - expected`` ids),
``got < expected`` ``backwards`` (a repeat or a restart without a snapshot).

Feed delay is the wire time (``ts_last``: when the message was whole) minus
the exchange's time stamp (Binance ``E``, OKX ``ts``, Bybit ``ts``, Deribit
``timestamp``, FIX SendingTime), per stream: it includes the offset between the
exchange's clock and the capture's, which a capture cannot separate from the
one-way delay; its minimum is that offset plus the fastest transit, and
changes over the distribution are what it shows reliably.

Gaps are found at ingest and stored (``feed_gaps``, ``pcapflow.why``); feed
delay is computed when asked. Both read ``ws_messages`` and ``fix_messages``;
DuckDB reads only
the payloads that pass a substring test (``like``: a quoted name, so that
JSON spelt with or without spaces passes) before parsing JSON, and keeps the
messages that are what the rule says (``require``, e.g. Binance ``e`` = ``trade``:
an ``executionReport`` has a ``t`` too) and have an id.

At ingest no payload is parsed here: ``pipelines.feed_scan`` reads the rules'
ids from each batch of messages while it is in memory (compiled, the same rows
as this SQL: its tests hold the two equal) and ``message_rows`` takes its rows,
parsing with DuckDB only the few payloads the scan hands back whole, into one
Arrow table; ``gaps_of`` finds the gaps in it with NumPy (the SQL above stays the
reference and what runs over several captures). A plain ingest's derive does not even
make that table: ``StreamWalk`` finds the gaps and silences of each stream a side
file of the scan at a time, carrying each stream's last message (``Streams``; the
flows' venues, known later, only leave streams out). The rules themselves are declared
in ``pipelines/feed_rules.py`` (the ingest reads them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .pipelines.feed_rules import FEED_RULES, FeedRule, Paths
from .pipelines.tables import schemas

if TYPE_CHECKING:  # pandas: only where a DataFrame is returned (an ingest has none)
    import pandas as pd

    from .dataset import Dataset

FEED_GAPS = schemas.FEED_GAPS
"""``feed_gaps``: one row per break in a stream's numbering (docs/tables.md)."""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class _Paths:
    """The JSON paths a rule reads, each parsed out of a payload once: DuckDB's
    ``json_extract_string(doc, [paths])`` parses the document one time for the
    whole list (``v``), where one call per path would parse it per path."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def first(self, paths: Paths) -> str:
        """SQL: the text at the first of ``paths`` present (NULL for none)."""
        if not paths:
            return "NULL::VARCHAR"
        refs = []
        for p in paths:
            if p not in self.paths:
                self.paths.append(p)
            refs.append(f"v[{self.paths.index(p) + 1}]")
        return refs[0] if len(refs) == 1 else "coalesce(" + ", ".join(refs) + ")"

    def int(self, paths: Paths) -> str:
        return f"TRY_CAST({self.first(paths)} AS BIGINT)"

    def list_sql(self) -> str:
        return "[" + ", ".join(_sql_str(p) for p in self.paths) + "]"


WS_SOURCE = ("(SELECT m.capture_id, f.venue, m.flow_id, m.ts_last, m.stream_offset, "
             "m.payload FROM ws_messages m JOIN flows f USING (capture_id, flow_id) "
             "WHERE m.direction = 'in' AND m.opcode = 'text')")
"""Inbound WebSocket text messages with their flow's venue: what the rules read (the
ingest reads them once into a table instead: ``stage_ws``)."""


def rule_sql(rule: FeedRule, source: str = WS_SOURCE) -> str:
    """One SELECT: the rule's messages as (capture_id, venue, flow_id, rule,
    stream, ts, stream_offset, first_id, last_id, prev_id, reset, exchange_ns, symbol)."""
    p = _Paths()
    stream = " || ' ' || ".join(f"coalesce({p.first(x)}, '')" for x in rule.stream)
    require = "".join(f" AND {p.first(x)} = {_sql_str(v)}" for x, v in rule.require)
    reset = " OR ".join(f"coalesce({p.first(x)} = {_sql_str(v)}, false)"
                        for x, v in rule.reset) or "false"
    # DECIMAL, not DOUBLE: a double holds 53 bits, nanoseconds since 1970 need 61; TRY:
    # a stamp past 2262 in ns is no time (NULL), not an error that stops the ingest
    ets = (f"TRY_CAST({p.first(rule.exchange_ts)} AS DECIMAL(38, 6)) * {rule.ts_unit_ns}"
           if rule.exchange_ts else "NULL::BIGINT")
    first_id, last_id, prev_id = p.int(rule.first or rule.last), p.int(rule.last), \
        p.int(rule.prev)
    return f"""
        SELECT capture_id, venue, flow_id, {_sql_str(rule.name)} AS rule,
               {stream} AS stream, ts, stream_offset, {first_id} AS first_id,
               {last_id} AS last_id, {prev_id} AS prev_id,
               {reset} AS reset, TRY_CAST({ets} AS BIGINT) AS exchange_ns,
               {p.first(rule.symbol)} AS symbol
        FROM (SELECT m.capture_id, m.venue, m.flow_id, epoch_ns(m.ts_last) AS ts,
                     m.stream_offset,
                     -- one parse per payload: TRY makes a malformed one NULL (dropped)
                     TRY(json_extract_string(m.payload, {p.list_sql()})) AS v
              FROM {source} m
              WHERE m.venue = {_sql_str(rule.venue)} AND m.payload LIKE {_sql_str(rule.like)})
        WHERE v IS NOT NULL{require}"""


def stage_ws(ds: Dataset, rules: tuple[FeedRule, ...], name: str = "feed_ws") -> str:
    """Read the inbound text messages the ``rules`` may take into a temporary table
    ``name`` (one scan of the payloads, where each rule would scan them again) and
    return the source to pass to ``messages_sql``."""
    likes = " OR ".join(f"payload LIKE {_sql_str(r.like)}" for r in rules) or "false"
    venues = ", ".join(_sql_str(v) for v in sorted({r.venue for r in rules})) or "NULL"
    ds.con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {WS_SOURCE} "
                   f"WHERE venue IN ({venues}) AND ({likes})")
    return name


# FIX: the counterparty's MsgSeqNum (34) must grow by one; a SequenceReset
# (35=4) sets the next one to NewSeqNo (36); a Logon with ResetSeqNumFlag
# (141=Y) starts at 1 again; PossDup resends are not new messages.
FIX_SQL = """
    SELECT m.capture_id, coalesce(f.venue, 'fix') AS venue, m.flow_id, 'fix_seq' AS rule,
           coalesce(m.sender_comp_id, '') || '>' || coalesce(m.target_comp_id, '') AS stream,
           epoch_ns(m.ts_last) AS ts, m.stream_offset, m.seq_num AS first_id,
           CASE WHEN m.msg_type = '4'
                THEN TRY_CAST(list_filter(m.fields, lambda x: x.tag = 36)[1].value AS BIGINT) - 1
                ELSE m.seq_num END AS last_id,
           NULL::BIGINT AS prev_id,
           (m.msg_type = 'A' AND list_contains(list_transform(
               list_filter(m.fields, lambda x: x.tag = 141), lambda x: x.value), 'Y')) AS reset,
           NULL::BIGINT AS exchange_ns,
           list_filter(m.fields, lambda x: x.tag = 55)[1].value AS symbol
    FROM fix_messages m JOIN flows f USING (capture_id, flow_id)
    WHERE m.direction = 'in' AND m.seq_num IS NOT NULL AND NOT coalesce(m.poss_dup, false)"""


def messages_sql(rules: tuple[FeedRule, ...] = FEED_RULES, fix: bool = True,
                 source: str = WS_SOURCE) -> str:
    """Every market-data message the rules take (and inbound FIX), one row each;
    ``source``: where the WebSocket messages are read (``stage_ws``)."""
    parts = [rule_sql(r, source) for r in rules] + ([FIX_SQL] if fix else [])
    return "\nUNION ALL\n".join(parts) or _NO_MESSAGES


_NO_MESSAGES = """
    SELECT NULL::VARCHAR AS capture_id, NULL::VARCHAR AS venue, NULL::BIGINT AS flow_id,
           NULL::VARCHAR AS rule, NULL::VARCHAR AS stream, NULL::BIGINT AS ts,
           NULL::BIGINT AS stream_offset, NULL::BIGINT AS first_id, NULL::BIGINT AS last_id,
           NULL::BIGINT AS prev_id, false AS reset, NULL::BIGINT AS exchange_ns,
           NULL::VARCHAR AS symbol
    WHERE false"""


def gaps_sql(rules: tuple[FeedRule, ...] = FEED_RULES, fix: bool = True,
             messages: str | None = None) -> str:
    """The SQL of ``feed_gaps`` (returned so users can read and reuse it); ``messages``:
    a table of ``messages_sql``'s rows, read instead of computing them."""
    return f"""
        WITH msg AS ({f"FROM {messages}" if messages else messages_sql(rules, fix)}),
        seq AS (
            SELECT *, lag(last_id) OVER w AS prev_last, lag(ts) OVER w AS prev_ts
            FROM msg WHERE last_id IS NOT NULL
            WINDOW w AS (PARTITION BY capture_id, flow_id, rule, stream
                         ORDER BY stream_offset, ts)),
        checked AS (
            SELECT *, CASE WHEN prev_id IS NOT NULL THEN 'prev' ELSE 'next' END AS "check",
                   CASE WHEN prev_id IS NOT NULL THEN prev_last ELSE prev_last + 1 END AS expected,
                   coalesce(prev_id, first_id) AS got
            FROM seq WHERE NOT reset AND prev_last IS NOT NULL)
        SELECT capture_id, venue, flow_id, rule, stream, make_timestamp_ns(ts) AS ts,
               make_timestamp_ns(prev_ts) AS prev_ts, "check", expected, got,
               CASE WHEN "check" = 'next' AND got > expected THEN got - expected END AS missing,
               CASE WHEN got > expected THEN 'gap' ELSE 'backwards' END AS kind
        FROM checked WHERE got IS DISTINCT FROM expected AND got IS NOT NULL
        ORDER BY ts, capture_id, flow_id, rule, stream"""


def present(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES) -> tuple[FeedRule, ...]:
    """The rules of the venues the dataset has flows of (each rule scans every
    payload once: the others would only read for nothing)."""
    venues = {v for (v,) in ds.fetchall("SELECT DISTINCT venue FROM flows")}
    return tuple(r for r in rules if r.venue in venues)


def gaps_table(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES,
               messages: str | pa.Table | None = None) -> pa.Table:
    """One row per break in a market-data stream's numbering (``FEED_GAPS``), computed
    from the message tables (what the ingest stores in ``feed_gaps``); ``messages``:
    ``message_rows``' table when at hand (then in NumPy, ``gaps_of``), or the name of
    a table of ``messages_sql``'s rows."""
    if isinstance(messages, pa.Table):
        return gaps_of(messages)
    sql = gaps_sql(present(ds, rules), messages=messages)
    return _cast(ds.sql(sql).to_arrow_table(), FEED_GAPS)


_DICT = pa.dictionary(pa.int32(), pa.string())
MESSAGES = pa.schema([
    ("capture_id", _DICT), ("venue", _DICT), ("flow_id", pa.int64()), ("rule", _DICT),
    ("stream", _DICT), ("ts", pa.int64()), ("stream_offset", pa.int64()),
    ("first_id", pa.int64()), ("last_id", pa.int64()), ("prev_id", pa.int64()),
    ("reset", pa.bool_()), ("exchange_ns", pa.int64()), ("symbol", _DICT)])
"""``messages_sql``'s rows as ``message_rows`` holds them: the names dictionary-encoded
(a few distinct values over every market-data message)."""


def as_messages(table: pa.Table) -> pa.Table:
    """``table`` (``messages_sql``'s columns, names plain or dictionary-encoded) in the
    ``MESSAGES`` schema, each column's dictionary one (its chunks kept: no copy)."""
    cols = [table.column(f.name) for f in MESSAGES]
    out = pa.table([c if c.type == f.type else c.cast(f.type) for c, f in zip(
        cols, MESSAGES, strict=True)], schema=MESSAGES)
    return out.unify_dictionaries()


def message_rows(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES,
                 scanned: pa.Table | None = None) -> pa.Table:
    """``messages_sql``'s rows (of the rules of the venues present, and inbound FIX) as
    one Arrow table (``MESSAGES``), each payload read and parsed once: what the
    ingest's ``feed_gaps`` and stale-feed alerts share (``pcapflow.why``).
    ``scanned``: the ingest's compiled scan of every ``ws_messages`` row
    (``pipelines.feed_scan``, made with ``FEED_RULES``): its rows are taken as they
    are (no DuckDB table of them), and only the payloads it passed on whole are parsed
    here, by the SQL."""
    chosen = present(ds, rules)
    if scanned is None:
        source = stage_ws(ds, chosen)
        try:
            return as_messages(ds.sql(messages_sql(chosen, fix=True, source=source))
                               .to_arrow_table())
        finally:
            ds.con.execute(f"DROP TABLE IF EXISTS {source}")
    flows = ds.sql("SELECT flow_id, capture_id, venue FROM flows ORDER BY flow_id"
                   ).to_arrow_table()
    fid = flows.column("flow_id").to_numpy(zero_copy_only=False)
    parts = [MESSAGES.empty_table()]
    named = pc.fill_null(pc.is_valid(scanned.column("rule")), False)
    whole = scanned.filter(pc.invert(named))
    if len(fid) and (flows.column("flow_id").null_count or np.any(np.diff(fid) <= 0)):
        whole = scanned  # a flow listed twice: the SQL's join (no such ingest seen)
    elif chosen and scanned.num_rows:
        parts.append(_taken(scanned.filter(named), flows, chosen))
    ds.con.register("_feed_scan", whole)
    try:
        src = ("(SELECT f.capture_id, f.venue, s.flow_id, make_timestamp_ns(s.ts) AS ts_last, "
               "s.stream_offset, s.payload FROM _feed_scan s JOIN flows f "
               "ON f.flow_id = s.flow_id WHERE s.rule IS NULL)")
        if whole is scanned and whole.num_rows and len(fid):
            pairs = ", ".join(f"({_sql_str(r.name)}, {_sql_str(r.venue)})" for r in chosen)
            taken = ("SELECT f.capture_id, f.venue, s.flow_id, s.rule, s.stream, s.ts, "
                     "s.stream_offset, s.first_id, s.last_id, s.prev_id, s.reset, "
                     "s.exchange_ns, s.symbol FROM _feed_scan s JOIN flows f ON "
                     f"f.flow_id = s.flow_id JOIN (VALUES {pairs}) r(rule, venue) ON "
                     "r.rule = s.rule AND r.venue = f.venue WHERE s.rule IS NOT NULL")
            if chosen:
                parts.append(as_messages(ds.sql(taken).to_arrow_table()))
        parts.append(as_messages(ds.sql(messages_sql(chosen, fix=True, source=src))
                                 .to_arrow_table()))
    finally:
        ds.con.unregister("_feed_scan")
    parts = [p for p in parts if p.num_rows]
    if len(parts) == 1:
        return parts[0]  # (no copy of every message's row)
    return as_messages(pa.concat_tables([MESSAGES.empty_table(), *parts]))


def _taken(rows: pa.Table, flows: pa.Table, chosen: tuple[FeedRule, ...]) -> pa.Table:
    """The scan's rows of the ``chosen`` rules on flows of those rules' venues, with
    the flow's capture and venue (``flows`` sorted by a unique ``flow_id``)."""
    rows = rows.select([f.name for f in MESSAGES if f.name not in ("capture_id", "venue")])
    rows = rows.unify_dictionaries()
    fid = flows.column("flow_id").to_numpy(zero_copy_only=False)
    flow = rows.column("flow_id").to_numpy(zero_copy_only=False)
    at = np.minimum(np.searchsorted(fid, flow), max(len(fid) - 1, 0))
    known = (fid[at] == flow) if len(fid) else np.zeros(len(flow), np.bool_)
    venue_codes = pc.dictionary_encode(flows.column("venue")).combine_chunks()
    venues = venue_codes.dictionary.to_pylist()
    flow_venue = pc.fill_null(venue_codes.indices, -1).to_numpy(zero_copy_only=False)
    rule = rows.column("rule").combine_chunks()
    if not pa.types.is_dictionary(rule.type):
        rule = pc.dictionary_encode(rule)
    names = rule.dictionary.to_pylist()
    # ok[rule code, venue code]: the pair is one of the chosen rules'
    pairs = {(r.name, r.venue) for r in chosen}
    ok = np.array([[(n, v) in pairs for v in venues] + [False] for n in names],
                  np.bool_).reshape(len(names), len(venues) + 1)
    codes = rule.indices.to_numpy(zero_copy_only=False)
    keep = known & ok[codes, flow_venue[at]] if len(names) else np.zeros(len(flow), np.bool_)
    idx = np.flatnonzero(keep)
    take = pa.array(idx)
    cap = pc.dictionary_encode(flows.column("capture_id")).combine_chunks()
    flow_cap = pc.fill_null(cap.indices, -1).to_numpy(zero_copy_only=False)[at[idx]]
    cols = {"capture_id": pa.DictionaryArray.from_arrays(
                pa.array(flow_cap, pa.int32(), mask=flow_cap < 0), cap.dictionary),
            "venue": pa.DictionaryArray.from_arrays(
                pa.array(flow_venue[at[idx]], pa.int32(), mask=flow_venue[at[idx]] < 0),
                venue_codes.dictionary)}
    every = len(idx) == len(flow)
    out = {f.name: cols[f.name] if f.name in cols else
           (rows.column(f.name) if every else rows.column(f.name).take(take)) for f in MESSAGES}
    return as_messages(pa.table(out))


def stage_messages(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES,
                   name: str = "feed_msg", scanned: pa.Table | None = None) -> str:
    """``message_rows`` as a view ``name`` on ``ds``'s connection (an Arrow table
    registered: no copy); returns ``name``."""
    ds.con.register(name, message_rows(ds, rules, scanned))
    return name


def gaps_of(messages: pa.Table) -> pa.Table:
    """``gaps_sql``'s rows from ``message_rows``' table (``MESSAGES``), in NumPy: per
    stream (capture, flow, rule, stream name) the messages with a last id in stream
    order (``stream_offset``, ``ts``), each checked against the one before it."""
    m = messages
    if messages.column("last_id").null_count:
        m = messages.filter(pc.is_valid(messages.column("last_id")))
    n = m.num_rows
    if n == 0:
        return _cast(pa.table({f.name: pa.nulls(0, f.type) for f in FEED_GAPS}), FEED_GAPS)
    keys = [_codes(m.column(k)) for k in ("capture_id", "flow_id", "rule", "stream")]
    off, ts = _ints(m.column("stream_offset")), _ints(m.column("ts"))
    order = stream_order(keys, off, ts)
    same = np.ones(n, np.bool_)
    same[0] = False
    for k in keys:
        ko = k[order]
        same[1:] &= ko[1:] == ko[:-1]
    del keys, ko  # (a few arrays of every message at a time: the derive's peak memory)
    last = _ints(m.column("last_id"))[order]
    prev_last = np.empty(n, np.int64)
    prev_last[1:] = last[:-1]
    prev_last[0] = 0
    del last
    prev_ok = m.column("prev_id").is_valid().to_numpy(zero_copy_only=False)[order]
    expected = prev_last + ~prev_ok  # prev: the previous last id; next: that + 1
    del prev_last
    got = np.where(prev_ok, _ints(m.column("prev_id"))[order],
                   _ints(m.column("first_id"))[order])
    got_ok = prev_ok | m.column("first_id").is_valid().to_numpy(zero_copy_only=False)[order]
    reset = pc.fill_null(m.column("reset"), False).to_numpy(zero_copy_only=False)[order]
    hit = np.flatnonzero(same & ~reset & got_ok & (got != expected))
    del reset, got_ok
    rows_at = order[hit]
    ts_o = ts[rows_at]
    prev_ts = ts[order[hit - 1]]  # (a checked row has one before it in its stream)
    e, g = expected[hit], got[hit]
    is_prev = prev_ok[hit]
    take = pa.array(rows_at)

    def name(k: str) -> pa.ChunkedArray:
        return m.column(k).take(take).cast(pa.string())

    out = pa.table({
        "capture_id": name("capture_id"), "venue": name("venue"),
        "flow_id": m.column("flow_id").take(take), "rule": name("rule"),
        "stream": name("stream"),
        "ts": pa.array(ts_o, pa.int64()).cast(pa.timestamp("ns")),
        "prev_ts": pa.array(prev_ts, pa.int64()).cast(pa.timestamp("ns")),
        "check": pa.array(np.where(is_prev, "prev", "next").astype(object), pa.string()),
        "expected": pa.array(e, pa.int64()), "got": pa.array(g, pa.int64()),
        "missing": pa.array(g - e, pa.int64(), mask=is_prev | (g <= e)),
        "kind": pa.array(np.where(g > e, "gap", "backwards").astype(object), pa.string()),
        "_offset": pa.array(off[rows_at], pa.int64())})
    # ORDER BY ts, capture_id, flow_id, rule, stream (then stream order)
    out = out.take(pc.sort_indices(out, [(k, "ascending") for k in (
        "ts", "capture_id", "flow_id", "rule", "stream", "_offset")]))
    return _cast(out.drop_columns(["_offset"]), FEED_GAPS)


class Silences(NamedTuple):
    """Where each stream falls silent (``silences``): rows in stream order."""

    order: np.ndarray  # the rows' order (``stream_order``)
    last: np.ndarray  # in that order: the last message of its stream
    ts: np.ndarray  # times, in that order
    offset: np.ndarray  # stream offsets, in that order
    next_ts: np.ndarray  # the time of the stream's next message (0 after its last)
    inside: np.ndarray  # positions (in order) followed by a silence over the threshold


def silences(keys: list[np.ndarray], ts: np.ndarray, off: np.ndarray, stale_ns: int
             ) -> Silences:
    """Each stream's messages (a stream: one value of every array of ``keys``) in (ts,
    stream_offset) order, and where the time to the stream's next message is over
    ``stale_ns``: shared by the ingest's ``prepare`` and ``alerts._silences``."""
    order = stream_order(keys, ts, off)
    n = len(order)
    last = np.ones(n, np.bool_)
    for k in keys:
        ko = k[order]
        last[:-1] &= ko[1:] == ko[:-1]
    last = ~last  # the last message of its stream
    last[-1] = True
    t_o, off_o = ts[order], off[order]
    nxt = np.empty(n, np.int64)
    nxt[:-1] = t_o[1:]
    nxt[-1] = 0
    inside = np.flatnonzero(~last & (nxt - t_o > stale_ns))
    return Silences(order, last, t_o, off_o, nxt, inside)


def stream_order(codes: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The order of rows by (``codes``..., ``a``, ``b``), as ``np.lexsort`` gives it
    (stable), faster for what the derive sorts: few streams (the codes' product fits
    16 bits: a radix sort), each already in (a, b) order in the rows (checked; else
    ``np.lexsort``)."""
    n = len(a)
    if n == 0:
        return np.zeros(0, np.int64)
    g = np.zeros(n, np.int64)
    size = 1
    for c in codes:
        lo, hi = int(c.min()), int(c.max())
        span = hi - lo + 1
        if size * span >= 1 << 62:
            return np.lexsort((b, a, *reversed(codes)))
        g = g * span + (c - lo)
        size *= span
    if size > 1 << 16:
        _, g = np.unique(g, return_inverse=True)
        size = int(g.max()) + 1
    order = np.argsort(g.astype(np.uint16) if size <= 1 << 16 else g, kind="stable")
    go, ao, bo = g[order], a[order], b[order]
    out_of_order = (go[1:] == go[:-1]) & ((ao[1:] < ao[:-1]) | ((ao[1:] == ao[:-1])
                                                               & (bo[1:] < bo[:-1])))
    return np.lexsort((b, a, g)) if out_of_order.any() else order


def _ints(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """An integer column as int64 NumPy, nulls as 0."""
    col = col.cast(pa.int64())
    if col.null_count == 0:  # (most: no fill, ~0.1 ms less a column of 40k rows)
        return col.to_numpy(zero_copy_only=False)
    return pc.fill_null(col, 0).to_numpy(zero_copy_only=False)


def _codes(col: pa.ChunkedArray) -> np.ndarray:
    """Integer codes equal where the values are equal (nulls too)."""
    if pa.types.is_integer(col.type):
        return pc.fill_null(col.cast(pa.int64()), -(2**62)).to_numpy(zero_copy_only=False)
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    return pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def find_gaps(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES) -> pd.DataFrame:
    """``gaps_table`` as a DataFrame."""
    from .analysis import utc

    return utc(gaps_table(ds, rules).to_pandas())


def feed_gaps(ds: Dataset) -> pd.DataFrame:
    """The ``feed_gaps`` table (written at ingest), oldest first."""
    from .analysis import utc

    return utc(ds.df("SELECT * FROM feed_gaps ORDER BY ts, capture_id, flow_id, rule, stream"))


def delay_sql(rules: tuple[FeedRule, ...] = FEED_RULES) -> str:
    """The SQL of ``feed_delay``."""
    with_ts = tuple(r for r in rules if r.exchange_ts)
    return f"""
        WITH msg AS ({messages_sql(with_ts, fix=False)})
        SELECT capture_id, venue, flow_id, rule, stream, count(*) AS messages,
               min(ts - exchange_ns) / 1e3 AS min_us,
               quantile_cont(ts - exchange_ns, 0.5) / 1e3 AS p50_us,
               quantile_cont(ts - exchange_ns, 0.99) / 1e3 AS p99_us,
               max(ts - exchange_ns) / 1e3 AS max_us,
               make_timestamp_ns(min(ts)) AS first_ts, make_timestamp_ns(max(ts)) AS last_ts
        FROM msg WHERE exchange_ns IS NOT NULL
        GROUP BY ALL ORDER BY venue, rule, stream, capture_id, flow_id"""


def feed_delay(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES) -> pd.DataFrame:
    """Wire time minus the exchange's time stamp per stream, in µs (count, min,
    p50, p99, max): includes the clock offset (module docstring)."""
    from .analysis import utc
    from .causes import _utc_times

    return utc(_utc_times(ds.sql(delay_sql(present(ds, rules))).to_arrow_table()).to_pandas())


def feed_messages(ds: Dataset, rules: tuple[FeedRule, ...] = FEED_RULES) -> pd.DataFrame:
    """The market-data messages the rules take, with their ids (for stale-feed checks)."""
    from .analysis import utc

    return utc(ds.df(f"SELECT * FROM ({messages_sql(present(ds, rules))}) ORDER BY ts"))


def _cast(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema)


# --- Before the venues are known (``pcapflow.why``: beside the ingest's matcher) ------

class Streams:
    """What ``gaps_of`` and the stale-feed check (``alerts._silences``) find in the
    ingest's scan (``pipelines.feed_scan``), worked out per stream before any flow has
    a venue, for ``gaps_for`` and ``silences_for`` to finish once the matcher has named
    them.

    Both checks work stream by stream (capture, flow, rule, stream name), and which
    messages ``message_rows`` keeps depends on the flow's venue only through the pair
    (rule, venue): a flow's messages of one rule are all kept or all left out. So the
    checks over every scanned row, with the streams of pairs that are not a rule's
    left out afterwards, are the checks over ``message_rows``' table, when that table
    is the scan's rows alone: no payload handed back whole (``prepare`` gives None
    then) and no inbound FIX message (``pcapflow.why`` checks: those rows come from
    the SQL).
    """

    __slots__ = ("gaps", "inside", "last", "stale_ns")

    def __init__(self, gaps: pa.Table, inside: pa.Table, last: pa.Table,
                 stale_ns: int) -> None:
        self.gaps = gaps
        """``gaps_of``'s rows over every stream, ``capture_id`` and ``venue`` null."""
        self.inside = inside
        """Silences within a stream: flow_id, rule, stream, t0, t1, o0, o1."""
        self.last = last
        """Each stream's last message: flow_id, rule, stream, t0, o0."""
        self.stale_ns = stale_ns


def prepare(scanned: pa.Table, stale_ns: int) -> Streams | None:
    """``Streams`` of the scan's rows (``feed_scan.COLUMNS``); None when a row is a
    payload handed back whole, or has no time (``message_rows`` and ``_silences``
    take other paths then). (The arrays of every row at once: ``StreamWalk`` gives the
    same ``Streams`` part by part.)"""
    if scanned.column("rule").null_count or scanned.column("ts").null_count:
        return None
    cols = {f.name: (scanned.column(f.name) if f.name in scanned.column_names
                     else pa.nulls(scanned.num_rows, f.type)) for f in MESSAGES}
    gaps = gaps_of(as_messages(pa.table(cols)))
    rule = scanned.column("rule").combine_chunks()
    if not pa.types.is_dictionary(rule.type):
        rule = pc.dictionary_encode(rule)
    names = rule.dictionary.to_pylist()
    codes = rule.indices.to_numpy(zero_copy_only=False)
    keep = codes != (names.index("fix_seq") if "fix_seq" in names else -2)
    m = scanned if keep.all() else scanned.filter(pa.array(keep))
    n = m.num_rows
    empty = pa.table({"flow_id": pa.array([], pa.int64()), "rule": pa.array([], pa.string()),
                      "stream": pa.array([], pa.string()), "t0": pa.array([], pa.int64()),
                      "t1": pa.array([], pa.int64()), "o0": pa.array([], pa.int64()),
                      "o1": pa.array([], pa.int64())})
    if n == 0:
        return Streams(gaps, empty, empty.drop_columns(["t1", "o1"]), stale_ns)
    # as ``alerts._silences``: each stream's messages in (ts, stream_offset) order
    keys = [_codes(m.column(k)) for k in ("flow_id", "rule", "stream")]
    sil = silences(keys, _ints(m.column("ts")), _ints(m.column("stream_offset")), stale_ns)
    order, t_o, off_o, nxt, inside = sil.order, sil.ts, sil.offset, sil.next_ts, sil.inside
    at_end = np.flatnonzero(sil.last)

    def keyed(at: np.ndarray) -> dict[str, pa.Array]:
        take = pa.array(order[at])
        return {"flow_id": m.column("flow_id").take(take).combine_chunks(),
                "rule": m.column("rule").take(take).cast(pa.string()).combine_chunks(),
                "stream": m.column("stream").take(take).cast(pa.string()).combine_chunks(),
                "t0": pa.array(t_o[at], pa.int64()), "o0": pa.array(off_o[at], pa.int64())}

    within = pa.table({**keyed(inside), "t1": pa.array(nxt[inside], pa.int64()),
                       "o1": pa.array(off_o[inside + 1], pa.int64())})
    return Streams(gaps, within, pa.table(keyed(at_end)), stale_ns)


class StreamWalk:
    """``prepare`` of the scan's rows given part by part (the ingest's side files, in
    the order ``feed_scan.staged`` would concatenate them), without an array of every
    message: each stream's last message is carried from one part to the next.

    How this works. ``gaps_of`` and ``silences`` sort every message by stream, then
    within a stream by (offset, time) and (time, offset), and compare each message
    with the one before it. A stable sort of the parts concatenated is, stream by
    stream, the parts' own sorted rows one after the other, when no part has a row
    of a stream that sorts before the last row of the stream in the parts before it
    (an ingest's parts are written in stream order). So each part is sorted alone,
    with each of its streams' carried last message put first (the same place a stable
    sort of the whole gives it): the checks see the message before each first one as
    they would in the whole. A part where a carried message does not sort first
    stops the walk (``add`` gives False): ``prepare`` of the concatenated rows sorts
    those the long way. Gaps and silences within a stream are found per part and
    kept (few); the streams' last messages, at ``finish``."""

    def __init__(self, stale_ns: int) -> None:
        self.stale_ns = stale_ns
        self.ok = True
        """False once a part could not be walked (then ``finish`` is not to be used)."""
        self._ids: dict[tuple[int, str | None, str | None], int] = {}
        self._names: list[tuple[int, str | None, str | None]] = []
        # per stream (its id): the last message with a last id (gaps) and the last one
        # (silences): present, last id, time, offset
        self._g = np.zeros((0, 3), np.int64)
        self._g_has = np.zeros(0, np.bool_)
        self._s = np.zeros((0, 2), np.int64)
        self._s_has = np.zeros(0, np.bool_)
        self._gaps: list[tuple[np.ndarray, ...]] = []
        self._inside: list[tuple[np.ndarray, ...]] = []
        self._local_ids = np.zeros(0, np.int64)

    def add(self, part: pa.Table) -> bool:
        """Walk one part (``feed_scan.COLUMNS``); False when it cannot be (see the class
        docstring, and ``prepare``'s None)."""
        if not self.ok:
            return False
        n = part.num_rows
        if n == 0:
            return True
        if (part.column("rule").null_count or part.column("ts").null_count
                or part.column("flow_id").null_count):
            self.ok = False
            return False
        local, rule_is_fix = self._local(part)
        if local is None:
            self.ok = False
            return False
        ts, off = _ints(part.column("ts")), _ints(part.column("stream_offset"))
        has_last = part.column("last_id").is_valid().to_numpy(zero_copy_only=False)
        if self._walk(part, local, ts, off, has_last, rule_is_fix):
            return True
        self.ok = self._add_gaps(part, local, ts, off, has_last) and self._add_silences(
            local, ts, off, rule_is_fix)
        return self.ok

    def _walk(self, part: pa.Table, local: np.ndarray, ts: np.ndarray, off: np.ndarray,
              has_last: np.ndarray, is_fix: np.ndarray) -> bool:
        """``_add_gaps`` and ``_add_silences`` in one compiled pass
        (``pipelines.stream_walk``) when each stream's rows are in order in the part;
        False (nothing done) when not."""
        from .pipelines.stream_walk import walk

        def valid(name: str) -> np.ndarray:
            return part.column(name).is_valid().to_numpy(zero_copy_only=False)

        prev_ok = valid("prev_id")
        (ok, g_rows, g_ids, g_prev_ts, expected, got, s_rows, s_ids, s_t0, s_o0) = walk(
            local, self._local_ids, ts, off, has_last, _ints(part.column("last_id")),
            _ints(part.column("prev_id")), prev_ok, _ints(part.column("first_id")),
            valid("first_id"), pc.fill_null(part.column("reset"), False).to_numpy(
                zero_copy_only=False), ~is_fix, self._g, self._g_has, self._s, self._s_has,
            np.int64(self.stale_ns))
        if not ok:
            return False
        if len(g_rows):
            self._gaps.append((g_ids, ts[g_rows], g_prev_ts, expected, got, prev_ok[g_rows],
                               off[g_rows]))
        if len(s_rows):
            self._inside.append((s_ids, s_t0, ts[s_rows], s_o0, off[s_rows]))
        return True

    def _local(self, part: pa.Table) -> tuple[np.ndarray | None, np.ndarray]:
        """Each row's stream as a code of this part (dense; the codes' stream ids are
        set in ``self._local_ids``), and which rows are FIX's; (None, ...) when the
        codes would not fit."""
        rule_i, rule_names = _dict_codes(part.column("rule"))
        stream_i, stream_names = _dict_codes(part.column("stream"))
        r, s = len(rule_names) + 1, len(stream_names) + 1
        flow_i = _ints(part.column("flow_id"))  # (no nulls: ``add``)
        flows: list | None = None  # (the flow ids in the key themselves, when they fit)
        if not len(flow_i) or flow_i.min() < 0 or (int(flow_i.max()) + 1) * r * s >= 1 << 62:
            flow = pc.dictionary_encode(part.column("flow_id").combine_chunks())
            flow_i = flow.indices.to_numpy(zero_copy_only=False).astype(np.int64)
            flows = flow.dictionary.to_pylist()
            if len(flows) * r * s >= 1 << 62:
                return None, np.zeros(0, np.bool_)
        key = (flow_i * r + (rule_i + 1)) * s + (stream_i + 1)
        enc = pc.dictionary_encode(pa.array(key, pa.int64()))
        local = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        ids = np.empty(len(enc.dictionary), np.int64)
        for i, k in enumerate(enc.dictionary.to_pylist()):
            f, rest = divmod(k, r * s)
            ri, si = divmod(rest, s)
            name = (flows[f] if flows is not None else f, rule_names[ri - 1] if ri else None,
                    stream_names[si - 1] if si else None)
            got = self._ids.get(name)
            if got is None:
                got = self._ids[name] = len(self._names)
                self._names.append(name)
            ids[i] = got
        self._local_ids = ids
        if len(self._names) > len(self._g_has):  # room for the new streams' state
            more = max(len(self._names), 2 * len(self._g_has)) - len(self._g_has)
            self._g = np.concatenate([self._g, np.zeros((more, 3), np.int64)])
            self._s = np.concatenate([self._s, np.zeros((more, 2), np.int64)])
            self._g_has = np.concatenate([self._g_has, np.zeros(more, np.bool_)])
            self._s_has = np.concatenate([self._s_has, np.zeros(more, np.bool_)])
        fix = np.array([x == "fix_seq" for x in rule_names] + [False], np.bool_)
        return local, fix[rule_i]

    def _carried(self, local: np.ndarray, has: np.ndarray) -> np.ndarray:
        """The local codes (of those in ``local``) whose stream has a carried message."""
        present = np.flatnonzero(np.bincount(local, minlength=len(self._local_ids)))
        return present[has[self._local_ids[present]]]

    @staticmethod
    def _sorted(codes: np.ndarray, a: np.ndarray, b: np.ndarray, carried: int
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """The order of rows by (codes, a, b) (``stream_order``) and, in it, which rows
        start their stream; None when one of the first ``carried`` rows does not."""
        order = stream_order([codes], a, b)
        co = codes[order]
        first = np.ones(len(order), np.bool_)
        first[1:] = co[1:] != co[:-1]
        if carried and not first[order < carried].all():
            return None
        return order, first

    def _add_gaps(self, part: pa.Table, local: np.ndarray, ts: np.ndarray, off: np.ndarray,
                  has_last: np.ndarray) -> bool:
        """``gaps_of``'s checks of the part's rows with a last id."""
        rows = np.flatnonzero(has_last)
        if len(rows) == 0:
            return True
        c = self._carried(local[rows], self._g_has)
        state = self._g[self._local_ids[c]]
        k = len(c)
        codes = np.concatenate([c, local[rows]])
        last = np.concatenate([state[:, 0], _ints(part.column("last_id"))[rows]])
        ts_a = np.concatenate([state[:, 1], ts[rows]])
        off_a = np.concatenate([state[:, 2], off[rows]])
        got_sorted = self._sorted(codes, off_a, ts_a, k)
        if got_sorted is None:
            return False
        order, first = got_sorted
        n = len(order)
        prev_last = np.empty(n, np.int64)
        last_o = last[order]
        prev_last[1:] = last_o[:-1]
        prev_last[0] = 0

        def col(name: str, fill: bool = False) -> np.ndarray:
            """A column of the part's rows in ``order`` (the carried rows: ``fill``)."""
            arr = part.column(name)
            v = (pc.fill_null(arr, False).to_numpy(zero_copy_only=False) if fill else
                 arr.is_valid().to_numpy(zero_copy_only=False))[rows]
            return np.concatenate([np.zeros(k, v.dtype), v])[order]

        prev_ok = col("prev_id")
        expected = prev_last + ~prev_ok
        prev_v = np.concatenate([np.zeros(k, np.int64), _ints(part.column("prev_id"))[rows]])
        first_v = np.concatenate([np.zeros(k, np.int64), _ints(part.column("first_id"))[rows]])
        got = np.where(prev_ok, prev_v[order], first_v[order])
        got_ok = prev_ok | col("first_id")
        reset = col("reset", fill=True)
        hit = np.flatnonzero(~first & ~reset & got_ok & (got != expected))
        if len(hit):
            at = order[hit]
            self._gaps.append((self._local_ids[codes[at]], ts_a[at], ts_a[order[hit - 1]],
                               expected[hit], got[hit], prev_ok[hit], off_a[at]))
        ends = np.flatnonzero(np.append(first[1:], True))
        ids = self._local_ids[codes[order[ends]]]
        self._g[ids] = np.stack([last_o[ends], ts_a[order[ends]], off_a[order[ends]]], axis=1)
        self._g_has[ids] = True
        return True

    def _add_silences(self, local: np.ndarray, ts: np.ndarray, off: np.ndarray,
                      is_fix: np.ndarray) -> bool:
        """``silences`` within the part's streams (FIX's left out, as ``prepare``)."""
        rows = np.flatnonzero(~is_fix) if is_fix.any() else np.arange(len(local))
        if len(rows) == 0:
            return True
        c = self._carried(local[rows], self._s_has)
        state = self._s[self._local_ids[c]]
        k = len(c)
        codes = np.concatenate([c, local[rows]])
        ts_a = np.concatenate([state[:, 0], ts[rows]])
        off_a = np.concatenate([state[:, 1], off[rows]])
        got_sorted = self._sorted(codes, ts_a, off_a, k)
        if got_sorted is None:
            return False
        order, first = got_sorted
        t_o, off_o = ts_a[order], off_a[order]
        last = np.append(first[1:], True)
        nxt = np.empty(len(order), np.int64)
        nxt[:-1] = t_o[1:]
        nxt[-1] = 0
        inside = np.flatnonzero(~last & (nxt - t_o > self.stale_ns))
        if len(inside):
            self._inside.append((self._local_ids[codes[order[inside]]], t_o[inside],
                                 nxt[inside], off_o[inside], off_o[inside + 1]))
        ends = np.flatnonzero(last)
        ids = self._local_ids[codes[order[ends]]]
        self._s[ids] = np.stack([t_o[ends], off_o[ends]], axis=1)
        self._s_has[ids] = True
        return True

    def finish(self) -> Streams:
        """The ``Streams`` of every part added (``prepare`` of them concatenated)."""
        assert self.ok
        flow = np.array([f for f, _, _ in self._names], np.int64)
        rule = pa.array([r for _, r, _ in self._names], pa.string())
        stream = pa.array([s for _, _, s in self._names], pa.string())

        def keyed(ids: np.ndarray) -> dict[str, pa.Array]:
            take = pa.array(ids, pa.int64())
            return {"flow_id": pa.array(flow[ids], pa.int64()), "rule": rule.take(take),
                    "stream": stream.take(take)}

        def cat(parts: list[tuple[np.ndarray, ...]], width: int) -> list[np.ndarray]:
            return [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64)
                    for i in range(width)]

        gid, ts, prev_ts, e, g, is_prev, off = cat(self._gaps, 7)
        is_prev = is_prev.astype(np.bool_)
        gaps = pa.table({
            "capture_id": pa.nulls(len(gid), pa.string()), "venue": pa.nulls(len(gid), pa.string()),
            **keyed(gid),
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ns")),
            "prev_ts": pa.array(prev_ts, pa.int64()).cast(pa.timestamp("ns")),
            "check": pa.array(np.where(is_prev, "prev", "next").astype(object), pa.string()),
            "expected": pa.array(e, pa.int64()), "got": pa.array(g, pa.int64()),
            "missing": pa.array(g - e, pa.int64(), mask=is_prev | (g <= e)),
            "kind": pa.array(np.where(g > e, "gap", "backwards").astype(object), pa.string()),
            "_offset": pa.array(off, pa.int64())})
        gaps = gaps.take(pc.sort_indices(gaps, [(k, "ascending") for k in (
            "ts", "capture_id", "flow_id", "rule", "stream", "_offset")]))
        gaps = _cast(gaps.drop_columns(["_offset"]), FEED_GAPS)
        gid, t0, t1, o0, o1 = cat(self._inside, 5)
        within = pa.table({**keyed(gid), "t0": pa.array(t0, pa.int64()),
                           "t1": pa.array(t1, pa.int64()), "o0": pa.array(o0, pa.int64()),
                           "o1": pa.array(o1, pa.int64())})
        ids = np.flatnonzero(self._s_has)
        at_end = pa.table({**keyed(ids), "t0": pa.array(self._s[ids, 0], pa.int64()),
                           "o0": pa.array(self._s[ids, 1], pa.int64())})
        return Streams(gaps, within, at_end, self.stale_ns)


def _dict_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list]:
    """A column's values as codes (-1: null) and the values they stand for."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, arr.dictionary.to_pylist()


def _pairs_kept(flow_ids: pa.Array | pa.ChunkedArray, rules: pa.Array | pa.ChunkedArray,
                flows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Which rows (flow, rule) ``message_rows`` keeps (the flow known, the rule one of
    its venue's), and each row's index in ``flows`` (sorted by a unique flow_id)."""
    fid = flows.column("flow_id").to_numpy(zero_copy_only=False)
    flow = np.asarray(flow_ids.to_numpy(zero_copy_only=False), np.int64)
    if len(fid) == 0 or len(flow) == 0:
        return np.zeros(len(flow), np.bool_), np.zeros(len(flow), np.int64)
    at = np.minimum(np.searchsorted(fid, flow), len(fid) - 1)
    known = fid[at] == flow
    venue = flows.column("venue").to_pylist()
    pairs = {(r.name, r.venue) for r in FEED_RULES}
    names = rules.to_pylist()
    ok = np.array([(n, venue[a]) in pairs for n, a in zip(names, at.tolist(), strict=True)],
                  np.bool_)
    return known & ok, at


def usable(flows: pa.Table) -> bool:
    """``message_rows`` and ``_silences`` take the scan's rows by a join on a unique
    ``flow_id`` (else their SQL paths): ``Streams`` stands for them only then."""
    fid = flows.column("flow_id")
    arr = fid.to_numpy(zero_copy_only=False)
    return not fid.null_count and not (len(arr) and np.any(np.diff(arr) <= 0))


def gaps_for(streams: Streams, flows: pa.Table) -> pa.Table:
    """``gaps_table``'s rows (``gaps_of`` of ``message_rows``) from ``streams``, once
    the flows (``flow_id``, ``capture_id``, ``venue``; sorted by a unique flow_id)
    have their venues."""
    g = streams.gaps
    keep, at = _pairs_kept(g.column("flow_id"), g.column("rule"), flows)
    take = pa.array(at[keep])
    g = g.filter(pa.array(keep))
    cols = {f.name: g.column(f.name) for f in FEED_GAPS}
    cols["capture_id"] = flows.column("capture_id").take(take).cast(pa.string())
    cols["venue"] = flows.column("venue").take(take).cast(pa.string())
    return _cast(pa.table(cols), FEED_GAPS)


def silences_for(streams: Streams, flows: pa.Table) -> list[tuple] | None:
    """``alerts._silences``' rows from ``streams``, the flows (``flow_id``,
    ``capture_id``, ``venue``, ``last_ts`` in ns; sorted by a unique flow_id) named."""
    cap = flows.column("capture_id").to_pylist()
    venue = flows.column("venue").to_pylist()
    last_ts = flows.column("last_ts").to_pylist()
    out: list[tuple] = []
    for table, at_end in ((streams.inside, False), (streams.last, True)):
        keep, at = _pairs_kept(table.column("flow_id"), table.column("rule"), flows)
        rows = table.filter(pa.array(keep))
        for a, flow, rule, stream, t0, o0, t1, o1 in zip(
                at[keep].tolist(), *(rows.column(k).to_pylist() for k in (
                    "flow_id", "rule", "stream", "t0", "o0")),
                *((rows.column(k).to_pylist() for k in ("t1", "o1")) if not at_end else
                  ([None] * rows.num_rows, [None] * rows.num_rows)), strict=True):
            if not at_end:
                out.append((cap[a], venue[a], flow, rule, stream, t0, t1, False, o0, o1))
                continue
            until = last_ts[a]
            if isinstance(until, int) and until - t0 > streams.stale_ns:
                out.append((cap[a], venue[a], flow, rule, stream, t0, until, True, o0, None))
    out.sort(key=lambda r: (r[5], str(r[0]), r[2], str(r[3]), str(r[4]), r[8]))
    return out
